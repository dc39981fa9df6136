import copy

import pytest
import torch

from t2v_turbo.distill import DistillConfig, distill_step, ema_update
from t2v_turbo.losses import consistency_loss, reward_terms
from t2v_turbo.rewards.base import CallableReward, RewardModel, RewardTerm
from t2v_turbo.solvers import DDIMSolver


def test_consistency_loss_closed_forms():
    a = torch.tensor([0.0, 3.0, -4.0])
    b = torch.zeros(3)
    c = 0.001
    expected = sum(((x**2 + c**2) ** 0.5 - c) for x in [0.0, 3.0, 4.0]) / 3
    assert float(consistency_loss(a, b, "huber", c)) == pytest.approx(expected, rel=1e-6)
    assert float(consistency_loss(a, b, "l2")) == pytest.approx(25 / 3, rel=1e-6)
    assert float(consistency_loss(a, a.clone())) == 0.0
    with pytest.raises(ValueError, match="valid"):
        consistency_loss(a, b, "l1")


class PixelReward(RewardModel):
    """A reward with a parameter: mean of a learned colour projection (gradients must not reach it)."""

    kind, num_frames = "image", 2

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Conv2d(3, 1, 1)

    def score_images(self, images, prompts):
        return self.proj(images).mean(dim=(1, 2, 3))


def test_reward_terms_weighting_and_frames():
    lat = torch.randn(2, 4, 6, 2, 2, requires_grad=True)
    seen = []

    def decode(z, frames):
        seen.append(list(frames))
        return z[:, :3, frames]

    r = CallableReward(lambda v, p: v.mean(dim=(1, 2, 3, 4)), kind="video", num_frames=3)
    loss, logs = reward_terms(
        lat, ["a", "b"], [RewardTerm("v", r, 2.0)], decode, torch.Generator().manual_seed(0)
    )
    score = lat[:, :3, seen[0]].mean()
    assert float(loss.detach()) == pytest.approx(-2.0 * float(score.detach()), rel=1e-5)
    assert float(logs["reward/v"]) == pytest.approx(float(score.detach()), rel=1e-5)
    # strided frames: stride T // N = 2
    assert seen[0][1] - seen[0][0] == 2 and len(seen[0]) == 3


@pytest.fixture()
def parts(tiny_teacher):
    student = tiny_teacher.make_student(256, init="zero")
    student.add_lora(rank=4)
    g = torch.Generator().manual_seed(0)
    video = torch.rand(2, 3, 4, 16, 16, generator=g) * 2 - 1
    z0 = tiny_teacher.encode_video(video, g)
    prompts = ["a red digit 1 moving left", "a blue digit 2 moving up"]
    cond, uncond = tiny_teacher.encode_prompt(prompts), tiny_teacher.encode_prompt([""])
    return student, z0, prompts, cond, uncond


def test_distill_step_reproducible_and_gradient_flow(tiny_teacher, parts):
    student, z0, prompts, cond, uncond = parts
    reward = PixelReward().requires_grad_(False)
    solver = DDIMSolver(tiny_teacher.schedule)
    terms = [RewardTerm("px", reward, 1.0)]

    def step():
        g = torch.Generator().manual_seed(5)
        return distill_step(student, tiny_teacher, solver, z0, prompts, cond, uncond, terms, generator=g)

    out1, out2 = step(), step()
    assert all(torch.equal(out1[k], out2[k]) for k in out1)
    assert float(out1["loss"]) == pytest.approx(float(out1["loss_cd"]) - float(out1["reward/px"]), rel=1e-5)
    assert 5.0 <= float(out1["w"]) <= 15.0
    out1["loss"].backward()
    trainable = {n for n, p in student.unet.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert all(p.grad is None for n, p in student.unet.named_parameters() if n not in trainable)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.trainable_parameters())
    for frozen in (tiny_teacher, reward, student.vae, student.text_encoder):
        assert all(p.grad is None for p in frozen.parameters())


def test_reward_gradient_reaches_lora_through_vae(tiny_teacher, parts):
    student, z0, prompts, cond, uncond = parts
    solver = DDIMSolver(tiny_teacher.schedule)
    reward = PixelReward().requires_grad_(False)

    def grads(weight):
        student.unet.zero_grad(set_to_none=True)
        out = distill_step(
            student,
            tiny_teacher,
            solver,
            z0,
            prompts,
            cond,
            uncond,
            [RewardTerm("px", reward, weight)],
            generator=torch.Generator().manual_seed(9),
        )
        out["loss"].backward()
        return torch.cat([p.grad.flatten() for p in student.trainable_parameters() if p.grad is not None])

    g0, g1 = grads(0.0), grads(10.0)
    # the LoRA up-projections start at zero, so only lora_B gets gradient in the first step; the reward
    # term must change it
    assert (g1 - g0).abs().max() > 1e-6


def test_ema_target_and_update(tiny_teacher, parts):
    student, z0, prompts, cond, uncond = parts
    target = copy.deepcopy(student).requires_grad_(False)
    solver = DDIMSolver(tiny_teacher.schedule)
    cfg = DistillConfig(target="ema")
    out = distill_step(
        student,
        tiny_teacher,
        solver,
        z0,
        prompts,
        cond,
        uncond,
        (),
        cfg,
        target,
        torch.Generator().manual_seed(2),
    )
    # the target equals the online student, so the EMA target gives the same loss as the online one
    ref = distill_step(
        student,
        tiny_teacher,
        solver,
        z0,
        prompts,
        cond,
        uncond,
        (),
        DistillConfig(),
        None,
        torch.Generator().manual_seed(2),
    )
    assert float(out["loss_cd"]) == pytest.approx(float(ref["loss_cd"]), rel=1e-6)
    with pytest.raises(ValueError, match="EMA"):
        distill_step(student, tiny_teacher, solver, z0, prompts, cond, uncond, (), cfg, None)
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    expect = 0.95 * a.weight.detach() + 0.05 * b.weight.detach()
    ema_update(a, b, 0.95)
    torch.testing.assert_close(a.weight.detach(), expect)


def test_reward_terms_decode_the_union_of_frames_once():
    lat = torch.randn(1, 4, 8, 2, 2)
    calls = []

    def decode(z, frames):
        calls.append(list(frames))
        return z[:, :3, frames]

    a = CallableReward(lambda v, p: v.mean(dim=(1, 2, 3, 4)), kind="image", num_frames=3)
    b = CallableReward(lambda v, p: v.amax(dim=(1, 2, 3, 4)), kind="video", num_frames=4)
    g = torch.Generator().manual_seed(1)
    _, logs = reward_terms(lat, ["x"], [RewardTerm("a", a, 1.0), RewardTerm("b", b, 1.0)], decode, g)
    g = torch.Generator().manual_seed(1)
    fa, fb = a.select_frames(8, g), b.select_frames(8, g)
    assert calls == [sorted(set(fa) | set(fb))]
    assert float(logs["reward/a"]) == pytest.approx(float(lat[:, :3, fa].mean()), rel=1e-6)
    assert float(logs["reward/b"]) == pytest.approx(float(lat[:, :3, fb].amax()), rel=1e-6)


def test_make_student_from_an_in_memory_unet_gets_its_projection():
    from t2v_turbo.models.diffusers_video import DiffusersVideoBackbone
    from t2v_turbo.models.tiny import char_clip_tokenizer, tiny_text_encoder, tiny_unet3d, tiny_vae

    unet = tiny_unet3d()  # time_cond_proj_dim left at its default
    assert "time_cond_proj_dim" in unet.config["_use_default_values"]
    teacher = DiffusersVideoBackbone(unet, tiny_vae(), tiny_text_encoder(), char_clip_tokenizer())
    student = teacher.make_student(64, init="zero")
    assert student.w_embedding_dim == 64 and student.unet.time_embedding.cond_proj.weight.shape == (16, 64)
