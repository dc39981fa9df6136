"""open_clip <-> transformers CLIP: configs, strict one-to-one state-dict converters (a mismatch is a
`CheckpointError`) and the text features VideoCrafter2 conditions on. Shared by models and rewards.

open_clip (and OpenAI's original CLIP) stores a ViT tower as `conv1`, `class_embedding`,
`positional_embedding`, `ln_pre`, `transformer.resblocks.N.{ln_1, attn, ln_2, mlp.c_fc, mlp.c_proj}`,
`ln_post`, `proj`, and the text tower as `token_embedding`, `positional_embedding`, the same
resblocks, `ln_final`, `text_projection`. Attention is `nn.MultiheadAttention` with a fused
`in_proj_weight` (q, k, v stacked along dim 0); projections are stored as (width, embed) matrices
applied as `x @ proj`. transformers' `CLIPModel` has separate q/k/v Linears and stores projections
as `nn.Linear(width, embed).weight` (the transpose). Everything else is a rename.

Behavioural equivalences (checked in tests/test_open_clip_convert.py):
- Both use pre-norm residual blocks, LayerNorm eps 1e-5, attention scale head_dim**-0.5.
- Activation: OpenCLIP-trained models (ViT-H-14 laion2B, HPSv2, PickScore) use exact GELU
  ("gelu"); OpenAI weights (ViT-L/14) use QuickGELU ("quick_gelu").
- Text: causal attention, no padding mask, pooled at the EOT token (= argmax of the ids, since EOT
  49407 is the largest id; transformers takes the first `eos_token_id`, the same position).
  VideoCrafter2 conditions on the penultimate block followed by `ln_final`:
  see `open_clip_text_hidden`.
- Vision: transformers pools token 0 then applies `post_layernorm`; open_clip applies `ln_post`
  to every token then pools token 0 (the same, LayerNorm is per token).
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import Tensor

from .errors import CheckpointError

# open_clip model configs (open_clip/model_configs/*.json); OpenAI weights use QuickGELU.
PRESETS: dict[str, dict[str, Any]] = {
    "ViT-H-14": dict(
        embed_dim=1024,
        text=dict(width=1024, heads=16, layers=24, context_length=77, vocab_size=49408),
        vision=dict(width=1280, heads=16, layers=32, patch_size=14, image_size=224),
        hidden_act="gelu",
    ),
    "ViT-L-14": dict(
        embed_dim=768,
        text=dict(width=768, heads=12, layers=12, context_length=77, vocab_size=49408),
        vision=dict(width=1024, heads=16, layers=24, patch_size=14, image_size=224),
        hidden_act="quick_gelu",
    ),
    # a tiny model with the real vocabulary and input size (tests, demos)
    "tiny": dict(
        embed_dim=16,
        text=dict(width=32, heads=4, layers=2, context_length=77, vocab_size=49408),
        vision=dict(width=32, heads=4, layers=2, patch_size=32, image_size=224),
        hidden_act="gelu",
    ),
}
# non-weight entries of OpenAI's TorchScript state dict (clip/model.py build_model deletes them)
_OPENAI_META_KEYS = ("input_resolution", "context_length", "vocab_size")
_BLOCK = {
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "attn.out_proj": "self_attn.out_proj",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
}
_TEXT = {
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
}
_VISION = {
    "conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "class_embedding": "vision_model.embeddings.class_embedding",
    "positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "ln_post.weight": "vision_model.post_layernorm.weight",
    "ln_post.bias": "vision_model.post_layernorm.bias",
}
_RESBLOCK = re.compile(r"^transformer\.resblocks\.(\d+)\.(.+)$")
_LAYER = re.compile(r"^(text|vision)_model\.encoder\.layers\.(\d+)\.(.+)$")


def _preset(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise ValueError(f"unknown open_clip model {name!r}; valid: {sorted(PRESETS)}")
    return PRESETS[name]


def open_clip_text_config(name: str = "ViT-H-14", **overrides):
    """transformers `CLIPTextConfig` equal to open_clip's text tower `name`; kwargs override fields."""
    from transformers import CLIPTextConfig

    p = _preset(name)
    t = p["text"]
    kw = dict(
        vocab_size=t["vocab_size"],
        hidden_size=t["width"],
        intermediate_size=4 * t["width"],
        num_hidden_layers=t["layers"],
        num_attention_heads=t["heads"],
        max_position_embeddings=t["context_length"],
        projection_dim=p["embed_dim"],
        hidden_act=p["hidden_act"],
        layer_norm_eps=1e-5,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=0,
    )
    kw.update(overrides)
    return CLIPTextConfig(**kw)


def open_clip_vision_config(name: str = "ViT-H-14", **overrides):
    """transformers `CLIPVisionConfig` equal to open_clip's visual tower `name`."""
    from transformers import CLIPVisionConfig

    p = _preset(name)
    v = p["vision"]
    kw = dict(
        hidden_size=v["width"],
        intermediate_size=4 * v["width"],
        num_hidden_layers=v["layers"],
        num_attention_heads=v["heads"],
        patch_size=v["patch_size"],
        image_size=v["image_size"],
        projection_dim=p["embed_dim"],
        hidden_act=p["hidden_act"],
        layer_norm_eps=1e-5,
    )
    kw.update(overrides)
    return CLIPVisionConfig(**kw)


def open_clip_config(name: str = "ViT-H-14", text: dict | None = None, vision: dict | None = None):
    """transformers `CLIPConfig` for the open_clip model `name` (text/vision: per-tower overrides)."""
    from transformers import CLIPConfig

    tc = open_clip_text_config(name, **(text or {}))
    vc = open_clip_vision_config(name, **(vision or {}))
    if tc.projection_dim != vc.projection_dim:
        raise ValueError(
            f"text and vision projection dims differ: {tc.projection_dim} != {vc.projection_dim}"
        )
    return CLIPConfig(text_config=tc.to_dict(), vision_config=vc.to_dict(), projection_dim=tc.projection_dim)


def _tower_from_open_clip(sd: dict[str, Tensor], names: dict[str, str], hf_prefix: str, what: str) -> dict:
    """Convert one tower (keys already stripped of their open_clip prefix) to transformers keys."""
    out: dict[str, Tensor] = {}
    for k, v in sd.items():
        if k in names:
            out[names[k]] = v
            continue
        m = _RESBLOCK.match(k)
        if m is None:
            raise CheckpointError(f"unexpected open_clip {what} key: {k}")
        i, rest = m.groups()
        layer = f"{hf_prefix}.encoder.layers.{i}"
        if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
            # nn.MultiheadAttention: in_proj = cat([W_q, W_k, W_v], dim=0)
            kind = rest.rsplit("_", 1)[1]
            for name, part in zip(("q", "k", "v"), v.chunk(3, dim=0)):
                out[f"{layer}.self_attn.{name}_proj.{kind}"] = part
            continue
        base, _, leaf = rest.rpartition(".")
        if base not in _BLOCK:
            raise CheckpointError(f"unexpected open_clip {what} key: {k}")
        out[f"{layer}.{_BLOCK[base]}.{leaf}"] = v
    return out


def _tower_to_open_clip(hf: dict[str, Tensor], names: dict[str, str], tower: str) -> dict:
    """Inverse of `_tower_from_open_clip` (keys without the open_clip prefix)."""
    inv = {v: k for k, v in names.items()}
    inv_block = {v: k for k, v in _BLOCK.items()}
    out: dict[str, Tensor] = {}
    fused: dict[tuple[str, str], dict[str, Tensor]] = {}
    for k, v in hf.items():
        if k in inv:
            out[inv[k]] = v
            continue
        m = _LAYER.match(k)
        if m is None or m.group(1) != tower:
            raise CheckpointError(f"unexpected transformers {tower} key: {k}")
        i, rest = m.group(2), m.group(3)
        qkv = re.match(r"^self_attn\.([qkv])_proj\.(weight|bias)$", rest)
        if qkv:
            fused.setdefault((i, qkv.group(2)), {})[qkv.group(1)] = v
            continue
        base, _, leaf = rest.rpartition(".")
        if base not in inv_block:
            raise CheckpointError(f"unexpected transformers {tower} key: {k}")
        out[f"transformer.resblocks.{i}.{inv_block[base]}.{leaf}"] = v
    for (i, kind), parts in fused.items():
        if set(parts) != {"q", "k", "v"}:
            raise CheckpointError(f"layer {i}: incomplete q/k/v {kind}: has only {', '.join(sorted(parts))}")
        out[f"transformer.resblocks.{i}.attn.in_proj_{kind}"] = torch.cat([parts[n] for n in "qkv"], 0)
    return out


def _strip(sd: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


def text_state_dict_from_open_clip(sd: dict[str, Tensor], prefix: str = "") -> dict[str, Tensor]:
    """open_clip text-tower keys under `prefix` -> `CLIPTextModelWithProjection` keys (also `CLIPModel`'s).

    Keys under `prefix` that belong to other parts of a CLIP (`visual.*`, `logit_scale`,
    `logit_bias`, `attn_mask`) are skipped; any other unknown key raises (strict, one-to-one).
    """
    sub = _strip(sd, prefix)
    other = ("visual.", "logit_scale", "logit_bias", "attn_mask") + _OPENAI_META_KEYS
    sub = {k: v for k, v in sub.items() if not k.startswith(other)}
    proj = sub.pop("text_projection", None)
    out = _tower_from_open_clip(sub, _TEXT, "text_model", "text")
    if proj is not None:
        out["text_projection.weight"] = proj.t().contiguous()  # x @ P == Linear with weight P^T
    return out


def text_state_dict_to_open_clip(hf_sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Inverse of `text_state_dict_from_open_clip` (text keys only; no `logit_scale`)."""
    hf = {k: v for k, v in hf_sd.items() if k.startswith("text_")}
    proj = hf.pop("text_projection.weight", None)
    out = _tower_to_open_clip(hf, _TEXT, "text")
    if proj is not None:
        out["text_projection"] = proj.t().contiguous()
    return out


def vision_state_dict_from_open_clip(sd: dict[str, Tensor], prefix: str = "visual.") -> dict[str, Tensor]:
    """open_clip `visual.*` keys -> `CLIPVisionModelWithProjection` keys (also `CLIPModel`'s)."""
    sub = _strip(sd, prefix)
    proj = sub.pop("proj", None)
    out = _tower_from_open_clip(sub, _VISION, "vision_model", "visual")
    if proj is not None:
        out["visual_projection.weight"] = proj.t().contiguous()
    return out


def vision_state_dict_to_open_clip(hf_sd: dict[str, Tensor], prefix: str = "visual.") -> dict[str, Tensor]:
    """Inverse of `vision_state_dict_from_open_clip`."""
    hf = {k: v for k, v in hf_sd.items() if k.startswith("vision_model.") or k == "visual_projection.weight"}
    proj = hf.pop("visual_projection.weight", None)
    out = _tower_to_open_clip(hf, _VISION, "vision")
    if proj is not None:
        out["proj"] = proj.t().contiguous()
    return {prefix + k: v for k, v in out.items()}


def state_dict_from_open_clip(sd: dict[str, Tensor], prefix: str = "") -> dict[str, Tensor]:
    """A whole open_clip / OpenAI CLIP state dict -> `CLIPModel` keys (strict; drops OpenAI's meta ints)."""
    sub = {k: v for k, v in _strip(sd, prefix).items() if k not in _OPENAI_META_KEYS}
    unknown = [k for k in sub if k in ("logit_bias", "attn_mask")]
    if unknown:
        raise CheckpointError(f"keys with no transformers CLIPModel counterpart: {', '.join(unknown)}")
    out = text_state_dict_from_open_clip(sub)
    out.update(vision_state_dict_from_open_clip(sub))
    if "logit_scale" in sub:
        out["logit_scale"] = sub["logit_scale"]
    return out


def state_dict_to_open_clip(hf_sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Inverse of `state_dict_from_open_clip`."""
    out = text_state_dict_to_open_clip(hf_sd)
    out.update(vision_state_dict_to_open_clip(hf_sd))
    if "logit_scale" in hf_sd:
        out["logit_scale"] = hf_sd["logit_scale"]
    return out


def open_clip_text_hidden(text_model, input_ids: Tensor, layer: str | int = "penultimate") -> Tensor:
    """Token features of the open_clip text tower as VideoCrafter2/SD2 use them (B, L, width).

    VideoCrafter2 (FrozenOpenCLIPEmbedder, layer "penultimate") runs all but the last resblock
    and then applies `ln_final`; "last" runs all blocks. No padding mask (open_clip has none).

    Args:
        text_model: a transformers `CLIPTextModel` or `CLIPTextModelWithProjection`.
        input_ids: (B, 77) token ids padded with 0 as open_clip's tokenizer does.
        layer: "penultimate", "last", or the number of resblocks to run.
    """
    tm = getattr(text_model, "text_model", text_model)
    n = len(tm.encoder.layers)
    k = {"penultimate": n - 1, "last": n}.get(layer, layer) if isinstance(layer, str) else layer
    if not isinstance(k, int) or not 0 <= k <= n:
        raise ValueError(f"layer must be 'penultimate', 'last' or an int in [0, {n}], got {layer!r}")
    out = tm(input_ids=input_ids, output_hidden_states=True)
    # hidden_states[0] = embeddings, hidden_states[i] = after i blocks (before final_layer_norm)
    return tm.final_layer_norm(out.hidden_states[k])
