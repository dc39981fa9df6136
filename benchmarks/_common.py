"""Shared helpers for the benchmark scripts: models, timing, tables, JSON.

Benchmarks are not tests: they print a markdown table of ratios measured in one run (every
configuration against a baseline measured in the same run, interleaved so that load from other
processes hits all configurations alike), labelled with the machine, and write
`benchmarks/results/NAME.json`.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


# ------------------------------------------------------------------------------------------ machine
def machine() -> dict:
    from t2v_turbo.evaluation.hardware import machine_info

    info = machine_info()
    try:
        info["load_average_1min"] = os.getloadavg()[0]
    except OSError:  # pragma: no cover - not on every platform
        pass
    return info


def machine_line(info: dict) -> str:
    from t2v_turbo.evaluation.hardware import machine_label

    load = info.get("load_average_1min")
    return machine_label(info) + (f"; 1-min load average at start {load:.1f}" if load is not None else "")


# ------------------------------------------------------------------------------------------ models
def world_sized_teacher(seed: int = 0):
    """A random-weight teacher with the shipped MovingDigits teacher's architecture, made by the world's
    own builders: UNetMotionModel (32, 64, 64) with position channels, AutoencoderKL (32, 64, 64) 4x,
    the 2-layer 64-d CLIP text tower with the world's tokenizer; videos 8 x 32 x 32, v-prediction.
    Timings do not depend on the weights."""
    from t2v_turbo.schedule import NoiseSchedule
    from t2v_turbo.worlds.moving_digits import models as mdm
    from t2v_turbo.worlds.moving_digits.stage_text import random_text_tower

    tokenizer = mdm.build_tokenizer()
    return mdm.build_backbone(
        mdm.build_unet(seed=seed, position_channels=True),
        mdm.build_vae(seed=seed).eval(),
        random_text_tower(tokenizer, seed=seed + 1),
        tokenizer,
        NoiseSchedule.make(beta_end=0.03, prediction_type="v_prediction"),
        position_channels=True,
    ).eval()


def shipped_available(*names: str) -> bool:
    """Whether the shipped MovingDigits folder holds these models ("teacher", "turbo", "reward_image", ...)."""
    from t2v_turbo.worlds.moving_digits.models import ASSETS_DIR as WORLD_DIR

    def present(n: str) -> bool:
        if n.startswith("reward_"):
            return (WORLD_DIR / n / "reward_config.json").exists()
        return (WORLD_DIR / n / "unet" / "config.json").exists() and any(
            (WORLD_DIR / n / "unet").glob("*.safetensors")
        )

    return all(present(n) for n in names)


def load_models(student_name: str = "turbo") -> tuple:
    """(teacher, student, note): the shipped MovingDigits models when present, else world-sized random ones."""
    from t2v_turbo.pipeline import load_backbone

    if shipped_available("teacher", student_name):
        teacher = load_backbone("teacher").freeze().eval()
        student = load_backbone(student_name).eval()
        return teacher, student, f"shipped MovingDigits models (teacher, {student_name})"
    if shipped_available("teacher"):
        teacher = load_backbone("teacher").freeze().eval()
        student = teacher.make_student(256, init="zero").eval()
        note = (
            f"the shipped MovingDigits teacher; the shipped {student_name!r} student is not built yet, so a fresh "
            "student of the same architecture (teacher.make_student) stands in: speed and memory do not depend "
            "on the weights"
        )
        return teacher, student, note
    teacher = world_sized_teacher().freeze().eval()
    student = teacher.make_student(256, init="zero").eval()
    note = (
        "the shipped MovingDigits models are not built yet (src/t2v_turbo/assets/moving_digits): "
        "world-sized random-weight models (the world's UNetMotionModel (32,64,64) with position channels, "
        "KL-VAE 4x, 8x32x32 videos) stand in; "
        "speed and memory do not depend on the weights"
    )
    return teacher, student, note


def md_prompts(n: int) -> list[str]:
    try:
        from t2v_turbo.worlds.moving_digits.dataset import prompt_subset

        return prompt_subset(n, seed=0)
    except ImportError:  # pragma: no cover - the world is part of the package
        return [f"a red digit {i % 10} moving left" for i in range(n)]


# ------------------------------------------------------------------------------------------ timing
def interleaved_timings(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1, progress=None):
    """Run every fn `warmup` times, then `repeats` rounds calling each fn once per round (interleaved,
    so background load hits all alike). Returns name -> list of seconds."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
            if progress is not None:
                progress.update(1)
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs)


# ------------------------------------------------------------------------------------------ output
def markdown(headers: list[str], rows: list[list]) -> str:
    def fmt(x):
        if isinstance(x, float):
            return f"{x:.4g}"
        return str(x)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=1))
    return path


def set_threads(n: int | None) -> int:
    if n:
        torch.set_num_threads(n)
    return torch.get_num_threads()
