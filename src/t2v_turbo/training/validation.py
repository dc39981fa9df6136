"""Periodic validation: held-out prompts sampled at a few step counts, videos saved, rewards scored."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ..models.base import Backbone
from ..rewards.base import RewardTerm


def validation_prompts(cfg) -> list[str]:
    from ..data.prompts import read_prompt_file

    prompts = [p for p in cfg.validation.prompts if p.strip()]
    if cfg.validation.prompt_file:
        prompts += read_prompt_file(cfg.validation.prompt_file)
    return prompts


@torch.no_grad()
def run_validation(
    student: Backbone,
    prompts: Sequence[str],
    step_counts: Sequence[int],
    terms: Sequence[RewardTerm],
    out_dir: Path | None,
    w: float = 7.5,
    seed: int = 0,
    fps: int | None = None,
) -> dict[str, float]:
    """Sample every prompt at each step count with `pipeline.generate` at the student's embedded
    guidance `w`; save videos under
    `out_dir/{n}-step/`; return {"val/{n}step/{reward}": mean score, "val/{n}step/seconds": ...}."""
    from ..pipeline import generate, save_videos

    was_training = student.unet.training
    student.unet.eval()
    results: dict[str, float] = {}
    try:
        for n in step_counts:
            gen = generate(student, list(prompts), num_steps=n, w=w, seed=seed)
            results[f"val/{n}step/seconds"] = gen.seconds
            if out_dir is not None:
                save_videos(
                    gen, Path(out_dir) / f"{n}-step", list(range(len(prompts))), fps or student.native_fps
                )
            g = torch.Generator().manual_seed(seed)
            for term in terms:
                frames = term.model.select_frames(gen.videos.shape[2], g)
                param = next(term.model.parameters(), None)
                video = gen.videos[:, :, frames]
                if param is not None:
                    video = video.to(param.device, param.dtype)
                score = term.model(video, list(prompts)).float().mean()
                results[f"val/{n}step/{term.name}"] = float(score)
    finally:
        student.unet.train(was_training)
    return results
