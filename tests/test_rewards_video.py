"""Video-text rewards (ViCLIP, InternVideo2) on tiny random checkpoints written in the official layouts,
checked against explicit forwards written here."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from t2v_turbo.errors import CheckpointError
from t2v_turbo.rewards import build_reward
from t2v_turbo.tokenizers import clip_tokenize
from test_open_clip_convert import _resblocks, ref_text

W, HEADS, LAYERS, P, E = 32, 4, 2, 32, 16  # tiny widths shared by both models; 224 input, patch 32 -> 7 x 7
PROMPTS = ["a cat jumping", "waves on a beach at sunset"]


def _rand(g):
    return lambda *shape: torch.randn(*shape, generator=g) * 0.2


def _video(t, b=2, h=48, w=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(b, 3, t, h, w, generator=g) * 1.8 - 0.9).requires_grad_()


def _clip_blocks(r, prefix, w, n):
    out = {}
    for i in range(n):
        p = f"{prefix}transformer.resblocks.{i}."
        for ln in ("ln_1", "ln_2"):
            out[p + ln + ".weight"], out[p + ln + ".bias"] = 1 + r(w), r(w)
        out[p + "attn.in_proj_weight"], out[p + "attn.in_proj_bias"] = r(3 * w, w), r(3 * w)
        out[p + "attn.out_proj.weight"], out[p + "attn.out_proj.bias"] = r(w, w), r(w)
        out[p + "mlp.c_fc.weight"], out[p + "mlp.c_fc.bias"] = r(4 * w, w), r(4 * w)
        out[p + "mlp.c_proj.weight"], out[p + "mlp.c_proj.bias"] = r(w, 4 * w), r(w)
    return out


def viclip_checkpoint(seed=0):
    """ViClip-InternVid-10M-FLT.pth layout: {'model': vision_encoder.*, text_encoder.*, temp}."""
    r = _rand(torch.Generator().manual_seed(seed))
    v = "vision_encoder."
    sd = {
        v + "conv1.weight": r(W, 3, 1, P, P),
        v + "class_embedding": r(W),
        v + "positional_embedding": r(50, W),
    }
    sd.update({v + "temporal_positional_embedding": r(1, 8, W), v + "proj": r(W, E)})
    sd.update(
        {
            v + "ln_pre.weight": 1 + r(W),
            v + "ln_pre.bias": r(W),
            v + "ln_post.weight": 1 + r(W),
            v + "ln_post.bias": r(W),
        }
    )
    sd.update(_clip_blocks(r, v, W, LAYERS))
    t = "text_encoder."
    sd.update({t + "token_embedding.weight": r(49408, W) * 5, t + "positional_embedding": r(32, W)})
    sd.update({t + "ln_final.weight": 1 + r(W), t + "ln_final.bias": r(W), t + "text_projection": r(W, E)})
    sd.update(_clip_blocks(r, t, W, LAYERS))
    sd["temp"] = torch.tensor(0.01)
    return {"model": sd}


def ref_viclip_video(sd, x):
    """ViCLIP video tower, explicitly, frame by frame (frame-major tokens; the class token is order-invariant)."""
    p = "vision_encoder."
    b, _, t = x.shape[:3]
    tok = F.conv2d(x.transpose(1, 2).flatten(0, 1), sd[p + "conv1.weight"][:, :, 0], stride=P)
    tok = tok.flatten(2).transpose(1, 2) + sd[p + "positional_embedding"][1:]  # (B T, 49, W)
    tok = tok.view(b, t, 49, W) + sd[p + "temporal_positional_embedding"][0][:, None]
    cls = (sd[p + "class_embedding"] + sd[p + "positional_embedding"][0]).expand(b, 1, W)
    h = torch.cat([cls, tok.flatten(1, 2)], 1)
    h = F.layer_norm(h, (W,), sd[p + "ln_pre.weight"], sd[p + "ln_pre.bias"], 1e-5)
    h = _resblocks(sd, p, h, HEADS, LAYERS, "quick_gelu")
    return (
        F.layer_norm(h[:, 0], (W,), sd[p + "ln_post.weight"], sd[p + "ln_post.bias"], 1e-5) @ sd[p + "proj"]
    )


def test_viclip_official_layout_matches_explicit_forward(tmp_path):
    ckpt = viclip_checkpoint()
    torch.save(ckpt, tmp_path / "ViClip-InternVid-10M-FLT.pth")
    reward = build_reward(
        "viclip", path=tmp_path / "ViClip-InternVid-10M-FLT.pth", config="tiny", crop="center"
    )
    assert reward.kind == "video" and reward.num_frames == 8
    video = _video(8)
    sd = ckpt["model"]
    with torch.no_grad():
        pix = reward.preprocess(video)
        vid = F.normalize(ref_viclip_video(sd, pix), dim=-1)
        text_sd = {k.removeprefix("text_encoder."): v for k, v in sd.items() if k.startswith("text_encoder.")}
        txt = F.normalize(ref_text(text_sd, clip_tokenize(PROMPTS, 32), HEADS, "quick_gelu"), dim=-1)
        ours = reward(video, PROMPTS)
    assert pix.shape == (2, 3, 8, 224, 224)
    torch.testing.assert_close(ours, (vid * txt).sum(-1), atol=1e-5, rtol=1e-5)
    s = reward(video, PROMPTS)
    s.sum().backward()
    assert video.grad.abs().sum() > 0 and all(
        not p.requires_grad and p.grad is None for p in reward.parameters()
    )
    with pytest.raises(ValueError, match="8 frames"):
        reward(_video(4), PROMPTS)


def test_viclip_strict_keys_and_crops(tmp_path):
    ckpt = viclip_checkpoint()
    bad = {"model": {k.replace("ln_post", "norm_post"): v for k, v in ckpt["model"].items()}}
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="ln_post"):
        build_reward("viclip", path=tmp_path / "bad.pth", config="tiny")
    torch.save(ckpt, tmp_path / "v.pth")
    a = build_reward("viclip", path=tmp_path / "v.pth", config="tiny", seed=7)
    b = build_reward("viclip", path=tmp_path / "v.pth", config="tiny", seed=7)
    c = build_reward("viclip", path=tmp_path / "v.pth", config="tiny", crop="center")
    video = _video(8, w=160).detach()
    with torch.no_grad():
        sa, sb, sc = a(video, PROMPTS), b(video, PROMPTS), c(video, PROMPTS)
    torch.testing.assert_close(sa, sb)  # seeded random crops reproduce
    assert not torch.allclose(sa, sc)  # a 224 x 746 frame: random and centre crops differ


# ---- InternVideo2 --------------------------------------------------------------------------------

HID = int(W * 48 / 11)  # mlp_ratio 48/11


def internvideo2_checkpoint(seed=0, frames=4, text_layers=2):
    """InternVideo2-stage2 layout: {'module': vision_encoder.*, text_encoder.bert/cls.*, projections, heads}."""
    from transformers import BertConfig, BertModel

    g = torch.Generator().manual_seed(seed)
    r = _rand(g)
    v = "vision_encoder."
    sd = {v + "patch_embed.proj.weight": r(W, 3, 1, P, P), v + "patch_embed.proj.bias": r(W)}
    sd.update({v + "cls_token": r(1, 1, W), v + "pos_embed": r(1, 1 + frames * 49, W)})
    for i in range(LAYERS):
        p = f"{v}blocks.{i}."
        sd.update(
            {p + "norm1.weight": 1 + r(W), p + "norm2.weight": 1 + r(W), p + "attn.qkv.weight": r(3 * W, W)}
        )
        sd.update(
            {
                p + "attn.q_norm.weight": 1 + r(W),
                p + "attn.k_norm.weight": 1 + r(W),
                p + "attn.proj.weight": r(W, W),
            }
        )
        sd.update({p + "attn.proj.bias": r(W), p + "ls1.gamma": 0.5 + r(W), p + "ls2.gamma": 0.5 + r(W)})
        sd.update(
            {p + "mlp.fc1.weight": r(HID, W), p + "mlp.fc1.bias": r(HID), p + "mlp.fc2.weight": r(W, HID)}
        )
        sd[p + "mlp.fc2.bias"] = r(W)
    c = v + "clip_projector."
    for n in ("norm1_q", "norm1_k", "norm1_v"):
        sd[c + n + ".weight"], sd[c + n + ".bias"] = 1 + r(W), r(W)
    for n in "qkv":
        sd[f"{c}cross_attn.{n}.weight"], sd[f"{c}cross_attn.{n}_bias"] = r(W, W), r(W)
    sd[c + "cross_attn.proj.weight"], sd[c + "cross_attn.proj.bias"] = r(E, W), r(E)
    bert = BertModel(BertConfig(vocab_size=30522, hidden_size=W, num_hidden_layers=text_layers, num_attention_heads=HEADS,
                                intermediate_size=64), add_pooling_layer=False)  # fmt: skip
    sd.update(
        {
            "text_encoder.bert." + k: r(*t.shape) + (1 if "LayerNorm.weight" in k else 0)
            for k, t in bert.state_dict().items()
        }
    )
    sd.update(
        {
            "vision_proj.weight": r(8, E),
            "vision_proj.bias": r(8),
            "text_proj.weight": r(8, W),
            "text_proj.bias": r(8),
        }
    )
    sd["temp"] = torch.tensor(0.01)
    # unused by the score: distillation heads, fusion (cross-attention) layers, MLM / ITM heads, buffers
    extra = {
        v + "clip_decoder.0.head.weight": r(24, W),
        v + "clip_decoder.0.norm.weight": r(24),
        v + "img_pos_embed": r(1, 50, W),
    }
    extra.update(
        {v + "final_clip_decoder.head.weight": r(12, E), v + "clip_pos_embed": r(1, 1 + frames * 49, W)}
    )
    fusion = f"text_encoder.bert.encoder.layer.{text_layers}."
    extra.update(
        {fusion + "crossattention.self.key.weight": r(W, W), fusion + "attention.self.query.weight": r(W, W)}
    )
    extra.update(
        {"text_encoder.cls.predictions.bias": r(30522), "itm_head.weight": r(2, W), "itm_head.bias": r(2)}
    )
    extra["text_encoder.bert.embeddings.position_ids"] = torch.arange(512)[None]
    return {"module": {**sd, **extra}}


def _rms(x, w):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w


def ref_iv2_video(sd, x, act="tanh"):
    """InternVideo2 video tower + vision_proj, explicitly (RMSNorm, q/k norm, LayerScale, attention pooling)."""
    p = "vision_encoder."
    tok = F.conv3d(x, sd[p + "patch_embed.proj.weight"], sd[p + "patch_embed.proj.bias"], stride=(1, P, P))
    h = (
        torch.cat([sd[p + "cls_token"].expand(len(x), 1, W), tok.flatten(2).transpose(1, 2)], 1)
        + sd[p + "pos_embed"]
    )
    d = W // HEADS
    for i in range(LAYERS):
        b = f"{p}blocks.{i}."
        q, k, v = (_rms(h, sd[b + "norm1.weight"]) @ sd[b + "attn.qkv.weight"].T).chunk(3, -1)
        q, k = _rms(q, sd[b + "attn.q_norm.weight"]), _rms(k, sd[b + "attn.k_norm.weight"])
        q, k, v = (t.unflatten(-1, (HEADS, d)).transpose(1, 2) for t in (q, k, v))
        a = ((q @ k.transpose(-1, -2)) / d**0.5).softmax(-1) @ v
        a = a.transpose(1, 2).flatten(2) @ sd[b + "attn.proj.weight"].T + sd[b + "attn.proj.bias"]
        h = h + sd[b + "ls1.gamma"] * a
        m = F.gelu(
            _rms(h, sd[b + "norm2.weight"]) @ sd[b + "mlp.fc1.weight"].T + sd[b + "mlp.fc1.bias"],
            approximate=act,
        )
        h = h + sd[b + "ls2.gamma"] * (m @ sd[b + "mlp.fc2.weight"].T + sd[b + "mlp.fc2.bias"])
    c = p + "clip_projector."

    def ln(t, n):
        return F.layer_norm(t, (W,), sd[c + n + ".weight"], sd[c + n + ".bias"], 1e-5)

    q = ln(h.mean(1, keepdim=True), "norm1_q") @ sd[c + "cross_attn.q.weight"].T + sd[c + "cross_attn.q_bias"]
    k = ln(h, "norm1_k") @ sd[c + "cross_attn.k.weight"].T + sd[c + "cross_attn.k_bias"]
    v = ln(h, "norm1_v") @ sd[c + "cross_attn.v.weight"].T + sd[c + "cross_attn.v_bias"]
    q, k, v = (t.unflatten(-1, (HEADS, d)).transpose(1, 2) for t in (q, k, v))
    pooled = (((q @ k.transpose(-1, -2)) / d**0.5).softmax(-1) @ v).transpose(1, 2).flatten(2)[:, 0]
    pooled = pooled @ sd[c + "cross_attn.proj.weight"].T + sd[c + "cross_attn.proj.bias"]
    return pooled @ sd["vision_proj.weight"].T + sd["vision_proj.bias"]


@pytest.mark.parametrize("act", ["gelu_tanh", "gelu"])
def test_internvideo2_official_layout_matches_explicit_forward(tmp_path, act):
    from transformers import BertConfig, BertModel

    ckpt = internvideo2_checkpoint()
    torch.save(ckpt, tmp_path / "InternVideo2-stage2_1b-224p-f4.pt")
    reward = build_reward(
        "internvideo2",
        path=tmp_path / "InternVideo2-stage2_1b-224p-f4.pt",
        config={**_tiny(), "mlp_act": act},
        crop="center",
    )
    assert reward.num_frames == 4 and reward.kind == "video"
    sd = ckpt["module"]
    video = _video(4)
    ref_act, other = ("tanh", "none") if act == "gelu_tanh" else ("none", "tanh")
    with torch.no_grad():
        pix = reward.preprocess(video)
        vid = F.normalize(ref_iv2_video(sd, pix, ref_act), dim=-1)
        bert = BertModel(BertConfig(vocab_size=30522, hidden_size=W, num_hidden_layers=2, num_attention_heads=HEADS,
                                    intermediate_size=64), add_pooling_layer=False).eval()  # fmt: skip
        bert.load_state_dict({k[len("text_encoder.bert.") :]: t for k, t in sd.items()
                              if k.startswith("text_encoder.bert.") and ".layer.2." not in k and "position_ids" not in k})  # fmt: skip
        ids, mask = _iv2_text_ids()
        cls = bert(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0]
        txt = F.normalize(cls @ sd["text_proj.weight"].T + sd["text_proj.bias"], dim=-1)
        ours = reward(video, PROMPTS)
    torch.testing.assert_close(ours, (vid * txt).sum(-1), atol=1e-5, rtol=1e-5)
    # the tanh GELU differs from the exact one by < 1e-3, too little to show in the scores: check the module
    mlp_act = reward.model.vision_encoder.blocks[0].mlp.act
    assert mlp_act(torch.tensor([1.5])).item() == pytest.approx(
        F.gelu(torch.tensor([1.5]), approximate=ref_act).item(), abs=1e-7
    )
    assert mlp_act(torch.tensor([1.5])).item() != pytest.approx(
        F.gelu(torch.tensor([1.5]), approximate=other).item(), abs=1e-6
    )
    s = reward(video, PROMPTS)
    s.sum().backward()
    assert video.grad.abs().sum() > 0 and all(
        not p.requires_grad and p.grad is None for p in reward.parameters()
    )


def _tiny():
    from t2v_turbo.rewards.internvideo2 import TINY

    return dict(TINY)


def _iv2_text_ids():
    """InternVideo2's tokenizer input for PROMPTS: "[CLS] text" with no [SEP], zero padded to 40
    (bert-base-uncased ids: a 1037, cat 4937, jumping 8660, waves 5975, on 2006, beach 3509, at 2012,
    sunset 10434)."""
    rows = [[101, 1037, 4937, 8660], [101, 5975, 2006, 1037, 3509, 2012, 10434]]
    ids = torch.tensor([r + [0] * (40 - len(r)) for r in rows])
    return ids, (ids != 0).long()


def test_internvideo2_8_frames_from_the_4_frame_checkpoint(tmp_path):
    ckpt = internvideo2_checkpoint(frames=4)
    torch.save(ckpt, tmp_path / "InternVideo2-stage2_1b-224p-f4.pt")
    path = tmp_path / "InternVideo2-stage2_1b-224p-f4.pt"
    stored = ckpt["module"]["vision_encoder.pos_embed"]  # (1, 1 + 4 * 49, W)
    by_arg = build_reward("internvideo2", path=path, config="tiny", num_frames=8, crop="center")
    by_cfg = build_reward("internvideo2", path=path, config={**_tiny(), "num_frames": 8}, crop="center")
    # the official loader: per patch and channel, linear interpolation over time (align_corners=False)
    patches = stored[0, 1:].view(4, 49, W).permute(1, 2, 0)  # (49, W, 4)
    interp = F.interpolate(patches, size=8, mode="linear", align_corners=False).permute(2, 0, 1).reshape(1, 8 * 49, W)
    expected = torch.cat([stored[:, :1], interp], 1)
    # closed form of that interpolation for 4 -> 8: frame j samples source (j + 0.5) / 2 - 0.5, clamped
    src = stored[0, 1:].view(4, 49, W)
    hand = torch.stack([src[0], 0.75 * src[0] + 0.25 * src[1], 0.25 * src[0] + 0.75 * src[1],
                        0.75 * src[1] + 0.25 * src[2], 0.25 * src[1] + 0.75 * src[2],
                        0.75 * src[2] + 0.25 * src[3], 0.25 * src[2] + 0.75 * src[3], src[3]])  # fmt: skip
    torch.testing.assert_close(expected[0, 1:], hand.reshape(8 * 49, W))
    for reward in (by_arg, by_cfg):
        assert reward.num_frames == 8 and reward.model.config["num_frames"] == 8
        torch.testing.assert_close(reward.model.vision_encoder.pos_embed.data, expected, rtol=0, atol=0)
    video = _video(8)
    sd = {**ckpt["module"], "vision_encoder.pos_embed": expected}
    with torch.no_grad():
        pix = by_arg.preprocess(video)
        ours = by_arg(video, PROMPTS)
        four = build_reward("internvideo2", path=path, config="tiny", crop="center")  # built for 4 frames
        on_the_fly = four.score(video, PROMPTS)  # asked for 8: interpolates its own embedding the same way
        ids, mask = _iv2_text_ids()
        txt = by_arg.model.text_proj(by_arg.model.text_encoder.bert(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0])
    ref = (F.normalize(ref_iv2_video(sd, pix), dim=-1) * F.normalize(txt, dim=-1)).sum(-1)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(on_the_fly, ours, atol=1e-6, rtol=1e-6)
    assert four.num_frames == 4 and not torch.allclose(four(_video(4), PROMPTS), ours)


def test_internvideo2_text_is_cls_without_sep(tmp_path):
    torch.save(internvideo2_checkpoint(), tmp_path / "iv2.pt")
    reward = build_reward("internvideo2", path=tmp_path / "iv2.pt", config="tiny")
    m = reward.model
    with torch.no_grad():
        ids, mask = _iv2_text_ids()
        cls = m.text_encoder.bert(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0]
        ref = F.normalize(m.text_proj(cls), dim=-1)
        torch.testing.assert_close(m.encode_text(PROMPTS), ref, atol=1e-6, rtol=1e-6)
        with_sep = ids.clone()
        with_sep[0, 4], with_sep[1, 7] = 102, 102  # what a plain BertTokenizer would give
        sep = m.text_encoder.bert(input_ids=with_sep, attention_mask=(with_sep != 0).long()).last_hidden_state[:, 0]
        assert not torch.allclose(F.normalize(m.text_proj(sep), dim=-1), ref, atol=1e-4)


def test_video_reward_rounds_the_long_side_and_crops_once_per_batch(tmp_path):
    torch.save(internvideo2_checkpoint(), tmp_path / "iv2.pt")
    kw = dict(path=tmp_path / "iv2.pt", config="tiny")
    video = torch.rand(3, 3, 4, 232, 246) * 2 - 1
    # T2V-Turbo's ResizeCropMinSize: 232 x 246 -> (round(232 * 224/232), round(246 * 224/232)) = (224, 238)
    centre = build_reward("internvideo2", crop="center", **kw).preprocess(video)
    resized = F.interpolate(((video / 2 + 0.5).clamp(0, 1)).transpose(1, 2).flatten(0, 1), size=(224, 238),
                            mode="bicubic", antialias=True, align_corners=False)  # fmt: skip
    mean, std = torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    expected = ((resized[..., 7 : 7 + 224] - mean) / std).view(3, 4, 3, 224, 224).transpose(1, 2)
    torch.testing.assert_close(centre, expected, atol=1e-5, rtol=1e-5)
    # random crops: one for the whole batch by default (the authors), one per video as an option
    wide = torch.rand(1, 3, 1, 20, 200).expand(6, 3, 4, 20, 200) * 2 - 1  # 224 x 2240 after the resize
    batch = build_reward("internvideo2", seed=3, **kw).preprocess(wide)
    per_video = build_reward("internvideo2", seed=3, crop="random_per_video", **kw).preprocess(wide)
    assert all(torch.equal(batch[0], batch[i]) for i in range(6))
    assert len({tuple(per_video[i, 0, 0, 0, :3].tolist()) for i in range(6)}) > 1
    g = torch.Generator().manual_seed(3)  # the batch crop is torchvision RandomCrop's draw: top, then left
    top, left = (int(torch.randint(0, n - 224 + 1, (1,), generator=g)) for n in (224, 2240))
    ref = F.interpolate(((wide / 2 + 0.5).clamp(0, 1)).transpose(1, 2).flatten(0, 1), size=(224, 2240),
                        mode="bicubic", antialias=True, align_corners=False)[..., top : top + 224, left : left + 224]  # fmt: skip
    torch.testing.assert_close(batch, ((ref - mean) / std).view(6, 4, 3, 224, 224).transpose(1, 2), atol=1e-5, rtol=1e-5)


def test_internvideo2_strictness_bf16_and_checkpointing(tmp_path):
    ckpt = internvideo2_checkpoint()
    torch.save(
        {"module": {**ckpt["module"], "vision_encoder.blocks.0.attn.extra": torch.zeros(1)}},
        tmp_path / "x.pt",
    )
    with pytest.raises(CheckpointError, match="attn.extra"):
        build_reward("internvideo2", path=tmp_path / "x.pt", config="tiny")
    torch.save(ckpt, tmp_path / "iv2.pt")
    kw = dict(path=tmp_path / "iv2.pt", config="tiny", crop="center")
    base, ckp = (
        build_reward("internvideo2", **kw),
        build_reward("internvideo2", gradient_checkpointing=True, **kw),
    )
    half = build_reward("internvideo2", dtype=torch.bfloat16, **kw)
    v1, v2, v3 = _video(4), _video(4), _video(4)
    s1, s2, s3 = base(v1, PROMPTS), ckp(v2, PROMPTS), half(v3, PROMPTS)
    (s1.sum() + s2.sum() + s3.sum()).backward()
    torch.testing.assert_close(s1, s2)
    torch.testing.assert_close(v1.grad, v2.grad, atol=1e-7, rtol=1e-5)
    assert s3.dtype == torch.float32 and v3.grad.abs().sum() > 0
    torch.testing.assert_close(s3, s1.detach(), atol=5e-2, rtol=0)
