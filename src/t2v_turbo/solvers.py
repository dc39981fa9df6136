"""The teacher's ODE solver used during distillation: DDIM over a skipped grid, plus CFG.

Pure tensor code. The grid has `num_points` points over the training timesteps with skip
k = num_train_timesteps // num_points: tau_i = k (i + 1) - 1 (T2V-Turbo Alg. 1, LCM's DDIM solver).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .schedule import NoiseSchedule, _expand


def cfg_combine(cond: Tensor, uncond: Tensor, w: Tensor | float) -> Tensor:
    """Classifier-free guidance, LCM convention: cond + w (cond - uncond) (effective Imagen scale 1 + w).

    Applied to both x0 and eps predictions (T2V-Turbo Alg. 1 line 7; LCM Eq. 10).
    """
    if isinstance(w, Tensor) and w.dim() > 0:
        w = _expand(w.to(cond.device), cond)
    # x_cfg = x_c + w (x_c - x_u)
    return cond + w * (cond - uncond)


def ddim_step(schedule: NoiseSchedule, x0: Tensor, eps: Tensor, t_prev: Tensor | int) -> Tensor:
    """One deterministic DDIM step (eta = 0) to timestep t_prev; t_prev < 0 means abar = 1 (clean).

    z_{t_prev} = sqrt(abar_prev) x0 + sqrt(1 - abar_prev) eps  (DDIM Eq. 12 with sigma = 0)
    """
    t_prev = torch.as_tensor(t_prev, dtype=torch.long)
    abar_prev = torch.where(t_prev >= 0, schedule.alphas_cumprod[t_prev.clamp(min=0).cpu()], torch.ones(()))
    abar_prev = abar_prev.to(x0.device)
    if abar_prev.dim() == 0:
        return abar_prev.sqrt().to(x0.dtype) * x0 + (1 - abar_prev).sqrt().to(x0.dtype) * eps
    return _expand(abar_prev.sqrt(), x0) * x0 + _expand((1 - abar_prev).sqrt(), x0) * eps


class DDIMSolver:
    """DDIM over the skipped grid {k-1, 2k-1, ..., T-1} (default 50 points, k = 20; v2: 200, k = 5).

    The solver interface `distill_step` uses (a flow-matching Euler solver offers the same three):
    `sample_indices(batch, generator)`, `timestep_pair(index) -> (t_start, t_end)` and
    `step(x0, eps, index) -> z at t_end`.

    Attributes:
        timesteps: (num_points,) long, tau_i = k (i + 1) - 1.
        alphas_cumprod: abar at tau_i; alphas_cumprod_prev: abar at tau_{i-1} (abar_0 for i = 0).
    """

    def __init__(self, schedule: NoiseSchedule, num_points: int = 50):
        self.schedule = schedule
        self.num_points = num_points
        self.step_ratio = schedule.num_train_timesteps // num_points
        # tau_i = k (i + 1) - 1  (LCM DDIMSolver; T2V-Turbo Alg. 1)
        self.timesteps = (torch.arange(1, num_points + 1) * self.step_ratio).round().long() - 1
        self.alphas_cumprod = schedule.alphas_cumprod[self.timesteps]
        self.alphas_cumprod_prev = torch.cat(
            [schedule.alphas_cumprod[:1], schedule.alphas_cumprod[self.timesteps[:-1]]]
        )

    def sample_indices(self, batch: int, generator: torch.Generator | None = None) -> Tensor:
        """n ~ U{0, ..., num_points - 1} per sample (Alg. 1 line 3)."""
        return torch.randint(0, self.num_points, (batch,), generator=generator)

    def timestep_pair(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """(t_{n+k}, t_n) = (tau_n, max(tau_n - k, 0))."""
        t_start = self.timesteps[index]
        t_end = (t_start - self.step_ratio).clamp(min=0)
        return t_start, t_end

    def step(self, x0: Tensor, eps: Tensor, index: Tensor) -> Tensor:
        """DDIM step (eta = 0) from tau_n to t_n = max(tau_n - k, 0), the predecessor on the grid."""
        _, t_prev = self.timestep_pair(index.cpu())
        return ddim_step(self.schedule, x0, eps, t_prev)
