"""T2V-Turbo-v2 sampling (issue 14 item 8) and the teacher's unconditional fps (item 9), on tiny VC2 models.

The authors' v2 pipeline: timesteps from the 200-point origin grid, the w embedding at every step,
and a motion embedding of `motion_gs` at steps with t >= 1000 (1 - percentage), of 0 below.
"""

from __future__ import annotations

import inspect
import json
import math

import pytest
import torch

from t2v_turbo.errors import InputError
from t2v_turbo.models.videocrafter2 import V2_SAMPLING_DEFAULTS, VC2Config, VideoCrafter2
from t2v_turbo.pipeline import generate
from t2v_turbo.sampling import consistency_sample, consistency_timesteps
from t2v_turbo.schedule import guidance_embedding

PROMPTS = ["a red digit 7 moving left", "a cyan digit 0 moving up"]


def _perturb(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return module


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    model = VideoCrafter2(VC2Config.tiny())
    _perturb(model.unet, 1)
    return model.freeze().eval()


@pytest.fixture(scope="module")
def v2(teacher):
    student = teacher.make_student(256, init="normal", seed=3, motion_cond_dim=256)
    _perturb(student.unet, 4)
    return student.freeze().eval()


class Spy:
    """Records (timestep, motion_cond) of every UNet call."""

    def __init__(self, model):
        self.calls, self.model, self.real = [], model, model.unet.forward

    def __enter__(self):
        def forward(x, timesteps, context, **kw):
            self.calls.append((int(timesteps.reshape(-1)[0]), kw.get("motion_cond")))
            return self.real(x, timesteps, context, **kw)

        self.model.unet.forward = forward
        return self

    def __exit__(self, *exc):
        del self.model.unet.forward  # back to the class method


def test_origin_grid_200_schedule():
    assert consistency_timesteps(4, 200) == [999, 749, 499, 249]
    assert consistency_timesteps(16, 200) == list(range(999, 98, -60))
    assert consistency_timesteps(4, 50) == [999, 759, 519, 279]


def test_v2_defaults_and_motion_steps(v2):
    assert v2.motion_embedding_dim == 256 and v2.sampling_defaults == V2_SAMPLING_DEFAULTS
    with Spy(v2) as spy:
        gen = generate(v2, PROMPTS[:1], 4, seed=0, decode=False)
    # defaults: origin grid 200, motion_gs 0.05 on t >= 1000 * (1 - 0.5) = 500: 999, 749 (= ceil(0.5 * 4))
    assert gen.timesteps == [999, 749, 499, 249] and gen.settings["origin_steps"] == 200
    assert gen.settings["motion_guidance"] == 0.05 and gen.settings["motion_percentage"] == 0.5
    assert gen.settings["motion_timesteps"] == [999, 749]
    on, off = (guidance_embedding(torch.tensor([m]), 256) for m in (0.05, 0.0))
    assert [t for t, _ in spy.calls] == [999, 749, 499, 249]
    for (_t, m), want in zip(spy.calls, [on, on, off, off]):
        torch.testing.assert_close(m, want, rtol=0, atol=0)
    assert not torch.equal(on, off) and off.abs().sum() > 0  # "off" is the embedding of 0, not None


@pytest.mark.parametrize(
    "steps, origin, p, n_motion",
    [(4, 200, 0.3, 2), (4, 200, 0.25, 1), (4, 50, 0.3, 2), (8, 200, 0.3, 3), (16, 200, 0.5, 9), (4, 200, 0.0, 0)],
)
def test_motion_percentage_rule(v2, steps, origin, p, n_motion):
    with Spy(v2) as spy:
        gen = generate(v2, PROMPTS[:1], steps, origin_steps=origin, motion_percentage=p, motion_guidance=0.1,
                       seed=1, decode=False)  # fmt: skip
    on = guidance_embedding(torch.tensor([0.1]), 256)
    used = [torch.equal(m, on) for _, m in spy.calls]
    # the authors' threshold t >= 1000 (1 - p) picks a prefix of the steps; with the origin grid a
    # multiple of the step count that prefix has ceil(p * steps) steps
    assert used == [True] * n_motion + [False] * (steps - n_motion)
    assert gen.settings["motion_timesteps"] == [t for t in gen.timesteps if t >= 1000 * (1 - p)]
    assert len(gen.settings["motion_timesteps"]) == n_motion
    if origin % steps == 0:
        assert n_motion == math.ceil(p * steps)


def test_generate_equals_the_authors_loop(v2):
    # a hand-written v2 loop: w embedding every step, motion strength by the threshold, same noise draws
    gen = generate(v2, PROMPTS, 4, w=6.0, motion_guidance=0.2, motion_percentage=0.3, seed=7, decode=False)
    cond = v2.encode_prompt(PROMPTS)
    w_emb = guidance_embedding(torch.full((2,), 6.0), 256)

    def fn(z, t):
        m = torch.full((2,), 0.2 if int(t[0]) >= 700 else 0.0)
        return v2.unet(z, t, cond, fps=16, timestep_cond=w_emb, motion_cond=guidance_embedding(m, 256))

    g = torch.Generator().manual_seed(7)
    shape = v2.latent_shape(2)
    noise = torch.randn(shape, generator=g)
    with torch.no_grad():
        ref = consistency_sample(fn, v2.schedule, shape, [999, 749, 499, 249], generator=g, latents=noise)
    torch.testing.assert_close(gen.videos, ref, rtol=1e-5, atol=1e-5)
    off = generate(v2, PROMPTS, 4, w=6.0, motion_guidance=0.2, motion_percentage=0.0, seed=7, decode=False)
    assert not torch.allclose(off.videos, gen.videos, atol=1e-4)  # the motion embedding changes the sample


def test_motion_conditioning_off_and_errors(v2, teacher):
    with Spy(v2) as spy:
        gen = generate(v2, PROMPTS[:1], 4, motion_conditioning=False, decode=False)
    assert all(m is None for _, m in spy.calls) and gen.settings["motion_guidance"] is None
    assert gen.settings["motion_timesteps"] == [] and gen.settings["origin_steps"] == 200
    v1 = teacher.make_student(256, init="normal", seed=3)
    assert v1.sampling_defaults == {}
    with Spy(v1) as spy:
        gen = generate(v1, PROMPTS[:1], 4, decode=False)
    assert gen.timesteps == [999, 759, 519, 279] and all(m is None for _, m in spy.calls)
    with pytest.raises(InputError, match="motion"):
        generate(v1, PROMPTS[:1], 4, motion_guidance=0.05, decode=False)
    with pytest.raises(InputError, match="motion"):
        generate(v1, PROMPTS[:1], 4, motion_conditioning=True, decode=False)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        generate(v2, PROMPTS[:1], 4, motion_percentage=1.5, decode=False)
    with pytest.raises(InputError, match="finite"):
        generate(v2, PROMPTS[:1], 4, motion_guidance=float("nan"), decode=False)


def test_v2_defaults_recorded_next_to_the_weights(v2, tmp_path):
    v2.save_pretrained(tmp_path / "v2")
    meta = json.loads((tmp_path / "v2" / "t2v_turbo.json").read_text())
    assert meta["sampling_defaults"] == V2_SAMPLING_DEFAULTS and meta["motion_embedding_dim"] == 256
    meta["sampling_defaults"] = {**V2_SAMPLING_DEFAULTS, "motion_guidance": 0.3, "motion_percentage": 0.25}
    (tmp_path / "v2" / "t2v_turbo.json").write_text(json.dumps(meta))
    loaded = VideoCrafter2.from_pretrained(tmp_path / "v2")
    assert loaded.sampling_defaults["motion_guidance"] == 0.3
    with Spy(loaded) as spy:
        gen = generate(loaded, PROMPTS[:1], 4, decode=False)
    assert gen.settings["motion_guidance"] == 0.3 and gen.settings["motion_timesteps"] == [999]
    torch.testing.assert_close(spy.calls[0][1], guidance_embedding(torch.tensor([0.3]), 256))


def test_teacher_unconditional_branch_fps(teacher):
    # the authors' v1 training calls the unconditional teacher without fps: the UNet default, 16
    assert inspect.signature(type(teacher.unet).forward).parameters["fps"].default == 16
    g = torch.Generator().manual_seed(0)
    z = torch.randn(teacher.latent_shape(1), generator=g)
    t, uncond = torch.tensor([500]), teacher.encode_prompt([""])
    with torch.no_grad():
        authors = teacher.unet(z, t, uncond)  # no fps argument
        assert teacher.fps == 16
        torch.testing.assert_close(teacher.model_output(z, t, uncond), authors, rtol=0, atol=0)
        teacher.fps = 8  # at another fps the project's unconditional branch differs from theirs
        try:
            assert not torch.allclose(teacher.model_output(z, t, uncond), authors, atol=1e-5)
        finally:
            teacher.fps = 16
