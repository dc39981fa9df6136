"""Image-text rewards on tiny random weights written in each official layout.

HPS/CLIP: a hand-written open_clip state dict scored by the explicit open_clip forward of
test_open_clip_convert. ImageReward: a hand-written BLIP/timm ViT checkpoint checked against an
explicit ViT forward, and the head/normalisation checked in closed form.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from t2v_turbo.errors import CheckpointError
from t2v_turbo.rewards import build_reward
from t2v_turbo.rewards.image_reward import REWARD_MEAN, REWARD_STD
from t2v_turbo.rewards.preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from t2v_turbo.tokenizers import clip_tokenize
from test_open_clip_convert import open_clip_state_dict, ref_image, ref_text

# tiny open_clip tower with the real vocabulary / context / 224 input (preset "tiny")
OC = dict(
    embed=16, width=32, heads=4, layers=2, ctx=77, vocab=49408, vwidth=32, vheads=4, patch=32, image=224
)
PROMPTS = ["a red cat", "a blue dog"]


def _video(b=2, t=3, h=40, w=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(b, 3, t, h, w, generator=g) * 1.8 - 0.9).requires_grad_()


@pytest.fixture(scope="module")
def hps_file(tmp_path_factory):
    sd = open_clip_state_dict(OC, seed=3)
    path = tmp_path_factory.mktemp("hps") / "HPS_v2.1_compressed.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, path)  # DDP prefix is stripped
    return path, sd


def _ref_scores(sd, pixels, prompts, act="gelu", clean="open_clip"):
    img = F.normalize(ref_image(sd, pixels, OC["vheads"], act), dim=-1)
    txt = F.normalize(ref_text(sd, clip_tokenize(prompts, clean=clean), OC["heads"], act), dim=-1)
    return (img * txt).sum(-1)


def test_hps_loads_official_layout_and_matches_open_clip_forward(hps_file):
    path, sd = hps_file
    reward = build_reward("hpsv2.1", path=path, config="tiny")
    video = _video()
    frames = video.permute(0, 2, 1, 3, 4).flatten(0, 1)  # (6, 3, 40, 64)
    prompts = [p for p in PROMPTS for _ in range(3)]
    with torch.no_grad():
        ours = reward.score_images(frames, prompts)
        pix = reward.preprocess(frames)
    torch.testing.assert_close(ours, _ref_scores(sd, pix, prompts), atol=1e-5, rtol=1e-5)
    # HPS geometry: 40 x 64 -> 140 x 224 + 42 zero rows (black, normalised) top and bottom
    black = -torch.tensor(OPENAI_CLIP_MEAN) / torch.tensor(OPENAI_CLIP_STD)
    torch.testing.assert_close(pix[:, :, :42].mean((0, 2, 3)), black)
    torch.testing.assert_close(pix[:, :, 182:].amax((0, 2, 3)), black)
    # the video score is the mean over frames; gradients reach the pixels, never the reward
    s = reward(video, PROMPTS)
    torch.testing.assert_close(s, ours.detach().view(2, 3).mean(1), atol=1e-5, rtol=1e-5)
    s.sum().backward()
    assert video.grad.abs().sum() > 0 and video.grad[0].abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in reward.parameters())


def test_clip_vit_l_14_quick_gelu_squash(tmp_path):
    sd = open_clip_state_dict(OC, seed=4)
    torch.save(sd, tmp_path / "ViT-L-14.pt")
    cfg = {"name": "tiny", "text": {"hidden_act": "quick_gelu"}, "vision": {"hidden_act": "quick_gelu"}}
    reward = build_reward("clip-vit-l-14", path=tmp_path / "ViT-L-14.pt", config=cfg)
    images = _video(b=1, t=2).detach()[0].transpose(0, 1)
    with torch.no_grad():
        pix = reward.preprocess(images)
        ours = reward.score_images(images, ["a cat", "a cat"])
    assert pix.shape == (2, 3, 224, 224)  # squashed, no padding
    torch.testing.assert_close(ours, _ref_scores(sd, pix, ["a cat"] * 2, "quick_gelu"), atol=1e-5, rtol=1e-5)
    assert reward.text_clean == "transformers"


def test_clip_text_cleaning_per_official_tokenizer(hps_file):
    # HPS (open_clip tokenizer): "&amp;" and curly quotes are cleaned before BPE, "!!" stays one token
    path, sd = hps_file
    reward = build_reward("hpsv2.1", path=path, config="tiny")
    assert reward.text_clean == "open_clip"
    with torch.no_grad():
        a = reward.text_features(["Tom &amp; \u201cJerry\u201d!!"], torch.device("cpu"))
        b = reward.text_features(['tom & "jerry"!!'], torch.device("cpu"))
        ref = F.normalize(ref_text(sd, clip_tokenize(['tom & "jerry"!!']), OC["heads"], "gelu"), dim=-1)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, ref, atol=1e-5, rtol=1e-5)


def test_pickscore_both_forms_and_text_cache(tmp_path):
    from transformers import CLIPModel

    from t2v_turbo.errors import ConfigError
    from t2v_turbo.open_clip_convert import open_clip_config

    torch.manual_seed(0)
    model = CLIPModel(open_clip_config("tiny")).eval()
    model.logit_scale.data.fill_(3.0)
    model.save_pretrained(tmp_path / "PickScore_v1")
    turbo = build_reward("pickscore", path=tmp_path / "PickScore_v1")  # default: T2V-Turbo's form
    paper = build_reward("pickscore", path=tmp_path / "PickScore_v1", form="pickscore")
    images = _video(b=1, t=2, h=40, w=70).detach()[0].transpose(0, 1)  # (2, 3, 40, 70)
    prompts = ["a cat &amp; a dog!!", "\u201cquoted\u201d"]
    mean, std = torch.tensor(OPENAI_CLIP_MEAN)[:, None, None], torch.tensor(OPENAI_CLIP_STD)[:, None, None]
    unit = (images / 2 + 0.5).clamp(0, 1)

    def feats(pix):
        with torch.no_grad():
            img = model.get_image_features(pixel_values=(pix - mean) / std)
            txt = model.get_text_features(input_ids=clip_tokenize(prompts, clean="transformers"))
        img, txt = (o if isinstance(o, torch.Tensor) else o.pooler_output for o in (img, txt))
        return (F.normalize(img, dim=-1) * F.normalize(txt, dim=-1)).sum(-1)

    # T2V-Turbo: Resize((224, 224)) bicubic (squash), CenterCrop(224) is then a no-op, plain cosine
    squash = F.interpolate(unit, size=(224, 224), mode="bicubic", antialias=True, align_corners=False)
    # PickScore paper (CLIP processor): short side 224 (long = int(224 * 70 / 40) = 392), centre crop
    # floor((392 - 224) / 2) = 84, times exp(logit_scale)
    short = F.interpolate(unit, size=(224, 392), mode="bicubic", antialias=True, align_corners=False)
    with torch.no_grad():
        a, b = turbo.score_images(images, prompts), paper.score_images(images, prompts)
    torch.testing.assert_close(a, feats(squash), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b, feats(short[..., 84 : 84 + 224]) * torch.tensor(3.0).exp(), atol=1e-4, rtol=1e-5)
    assert a.abs().max() <= 1 and turbo.text_clean == paper.text_clean == "transformers"
    scaled = build_reward("pickscore", path=tmp_path / "PickScore_v1", form="pickscore", scale=1.0)
    with torch.no_grad():
        torch.testing.assert_close(scaled.score_images(images, prompts), b / torch.tensor(3.0).exp())
    with pytest.raises(ConfigError, match="t2v-turbo"):
        build_reward("pickscore", path=tmp_path / "PickScore_v1", form="paper")
    cos = turbo
    calls = []
    enc = cos.text_features.encode
    cos.text_features.encode = lambda p: calls.append(list(p)) or enc(p)
    cos.text_features.store.clear()
    cos.text_features(["x", "y", "x"], torch.device("cpu"))
    cos.text_features(["y", "z"], torch.device("cpu"))
    assert calls == [["x", "y"], ["z"]]  # computed once per prompt


def test_bf16_and_gradient_checkpointing(hps_file, monkeypatch):
    import t2v_turbo.weights as weights

    calls = []
    real = weights.checkpoint
    monkeypatch.setattr(weights, "checkpoint", lambda fn, *a, **k: calls.append(1) or real(fn, *a, **k))
    path, _ = hps_file
    base = build_reward("hpsv2.1", path=path, config="tiny")
    ckpt = build_reward("hpsv2.1", path=path, config="tiny", gradient_checkpointing=True)
    half = build_reward("hpsv2.1", path=path, config="tiny", dtype=torch.bfloat16)
    v1, v2 = _video(), _video()
    s1, s2 = base(v1, PROMPTS), ckpt(v2, PROMPTS)
    s1.sum().backward()
    s2.sum().backward()
    torch.testing.assert_close(s1, s2)
    assert len(calls) == 2  # both vision layers were checkpointed (and no text layer: no grad there)
    torch.testing.assert_close(v1.grad, v2.grad, atol=1e-7, rtol=1e-5)
    v3 = _video()
    s3 = half(v3, PROMPTS)
    assert s3.dtype == torch.float32 and next(half.model.parameters()).dtype == torch.bfloat16
    torch.testing.assert_close(s3, s1.detach(), atol=3e-2, rtol=0)
    s3.sum().backward()
    assert v3.grad.abs().sum() > 0


# ---- ImageReward -------------------------------------------------------------------------------

VIT = dict(width=32, layers=2, heads=4, patch=32, mlp=64)


def image_reward_checkpoint(seed=0):
    """ImageReward.pt layout: blip.visual_encoder (timm ViT names), blip.text_encoder (BLIP med BERT), mlp.layers."""
    from t2v_turbo.rewards.image_reward import ImageReward

    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g) * 0.2

    w, n = VIT["width"], (224 // VIT["patch"]) ** 2 + 1
    v = {"cls_token": r(1, 1, w), "pos_embed": r(1, n, w), "patch_embed.proj.weight": r(w, 3, 32, 32)}
    v.update({"patch_embed.proj.bias": r(w), "norm.weight": 1 + r(w), "norm.bias": r(w)})
    for i in range(VIT["layers"]):
        p = f"blocks.{i}."
        v.update(
            {
                p + "norm1.weight": 1 + r(w),
                p + "norm1.bias": r(w),
                p + "norm2.weight": 1 + r(w),
                p + "norm2.bias": r(w),
            }
        )
        v.update(
            {
                p + "attn.qkv.weight": r(3 * w, w),
                p + "attn.qkv.bias": r(3 * w),
                p + "attn.proj.weight": r(w, w),
            }
        )
        v.update({p + "attn.proj.bias": r(w), p + "mlp.fc1.weight": r(64, w), p + "mlp.fc1.bias": r(64)})
        v.update({p + "mlp.fc2.weight": r(w, 64), p + "mlp.fc2.bias": r(w)})
    sd = {"blip.visual_encoder." + k: t for k, t in v.items()}
    text = ImageReward("tiny").blip.text_encoder.state_dict()
    suffixes = {k.split(".", 3)[-1] for k in text if k.startswith("encoder.layer.0.")}
    assert suffixes == {  # BLIP med.py BertLayer names (self + cross attention)
        f"{a}.{b}"
        for a in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                  "attention.output.LayerNorm", "crossattention.self.query", "crossattention.self.key",
                  "crossattention.self.value", "crossattention.output.dense", "crossattention.output.LayerNorm",
                  "intermediate.dense", "output.dense", "output.LayerNorm")
        for b in ("weight", "bias")
    }  # fmt: skip
    assert text["encoder.layer.1.crossattention.self.key.weight"].shape == (
        32,
        w,
    )  # keys from the image width
    sd.update(
        {
            "blip.text_encoder." + k: r(*t.shape) + (1 if "LayerNorm.weight" in k else 0)
            for k, t in text.items()
        }
    )
    dims = [(32, 1024), (1024, 128), (128, 64), (64, 16), (16, 1)]
    for i, (a, b) in zip((0, 2, 4, 6, 7), dims):
        sd[f"mlp.layers.{i}.weight"], sd[f"mlp.layers.{i}.bias"] = r(b, a) * 3, r(b)
    # present in the official file, unused by the score
    sd["blip.text_encoder.embeddings.position_ids"] = torch.arange(40)[None]
    sd["blip.vision_proj.weight"], sd["blip.text_proj.weight"] = r(256, w), r(256, 32)
    return sd


def ref_vit(sd, pixels, heads=VIT["heads"]):
    """BLIP/timm VisionTransformer, explicitly: patches + cls + pos, pre-norm blocks (eps 1e-6), final norm."""
    p = "blip.visual_encoder."
    x = F.conv2d(pixels, sd[p + "patch_embed.proj.weight"], sd[p + "patch_embed.proj.bias"], stride=32)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([sd[p + "cls_token"].expand(len(x), 1, -1), x], 1) + sd[p + "pos_embed"]
    w = x.shape[-1]
    for i in range(VIT["layers"]):
        b = f"{p}blocks.{i}."
        h = F.layer_norm(x, (w,), sd[b + "norm1.weight"], sd[b + "norm1.bias"], 1e-6)
        q, k, v = (h @ sd[b + "attn.qkv.weight"].T + sd[b + "attn.qkv.bias"]).chunk(3, -1)
        q, k, v = (t.unflatten(-1, (heads, w // heads)).transpose(1, 2) for t in (q, k, v))
        a = ((q @ k.transpose(-1, -2)) * (w // heads) ** -0.5).softmax(-1) @ v
        x = x + a.transpose(1, 2).flatten(2) @ sd[b + "attn.proj.weight"].T + sd[b + "attn.proj.bias"]
        h = F.layer_norm(x, (w,), sd[b + "norm2.weight"], sd[b + "norm2.bias"], 1e-6)
        h = F.gelu(h @ sd[b + "mlp.fc1.weight"].T + sd[b + "mlp.fc1.bias"])
        x = x + h @ sd[b + "mlp.fc2.weight"].T + sd[b + "mlp.fc2.bias"]
    return F.layer_norm(x, (w,), sd[p + "norm.weight"], sd[p + "norm.bias"], 1e-6)


def test_image_reward_official_layout_vit_and_head(tmp_path):
    sd = image_reward_checkpoint()
    torch.save(sd, tmp_path / "ImageReward.pt")
    reward = build_reward("image-reward", path=tmp_path / "ImageReward.pt", config="tiny")
    capped = build_reward("image-reward", path=tmp_path / "ImageReward.pt", config="tiny", cap=2.0)
    video = _video(b=2, t=2)
    images = video.detach().permute(0, 2, 1, 3, 4).flatten(0, 1)
    prompts = ["a cat"] * 2 + ["a dog on the grass"] * 2
    with torch.no_grad():
        pix = reward.preprocess(images)
        embeds = reward.blip.visual_encoder(pixel_values=pix).last_hidden_state
        torch.testing.assert_close(embeds, ref_vit(sd, pix), atol=1e-5, rtol=1e-5)
        ids, mask = reward.tokens(prompts, pix.device)
        cls = reward.blip.text_encoder(
            input_ids=ids, attention_mask=mask, encoder_hidden_states=embeds
        ).last_hidden_state[:, 0]
        h = cls
        for i in (0, 2, 4, 6, 7):  # the MLP head (dropouts are inactive in eval)
            h = h @ sd[f"mlp.layers.{i}.weight"].T + sd[f"mlp.layers.{i}.bias"]
        expected = (h.squeeze(-1) - REWARD_MEAN) / REWARD_STD
        ours = reward.score_images(images, prompts)
        torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            capped.score_images(images, prompts), -F.relu(2.0 - expected), atol=1e-5, rtol=1e-5
        )
    assert ids.shape == (4, 35) and ids[0, 0] == 101
    assert ours.std() > 0  # the image matters through the cross-attention
    s = reward(video, ["a cat", "a dog on the grass"])
    s.sum().backward()
    assert video.grad.abs().sum() > 0 and all(p.grad is None for p in reward.parameters())


def test_image_reward_strictness(tmp_path):
    sd = image_reward_checkpoint()
    torch.save({**sd, "blip.itm_head.weight": torch.zeros(2, 32)}, tmp_path / "extra.pt")
    with pytest.raises(CheckpointError, match="itm_head"):
        build_reward("image-reward", path=tmp_path / "extra.pt", config="tiny")
    with pytest.warns(UserWarning, match="ignoring 1 unexpected"):
        build_reward("image-reward", path=tmp_path / "extra.pt", config="tiny", strict=False)
    del sd["blip.visual_encoder.blocks.1.attn.qkv.bias"]
    torch.save(sd, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="qkv.bias"):
        build_reward("image-reward", path=tmp_path / "missing.pt", config="tiny")


class _TorchScriptCLIP(torch.nn.Module):
    """Stand-in for OpenAI's ViT-L-14.pt, a TorchScript archive whose state dict carries meta ints."""

    def __init__(self):
        super().__init__()
        self.logit_scale = torch.nn.Parameter(torch.tensor(4.6))
        self.register_buffer("input_resolution", torch.tensor(224))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.logit_scale


def test_openai_torchscript_archive_is_read(tmp_path):
    from t2v_turbo.open_clip_convert import state_dict_from_open_clip
    from t2v_turbo.weights import read_state_dict

    torch.jit.save(torch.jit.script(_TorchScriptCLIP()), tmp_path / "ViT-L-14.pt")
    sd = read_state_dict(tmp_path / "ViT-L-14.pt", torchscript=True)  # weights_only torch.load refuses TorchScript
    assert set(sd) == {"logit_scale", "input_resolution"} and sd["logit_scale"].item() == pytest.approx(4.6)
    assert set(state_dict_from_open_clip(sd)) == {"logit_scale"}  # meta ints dropped
