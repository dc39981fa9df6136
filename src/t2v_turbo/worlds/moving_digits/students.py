"""Stage 4 of the world: the two students, distilled by the project's own trainer (`t2v_turbo.train`).

`turbo` = consistency distillation + mixed reward (the `moving-digits` preset as it stands); `vcm` =
consistency distillation only (the same preset without rewards). Both start from the same teacher,
so the only difference is the reward feedback.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ...errors import InputError
from .stage_common import world_dir

PRESET = "moving-digits"
STUDENT_NAMES = ("turbo", "vcm")
REWARD_FOLDERS = {"md-image": "reward_image", "md-video": "reward_video"}


def student_recipe(name: str) -> dict:
    """{"rewards": [...]} of a student: the `moving-digits` preset's rewards for "turbo", none for "vcm"."""
    from ...config import load_config

    if name not in STUDENT_NAMES:
        raise InputError(f"unknown student {name!r}; valid: {list(STUDENT_NAMES)}")
    if name == "vcm":
        return {"rewards": []}
    rewards = []
    for r in load_config(PRESET).rewards:
        spec = {"name": r.name, "weight": r.weight}
        if r.frames is not None:
            spec["frames"] = r.frames
        rewards.append(spec)
    return {"rewards": rewards}


def train_students(
    out_dir: str | Path | None = None,
    trainer: Callable[[Path, str, dict], dict] | None = None,
    names: Sequence[str] = STUDENT_NAMES,
) -> dict:
    """Distill the teacher into the students under `out_dir/<name>/` with `trainer(out_dir, name, recipe)`
    (default `distill_student`), `recipe` from `student_recipe`. Returns per-student logs and seconds."""
    out = world_dir(out_dir)
    trainer = trainer or distill_student
    info: dict = {"stage": "students"}
    t0 = time.time()
    for name in names:
        info[name] = trainer(out, name, student_recipe(name))
    info["seconds"] = time.time() - t0
    return info


def distill_student(out_dir: str | Path, name: str, recipe: dict, overrides: dict | None = None) -> dict:
    """Distill `out_dir/teacher` into `out_dir/<name>/` (a UNet folder + t2v_turbo.json) with `train()`.

    Runs the `moving-digits` preset with `recipe`'s rewards (their paths filled in from `out_dir`) and
    `overrides`; resumes from the run folder `out_dir/runs/<name>/` when it holds checkpoints.

    Args:
        out_dir: the world folder (vae/, text_encoder/, tokenizer/, teacher/, reward_image/, reward_video/).
        name: "turbo" or "vcm" (or another family's student, e.g. "fm_turbo").
        recipe: {"rewards": [...]} (see `student_recipe`); optionally "preset" (default "moving-digits"),
            "teacher" (the teacher's folder in `out_dir`, default "teacher") and "keep" (what of the exported
            student folder to copy, default ["unet"]; missing entries are skipped), as another family's
            recipe sets them (`stage_fm.fm_student_recipe`).
        overrides: extra dotted config overrides (e.g. {"train.max_steps": 1200}).
    Returns:
        {"steps", "seconds", "run_dir"}.
    """
    from ...train import train

    out = Path(out_dir)
    preset = recipe.get("preset", PRESET)
    keep = list(recipe.get("keep", ["unet"]))
    rewards = [dict(r, path=str(out / REWARD_FOLDERS[r["name"]])) for r in recipe.get("rewards", [])]
    run_dir = out / "runs" / name
    cfg = {
        "name": f"md-{name}",
        "output_dir": str(run_dir),
        "model.teacher": str(out / recipe.get("teacher", "teacher")),
        "rewards": rewards,
        **(overrides or {}),
    }
    if run_dir.exists() and not any(run_dir.glob("checkpoints/*")):
        shutil.rmtree(run_dir)
    if any(run_dir.glob("checkpoints/*")):
        cfg["train.resume"] = "latest"
    t0 = time.time()
    result = train(preset, cfg)
    if result.student_dir is None:
        raise RuntimeError(f"training {name} produced no student (see {run_dir})")
    dest = out / name
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for entry in keep:
        src = Path(result.student_dir) / entry
        if src.is_dir():
            shutil.copytree(src, dest / entry)
        elif src.is_file():
            shutil.copy2(src, dest / entry)
        elif entry == keep[0]:  # the network itself must be there
            raise RuntimeError(f"training {name} exported no {entry} (see {result.student_dir})")
    meta_src = Path(result.student_dir) / "t2v_turbo.json"
    meta = json.loads(meta_src.read_text()) if meta_src.exists() else {}
    meta["trained_with"] = {"preset": preset, "rewards": recipe.get("rewards", []), "steps": result.step}
    (dest / "t2v_turbo.json").write_text(json.dumps(meta, indent=2))
    return {"steps": result.step, "seconds": time.time() - t0, "run_dir": str(run_dir)}


def train_both(
    out_dir: str | Path | None = None, overrides: dict | None = None, names: Sequence[str] = STUDENT_NAMES
) -> dict:
    """Distill both students into `out_dir` (default: the shipped assets folder)."""
    out = world_dir(out_dir)
    return {name: distill_student(out, name, student_recipe(name), overrides) for name in names}

