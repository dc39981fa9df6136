"""VideoCrafter2 adapter at a tiny config: contract, checkpointing, students, official-format I/O."""

import copy
import json
from pathlib import Path

import pytest
import torch

from t2v_turbo.errors import CheckpointError
from t2v_turbo.models.base import Backbone
from t2v_turbo.models.vc2_checkpoint import (
    SCHEDULE_BUFFERS,
    TEXT_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
    ldm_schedule_buffers,
)
from t2v_turbo.models.vc2_unet import timestep_embedding
from t2v_turbo.models.videocrafter2 import VC2Config, VideoCrafter2

REF = Path(__file__).resolve().parent / "fixtures" / "vc2_layouts"  # vendored reference data


PROMPTS = ["a red digit 7 moving left", "a cyan digit 0 moving up"]


def _perturb(module, seed):
    """Move every parameter off its init (zero-initialised output convs included) so outputs are non-trivial."""
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


def _inputs(model, b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(model.latent_shape(b), generator=g)
    return z, torch.tensor([999, 250][:b]), model.encode_prompt(PROMPTS[:b])


def test_contract_shapes_and_constants(teacher):
    assert teacher.family == "videocrafter2" and teacher.fps == 16 and teacher.native_fps == 16
    assert teacher.schedule.prediction_type == "epsilon"
    assert issubclass(VideoCrafter2, Backbone)
    z, t, cond = _inputs(teacher)
    assert cond.shape == (2, 77, 32)
    assert teacher.latent_shape(2) == (2, 4, 4, 8, 8)
    out = teacher.model_output(z, t, cond)
    assert out.shape == z.shape and out.abs().mean() > 1e-3
    # fps is a real input: another fps gives another output
    teacher.fps = 8
    try:
        assert not torch.allclose(out, teacher.model_output(z, t, cond))
    finally:
        teacher.fps = 16
    full = VideoCrafter2(VC2Config.official(), device="meta")
    assert full.latent_shape(1) == (1, 4, 16, 40, 64) and full.resolution == (16, 320, 512)


def test_prompt_tokens_are_open_clip_style(teacher):
    ids = teacher.tokenize(["ab", "x" * 200])
    assert ids.shape == (2, 77)
    assert ids[0, :4].tolist() == [512, ord("a") - 33, ord("b") - 33 + 256, 513]  # SOT a b</w> EOT
    assert ids[0, 4:].eq(0).all()  # zero padding, as open_clip
    assert ids[1, 0] == 512 and ids[1, 76] == 513  # truncation keeps EOT last
    # penultimate layer + ln_final: equals running the text tower by hand
    tm = teacher.text_encoder.text_model
    hidden = tm(input_ids=ids, output_hidden_states=True).hidden_states[-2]
    torch.testing.assert_close(teacher.encode_prompt(["ab", "x" * 200]), tm.final_layer_norm(hidden))


def test_timestep_embedding_matches_reference():
    f = REF / "reference_numbers.json"
    if not f.exists():
        pytest.skip(f"reference data not found at {f}")
    ref = json.loads(f.read_text())["unet_timestep_embedding_t999_dim320"]
    emb = timestep_embedding(torch.tensor([999]), 320)[0]
    torch.testing.assert_close(emb[:4], torch.tensor(ref["first4"]), rtol=0, atol=2e-6)
    torch.testing.assert_close(emb[160:164], torch.tensor(ref["160_163"]), rtol=0, atol=2e-6)
    torch.testing.assert_close(emb[-4:], torch.tensor(ref["last4"]), rtol=0, atol=2e-6)
    # the DDPM buffers written into model.ckpt agree with the lvdm float64 schedule
    ac = json.loads(f.read_text())["alphas_cumprod"]
    bufs = ldm_schedule_buffers()
    torch.testing.assert_close(
        bufs["alphas_cumprod"][ac["t"]].double(),
        torch.tensor(ac["lvdm_float64"], dtype=torch.float64),
        rtol=1e-7,
        atol=0,
    )
    assert (
        bufs["scale_arr"].shape == (1400,)
        and bufs["scale_arr"][0] == 1
        and bufs["scale_arr"][-1] == pytest.approx(0.7)
    )


def test_forward_backward_checkpointing_identical(teacher):
    student = teacher.make_student(256, seed=0)
    student.unet.train()  # temporal-conv dropout active: checkpointing must replay the same RNG
    z, t, cond = _inputs(teacher)
    w = student.w_embedding(7.5, 2)
    results = []
    for ckpt in (False, True):
        student.enable_gradient_checkpointing(ckpt)
        student.unet.zero_grad(set_to_none=True)
        torch.manual_seed(123)
        out = student.model_output(z, t, cond, w)
        (out.square().mean()).backward()
        grads = {n: p.grad.clone() for n, p in student.unet.named_parameters()}
        results.append((out.detach(), grads))
    (o1, g1), (o2, g2) = results
    assert torch.equal(o1, o2)
    assert set(g1) == set(g2) and len(g1) == len(list(student.unet.parameters()))
    for n in g1:
        torch.testing.assert_close(g1[n], g2[n], rtol=1e-5, atol=1e-7)
    assert g1["time_cond_proj.weight"].abs().sum() > 0 and g1["init_attn.0.proj_in.weight"].abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_student_zero_init_equals_teacher_and_seeded(teacher):
    z, t, cond = _inputs(teacher)
    zero = teacher.make_student(256, init="zero")
    with torch.no_grad():
        torch.testing.assert_close(
            zero.model_output(z, t, cond, zero.w_embedding(7.5, 2)),
            teacher.model_output(z, t, cond),
            rtol=0,
            atol=0,
        )
    a, b, c = (teacher.make_student(256, seed=s) for s in (3, 3, 4))
    assert torch.equal(a.unet.time_cond_proj.weight, b.unet.time_cond_proj.weight)
    assert not torch.equal(a.unet.time_cond_proj.weight, c.unet.time_cond_proj.weight)
    assert a.vae is teacher.vae and a.text_encoder is teacher.text_encoder
    for n, p in teacher.unet.named_parameters():
        assert torch.equal(p, a.unet.get_parameter(n))
    assert a.w_embedding_dim == 256 and teacher.w_embedding_dim is None


def test_v2_motion_conditioning(teacher):
    s = teacher.make_student(256, seed=1, motion_cond_dim=256)
    z, t, cond = _inputs(teacher)
    w, m = s.w_embedding(7.5, 2), s.motion_embedding(500.0, 2)
    u = s.unet
    with torch.no_grad():
        out = s.model_output(z, t, cond, w, m)
        # emb = time_embed(t_emb + combine_proj([time_cond_proj(w), motion_cond_proj(m)])): by hand via a hook
        seen = {}
        h = u.time_embed.register_forward_pre_hook(lambda mod, args: seen.setdefault("x", args[0]))
        s.model_output(z, t, cond, w, m)
        h.remove()
        t_emb = timestep_embedding(t, 16)
        expect = t_emb + u.combine_proj(torch.cat([u.time_cond_proj(w), u.motion_cond_proj(m)], 1))
        torch.testing.assert_close(seen["x"], expect)
        assert not torch.allclose(out, s.model_output(z, t, cond, w))  # without motion: combine_proj skipped


def test_vae_per_frame_and_subset_decode(teacher):
    g = torch.Generator().manual_seed(0)
    video = torch.rand(2, 3, 4, 16, 16, generator=g) * 2 - 1
    z = teacher.encode_video(video, torch.Generator().manual_seed(1))
    assert z.shape == (2, 4, 4, 8, 8)
    # frame 2 of the clip, encoded alone, gives the same posterior mean as inside the clip
    mean_all = teacher.vae.encode(video[:, :, 2]).latent_dist.mean * 0.18215
    mean_clip = teacher.vae.encode(video.transpose(1, 2).reshape(8, 3, 16, 16)).latent_dist.mean.view(
        2, 4, 4, 8, 8
    )
    torch.testing.assert_close(mean_clip[:, 2] * 0.18215, mean_all)
    zz = z.clone().requires_grad_(True)
    full = teacher.decode_latents(zz)
    sub = teacher.decode_latents(zz, frames=[1, 3], checkpoint=True)
    assert full.shape == (2, 3, 4, 16, 16) and sub.shape == (2, 3, 2, 16, 16)
    torch.testing.assert_close(sub, full[:, :, [1, 3]], rtol=1e-5, atol=1e-6)
    sub.sum().backward()
    assert zz.grad[:, :, [0, 2]].eq(0).all() and zz.grad[:, :, [1, 3]].abs().sum() > 0


def _official_ckpt(model, path, **extra):
    sd = {k: v.clone() for k, v in model.official_state_dict().items()}
    torch.save({"state_dict": sd, "epoch": 3, "global_step": 10, **extra}, path)
    return sd


def test_synthetic_model_ckpt_loads_strictly_and_round_trips(teacher, tmp_path):
    sd = _official_ckpt(teacher, tmp_path / "model.ckpt")
    n_unet = sum(k.startswith(UNET_PREFIX) for k in sd)
    assert list(sd)[: len(SCHEDULE_BUFFERS)] == list(SCHEDULE_BUFFERS)
    assert n_unet == len(teacher.unet.state_dict()) and TEXT_PREFIX + "logit_scale" in sd
    assert sd[VAE_PREFIX + "encoder.mid.attn_1.q.weight"].dim() == 4
    sd_file = torch.load(tmp_path / "model.ckpt", weights_only=True)["state_dict"]
    sd_file["scale_arr"][5] += 1e-3  # buffers read from the file are written back as read
    torch.save({"state_dict": sd_file}, tmp_path / "model.ckpt")
    loaded = VideoCrafter2.from_pretrained(tmp_path / "model.ckpt", config=VC2Config.tiny())
    back = loaded.official_state_dict()
    assert list(back) == list(sd_file)
    assert all(torch.equal(back[k], sd_file[k]) for k in sd_file)
    z, t, cond = _inputs(teacher)
    with torch.no_grad():
        assert torch.equal(
            loaded.model_output(z, t, loaded.encode_prompt(PROMPTS)), teacher.model_output(z, t, cond)
        )


def test_model_ckpt_mismatch_names_keys(teacher, tmp_path):
    sd = {k: v.clone() for k, v in teacher.official_state_dict().items()}
    sd.pop(UNET_PREFIX + "init_attn.0.proj_in.weight")
    sd[UNET_PREFIX + "bogus.weight"] = torch.zeros(1)
    torch.save({"state_dict": sd}, tmp_path / "model.ckpt")
    with pytest.raises(CheckpointError) as e:
        VideoCrafter2.from_pretrained(tmp_path / "model.ckpt", config=VC2Config.tiny())
    assert str(e.value) == (
        "UNet (model.diffusion_model.*) does not match the model: "
        "missing keys 1 (model.diffusion_model.init_attn.0.proj_in.weight); "
        "unexpected keys 1 (model.diffusion_model.bogus.weight)"
    )
    sd = {k: v.clone() for k, v in teacher.official_state_dict().items()}
    sd.pop(VAE_PREFIX + "decoder.up.0.block.0.conv1.weight")
    sd[TEXT_PREFIX + "visual.proj"] = torch.zeros(2, 2)
    with pytest.raises(CheckpointError) as e:
        teacher._with_unet(teacher.unet).load_official_state_dict(sd)
    assert str(e.value) == (
        "VAE (first_stage_model.*) does not match the model: "
        "missing keys 1 (first_stage_model.decoder.up.0.block.0.conv1.weight)"
    )


def test_checkpoints_are_read_without_unpickling_objects(tmp_path):
    torch.save({"state_dict": {"a": torch.ones(2)}, "callbacks": {"cb": _Opaque()}}, tmp_path / "x.ckpt")
    with pytest.raises(CheckpointError) as e:
        VideoCrafter2.from_pretrained(tmp_path / "x.ckpt")
    assert str(e.value) == f"not a weights-only checkpoint: {tmp_path / 'x.ckpt'}"


class _Opaque:
    pass


def test_native_folder_round_trip_and_student_files(teacher, tmp_path):
    student = teacher.make_student(256, seed=5)
    student.save_pretrained(tmp_path / "student")
    meta = json.loads((tmp_path / "student" / "t2v_turbo.json").read_text())
    assert meta["family"] == "videocrafter2" and meta["w_embedding_dim"] == 256 and meta["fps"] == 16
    loaded = VideoCrafter2.from_pretrained(tmp_path / "student")
    assert loaded.w_embedding_dim == 256
    z, t, cond = _inputs(teacher)
    w = student.w_embedding(7.5, 2)
    with torch.no_grad():
        ref = student.model_output(z, t, cond, w)
        assert torch.equal(loaded.model_output(z, t, cond, w), ref)
    # a merged / v2-style bare UNet file (.pt and .safetensors) on top of a base model.ckpt
    _official_ckpt(teacher, tmp_path / "model.ckpt")
    base = VideoCrafter2.from_pretrained(tmp_path / "model.ckpt", config=VC2Config.tiny())
    torch.save(student.unet.state_dict(), tmp_path / "unet.pt")
    from safetensors.torch import save_file

    save_file(
        {UNET_PREFIX + k: v for k, v in student.unet.state_dict().items()}, str(tmp_path / "unet.safetensors")
    )
    for f in ("unet.pt", "unet.safetensors"):
        m = VideoCrafter2.from_pretrained(tmp_path / f, base=base)
        with torch.no_grad():
            assert torch.equal(m.model_output(z, t, cond, w), ref)
    with pytest.raises(CheckpointError, match="unet.pt holds only a UNet .* pass base="):
        VideoCrafter2.from_pretrained(tmp_path / "unet.pt")
    v2 = teacher.make_student(256, seed=2, motion_cond_dim=256)
    torch.save(v2.unet.state_dict(), tmp_path / "unet_mg.pt")
    m = VideoCrafter2.from_pretrained(tmp_path / "unet_mg.pt", base=base)
    assert m.motion_embedding_dim == 256 and list(m.unet.state_dict()) == list(v2.unet.state_dict())
    bad = dict(student.unet.state_dict())
    bad.pop("out.2.bias")
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"^UNet file does not match the model: missing keys 1 \(out\.2\.bias\)$"):
        VideoCrafter2.from_pretrained(tmp_path / "bad.pt", base=base)


def test_lora_list_release_on_base(teacher, tmp_path):
    from t2v_turbo.models.release_lora import release_lora_shapes, release_lora_targets

    student = teacher.make_student(256, seed=0)
    g = torch.Generator().manual_seed(0)
    tensors = []
    for name in release_lora_targets(student.unet):
        up, down = release_lora_shapes(student.unet.get_submodule(name), 8)
        tensors += [torch.randn(up, generator=g) * 0.02, torch.randn(down, generator=g) * 0.02]
    torch.save(tensors, tmp_path / "unet_lora.pt")
    with pytest.warns(UserWarning, match="merged"):
        m = VideoCrafter2.from_pretrained(tmp_path / "unet_lora.pt", base=teacher, seed=7)
    ref = teacher.make_student(256, seed=7)
    from t2v_turbo.models.release_lora import merge_lora_list

    merge_lora_list(ref.unet, tensors)
    for n, p in ref.unet.state_dict().items():
        assert torch.equal(p, m.unet.state_dict()[n]), n
    # the v1 list on the teacher (no time_cond_proj): the error names the unexpected pair
    with pytest.raises(ValueError, match=r"tensors 8,9 \(up \[16, 8\], down \[8, 256\]\).*make_student"):
        merge_lora_list(copy.deepcopy(teacher.unet), tensors)


def test_peft_lora_on_every_layer_trains_and_merges(teacher):
    student = teacher.make_student(256, seed=0)
    plain_keys = list(student.unet.state_dict())
    student.add_lora(rank=4)
    student.enable_gradient_checkpointing()
    names = {n.split(".lora_")[0] for n, _ in student.unet.named_parameters() if ".lora_" in n}
    assert {"init_attn.0.proj_in", "time_cond_proj", "input_blocks.1.0.temopral_conv.conv1.2"} <= names
    assert all(".lora_" in n for n, p in student.unet.named_parameters() if p.requires_grad)
    z, t, cond = _inputs(teacher)
    w = student.w_embedding(7.5, 2)
    out = student.model_output(z, t, cond, w)
    out.square().mean().backward()
    assert all(p.grad is not None for p in student.trainable_parameters())
    with torch.no_grad():
        for p in student.trainable_parameters():
            p.add_(torch.randn_like(p) * 0.05)
        lora_out = student.model_output(z, t, cond, w)
        official = student.official_state_dict()  # merged in a copy: the official keys, no LoRA
        assert [k.removeprefix(UNET_PREFIX) for k in official if k.startswith(UNET_PREFIX)] == plain_keys
        student.merge_lora()
        torch.testing.assert_close(student.model_output(z, t, cond, w), lora_out, rtol=1e-4, atol=1e-5)
    assert list(student.unet.state_dict()) == plain_keys


def test_real_clip_tokenizer_ids():
    pytest.importorskip("t2v_turbo.tokenizers")
    full = VideoCrafter2(VC2Config.official(), device="meta")
    ids = full.tokenize(["a photo of a cat"])
    assert ids[0, :8].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407, 0] and ids[0, 8:].eq(0).all()
