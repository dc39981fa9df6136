"""Helpers shared by the world's training stages: the output folder, the learning-rate schedule, the
captioned latent batch of the teachers, logs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from .models import ASSETS_DIR


def world_dir(out_dir: str | Path | None = None) -> Path:
    """`out_dir` as a Path, or the shipped world folder src/t2v_turbo/assets/moving_digits/."""
    return Path(out_dir) if out_dir is not None else ASSETS_DIR


def cosine_lr(step: int, total: int, warmup: int, base: float, final_frac: float = 0.05) -> float:
    """Linear warm-up over `warmup` steps to `base`, then cosine decay to `final_frac` x `base` at `total`."""
    if step < warmup:
        return base * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * p)))


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr


def write_log(folder: Path, name: str, info: dict) -> None:
    """Write `info` as JSON to `folder/name` (creating the folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(info, indent=2))


def latent_batch(backbone, text_cache, rng, gen: torch.Generator, n: int, paraphrase_prob: float, cond_dropout: float):
    """A teacher's training batch: `n` rendered videos (`dataset.sample_batch`), their captions with CFG
    dropout (each replaced by "" with probability `cond_dropout`), encoded to latents (B, c, T, h, w)
    with `gen` and to text states through the frozen tower's `text_cache`. Returns (latents, cond, specs)."""
    from .dataset import sample_batch

    videos, captions, specs = sample_batch(rng, n, paraphrase_prob=paraphrase_prob)
    captions = ["" if rng.random() < cond_dropout else c for c in captions]
    x0 = backbone.encode_video(videos, generator=gen)
    return x0, text_cache(captions, x0.device), specs

