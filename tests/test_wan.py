"""models/wan.py: the Wan2.1 adapter on tiny seeded components built in code (diffusers' own Wan test
sizes), against diffusers' WanPipeline / FlowMatchLCMScheduler and independent hand computations."""

from __future__ import annotations

import copy
import json
import shutil
import warnings

import pytest
import torch

from t2v_turbo.errors import CheckpointError, InputError
from t2v_turbo.flow import (
    EulerSolver,
    FlowSchedule,
    consistency_sigmas,
    euler_cfg_sample,
    flow_consistency_sample,
)
from t2v_turbo.models.tiny import tiny_wan
from t2v_turbo.models.wan import (
    WanBackbone,
    check_num_frames,
    export_lora_diffusers,
    latent_frame_of,
)

PROMPT = "a red ball  bounces &amp; rolls"  # cleaned like WanPipeline (whitespace, html entities)


@pytest.fixture(scope="module")
def teacher():
    return tiny_wan(seed=0).freeze().eval()


@pytest.fixture(scope="module")
def texts(teacher):
    return teacher.encode_prompt([PROMPT]), teacher.encode_prompt([""])


def pipeline(teacher, transformer=None, scheduler=None):
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    return WanPipeline(
        tokenizer=teacher.tokenizer,
        text_encoder=teacher.text_encoder,
        vae=teacher.vae,
        scheduler=scheduler or FlowMatchEulerDiscreteScheduler(shift=teacher.schedule.shift),
        transformer=transformer if transformer is not None else teacher.unet,
    )


def perturb(module: torch.nn.Module, seed: int, scale: float = 0.05, match: str = "") -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in module.named_parameters():
            if match in n:
                p.add_(scale * torch.randn(p.shape, generator=g))


# ------------------------------------------------------------------------------------ text / shapes
def test_encode_prompt_equals_wan_pipeline(teacher):
    pipe = pipeline(teacher)
    ref, neg = pipe.encode_prompt([PROMPT, "x"], negative_prompt="", max_sequence_length=16)
    ours = teacher.encode_prompt([PROMPT, "x"])
    assert ours.shape == (2, 16, 32)
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)
    torch.testing.assert_close(teacher.encode_prompt(["", ""]), neg, rtol=0, atol=0)
    # "x" is 2 tokens (x, </s>): zeros after them; the long prompt is truncated to 16 tokens
    assert ours[1, 2:].abs().max() == 0 and ours[1, 1].abs().max() > 0 and ours[0, -1].abs().max() > 0


def test_clip_lengths_and_latent_shape(teacher):
    assert teacher.latent_shape(2) == (2, 16, 3, 2, 2)
    assert teacher.latent_shape(1, 81) == (1, 16, 21, 2, 2)
    with pytest.raises(InputError, match=r"4k \+ 1 frames.*got 8: use 5 or 9") as e:
        teacher.latent_shape(1, 8)
    assert "\n" not in str(e.value)
    with pytest.warns(UserWarning, match="rounding 8 frames to 9"):
        assert check_num_frames(8, round_to_valid=True) == 9
    with pytest.warns(UserWarning):
        assert check_num_frames(83, round_to_valid=True) == 81
    assert [latent_frame_of(p) for p in (0, 1, 4, 5, 8, 80)] == [0, 1, 1, 2, 2, 20]
    with pytest.raises(InputError):
        teacher.encode_video(torch.zeros(1, 3, 8, 16, 16))


# ------------------------------------------------------------------------------------ samplers vs diffusers
def test_teacher_euler_cfg_equals_wan_pipeline(teacher, texts):
    cond, uncond = texts
    steps, g_scale = 4, 5.0
    ours = euler_cfg_sample(
        lambda z, t: teacher.model_output(z, t, cond),
        lambda z, t: teacher.model_output(z, t, uncond),
        teacher.schedule,
        teacher.latent_shape(1),
        num_steps=steps,
        cfg_scale=g_scale,
        generator=torch.Generator().manual_seed(0),
    )
    pipe = pipeline(teacher)
    kw = dict(
        prompt=PROMPT, negative_prompt="", height=16, width=16, num_frames=9, num_inference_steps=steps,
        guidance_scale=g_scale, max_sequence_length=16,
    )  # fmt: skip
    ref = pipe(**kw, generator=torch.Generator().manual_seed(0), output_type="latent").frames
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    # the decoded video too: WanPipeline's postprocessing of our latents' decode
    video = pipe(**kw, generator=torch.Generator().manual_seed(0), output_type="pt").frames  # (B, T, C, H, W)
    with torch.no_grad():
        mine = (teacher.decode_latents(ours) / 2 + 0.5).clamp(0, 1).permute(0, 2, 1, 3, 4)
    torch.testing.assert_close(mine, video, rtol=1e-5, atol=1e-5)


def test_student_consistency_sampler_equals_flow_match_lcm(teacher, texts):
    from diffusers import FlowMatchLCMScheduler

    cond, _ = texts
    student = teacher.make_student(256)
    perturb(student.unet, 1, 0.2, match="guidance_proj")
    w_emb = student.w_embedding(4.0, batch=1)

    def model_fn(z, t):
        return student.model_output(z, t, cond, w_emb)

    shape = student.latent_shape(1)
    latents = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    for rule, k in (("diffusers", 3.0), ("t2v-turbo", 1.0)):
        sigmas = consistency_sigmas(4, 3.0, rule=rule)
        with torch.no_grad():
            ours = flow_consistency_sample(
                model_fn, student.schedule, shape, sigmas, torch.Generator().manual_seed(4), latents=latents
            )
        lcm = FlowMatchLCMScheduler(shift=k)
        if rule == "diffusers":
            lcm.set_timesteps(4)
        else:
            lcm.set_timesteps(sigmas=sigmas)
        g, z = torch.Generator().manual_seed(4), latents.clone()
        with torch.no_grad():
            for t in lcm.timesteps:
                z = lcm.step(model_fn(z, t.expand(1)), t, z, generator=g, return_dict=False)[0]
        torch.testing.assert_close(ours, z, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------ student / guidance
def test_student_guidance_embedding_zero_init_and_fold(teacher, texts):
    cond, _ = texts
    z = torch.randn(teacher.latent_shape(2), generator=torch.Generator().manual_seed(5))
    t = torch.tensor([912.5, 40.0])
    student = teacher.make_student(256)  # option (a), zero-initialised
    assert student.w_embedding_dim == 256
    with torch.no_grad():
        v_t = teacher.model_output(z, t, cond.expand(2, -1, -1))
        w_emb = student.w_embedding(torch.tensor([2.0, 6.0]))
        assert torch.equal(student.model_output(z, t, cond.expand(2, -1, -1), w_emb), v_t)
        perturb(student.unet, 2, 0.3, match="guidance_proj")
        v_s = student.model_output(z, t, cond.expand(2, -1, -1), w_emb)
        assert (v_s - v_t).abs().max() > 1e-3
        # folding the guidance term at w into the time embedder's bias gives a plain transformer
        plain = student.plain_transformer(w=6.0)
        w6 = student.w_embedding(6.0, batch=2)
        want = student.model_output(z, t, cond.expand(2, -1, -1), w6)
        got = plain(z, t, cond.expand(2, -1, -1), return_dict=False)[0]
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError):
        teacher.model_output(z, t, cond.expand(2, -1, -1), w_emb)
    fixed = teacher.make_student(None, fixed_w=4.0)  # option (b)
    assert fixed.w_embedding_dim is None and fixed.w_embedding(4.0) is None and fixed.fixed_w == 4.0


def test_lora_trainable_parameters_and_gradient_checkpointing(teacher, texts):
    cond, _ = texts
    student = teacher.make_student(256)
    student.add_lora(rank=4)
    names = [n for n, p in student.unet.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n or n.endswith("guidance_proj.weight") for n in names)
    assert any(n.endswith("guidance_proj.weight") for n in names)
    assert any("patch_embedding.lora_A" in n for n in names) and any("blocks.1.ffn" in n for n in names)
    assert all(not p.requires_grad for p in teacher.parameters())
    perturb(student.unet, 3, 0.1, match="lora_B")
    z = torch.randn(student.latent_shape(1), generator=torch.Generator().manual_seed(6))
    w_emb = student.w_embedding(3.0, batch=1)

    def grads():
        student.unet.zero_grad(set_to_none=True)
        student.model_output(z, torch.tensor([700.0]), cond, w_emb).square().mean().backward()
        return {n: p.grad.clone() for n, p in student.unet.named_parameters() if p.grad is not None}

    plain = grads()
    student.enable_gradient_checkpointing(True)
    assert student.unet.gradient_checkpointing
    ckpt = grads()
    student.enable_gradient_checkpointing(False)
    assert plain.keys() == ckpt.keys() and len(plain) == len(names)
    for n in plain:
        torch.testing.assert_close(ckpt[n], plain[n], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------ VAE
def test_decode_frames_causal_span_gradients_checkpoint_and_memory(teacher):
    torch.manual_seed(0)
    z = torch.randn(1, 16, 3, 2, 2, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        full = teacher.decode_latents(z)
        assert full.shape == (1, 3, 9, 16, 16)
        for frames in ([0], [2, 3], [8, 1], [5]):
            torch.testing.assert_close(
                teacher.decode_latents(z, frames), full[:, :, frames], rtol=1e-5, atol=1e-5
            )
    with pytest.raises(InputError, match=r"\[0, 9\)"):
        teacher.decode_latents(z, [9])

    # round trip: encode -> decode of the normalised latents matches WanPipeline's de-normalisation
    video = torch.rand(1, 3, 9, 16, 16, generator=torch.Generator().manual_seed(8)) * 2 - 1
    lat = teacher.encode_video(video, generator=torch.Generator().manual_seed(9))
    mean = torch.tensor(teacher.vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(teacher.vae.config.latents_std).view(1, -1, 1, 1, 1)
    raw = teacher.vae.encode(video).latent_dist.sample(generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(lat, (raw - mean) / std, rtol=1e-5, atol=1e-5)

    def reference_grad(frames):  # plain autograd through diffusers' own decode of the whole clip
        zz = z.clone().requires_grad_(True)
        out = teacher.vae.decode(zz * std + mean, return_dict=False)[0][:, :, frames]
        out.square().mean().backward()
        return zz.grad

    def ours(frames, checkpoint=False, context_grad=False):
        saved = 0

        def pack(t):
            nonlocal saved
            saved += t.numel() * t.element_size()
            return t

        zz = z.clone().requires_grad_(True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = teacher.decode_latents(zz, frames, checkpoint=checkpoint, context_grad=context_grad)
        out.square().mean().backward()
        return zz.grad, saved

    frames = [5, 8]  # both in latent frame 2: latent frames 0, 1 are causal context
    ref = reference_grad(frames)
    exact, b_exact = ours(frames, context_grad=True)
    torch.testing.assert_close(exact, ref, rtol=1e-4, atol=1e-7)
    trunc, b_trunc = ours(frames)
    torch.testing.assert_close(trunc[:, :, 2:], ref[:, :, 2:], rtol=1e-4, atol=1e-7)
    assert trunc[:, :, :2].abs().max() == 0 and ref[:, :, :2].abs().max() > 0
    ckpt, b_ckpt = ours(frames, checkpoint=True)
    torch.testing.assert_close(ckpt, trunc, rtol=1e-5, atol=1e-8)
    full_ckpt, b_full_ckpt = ours(None, checkpoint=True, context_grad=True)
    full, b_full = ours(None)
    torch.testing.assert_close(full_ckpt, full, rtol=1e-5, atol=1e-8)
    assert b_trunc < b_exact / 2  # only latent frame 2's activations are kept
    # checkpointing keeps the per-frame inputs, the cache and the clamped output (measured 10x / 15x less
    # at this toy width; the decoder's activations grow with its width, the kept tensors do not)
    assert b_ckpt < b_trunc / 5 and b_full_ckpt < b_full / 10


# ------------------------------------------------------------------------------------ folders
@pytest.fixture(scope="module")
def saved(teacher, tmp_path_factory):
    path = tmp_path_factory.mktemp("wan") / "teacher"
    teacher.save_pretrained(path)
    return path


def test_save_load_round_trip_and_registry(teacher, texts, saved, tmp_path):
    from diffusers import WanPipeline

    from t2v_turbo.models.registry import guess_family, load_backbone

    cond, _ = texts
    assert {p.name for p in saved.iterdir()} >= {
        "model_index.json",
        "transformer",
        "vae",
        "text_encoder",
        "tokenizer",
        "scheduler",
        "t2v_turbo.json",
    }
    assert guess_family(saved) == "wan"
    back = load_backbone(saved)
    assert (
        isinstance(back, WanBackbone) and back.schedule == teacher.schedule and back.resolution == (9, 16, 16)
    )
    z = torch.randn(teacher.latent_shape(1), generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        torch.testing.assert_close(
            back.model_output(z, torch.tensor([333.0]), cond),
            teacher.model_output(z, torch.tensor([333.0]), cond),
            rtol=1e-5, atol=1e-6,
        )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = WanPipeline.from_pretrained(saved)  # diffusers reads our folder
    assert type(pipe.transformer).__name__ == "WanTransformer3DModel"

    # an option-(a) student: transformer-only folder next to the teacher, guidance projection beside it
    student = teacher.make_student(256)
    student.add_lora(rank=4)
    perturb(student.unet, 11, 0.2, match="guidance_proj")
    perturb(student.unet, 12, 0.1, match="lora_B")
    out = _copy(saved, tmp_path) / "student"  # inside the teacher's folder, beside its vae/
    student.save_pretrained(out, save_text=False)
    assert (out / "guidance_proj.safetensors").is_file() and not (out / "vae").exists()
    loaded = load_backbone(out)  # base = the teacher folder around it
    w_emb = student.w_embedding(5.0, batch=1)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.model_output(z, torch.tensor([333.0]), cond, w_emb),
            student.model_output(z, torch.tensor([333.0]), cond, w_emb),
            rtol=1e-5, atol=1e-5,
        )  # fmt: skip
    assert loaded.w_embedding_dim == 256


def _copy(saved, tmp_path):
    dst = tmp_path / "wan"
    shutil.copytree(saved, dst)
    return dst


def _edit_json(f, **changes):
    d = json.loads(f.read_text())
    d.update(changes)
    f.write_text(json.dumps(d))


def _one_line_error(path, match):
    with pytest.raises(CheckpointError, match=match) as e:
        WanBackbone.from_pretrained(path)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_strict_loading_errors_name_the_component(saved, tmp_path):
    from safetensors.torch import load_file, save_file

    p = _copy(saved, tmp_path / "a")
    shutil.rmtree(p / "vae")
    _one_line_error(p, r"component 'vae' is missing")

    p = _copy(saved, tmp_path / "b")
    _edit_json(p / "model_index.json", vae=["diffusers", "AutoencoderKL"])
    _one_line_error(p, r"component 'vae' is diffusers AutoencoderKL in model_index.json")

    p = _copy(saved, tmp_path / "c")
    idx = json.loads((p / "model_index.json").read_text())
    del idx["text_encoder"]
    (p / "model_index.json").write_text(json.dumps(idx))
    _one_line_error(p, r"component 'text_encoder' is missing from model_index.json")

    p = _copy(saved, tmp_path / "d")  # weights of another size
    _edit_json(p / "transformer" / "config.json", ffn_dim=48)
    _one_line_error(p, r"component 'transformer' does not load")

    p = _copy(saved, tmp_path / "e")  # a weight missing from the file
    f = p / "transformer" / "diffusion_pytorch_model.safetensors"
    sd = load_file(f)
    del sd["proj_out.weight"]
    save_file(sd, f)
    _one_line_error(
        p, r"component 'transformer' does not match its weights: 1 missing weights \(e.g. proj_out.weight\)"
    )

    p = _copy(saved, tmp_path / "f")  # a text encoder whose width does not fit the transformer
    _edit_json(p / "text_encoder" / "config.json", d_model=24)
    _one_line_error(p, r"component 'text_encoder'")

    p = _copy(saved, tmp_path / "g")
    _edit_json(p / "scheduler" / "scheduler_config.json", _class_name="DDIMScheduler")
    idx = json.loads((p / "model_index.json").read_text())
    idx["scheduler"] = ["diffusers", "DDIMScheduler"]
    (p / "model_index.json").write_text(json.dumps(idx))
    _one_line_error(p, r"component 'scheduler'")

    p = _copy(saved, tmp_path / "h")
    (p / "model_index.json").unlink()
    _one_line_error(p, r"model_index.json is missing")


def test_bf16_load_keeps_fp32_modules(teacher, texts, saved):
    cond, _ = texts
    b = WanBackbone.from_pretrained(saved, torch_dtype=torch.bfloat16)
    assert b.dtype == torch.bfloat16 and b.vae.dtype == torch.float32
    assert b.unet.condition_embedder.time_embedder.linear_1.weight.dtype == torch.float32
    s = b.make_student(256)
    assert s.unet.condition_embedder.time_embedder.guidance_proj.weight.dtype == torch.float32
    z = torch.randn(teacher.latent_shape(1), generator=torch.Generator().manual_seed(13))
    with torch.no_grad():
        ref = teacher.model_output(z, torch.tensor([500.0]), cond)
        got = s.model_output(z, torch.tensor([500.0]), cond, s.w_embedding(3.0, batch=1)).float()
    assert (got - ref).abs().max() / ref.abs().max() < 0.05


# ------------------------------------------------------------------------------------ export
def test_lora_export_loads_in_wan_pipeline(teacher, texts, tmp_path):
    cond, _ = texts
    student = teacher.make_student(None, fixed_w=4.0)  # option (b): the plain architecture
    student.add_lora(rank=4, alpha=8.0)  # scale 2: the alpha must travel with the file
    perturb(student.unet, 14, 0.2, match="lora_B")
    z = torch.randn(teacher.latent_shape(1), generator=torch.Generator().manual_seed(15))
    t = torch.tensor([640.0])
    with torch.no_grad():
        ours = student.model_output(z, t, cond)
        merged = student.plain_transformer()(z, t, cond, return_dict=False)[0]
        assert (ours - teacher.model_output(z, t, cond)).abs().max() > 1e-3
    torch.testing.assert_close(merged, ours, rtol=1e-5, atol=1e-5)
    f = export_lora_diffusers(student, tmp_path / "lora")
    pipe = pipeline(teacher, transformer=copy.deepcopy(teacher.unet))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe.load_lora_weights(f.parent, weight_name=f.name)
    with torch.no_grad():
        theirs = pipe.transformer(z, t, cond, return_dict=False)[0]
    torch.testing.assert_close(theirs, merged, rtol=1e-5, atol=1e-5)
    with pytest.raises(InputError, match="guidance embedding"):
        export_lora_diffusers(teacher.make_student(256), tmp_path / "nope")


# ------------------------------------------------------------------------------------ distillation step
def _old_distill_step() -> bool:
    """True while distill.py still applies LCM's boundary scalings itself (before the refactor that
    asks the schedule for its `consistency_scalings`)."""
    import inspect

    import t2v_turbo.distill as d

    return "consistency_output(" in inspect.getsource(d)


@pytest.mark.xfail(_old_distill_step(), reason="waits for consistency_fn refactor", strict=False)
def test_distill_step_equals_hand_computation(teacher, texts):
    """One T2V-Turbo step on the tiny Wan against the flow formulas written out here.

    The grid (shift 0.001, 2 points: s in {0.001, 1}, t in {1, 1000}) makes the check sensitive to
    the consistency parameterisation: at t = 1 LCM's discrete boundary scalings (c_skip = 2.5e-3)
    would move f by ~1e-3, which the test also computes and requires to be visible.
    """
    from t2v_turbo.distill import DistillConfig, distill_step
    from t2v_turbo.schedule import boundary_scalings, guidance_embedding

    _, uncond = texts
    b, k, n_points = 3, 0.001, 2
    cond = teacher.encode_prompt([PROMPT, "a cat", "waves"])
    teacher_low = copy.copy(teacher)
    sched = FlowSchedule(shift=k)
    teacher_low.schedule = sched
    student = teacher_low.make_student(256)
    perturb(student.unet, 16, 0.3, match="guidance_proj")
    perturb(student.unet, 17, 0.02, match="blocks.0.attn1")
    solver = EulerSolver(sched, num_points=n_points)
    z0 = torch.randn(teacher.latent_shape(b), generator=torch.Generator().manual_seed(18))
    cfg = DistillConfig(w_min=2.0, w_max=6.0, loss_type="huber", huber_c=0.001)
    got = distill_step(
        student, teacher_low, solver, z0, ["p"] * b, cond, uncond, rewards=[], config=cfg,
        generator=torch.Generator().manual_seed(19),
    )  # fmt: skip

    # the same draws, in Algorithm 1's order: grid index, w, noise
    g = torch.Generator().manual_seed(19)
    n = torch.randint(0, n_points, (b,), generator=g)
    w = 2.0 + 4.0 * torch.rand(b, generator=g)
    eps = torch.randn(z0.shape, generator=g)

    def shifted(u):  # s' = k u / (1 + (k - 1) u)
        return (k * u / (1 + (k - 1) * u)).float()

    s = shifted((n + 1).double() / n_points)
    s_prev = shifted(n.double() / n_points)
    w_emb = guidance_embedding(w, 256)

    def e(x):
        return x.view(-1, 1, 1, 1, 1)

    with torch.no_grad():
        x = (1 - e(s)) * z0 + e(s) * eps  # x_s = (1 - s) x0 + s eps
        x0_theta = x - e(s) * student.unet(x, 1000 * s, cond, return_dict=False, w_emb=w_emb)[0]
        v_c = teacher.unet(x, 1000 * s, cond, return_dict=False)[0]
        v_u = teacher.unet(x, 1000 * s, uncond.expand(b, -1, -1), return_dict=False)[0]
        v_cfg = v_u + e(1 + w) * (v_c - v_u)  # teacher target with w: g = 1 + w
        x_prev = x + e(s_prev - s) * v_cfg  # one Euler step
        v_tgt = student.unet(x_prev, 1000 * s_prev, cond, return_dict=False, w_emb=w_emb)[0]
        x0_target = x_prev - e(s_prev) * v_tgt

        def huber(d):
            return (torch.sqrt(d**2 + 0.001**2) - 0.001).mean()

        want = huber(x0_theta - x0_target)  # f(x_s, s) = x_s - s v
        c_skip, c_out = boundary_scalings(1000 * s)
        c_skip_p, c_out_p = boundary_scalings(1000 * s_prev)
        lcm = huber(e(c_skip) * x + e(c_out) * x0_theta - e(c_skip_p) * x_prev - e(c_out_p) * x0_target)
    assert float(got["loss_cd"]) > 1e-3
    assert abs(float(lcm / want) - 1) > 1e-4  # the draws make the parameterisation visible
    torch.testing.assert_close(got["loss_cd"], want, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(got["w"], w.mean())


def test_wan_lora_preset():
    from t2v_turbo.config import load_config

    c = load_config("wan-lora")
    assert (c.data.num_frames, c.data.height, c.data.width, c.data.fps) == (81, 480, 832, 16)
    assert check_num_frames(c.data.num_frames) == 81
    assert (c.model.w_embedding_dim, c.model.student_init, c.lora.rank) == (256, "zero", 64)
    assert (c.distill.w_min, c.distill.w_max) == (2.0, 6.0)  # teacher cfg g = 1 + w in [3, 7] (Wan: 5)
    assert [r.name for r in c.rewards] == ["hpsv2.1", "internvideo2"]


def test_training_step_gradient_flow_with_reward(teacher, texts):
    """distill_step + a reward through the checkpointed causal decode: gradients reach the LoRA and the
    guidance projection, never the teacher; an optimizer step changes the loss."""
    from t2v_turbo.distill import DistillConfig, distill_step
    from t2v_turbo.rewards.base import CallableReward, RewardTerm

    _, uncond = texts
    cond = teacher.encode_prompt(["a cat", "a dog"])
    student = teacher.make_student(256)
    student.add_lora(rank=4)
    student.enable_gradient_checkpointing(True)
    reward = CallableReward(lambda v, p: -v.square().mean(dim=(1, 2, 3, 4)), kind="video", num_frames=2)
    z0 = teacher.encode_video(
        torch.rand(2, 3, 9, 16, 16, generator=torch.Generator().manual_seed(20)) * 2 - 1
    )
    cfg = DistillConfig(w_min=2.0, w_max=6.0, decode_checkpointing=True)
    solver = EulerSolver(teacher.schedule, 50)

    def step():
        return distill_step(
            student, teacher, solver, z0, ["a cat", "a dog"], cond, uncond, rewards=[RewardTerm("px", reward, 1.0)],
            config=cfg, generator=torch.Generator().manual_seed(21),
        )  # fmt: skip

    out = step()
    out["loss"].backward()
    grads = {n: p.grad for n, p in student.unet.named_parameters() if p.grad is not None}
    assert grads and all("lora_" in n or "guidance_proj" in n for n in grads)
    assert grads["condition_embedder.time_embedder.guidance_proj.weight"].abs().max() > 0
    assert all(p.grad is None for p in teacher.parameters())
    torch.optim.SGD(student.trainable_parameters(), lr=0.5).step()
    assert float(step()["loss"].detach()) != pytest.approx(float(out["loss"].detach()), rel=1e-4)
    assert student.num_video_frames(21) == 81
