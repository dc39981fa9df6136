"""Evaluate models x step counts on a prompt list with fixed seeds: generate, then score every video.

`evaluate()` is the library entry point behind `t2v-turbo eval`: for each (model, steps) run it calls
`pipeline.generate` once per seed (the same seed gives the same initial noise to every model with the
same latent shape), applies the metric functions of `metrics.py`, any reward models, the MovingDigits
judge and FVD, and returns one JSON-ready dict with per-video values and summaries.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..models.base import Backbone
from ..rewards.base import RewardModel, select_frames
from . import metrics as M
from .hardware import machine_info

TEACHER_DEFAULT_STEPS = (50,)
STUDENT_DEFAULT_STEPS = (1, 2, 4, 8)


@dataclass
class Scorers:
    """What scores the generated videos (all optional except the model-free metrics).

    Attributes:
        rewards: name -> reward model (`(videos, prompts) -> (B,)`), scored on deterministic frames.
        clip: an image-text scorer with `score_images(images, prompts)` for `text_alignment`.
        clip_name: how `clip` is described in the results.
        feature_fn: frame encoder for `temporal_consistency`; None uses mean-centred pixels.
        feature_name: how `feature_fn` is described in the results ("pixels" when None).
        judge: an object with `score(videos, prompts) -> {name: (B,)}` (the MovingDigits judge).
        fvd_detector: an I3D network (see fvd.py); used with `real_videos`.
        real_videos: (prompts, seeds) -> the real videos (N, 3, T, H, W) that FVD compares against.
        centroid_threshold: background level ignored by `centroid_displacement`.
    """

    rewards: dict[str, RewardModel] = field(default_factory=dict)
    clip: RewardModel | None = None
    clip_name: str | None = None
    feature_fn: Callable[[Tensor], Tensor] | None = None
    feature_name: str = "pixels"
    judge: object | None = None
    fvd_detector: object | None = None
    real_videos: Callable[[Sequence[str], Sequence[int]], Tensor] | None = None
    centroid_threshold: float = 0.1


def eval_frames(reward: RewardModel, num_total: int) -> list[int]:
    """Deterministic frames a reward scores at evaluation.

    Image rewards: every frame (scores averaged). Video rewards: their `num_frames` frames with
    stride T // N starting at frame 0 (training draws a random start; evaluation must not), or the
    reward's own strided repetition when the video is shorter than N frames.
    """
    if reward.kind == "image":
        return list(range(num_total))
    if reward.num_frames >= num_total:
        return select_frames(num_total, reward.num_frames, "video")
    stride = max(num_total // reward.num_frames, 1)
    return [i * stride for i in range(reward.num_frames)]


@torch.no_grad()
def score_videos(
    videos: Tensor, prompts: Sequence[str], scorers: Scorers, batch_size: int = 64
) -> dict[str, Tensor]:
    """Every per-video metric of videos (N, 3, T, H, W) in [-1, 1]: name -> (N,) float64.

    Keys: temporal_consistency, motion_amount, centroid_displacement, text_alignment (with a clip
    scorer), reward/<name>, judge/<key>.
    """
    prompts = list(prompts)
    out: dict[str, list[Tensor]] = {}

    def add(name: str, value: Tensor) -> None:
        out.setdefault(name, []).append(value.detach().double().cpu())

    for i in range(0, len(prompts), batch_size):
        v, p = videos[i : i + batch_size], prompts[i : i + batch_size]
        add("temporal_consistency", M.temporal_consistency(v, scorers.feature_fn))
        add("motion_amount", M.motion_amount(v))
        add("centroid_displacement", M.centroid_displacement(v, scorers.centroid_threshold))
        if scorers.clip is not None:
            add("text_alignment", M.text_alignment(v, p, scorers.clip.score_images))
        for name, reward in scorers.rewards.items():
            frames = eval_frames(reward, v.shape[2])
            add(f"reward/{name}", reward(v[:, :, frames], p))
        if scorers.judge is not None:
            for key, val in scorers.judge.score(v, p).items():
                add(f"judge/{key}", torch.as_tensor(val))
    return {k: torch.cat(vs) for k, vs in out.items()}


def run_settings(model: Backbone, w: float, cfg_scale: float | None) -> dict:
    """A run's sampler and guidance: a student embeds `w` (consistency sampler); a teacher runs
    DDIM + CFG at `cfg_scale` (default 1 + w, see `pipeline.teacher_cfg_scale`)."""
    from ..pipeline import is_student, sampler_name, teacher_cfg_scale

    if is_student(model):
        fixed = getattr(model, "fixed_w", None) if model.w_embedding_dim is None else None
        return {"sampler": "consistency", "w": float(w if fixed is None else fixed), "cfg_scale": None}
    return {"sampler": sampler_name(model), "w": None, "cfg_scale": teacher_cfg_scale(w, cfg_scale)}


def time_runs(jobs, prompts: Sequence[str], w: float, cfg_scale: float | None, repeats: int, timestep_rule: str, bar=None):
    """Seconds per video of every (label, model, steps) job, measured interleaved: `repeats` rounds,
    each timing every job once in turn on the same prompts, so a machine that slows down or speeds
    up mid-way affects every job alike. Returns {(label, steps): [seconds per video per round]}."""
    from ..pipeline import generate

    times: dict[tuple[str, int], list[float]] = {}
    for _ in range(repeats):
        for label, model, n in jobs:
            gen = generate(model, prompts, n, w=w, cfg_scale=cfg_scale, seed=0, timestep_rule=timestep_rule)
            times.setdefault((label, n), []).append(gen.seconds / len(prompts))
            if bar is not None:
                bar.update(1)
    return times


def evaluate(
    models: dict[str, Backbone],
    prompts: Sequence[str],
    steps: Sequence[int] = STUDENT_DEFAULT_STEPS,
    teacher_steps: Sequence[int] = TEACHER_DEFAULT_STEPS,
    w: float = 7.5,
    cfg_scale: float | None = None,
    seeds: Sequence[int] = (0,),
    scorers: Scorers | None = None,
    batch_size: int = 64,
    video_dir: str | Path | None = None,
    video_format: str = "mp4",
    sources: dict[str, str] | None = None,
    timestep_rule: str = "t2v-turbo",
    progress: bool = True,
    timing_repeats: int = 3,
    timing_prompts: int = 8,
) -> dict:
    """Generate and score every (model, steps) on `prompts` x `seeds`.

    Args:
        models: label -> backbone. A student (w embedding) runs at each of `steps`, a teacher at
            each of `teacher_steps` (DDIM + CFG).
        seeds: one `generate` call per seed; video j of seed s is prompt j with initial noise from s.
        video_dir: if given, videos are also written to `video_dir/{label}-{steps}steps/{prompt}-{k}.mp4`
            (k = index of the seed).
        sources: label -> what was loaded (recorded).
        w, cfg_scale: the students' embedded w; the teachers' CFG scale (default 1 + w).
        timing_repeats, timing_prompts: speed is measured apart from the scored generation, on the
            first `timing_prompts` prompts, interleaved over every run, `timing_repeats` rounds
            (0 rounds: the scored generation's own wall clock).
    Returns:
        {"settings": ..., "machine": ..., "runs": [{"model", "steps", "sampler", "w", "cfg_scale",
        "metrics": {name: summary}, "per_video": {name: [...]}, "seconds_per_video" (median of the
        rounds), "seconds_per_video_range" ([min, max]), "unet_evals_per_video", "fvd" (with a
        detector), ...}]}.
    """
    from ..pipeline import generate, save_videos

    scorers = scorers or Scorers()
    prompts = list(prompts)
    jobs = []
    for label, model in models.items():
        for n in steps if model.w_embedding_dim is not None else teacher_steps:
            jobs.append((label, model, int(n)))
    runs = []
    bar = tqdm(total=len(jobs) * (len(seeds) + timing_repeats), desc="eval", unit="run", disable=not progress)
    real_features = None
    for model in models.values():  # first-call costs (allocator, kernels) stay out of the timings
        generate(model, prompts[:1], 1, w=w, cfg_scale=cfg_scale, seed=0, timestep_rule=timestep_rule)
    timing = time_runs(jobs, prompts[:timing_prompts], w, cfg_scale, timing_repeats, timestep_rule, bar)
    for label, model, n in jobs:
        guidance = run_settings(model, w, cfg_scale)
        per_video: dict[str, list[Tensor]] = {}
        seconds, evals, timesteps, fvd_fake = 0.0, 0, [], []
        for k, seed in enumerate(seeds):
            bar.set_postfix_str(f"{label} {n} steps seed {seed}")
            gen = generate(
                model,
                prompts,
                n,
                w=w,
                cfg_scale=cfg_scale,
                seed=int(seed),
                batch_size=batch_size,
                timestep_rule=timestep_rule,
            )
            seconds += gen.seconds
            evals, timesteps = gen.unet_evals, gen.timesteps
            for name, val in score_videos(gen.videos, prompts, scorers, batch_size).items():
                per_video.setdefault(name, []).append(val)
            if scorers.fvd_detector is not None and scorers.real_videos is not None:
                from .fvd import i3d_features

                fvd_fake.append(i3d_features(scorers.fvd_detector, gen.videos))
            if video_dir is not None:
                folder = Path(video_dir) / f"{label}-{n}steps"
                save_videos(gen, folder, [k] * len(prompts), model.native_fps, video_format)
            del gen
            bar.update(1)
        values = {name: torch.cat(v) for name, v in per_video.items()}
        num_videos = len(prompts) * len(seeds)
        run = {
            "model": label,
            "source": (sources or {}).get(label, label),
            "steps": n,
            **guidance,
            "timesteps": list(timesteps),
            "num_videos": num_videos,
            # wall clock of generation only (text encoding + sampling + VAE decode), per video:
            # the median of the interleaved timing rounds, with their range
            "seconds_per_video": _median(timing[(label, n)]) if timing else seconds / num_videos,
            "seconds_per_video_range": (
                [min(timing[(label, n)]), max(timing[(label, n)])] if timing else [seconds / num_videos] * 2
            ),
            "timing_rounds": len(timing.get((label, n), [])),
            # UNet evaluations per video (a CFG step counts its cond and uncond branches)
            "unet_evals_per_video": evals,
            "metrics": {name: M.summarize(v) for name, v in values.items()},
            "per_video": {name: v.tolist() for name, v in values.items()},
        }
        if fvd_fake:
            if real_features is None:
                real_features = _real_features(scorers, prompts, seeds)
            run["fvd"] = _fvd_entry(fvd_fake, real_features, model)
            run["metrics"][run["fvd"]["name"]] = {"mean": run["fvd"]["value"], "std": 0.0, "sem": 0.0, "n": 1}
        runs.append(run)
    bar.close()
    first = next(iter(models.values()))
    settings = {
        "prompts": prompts,
        "num_prompts": len(prompts),
        "seeds": [int(s) for s in seeds],
        "steps": [int(s) for s in steps],
        "teacher_steps": [int(s) for s in teacher_steps],
        "w": float(w),
        "cfg_scale": cfg_scale,
        "guidance_convention": "t2v-turbo (student embeds w; teacher CFG scale = 1 + w unless cfg_scale is given)",
        "timing": f"median of {timing_repeats} interleaved rounds on {min(timing_prompts, len(prompts))} prompt(s)"
        if timing_repeats
        else "wall clock of the scored generation",
        "timestep_rule": timestep_rule,
        "resolution": list(first.resolution),
        "fps": first.native_fps,
        "temporal_consistency_features": scorers.feature_name,
        "text_alignment": scorers.clip_name if scorers.clip is not None else None,
        "rewards": sorted(scorers.rewards),
        "judge": scorers.judge is not None,
        "reward_frames": "image rewards: all frames; video rewards: N strided frames from frame 0",
    }
    return {"settings": settings, "machine": machine_info(), "runs": runs}


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else 0.5 * (xs[mid - 1] + xs[mid])


def _real_features(scorers: Scorers, prompts: Sequence[str], seeds: Sequence[int]):
    from .fvd import i3d_features

    return i3d_features(scorers.fvd_detector, scorers.real_videos(prompts, seeds))


def _fvd_entry(fake_feats: list, real_features, model: Backbone) -> dict:
    """FVD of one run's generated videos against the real videos (both as I3D features)."""
    import numpy as np

    from .fvd import FVDProtocol, frechet_distance_from_features

    fake = np.concatenate(fake_feats)
    t, h, w = model.resolution
    proto = FVDProtocol(fake.shape[0], t, h, w)
    out = {"name": proto.name, "value": frechet_distance_from_features(real_features, fake)}
    return out | {"protocol": proto.to_dict() | {"num_real_videos": int(real_features.shape[0])}}
