import copy

import numpy as np
import pytest
import torch

from t2v_turbo.distill import DistillConfig, distill_step, ema_update
from t2v_turbo.losses import consistency_loss, reward_terms
from t2v_turbo.rewards.base import CallableReward, RewardModel, RewardTerm
from t2v_turbo.schedule import NoiseSchedule
from t2v_turbo.solvers import DDIMSolver

# loss_cd of one step on the seeded tiny teacher (test below); the value before the per-sample loss
# refactor was 0.09312251210212708 (huber, 1 float32 ulp away: batch mean of sample means)
GOLDEN_HUBER, GOLDEN_L2, GOLDEN_W_T = 0.09312251955270767, 0.014405316673219204, (13.636983871459961, 269.0)


def test_consistency_loss_is_per_sample_closed_forms():
    a = torch.tensor([[0.0, 3.0, -4.0], [1.0, 1.0, 1.0]])
    b = torch.zeros(2, 3)
    c = 0.001

    def huber(xs):
        return sum(((x**2 + c**2) ** 0.5 - c) for x in xs) / len(xs)

    got = consistency_loss(a, b, "huber", c)
    assert got.shape == (2,)
    assert got.tolist() == pytest.approx([huber([0.0, 3.0, 4.0]), huber([1.0, 1.0, 1.0])], rel=1e-6)
    assert consistency_loss(a, b, "l2").tolist() == pytest.approx([25 / 3, 1.0], rel=1e-6)
    assert consistency_loss(a[:, None, :, None], b[:, None, :, None], "l2").shape == (2,)  # any rank
    assert consistency_loss(a, a.clone()).tolist() == [0.0, 0.0]
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


# ----------------------------------------------------------------------------------- Algorithm 1 by hand
class LinearDenoiser(torch.nn.Module):
    """A closed-form fake backbone: output = a z_t + b t / 1000 + d mean(cond) + c w (w embedded as itself)."""

    guidance_convention = "t2v-turbo"

    def __init__(self, schedule, a, b, c, d, student=True):
        super().__init__()
        self.schedule = schedule
        self.coef = torch.nn.Parameter(torch.tensor([a, b, c, d]))
        self.w_embedding_dim = 1 if student else None

    device = property(lambda self: self.coef.device)
    dtype = property(lambda self: self.coef.dtype)

    def w_embedding(self, w, batch=None):
        return torch.as_tensor(w, dtype=torch.float32)[:, None]

    def model_output(self, z_t, t, cond, w_emb=None):
        a, b, c, d = self.coef
        shape = (-1,) + (1,) * (z_t.dim() - 1)
        out = a * z_t + b * (t.float() / 1000).view(shape) + d * cond.mean(dim=(1, 2)).view(shape)
        return out + c * w_emb[:, 0].view(shape) if w_emb is not None else out

    def decode_latents(self, z, frames=None, checkpoint=False):
        return z


def _coefs(m):
    return [float(x) for x in m.coef.detach()]


def _hand_algorithm_1(kind, student, teacher, abar, z0, cond, uncond, seed, num_points, w_range, huber_c):
    """Algorithm 1 (shared/T2V_TURBO.md, "Consistency distillation step") in float64 NumPy, from the
    same random draws (grid index, w, eps in this order from one generator)."""
    g = torch.Generator().manual_seed(seed)
    b = z0.shape[0]
    n = torch.randint(0, num_points, (b,), generator=g).numpy()
    w = (w_range[0] + (w_range[1] - w_range[0]) * torch.rand(b, generator=g)).double().numpy()
    eps = torch.randn(z0.shape, generator=g).double().numpy()
    z0, cond_m, uncond_m = z0.double().numpy(), cond.double().mean((1, 2)).numpy(), uncond.double().mean()
    col = (slice(None),) + (None,) * (z0.ndim - 1)  # (B,) -> (B, 1, 1, ...)
    w_ = w[col]

    def out(coef, z, t, cm, with_w):
        a, bb, c, d = coef
        return a * z + bb * (t / 1000)[col] + d * cm[col] + (c * w_ if with_w else 0.0)

    if kind == "ddpm":
        k = 1000 // num_points
        t_start = k * (n + 1) - 1  # tau_n = k (n + 1) - 1
        t_end = np.maximum(t_start - k, 0)
        al = lambda t: np.sqrt(abar[t])[col]  # noqa: E731
        sg = lambda t: np.sqrt(1 - abar[t])[col]  # noqa: E731

        def x0_eps(e, z, t):  # epsilon prediction: x0 = (z - sigma eps) / alpha
            return (z - sg(t) * e) / al(t), e

        def noised(x0, e, t):  # z_t = alpha x0 + sigma eps (and the DDIM step, eta = 0)
            return al(t) * x0 + sg(t) * e

        def scalings(t):  # c_skip = s^2 / ((10 t)^2 + s^2), c_out = 10 t / sqrt((10 t)^2 + s^2), s = 0.5
            return (0.25 / ((10.0 * t) ** 2 + 0.25))[col], (10.0 * t / np.sqrt((10.0 * t) ** 2 + 0.25))[col]
    else:  # flow matching: x_s = (1 - s) x0 + s eps, v = eps - x0, t = 1000 s; f = x0 (c_skip 0, c_out 1)
        t_start = 1000.0 * (n + 1) / num_points
        t_end = 1000.0 * n / num_points
        s_ = lambda t: (t / 1000)[col]  # noqa: E731

        def x0_eps(v, z, t):
            return z - s_(t) * v, z + (1 - s_(t)) * v

        def noised(x0, e, t):
            return (1 - s_(t)) * x0 + s_(t) * e

        def scalings(t):
            return 0.0, 1.0

    z_t = noised(z0, eps, t_start)
    x0_s, _ = x0_eps(out(_coefs(student), z_t, t_start, cond_m, True), z_t, t_start)
    cs, co = scalings(t_start)
    f_theta = cs * z_t + co * x0_s
    x0_c, e_c = x0_eps(out(_coefs(teacher), z_t, t_start, cond_m, False), z_t, t_start)
    x0_u, e_u = x0_eps(out(_coefs(teacher), z_t, t_start, np.full(b, uncond_m), False), z_t, t_start)
    # teacher target with guidance w: x_c + w (x_c - x_u), for x0 and eps; one solver step to t_n
    z_prev = noised(x0_c + w_ * (x0_c - x0_u), e_c + w_ * (e_c - e_u), t_end)
    x0_tgt, _ = x0_eps(out(_coefs(student), z_prev, t_end, cond_m, True), z_prev, t_end)
    cs, co = scalings(t_end)
    f_target = cs * z_prev + co * x0_tgt
    d = f_theta - f_target
    return float(np.mean(np.sqrt(d**2 + huber_c**2) - huber_c)), float(w.mean()), float(t_start.mean())


class FlowStub:
    """A flow-matching schedule: x_s = (1 - s) x0 + s eps, the network predicts v = eps - x0, t = 1000 s."""

    def _s(self, t, like):
        return (t.float() / 1000).view((-1,) + (1,) * (like.dim() - 1)).to(like.dtype)

    def to_x0_eps(self, v, x, t):
        s = self._s(t, x)
        return x - s * v, x + (1 - s) * v

    def add_noise(self, x0, eps, t):
        s = self._s(t, x0)
        return (1 - s) * x0 + s * eps

    def consistency_scalings(self, t, sigma_data=0.5, timestep_scaling=10.0):
        return 0.0, 1.0  # x0 = x - s v already meets f(x, 0) = x


class EulerStub:
    """Euler over sigma_i = (i + 1) / N, the DDIMSolver interface, continuous (float) timesteps."""

    def __init__(self, num_points):
        self.num_points = num_points

    def sample_indices(self, batch, generator=None):
        return torch.randint(0, self.num_points, (batch,), generator=generator)

    def timestep_pair(self, index):
        return 1000.0 * (index + 1) / self.num_points, 1000.0 * index / self.num_points

    def step(self, x0, eps, index):
        s = (index.float() / self.num_points).view((-1,) + (1,) * (x0.dim() - 1))
        return (1 - s) * x0 + s * eps  # x + (s_end - s) v with v = eps - x0


@pytest.mark.parametrize("kind", ["ddpm", "flow-stub", "flow"])
def test_distill_step_matches_algorithm_1_by_hand(kind):
    """distill_step on a DDPM schedule + DDIMSolver, and unchanged on flow matching (a stub, and the
    library's FlowSchedule + EulerSolver at shift 1), against Algorithm 1 computed by hand."""
    from t2v_turbo.flow import EulerSolver, FlowSchedule

    if kind == "ddpm":
        schedule = NoiseSchedule.make()
        solver = DDIMSolver(schedule, 50)
    elif kind == "flow-stub":
        schedule, solver = FlowStub(), EulerStub(20)
    else:
        schedule = FlowSchedule(shift=1.0)
        solver = EulerSolver(schedule, 20)
    student = LinearDenoiser(schedule, 0.3, 0.8, 0.02, 0.5)
    teacher = LinearDenoiser(schedule, -0.2, 0.4, 0.0, 1.5, student=False)
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(4, 2, 3, 2, 2, generator=g)
    cond, uncond = torch.randn(4, 5, 6, generator=g), torch.randn(1, 5, 6, generator=g)
    cfg = DistillConfig(w_min=2.0, w_max=8.0)
    out = distill_step(
        student,
        teacher,
        solver,
        z0,
        ["p"] * 4,
        cond,
        uncond,
        (),
        cfg,
        generator=torch.Generator().manual_seed(3),
    )
    # abar is an input here (the schedule itself is parity-tested against diffusers in test_schedule.py)
    abar = NoiseSchedule.make().alphas_cumprod.double().numpy()
    loss, w, t = _hand_algorithm_1(
        kind.removesuffix("-stub"),
        student,
        teacher,
        abar,
        z0,
        cond,
        uncond,
        3,
        solver.num_points,
        (2.0, 8.0),
        0.001,
    )
    assert float(out["loss_cd"]) == pytest.approx(loss, rel=1e-6)
    assert float(out["loss"].detach()) == pytest.approx(loss, rel=1e-6)  # no rewards: L = L_CD
    assert float(out["w"]) == pytest.approx(w, rel=1e-6) and float(out["t"]) == pytest.approx(t, rel=1e-6)
    out["loss"].backward()
    assert student.coef.grad is not None and teacher.coef.grad is None  # the target is stop-gradient


def test_distill_step_golden_loss_cd_on_the_seeded_tiny_teacher(tiny_teacher):
    student = tiny_teacher.make_student(256, init="normal", seed=0).eval()  # eval: no dropout draws
    g = torch.Generator().manual_seed(0)
    z0 = tiny_teacher.encode_video(torch.rand(2, 3, 4, 16, 16, generator=g) * 2 - 1, g)
    prompts = ["a red digit 1 moving left", "a blue digit 2 moving up"]
    cond, uncond = tiny_teacher.encode_prompt(prompts), tiny_teacher.encode_prompt([""])
    solver = DDIMSolver(tiny_teacher.schedule)
    golden = {"huber": GOLDEN_HUBER, "l2": GOLDEN_L2}
    for loss_type, value in golden.items():
        out = distill_step(
            student, tiny_teacher, solver, z0, prompts, cond, uncond, (), DistillConfig(loss_type=loss_type),
            generator=torch.Generator().manual_seed(5),
        )  # fmt: skip
        assert float(out["loss_cd"]) == pytest.approx(value, rel=1e-5), loss_type
    assert (float(out["w"]), float(out["t"])) == pytest.approx(GOLDEN_W_T, rel=1e-6)


def test_reward_only_ranks_draw_the_same_and_skip_the_teacher(tiny_teacher, parts):
    student, z0, prompts, cond, uncond = parts
    student.eval()
    solver = DDIMSolver(tiny_teacher.schedule)
    terms = [RewardTerm("px", PixelReward().requires_grad_(False), 1.0)]
    full = distill_step(
        student,
        tiny_teacher,
        solver,
        z0,
        prompts,
        cond,
        uncond,
        terms,
        generator=torch.Generator().manual_seed(4),
    )
    only = distill_step(
        student,
        None,
        solver,
        z0,
        prompts,
        cond,
        None,
        terms,
        generator=torch.Generator().manual_seed(4),
        compute_cd=False,
    )
    assert "loss_cd" not in only and set(full) - set(only) == {"loss_cd"}
    for k in ("reward/px", "w", "t"):  # the same draws, so the same student prediction and reward frames
        assert torch.equal(full[k], only[k])
    assert torch.equal(only["loss"], -only["reward/px"])
    with pytest.raises(ValueError, match="teacher"):
        distill_step(student, None, solver, z0, prompts, cond, uncond, terms)
