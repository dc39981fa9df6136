"""Samplers: the multistep consistency sampler (student) and DDIM + CFG (teacher baseline).

Both are pure loops over a `model_fn(z_t, t) -> model output` callable, so they know no
backbone; `backbone_model_fn` builds that callable from a backbone adapter. Every random draw
comes from the `generator` argument, so identical generators give identical videos.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from .schedule import NoiseSchedule, consistency_output
from .solvers import ddim_step

ModelFn = Callable[[Tensor, Tensor], Tensor]
TIMESTEP_RULES = ("t2v-turbo", "diffusers")


def consistency_timesteps(
    num_steps: int, origin_steps: int = 50, rule: str = "t2v-turbo", num_train_timesteps: int = 1000
) -> list[int]:
    """Inference timesteps picked from the LCM origin grid tau = (1..L) * (T / L) - 1.

    rule "t2v-turbo" (default, the authors' scheduler): every floor(L/N)-th grid point from the end,
        L = 50, N = 4 -> [999, 759, 519, 279].
    rule "diffusers" (current LCMScheduler): indices floor(linspace(0, L, N, endpoint=False)) of the
        reversed grid, L = 50, N = 4 -> [999, 759, 499, 259].
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if num_steps > origin_steps:
        raise ValueError(f"num_steps ({num_steps}) cannot exceed the origin grid size ({origin_steps})")
    k = num_train_timesteps // origin_steps
    # LCM origin grid: tau_i = k i - 1, i = 1..L
    origin = np.arange(1, origin_steps + 1) * k - 1
    if rule == "t2v-turbo":
        skip = origin_steps // num_steps
        return [int(x) for x in origin[::-skip][:num_steps]]
    if rule == "diffusers":
        idx = np.floor(np.linspace(0, origin_steps, num=num_steps, endpoint=False)).astype(np.int64)
        return [int(x) for x in origin[::-1][idx]]
    raise ValueError(f"unknown timestep rule {rule!r}; valid: {list(TIMESTEP_RULES)}")


def ddim_timesteps(num_steps: int, num_train_timesteps: int = 1000, steps_offset: int = 0) -> list[int]:
    """DDIM "leading" spacing (diffusers DDIMScheduler default): (0..N-1) * (T // N) + offset, descending."""
    ratio = num_train_timesteps // num_steps
    return [int(x) for x in (np.arange(0, num_steps) * ratio + steps_offset)[::-1]]


@torch.no_grad()
def consistency_sample(
    model_fn: ModelFn,
    schedule: NoiseSchedule,
    shape: Sequence[int],
    timesteps: Sequence[int],
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    latents: Tensor | None = None,
    sigma_data: float = 0.5,
    timestep_scaling: float = 10.0,
    callback: Callable[[int, Tensor], None] | None = None,
) -> Tensor:
    """Multistep consistency sampling (LCM Alg. 1): one model call per step, no CFG.

    Args:
        model_fn: (z_t, t) -> model output in `schedule.prediction_type` (w embedding bound inside).
        shape: latent shape (B, C, T, H, W).
        timesteps: descending, e.g. `consistency_timesteps(4)`.
    Returns:
        The last denoised latent (B, C, T, H, W).
    """
    z = (
        latents
        if latents is not None
        else torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)
    )
    denoised = z
    for i, t in enumerate(timesteps):
        t_batch = torch.full((z.shape[0],), int(t), dtype=torch.long, device=z.device)
        x0, _ = schedule.to_x0_eps(model_fn(z, t_batch), z, t_batch)
        # denoised = c_skip(t) z + c_out(t) x0  (consistency function, LCM Eq. 9)
        denoised = consistency_output(z, x0, int(t), sigma_data, timestep_scaling)
        if i + 1 < len(timesteps):
            noise = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
            # z_{t'} = sqrt(abar_{t'}) denoised + sqrt(1 - abar_{t'}) eps, fresh eps (LCM Alg. 1 line 6)
            z = schedule.add_noise(denoised, noise, int(timesteps[i + 1]))
        if callback is not None:
            callback(i, denoised)
    return denoised


@torch.no_grad()
def ddim_cfg_sample(
    model_fn_cond: ModelFn,
    model_fn_uncond: ModelFn | None,
    schedule: NoiseSchedule,
    shape: Sequence[int],
    num_steps: int = 50,
    guidance_scale: float = 7.5,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    latents: Tensor | None = None,
    steps_offset: int = 0,
    set_alpha_to_one: bool = True,
    model_fn_batched: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None,
    callback: Callable[[int, Tensor], None] | None = None,
) -> Tensor:
    """The teacher's DDIM sampler (eta = 0) with classifier-free guidance, the 50-step baseline.

    Guidance here is the usual (Imagen / diffusers) scale g: eps = eps_u + g (eps_c - eps_u);
    T2V-Turbo's w corresponds to g = 1 + w. g <= 1 or no uncond fn runs the conditional model only.
    `model_fn_batched(z, t) -> (out_cond, out_uncond)` may run both branches in one batched call.
    """
    z = (
        latents
        if latents is not None
        else torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)
    )
    ts = ddim_timesteps(num_steps, schedule.num_train_timesteps, steps_offset)
    ratio = schedule.num_train_timesteps // num_steps
    use_cfg = guidance_scale > 1.0 and (model_fn_uncond is not None or model_fn_batched is not None)
    x0 = z
    for i, t in enumerate(ts):
        t_batch = torch.full((z.shape[0],), t, dtype=torch.long, device=z.device)
        if use_cfg:
            if model_fn_batched is not None:
                out_c, out_u = model_fn_batched(z, t_batch)
            else:
                out_c, out_u = model_fn_cond(z, t_batch), model_fn_uncond(z, t_batch)
            # CFG: out = out_u + g (out_c - out_u)  (Ho & Salimans 2022)
            out = out_u + guidance_scale * (out_c - out_u)
        else:
            out = model_fn_cond(z, t_batch)
        x0, eps = schedule.to_x0_eps(out, z, t_batch)
        t_prev = t - ratio
        if t_prev < 0 and not set_alpha_to_one:
            t_prev = 0
        # z_{t-ratio} = sqrt(abar_prev) x0 + sqrt(1 - abar_prev) eps  (DDIM Eq. 12, eta = 0)
        z = ddim_step(schedule, x0, eps, t_prev)
        if callback is not None:
            callback(i, z)
    return z
