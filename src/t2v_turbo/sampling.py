"""The consistency function, the multistep consistency sampler (student) and DDIM + CFG (teacher).

`ConsistencyDenoiser` (or `consistency_fn` for a backbone) is the one place where a model's raw output
becomes the consistency function f_theta(z_t, t) = c_skip(t) z_t + c_out(t) x0_theta: the sampler,
`distill_step` and the chain-reward baseline all call it. The samplers are pure loops over a
`model_fn(z_t, t) -> model output` callable, so they know no backbone. Every random draw comes from
the `generator` argument, so identical generators give identical videos.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from .schedule import NoiseSchedule, _expand
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


def _per_sample(c: Tensor | float, like: Tensor) -> Tensor:
    """A scalar or (B,) coefficient broadcast against `like` (B, ...)."""
    c = torch.as_tensor(c, device=like.device)
    return c.to(like.dtype) if c.dim() == 0 else _expand(c, like)


def _timestep_batch(t: Tensor | int | float, batch: int, device: torch.device) -> Tensor:
    """One timestep as a (B,) tensor (integer timesteps stay int64, continuous ones float)."""
    return torch.as_tensor(t, device=device).reshape(1).repeat(batch)


def _draw_device(generator: torch.Generator | None, like: Tensor) -> torch.device:
    return generator.device if generator is not None else like.device


class ConsistencyDenoiser:
    """f_theta(z_t, t) = c_skip(t) z_t + c_out(t) x0_theta(z_t, t), the consistency function (LCM Eq. 9).

    Wraps a raw model `model_fn(z_t, t) -> output in the schedule's parameterisation`; the schedule
    supplies `to_x0_eps` (output -> x0) and `consistency_scalings` (c_skip, c_out). The arithmetic is
    float32 whatever the model's dtype; `t` is a (B,) tensor of any dtype the schedule reads.
    """

    def __init__(self, model_fn: ModelFn, schedule, sigma_data: float = 0.5, timestep_scaling: float = 10.0):
        self.model_fn, self.schedule = model_fn, schedule
        self.sigma_data, self.timestep_scaling = sigma_data, timestep_scaling

    @classmethod
    def from_backbone(
        cls, backbone, cond: Tensor, w_emb: Tensor | None = None, sigma_data: float = 0.5,
        timestep_scaling: float = 10.0,
    ) -> ConsistencyDenoiser:  # fmt: skip
        """The consistency function of a backbone for fixed conditioning (prompt embeddings, w_emb)."""

        def model_fn(z_t: Tensor, t: Tensor) -> Tensor:
            return backbone.model_output(z_t, t, cond, w_emb)

        return cls(model_fn, backbone.schedule, sigma_data, timestep_scaling)

    def __call__(self, z_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """(f_theta, x0_theta), both float32, for latents z_t (B, c, T, h, w) at timesteps t (B,)."""
        out = self.model_fn(z_t, t).float()
        z = z_t.float()
        x0, _ = self.schedule.to_x0_eps(out, z, t)
        c_skip, c_out = self.schedule.consistency_scalings(t, self.sigma_data, self.timestep_scaling)
        # f = c_skip(t) z_t + c_out(t) x0  (LCM Eq. 9; f(z, 0) = z)
        return _per_sample(c_skip, z) * z + _per_sample(c_out, z) * x0, x0


def consistency_fn(
    backbone, z_t: Tensor, t: Tensor, cond: Tensor, w_emb: Tensor | None = None, *,
    sigma_data: float = 0.5, timestep_scaling: float = 10.0,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """(f_theta, x0_theta) of `backbone` at (z_t, t) with prompt embeddings `cond` and guidance
    embedding `w_emb`: `ConsistencyDenoiser.from_backbone(backbone, cond, w_emb)(z_t, t)`."""
    return ConsistencyDenoiser.from_backbone(backbone, cond, w_emb, sigma_data, timestep_scaling)(z_t, t)


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
    grad_last_k: int = 0,
) -> Tensor:
    """Multistep consistency sampling (LCM Alg. 1): one model call per step, no CFG.

    Args:
        model_fn: (z_t, t) -> model output in `schedule`'s parameterisation (w embedding bound inside).
        shape: latent shape (B, C, T, H, W).
        timesteps: descending, e.g. `consistency_timesteps(4)`.
        latents: the starting noise z_T (default: drawn from `generator` in `dtype`).
        grad_last_k: the last K steps run with gradients (the DRaFT-K chain baseline); 0 = none.
    Returns:
        The last denoised latent (B, C, T, H, W), in the latents' dtype.
    """
    z = (
        latents
        if latents is not None
        else torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)
    )
    denoise = ConsistencyDenoiser(model_fn, schedule, sigma_data, timestep_scaling)
    first_grad = len(timesteps) - grad_last_k
    denoised = z
    for i, t in enumerate(timesteps):
        with torch.set_grad_enabled(i >= first_grad):
            denoised, _ = denoise(z, _timestep_batch(t, z.shape[0], z.device))
            if i + 1 < len(timesteps):
                # fresh eps, drawn in float32 on the generator's device (a CPU generator serves any device)
                noise = torch.randn(z.shape, generator=generator, device=_draw_device(generator, z))
                t_next = _timestep_batch(timesteps[i + 1], z.shape[0], z.device)
                # z_{t'} = alpha_{t'} denoised + sigma_{t'} eps  (LCM Alg. 1 line 6)
                z = schedule.add_noise(denoised, noise.to(z.device), t_next).to(z.dtype)
            if callback is not None:
                callback(i, denoised)
    return denoised.to(z.dtype)


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
