import pytest
import torch
from diffusers import DDIMScheduler, LCMScheduler

from t2v_turbo.sampling import consistency_sample, consistency_timesteps, ddim_cfg_sample
from t2v_turbo.schedule import NoiseSchedule
from t2v_turbo.solvers import DDIMSolver, cfg_combine, ddim_step

SCHED = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)


@pytest.mark.parametrize("points", [50, 200])
def test_ddim_grid_matches_reference(reference_numbers, points):
    ref = reference_numbers["ddim_solver"][str(points)]
    solver = DDIMSolver(NoiseSchedule.make(), points)
    assert solver.step_ratio == ref["step_ratio"]
    assert solver.timesteps.tolist() == ref["ddim_timesteps"]
    assert solver.alphas_cumprod[:3].tolist() == ref["ddim_alpha_cumprods_first3"]
    assert solver.alphas_cumprod[-3:].tolist() == ref["ddim_alpha_cumprods_last3"]
    assert solver.alphas_cumprod_prev[:3].tolist() == ref["ddim_alpha_cumprods_prev_first3"]


def test_grid_values_and_pairs():
    solver = DDIMSolver(NoiseSchedule.make(), 50)
    assert solver.timesteps.tolist() == list(range(19, 1000, 20))
    t_start, t_end = solver.timestep_pair(torch.tensor([0, 1, 49]))
    assert t_start.tolist() == [19, 39, 999] and t_end.tolist() == [0, 19, 979]
    # the grid step lands exactly on t_end's abar (index > 0) and on abar_0 for index 0
    s = NoiseSchedule.make()
    assert solver.alphas_cumprod_prev[1] == s.alphas_cumprod[19]
    assert solver.alphas_cumprod_prev[0] == s.alphas_cumprod[0]


def test_solver_step_equals_ddim_step():
    s = NoiseSchedule.make()
    solver = DDIMSolver(s, 50)
    x0, eps = torch.randn(3, 4, 2, 4, 4), torch.randn(3, 4, 2, 4, 4)
    idx = torch.tensor([3, 10, 49])
    _, t_end = solver.timestep_pair(idx)
    torch.testing.assert_close(solver.step(x0, eps, idx), ddim_step(s, x0, eps, t_end), rtol=0, atol=0)


def test_cfg_combine_closed_form():
    c, u = torch.tensor([2.0, 1.0]), torch.tensor([1.0, 3.0])
    assert cfg_combine(c, u, 7.0).tolist() == [9.0, -13.0]
    w = torch.tensor([1.0, 0.5])
    assert cfg_combine(c[:, None], u[:, None], w).flatten().tolist() == [3.0, 0.0]


def test_ddim_step_matches_diffusers_ddimscheduler():
    s = NoiseSchedule.make()
    sch = DDIMScheduler(**SCHED, clip_sample=False, set_alpha_to_one=True)
    sch.set_timesteps(50)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 4, 3, 4, 4, generator=g)
    for t in [int(x) for x in sch.timesteps[[0, 10, 49]]]:
        eps = torch.randn(z.shape, generator=g)
        ref = sch.step(eps, t, z).prev_sample
        x0, eps_ = s.to_x0_eps(eps, z, t)
        ours = ddim_step(s, x0, eps_, t - 20)
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("L", [50, 200])
@pytest.mark.parametrize("N", [1, 2, 4, 8, 16])
def test_timesteps_authors_rule_matches_reference(reference_numbers, L, N):
    ref = reference_numbers["lcm_inference_timesteps"][f"lcm_origin_steps={L}"][str(N)]
    assert consistency_timesteps(N, L) == ref


@pytest.mark.parametrize("N", [1, 2, 4, 8])
def test_timesteps_diffusers_rule_matches_lcmscheduler(N):
    sch = LCMScheduler(**SCHED, timestep_spacing="trailing")
    sch.set_timesteps(N, original_inference_steps=50)
    assert consistency_timesteps(N, 50, rule="diffusers") == sch.timesteps.tolist()
    assert consistency_timesteps(4, 50) == [999, 759, 519, 279]
    assert consistency_timesteps(4, 50, rule="diffusers") == [999, 759, 499, 259]


def test_timesteps_bad_values():
    with pytest.raises(ValueError, match="valid"):
        consistency_timesteps(4, rule="karras")
    with pytest.raises(ValueError):
        consistency_timesteps(0)


def _fake_model(z, t):
    # deterministic, t-dependent pseudo-eps (a closed-form "UNet")
    return torch.tanh(z * 0.7 + t.float().view(-1, *[1] * (z.dim() - 1)) / 1000.0)


@pytest.mark.parametrize("N", [1, 2, 4, 8])
def test_consistency_sampler_matches_lcmscheduler_step(N):
    s = NoiseSchedule.make()
    ts = consistency_timesteps(N, 50)
    shape = (2, 4, 3, 4, 4)
    ours = consistency_sample(_fake_model, s, shape, ts, generator=torch.Generator().manual_seed(7))

    sch = LCMScheduler(**SCHED)
    sch.set_timesteps(timesteps=ts)
    g = torch.Generator().manual_seed(7)
    z = torch.randn(shape, generator=g)
    for t in sch.timesteps:
        out = _fake_model(z, torch.full((shape[0],), int(t)))
        z, denoised = sch.step(out, t, z, generator=g, return_dict=False)
    torch.testing.assert_close(ours, denoised, rtol=1e-5, atol=1e-5)


def test_samplers_reproducible_with_generator():
    s = NoiseSchedule.make()
    ts = consistency_timesteps(4)
    a = consistency_sample(_fake_model, s, (1, 4, 2, 4, 4), ts, generator=torch.Generator().manual_seed(3))
    b = consistency_sample(_fake_model, s, (1, 4, 2, 4, 4), ts, generator=torch.Generator().manual_seed(3))
    c = consistency_sample(_fake_model, s, (1, 4, 2, 4, 4), ts, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_ddim_cfg_sampler_matches_diffusers_loop():
    s = NoiseSchedule.make()
    shape = (2, 4, 2, 4, 4)

    def cond(z, t):
        return _fake_model(z, t)

    def uncond(z, t):
        return _fake_model(z * 0.5, t)

    ours = ddim_cfg_sample(cond, uncond, s, shape, 10, 7.5, generator=torch.Generator().manual_seed(1))
    sch = DDIMScheduler(**SCHED, clip_sample=False, set_alpha_to_one=True)
    sch.set_timesteps(10)
    z = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    for t in sch.timesteps:
        tb = torch.full((2,), int(t))
        out = uncond(z, tb) + 7.5 * (cond(z, tb) - uncond(z, tb))
        z = sch.step(out, t, z).prev_sample
    torch.testing.assert_close(ours, z, rtol=1e-4, atol=1e-5)


def test_the_consistency_function_meets_the_boundary_and_is_shared():
    from t2v_turbo.sampling import ConsistencyDenoiser, consistency_fn

    s = NoiseSchedule.make()
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3, 4, 2, 4, 4, generator=g)
    t = torch.tensor([0, 259, 999])
    f, x0 = ConsistencyDenoiser(_fake_model, s)(z, t)
    torch.testing.assert_close(f[0], z[0], rtol=0, atol=0)  # f(z, 0) = z (c_skip = 1, c_out = 0)
    torch.testing.assert_close(x0, s.to_x0_eps(_fake_model(z, t), z, t)[0], rtol=0, atol=0)
    c_skip, c_out = s.consistency_scalings(t)
    torch.testing.assert_close(f, c_skip.view(-1, 1, 1, 1, 1) * z + c_out.view(-1, 1, 1, 1, 1) * x0)

    class Backbone:  # the Denoiser members consistency_fn uses
        schedule = s

        def model_output(self, z_t, t, cond, w_emb=None):
            return _fake_model(z_t * cond, t) + w_emb

    f2, _ = consistency_fn(Backbone(), z, t, cond=torch.tensor(0.5), w_emb=torch.tensor(0.1))
    f3, _ = ConsistencyDenoiser(lambda z_t, t_: _fake_model(z_t * 0.5, t_) + 0.1, s)(z, t)
    assert torch.equal(f2, f3)


def test_grad_last_k_changes_gradients_not_the_sample():
    s = NoiseSchedule.make()
    ts = consistency_timesteps(3)
    scale = torch.tensor(0.9, requires_grad=True)
    seen = []

    def model(z, t):
        seen.append(torch.is_grad_enabled())
        return _fake_model(z * scale, t)

    def run(k):
        seen.clear()
        return consistency_sample(
            model, s, (1, 4, 2, 4, 4), ts, generator=torch.Generator().manual_seed(2), grad_last_k=k
        )

    with torch.no_grad():
        plain = run(0)
    assert seen == [False, False, False] and not plain.requires_grad
    last2 = run(2)
    assert seen == [False, True, True] and last2.requires_grad
    assert torch.equal(plain, last2.detach())  # the same draws, the same video
    (g2,) = torch.autograd.grad(last2.sum(), scale)
    (g1,) = torch.autograd.grad(run(1).sum(), scale)
    assert float(g1) != float(g2)


def test_one_sampling_loop_serves_flow_matching():
    """consistency_sample with the flow schedule (c_skip 0, c_out 1, float timesteps 1000 s) equals the
    flow module's dedicated consistency sampler."""
    from t2v_turbo.flow import FlowSchedule, consistency_sigmas, flow_consistency_sample

    fs = FlowSchedule(shift=3.0)
    sigmas = consistency_sigmas(4, shift=3.0)
    shape = (2, 4, 3, 4, 4)
    ours = consistency_sample(
        _fake_model, fs, shape, [1000.0 * x for x in sigmas], generator=torch.Generator().manual_seed(5)
    )
    ref = flow_consistency_sample(_fake_model, fs, shape, sigmas, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)
