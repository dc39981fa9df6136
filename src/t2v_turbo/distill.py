"""T2V-Turbo Algorithm 1 as one function: consistency distillation + mixed reward feedback."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from .losses import consistency_loss, reward_terms
from .models.base import Denoiser
from .sampling import consistency_fn
from .solvers import DDIMSolver, cfg_combine


@dataclass
class DistillConfig:
    """Knobs of one distillation step (defaults: the released VideoCrafter2 recipe).

    Attributes:
        w_min, w_max: range of the student's guidance w ~ U[w_min, w_max] per sample (LCM convention:
            teacher target eps_c + w (eps_c - eps_u)).
        loss_type: "huber" (pseudo-Huber, c = huber_c) or "l2".
        target: "online" (the student itself under stop-gradient, released code) or "ema" (paper).
        sigma_data, timestep_scaling: the boundary scalings' constants (`schedule.consistency_scalings`).
        decode_checkpointing: recompute VAE decoder activations in the reward backward.
    """

    w_min: float = 5.0
    w_max: float = 15.0
    loss_type: Literal["huber", "l2"] = "huber"
    huber_c: float = 0.001
    target: Literal["online", "ema"] = "online"
    sigma_data: float = 0.5
    timestep_scaling: float = 10.0
    decode_checkpointing: bool = False


def distill_step(
    student: Denoiser,
    teacher: Denoiser | None,
    solver: DDIMSolver,
    z0: Tensor,
    prompts: Sequence[str],
    cond: Tensor,
    uncond: Tensor | None,
    rewards: Sequence = (),
    config: DistillConfig | None = None,
    target: Denoiser | None = None,
    generator: torch.Generator | None = None,
    *,
    compute_cd: bool = True,
) -> dict[str, Tensor]:
    """One T2V-Turbo training step's loss (no optimizer work here).

    Args:
        z0: data latents (B, c, T, h, w), already scaled by the VAE factor.
        cond: prompt embeddings (B, L, D); uncond: empty-prompt embedding (1 or B, L, D).
        solver: the teacher's ODE solver (`sample_indices`, `timestep_pair`, `step`), e.g. DDIMSolver.
        rewards: `RewardTerm`s; empty for plain consistency distillation (VCM).
        target: an EMA copy of the student when config.target == "ema".
        generator: the source of every random draw (grid index, w, noise, reward frames).
        compute_cd: False skips steps 4-6 (teacher, target, L_CD) on ranks that only compute rewards
            (the released reward placement); the random draws stay identical and "loss_cd" is absent.
    Returns:
        {"loss": total (differentiable), "loss_cd": ..., "reward/<name>": ..., "w": mean w, "t": mean t}.
    """
    cfg = config or DistillConfig()
    if compute_cd and (teacher is None or uncond is None):
        raise ValueError("the consistency loss needs a teacher and an uncond embedding (or compute_cd=False)")
    if compute_cd and cfg.target == "ema" and target is None:
        raise ValueError("config.target == 'ema' needs an EMA target backbone")
    schedule = (teacher or student).schedule
    scalings = {"sigma_data": cfg.sigma_data, "timestep_scaling": cfg.timestep_scaling}
    b = z0.shape[0]
    dev = z0.device

    # 1. Sample the grid index n (t_{n+k} = tau_n, t_n = max(tau_n - k, 0)) and the guidance scale w.
    index = solver.sample_indices(b, generator)
    t_start, t_end = (x.to(dev) for x in solver.timestep_pair(index))
    w = cfg.w_min + (cfg.w_max - cfg.w_min) * torch.rand(b, generator=generator)
    w_emb = student.w_embedding(w)

    # 2. Forward-noise the data latent: z_{t_{n+k}} = alpha z0 + sigma eps.
    noise = torch.randn(z0.shape, generator=generator, dtype=z0.dtype).to(dev)
    z_t = schedule.add_noise(z0, noise, t_start)

    # 3. Student one-step prediction f_theta = c_skip z + c_out x0_theta.
    f_theta, _ = consistency_fn(student, z_t, t_start, cond, w_emb, **scalings)

    terms: dict[str, Tensor] = {}
    loss = f_theta.new_zeros(())
    if compute_cd:
        with torch.no_grad():
            # 4. Teacher CFG on x0 and eps (cond and uncond in one batch), then one solver step to t_n.
            z_both, t_both = torch.cat([z_t, z_t]), torch.cat([t_start, t_start])
            uncond_b = uncond.expand(b, *uncond.shape[1:]).to(cond.dtype)
            both = teacher.model_output(z_both, t_both, torch.cat([cond, uncond_b]))
            x0_both, eps_both = schedule.to_x0_eps(both.float(), z_both.float(), t_both)
            x0_c, x0_u = x0_both.chunk(2)
            eps_c, eps_u = eps_both.chunk(2)
            # x_cfg = x_c + w (x_c - x_u) for x0 and eps  (LCM Eq. 10)
            z_prev = solver.step(cfg_combine(x0_c, x0_u, w), cfg_combine(eps_c, eps_u, w), index.to(dev))

            # 5. Target prediction at t_n (online student under stop-gradient, or the EMA copy).
            tgt = target if cfg.target == "ema" else student
            f_target, _ = consistency_fn(tgt, z_prev.to(z_t.dtype), t_end, cond, w_emb, **scalings)

        # 6. Consistency loss d(f_theta, f_target), per sample, averaged over the batch.
        loss_cd = consistency_loss(f_theta, f_target, cfg.loss_type, cfg.huber_c).mean()
        loss = loss + loss_cd
        terms["loss_cd"] = loss_cd.detach()

    # 7. Reward terms on the student's one-step prediction, decoded through the VAE with gradients.
    def decode(z: Tensor, frames: list[int]) -> Tensor:
        return student.decode_latents(z.to(student.dtype), frames, checkpoint=cfg.decode_checkpointing)

    # reward frames are pixel frames (Wan: 4k + 1 per k + 1 latent frames; per-frame VAEs: equal)
    pixel = getattr(student, "num_video_frames", None)
    loss_reward, logs = reward_terms(f_theta, prompts, rewards, decode, generator, num_video_frames=pixel)

    # 8. Weighted sum: L = L_CD - sum_i beta_i R_i.
    return {"loss": loss + loss_reward, **terms, **logs, "w": w.mean(), "t": t_start.float().mean()}


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, decay: float = 0.95) -> None:
    """theta_target <- decay theta_target + (1 - decay) theta_online (LCM target network update)."""
    for p_t, p_o in zip(target.parameters(), online.parameters()):
        p_t.lerp_(p_o.to(p_t.dtype), 1.0 - decay)
