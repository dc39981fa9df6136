"""Checks of a world model: judge scores of its samples, and how much its denoiser uses each word."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ...errors import InputError


@torch.no_grad()
def evaluate_backbone(
    backbone,
    prompts: Sequence[str] | None = None,
    num_steps: int = 50,
    w: float = 7.5,
    cfg_scale: float | None = None,
    seed: int = 0,
    batch_size: int = 70,
) -> dict:
    """Judge scores of a backbone's samples (one per prompt; default all 280 canonical prompts).

    A student samples with the consistency sampler at its embedded guidance `w`; a teacher with
    DDIM and classifier-free guidance at scale `cfg_scale` (default 1 + w, as `pipeline.generate`).
    Returns the judge summary plus seconds, num_steps, w, cfg_scale and seed.
    """
    from ...pipeline import generate
    from .dataset import canonical_prompts
    from .judge import get_judge

    prompts = list(prompts) if prompts is not None else canonical_prompts()
    gen = generate(
        backbone, prompts, num_steps=num_steps, w=w, cfg_scale=cfg_scale, seed=seed, batch_size=batch_size
    )
    out = get_judge().evaluate(gen.videos, prompts)
    out.update(seconds=gen.seconds, num_steps=num_steps, w=w, cfg_scale=cfg_scale, seed=seed)
    return out


@torch.no_grad()
def word_sensitivity(
    backbone,
    timesteps: Sequence[int] = (950, 800, 600, 400, 200),
    num_videos: int = 28,
    seed: int = 0,
) -> dict[int, dict[str, float]]:
    """How much the denoiser uses each part of the prompt: its training loss (eps- or v-MSE, the
    model's own parameterisation) on ground-truth videos with the true caption, with one attribute
    swapped (colour -> the next colour, digit -> the next digit, direction -> the opposite one), and
    with the empty prompt.

    The same noised latents are scored under every caption, so a model that ignores an attribute
    gets exactly the "true" loss for its swap. Returns {t: {"true", "color", "digit", "direction",
    "empty"}}.

    Raises:
        InputError: a timestep outside 0..num_train_timesteps - 1.
    """
    from .dataset import (
        COLORS,
        DIGITS,
        DIRECTIONS,
        canonical_caption,
        parse_caption,
        prompt_subset,
        prompt_videos,
    )

    sched = backbone.schedule
    bad = [t for t in timesteps if not 0 <= int(t) < sched.num_train_timesteps]
    if bad:
        raise InputError(f"timesteps must be in 0..{sched.num_train_timesteps - 1}, got {bad}")
    prompts = prompt_subset(num_videos, seed=seed)
    videos, _ = prompt_videos(prompts, seed=seed, split="train")
    gen = torch.Generator().manual_seed(seed)
    z0 = backbone.encode_video(videos, generator=gen)
    colors, digits, dirs = list(COLORS), list(DIGITS), list(DIRECTIONS)

    def swap(p: str, what: str) -> str:
        c, d, m = parse_caption(p)
        if what == "color":
            c = colors[(colors.index(c) + 1) % len(colors)]
        elif what == "digit":
            d = digits[(digits.index(d) + 1) % len(digits)]
        else:
            m = dirs[dirs.index(m) ^ 1]  # the opposite direction (left <-> right, up <-> down)
        return canonical_caption(c, d, m)

    captions = {
        "true": prompts,
        **{k: [swap(p, k) for p in prompts] for k in ("color", "digit", "direction")},
        "empty": [""] * len(prompts),
    }
    conds = {k: backbone.encode_prompt(v) for k, v in captions.items()}
    out: dict[int, dict[str, float]] = {}
    for t in timesteps:
        eps = torch.randn(z0.shape, generator=gen)
        tt = torch.full((len(prompts),), int(t))
        z_t = sched.add_noise(z0, eps, tt)
        target = sched.get_velocity(z0, eps, tt) if sched.prediction_type == "v_prediction" else eps
        out[int(t)] = {
            k: float((backbone.model_output(z_t, tt, c) - target).pow(2).mean()) for k, c in conds.items()
        }
    return out
