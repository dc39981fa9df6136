"""The MovingDigits backbone: position channels and frame tokens, its family, students and reloading."""

import math

import pytest
import torch

from t2v_turbo.errors import ConfigError
from t2v_turbo.models.diffusers_video import DiffusersVideoBackbone
from t2v_turbo.worlds.moving_digits.backbone import (
    MovingDigitsBackbone,
    frame_position_tokens,
    video_position_channels,
)
from t2v_turbo.worlds.moving_digits.models import build_unet


def _inputs(model, b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(model.latent_shape(b), generator=g)
    t = torch.tensor([999, 250][:b])
    cond = model.encode_prompt(["a red digit 7 moving left", "a cyan digit 0 moving up"][:b])
    return z, t, cond


def _backbone(**options):
    from t2v_turbo.models.tiny import char_clip_tokenizer, tiny_text_encoder, tiny_vae

    unet = build_unet(
        seed=0, channels=(16, 32), cross_attention_dim=32, num_frames=4,
        position_channels=options.get("position_channels", False),
    )
    return MovingDigitsBackbone(
        unet, tiny_vae(1), tiny_text_encoder(seed=2), char_clip_tokenizer(32),
        native_fps=8, resolution=(4, 16, 16), **options,
    )


# ------------------------------------------------------------------ frame-index tokens (UNetMotionModel)
def test_frame_position_tokens_closed_form():
    tok = frame_position_tokens(8, 64)
    assert tok.shape == (8, 64)
    torch.testing.assert_close(tok.norm(dim=1), torch.full((8,), 8.0))
    # frame 0: sin(0) = 0, cos(0) = 1 scaled to norm 8 over 32 cosines
    torch.testing.assert_close(tok[0], torch.cat([torch.zeros(32), torch.full((32,), 8 / 32**0.5)]))
    # frame 1, first pair: frequency 1 rad/frame
    assert tok[1, 0].item() == pytest.approx(math.sin(1.0) * 8 / 32**0.5, abs=1e-6)
    dist = torch.cdist(tok, tok) + torch.eye(8) * 100
    assert dist.min() > 1.0  # every frame distinct
    with pytest.raises(ConfigError, match="even"):
        frame_position_tokens(8, 63)


def test_frame_tokens_appended_to_each_frame_and_persisted(tmp_path):
    bb = _backbone(frame_tokens=True)
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
    assert type(student) is MovingDigitsBackbone and student.frame_tokens
    bb.save_pretrained(tmp_path / "m")
    loaded = MovingDigitsBackbone.from_pretrained(tmp_path / "m")
    assert loaded.frame_tokens
    with torch.no_grad():
        torch.testing.assert_close(loaded.model_output(z, t, cond), out, rtol=0, atol=0)
    from t2v_turbo.models.tiny import tiny_modelscope

    m = tiny_modelscope()
    with pytest.raises(ConfigError, match="UNetMotionModel"):
        MovingDigitsBackbone(m.unet, m.vae, m.text_encoder, m.tokenizer, frame_tokens=True)


# ------------------------------------------------------------------ position channels
def test_video_position_channels_closed_form():
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
    bb = _backbone(position_channels=True)
    assert bb.unet.config.in_channels == 16 and bb.unet.config.out_channels == 4
    assert bb.latent_channels == 4 and bb.latent_shape(2) == (2, 4, 4, 8, 8)
    z, t, cond = _inputs(bb)
    with torch.no_grad():
        out = bb.model_output(z, t, cond)
        # by hand: latents then the 12 position channels, the same for every video
        zz = torch.cat([z, video_position_channels(4, 8, 8).expand(2, -1, -1, -1, -1)], dim=1)
        ref = bb.unet(zz, t, encoder_hidden_states=cond.repeat_interleave(4, dim=0)).sample
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    torch.testing.assert_close(bb.unet_input(z), zz, rtol=0, atol=0)
    assert out.shape == z.shape
    student = bb.make_student(16, init="zero")
    assert type(student) is MovingDigitsBackbone and student.position_channels
    with torch.no_grad():  # a zero-init student equals its teacher, position channels included
        torch.testing.assert_close(student.model_output(z, t, cond, w_emb=torch.zeros(2, 16)), out)
    bb.save_pretrained(tmp_path / "m")
    loaded = MovingDigitsBackbone.from_pretrained(tmp_path / "m")
    assert loaded.position_channels
    with torch.no_grad():
        torch.testing.assert_close(loaded.model_output(z, t, cond), out, rtol=0, atol=0)
    plain = build_unet(seed=0, channels=(16, 32), cross_attention_dim=32, num_frames=4)
    with pytest.raises(ConfigError, match="in_channels = out_channels \\+ 12"):
        MovingDigitsBackbone(plain, bb.vae, bb.text_encoder, bb.tokenizer, position_channels=True)


# ------------------------------------------------------------------ family, students, loading by path
def test_students_record_the_family_and_reload_by_path(tmp_path):
    from t2v_turbo.models.base import read_metadata
    from t2v_turbo.models.registry import load_backbone

    bb = _backbone(position_channels=True)
    student = bb.make_student(16, init="normal", seed=1)
    assert bb.family == student.family == "moving-digits"
    student.save_pretrained(tmp_path / "s")
    meta = read_metadata(tmp_path / "s")
    assert meta["family"] == "moving-digits" and meta["position_channels"] and not meta["frame_tokens"]
    loaded = load_backbone(tmp_path / "s")
    assert type(loaded) is MovingDigitsBackbone and loaded.position_channels and loaded.w_embedding_dim == 16
    z, t, cond = _inputs(bb)
    w = student.w_embedding(3.0, 2)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model_output(z, t, cond, w), student.model_output(z, t, cond, w), rtol=0, atol=0)


def test_the_generic_adapter_records_no_world_options(tmp_path, tiny_teacher):
    from t2v_turbo.models.base import read_metadata

    assert DiffusersVideoBackbone.metadata_options == ()
    tiny_teacher.save_pretrained(tmp_path / "g")
    meta = read_metadata(tmp_path / "g")
    assert "position_channels" not in meta and "frame_tokens" not in meta and meta["family"] == "modelscope"
