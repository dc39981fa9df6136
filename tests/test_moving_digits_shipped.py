"""The shipped MovingDigits students and teacher: they load, sample, and a seeded sample is reproducible."""

import json

import pytest
import torch

from t2v_turbo.cli import main
from t2v_turbo.pipeline import generate, load_backbone
from t2v_turbo.video_io import read_video
from t2v_turbo.worlds.moving_digits.backbone import MovingDigitsBackbone
from t2v_turbo.worlds.moving_digits.models import ASSETS_DIR

PROMPTS = ["a red digit 7 moving left", "a blue digit 3 moving up"]


@pytest.fixture(scope="module")
def turbo():
    return load_backbone("turbo")


def test_shipped_models_load_with_their_roles():
    for name in ("turbo", "vcm"):
        assert (ASSETS_DIR / name / "unet").exists()
    teacher, vcm = load_backbone("teacher"), load_backbone("vcm")
    assert teacher.w_embedding_dim is None and vcm.w_embedding_dim == 256
    assert type(vcm) is type(teacher) is MovingDigitsBackbone and teacher.position_channels
    assert vcm.family == "moving-digits" and vcm.resolution == (8, 32, 32) and vcm.native_fps == 8
    # the students share the teacher's VAE and text encoder but not its UNet
    assert teacher.scaling_factor == vcm.scaling_factor
    assert sum(p.numel() for p in vcm.unet.parameters()) > sum(p.numel() for p in teacher.unet.parameters())


def test_seeded_generation_is_exactly_reproducible(turbo):
    a = generate(turbo, PROMPTS, num_steps=4, w=7.5, seed=0)
    b = generate(turbo, PROMPTS, num_steps=4, w=7.5, seed=0)
    assert torch.equal(a.videos, b.videos) and a.unet_evals == 4
    assert a.videos.shape == (2, 3, 8, 32, 32)
    # golden value of the shipped weights + sampler (measured when the weights were shipped)
    assert float(a.videos.mean()) == pytest.approx(-0.96144, abs=2e-3)
    c = generate(turbo, PROMPTS, num_steps=4, w=7.5, seed=1)
    assert not torch.equal(a.videos, c.videos)


def test_shipped_folders_reload_by_path_through_the_world_family(turbo):
    by_path = load_backbone(ASSETS_DIR / "turbo")
    assert type(by_path) is MovingDigitsBackbone and by_path.family == "moving-digits"
    z = torch.randn(turbo.latent_shape(1), generator=torch.Generator().manual_seed(0))
    cond, w = turbo.encode_prompt(PROMPTS[:1]), turbo.w_embedding(7.5, 1)
    with torch.no_grad():
        assert torch.equal(by_path.model_output(z, 700, cond, w), turbo.model_output(z, 700, cond, w))


def test_readme_first_command_writes_a_playable_video(tmp_path, capsys):
    assert main(["generate", "a red digit 7 moving left", "--out-dir", str(tmp_path)]) == 0
    frames, fps = read_video(tmp_path / "a red digit 7 moving left-0.mp4")
    # world videos are upscaled 8x for viewing by default (nearest neighbour: each pixel a block)
    assert frames.shape == (8, 256, 256, 3) and fps == pytest.approx(8)
    assert "4 steps, consistency" in capsys.readouterr().out
    meta = json.loads((tmp_path / "generation.json").read_text())
    assert meta["prompts"] == ["a red digit 7 moving left"] and meta["upscale"] == 8
    assert (meta["w"], meta["cfg_scale"], meta["timesteps"]) == (7.5, None, [999, 759, 519, 279])
    raw = tmp_path / "raw"
    assert main(["generate", "a red digit 7 moving left", "--out-dir", str(raw), "--upscale", "1"]) == 0
    small, _ = read_video(raw / "a red digit 7 moving left-0.mp4")
    assert small.shape == (8, 32, 32, 3)


def test_shipped_fm_family_loads_and_samples_reproducibly():
    """The flow-matching family (issue 19): Wan transformers with position channels on md-video's text
    tower; the students sample with the FM consistency sampler, the teacher with Euler + CFG; golden
    values of the shipped weights (measured when they were shipped)."""
    from t2v_turbo.worlds.moving_digits.fm_backbone import FM_TEXT_ENCODER, MovingDigitsWanBackbone

    golden = {"fm-turbo": (4, -0.96838), "fm-vcm": (4, -0.98835), "fm-teacher": (2, -0.6757)}
    for name, (steps, mean) in golden.items():
        m = load_backbone(name)
        assert type(m) is MovingDigitsWanBackbone and m.position_channels and m.text_encoder_dir == FM_TEXT_ENCODER
        assert m.w_embedding_dim == (None if name == "fm-teacher" else 256)
        a = generate(m, PROMPTS, num_steps=steps, w=7.5, seed=0)
        b = generate(m, PROMPTS, num_steps=steps, w=7.5, seed=0)
        assert torch.equal(a.videos, b.videos) and a.videos.shape == (2, 3, 8, 32, 32)
        assert a.unet_evals == (2 * steps if name == "fm-teacher" else steps)  # CFG: two evaluations a step
        assert float(a.videos.mean()) == pytest.approx(mean, abs=2e-3)
    # both families condition on md-video's tower (its projection dropped): fm_text_encoder/ and the
    # world's text_encoder/ hold the same weights
    for name in ("fm-turbo", "turbo"):
        a = load_backbone(name).text_encoder.state_dict()
        b = _md_video_tower().state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _md_video_tower():
    from t2v_turbo.worlds.moving_digits.models import load_text_encoder

    return load_text_encoder(ASSETS_DIR / "reward_video")
