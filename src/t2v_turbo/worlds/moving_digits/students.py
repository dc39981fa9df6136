"""Stage 4 of the world: the two students, distilled by the project's own trainer (`t2v_turbo.train`).

`turbo` = consistency distillation + mixed reward (md-image, md-video); `vcm` = consistency distillation
only. Both start from the same teacher with the same recipe (the `moving-digits` preset), so the only
difference is the reward feedback.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from .build import STUDENTS, default_dir


def distill_student(out_dir: str | Path, name: str, recipe: dict, overrides: dict | None = None) -> dict:
    """Distill `out_dir/teacher` into `out_dir/<name>/` (a UNet folder + t2v_turbo.json) with `train()`.

    Args:
        out_dir: the world folder (vae/, text_encoder/, tokenizer/, teacher/, reward_image/, reward_video/).
        name: "turbo" or "vcm".
        recipe: {"rewards": [...]} from `build.STUDENTS` (reward paths are filled in from `out_dir`).
        overrides: extra dotted config overrides (e.g. {"train.max_steps": 1200}).
    Returns:
        {"steps", "seconds", "run_dir"}.
    """
    from ...train import train

    out = Path(out_dir)
    folders = {"md-image": "reward_image", "md-video": "reward_video"}
    rewards = [dict(r, path=str(out / folders[r["name"]])) for r in recipe.get("rewards", [])]
    run_dir = out / "runs" / name
    cfg = {
        "name": f"md-{name}",
        "output_dir": str(run_dir),
        "model.teacher": str(out / "teacher"),
        "rewards": rewards,
        **(overrides or {}),
    }
    if run_dir.exists() and not any(run_dir.glob("checkpoints/*")):
        shutil.rmtree(run_dir)
    if any(run_dir.glob("checkpoints/*")):
        cfg["train.resume"] = "latest"
    t0 = time.time()
    result = train("moving-digits", cfg)
    if result.student_dir is None:
        raise RuntimeError(f"training {name} produced no student (see {run_dir})")
    dest = out / name
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    shutil.copytree(Path(result.student_dir) / "unet", dest / "unet")
    meta_src = Path(result.student_dir) / "t2v_turbo.json"
    meta = json.loads(meta_src.read_text()) if meta_src.exists() else {}
    meta["trained_with"] = {
        "preset": "moving-digits",
        "rewards": recipe.get("rewards", []),
        "steps": result.step,
    }
    (dest / "t2v_turbo.json").write_text(json.dumps(meta, indent=2))
    return {"steps": result.step, "seconds": time.time() - t0, "run_dir": str(run_dir)}


def train_both(
    out_dir: str | Path | None = None, overrides: dict | None = None, names=tuple(STUDENTS)
) -> dict:
    """Distill both students into `out_dir` (default: the shipped assets folder)."""
    out = Path(out_dir) if out_dir is not None else default_dir()
    return {name: distill_student(out, name, STUDENTS[name], overrides) for name in names}
