"""Reward fine-tuning by backpropagation through a sampling chain: the DRaFT-K / VADER baseline.

T2V-Turbo's point is that its reward gradient never flows through a sampling chain (it scores the
student's single-step prediction inside the consistency step, so memory stays that of one student
step). This module is the baseline it is compared against (DRaFT-K, Clark et al. 2024; VADER,
Prabhudesai et al. 2024): sample with the few-step consistency sampler from pure noise, run the first
N - K steps without gradients, the last K steps with gradients, decode the final sample and maximise
the rewards. The activation memory grows with K (K UNet passes + the decode are kept for backward).

`chain_reward_step` is a pure step function (no optimizer): the trainer calls it instead of
`distill_step` for `mode: chain` and does the backward/optimizer work itself. The chain is the
student's own consistency sampler (`sampling.consistency_sample` with `grad_last_k = K`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..losses import reward_terms
from ..models.base import Denoiser, guidance_to_w
from ..sampling import consistency_sample, consistency_timesteps


def chain_reward_step(
    student: Denoiser,
    prompts: Sequence[str],
    rewards: Sequence,
    num_steps: int = 4,
    backprop_steps: int = 1,
    w: float = 7.5,
    generator: torch.Generator | None = None,
    decode_checkpointing: bool = False,
    cond: Tensor | None = None,
    num_frames: int | None = None,
    timestep_rule: str = "t2v-turbo",
    origin_steps: int = 50,
    sigma_data: float = 0.5,
    timestep_scaling: float = 10.0,
) -> dict[str, Tensor]:
    """One reward fine-tuning step through the last K steps of an N-step consistency sampling chain.

    Args:
        student: a backbone with a guidance embedding (its trainable parameters get the gradient).
        prompts: B prompts; one video each.
        rewards: `RewardTerm`s (name, model, weight); their models are frozen here (never trained).
        num_steps: N, the sampler's steps (timesteps from `consistency_timesteps`).
        backprop_steps: K in 1..N; the last K steps run with gradients (DRaFT-K; K = N is full
            backpropagation through the chain, as AlignProp / VADER without truncation).
        w: the student's embedded guidance (T2V-Turbo convention, converted to the checkpoint's).
        generator: the source of every random draw (initial noise, per-step noise, reward frames),
            drawn in the same order whatever K, so runs differing only in K sample the same video.
        decode_checkpointing: recompute VAE decoder activations in backward.
        cond: precomputed prompt embeddings (B, L, D); computed from `prompts` when None.
        num_frames: frames to generate (default: the model's).
    Returns:
        {"loss": -sum_i weight_i R_i (differentiable), "reward/<name>": R_i, "backprop_steps": K,
        "unet_evals": N}.
    Raises:
        ValueError: K outside 1..N, or no reward with a non-zero weight.
    """
    if not 1 <= backprop_steps <= num_steps:
        raise ValueError(f"backprop_steps must be in 1..num_steps={num_steps}, got {backprop_steps}")
    if not any(term.weight != 0 for term in rewards):
        raise ValueError("chain reward fine-tuning needs at least one reward with a non-zero weight")
    if student.w_embedding_dim is None:
        raise ValueError("the chain baseline fine-tunes a student (a backbone with a guidance embedding)")
    for term in rewards:
        term.model.requires_grad_(False)
    prompts = list(prompts)
    b = len(prompts)
    schedule = student.schedule
    dev, dtype = student.device, student.dtype

    # 1. Conditioning: prompt embeddings and the guidance embedding w_emb (no grad: frozen towers).
    with torch.no_grad():
        cond = student.encode_prompt(prompts) if cond is None else cond
    w_emb = student.w_embedding(guidance_to_w(w, student.guidance_convention), b)

    # 2. The sampling chain from pure noise: z_T ~ N(0, I), timesteps tau_1 > ... > tau_N; the
    # consistency sampler runs steps i < N - K without gradients (their output is a constant for the
    # backward) and the last K with gradients through the network and the re-noising.
    timesteps = consistency_timesteps(num_steps, origin_steps, timestep_rule, schedule.num_train_timesteps)
    shape = student.latent_shape(b, num_frames)
    z = torch.randn(shape, generator=generator).to(dev, dtype)

    def model_fn(z_t: Tensor, t: Tensor) -> Tensor:
        return student.model_output(z_t, t, cond, w_emb)

    denoised = consistency_sample(
        model_fn, schedule, shape, timesteps, generator=generator, latents=z, sigma_data=sigma_data,
        timestep_scaling=timestep_scaling, grad_last_k=backprop_steps,
    )  # fmt: skip

    # 3. Decode the final sample (only each reward's frames) and score: loss = -sum_i beta_i R_i.
    def decode(latents: Tensor, frames: list[int]) -> Tensor:
        return student.decode_latents(latents.to(dtype), frames, checkpoint=decode_checkpointing)

    loss, logs = reward_terms(
        denoised, prompts, rewards, decode, generator, num_video_frames=getattr(student, "num_video_frames", None)
    )
    return {
        "loss": loss,
        **logs,
        "backprop_steps": torch.tensor(backprop_steps),
        "unet_evals": torch.tensor(num_steps),
    }
