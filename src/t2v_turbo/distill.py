"""T2V-Turbo Algorithm 1 as one function: consistency distillation + mixed reward feedback."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .losses import consistency_loss, reward_terms
from .models.base import Backbone
from .schedule import consistency_output
from .solvers import DDIMSolver, cfg_combine


@dataclass
class DistillConfig:
    """Knobs of one distillation step (defaults: the released VideoCrafter2 recipe).

    Attributes:
        w_min, w_max: guidance scale range, w ~ U[w_min, w_max] per sample (LCM convention).
        loss_type: "huber" (pseudo-Huber, c = huber_c) or "l2".
        target: "online" (the student itself under stop-gradient, released code) or "ema" (paper).
        decode_checkpointing: recompute VAE decoder activations in the reward backward.
        compute_cd: False skips steps 4-6 (teacher, target, L_CD) for ranks that only compute rewards
            (the released reward placement); the random draws stay identical.
    """

    w_min: float = 5.0
    w_max: float = 15.0
    loss_type: str = "huber"
    huber_c: float = 0.001
    target: str = "online"
    sigma_data: float = 0.5
    timestep_scaling: float = 10.0
    decode_checkpointing: bool = False
    compute_cd: bool = True


def distill_step(
    student: Backbone,
    teacher: Backbone | None,
    solver: DDIMSolver,
    z0: Tensor,
    prompts: Sequence[str],
    cond: Tensor,
    uncond: Tensor | None,
    rewards: Sequence = (),
    config: DistillConfig | None = None,
    target: Backbone | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """One T2V-Turbo training step's loss (no optimizer work here).

    Args:
        z0: data latents (B, c, T, h, w), already scaled by the VAE factor.
        cond: prompt embeddings (B, L, D); uncond: empty-prompt embedding (1 or B, L, D).
        rewards: `RewardTerm`s; empty for plain consistency distillation (VCM).
        target: an EMA copy of the student when config.target == "ema".
        generator: the source of every random draw (grid index, w, noise, reward frames).
    Returns:
        {"loss": total (differentiable), "loss_cd": ..., "reward/<name>": ..., "w": mean w, "t": mean t}.
    """
    cfg = config or DistillConfig()
    if teacher is None and cfg.compute_cd:
        raise ValueError("a teacher is needed unless config.compute_cd is False")
    schedule = (teacher or student).schedule
    b = z0.shape[0]
    dev = z0.device
    if uncond is not None:
        uncond = uncond.expand(b, *uncond.shape[1:])

    # 1. Sample the grid index n (t_{n+k} = tau_n, t_n = max(tau_n - k, 0)) and the guidance scale w.
    index = solver.sample_indices(b, generator)
    t_start, t_end = (x.to(dev) for x in solver.timestep_pair(index))
    w = cfg.w_min + (cfg.w_max - cfg.w_min) * torch.rand(b, generator=generator)
    w_emb = student.w_embedding(w)

    # 2. Forward-noise the data latent: z_{t_{n+k}} = alpha z0 + sigma eps.
    noise = torch.randn(z0.shape, generator=generator, dtype=z0.dtype).to(dev)
    z_t = schedule.add_noise(z0, noise, t_start)

    # 3. Student one-step prediction f_theta = c_skip z + c_out x0_theta.
    out = student.model_output(z_t, t_start, cond, w_emb)
    x0_student, _ = schedule.to_x0_eps(out.float(), z_t.float(), t_start)
    f_theta = consistency_output(z_t.float(), x0_student, t_start, cfg.sigma_data, cfg.timestep_scaling)

    if cfg.target == "ema" and target is None:
        raise ValueError("config.target == 'ema' needs an EMA target backbone")
    loss_cd = f_theta.new_zeros(())
    if cfg.compute_cd:  # False only on reward-only ranks (released placement)
        with torch.no_grad():
            # 4. Teacher CFG on x0 and eps (cond and uncond in one batch), then one DDIM step to t_n.
            z_both, t_both = torch.cat([z_t, z_t]), torch.cat([t_start, t_start])
            both = teacher.model_output(z_both, t_both, torch.cat([cond, uncond.to(cond.dtype)])).float()
            x0_both, eps_both = schedule.to_x0_eps(both, z_both.float(), t_both)
            x0_c, x0_u = x0_both.chunk(2)
            eps_c, eps_u = eps_both.chunk(2)
            x0_cfg = cfg_combine(x0_c, x0_u, w)
            eps_cfg = cfg_combine(eps_c, eps_u, w)
            z_prev = solver.step(x0_cfg, eps_cfg, index.to(dev))

            # 5. Target prediction at t_n (online student under stop-gradient, or the EMA copy).
            tgt = target if cfg.target == "ema" else student
            out_t = tgt.model_output(z_prev.to(z_t.dtype), t_end, cond, w_emb).float()
            x0_target, _ = schedule.to_x0_eps(out_t, z_prev, t_end)
            f_target = consistency_output(z_prev, x0_target, t_end, cfg.sigma_data, cfg.timestep_scaling)

        # 6. Consistency loss d(f_theta, f_target).
        loss_cd = consistency_loss(f_theta, f_target, cfg.loss_type, cfg.huber_c)

    # 7. Reward terms on the student's one-step prediction, decoded through the VAE with gradients.
    def decode(z: Tensor, frames: list[int]) -> Tensor:
        return student.decode_latents(z.to(student.dtype), frames, checkpoint=cfg.decode_checkpointing)

    loss_reward, logs = reward_terms(f_theta, prompts, rewards, decode, generator)

    # 8. Weighted sum: L = L_CD - sum_i beta_i R_i.
    loss = loss_cd + loss_reward
    return {
        "loss": loss,
        "loss_cd": loss_cd.detach(),
        **logs,
        "w": w.mean(),
        "t": t_start.float().mean(),
    }


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, decay: float = 0.95) -> None:
    """theta_target <- decay theta_target + (1 - decay) theta_online (LCM target network update)."""
    for p_t, p_o in zip(target.parameters(), online.parameters()):
        p_t.lerp_(p_o.to(p_t.dtype), 1.0 - decay)
