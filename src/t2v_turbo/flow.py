"""Rectified flow (flow matching): schedule, teacher ODE solver, consistency function and samplers.

Pure tensor code: knows no model. The flow-matching counterpart of `schedule.py` + `solvers.py` +
`sampling.py`, for teachers such as Wan2.1 (docs/flow_matching.md derives every formula).

Conventions (diffusers' flow-matching schedulers, Wan2.1):
- noise level s in [0, 1]; forward process x_s = (1 - s) x0 + s eps (rectified flow, Liu et al. 2022;
  Esser et al. 2024, Eq. 1 with a_t = 1 - t, b_t = t);
- the model takes the timestep t = 1000 s as a float tensor (B,) and predicts the velocity
  v = dx_s/ds = eps - x0, so x0 = x_s - s v and eps = x_s + (1 - s) v;
- the timestep shift s' = k s / (1 + (k - 1) s) (Wan's `flow_shift`, diffusers' `shift`, Esser et al.
  2024 Eq. 23 with alpha = k) moves a grid towards high noise;
- the consistency function f(x_s, s) = x_s - s v_theta(x_s, s) = the predicted x0, so f(x, 0) = x
  exactly (the boundary condition holds by construction: c_skip = 0, c_out = 1 on x0).
- teacher CFG in Wan's form v = v_u + g (v_c - v_u), g = `cfg_scale`; T2V-Turbo's w (the student's
  embedded guidance, target v_c + w (v_c - v_u)) is g = 1 + w.

`FlowSchedule` duck-types `schedule.NoiseSchedule` where the consistency distillation step uses it
(`to_x0_eps`, `add_noise`, `consistency_scalings`, `prediction_type`, `num_train_timesteps`,
`to_config`); `EulerSolver` has the interface of `solvers.DDIMSolver`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .errors import ConfigError

ModelFn = Callable[[Tensor, Tensor], Tensor]
SIGMA_RULES = ("t2v-turbo", "diffusers")
EULER_RULES = ("diffusers", "uniform")


def _expand(coef: Tensor, like: Tensor) -> Tensor:
    """(B,) or () -> broadcastable against `like` (B, ...), in `like`'s dtype and device."""
    coef = coef.to(like.device, like.dtype)
    if coef.dim() == 0:
        return coef
    while coef.dim() < like.dim():
        coef = coef.unsqueeze(-1)
    return coef


# ------------------------------------------------------------------------------------ shift
def shift_sigmas(sigma, shift: float):
    """s' = k s / (1 + (k - 1) s)  (Wan `flow_shift` k; SD3 / Esser et al. 2024 Eq. 23).

    Monotone on [0, 1] with s'(0) = 0 and s'(1) = 1; k > 1 spends more of a grid at high noise.
    Works on floats, numpy arrays and tensors (computed in their own dtype).
    """
    return shift * sigma / (1 + (shift - 1) * sigma)


def unshift_sigmas(sigma, shift: float):
    """The inverse of `shift_sigmas`: s = s' / (k - (k - 1) s')."""
    return sigma / (shift - (shift - 1) * sigma)


# ------------------------------------------------------------------------------------ schedule
@dataclass
class FlowSchedule:
    """A rectified-flow schedule: x_s = (1 - s) x0 + s eps, timestep t = 1000 s, velocity v = eps - x0.

    Attributes:
        shift: Wan's `flow_shift` k (480p: 3.0, 720p: 5.0): the grids of `EulerSolver` and of the
            samplers are shifted with it. The forward process itself does not depend on it.
        num_train_timesteps: t = num_train_timesteps * s (1000 for Wan / diffusers).
    """

    shift: float = 1.0
    num_train_timesteps: int = 1000
    prediction_type: str = "flow"

    def __post_init__(self) -> None:
        if not self.shift > 0:
            raise ConfigError(f"flow shift must be > 0, got {self.shift}")
        if self.prediction_type != "flow":
            raise ConfigError(f"a FlowSchedule predicts the velocity ('flow'), got {self.prediction_type!r}")

    # ---------------------------------------------------------------- config
    def to_config(self) -> dict:
        """Recorded in every checkpoint's `t2v_turbo.json` ("schedule")."""
        return {
            "prediction_type": "flow",
            "num_train_timesteps": self.num_train_timesteps,
            "shift": self.shift,
        }

    @classmethod
    def from_config(cls, config: dict) -> FlowSchedule:
        """Our own `to_config`, or a diffusers flow scheduler config (`scheduler_config.json` of
        FlowMatchEulerDiscreteScheduler / FlowMatchLCMScheduler: `shift`; UniPCMultistepScheduler with
        `use_flow_sigmas` / `prediction_type: flow_prediction`: `flow_shift`, as Wan2.1 ships it).

        Raises:
            ConfigError: the config describes a DDPM (beta) schedule, not a flow.
        """
        config = dict(config)
        pred = config.get("prediction_type")
        name = str(config.get("_class_name", ""))
        if name.startswith("FlowMatch"):
            shift = config.get("shift", 1.0)
        elif pred in ("flow", "flow_prediction") or config.get("use_flow_sigmas"):
            shift = config.get("flow_shift", config.get("shift", 1.0))
        else:
            raise ConfigError(
                f"not a flow-matching scheduler config ({name or 'no _class_name'}, prediction_type={pred!r})"
            )
        if config.get("use_dynamic_shifting"):
            raise ConfigError("dynamic (resolution-dependent) shifting is not supported; give a fixed shift")
        return cls(
            shift=float(shift if shift is not None else 1.0),
            num_train_timesteps=int(config.get("num_train_timesteps", 1000)),
        )

    from_scheduler_config = from_config

    # ---------------------------------------------------------------- coefficients
    def sigma(self, t: Tensor | float | int) -> Tensor:
        """s = t / num_train_timesteps as a float tensor (computed in float64, returned float32)."""
        t = torch.as_tensor(t)
        return (t.double() / self.num_train_timesteps).float()

    def alpha_sigma(self, t: Tensor | float | int, like: Tensor) -> tuple[Tensor, Tensor]:
        """(1 - s, s) broadcast to `like`: the flow's "alpha" and "sigma" (x_s = alpha x0 + sigma eps)."""
        s = self.sigma(t).to(like.device)
        if s.dim() == 0:
            s = s.expand(like.shape[0])
        return _expand(1 - s, like), _expand(s, like)

    @property
    def train_sigmas(self) -> Tensor:
        """The teacher's training grid, descending: shift((T - i) / T), i = 0..T-1 (diffusers' flow
        schedulers at construction: linspace(1, T, T) / T, reversed, shifted)."""
        u = np.linspace(1, self.num_train_timesteps, self.num_train_timesteps, dtype=np.float64)[::-1]
        return torch.from_numpy(shift_sigmas(u / self.num_train_timesteps, self.shift).copy()).float()

    # ---------------------------------------------------------------- forward process
    def add_noise(self, x0: Tensor, eps: Tensor, t: Tensor | float | int) -> Tensor:
        # x_s = (1 - s) x0 + s eps  (rectified flow forward process)
        a, s = self.alpha_sigma(t, x0)
        return a * x0 + s * eps

    # ---------------------------------------------------------------- conversions
    def to_x0_eps(self, model_output: Tensor, x: Tensor, t: Tensor | float | int) -> tuple[Tensor, Tensor]:
        """Velocity v = eps - x0 at x_s -> (x0, eps).

        From x = (1 - s) x0 + s eps and v = eps - x0:  x0 = x - s v,  eps = x + (1 - s) v.
        """
        _, s = self.alpha_sigma(t, x)
        v = model_output
        # x0 = x_s - s v ; eps = x_s + (1 - s) v
        return x - s * v, x + (1 - s) * v

    def get_velocity(self, x0: Tensor, eps: Tensor, t: Tensor | float | int | None = None) -> Tensor:
        # v = dx_s/ds = eps - x0 (independent of s); the flow-matching regression target
        return eps - x0

    def eps_to_x0(self, eps: Tensor, x: Tensor, t: Tensor | float | int) -> Tensor:
        # x0 = (x_s - s eps) / (1 - s)  (undefined at s = 1)
        a, s = self.alpha_sigma(t, x)
        return (x - s * eps) / a

    def x0_to_eps(self, x0: Tensor, x: Tensor, t: Tensor | float | int) -> Tensor:
        # eps = (x_s - (1 - s) x0) / s  (undefined at s = 0)
        a, s = self.alpha_sigma(t, x)
        return (x - a * x0) / s

    # ---------------------------------------------------------------- consistency function
    def consistency_scalings(
        self, t: Tensor | float | int, sigma_data: float = 0.5, timestep_scaling: float = 10.0
    ) -> tuple[Tensor, Tensor]:
        """(c_skip, c_out) = (0, 1): f(x_s, s) = c_skip x_s + c_out x0_theta = x_s - s v_theta(x_s, s).

        f(x, 0) = x - 0 * v = x exactly, so no boundary scalings are needed (unlike LCM's discrete-time
        ones, which only make f(x, 0) = x hold at t = 0). `sigma_data` and `timestep_scaling` are
        accepted for the shared interface and unused.
        """
        t = torch.as_tensor(t, dtype=torch.float32)
        return torch.zeros_like(t), torch.ones_like(t)

    def consistency_function(self, v: Tensor, x: Tensor, t: Tensor | float | int) -> Tensor:
        """f_theta(x_s, s) = x_s - s v_theta(x_s, s)  (the flow consistency function, = predicted x0)."""
        return self.to_x0_eps(v, x, t)[0]


# ------------------------------------------------------------------------------------ teacher solver
class EulerSolver:
    """The teacher's ODE solver during distillation: Euler over a skipped grid of shifted sigmas
    (the role `solvers.DDIMSolver` plays for DDPM teachers; same interface).

    Grid: N points u_i = (i + 1) / N, i = 0..N-1, shifted: s_i = shift(u_i); each point's predecessor
    is s_{i-1} = shift(i / N) (s = 0 for i = 0). Timesteps are float tensors t = 1000 s.

    Attributes:
        sigmas: (N,) float32, s_i ascending; sigmas_prev: (N,) the predecessors (sigmas_prev[0] = 0).
        timesteps, timesteps_prev: 1000 * sigmas, 1000 * sigmas_prev (float32).
    """

    def __init__(self, schedule: FlowSchedule, num_points: int = 50):
        if num_points < 1:
            raise ConfigError(f"the Euler grid needs >= 1 point, got {num_points}")
        self.schedule = schedule
        self.num_points = num_points
        u = np.arange(0, num_points + 1, dtype=np.float64) / num_points  # 0, 1/N, ..., 1
        grid = torch.from_numpy(shift_sigmas(u, schedule.shift)).float()  # shift(0) = 0, shift(1) = 1
        self.sigmas = grid[1:]
        self.sigmas_prev = grid[:-1]
        self.timesteps = self.sigmas * schedule.num_train_timesteps
        self.timesteps_prev = self.sigmas_prev * schedule.num_train_timesteps

    def sample_indices(self, batch: int, generator: torch.Generator | None = None) -> Tensor:
        """n ~ U{0, ..., N - 1} per sample (T2V-Turbo Alg. 1 line 3)."""
        return torch.randint(0, self.num_points, (batch,), generator=generator)

    def timestep_pair(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """(t_{n+k}, t_n) = (1000 s_n, 1000 s_{n-1}) as float tensors (B,)."""
        index = index.cpu()
        return self.timesteps[index], self.timesteps_prev[index]

    def step(self, x0: Tensor, eps: Tensor, index: Tensor) -> Tensor:
        """One Euler step from s_n to its predecessor s' = s_{n-1}, written through (x0, eps).

        Euler on dx/ds = v:  x' = x + (s' - s) v. With x = (1 - s) x0 + s eps and v = eps - x0:
            x' = (1 - s) x0 + s eps + (s' - s)(eps - x0) = (1 - s') x0 + s' eps,
        i.e. the DDIM form (re-noise the predicted x0 with the predicted eps): exact for any (x0, eps)
        pair, including CFG-combined ones (x0_cfg = x - s v_cfg, eps_cfg = x + (1 - s) v_cfg).
        """
        s_prev = _expand(self.sigmas_prev[index.cpu()].to(x0.device), x0)
        # x_{s'} = (1 - s') x0 + s' eps  (= x_s + (s' - s) v)
        return (1 - s_prev) * x0 + s_prev * eps


# ------------------------------------------------------------------------------------ grids
def euler_sigmas(
    num_steps: int, shift: float = 1.0, rule: str = "diffusers", num_train_timesteps: int = 1000
) -> list[float]:
    """The teacher sampler's sigmas, descending, with the final 0 appended (num_steps + 1 values).

    rule "diffusers" (default; `FlowMatchEulerDiscreteScheduler(shift=k).set_timesteps(N)`, so that
        our Euler + CFG sampler equals `WanPipeline` with that scheduler): N values linspace(1, s_min, N)
        with s_min = shift(1 / T) (the smallest training sigma), then shifted; then 0.
    rule "uniform": shift(linspace(1, 0, N + 1)) (the `EulerSolver` grid with N points).
    Values are float32 (as diffusers stores them), returned as Python floats.
    """
    if num_steps < 1:
        raise ConfigError(f"num_steps must be >= 1, got {num_steps}")
    if rule == "diffusers":
        # s_min: the last training sigma, computed in float32 as diffusers' schedulers build it
        s_min = float(shift_sigmas(torch.tensor(1.0) / num_train_timesteps, shift))
        # diffusers: timesteps = linspace(T * s_max, T * s_min, N) (s_max = shift(1) = 1); sigmas = shift(timesteps / T)
        ts = np.linspace(num_train_timesteps * 1.0, s_min * num_train_timesteps, num_steps)
        sig = shift_sigmas(ts / num_train_timesteps, shift)
        out = torch.from_numpy(sig).float()
    elif rule == "uniform":
        u = np.linspace(1.0, 0.0, num_steps + 1)[:-1]
        out = torch.from_numpy(shift_sigmas(u, shift)).float()
    else:
        raise ConfigError(f"unknown Euler grid rule {rule!r}; valid: {list(EULER_RULES)}")
    return [float(x) for x in out] + [0.0]


def consistency_sigmas(
    num_steps: int,
    shift: float = 1.0,
    origin_steps: int = 50,
    rule: str = "t2v-turbo",
    num_train_timesteps: int = 1000,
) -> list[float]:
    """The student's sampling sigmas, descending (num_steps values; no final 0).

    rule "t2v-turbo" (default; the authors' LCM rule on the flow grid): from the origin grid
        u_i = i / L, i = 1..L (the `EulerSolver` points of the distillation), every floor(L / N)-th
        point from the end, shifted: L = 50, N = 4 -> u = 1, 0.76, 0.52, 0.28 (cf. [999, 759, 519, 279]).
    rule "diffusers": `FlowMatchLCMScheduler(shift=k).set_timesteps(N)`'s sigmas (linspace(1, s_min, N)
        with s_min = shift(1 / T), then shifted), so our sampler equals diffusers' on the same model.
    """
    if num_steps < 1:
        raise ConfigError(f"num_steps must be >= 1, got {num_steps}")
    if rule == "diffusers":
        return euler_sigmas(num_steps, shift, "diffusers", num_train_timesteps)[:-1]
    if rule != "t2v-turbo":
        raise ConfigError(f"unknown timestep rule {rule!r}; valid: {list(SIGMA_RULES)}")
    if num_steps > origin_steps:
        raise ConfigError(f"num_steps ({num_steps}) cannot exceed the origin grid size ({origin_steps})")
    skip = origin_steps // num_steps
    idx = np.arange(origin_steps, 0, -skip)[:num_steps]  # L, L - skip, ...
    sig = torch.from_numpy(shift_sigmas(idx / origin_steps, shift)).float()
    return [float(x) for x in sig]


def _timestep(sigma: float, batch: int, device, num_train_timesteps: int) -> Tensor:
    # t = T * s in float32, as diffusers' flow schedulers hand it to the transformer
    return (torch.tensor(sigma, dtype=torch.float32) * num_train_timesteps).expand(batch).to(device)


# ------------------------------------------------------------------------------------ samplers
@torch.no_grad()
def flow_consistency_sample(
    model_fn: ModelFn,
    schedule: FlowSchedule,
    shape: Sequence[int],
    sigmas: Sequence[float],
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    latents: Tensor | None = None,
    callback: Callable[[int, Tensor], None] | None = None,
) -> Tensor:
    """Multistep consistency sampling on a flow (LCM Alg. 1 with the flow consistency function).

    Each step: x0 = f(x_s, s) = x_s - s v(x_s, t = 1000 s); if a step remains, re-noise to the next s'
    with fresh noise: x_{s'} = (1 - s') x0 + s' eps. One model call per step, no CFG (w is bound in
    `model_fn`). Equal to diffusers' `FlowMatchLCMScheduler` loop with the same sigmas and generator.

    Args:
        model_fn: (x_s, t) -> velocity, t = 1000 s float tensor (B,).
        sigmas: descending, e.g. `consistency_sigmas(4, shift)`.
    Returns:
        The last x0 (B, C, T, H, W).
    """
    from .sampling import consistency_sample

    # the one consistency loop: FlowSchedule's scalings (0, 1) make it f(x_s, s) = x_s - s v, and its
    # add_noise the re-noising (1 - s') x0 + s' eps
    timesteps = [float(sig) * schedule.num_train_timesteps for sig in sigmas]
    return consistency_sample(
        model_fn,
        schedule,
        shape,
        timesteps,
        generator=generator,
        device=device,
        dtype=dtype,
        latents=latents,
        callback=callback,
    )


@torch.no_grad()
def euler_cfg_sample(
    model_fn_cond: ModelFn,
    model_fn_uncond: ModelFn | None,
    schedule: FlowSchedule,
    shape: Sequence[int],
    num_steps: int = 50,
    cfg_scale: float = 5.0,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    latents: Tensor | None = None,
    sigmas: Sequence[float] | None = None,
    model_fn_batched: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None,
    callback: Callable[[int, Tensor], None] | None = None,
) -> Tensor:
    """The teacher's Euler sampler with classifier-free guidance in Wan's form.

    v = v_u + g (v_c - v_u), g = `cfg_scale` (T2V-Turbo's w is g - 1); g <= 1 or no uncond fn runs the
    conditional model only (as WanPipeline). Each step x_{s'} = x_s + (s' - s) v. With the default
    grid (`euler_sigmas(num_steps, schedule.shift)`) this is `WanPipeline` with
    `FlowMatchEulerDiscreteScheduler(shift=schedule.shift)`.

    Args:
        sigmas: descending, ending in 0 (num_steps + 1 values); default `euler_sigmas`.
        model_fn_batched: (z, t) -> (v_cond, v_uncond) in one batched call.
    """
    if sigmas is None:
        sigmas = euler_sigmas(num_steps, schedule.shift, "diffusers", schedule.num_train_timesteps)
    sig = torch.tensor(list(sigmas), dtype=torch.float32)
    z = (
        latents
        if latents is not None
        else torch.randn(tuple(shape), generator=generator, dtype=dtype).to(device)
    )
    z = z.float()
    use_cfg = cfg_scale > 1.0 and (model_fn_uncond is not None or model_fn_batched is not None)
    for i in range(len(sig) - 1):
        t = _timestep(float(sig[i]), z.shape[0], z.device, schedule.num_train_timesteps)
        zin = z.to(dtype)
        if use_cfg:
            if model_fn_batched is not None:
                v_c, v_u = model_fn_batched(zin, t)
            else:
                v_c, v_u = model_fn_cond(zin, t), model_fn_uncond(zin, t)
            # CFG, Wan's form: v = v_u + g (v_c - v_u)  (Ho & Salimans 2022)
            v = v_u + cfg_scale * (v_c - v_u)
        else:
            v = model_fn_cond(zin, t)
        # Euler: x_{s'} = x_s + (s' - s) v
        z = z + (sig[i + 1] - sig[i]) * v.float()
        if callback is not None:
            callback(i, z)
    return z


# ------------------------------------------------------------------------------------ dispatch
def is_flow(schedule) -> bool:
    """Whether a schedule is a rectified flow (a `FlowSchedule`), i.e. the Euler / FM-consistency path."""
    return isinstance(schedule, FlowSchedule)


def teacher_solver(schedule, num_points: int = 50):
    """The distillation's teacher ODE solver for a schedule: `EulerSolver` on a `FlowSchedule`
    (num_points shifted sigmas), `solvers.DDIMSolver` on a DDPM `NoiseSchedule` (skip 1000 / N).
    `distill.num_ddim_timesteps` is N for both."""
    if is_flow(schedule):
        return EulerSolver(schedule, num_points)
    from .solvers import DDIMSolver

    return DDIMSolver(schedule, num_points)
