"""flow.py: the rectified-flow schedule, shift, Euler solver grid and samplers against closed forms
and against diffusers' flow-matching schedulers (no model: the samplers run on a toy velocity field)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from t2v_turbo.errors import ConfigError
from t2v_turbo.flow import (
    EulerSolver,
    FlowSchedule,
    consistency_sigmas,
    euler_cfg_sample,
    euler_sigmas,
    flow_consistency_sample,
    shift_sigmas,
    unshift_sigmas,
)


def closed_shift(s, k):
    return k * s / (1 + (k - 1) * s)


def toy_velocity(z: torch.Tensor, t: torch.Tensor, bias: float = 0.0) -> torch.Tensor:
    """A deterministic nonlinear velocity field of (z, t) with t = 1000 s (B,)."""
    s = (t / 1000.0).view(-1, *([1] * (z.dim() - 1)))
    return torch.tanh(1.3 * z + bias) * (0.5 + s) - 0.2 * z * s**2 + bias


# ------------------------------------------------------------------------------------ shift / grids
@pytest.mark.parametrize("k", [1.0, 3.0, 5.0, 0.5])
def test_shift_closed_form_and_inverse(k):
    s = np.linspace(0, 1, 101)
    got = shift_sigmas(s, k)
    np.testing.assert_allclose(got, closed_shift(s, k), rtol=0, atol=1e-15)
    assert got[0] == 0.0 and got[-1] == 1.0
    assert np.all(np.diff(got) > 0)
    np.testing.assert_allclose(unshift_sigmas(got, k), s, atol=1e-12)
    if k > 1:  # a shift > 1 moves every interior point towards more noise
        assert np.all(got[1:-1] > s[1:-1])


def test_train_sigmas_equal_diffusers_construction():
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    ours = FlowSchedule(shift=3.0).train_sigmas
    assert ours.shape == (1000,)
    torch.testing.assert_close(ours, sched.sigmas.float(), rtol=0, atol=2.5e-7)  # diffusers rounds in float32
    u = torch.arange(1000, 0, -1, dtype=torch.float64) / 1000
    torch.testing.assert_close(ours.double(), closed_shift(u, 3.0), rtol=0, atol=1e-7)


@pytest.mark.parametrize("k,n", [(3.0, 50), (1.0, 50), (5.0, 10)])
def test_euler_solver_grid_closed_form(k, n):
    solver = EulerSolver(FlowSchedule(shift=k), num_points=n)
    i = torch.arange(n, dtype=torch.float64)
    torch.testing.assert_close(solver.sigmas.double(), closed_shift((i + 1) / n, k), rtol=0, atol=1e-7)
    torch.testing.assert_close(solver.sigmas_prev.double(), closed_shift(i / n, k), rtol=0, atol=1e-7)
    assert solver.sigmas[-1] == 1.0 and solver.sigmas_prev[0] == 0.0
    idx = torch.tensor([0, n // 2, n - 1])
    t_start, t_end = solver.timestep_pair(idx)
    assert t_start.dtype == torch.float32 and t_end.dtype == torch.float32
    torch.testing.assert_close(t_start, 1000 * solver.sigmas[idx])
    torch.testing.assert_close(t_end, 1000 * solver.sigmas_prev[idx])
    assert t_end[0] == 0.0 and t_start[-1] == 1000.0
    g = torch.Generator().manual_seed(0)
    draws = solver.sample_indices(4000, g)
    assert draws.min() == 0 and draws.max() == n - 1


def test_euler_step_is_euler_on_the_velocity_and_the_ddim_form():
    """(1 - s') x0 + s' eps == x_s + (s' - s) v, also for CFG-combined (x0, eps) with g = 1 + w."""
    from t2v_turbo.solvers import cfg_combine

    sched = FlowSchedule(shift=3.0)
    solver = EulerSolver(sched, num_points=50)
    g = torch.Generator().manual_seed(1)
    idx = torch.tensor([0, 7, 23, 49])
    x = torch.randn(4, 3, 2, 4, 4, generator=g)
    v_c, v_u = torch.randn(2, *x.shape, generator=g)
    w = torch.tensor([2.0, 4.5, 7.0, 0.0])
    t_start, _ = solver.timestep_pair(idx)
    x0_c, eps_c = sched.to_x0_eps(v_c, x, t_start)
    x0_u, eps_u = sched.to_x0_eps(v_u, x, t_start)
    got = solver.step(cfg_combine(x0_c, x0_u, w), cfg_combine(eps_c, eps_u, w), idx)
    s = solver.sigmas[idx].view(-1, 1, 1, 1, 1)
    s_prev = solver.sigmas_prev[idx].view(-1, 1, 1, 1, 1)
    v_cfg = v_u + (1 + w).view(-1, 1, 1, 1, 1) * (v_c - v_u)  # Wan's form, g = 1 + w
    torch.testing.assert_close(got, x + (s_prev - s) * v_cfg, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k", [1.0, 3.0, 5.0])
@pytest.mark.parametrize("n", [1, 2, 4, 50])
def test_euler_sigmas_equal_diffusers(k, n):
    from diffusers import FlowMatchEulerDiscreteScheduler, FlowMatchLCMScheduler

    ours = torch.tensor(euler_sigmas(n, k))
    for cls in (FlowMatchEulerDiscreteScheduler, FlowMatchLCMScheduler):
        sched = cls(shift=k)
        sched.set_timesteps(n)
        assert torch.equal(ours, sched.sigmas), cls.__name__
        assert torch.equal(ours[:-1] * 1000, sched.timesteps), cls.__name__
    uniform = torch.tensor(euler_sigmas(n, k, rule="uniform"), dtype=torch.float64)
    u = torch.linspace(1, 0, n + 1, dtype=torch.float64)
    torch.testing.assert_close(uniform, closed_shift(u, k), rtol=0, atol=1e-7)


def test_consistency_sigmas_t2v_turbo_rule():
    # the authors' LCM rule on the flow grid u = i / 50: N = 4 -> u = 50, 38, 26, 14 (/ 50)
    assert consistency_sigmas(4, 1.0) == pytest.approx([1.0, 0.76, 0.52, 0.28], abs=1e-7)
    assert consistency_sigmas(1, 3.0) == [1.0]
    assert consistency_sigmas(4, 3.0) == pytest.approx(
        [closed_shift(u, 3.0) for u in (1.0, 0.76, 0.52, 0.28)], abs=1e-7
    )
    assert consistency_sigmas(8, 1.0)[-1] == pytest.approx(0.16, abs=1e-7)
    assert consistency_sigmas(4, 3.0, rule="diffusers") == euler_sigmas(4, 3.0)[:-1]
    with pytest.raises(ConfigError):
        consistency_sigmas(51, 1.0)
    with pytest.raises(ConfigError):
        consistency_sigmas(4, 1.0, rule="nope")


# ------------------------------------------------------------------------------------ schedule
def test_forward_process_and_conversions_round_trip():
    sched = FlowSchedule(shift=3.0)
    g = torch.Generator().manual_seed(2)
    x0, eps = torch.randn(2, 3, 4, 3, 5, 5, generator=g)
    t = torch.tensor([998.5, 37.25, 500.0])
    s = (t / 1000).view(-1, 1, 1, 1, 1)
    x = sched.add_noise(x0, eps, t)
    torch.testing.assert_close(x, (1 - s) * x0 + s * eps)
    v = sched.get_velocity(x0, eps, t)
    torch.testing.assert_close(v, eps - x0)
    x0_hat, eps_hat = sched.to_x0_eps(v, x, t)
    torch.testing.assert_close(x0_hat, x0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(eps_hat, eps, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sched.eps_to_x0(eps, x, t), x0, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(sched.x0_to_eps(x0, x, t), eps, rtol=1e-4, atol=1e-4)
    a, sig = sched.alpha_sigma(t, x)
    torch.testing.assert_close(a + sig, torch.ones_like(a))


def test_consistency_boundary_f_x_0_equals_x_exactly():
    sched = FlowSchedule(shift=3.0)
    g = torch.Generator().manual_seed(3)
    x, v = torch.randn(2, 2, 4, 3, 4, 4, generator=g) * 50
    t0 = torch.zeros(2)
    c_skip, c_out = sched.consistency_scalings(t0)
    assert torch.equal(c_skip, torch.zeros(2)) and torch.equal(c_out, torch.ones(2))
    assert torch.equal(sched.consistency_function(v, x, t0), x)  # f(x, 0) = x - 0 v = x, bit for bit
    x0, _ = sched.to_x0_eps(v, x, t0)
    assert torch.equal(x0, x)
    t = torch.tensor([250.0, 900.0])
    c_skip, c_out = sched.consistency_scalings(t)
    f = c_skip.view(-1, 1, 1, 1, 1) * x + c_out.view(-1, 1, 1, 1, 1) * sched.to_x0_eps(v, x, t)[0]
    torch.testing.assert_close(f, x - (t / 1000).view(-1, 1, 1, 1, 1) * v)


def test_schedule_config_round_trip_and_diffusers_configs():
    sched = FlowSchedule(shift=5.0)
    assert FlowSchedule.from_config(sched.to_config()) == sched
    wan_unipc = {
        "_class_name": "UniPCMultistepScheduler",
        "flow_shift": 3.0,
        "prediction_type": "flow_prediction",
        "use_flow_sigmas": True,
        "num_train_timesteps": 1000,
    }
    assert FlowSchedule.from_config(wan_unipc).shift == 3.0
    assert (
        FlowSchedule.from_config({"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 7.0}).shift
        == 7.0
    )
    with pytest.raises(ConfigError, match="not a flow-matching"):
        FlowSchedule.from_config({"_class_name": "DDIMScheduler", "prediction_type": "epsilon"})
    with pytest.raises(ConfigError):
        FlowSchedule(shift=0.0)


# ------------------------------------------------------------------------------------ samplers (toy field)
@pytest.mark.parametrize("rule", ["diffusers", "t2v-turbo"])
def test_consistency_sampler_equals_flow_match_lcm_scheduler(rule):
    from diffusers import FlowMatchLCMScheduler

    k, n, shape = 3.0, 4, (2, 4, 3, 4, 4)
    sched = FlowSchedule(shift=k)
    sigmas = consistency_sigmas(n, k, rule=rule)
    latents = torch.randn(shape, generator=torch.Generator().manual_seed(5))
    ours = flow_consistency_sample(
        toy_velocity, sched, shape, sigmas, generator=torch.Generator().manual_seed(6), latents=latents
    )
    if rule == "diffusers":
        lcm = FlowMatchLCMScheduler(shift=k)
        lcm.set_timesteps(n)
    else:  # our grid is already shifted: hand it to an unshifted scheduler
        lcm = FlowMatchLCMScheduler(shift=1.0)
        lcm.set_timesteps(sigmas=sigmas)
    g = torch.Generator().manual_seed(6)
    z = latents.clone()
    for t in lcm.timesteps:
        z = lcm.step(toy_velocity(z, t.expand(shape[0])), t, z, generator=g, return_dict=False)[0]
    torch.testing.assert_close(ours, z, rtol=1e-5, atol=1e-5)
    assert (ours - latents).abs().max() > 0.1  # the field moved the sample


def test_euler_cfg_sampler_equals_flow_match_euler_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    k, n, g_scale, shape = 3.0, 6, 4.5, (2, 4, 3, 4, 4)

    def cond(z, t):
        return toy_velocity(z, t, 0.3)

    def uncond(z, t):
        return toy_velocity(z, t, -0.2)

    latents = torch.randn(shape, generator=torch.Generator().manual_seed(7))
    ours = euler_cfg_sample(cond, uncond, FlowSchedule(shift=k), shape, n, g_scale, latents=latents)
    sched = FlowMatchEulerDiscreteScheduler(shift=k)
    sched.set_timesteps(n)
    z = latents.clone()
    for t in sched.timesteps:
        tb = t.expand(shape[0])
        v_c, v_u = cond(z, tb), uncond(z, tb)
        z = sched.step(v_u + g_scale * (v_c - v_u), t, z, return_dict=False)[0]
    torch.testing.assert_close(ours, z, rtol=1e-5, atol=1e-5)
    # cfg_scale 1 is the conditional field alone (no uncond call), as WanPipeline
    plain = euler_cfg_sample(cond, None, FlowSchedule(shift=k), shape, n, 1.0, latents=latents)
    batched = euler_cfg_sample(
        cond,
        None,
        FlowSchedule(shift=k),
        shape,
        n,
        g_scale,
        latents=latents,
        model_fn_batched=lambda z, t: (cond(z, t), uncond(z, t)),
    )
    torch.testing.assert_close(batched, ours, rtol=1e-6, atol=1e-6)
    assert (plain - ours).abs().max() > 1e-2


def test_samplers_reproducible_from_generator():
    shape = (1, 4, 3, 4, 4)
    a = flow_consistency_sample(
        toy_velocity, FlowSchedule(3.0), shape, consistency_sigmas(4, 3.0), torch.Generator().manual_seed(0)
    )
    b = flow_consistency_sample(
        toy_velocity, FlowSchedule(3.0), shape, consistency_sigmas(4, 3.0), torch.Generator().manual_seed(0)
    )
    c = flow_consistency_sample(
        toy_velocity, FlowSchedule(3.0), shape, consistency_sigmas(4, 3.0), torch.Generator().manual_seed(1)
    )
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_project_consistency_sampler_runs_a_flow_schedule():
    """sampling.consistency_sample (the project's one loop, LCM scalings asked from the schedule) on a
    FlowSchedule with timesteps 1000 s equals flow_consistency_sample."""
    from t2v_turbo.sampling import consistency_sample

    shape, sched = (2, 4, 3, 4, 4), FlowSchedule(shift=3.0)
    sigmas = consistency_sigmas(4, 3.0)
    latents = torch.randn(shape, generator=torch.Generator().manual_seed(8))
    ours = flow_consistency_sample(
        toy_velocity, sched, shape, sigmas, torch.Generator().manual_seed(9), latents=latents
    )
    with torch.no_grad():
        theirs = consistency_sample(
            toy_velocity,
            sched,
            shape,
            [1000 * s for s in sigmas],
            torch.Generator().manual_seed(9),
            latents=latents,
        )
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)
