import pytest
import torch

from t2v_turbo.models.base import guidance_to_w
from t2v_turbo.models.lora import add_lora, lora_target_names, merge_lora
from t2v_turbo.models.diffusers_video import DiffusersVideoBackbone, frame_position_tokens, video_position_channels


def _inputs(model, b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(model.latent_shape(b), generator=g)
    t = torch.tensor([999, 250][:b])
    cond = model.encode_prompt(["a red digit 7 moving left", "a cyan digit 0 moving up"][:b])
    return z, t, cond


def test_student_zero_init_equals_teacher(tiny_teacher):
    student = tiny_teacher.make_student(256, init="zero")
    z, t, cond = _inputs(tiny_teacher)
    with torch.no_grad():
        a = tiny_teacher.model_output(z, t, cond)
        b = student.model_output(z, t, cond, student.w_embedding(7.5, 2))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert student.w_embedding_dim == 256 and tiny_teacher.w_embedding_dim is None
    assert student.unet.time_embedding.cond_proj.weight.shape[1] == 256


def test_student_normal_init_is_seeded(tiny_teacher):
    s1 = tiny_teacher.make_student(256, init="normal", seed=3)
    s2 = tiny_teacher.make_student(256, init="normal", seed=3)
    s3 = tiny_teacher.make_student(256, init="normal", seed=4)
    w1, w2, w3 = (s.unet.time_embedding.cond_proj.weight for s in (s1, s2, s3))
    assert torch.equal(w1, w2) and not torch.equal(w1, w3) and w1.abs().sum() > 0
    # teacher weights are copied exactly
    student_params = dict(s1.unet.named_parameters())
    assert set(student_params) - set(dict(tiny_teacher.unet.named_parameters())) == {
        "time_embedding.cond_proj.weight"
    }
    for n, p in tiny_teacher.unet.named_parameters():
        assert torch.equal(p, student_params[n])
    with pytest.raises(ValueError, match="valid"):
        tiny_teacher.make_student(init="xavier")


def test_teacher_rejects_w_embedding(tiny_teacher):
    z, t, cond = _inputs(tiny_teacher)
    with pytest.raises(ValueError, match="teacher"):
        tiny_teacher.model_output(z, t, cond, torch.zeros(2, 256))


def test_gradient_checkpointing_same_outputs_and_grads(tiny_teacher):
    student = tiny_teacher.make_student(256, init="normal")
    student.eval()  # the temporal convs have dropout 0.1; compare deterministic passes
    z, t, cond = _inputs(student)
    w = student.w_embedding(5.0, 2)

    def run():
        student.unet.zero_grad(set_to_none=True)
        out = student.model_output(z, t, cond, w)
        out.square().mean().backward()
        return out.detach(), [p.grad.clone() for p in student.unet.parameters()]

    o1, g1 = run()
    student.enable_gradient_checkpointing(True)
    o2, g2 = run()
    student.enable_gradient_checkpointing(False)
    torch.testing.assert_close(o1, o2, rtol=0, atol=0)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_lora_targets_by_type_and_merge(tiny_teacher):
    student = tiny_teacher.make_student(256, init="normal")
    names = lora_target_names(student.unet)
    kinds = {type(student.unet.get_submodule(n)).__name__ for n in names}
    assert kinds == {"Linear", "Conv2d", "Conv3d"}
    assert any(n.endswith("conv1") for n in names) and "time_embedding.cond_proj" in names
    add_lora(student.unet, rank=4, dropout=0.1)
    n_lora = sum(p.numel() for p in student.trainable_parameters())
    assert n_lora > 0 and all("lora_" in n for n, p in student.unet.named_parameters() if p.requires_grad)
    # make LoRA non-trivial, then merged output == LoRA output
    with torch.no_grad():
        for n, p in student.unet.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    student.eval()
    z, t, cond = _inputs(student)
    w = student.w_embedding(7.5, 2)
    with torch.no_grad():
        before = student.model_output(z, t, cond, w)
        merge_lora(student.unet)
        after = student.model_output(z, t, cond, w)
    torch.testing.assert_close(before, after, rtol=1e-4, atol=1e-5)
    assert not any("lora_" in n for n, _ in student.unet.named_parameters())


def test_decode_subset_and_checkpointed_grad(tiny_teacher):
    z = torch.randn(tiny_teacher.latent_shape(1), requires_grad=True)
    full = tiny_teacher.decode_latents(z)
    part = tiny_teacher.decode_latents(z, frames=[1, 3])
    torch.testing.assert_close(part, full[:, :, [1, 3]], rtol=1e-5, atol=1e-6)
    (g1,) = torch.autograd.grad(tiny_teacher.decode_latents(z, [0, 2]).sum(), z)
    (g2,) = torch.autograd.grad(tiny_teacher.decode_latents(z, [0, 2], checkpoint=True).sum(), z)
    torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-6)
    assert g1[:, :, [1, 3]].abs().sum() == 0 and g1[:, :, [0, 2]].abs().sum() > 0


def test_encode_video_scaled_posterior(tiny_teacher):
    video = torch.rand(1, 3, 4, 16, 16) * 2 - 1
    z1 = tiny_teacher.encode_video(video, torch.Generator().manual_seed(0))
    z2 = tiny_teacher.encode_video(video, torch.Generator().manual_seed(0))
    assert torch.equal(z1, z2) and z1.shape == tiny_teacher.latent_shape(1)
    mean = tiny_teacher.vae.encode(video[:, :, 0]).latent_dist.mean * tiny_teacher.scaling_factor
    assert (z1[:, :, 0] - mean).abs().max() < 3 * tiny_teacher.scaling_factor * 10


def test_save_load_round_trip(tmp_path, tiny_teacher):
    student = tiny_teacher.make_student(256, init="normal")
    student.add_lora(rank=2)
    student.save_pretrained(tmp_path / "m")
    loaded = DiffusersVideoBackbone.from_pretrained(tmp_path / "m")
    assert loaded.w_embedding_dim == 256 and loaded.guidance_convention == "t2v-turbo"
    z, t, cond = _inputs(student)
    with torch.no_grad():
        merge_lora(student.unet)
        a = student.model_output(z, t, cond, student.w_embedding(7.5, 2))
        b = loaded.model_output(
            z,
            t,
            loaded.encode_prompt(["a red digit 7 moving left", "a cyan digit 0 moving up"]),
            loaded.w_embedding(7.5, 2),
        )
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(FileNotFoundError, match="missing"):
        DiffusersVideoBackbone.from_pretrained(tmp_path / "m" / "unet")


def test_guidance_conventions():
    assert guidance_to_w(7.5, "t2v-turbo") == 7.5
    assert guidance_to_w(7.5, "diffusers-lcm") == 6.5
    with pytest.raises(ValueError, match="valid"):
        guidance_to_w(1.0, "other")


# ------------------------------------------------------------------ frame-index tokens (UNetMotionModel)
def test_frame_position_tokens_closed_form():
    tok = frame_position_tokens(8, 64)
    assert tok.shape == (8, 64)
    torch.testing.assert_close(tok.norm(dim=1), torch.full((8,), 8.0))
    # frame 0: sin(0) = 0, cos(0) = 1 scaled to norm 8 over 32 cosines
    torch.testing.assert_close(tok[0], torch.cat([torch.zeros(32), torch.full((32,), 8 / 32**0.5)]))
    # frame 1, first pair: frequency 1 rad/frame
    assert tok[1, 0].item() == pytest.approx(torch.sin(torch.tensor(1.0)).item() * 8 / 32**0.5, abs=1e-6)
    dist = torch.cdist(tok, tok) + torch.eye(8) * 100
    assert dist.min() > 1.0  # every frame distinct
    with pytest.raises(ValueError, match="even"):
        frame_position_tokens(8, 63)


def _motion_backbone(frame_tokens: bool):
    from t2v_turbo.models.tiny import char_clip_tokenizer, tiny_text_encoder, tiny_vae
    from t2v_turbo.worlds.moving_digits.models import build_unet

    return DiffusersVideoBackbone(
        build_unet(seed=0, channels=(16, 32), cross_attention_dim=32, num_frames=4),
        tiny_vae(1),
        tiny_text_encoder(seed=2),
        char_clip_tokenizer(32),
        native_fps=8,
        resolution=(4, 16, 16),
        frame_tokens=frame_tokens,
    )


def test_frame_tokens_appended_to_each_frame_and_persisted(tmp_path):
    bb = _motion_backbone(True)
    z, t, cond = _inputs(bb)
    with torch.no_grad():
        out = bb.model_output(z, t, cond)
        # by hand: (B, L, D) -> (B*T, L + 1, D), frame-major within each video
        per_frame = cond.repeat_interleave(4, dim=0)
        tokens = frame_position_tokens(4, 32).repeat(2, 1)[:, None]
        ref = bb.unet(z, t, encoder_hidden_states=torch.cat([per_frame, tokens], 1)).sample
        plain = bb.unet(z, t, encoder_hidden_states=per_frame).sample
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    assert (out - plain).abs().max() > 1e-4  # the tokens change the prediction
    student = bb.make_student(16, init="zero")
    assert student.frame_tokens
    bb.save_pretrained(tmp_path / "m")
    loaded = DiffusersVideoBackbone.from_pretrained(tmp_path / "m")
    assert loaded.frame_tokens
    with torch.no_grad():
        torch.testing.assert_close(loaded.model_output(z, t, cond), out, rtol=0, atol=0)
    with pytest.raises(ValueError, match="UNetMotionModel"):
        from t2v_turbo.models.tiny import tiny_modelscope

        m = tiny_modelscope()
        DiffusersVideoBackbone(m.unet, m.vae, m.text_encoder, m.tokenizer, frame_tokens=True)


# ------------------------------------------------------------------ position channels
def test_video_position_channels_closed_form():
    import math

    pos = video_position_channels(8, 4, 6)
    assert pos.shape == (12, 8, 4, 6)
    # channel order: frame (sin f1, cos f1, sin f2, cos f2), row (...), column (...)
    c_t, c_y, c_x = torch.linspace(-1, 1, 8), torch.linspace(-1, 1, 4), torch.linspace(-1, 1, 6)
    torch.testing.assert_close(pos[0, :, 0, 0], torch.sin(math.pi * c_t / 2))  # -1 at frame 0, +1 at the last
    assert pos[0, 0, 0, 0].item() == pytest.approx(-1.0) and pos[0, 7, 0, 0].item() == pytest.approx(1.0)
    torch.testing.assert_close(pos[3, :, 1, 2], torch.cos(math.pi * c_t))
    torch.testing.assert_close(pos[5, 3, :, 0], torch.cos(math.pi * c_y / 2))
    torch.testing.assert_close(pos[10, 0, 0, :], torch.sin(math.pi * c_x))
    # constant along the other axes, and every (frame, row, column) gets a distinct code
    assert (pos[8:] - pos[8:, :1, :1]).abs().max() == 0
    codes = pos.flatten(1).T
    dist = torch.cdist(codes, codes) + torch.eye(codes.shape[0]) * 100
    assert dist.min() > 0.1


def test_position_channels_concatenated_and_persisted(tmp_path):
    from t2v_turbo.models.tiny import char_clip_tokenizer, tiny_text_encoder, tiny_vae
    from t2v_turbo.worlds.moving_digits.models import build_unet

    unet = build_unet(seed=0, channels=(16, 32), cross_attention_dim=32, num_frames=4, position_channels=True)
    assert unet.config.in_channels == 16 and unet.config.out_channels == 4
    bb = DiffusersVideoBackbone(
        unet, tiny_vae(1), tiny_text_encoder(seed=2), char_clip_tokenizer(32),
        native_fps=8, resolution=(4, 16, 16), position_channels=True,
    )
    assert bb.latent_channels == 4 and bb.latent_shape(2) == (2, 4, 4, 8, 8)
    z, t, cond = _inputs(bb)
    with torch.no_grad():
        out = bb.model_output(z, t, cond)
        # by hand: latents then the 12 position channels, the same for every video
        zz = torch.cat([z, video_position_channels(4, 8, 8).expand(2, -1, -1, -1, -1)], dim=1)
        ref = bb.unet(zz, t, encoder_hidden_states=cond.repeat_interleave(4, dim=0)).sample
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    assert out.shape == z.shape
    student = bb.make_student(16, init="zero")
    assert student.position_channels
    with torch.no_grad():  # a zero-init student equals its teacher, position channels included
        torch.testing.assert_close(student.model_output(z, t, cond, w_emb=torch.zeros(2, 16)), out)
    bb.save_pretrained(tmp_path / "m")
    loaded = DiffusersVideoBackbone.from_pretrained(tmp_path / "m")
    assert loaded.position_channels
    with torch.no_grad():
        torch.testing.assert_close(loaded.model_output(z, t, cond), out, rtol=0, atol=0)
    plain = build_unet(seed=0, channels=(16, 32), cross_attention_dim=32, num_frames=4)
    with pytest.raises(ValueError, match="in_channels = out_channels \\+ 12"):
        DiffusersVideoBackbone(plain, bb.vae, bb.text_encoder, bb.tokenizer, position_channels=True)
