"""The shipped MovingDigits models load from their files and behave (skipped until they are built)."""

import numpy as np
import pytest
import torch

from t2v_turbo.worlds.moving_digits import models as mdm
from t2v_turbo.worlds.moving_digits.dataset import canonical_prompts, caption_words, prompt_videos

ASSETS = mdm.ASSETS_DIR


def _need(*names):
    missing = [n for n in names if not (ASSETS / n).exists()]
    if missing:
        pytest.skip(f"shipped world models not built yet: {missing}")


@pytest.fixture(scope="module")
def truth():
    prompts = canonical_prompts()[::7]  # 40 prompts: every color, digit and direction
    videos, _ = prompt_videos(prompts, seed=0, split="heldout")
    return videos, prompts


def test_tokenizer_is_deterministic_and_word_level():
    built = mdm.build_tokenizer()
    for w in caption_words():
        assert len(built(w).input_ids) == 3, w  # <bos> word </w> <eos>
    ids = built("a red digit 7 moving left").input_ids
    assert ids == mdm.build_tokenizer()("a red digit 7 moving left").input_ids
    assert len(built("a purple cat, unseen words").input_ids) > 4  # character fallback
    _need("tokenizer")
    assert mdm.load_tokenizer()("a red digit 7 moving left").input_ids == ids


def test_vae_roundtrip(truth):
    _need("vae")
    vae = mdm.load_vae()
    videos, _ = truth
    x = videos[:8].permute(0, 2, 1, 3, 4).reshape(-1, 3, 32, 32)
    with torch.no_grad():
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.mode()).sample
        z = post.sample(generator=torch.Generator().manual_seed(0)) * vae.config.scaling_factor
    assert post.mode().shape == (64, 4, 8, 8)
    assert 0.7 < float(z.std()) < 1.3  # scaling factor = 1 / std of latents
    assert float((rec - x).pow(2).mean()) < 0.02


def test_text_encoder_frozen_shapes():
    _need("text_encoder", "tokenizer")
    te, tok = mdm.load_text_encoder(), mdm.load_tokenizer()
    ids = tok(["a red digit 7 moving left", ""], padding="max_length", return_tensors="pt").input_ids
    with torch.no_grad():
        h = te(ids).last_hidden_state
    assert h.shape == (2, tok.model_max_length, te.config.hidden_size)
    assert torch.isfinite(h).all()


@pytest.mark.parametrize("name", ["md-image", "md-video"])
def test_rewards_load_score_and_prefer_truth(name, truth):
    _need("reward_image", "reward_video")
    from t2v_turbo.rewards.base import build_reward

    reward = build_reward(name)
    assert reward.kind == ("image" if name == "md-image" else "video")
    videos, prompts = truth
    v = videos[:4].clone().requires_grad_(True)
    s = reward(v, prompts[:4])
    assert s.shape == (4,) and torch.all(s.abs() <= 1.0 + 1e-5)
    s.sum().backward()
    assert v.grad is not None and v.grad.abs().sum() > 0
    assert not any(p.grad is not None for p in reward.parameters())
    # the true caption beats a caption with another color and another digit
    wrong = [p.replace(p.split()[1], "white" if p.split()[1] != "white" else "red") for p in prompts]
    with torch.no_grad():
        assert (reward(videos, prompts) > reward(videos, wrong)).float().mean() > 0.9
    if name == "md-video":  # the video reward sees motion: the true direction beats the opposite one
        flip = {"left": "right", "right": "left", "up": "down", "down": "up"}
        opposite = [" ".join(p.split()[:-1] + [flip[p.split()[-1]]]) for p in prompts]
        with torch.no_grad():
            assert (reward(videos, prompts) > reward(videos, opposite)).float().mean() > 0.9


def test_teacher_loads_and_denoises():
    _need("teacher", "vae", "text_encoder", "tokenizer")
    teacher = mdm.load_teacher()
    assert type(teacher.unet).__name__ == "UNetMotionModel" and teacher.w_embedding_dim is None
    assert teacher.schedule.prediction_type == "v_prediction" and teacher.schedule.beta_schedule == "scaled_linear"
    assert teacher.position_channels and teacher.unet.config.in_channels == 16
    cond = teacher.encode_prompt(["a red digit 7 moving left", ""])
    z = torch.randn(teacher.latent_shape(2), generator=torch.Generator().manual_seed(0))
    assert z.shape == (2, 4, 8, 8, 8)
    with torch.no_grad():
        out = teacher.model_output(z, torch.tensor([500, 500]), cond)
        video = teacher.decode_latents(z[:1])
    assert out.shape == z.shape and torch.isfinite(out).all()
    assert video.shape == (1, 3, 8, 32, 32)


def _tiny_world_backbone():
    from transformers import CLIPTextModel

    from t2v_turbo.models.tiny import tiny_vae

    tok = mdm.build_tokenizer()
    torch.manual_seed(0)
    text = CLIPTextModel(mdm.text_config(tok, hidden=32, layers=1)).eval()
    unet = mdm.build_unet(seed=0, channels=(16, 32), cross_attention_dim=32)
    return mdm.build_backbone(unet, tiny_vae(1, (16, 16, 16), sample_size=32), text, tok, frame_tokens=True)


def test_word_sensitivity_measures_what_the_denoiser_uses():
    from t2v_turbo.worlds.moving_digits.diagnostics import word_sensitivity

    bb = _tiny_world_backbone()
    res = word_sensitivity(bb, timesteps=(900, 300), num_videos=4)
    assert set(res) == {900, 300} and set(res[900]) == {"true", "color", "digit", "direction", "empty"}
    assert all(abs(r["empty"] - r["true"]) > 1e-7 for r in res.values())  # a random net still reads text
    # a text-blind denoiser (cross-attention keys/values zeroed): every swap gives exactly the true loss
    for name, mod in bb.unet.named_modules():
        if name.endswith("attn2") and getattr(mod, "is_cross_attention", False):
            torch.nn.init.zeros_(mod.to_k.weight)
            torch.nn.init.zeros_(mod.to_v.weight)
    blind = word_sensitivity(bb, timesteps=(900, 300), num_videos=4)
    for r in blind.values():
        assert r["color"] == r["digit"] == r["direction"] == r["empty"] == r["true"]


def test_sensitivity_cli_on_shipped_teacher(capsys):
    _need("teacher", "vae", "text_encoder", "tokenizer")
    from t2v_turbo.worlds.moving_digits.cli import cli

    assert cli(["sensitivity", "--videos", "8", "--timesteps", "800"]) == 0
    row = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("|  800")][0]
    cells = row.split("|")
    colour, direction = float(cells[3]), float(cells[5])
    assert colour > 1.2  # the teacher reads the colour word: the wrong colour costs > 20 % more loss
    assert direction > 1.5  # and the direction word (measured 2.24; the epsilon teacher before it: 0.999)


def test_word_sensitivity_scores_v_models_on_v():
    from t2v_turbo.schedule import NoiseSchedule
    from t2v_turbo.worlds.moving_digits.diagnostics import word_sensitivity

    bb = _tiny_world_backbone()
    bb.schedule = NoiseSchedule.make(prediction_type="v_prediction")
    res = word_sensitivity(bb, timesteps=(500,), num_videos=2)
    # by hand: the same draws as word_sensitivity, loss against v = alpha eps - sigma z0
    from t2v_turbo.worlds.moving_digits.dataset import prompt_subset, prompt_videos

    prompts = prompt_subset(2, seed=0)
    videos, _ = prompt_videos(prompts, seed=0, split="train")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        z0 = bb.encode_video(videos, generator=gen)
        eps = torch.randn(z0.shape, generator=gen)
        t = torch.full((2,), 500)
        out = bb.model_output(bb.schedule.add_noise(z0, eps, t), t, bb.encode_prompt(prompts))
    ref = float((out - bb.schedule.get_velocity(z0, eps, t)).pow(2).mean())
    assert res[500]["true"] == pytest.approx(ref, rel=1e-6)


def test_sensitivity_cli_rejects_bad_input(tmp_path):
    from t2v_turbo.errors import UserError
    from t2v_turbo.worlds.moving_digits.cli import cli

    with pytest.raises(UserError, match="0..999"):
        cli(["sensitivity", "--timesteps", "1000"])
    with pytest.raises(UserError, match="--videos"):
        cli(["sensitivity", "--videos", "0"])
    with pytest.raises(UserError, match="no UNet folder"):
        cli(["sensitivity", "--world", str(tmp_path)])


def test_snr_loss_weight_is_an_x0_weight():
    from t2v_turbo.schedule import NoiseSchedule
    from t2v_turbo.worlds.moving_digits.stage_teacher import snr_loss_weight

    snr = torch.tensor([1e-5, 0.5, 2.0, 10.0])
    torch.testing.assert_close(snr_loss_weight(snr, "epsilon", 5.0), torch.tensor([1.0, 1.0, 1.0, 0.5]))
    torch.testing.assert_close(snr_loss_weight(snr, "epsilon", 5.0, 1.0), torch.tensor([1e5, 2.0, 1.0, 0.5]))
    torch.testing.assert_close(
        snr_loss_weight(snr, "v_prediction", 5.0, 1.0), torch.tensor([1 / (1 + 1e-5), 1 / 1.5, 2 / 3, 5 / 11])
    )
    # the weighted v-MSE equals the x0-error MSE weighted clamp(SNR, 1, 5), at every noise level
    sched = NoiseSchedule.make(beta_end=0.03, prediction_type="v_prediction")
    g = torch.Generator().manual_seed(0)
    t = torch.tensor([999, 900, 500, 100, 5])
    z0, eps, v_hat = (torch.randn(5, 4, 2, 4, 4, generator=g) for _ in range(3))
    z_t = sched.add_noise(z0, eps, t)
    abar = sched.abar(t)
    snr = abar / (1 - abar)
    v_loss = (v_hat - sched.get_velocity(z0, eps, t)).pow(2).mean(dim=(1, 2, 3, 4))
    x0_loss = (sched.to_x0_eps(v_hat, z_t, t)[0] - z0).pow(2).mean(dim=(1, 2, 3, 4))
    torch.testing.assert_close(
        (v_loss * snr_loss_weight(snr, "v_prediction", 5.0, 1.0)).double(),
        (x0_loss * snr.clamp(1.0, 5.0)).double(),
        rtol=1e-4,
        atol=1e-6,
    )


def test_glyph_box_weights_closed_form():
    from t2v_turbo.worlds.moving_digits.dataset import VideoSpec
    from t2v_turbo.worlds.moving_digits.stage_teacher import glyph_box_weights

    # glyph box at x 0..11, y 4..15 in frame 0, moving right 2 px/frame; 4x4 patches -> an 8x8 grid
    spec = VideoSpec(digit=0, color="red", direction="right", glyph_index=0, start=(0, 4))
    w = glyph_box_weights([spec], 8, 5.0)
    assert w.shape == (1, 8, 8, 8)
    expected0 = torch.ones(8, 8)
    expected0[1:4, 0:3] = 5.0  # rows 4..15 and columns 0..11 are whole patches
    torch.testing.assert_close(w[0, 0], expected0)
    # frame 1: columns 2..13 -> patch 0 and patch 3 half covered, patches 1-2 fully
    torch.testing.assert_close(w[0, 1, 1:4, 0:4], torch.tensor([[3.0, 5.0, 5.0, 3.0]] * 3))
    assert float(w[0, 1].sum()) == 64 + 4 * 9  # 144 box pixels = 9 whole patches, each +4


def test_train_teacher_writes_the_recipe_it_trained(tmp_path):
    _need("vae", "text_encoder", "tokenizer")
    from t2v_turbo.pipeline import generate
    from t2v_turbo.worlds.moving_digits.stage_teacher import train_teacher

    for name in ("vae", "text_encoder", "tokenizer"):
        (tmp_path / name).symlink_to(mdm.ASSETS_DIR / name)
    with pytest.raises(ValueError, match="snr_floor"):  # refused before anything is built or written
        train_teacher(tmp_path, steps=3, snr_floor=10.0, min_snr_gamma=5.0)
    assert not (tmp_path / "teacher").exists()
    info = train_teacher(tmp_path, steps=3, batch_size=4, progress=False)
    assert info["steps"] == 3 and np.isfinite(info["final_loss"])
    teacher = mdm.load_teacher(tmp_path)
    assert teacher.position_channels and teacher.unet.config.in_channels == 16
    assert teacher.schedule.prediction_type == "v_prediction"
    assert float(teacher.schedule.abar(torch.tensor(999))) ** 0.5 == pytest.approx(0.0024, abs=1e-4)
    out = generate(teacher, ["a red digit 7 moving left"], num_steps=2, cfg_scale=2.0, seed=0)
    assert out.videos.shape == (1, 3, 8, 32, 32) and torch.isfinite(out.videos).all()


def test_pooled_text_unet_adds_the_mean_text_state_to_the_time_embedding(tmp_path):
    """`build_unet(pooled_text=True)`: SDXL's text_time added embedding, fed by the backbone with the mean
    text state and the fps; zeroing the added embedding's last layer gives back the plain UNet's output,
    and the option survives save / load (it is in the UNet config)."""
    from t2v_turbo.schedule import NoiseSchedule
    from t2v_turbo.worlds.moving_digits.backbone import MovingDigitsBackbone

    parts = (mdm.load_vae(), mdm.load_text_encoder(), mdm.load_tokenizer(), NoiseSchedule.make())
    plain = mdm.build_backbone(mdm.build_unet(seed=3), *parts).eval()
    pooled = mdm.build_backbone(mdm.build_unet(seed=3, pooled_text=True), *parts).eval()
    missing, unexpected = pooled.unet.load_state_dict(plain.unet.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("add_embedding.") for k in missing)
    cond = pooled.encode_prompt(["a red digit 7 moving left", "a red digit 3 moving left"])
    kw = pooled.added_cond_kwargs(cond, 2)
    assert torch.equal(kw["text_embeds"], cond.mean(dim=1)) and kw["time_ids"].tolist() == [[8.0], [8.0]]
    assert plain.added_cond_kwargs(cond, 2) is None
    z, t = torch.randn(2, 4, 8, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([700, 300])
    with torch.no_grad():
        a = pooled.model_output(z, t, cond)
        pooled.unet.add_embedding.linear_2.weight.zero_()
        pooled.unet.add_embedding.linear_2.bias.zero_()
        torch.testing.assert_close(pooled.model_output(z, t, cond), plain.model_output(z, t, cond), rtol=0, atol=1e-6)
    assert not torch.allclose(a, plain.model_output(z, t, cond))
    pooled.save_pretrained(tmp_path / "m")
    back = MovingDigitsBackbone.from_pretrained(tmp_path / "m")
    assert back.unet.config.addition_embed_type == "text_time"
    with torch.no_grad():
        torch.testing.assert_close(back.model_output(z, t, cond), plain.model_output(z, t, cond), rtol=0, atol=1e-6)
