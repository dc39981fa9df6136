"""Rebuild the MovingDigits world's models from scratch: `build_world` runs the training stages.

Stages and their output folders (under `out_dir`, by default the shipped
`src/t2v_turbo/assets/moving_digits/`), in order:

1. "vae"               `stage_vae.train_vae`                   -> vae/
2. "text_and_rewards"  `stage_text.train_text_and_rewards`     -> tokenizer/, reward_image/, reward_video/, text_encoder/
3. "teacher"           `stage_teacher.train_teacher`           -> teacher/ (a UNet folder; with 1-2 a full backbone)
4. "students"          `students.train_students`               -> turbo/, vcm/ (distilled by `t2v_turbo.train`)

Later stages read earlier ones' outputs from `out_dir`; each stage logs to `out_dir/logs/`.

The flow-matching family (`FAMILIES["fm"]`, stage_fm.py) on the same VAE, text tower and rewards:

5. "fm_teacher"        `stage_fm.train_fm_teacher`             -> fm_teacher/ (a Wan transformer folder)
6. "fm_students"       `stage_fm.train_fm_students`            -> fm_vcm/, fm_turbo/ (distilled by `t2v_turbo.train`)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ...errors import InputError
from .stage_common import world_dir, write_log
from .stage_fm import train_fm_students, train_fm_teacher
from .stage_teacher import train_teacher
from .stage_text import train_text_and_rewards
from .stage_vae import train_vae
from .students import train_students

STAGES = ("vae", "text_and_rewards", "teacher", "students")
FM_STAGES = ("fm_teacher", "fm_students")
FAMILIES = {"unet": STAGES, "fm": FM_STAGES}  # a family's stages (the fm family reuses vae/text/rewards)

QUICK = {  # smoke-test sizes: minutes -> seconds; the models are the same, just barely trained
    "vae": {"steps": 20},
    "text_and_rewards": {"image_steps": 10, "video_steps": 10, "batch_size": 16},
    "teacher": {"steps": 10, "batch_size": 2},
    "fm_teacher": {"steps": 4, "batch_size": 2},
}


STAGE_FUNCTIONS: dict[str, Callable[..., dict]] = {
    "vae": train_vae,
    "text_and_rewards": train_text_and_rewards,
    "teacher": train_teacher,
    "fm_teacher": train_fm_teacher,
}


def build_world(
    out_dir: str | Path | None = None,
    stages: Sequence[str] = ("vae", "text_and_rewards", "teacher"),
    quick: bool = False,
    seed: int = 0,
    num_threads: int | None = None,
    progress: bool = True,
    trainer: Callable[[Path, str, dict], dict] | None = None,
) -> dict:
    """Rebuild the MovingDigits world: VAE, tokenizer + text encoder + rewards, teacher, and the
    students when "students" is among `stages`.

    Args:
        out_dir: where to write (default: the shipped `assets/moving_digits/`; `quick` requires one).
        stages: which stages to run (run in the order of `STAGES`, then `FM_STAGES`).
        quick: a seconds-long smoke run with tiny step counts (weights are not useful).
        seed: seeds every stage.
        num_threads: torch CPU threads.
        progress: show tqdm bars.
        trainer: the students' trainer, both families (see `students.train_students`; default
            `distill_student`, which reads the family from the recipe).

    Returns:
        dict: per-stage logs and "seconds" for the whole build.

    Raises:
        InputError: an unknown stage, or `quick` without `out_dir`.
    """
    unknown = [s for s in stages if s not in STAGES + FM_STAGES]
    if unknown:
        raise InputError(f"unknown stages {unknown}; valid: {list(STAGES + FM_STAGES)}")
    if quick and out_dir is None:
        raise InputError("a quick build needs an explicit out_dir (it would overwrite the shipped weights)")
    out = world_dir(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    t0 = time.time()
    report: dict = {"out_dir": str(out), "quick": quick}
    for stage in (s for s in STAGES + FM_STAGES if s in stages):
        t_stage = time.time()
        if stage == "students":
            report[stage] = train_students(out, trainer)
        elif stage == "fm_students":
            report[stage] = train_fm_students(out, trainer)
        else:
            kw = dict(QUICK[stage]) if quick else {}
            report[stage] = STAGE_FUNCTIONS[stage](out, seed=seed, progress=progress, **kw)
        report[stage]["wall_seconds"] = time.time() - t_stage
        tqdm.write(f"[world] stage {stage} done in {time.time() - t_stage:.0f} s")
    report["seconds"] = time.time() - t0
    tqdm.write(f"[world] built {list(stages)} in {report['seconds']:.0f} s -> {out}")
    write_log(out / "logs", "build.json", report)
    return report
