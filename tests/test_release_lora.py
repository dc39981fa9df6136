"""Released T2V-Turbo LoRA lists (`unet_lora.pt`): order, strict matching, peft load == merge, MS layouts."""

import copy
from pathlib import Path

import pytest
import torch

from t2v_turbo.errors import CheckpointError
from t2v_turbo.models.lora import merge_lora
from t2v_turbo.models.release_lora import (
    init_guidance_projection,
    load_lora_list,
    load_release_lora,
    lora_list_from_peft,
    match_lora_list,
    merge_lora_list,
    read_lora_list,
    release_lora_shapes,
    release_lora_targets,
)

REF = Path(__file__).resolve().parent / "fixtures" / "vc2_layouts"  # vendored reference data


MS_FULL = dict(
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    cross_attention_dim=1024,
    attention_head_dim=64,
    in_channels=4,
    out_channels=4,
    sample_size=32,
    norm_num_groups=32,
    time_cond_proj_dim=256,
)


def _random_list(unet, rank, layout="full", seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for name in release_lora_targets(unet, layout):
        up, down = release_lora_shapes(unet.get_submodule(name), rank)
        out += [torch.randn(up, generator=g) * 0.05, torch.randn(down, generator=g) * 0.05]
    return out


def _perturb(module, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return module.eval()


@pytest.fixture(scope="module")
def vc2_student():
    from t2v_turbo.models.vc2_unet import VC2UNet
    from t2v_turbo.models.videocrafter2 import VC2Config

    cfg = VC2Config.tiny().unet
    cfg.time_cond_proj_dim = 256
    torch.manual_seed(0)
    return _perturb(VC2UNet(cfg))


def _vc2_out(unet):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1, 4, 4, 8, 8, generator=g)
    ctx = torch.randn(1, 77, 32, generator=g)
    w = torch.randn(1, 256, generator=g)
    with torch.no_grad():
        return unet(z, torch.tensor([500]), ctx, fps=16, timestep_cond=w)


def test_vc2_list_peft_load_equals_merge_and_round_trips(vc2_student):
    tensors = _random_list(vc2_student, rank=8)
    pairs = match_lora_list(vc2_student, tensors)
    ranks = {p.name: p.rank for p in pairs}
    assert ranks["input_blocks.0.0"] == 4 and ranks["out.2"] == 4 and ranks["time_cond_proj"] == 8
    base = _vc2_out(vc2_student)
    peft_unet = load_lora_list(copy.deepcopy(vc2_student), tensors)
    merged = merge_lora_list(copy.deepcopy(vc2_student), tensors)
    a, b = _vc2_out(peft_unet), _vc2_out(merged)
    assert not torch.allclose(a, base, atol=1e-3)  # the LoRA changes the output
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # the list read back from the peft layers is the list loaded, tensor for tensor
    back = lora_list_from_peft(peft_unet)
    assert len(back) == len(tensors) and all(torch.equal(x, y) for x, y in zip(back, tensors))
    # peft's own merge (models.lora.merge_lora) gives the same weights as the authors' collapse
    folded = merge_lora(peft_unet)
    for k, v in merged.state_dict().items():
        torch.testing.assert_close(folded.state_dict()[k], v, rtol=1e-5, atol=1e-6)
    assert set(folded.state_dict()) == set(vc2_student.state_dict())


def test_vc2_list_mismatches_are_named(vc2_student, tmp_path):
    tensors = _random_list(vc2_student, rank=8)
    with pytest.raises(CheckpointError, match=r"missing LoRA for layers: \['out.2'\]"):
        match_lora_list(vc2_student, tensors[:-2])
    with pytest.raises(CheckpointError, match="odd length"):
        match_lora_list(vc2_student, tensors[:-1])
    swapped = list(tensors)
    swapped[0], swapped[1] = swapped[1], swapped[0]  # down before up: the wrong order
    with pytest.raises(CheckpointError, match=r"shape mismatches: \['time_embed.0 <- tensors 0,1'\]"):
        match_lora_list(vc2_student, swapped)
    extra = tensors + [torch.zeros(3, 8), torch.zeros(8, 5)]
    with pytest.raises(CheckpointError, match=r"unexpected: \['tensors \d+,\d+ \(up \[3, 8\], down \[8, 5\]\)'\]"):
        match_lora_list(vc2_student, extra)
    torch.save(tensors, tmp_path / "unet_lora.pt")
    assert all(torch.equal(x, y) for x, y in zip(read_lora_list(tmp_path / "unet_lora.pt"), tensors))
    torch.save({"a": tensors[0]}, tmp_path / "not_a_list.pt")
    with pytest.raises(CheckpointError, match=r"list of tensors .*, got a dict: .*not_a_list.pt$"):
        read_lora_list(tmp_path / "not_a_list.pt")


def test_guidance_projection_is_seeded_with_warning(vc2_student):
    a, b, c = (copy.deepcopy(vc2_student) for _ in range(3))
    with pytest.warns(UserWarning, match=r"time_cond_proj.weight .*seed 3.*merged"):
        assert init_guidance_projection(a, seed=3) == "time_cond_proj"
    init_guidance_projection(b, seed=3, warn=False)
    init_guidance_projection(c, seed=4, warn=False)
    assert torch.equal(a.time_cond_proj.weight, b.time_cond_proj.weight)
    assert not torch.equal(a.time_cond_proj.weight, c.time_cond_proj.weight)
    bound = 1 / 256**0.5  # nn.Linear default init: U(-1/sqrt(in), 1/sqrt(in))
    assert a.time_cond_proj.weight.abs().max() <= bound and a.time_cond_proj.weight.abs().max() > 0.9 * bound
    with pytest.raises(ValueError, match="not a student"):
        init_guidance_projection(torch.nn.Linear(2, 2))


@pytest.fixture(scope="module")
def ms_student():
    from t2v_turbo.models.tiny import tiny_unet3d

    return _perturb(tiny_unet3d(seed=0, time_cond_proj_dim=256))


def _ms_out(unet):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1, 4, 2, 8, 8, generator=g)
    ctx = torch.randn(1, 6, 32, generator=g)
    w = torch.randn(1, 256, generator=g)
    with torch.no_grad():
        return unet(z, torch.tensor([500]), encoder_hidden_states=ctx, timestep_cond=w).sample


@pytest.mark.parametrize("layout", ["full", "ms-legacy"])
def test_ms_lists_load_and_merge(ms_student, layout, tmp_path):
    tensors = _random_list(ms_student, rank=32 if layout == "full" else 4, layout=layout)
    n_full, n_legacy = (len(release_lora_targets(ms_student, x)) for x in ("full", "ms-legacy"))
    assert n_legacy < n_full and len(tensors) == 2 * (n_full if layout == "full" else n_legacy)
    names = [p.name for p in match_lora_list(ms_student, tensors)]  # layout detected from the length
    assert names == release_lora_targets(ms_student, layout)
    assert names[:2] == [
        "conv_in",
        "time_embedding.linear_1" if layout == "full" else "time_embedding.cond_proj",
    ]
    a = _ms_out(load_lora_list(copy.deepcopy(ms_student), tensors))
    merged = merge_lora_list(copy.deepcopy(ms_student), tensors)
    torch.testing.assert_close(a, _ms_out(merged), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(a, _ms_out(ms_student), atol=1e-4)
    # from a file, with the guidance projection seeded explicitly (and a warning)
    torch.save(tensors, tmp_path / "unet_lora.pt")
    with pytest.warns(UserWarning, match="time_embedding.cond_proj"):
        loaded = load_release_lora(copy.deepcopy(ms_student), tmp_path / "unet_lora.pt", seed=0)
    expect = copy.deepcopy(ms_student)
    init_guidance_projection(expect, 0, warn=False)
    merge_lora_list(expect, tensors)
    for k, v in expect.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


@pytest.mark.skipif(not REF.exists(), reason=f"reference layouts not found at {REF}")
def test_ms_full_size_orders_match_reference():
    from diffusers import UNet3DConditionModel

    with torch.device("meta"):
        unet = UNet3DConditionModel(**MS_FULL)
    for tsv, layout, n in (
        ("t2v_turbo_ms_lora_order.tsv", "full", 1150),
        ("t2v_turbo_ms_lora_order_alt_diffusers_le0.26_no_peft.tsv", "ms-legacy", 250),
    ):
        rows = [line.split("\t") for line in (REF / tsv).read_text().splitlines()[1:]]
        names = release_lora_targets(unet, layout)
        assert len(rows) == n and names == [r[1] for r in rows[::2]]
        shapes = []
        for name in names:
            up, down = release_lora_shapes(unet.get_submodule(name), 32)
            shapes += [list(up), list(down)]
        if layout == "full":
            assert shapes == [[int(x) for x in r[5].strip("[]").split(",")] for r in rows]
            assert sum(torch.Size(s).numel() for s in shapes) == 58_497_696
        else:
            assert sum(torch.Size(s).numel() for s in shapes) == 12_004_000
