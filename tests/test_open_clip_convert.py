"""open_clip <-> transformers CLIP converter: an explicit open_clip forward written here, exact round trips,
and the full-size ViT-H-14 key layout recorded from open_clip 2.24 (vc2_layouts)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from t2v_turbo.errors import CheckpointError
from t2v_turbo.open_clip_convert import (
    open_clip_config,
    open_clip_text_config,
    open_clip_text_hidden,
    open_clip_vision_config,
    state_dict_from_open_clip,
    state_dict_to_open_clip,
    text_state_dict_from_open_clip,
    text_state_dict_to_open_clip,
    vision_state_dict_from_open_clip,
    vision_state_dict_to_open_clip,
)

# reference layouts recorded from open_clip 2.24 (vendored in tests/fixtures)
LAYOUTS = Path(__file__).resolve().parent / "fixtures" / "vc2_layouts"
TINY = dict(embed=16, width=32, heads=4, layers=2, ctx=12, vocab=50, vwidth=24, vheads=3, patch=8, image=32)


def open_clip_state_dict(c=TINY, seed=0) -> dict[str, torch.Tensor]:
    """A random state dict in open_clip's own key names and shapes (written by hand from its layout)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, s=0.2):
        return torch.randn(*shape, generator=g) * s

    def blocks(prefix, w, n):
        out = {}
        for i in range(n):
            p = f"{prefix}transformer.resblocks.{i}."
            out.update({p + "ln_1.weight": 1 + r(w), p + "ln_1.bias": r(w)})
            out.update({p + "attn.in_proj_weight": r(3 * w, w), p + "attn.in_proj_bias": r(3 * w)})
            out.update({p + "attn.out_proj.weight": r(w, w), p + "attn.out_proj.bias": r(w)})
            out.update({p + "ln_2.weight": 1 + r(w), p + "ln_2.bias": r(w)})
            out.update({p + "mlp.c_fc.weight": r(4 * w, w), p + "mlp.c_fc.bias": r(4 * w)})
            out.update({p + "mlp.c_proj.weight": r(w, 4 * w), p + "mlp.c_proj.bias": r(w)})
        return out

    w, v, grid = c["width"], c["vwidth"], c["image"] // c["patch"]
    sd = {
        "positional_embedding": r(c["ctx"], w),
        "text_projection": r(w, c["embed"]),
        "logit_scale": torch.tensor(2.5),
    }
    sd.update(blocks("", w, c["layers"]))
    sd.update(
        {
            "token_embedding.weight": r(c["vocab"], w, s=1.0),
            "ln_final.weight": 1 + r(w),
            "ln_final.bias": r(w),
        }
    )
    sd.update({"visual.class_embedding": r(v), "visual.positional_embedding": r(grid * grid + 1, v)})
    sd.update({"visual.proj": r(v, c["embed"]), "visual.conv1.weight": r(v, 3, c["patch"], c["patch"])})
    sd.update({"visual.ln_pre.weight": 1 + r(v), "visual.ln_pre.bias": r(v)})
    sd.update(blocks("visual.", v, c["layers"]))
    sd.update({"visual.ln_post.weight": 1 + r(v), "visual.ln_post.bias": r(v)})
    return sd


def _act(x, act):
    return x * torch.sigmoid(1.702 * x) if act == "quick_gelu" else F.gelu(x)


def _resblocks(sd, prefix, x, heads, n, act, mask=None):
    """open_clip ResidualAttentionBlock, explicitly: x + attn(ln_1(x)); x + mlp(ln_2(x))."""
    for i in range(n):
        p = f"{prefix}transformer.resblocks.{i}."
        w = x.shape[-1]
        h = F.layer_norm(x, (w,), sd[p + "ln_1.weight"], sd[p + "ln_1.bias"], 1e-5)
        q, k, v = (h @ sd[p + "attn.in_proj_weight"].T + sd[p + "attn.in_proj_bias"]).chunk(3, -1)
        q, k, v = (t.unflatten(-1, (heads, w // heads)).transpose(1, 2) for t in (q, k, v))
        logits = q @ k.transpose(-1, -2) / (w // heads) ** 0.5
        if mask is not None:
            logits = logits + mask
        a = (logits.softmax(-1) @ v).transpose(1, 2).flatten(2)
        x = x + a @ sd[p + "attn.out_proj.weight"].T + sd[p + "attn.out_proj.bias"]
        h = F.layer_norm(x, (w,), sd[p + "ln_2.weight"], sd[p + "ln_2.bias"], 1e-5)
        x = (
            x
            + _act(h @ sd[p + "mlp.c_fc.weight"].T + sd[p + "mlp.c_fc.bias"], act)
            @ sd[p + "mlp.c_proj.weight"].T
        )
        x = x + sd[p + "mlp.c_proj.bias"]
    return x


def ref_text(sd, ids, heads, act, n_blocks=None, pooled=True):
    """open_clip encode_text: causal blocks, ln_final, features at argmax(ids) @ text_projection."""
    n = (
        n_blocks
        if n_blocks is not None
        else len({k.split(".")[2] for k in sd if k.startswith("transformer.")})
    )
    x = sd["token_embedding.weight"][ids] + sd["positional_embedding"]
    mask = torch.full((ids.shape[1],) * 2, float("-inf")).triu(1)
    x = _resblocks(sd, "", x, heads, n, act, mask)
    x = F.layer_norm(x, x.shape[-1:], sd["ln_final.weight"], sd["ln_final.bias"], 1e-5)
    return x[torch.arange(len(ids)), ids.argmax(-1)] @ sd["text_projection"] if pooled else x


def ref_image(sd, pixels, heads, act):
    """open_clip VisionTransformer: conv1, [cls] + patches + pos, ln_pre, blocks, ln_post, token 0 @ proj."""
    x = F.conv2d(pixels, sd["visual.conv1.weight"], stride=sd["visual.conv1.weight"].shape[-1])
    x = x.flatten(2).transpose(1, 2)
    cls = sd["visual.class_embedding"].expand(len(x), 1, -1)
    x = torch.cat([cls, x], 1) + sd["visual.positional_embedding"]
    x = F.layer_norm(x, x.shape[-1:], sd["visual.ln_pre.weight"], sd["visual.ln_pre.bias"], 1e-5)
    n = len({k.split(".")[3] for k in sd if k.startswith("visual.transformer.")})
    x = _resblocks(sd, "visual.", x, heads, n, act)
    x = F.layer_norm(x, x.shape[-1:], sd["visual.ln_post.weight"], sd["visual.ln_post.bias"], 1e-5)
    return x[:, 0] @ sd["visual.proj"]


def tiny_config(act, c=TINY):
    t = dict(hidden_size=c["width"], intermediate_size=4 * c["width"], num_attention_heads=c["heads"],
             num_hidden_layers=c["layers"], max_position_embeddings=c["ctx"], vocab_size=c["vocab"],
             projection_dim=c["embed"], hidden_act=act, eos_token_id=c["vocab"] - 1, bos_token_id=c["vocab"] - 2)  # fmt: skip
    v = dict(hidden_size=c["vwidth"], intermediate_size=4 * c["vwidth"], num_attention_heads=c["vheads"],
             num_hidden_layers=c["layers"], patch_size=c["patch"], image_size=c["image"],
             projection_dim=c["embed"], hidden_act=act)  # fmt: skip
    return open_clip_config("tiny", text=t, vision=v)


def _ids(n=3, c=TINY, seed=1):
    """Random prompts: SOT, tokens, EOT (= vocab - 1, the largest id), zero padding."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(n, c["ctx"], dtype=torch.long)
    for i in range(n):
        m = 2 + i * 3
        ids[i, 0], ids[i, 1:m] = c["vocab"] - 2, torch.randint(1, c["vocab"] - 2, (m - 1,), generator=g)
        ids[i, m] = c["vocab"] - 1
    return ids


@pytest.mark.parametrize("act", ["gelu", "quick_gelu"])
def test_converted_clipmodel_matches_explicit_open_clip_forward(act):
    from transformers import CLIPModel

    sd = open_clip_state_dict()
    model = CLIPModel(tiny_config(act)).eval()
    model.load_state_dict(state_dict_from_open_clip(sd), strict=True)
    ids, pix = _ids(), torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        txt = model.get_text_features(input_ids=ids).pooler_output
        img = model.get_image_features(pixel_values=pix).pooler_output
    torch.testing.assert_close(txt, ref_text(sd, ids, TINY["heads"], act), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(img, ref_image(sd, pix, TINY["vheads"], act), atol=1e-5, rtol=1e-5)
    assert model.logit_scale.item() == 2.5
    # exact GELU vs QuickGELU matters at this size: the other activation must not match
    other = "gelu" if act == "quick_gelu" else "quick_gelu"
    assert (txt - ref_text(sd, ids, TINY["heads"], other)).abs().max() > 1e-3


def test_penultimate_hidden_is_ln_final_after_all_but_last_block():
    from transformers import CLIPTextModel

    sd = open_clip_state_dict()
    model = CLIPTextModel(tiny_config("gelu").text_config).eval()
    hf = {k.removeprefix("text_model."): v for k, v in text_state_dict_from_open_clip(sd).items()}
    del hf["text_projection.weight"]
    model.load_state_dict(hf, strict=True)
    ids = _ids()
    with torch.no_grad():
        pen = open_clip_text_hidden(model, ids, "penultimate")
        last = open_clip_text_hidden(model, ids, "last")
    torch.testing.assert_close(
        pen, ref_text(sd, ids, 4, "gelu", n_blocks=1, pooled=False), atol=1e-5, rtol=1e-5
    )
    torch.testing.assert_close(
        last, ref_text(sd, ids, 4, "gelu", n_blocks=2, pooled=False), atol=1e-5, rtol=1e-5
    )
    with pytest.raises(ValueError):
        open_clip_text_hidden(model, ids, "first")


def test_round_trips_are_exact_and_qkv_split_in_order():
    sd = open_clip_state_dict()
    hf = state_dict_from_open_clip(sd)
    w = TINY["width"]
    fused = sd["transformer.resblocks.1.attn.in_proj_weight"]
    assert torch.equal(hf["text_model.encoder.layers.1.self_attn.q_proj.weight"], fused[:w])
    assert torch.equal(hf["text_model.encoder.layers.1.self_attn.v_proj.weight"], fused[2 * w :])
    assert torch.equal(hf["text_projection.weight"], sd["text_projection"].T)
    back = state_dict_to_open_clip(hf)
    assert set(back) == set(sd) and all(torch.equal(back[k], sd[k]) for k in sd)
    text = text_state_dict_to_open_clip(text_state_dict_from_open_clip(sd))
    assert set(text) == {k for k in sd if not k.startswith("visual.") and k != "logit_scale"}
    vis = vision_state_dict_to_open_clip(vision_state_dict_from_open_clip(sd))
    assert set(vis) == {k for k in sd if k.startswith("visual.")}
    # a prefix (VideoCrafter2's cond_stage_model.model.) is stripped
    pre = {"cond_stage_model.model." + k: v for k, v in sd.items()}
    assert set(text_state_dict_from_open_clip(pre, "cond_stage_model.model.")) == set(
        text_state_dict_from_open_clip(sd)
    )


def test_converter_is_strict():
    sd = open_clip_state_dict()
    with pytest.raises(CheckpointError, match="unexpected open_clip text key: transformer.resblocks.0.attn.extra$"):
        state_dict_from_open_clip({**sd, "transformer.resblocks.0.attn.extra": torch.zeros(1)})
    full = set(state_dict_from_open_clip(sd))
    hf = state_dict_from_open_clip(sd)
    del hf["text_model.encoder.layers.0.self_attn.k_proj.bias"]
    with pytest.raises(CheckpointError, match="layer 0: incomplete q/k/v bias: has only q, v$"):
        state_dict_to_open_clip(hf)
    # OpenAI's TorchScript ints are dropped, not converted
    meta = {
        "input_resolution": torch.tensor(224),
        "context_length": torch.tensor(77),
        "vocab_size": torch.tensor(49408),
    }
    assert set(state_dict_from_open_clip({**sd, **meta})) == full


def _tsv(name):
    path = LAYOUTS / name
    if not path.exists():
        pytest.skip(f"{path} not present (reference layouts are outside the repository)")
    rows = [line.split("\t") for line in path.read_text().splitlines()[1:]]
    return {
        r[0].removeprefix("cond_stage_model.model."): tuple(int(s) for s in r[1].strip("[]").split(",") if s)
        for r in rows
    }


def test_full_size_vit_h_14_layout_and_parameter_counts():
    from transformers import CLIPTextModelWithProjection, CLIPVisionModelWithProjection

    with torch.device("meta"):
        text = CLIPTextModelWithProjection(open_clip_text_config("ViT-H-14"))
        vision = CLIPVisionModelWithProjection(open_clip_vision_config("ViT-H-14"))
    # open_clip 2.24 ViT-H-14: text 354,032,641 params incl. logit_scale, visual 632,076,800 (vc2_layouts summary)
    assert sum(p.numel() for p in text.parameters()) == 354_032_640
    assert sum(p.numel() for p in vision.parameters()) == 632_076_800
    oc_text = {k: tuple(v.shape) for k, v in text_state_dict_to_open_clip(text.state_dict()).items()}
    oc_vis = {k: tuple(v.shape) for k, v in vision_state_dict_to_open_clip(vision.state_dict()).items()}
    ref_text_keys = _tsv("vc2_text_keys.tsv")
    ref_text_keys.pop("logit_scale")
    assert oc_text == ref_text_keys
    assert oc_vis == _tsv("openclip_vit_h14_visual_keys_deleted.tsv")


def test_against_open_clip_library_when_installed():
    open_clip = pytest.importorskip(
        "open_clip", reason="open_clip_torch is not installed (it pulls torchvision)"
    )
    from transformers import CLIPModel

    c = TINY
    vision_cfg = dict(
        image_size=c["image"],
        layers=c["layers"],
        width=c["vwidth"],
        head_width=c["vwidth"] // c["vheads"],
        patch_size=c["patch"],
    )
    text_cfg = dict(
        context_length=c["ctx"], vocab_size=c["vocab"], width=c["width"], heads=c["heads"], layers=c["layers"]
    )
    ref = open_clip.CLIP(c["embed"], vision_cfg, text_cfg, quick_gelu=False).eval()
    ref.load_state_dict(open_clip_state_dict(), strict=True)
    model = CLIPModel(tiny_config("gelu")).eval()
    model.load_state_dict(state_dict_from_open_clip(ref.state_dict()), strict=True)
    ids, pix = _ids(), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            model.get_text_features(input_ids=ids).pooler_output, ref.encode_text(ids), atol=1e-5, rtol=1e-5
        )
        torch.testing.assert_close(
            model.get_image_features(pixel_values=pix).pooler_output,
            ref.encode_image(pix),
            atol=1e-5,
            rtol=1e-5,
        )
