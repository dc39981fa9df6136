"""The MovingDigits world's flow-matching family: the Wan-transformer backbone on the world's VAE and CLIP
text (save / load bit-exact, fp16 storage, the velocity and consistency conventions), the FM teacher
stage, a seeded `moving-digits-fm` trainer run, the quick `world build --family fm`, and the shipped-model
names failing in one line when their folders are missing."""

from __future__ import annotations

import json

import pytest
import torch

from t2v_turbo import cli
from t2v_turbo.errors import CheckpointError, InputError
from t2v_turbo.flow import FlowSchedule
from t2v_turbo.worlds.moving_digits import models as mdm
from t2v_turbo.worlds.moving_digits.fm_backbone import FAMILY, MovingDigitsWanBackbone, build_transformer

TINY = {"num_layers": 1, "num_attention_heads": 2, "attention_head_dim": 12, "ffn_dim": 32}  # ~0.2M params
PROMPTS = ["a red digit 7 moving left", "a blue digit 0 moving up"]


def tiny_fm(seed: int = 0, shift: float = 3.0) -> MovingDigitsWanBackbone:
    """A seeded tiny FM teacher on the shipped world's VAE, text tower and tokenizer."""
    return MovingDigitsWanBackbone(
        build_transformer(seed, **TINY),
        mdm.load_vae(),
        mdm.load_text_encoder(),
        mdm.load_tokenizer(),
        FlowSchedule(shift=shift),
    ).eval()


@pytest.fixture(scope="module")
def teacher():
    return tiny_fm(0).freeze()


@pytest.fixture(scope="module")
def student(teacher):
    s = teacher.make_student(256, init="normal", seed=1)  # a non-zero w embedding: it must round-trip too
    return s.eval()


def _inputs(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(model.latent_shape(2), generator=g)
    return z, torch.tensor([900.0, 250.0]), model.encode_prompt(PROMPTS)


def test_world_components_and_shapes(teacher):
    unet_family = mdm.load_teacher()
    # the same text conditioning and the same per-frame VAE path as the UNet family
    torch.testing.assert_close(teacher.encode_prompt(PROMPTS), unet_family.encode_prompt(PROMPTS), rtol=0, atol=0)
    from t2v_turbo.worlds.moving_digits.dataset import prompt_videos

    videos, _ = prompt_videos(PROMPTS)
    za = teacher.encode_video(videos, generator=torch.Generator().manual_seed(0))
    zb = unet_family.encode_video(videos, generator=torch.Generator().manual_seed(0))
    assert za.shape == (2, 4, 8, 8, 8) and torch.equal(za, zb)
    assert torch.equal(teacher.decode_latents(za[:, :, :2]), unet_family.decode_latents(zb[:, :, :2]))
    assert teacher.latent_shape(3) == (3, 4, 8, 8, 8) and teacher.num_video_frames(8) == 8
    assert teacher.family == FAMILY and teacher.schedule.shift == 3.0 and teacher.w_embedding_dim is None
    assert teacher.encode_prompt(PROMPTS).shape == (2, mdm.TEXT_MAX_LENGTH, mdm.TEXT_HIDDEN)


def test_default_transformer_size():
    net = build_transformer(0)
    assert sum(p.numel() for p in net.parameters()) == 1_769_872
    assert tuple(net.config.patch_size) == (1, 2, 2) and net.config.text_dim == 64 and net.config.in_channels == 4


def test_student_round_trips_bit_exactly(student, tmp_path):
    student.save_pretrained(tmp_path / "s", save_text=False)
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [
        "guidance_proj.safetensors", "scheduler", "t2v_turbo.json", "transformer"
    ]  # fmt: skip
    meta = json.loads((tmp_path / "s" / "t2v_turbo.json").read_text())
    assert meta["family"] == FAMILY and meta["schedule"]["shift"] == 3.0 and meta["w_embedding_dim"] == 256
    sched = json.loads((tmp_path / "s" / "scheduler" / "scheduler_config.json").read_text())
    assert sched["_class_name"] == "FlowMatchEulerDiscreteScheduler" and sched["shift"] == 3.0
    loaded = MovingDigitsWanBackbone.from_pretrained(tmp_path / "s", base=mdm.ASSETS_DIR)
    assert type(loaded) is MovingDigitsWanBackbone and loaded.w_embedding_dim == 256
    a, b = student.unet.state_dict(), loaded.unet.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    z, t, cond = _inputs(student)
    w_emb = student.w_embedding(7.5, 2)
    with torch.no_grad():
        assert torch.equal(student.model_output(z, t, cond, w_emb), loaded.model_output(z, t, cond, w_emb))
    # through the registry: family from t2v_turbo.json, vae / text from the folder given as base
    from t2v_turbo.models.registry import load_backbone

    student.save_pretrained(tmp_path / "full")  # save_text: a self-contained folder
    assert type(load_backbone(tmp_path / "full")) is MovingDigitsWanBackbone


def test_fp16_storage_loads_as_float32_and_is_stable(teacher, tmp_path):
    teacher.save_pretrained(tmp_path / "a", save_text=False, storage_dtype=torch.float16)
    from safetensors.torch import load_file

    stored = load_file(str(tmp_path / "a" / "transformer" / "diffusion_pytorch_model.safetensors"))
    assert {v.dtype for v in stored.values()} == {torch.float16}
    loaded = MovingDigitsWanBackbone.from_pretrained(tmp_path / "a", base=mdm.ASSETS_DIR)
    sd = loaded.unet.state_dict()
    assert all(v.dtype == torch.float32 for v in sd.values())
    ref = teacher.unet.state_dict()
    assert all(torch.equal(sd[k], ref[k].half().float()) for k in ref)  # exactly the fp16 rounding
    loaded.save_pretrained(tmp_path / "b", save_text=False, storage_dtype=torch.float16)
    for f in ("transformer/diffusion_pytorch_model.safetensors", "transformer/config.json", "t2v_turbo.json"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()


def test_velocity_and_consistency_conventions(student):
    from t2v_turbo.pipeline import generate

    z, _, cond = _inputs(student, seed=3)
    w_emb = student.w_embedding(5.0, 2)
    sched = student.schedule
    with torch.no_grad():
        v0 = student.model_output(z, torch.zeros(2), cond, w_emb)
        # f(x, 0) = x - 0 * v = x exactly
        assert torch.equal(sched.consistency_function(v0, z, 0), z)
        # x0 = x_s - s v: the oracle velocity eps - x0 gives back x0 from x_s = (1 - s) x0 + s eps
        x0, eps = torch.randn_like(z), torch.randn_like(z)
        t = torch.tensor([800.0, 300.0])
        x_s = sched.add_noise(x0, eps, t)
        rec_x0, rec_eps = sched.to_x0_eps(sched.get_velocity(x0, eps), x_s, t)
        torch.testing.assert_close(rec_x0, x0, rtol=0, atol=2e-6)
        torch.testing.assert_close(rec_eps, eps, rtol=0, atol=2e-6)
        # one consistency step from pure noise (s = 1) is x - v(x, 1000) on the backbone
        gen = generate(student, PROMPTS, num_steps=1, w=5.0, seed=11, decode=False)
        noise = torch.randn(student.latent_shape(2), generator=torch.Generator().manual_seed(11))
        v1 = student.model_output(noise, torch.full((2,), 1000.0), cond, w_emb)
    assert gen.timesteps == [1000.0] and gen.settings["sampler"] == "consistency"
    assert torch.equal(gen.videos, noise - v1)


def test_teacher_stage_writes_an_fp16_folder_and_a_log(tmp_path):
    from t2v_turbo.worlds.moving_digits.stage_fm import shared_components, train_fm_teacher

    shared_components(tmp_path, ("vae", "text_encoder", "tokenizer"))
    info = train_fm_teacher(tmp_path, steps=3, batch_size=2, progress=False, transformer=TINY, seed=4)
    assert info["steps"] == 3 and info["recipe"]["shift"] == 3.0 and info["recipe"]["sigma_sampling"] == "logit-normal"
    log = json.loads((tmp_path / "logs" / "fm_teacher.json").read_text())
    assert log["final_loss"] == info["final_loss"] and log["transformer_params"] == info["transformer_params"]
    loaded = MovingDigitsWanBackbone.from_pretrained(tmp_path / "fm_teacher", base=tmp_path)
    assert loaded.dtype == torch.float32 and loaded.schedule.shift == 3.0 and loaded.w_embedding_dim is None
    # the same seed gives the same teacher, bit for bit
    info2 = train_fm_teacher(tmp_path / "again", steps=3, batch_size=2, progress=False, transformer=TINY, seed=4)
    assert info2["final_loss"] == info["final_loss"]
    again = MovingDigitsWanBackbone.from_pretrained(tmp_path / "again" / "fm_teacher", base=tmp_path)
    a, b = loaded.unet.state_dict(), again.unet.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sigma_sampling_is_shifted_logit_normal():
    from t2v_turbo.worlds.moving_digits.stage_fm import sample_sigmas

    g = torch.Generator().manual_seed(0)
    s = sample_sigmas(4, torch.Generator().manual_seed(0), shift=3.0)
    u = torch.sigmoid(torch.randn(4, generator=g))
    torch.testing.assert_close(s, 3 * u / (1 + 2 * u), rtol=0, atol=1e-7)
    big = sample_sigmas(200_000, torch.Generator().manual_seed(1), shift=3.0)
    # P(s in [0.85, 0.97]) = P(logit u in [logit(0.85 / 2.7), logit(0.97 / 1.06)]) = 0.2528 (closed form)
    assert float(((big >= 0.85) & (big <= 0.97)).float().mean()) == pytest.approx(0.2528, abs=0.003)
    with pytest.raises(Exception, match="valid: \\['logit-normal', 'uniform'\\]"):
        sample_sigmas(2, g, sampling="beta")
    # the high-noise share: the first quarter uniform in [0.9, 1], the rest the same draws as without it
    h = sample_sigmas(8, torch.Generator().manual_seed(2), 3.0, high_noise_frac=0.25, high_noise_from=0.9)
    plain = sample_sigmas(8, torch.Generator().manual_seed(2), 3.0)
    assert bool(((h[:2] >= 0.9) & (h[:2] <= 1)).all()) and torch.equal(h[2:], plain[2:])
    hb = sample_sigmas(100_000, torch.Generator().manual_seed(3), 3.0, high_noise_frac=1.0, high_noise_from=0.9)
    assert float(hb.mean()) == pytest.approx(0.95, abs=0.001) and float(hb.min()) >= 0.9


def _run_overrides(teacher_dir, out_dir) -> dict:
    return {
        "output_dir": str(out_dir), "model.teacher": str(teacher_dir), "train.max_steps": 2, "train.batch_size": 1,
        "train.progress": False, "checkpoint.every": 0, "validation.every": 0, "validation.prompts": [],
        "distill.num_ddim_timesteps": 10, "optim.lr": 1e-3,
        "rewards": [{"name": "md-image", "weight": 1.0, "frames": 2, "path": str(mdm.ASSETS_DIR / "reward_image")},
                    {"name": "md-video", "weight": 2.0, "frames": 8, "path": str(mdm.ASSETS_DIR / "reward_video")}],
    }  # fmt: skip


def test_seeded_moving_digits_fm_run_is_reproducible(teacher, tmp_path):
    from safetensors.torch import load_file

    from t2v_turbo.train import train

    teacher.save_pretrained(tmp_path / "teacher")  # self-contained (vae / text / tokenizer inside)
    runs = [train("moving-digits-fm", _run_overrides(tmp_path / "teacher", tmp_path / f"run{i}")) for i in (0, 1)]
    logs = [
        [json.loads(x) for x in (r.run_dir / "metrics.jsonl").read_text().splitlines() if '"loss_cd"' in x]
        for r in runs
    ]
    assert [r["step"] for r in logs[0]] == [1, 2]
    keys = ("loss", "loss_cd", "reward/md-image", "reward/md-video", "w", "t")
    assert [[r[k] for k in keys] for r in logs[0]] == [[r[k] for k in keys] for r in logs[1]]
    # the flow grid: t = 1000 shift(i / 10), shift 3 from the teacher's scheduler
    assert all(min(abs(r["t"] - 3000 * i / 10 / (1 + 2 * i / 10)) for i in range(1, 11)) < 1e-3 for r in logs[0])
    a = load_file(str(runs[0].last_checkpoint / "trainable.safetensors"))
    b = load_file(str(runs[1].last_checkpoint / "trainable.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    student = MovingDigitsWanBackbone.from_pretrained(runs[0].student_dir)
    assert student.w_embedding_dim == 256 and student.family == FAMILY


def test_fm_student_recipes():
    from t2v_turbo.worlds.moving_digits.stage_fm import fm_student_recipe

    turbo, vcm = fm_student_recipe("fm_turbo"), fm_student_recipe("fm_vcm")
    assert [(r["name"], r["weight"], r["frames"]) for r in turbo["rewards"]] == [("md-image", 1.0, 5), ("md-video", 2.0, 8)]
    assert vcm["rewards"] == [] and vcm["preset"] == turbo["preset"] == "moving-digits-fm"
    assert turbo["teacher"] == "fm_teacher" and turbo["keep"][0] == "transformer"
    with pytest.raises(InputError, match="valid: \\['fm_vcm', 'fm_turbo'\\]"):
        fm_student_recipe("turbo")


def test_missing_fm_assets_fail_in_one_line(monkeypatch, tmp_path, capsys):
    from t2v_turbo.models.registry import load_backbone

    monkeypatch.setattr(mdm, "ASSETS_DIR", tmp_path)
    for name in ("fm-teacher", "fm-vcm", "fm-turbo"):
        with pytest.raises(CheckpointError, match=f"'{name}' is missing .*world build --family fm"):
            load_backbone(name)
    assert cli.main(["generate", "--model", "fm-turbo", PROMPTS[0], "--out-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fm-turbo" in err[0] and "Traceback" not in err[0]
    with pytest.raises(CheckpointError, match="component 'transformer' is missing"):
        MovingDigitsWanBackbone.from_pretrained(tmp_path)


def test_build_command_checks_family_stages(tmp_path):
    from t2v_turbo.worlds.moving_digits.cli import cli as world_cli

    with pytest.raises(InputError, match="unknown stages \\['teacher'\\] for --family fm"):
        world_cli(["build", "--family", "fm", "--stages", "teacher", "--out", str(tmp_path)])
    with pytest.raises(InputError, match="fm_teacher stage first"):
        world_cli(["build", "--family", "fm", "--stages", "fm_students", "--out", str(tmp_path)])


@pytest.mark.slow
def test_quick_fm_build_writes_a_loadable_family(tmp_path, capsys):
    from t2v_turbo.models.registry import load_backbone
    from t2v_turbo.pipeline import generate

    assert cli.main(["world", "build", "--family", "fm", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr()
    assert "stage fm_teacher done in" in out.err + out.out and "stage fm_students done in" in out.err + out.out
    for name in ("fm_teacher.json", "build.json"):
        assert (tmp_path / "logs" / name).is_file()
    for name in ("fm_teacher", "fm_vcm", "fm_turbo"):
        model = load_backbone(tmp_path / name)
        assert type(model) is MovingDigitsWanBackbone and model.dtype == torch.float32
        assert (model.w_embedding_dim is None) == (name == "fm_teacher")
        gen = generate(model, PROMPTS[:1], num_steps=2, seed=0)
        assert gen.videos.shape == (1, 3, 8, 32, 32)
    meta = json.loads((tmp_path / "fm_turbo" / "t2v_turbo.json").read_text())
    assert meta["trained_with"]["preset"] == "moving-digits-fm" and len(meta["trained_with"]["rewards"]) == 2
    assert json.loads((tmp_path / "fm_vcm" / "t2v_turbo.json").read_text())["trained_with"]["rewards"] == []


def test_text_tower_folder_is_recorded_and_read_from_the_world_root(teacher, tmp_path):
    """An FM model saved in a world root with `text_encoder_dir="fm_text_encoder"` reads that tower (not the
    UNet family's text_encoder/) when loaded with base= the root; a self-contained folder reads its own."""
    import shutil

    from t2v_turbo.worlds.moving_digits.fm_backbone import FM_TEXT_ENCODER
    from t2v_turbo.worlds.moving_digits.stage_fm import fm_text_tower
    from t2v_turbo.worlds.moving_digits.stage_text import random_text_tower

    root = tmp_path / "world"
    for sub in ("vae", "tokenizer", "reward_video"):
        shutil.copytree(mdm.ASSETS_DIR / sub, root / sub)
    # a world whose text_encoder/ is another tower (a seeded random one; the shipped world's is md-video's)
    random_text_tower(mdm.load_tokenizer(root), seed=3).save_pretrained(root / "text_encoder")
    assert fm_text_tower(root) == FM_TEXT_ENCODER
    tower = mdm.load_text_encoder(root / "reward_video")  # md-video's tower (projection dropped)
    fm = MovingDigitsWanBackbone(
        teacher.unet, teacher.vae, tower, teacher.tokenizer, teacher.schedule, text_encoder_dir=FM_TEXT_ENCODER
    )
    fm.save_pretrained(root / "fm_teacher", save_text=False)
    assert json.loads((root / "fm_teacher" / "t2v_turbo.json").read_text())["text_encoder_dir"] == FM_TEXT_ENCODER
    back = MovingDigitsWanBackbone.from_pretrained(root / "fm_teacher", base=root)
    assert back.text_encoder_dir == FM_TEXT_ENCODER
    want = fm.encode_prompt(PROMPTS)
    torch.testing.assert_close(back.encode_prompt(PROMPTS), want, rtol=0, atol=0)
    other = MovingDigitsWanBackbone(teacher.unet, teacher.vae, mdm.load_text_encoder(root), teacher.tokenizer, teacher.schedule)
    assert not torch.allclose(other.encode_prompt(PROMPTS), want)  # the two towers differ
    assert back.make_student(8).text_encoder_dir == FM_TEXT_ENCODER  # students keep it


def test_position_channels_widen_a_teacher_without_changing_it(teacher, tmp_path):
    """A teacher widened to position channels (zero weights for the new inputs) gives the same velocity;
    the option is recorded, round-trips, and the channels make the output depend on absolute position."""
    from t2v_turbo.worlds.moving_digits.backbone import NUM_POSITION_CHANNELS
    from t2v_turbo.worlds.moving_digits.stage_fm import widen_patch_embedding

    wide_t = build_transformer(5, position_channels=True, **TINY)
    assert wide_t.config.in_channels == 4 + NUM_POSITION_CHANNELS and wide_t.config.out_channels == 4
    wide_t.load_state_dict(widen_patch_embedding(teacher.unet.state_dict(), wide_t.state_dict()))
    wide = MovingDigitsWanBackbone(
        wide_t, teacher.vae, teacher.text_encoder, teacher.tokenizer, teacher.schedule, position_channels=True
    ).eval()
    z, t, c = _inputs(teacher)
    with torch.no_grad():
        torch.testing.assert_close(wide.model_output(z, t, c), teacher.model_output(z, t, c), rtol=0, atol=1e-6)
        wide.unet.patch_embedding.weight[:, 4:].normal_(0, 0.1)
        v = wide.model_output(z, t, c)
        # a clip shifted by one token column no longer gives the shifted velocity (absolute positions)
        v_shift = wide.model_output(torch.roll(z, 2, dims=-1), t, c)
        assert (torch.roll(v, 2, dims=-1) - v_shift)[..., 2:].abs().max() > 1e-3
    wide.save_pretrained(tmp_path / "w", save_text=True)
    back = MovingDigitsWanBackbone.from_pretrained(tmp_path / "w")
    assert back.position_channels and back.make_student(8).position_channels
    with torch.no_grad():
        torch.testing.assert_close(back.model_output(z, t, c), v, rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="in/out channels"):
        MovingDigitsWanBackbone(teacher.unet, teacher.vae, teacher.text_encoder, teacher.tokenizer, position_channels=True)
