import math

import pytest
import torch
from diffusers import DDPMScheduler

from t2v_turbo.schedule import NoiseSchedule, boundary_scalings, guidance_embedding


def test_scaled_linear_matches_reference_and_diffusers(reference_numbers):
    s = NoiseSchedule.make()
    ref = reference_numbers["alphas_cumprod"]
    got = s.alphas_cumprod[torch.tensor(ref["t"])]
    assert got.tolist() == pytest.approx(ref["scheduler_float32"], abs=0, rel=0)
    d = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    assert torch.equal(s.alphas_cumprod, d.alphas_cumprod)


def test_linear_schedule_matches_diffusers():
    s = NoiseSchedule.make("linear", 0.0001, 0.02)
    d = DDPMScheduler(beta_schedule="linear", beta_start=0.0001, beta_end=0.02)
    assert torch.equal(s.alphas_cumprod, d.alphas_cumprod)


def test_from_scheduler_config_and_unknown():
    d = DDPMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type="v_prediction"
    )
    s = NoiseSchedule.from_scheduler_config(d.config)
    assert s.prediction_type == "v_prediction" and torch.equal(s.alphas_cumprod, d.alphas_cumprod)
    with pytest.raises(ValueError, match="valid"):
        NoiseSchedule.make("cosine")


def test_add_noise_and_velocity_match_diffusers():
    s = NoiseSchedule.make()
    d = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 4, 2, 5, 5, generator=g)
    eps = torch.randn(3, 4, 2, 5, 5, generator=g)
    t = torch.tensor([0, 500, 999])
    torch.testing.assert_close(s.add_noise(x0, eps, t), d.add_noise(x0, eps, t), rtol=0, atol=1e-6)
    torch.testing.assert_close(s.get_velocity(x0, eps, t), d.get_velocity(x0, eps, t), rtol=0, atol=1e-6)


@pytest.mark.parametrize("ptype", ["epsilon", "v_prediction", "sample"])
def test_parameterisation_round_trips(ptype):
    s = NoiseSchedule.make(prediction_type=ptype)
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(2, 4, 3, 4, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(2, 4, 3, 4, 4, generator=g, dtype=torch.float64)
    s.alphas_cumprod = s.alphas_cumprod.double()
    t = torch.tensor([10, 700])
    z = s.add_noise(x0, eps, t)
    out = {"epsilon": eps, "v_prediction": s.get_velocity(x0, eps, t), "sample": x0}[ptype]
    x0_hat, eps_hat = s.to_x0_eps(out, z, t)
    torch.testing.assert_close(x0_hat, x0, rtol=0, atol=1e-9)
    torch.testing.assert_close(eps_hat, eps, rtol=0, atol=1e-9)
    torch.testing.assert_close(s.eps_to_x0(eps, z, t), x0, rtol=0, atol=1e-9)
    torch.testing.assert_close(s.x0_to_eps(x0, z, t), eps, rtol=0, atol=1e-9)
    v = s.get_velocity(x0, eps, t)
    torch.testing.assert_close(s.v_to_eps(v, z, t), eps, rtol=0, atol=1e-9)


def test_boundary_scalings_closed_form_and_reference(reference_numbers):
    c_skip, c_out = boundary_scalings(0)
    assert float(c_skip) == 1.0 and float(c_out) == 0.0
    for t, vals in reference_numbers["boundary_scalings"]["values"].items():
        cs, co = boundary_scalings(int(t))
        assert float(cs) == vals["training_fn_float32"]["c_skip"]
        assert float(co) == vals["training_fn_float32"]["c_out"]
        assert float(cs) == pytest.approx(vals["exact_float64"]["c_skip"], rel=1e-6)
    # the schedule's method is the same function, per sample for a (B,) batch of timesteps
    cs, co = NoiseSchedule.make().consistency_scalings(torch.tensor([0, 259, 999]))
    assert cs.tolist() == [float(boundary_scalings(t)[0]) for t in (0, 259, 999)]
    assert co.tolist() == [float(boundary_scalings(t)[1]) for t in (0, 259, 999)]


def test_boundary_scalings_match_lcm_scheduler():
    from diffusers import LCMScheduler

    sch = LCMScheduler()
    for t in [0, 1, 19, 259, 999]:
        cs, co = sch.get_scalings_for_boundary_condition_discrete(torch.tensor(t))
        ours = boundary_scalings(t)
        assert float(ours[0]) == pytest.approx(float(cs), rel=1e-6, abs=1e-12)
        assert float(ours[1]) == pytest.approx(float(co), rel=1e-6)


def test_guidance_embedding_reference_and_diffusers(reference_numbers):
    ref = reference_numbers["guidance_scale_embedding"]
    emb = guidance_embedding(torch.tensor([ref["w"]]), 256)[0]
    # float32 exp differs by an ulp across builds; x 7500 that is up to ~5e-4 rad in a few entries
    torch.testing.assert_close(emb, torch.tensor(ref["all256"]), rtol=0, atol=1e-3)
    assert (emb - torch.tensor(ref["all256"])).abs().gt(1e-5).sum() <= 8
    w0 = guidance_embedding(0.0, 256)[0]
    assert w0[:128].abs().max() == 0 and torch.all(w0[128:] == 1)
    from diffusers import LatentConsistencyModelPipeline

    w = torch.tensor([1.0, 7.5, 12.25])
    theirs = LatentConsistencyModelPipeline.get_guidance_scale_embedding(None, w, embedding_dim=256)
    torch.testing.assert_close(guidance_embedding(w, 256), theirs, rtol=0, atol=0)
    # the sinusoid: entry j of the sin half is sin(1000 w f_j)
    f3 = math.exp(-3 * math.log(10000) / 127)
    assert float(guidance_embedding(2.0)[0, 3]) == pytest.approx(math.sin(2000 * f3), abs=1e-3)
