"""Losses: the consistency loss and the mixed reward terms, each returned by name for logging.

Pure tensor code: the reward terms take a `decode` callable instead of a model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

LOSS_TYPES = ("huber", "l2")


def consistency_loss(
    pred: Tensor, target: Tensor, loss_type: str = "huber", huber_c: float = 0.001
) -> Tensor:
    """Per-sample distance between f_theta(z_{t_{n+k}}) and the stop-gradient target f(z_{t_n}).

    Args:
        pred, target: (B, ...) tensors.
    Returns:
        (B,) float32: each sample's distance averaged over its elements (the caller reduces, so it
        can weight samples or mask non-finite ones).
    """
    diff = (pred.float() - target.float()).reshape(pred.shape[0], -1)
    if loss_type == "huber":
        # pseudo-Huber: sqrt(d^2 + c^2) - c  (Song & Dhariwal 2023; T2V-Turbo uses c = 0.001)
        return (torch.sqrt(diff**2 + huber_c**2) - huber_c).mean(dim=1)
    if loss_type == "l2":
        # squared L2 (LCM's default metric)
        return (diff**2).mean(dim=1)
    raise ValueError(f"unknown loss_type {loss_type!r}; valid: {list(LOSS_TYPES)}")


def reward_terms(
    latents: Tensor,
    prompts: Sequence[str],
    rewards: Sequence,
    decode: Callable[[Tensor, list[int]], Tensor],
    generator: torch.Generator | None = None,
    num_video_frames: Callable[[int], int] | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Mixed reward on the student's single-step prediction (T2V-Turbo Eq. 9).

    Each term picks its own frames (`term.model.select_frames`); the union of those frames is decoded
    once with gradients, and each term scores its own; loss contribution = -weight * mean score.

    Frames are PIXEL frames: with a temporally compressing VAE (Wan's causal 3D VAE, 4x: 21 latent ->
    81 pixel frames) the terms pick among `num_video_frames(latents.shape[2])` frames, and `decode`
    decodes the smallest span that yields them (Wan: the latent prefix up to the latent frame of the
    last requested frame, the frames before the first requested one without gradients; see
    `WanBackbone.decode_latents`). Without `num_video_frames` (per-frame VAEs) pixel = latent frames.

    Args:
        latents: f_theta, the student's one-step prediction (B, c, T, h, w), scaled latents.
        rewards: `RewardTerm`s (name, model, weight).
        decode: (latents, pixel frame indices) -> video (B, 3, T', H, W) in [-1, 1], differentiable.
        num_video_frames: latent frame count -> pixel frame count (a backbone's `num_video_frames`).
    Returns:
        (reward loss = -sum_i beta_i R_i, {"reward/<name>": R_i (detached)}).
    """
    total = latents.new_zeros((), dtype=torch.float32)
    logs: dict[str, Tensor] = {}
    num_frames = latents.shape[2] if num_video_frames is None else int(num_video_frames(latents.shape[2]))
    picks = [(term, term.model.select_frames(num_frames, generator)) for term in rewards if term.weight != 0]
    if not picks:
        return total, logs
    # decode the union of all terms' frames once (a frame two rewards share is decoded once)
    union = sorted({f for _, frames in picks for f in frames})
    video = decode(latents, union)
    where = {f: i for i, f in enumerate(union)}
    for term, frames in picks:
        # R = mean_b r(decode(f_theta)_frames, prompt_b)
        score = term.model(video[:, :, [where[f] for f in frames]], list(prompts)).float().mean()
        # L -= beta R  (T2V-Turbo: loss = L_CD - beta_img R_img - beta_vid R_vid)
        total = total - term.weight * score
        logs[f"reward/{term.name}"] = score.detach()
    return total, logs
