"""Noise schedule, forward noising, parameterisation conversions and LCM boundary scalings.

Pure tensor code: knows no model. Conventions: `alpha_t = sqrt(abar_t)`, `sigma_t = sqrt(1 - abar_t)`,
timesteps are integers in [0, num_train_timesteps), scalars or (B,) tensors.

What the consistency function (`sampling.ConsistencyDenoiser`) and `distill_step` need from a schedule
is `to_x0_eps`, `add_noise` and `consistency_scalings`; any schedule with those three (a flow-matching
one, say) works through them unchanged. Tensors broadcast over any trailing shape
(videos are (B, C, T, H, W)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def _expand(coef: Tensor, like: Tensor) -> Tensor:
    """Gather-friendly broadcast: (B,) -> (B, 1, 1, ...) matching `like`'s rank."""
    while coef.dim() < like.dim():
        coef = coef.unsqueeze(-1)
    return coef.to(like.dtype)


@dataclass
class NoiseSchedule:
    """A discrete DDPM noise schedule (betas -> cumulative alphas).

    Attributes:
        alphas_cumprod: (num_train_timesteps,) float32 tensor of abar_t.
        prediction_type: "epsilon" (T2V-Turbo's teachers), "v_prediction" or "sample".
    """

    alphas_cumprod: Tensor
    prediction_type: str = "epsilon"
    beta_schedule: str = "scaled_linear"
    beta_start: float = 0.00085
    beta_end: float = 0.012

    def __post_init__(self) -> None:
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"unknown prediction_type {self.prediction_type!r}; valid: {PREDICTION_TYPES}")

    # ---------------------------------------------------------------- construction
    @classmethod
    def make(
        cls,
        beta_schedule: str = "scaled_linear",
        beta_start: float = 0.00085,
        beta_end: float = 0.012,
        num_train_timesteps: int = 1000,
        prediction_type: str = "epsilon",
    ) -> NoiseSchedule:
        """Build a schedule. "scaled_linear": beta = linspace(sqrt(b0), sqrt(b1), N)^2 (LDM / T2V-Turbo);
        "linear": beta = linspace(b0, b1, N) (DDPM)."""
        if beta_schedule == "scaled_linear":
            # LDM "scaled_linear" (float32, as diffusers and the T2V-Turbo scheduler compute it)
            betas = (
                torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float32) ** 2
            )
        elif beta_schedule == "linear":
            # DDPM linear betas (Ho et al. 2020)
            betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float32)
        else:
            raise ValueError(f"unknown beta_schedule {beta_schedule!r}; valid: ['scaled_linear', 'linear']")
        # abar_t = prod_{s<=t} (1 - beta_s)  (DDPM Eq. 4)
        abar = torch.cumprod(1.0 - betas, dim=0)
        return cls(abar, prediction_type, beta_schedule, beta_start, beta_end)

    @classmethod
    def from_scheduler_config(cls, config: dict) -> NoiseSchedule:
        """Read a diffusers scheduler config (dict or FrozenDict, e.g. `scheduler_config.json`)."""
        return cls.make(
            beta_schedule=config.get("beta_schedule", "scaled_linear"),
            beta_start=config.get("beta_start", 0.00085),
            beta_end=config.get("beta_end", 0.012),
            num_train_timesteps=config.get("num_train_timesteps", 1000),
            prediction_type=config.get("prediction_type", "epsilon"),
        )

    def to_config(self) -> dict:
        """A diffusers-compatible scheduler config fragment."""
        return {
            "beta_schedule": self.beta_schedule,
            "beta_start": self.beta_start,
            "beta_end": self.beta_end,
            "num_train_timesteps": self.num_train_timesteps,
            "prediction_type": self.prediction_type,
        }

    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    # ---------------------------------------------------------------- coefficients
    def abar(self, t: Tensor | int) -> Tensor:
        t = torch.as_tensor(t, dtype=torch.long)
        return self.alphas_cumprod[t.cpu()]

    def alpha_sigma(self, t: Tensor | int, like: Tensor) -> tuple[Tensor, Tensor]:
        """(alpha_t, sigma_t) broadcast to `like`: alpha = sqrt(abar), sigma = sqrt(1 - abar)."""
        abar = self.abar(t).to(like.device)
        if abar.dim() == 0:
            abar = abar.expand(like.shape[0])
        return _expand(abar.sqrt(), like), _expand((1 - abar).sqrt(), like)

    # ---------------------------------------------------------------- forward process
    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor | int) -> Tensor:
        # q(z_t | x0): z_t = alpha_t x0 + sigma_t eps  (DDPM Eq. 4; T2V-Turbo Alg. 1 line 5)
        alpha, sigma = self.alpha_sigma(t, x0)
        return alpha * x0 + sigma * noise

    # ---------------------------------------------------------------- conversions
    def to_x0_eps(self, model_output: Tensor, z_t: Tensor, t: Tensor | int) -> tuple[Tensor, Tensor]:
        """Model output in this schedule's prediction type -> (x0, eps)."""
        alpha, sigma = self.alpha_sigma(t, z_t)
        if self.prediction_type == "epsilon":
            eps = model_output
            # x0 = (z_t - sigma_t eps) / alpha_t  (DDIM Eq. 12, "predicted x0")
            x0 = (z_t - sigma * eps) / alpha
        elif self.prediction_type == "v_prediction":
            v = model_output
            # v = alpha eps - sigma x0  =>  x0 = alpha z - sigma v, eps = sigma z + alpha v (Salimans & Ho 2022)
            x0 = alpha * z_t - sigma * v
            eps = sigma * z_t + alpha * v
        else:
            x0 = model_output
            # eps = (z_t - alpha_t x0) / sigma_t
            eps = (z_t - alpha * x0) / sigma
        return x0, eps

    def eps_to_x0(self, eps: Tensor, z_t: Tensor, t: Tensor | int) -> Tensor:
        # x0 = (z_t - sigma_t eps) / alpha_t  (DDIM Eq. 12)
        alpha, sigma = self.alpha_sigma(t, z_t)
        return (z_t - sigma * eps) / alpha

    def x0_to_eps(self, x0: Tensor, z_t: Tensor, t: Tensor | int) -> Tensor:
        # eps = (z_t - alpha_t x0) / sigma_t
        alpha, sigma = self.alpha_sigma(t, z_t)
        return (z_t - alpha * x0) / sigma

    def get_velocity(self, x0: Tensor, eps: Tensor, t: Tensor | int) -> Tensor:
        # v = alpha_t eps - sigma_t x0  (Salimans & Ho 2022, "Progressive Distillation", the v definition)
        alpha, sigma = self.alpha_sigma(t, x0)
        return alpha * eps - sigma * x0

    def v_to_eps(self, v: Tensor, z_t: Tensor, t: Tensor | int) -> Tensor:
        # eps = sigma_t z_t + alpha_t v
        alpha, sigma = self.alpha_sigma(t, z_t)
        return sigma * z_t + alpha * v

    # ---------------------------------------------------------------- consistency parameterisation
    def consistency_scalings(
        self, t: Tensor | int, sigma_data: float = 0.5, timestep_scaling: float = 10.0
    ) -> tuple[Tensor, Tensor]:
        """(c_skip(t), c_out(t)) of f(z_t, t) = c_skip z_t + c_out x0: the LCM discrete boundary
        scalings (`boundary_scalings`). A schedule whose x0 already meets f(z, 0) = z returns (0, 1)."""
        return boundary_scalings(t, sigma_data, timestep_scaling)


# ------------------------------------------------------------------------- LCM boundary condition
def boundary_scalings(
    t: Tensor | int | float, sigma_data: float = 0.5, timestep_scaling: float = 10.0
) -> tuple[Tensor, Tensor]:
    """LCM discrete boundary-condition scalings (c_skip, c_out) at timestep t (any shape, float32).

    c_skip(0) = 1 and c_out(0) = 0, so f(z, 0) = z (the consistency boundary condition).
    """
    t = torch.as_tensor(t, dtype=torch.float32)
    scaled = t * timestep_scaling
    # the discrete form the LCM release and T2V-Turbo use (diffusers LCMScheduler
    # `get_scalings_for_boundary_condition_discrete`) of the Consistency Models boundary scalings
    # (Song et al. 2023, App. C) with time 10 t: c_skip = s^2 / ((10 t)^2 + s^2), s = sigma_data
    c_skip = sigma_data**2 / (scaled**2 + sigma_data**2)
    # c_out = 10 t / sqrt((10 t)^2 + s^2)
    c_out = scaled / (scaled**2 + sigma_data**2) ** 0.5
    return c_skip, c_out


# ------------------------------------------------------------------------- guidance embedding
def guidance_embedding(
    w: Tensor | float, embedding_dim: int = 256, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Sinusoidal embedding of the guidance scale w (LCM / T2V-Turbo w-conditioning).

    x = 1000 w; f_j = exp(-j ln(10000) / (half - 1)), j = 0..half-1; emb = [sin(x f), cos(x f)].

    Args:
        w: (B,) guidance scales (T2V-Turbo convention: embed w itself, not w - 1).
    Returns:
        (B, embedding_dim) tensor.
    """
    w = torch.as_tensor(w, dtype=torch.float32)
    if w.dim() == 0:
        w = w[None]
    w = w * 1000.0
    half = embedding_dim // 2
    # f_j = exp(-j * ln(10000) / (half - 1))  (LCM guidance-scale embedding)
    freqs = torch.exp(
        torch.arange(half, dtype=torch.float32, device=w.device) * -(math.log(10000.0) / (half - 1))
    )
    args = w.to(torch.float32)[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if embedding_dim % 2 == 1:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb.to(dtype)
