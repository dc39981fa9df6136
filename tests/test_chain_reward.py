"""The DRaFT-K chain-reward baseline: gradients flow through the last K sampling steps only."""

import pytest
import torch

from t2v_turbo.baselines.chain import chain_reward_step
from t2v_turbo.rewards.base import RewardModel, RewardTerm
from t2v_turbo.sampling import consistency_timesteps
from t2v_turbo.schedule import boundary_scalings

PROMPTS = ["a red digit 1 moving left", "a blue digit 2 moving up"]


class PixelReward(RewardModel):
    """An image reward with its own (trainable-looking) parameter: it must never receive a gradient."""

    kind, num_frames = "image", 2

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.proj = torch.nn.Conv2d(3, 1, 1)

    def score_images(self, images, prompts):
        return torch.tanh(self.proj(images)).mean(dim=(1, 2, 3))


@pytest.fixture(scope="module")
def student(tiny_teacher):
    s = tiny_teacher.make_student(256, init="normal")
    s.add_lora(rank=4, init_lora_weights=False)  # non-zero up-projections: every LoRA matrix gets a gradient
    return s


def grads(student, k, seed=0, num_steps=3, reward=None):
    reward = reward or PixelReward()
    student.unet.zero_grad(set_to_none=True)
    g = torch.Generator().manual_seed(seed)
    out = chain_reward_step(student, PROMPTS, [RewardTerm("px", reward, 2.0)], num_steps, k, 7.5, g)
    out["loss"].backward()
    named = {n: p.grad.clone() for n, p in student.unet.named_parameters() if p.grad is not None}
    return out, named, reward


def consistency_output(z, x0, t):
    c_skip, c_out = boundary_scalings(t)  # f = c_skip z + c_out x0, written out here independently
    return c_skip * z + c_out * x0


def manual_last_step_grads(student, seed=0, num_steps=3):
    """Reference for K = 1: run N - 1 steps without grad, the last with grad, decode, score (same draws)."""
    student.unet.zero_grad(set_to_none=True)
    reward = PixelReward()
    g = torch.Generator().manual_seed(seed)
    cond = student.encode_prompt(PROMPTS)
    w_emb = student.w_embedding(7.5, 2)
    ts = consistency_timesteps(num_steps)
    shape = student.latent_shape(2)
    z = torch.randn(shape, generator=g)
    with torch.no_grad():
        for i, t in enumerate(ts[:-1]):
            tb = torch.full((2,), t)
            x0, _ = student.schedule.to_x0_eps(student.model_output(z, tb, cond, w_emb), z, tb)
            z = student.schedule.add_noise(
                consistency_output(z, x0, t), torch.randn(shape, generator=g), ts[i + 1]
            )
    tb = torch.full((2,), ts[-1])
    x0, _ = student.schedule.to_x0_eps(student.model_output(z, tb, cond, w_emb), z, tb)
    final = consistency_output(z, x0, ts[-1])
    frames = reward.select_frames(final.shape[2], g)
    loss = -2.0 * reward(student.decode_latents(final, frames), PROMPTS).mean()
    loss.backward()
    return float(loss.detach()), {
        n: p.grad.clone() for n, p in student.unet.named_parameters() if p.grad is not None
    }


def test_k1_matches_truncated_backprop_reference(student):
    out, g1, reward = grads(student, 1)
    ref_loss, ref = manual_last_step_grads(student)
    assert float(out["loss"].detach()) == pytest.approx(ref_loss, rel=1e-5)
    assert float(out["reward/px"]) == pytest.approx(-ref_loss / 2.0, rel=1e-5)
    assert g1.keys() == ref.keys() and len(g1) > 0
    for n in g1:
        torch.testing.assert_close(g1[n], ref[n], rtol=1e-4, atol=1e-7)
    # only LoRA parameters get gradients; the reward model gets none
    assert all("lora_" in n for n in g1)
    assert all(p.grad is None for p in reward.parameters())
    assert all(p.grad is None for p in student.vae.parameters())


def test_gradient_depends_on_k_not_the_sample(student):
    out1, g1, _ = grads(student, 1)
    out2, g2, _ = grads(student, 2)
    out3, g3, _ = grads(student, 3)
    # the same draws give the same video and reward whatever K ...
    assert float(out1["reward/px"]) == pytest.approx(float(out2["reward/px"]), rel=1e-6)
    assert float(out1["reward/px"]) == pytest.approx(float(out3["reward/px"]), rel=1e-6)
    # ... but the gradient gains the earlier steps' contributions as K grows
    for a, b in [(g1, g2), (g2, g3)]:
        diff = sum(float((a[n] - b[n]).abs().sum()) for n in a)
        assert diff > 1e-6 * sum(float(a[n].abs().sum()) for n in a)


def test_only_last_k_unet_calls_record_gradients(student):
    modes = []
    handle = student.unet.register_forward_pre_hook(lambda m, a: modes.append(torch.is_grad_enabled()))
    try:
        out, _, _ = grads(student, 2, num_steps=4)
    finally:
        handle.remove()
    assert modes == [False, False, True, True]
    assert int(out["unet_evals"]) == 4 and int(out["backprop_steps"]) == 2


def test_invalid_arguments(student):
    term = [RewardTerm("px", PixelReward(), 1.0)]
    with pytest.raises(ValueError, match="backprop_steps"):
        chain_reward_step(student, PROMPTS, term, num_steps=4, backprop_steps=0)
    with pytest.raises(ValueError, match="backprop_steps"):
        chain_reward_step(student, PROMPTS, term, num_steps=2, backprop_steps=3)
    with pytest.raises(ValueError, match="reward"):
        chain_reward_step(student, PROMPTS, [RewardTerm("px", PixelReward(), 0.0)], backprop_steps=1)
