"""Full-size VideoCrafter2 / T2V-Turbo layouts, built on the meta device, against the reference .tsv files."""

from pathlib import Path

import pytest
import torch
from torch import nn

from t2v_turbo.models.release_lora import release_lora_shapes, release_lora_targets
from t2v_turbo.models.vc2_checkpoint import SCHEDULE_BUFFERS, ldm_schedule_buffers
from t2v_turbo.models.videocrafter2 import VC2Config, VideoCrafter2

REF = Path(__file__).resolve().parent / "fixtures" / "vc2_layouts"  # vendored reference data


pytestmark = pytest.mark.skipif(
    not REF.exists(), reason=f"reference layouts not found at {REF} (shared/ must sit beside the checkout)"
)


def _tsv(name: str) -> list[list[str]]:
    return [line.split("\t") for line in (REF / name).read_text().splitlines()[1:]]


def _keys(name: str, strip: str = "") -> list[tuple[str, list[int]]]:
    return [
        (r[0].removeprefix(strip), [int(x) for x in r[1].strip("[]").split(",") if x]) for r in _tsv(name)
    ]


def _layout(sd: dict) -> list[tuple[str, list[int]]]:
    return [(k, list(v.shape)) for k, v in sd.items()]


@pytest.fixture(scope="module")
def full():
    return VideoCrafter2(VC2Config.official(), device="meta")


@pytest.fixture(scope="module")
def official(full):
    return full.official_state_dict()


def test_unet_keys_shapes_and_order(full):
    # exact names, shapes and state_dict order of model.diffusion_model.*
    assert _layout(full.unet.state_dict()) == _keys("vc2_unet_keys.tsv", "model.diffusion_model.")
    assert sum(p.numel() for p in full.unet.parameters()) == 1_413_284_420
    assert not list(full.unet.buffers())


def test_vae_and_text_keys(full, official):
    vae = {k: v for k, v in official.items() if k.startswith("first_stage_model.")}
    assert sorted(_layout(vae)) == sorted(_keys("vc2_vae_keys.tsv"))
    assert sum(p.numel() for p in full.vae.parameters()) == 83_653_863
    text = {k: v for k, v in official.items() if k.startswith("cond_stage_model.")}
    assert sorted(_layout(text)) == sorted(_keys("vc2_text_keys.tsv"))
    n_text = sum(p.numel() for p in full.text_encoder.parameters()) + full.text_logit_scale.numel()
    assert n_text == 354_032_641
    deleted = {r[0] for r in _tsv("openclip_vit_h14_visual_keys_deleted.tsv")}
    assert len(deleted) == 392 and not deleted & set(official)


def test_whole_checkpoint_key_set(official):
    buffers = [(k, list(v.shape)) for k, v in official.items() if "." not in k]
    assert buffers == _keys("vc2_ckpt_toplevel_buffers.tsv") and [k for k, _ in buffers] == list(
        SCHEDULE_BUFFERS
    )
    assert len(official) == 2039
    expected = _keys("vc2_ckpt_toplevel_buffers.tsv") + _keys("vc2_unet_keys.tsv")
    expected += _keys("vc2_vae_keys.tsv") + _keys("vc2_text_keys.tsv")
    assert sorted(_layout(official)) == sorted(expected)
    assert all(v.dtype == torch.float32 for v in ldm_schedule_buffers().values())


@pytest.mark.parametrize(
    "tsv, motion, n_params",
    [("t2v_turbo_v1_unet_keys.tsv", None, 1_413_366_340), ("t2v_turbo_v2_unet_keys.tsv", 256, 1_413_653_060)],
)
def test_student_layouts(full, tsv, motion, n_params):
    student = full.make_student(256, motion_cond_dim=motion)
    assert _layout(student.unet.state_dict()) == _keys(tsv)
    assert sum(p.numel() for p in student.unet.parameters()) == n_params
    # the teacher key of every student key (vc2_ckpt_key column)
    mapping = {r[0]: r[4] for r in _tsv(tsv)}
    for k in full.unet.state_dict():
        assert mapping[k] == "model.diffusion_model." + k
    assert {k for k, v in mapping.items() if v == "-"} == set(student.unet.state_dict()) - set(
        full.unet.state_dict()
    )


def test_vc2_lora_order_matches_reference(full):
    student = full.make_student(256)
    rows = _tsv("t2v_turbo_vc2_lora_order.tsv")
    names = release_lora_targets(student.unet)
    assert names == [r[1] for r in rows[::2]] and len(names) == 575
    assert [r[4] for r in rows] == ["up", "down"] * 575
    shapes, types = [], []
    for n in names:
        m = student.unet.get_submodule(n)
        up, down = release_lora_shapes(m, 64)
        shapes += [list(up), list(down)]
        types.append(type(m).__name__)
    assert shapes == [[int(x) for x in r[5].strip("[]").split(",")] for r in rows]
    assert types == [r[2] for r in rows[::2]]
    assert sum(torch.Size(s).numel() for s in shapes) == 117_142_176
    assert isinstance(student.unet.init_attn[0].proj_in, nn.Conv1d) and "init_attn.0.proj_in" not in names


def test_lora_injected_layout_size(full):
    """The authors' injected training state (2635 keys) = student keys + one (up, down) pair per layer."""
    student = full.make_student(256)
    assert len(_tsv("t2v_turbo_v1_unet_keys_lora_injected.tsv")) == len(student.unet.state_dict()) + 2 * len(
        release_lora_targets(student.unet)
    )
