"""VideoCrafter2's KL-f8 VAE as a diffusers `AutoencoderKL`, with a strict LDM <-> diffusers key converter.

The LDM (`first_stage_model.*`) layout names levels `encoder.down.{i}` / `decoder.up.{i}` (decoder level
0 is the finest, so diffusers' `up_blocks` run in the reverse order), resnets `block.{j}` with a
`nin_shortcut`, the mid-block `block_1`/`attn_1`/`block_2`, and stores the mid attention projections
as 1x1 convolutions. The converter renames every key one to one and reshapes those four projections;
a key it does not recognise is an error, never silently dropped.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor

from ..errors import CheckpointError
from ..weights import mismatch_error

LDM_VAE_PREFIX = "first_stage_model."
_ATTN_LDM_TO_HF = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
_ATTN_HF_TO_LDM = {v: k for k, v in _ATTN_LDM_TO_HF.items()}
_PROJ = ("to_q", "to_k", "to_v", "to_out.0")


def vae_config(
    ch: int = 128,
    ch_mult: tuple[int, ...] = (1, 2, 4, 4),
    num_res_blocks: int = 2,
    z_channels: int = 4,
    norm_num_groups: int = 32,
    scaling_factor: float = 0.18215,
    sample_size: int = 512,
) -> dict:
    """`AutoencoderKL` config for an LDM `ddconfig` (defaults: VideoCrafter2's KL-f8, 83.65M params)."""
    levels = len(ch_mult)
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * levels,
        "up_block_types": ["UpDecoderBlock2D"] * levels,
        "block_out_channels": [ch * m for m in ch_mult],
        "layers_per_block": num_res_blocks,
        "act_fn": "silu",
        "latent_channels": z_channels,
        "norm_num_groups": norm_num_groups,
        "sample_size": sample_size,
        "scaling_factor": scaling_factor,
    }


def build_vae(config: dict):
    """An `AutoencoderKL` from `vae_config(...)` (honours an enclosing `torch.device` context)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(**config)


def _ldm_to_hf_key(k: str, levels: int) -> str | None:
    """One LDM VAE key (no prefix) -> diffusers key, or None when the key is not part of the layout."""
    m = re.fullmatch(r"(quant_conv|post_quant_conv)\.(weight|bias)", k)
    if m:
        return k
    m = re.fullmatch(r"(encoder|decoder)\.(conv_in|conv_out|norm_out)\.(weight|bias)", k)
    if m:
        name = "conv_norm_out" if m[2] == "norm_out" else m[2]
        return f"{m[1]}.{name}.{m[3]}"
    resnet = r"(norm1|conv1|norm2|conv2|nin_shortcut)\.(weight|bias)"
    m = re.fullmatch(rf"encoder\.down\.(\d+)\.block\.(\d+)\.{resnet}", k)
    if m:
        return f"encoder.down_blocks.{m[1]}.resnets.{m[2]}.{m[3].replace('nin_shortcut', 'conv_shortcut')}.{m[4]}"
    m = re.fullmatch(r"encoder\.down\.(\d+)\.downsample\.conv\.(weight|bias)", k)
    if m:
        return f"encoder.down_blocks.{m[1]}.downsamplers.0.conv.{m[2]}"
    m = re.fullmatch(rf"decoder\.up\.(\d+)\.block\.(\d+)\.{resnet}", k)
    if m:
        i = levels - 1 - int(m[1])
        return f"decoder.up_blocks.{i}.resnets.{m[2]}.{m[3].replace('nin_shortcut', 'conv_shortcut')}.{m[4]}"
    m = re.fullmatch(r"decoder\.up\.(\d+)\.upsample\.conv\.(weight|bias)", k)
    if m:
        return f"decoder.up_blocks.{levels - 1 - int(m[1])}.upsamplers.0.conv.{m[2]}"
    m = re.fullmatch(rf"(encoder|decoder)\.mid\.block_([12])\.{resnet}", k)
    if m:
        return (
            f"{m[1]}.mid_block.resnets.{int(m[2]) - 1}.{m[3].replace('nin_shortcut', 'conv_shortcut')}.{m[4]}"
        )
    m = re.fullmatch(r"(encoder|decoder)\.mid\.attn_1\.(norm|q|k|v|proj_out)\.(weight|bias)", k)
    if m:
        return f"{m[1]}.mid_block.attentions.0.{_ATTN_LDM_TO_HF[m[2]]}.{m[3]}"
    return None


def _hf_to_ldm_key(k: str, levels: int) -> str | None:
    """One diffusers AutoencoderKL key -> LDM key (no prefix), or None when not part of the layout."""
    m = re.fullmatch(r"(quant_conv|post_quant_conv)\.(weight|bias)", k)
    if m:
        return k
    m = re.fullmatch(r"(encoder|decoder)\.(conv_in|conv_out|conv_norm_out)\.(weight|bias)", k)
    if m:
        name = "norm_out" if m[2] == "conv_norm_out" else m[2]
        return f"{m[1]}.{name}.{m[3]}"
    resnet = r"(norm1|conv1|norm2|conv2|conv_shortcut)\.(weight|bias)"
    m = re.fullmatch(rf"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.{resnet}", k)
    if m:
        return f"encoder.down.{m[1]}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}.{m[4]}"
    m = re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(weight|bias)", k)
    if m:
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
    m = re.fullmatch(rf"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.{resnet}", k)
    if m:
        i = levels - 1 - int(m[1])
        return f"decoder.up.{i}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}.{m[4]}"
    m = re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(weight|bias)", k)
    if m:
        return f"decoder.up.{levels - 1 - int(m[1])}.upsample.conv.{m[2]}"
    m = re.fullmatch(rf"(encoder|decoder)\.mid_block\.resnets\.([01])\.{resnet}", k)
    if m:
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3].replace('conv_shortcut', 'nin_shortcut')}.{m[4]}"
    m = re.fullmatch(
        r"(encoder|decoder)\.mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(weight|bias)",
        k,
    )
    if m:
        return f"{m[1]}.mid.attn_1.{_ATTN_HF_TO_LDM[m[2]]}.{m[3]}"
    return None


def _convert(sd: dict[str, Tensor], fn, levels: int, what: str) -> dict[str, Tensor]:
    out, unknown = {}, []
    for k, v in sd.items():
        new = fn(k, levels)
        if new is None:
            unknown.append(k)
            continue
        if new in out:
            raise CheckpointError(f"{what}: two keys map to {new}")
        out[new] = v
    if unknown:
        raise CheckpointError(
            f"{what}: {len(unknown)} keys are not part of the KL VAE layout, e.g. {', '.join(unknown[:5])}"
        )
    return out


def vae_state_dict_from_ldm(sd: dict[str, Tensor], levels: int = 4, prefix: str = "") -> dict[str, Tensor]:
    """LDM `first_stage_model.*` tensors -> diffusers `AutoencoderKL` state dict (strict, one to one).

    Args:
        sd: the VAE tensors; keys must all start with `prefix` (use `LDM_VAE_PREFIX` for a full checkpoint).
        levels: number of resolution levels (`len(ch_mult)`).
    """
    bad = [k for k in sd if not k.startswith(prefix)]
    if bad:
        raise CheckpointError(f"{len(bad)} VAE keys without the prefix {prefix}, e.g. {', '.join(bad[:5])}")
    out = _convert(
        {k[len(prefix) :]: v for k, v in sd.items()}, _ldm_to_hf_key, levels, "LDM -> diffusers VAE"
    )
    for k, v in out.items():
        if k.rsplit(".", 1)[0].endswith(_PROJ) and "mid_block.attentions" in k and v.dim() == 4:
            out[k] = v[:, :, 0, 0]  # 1x1 conv (C, C, 1, 1) -> linear (C, C)
    return out


def vae_state_dict_to_ldm(hf_sd: dict[str, Tensor], levels: int = 4, prefix: str = "") -> dict[str, Tensor]:
    """diffusers `AutoencoderKL` state dict -> LDM layout with `prefix` (the exact inverse)."""
    out = _convert(hf_sd, _hf_to_ldm_key, levels, "diffusers -> LDM VAE")
    for k, v in out.items():
        if re.search(r"mid\.attn_1\.(q|k|v|proj_out)\.weight$", k) and v.dim() == 2:
            out[k] = v[:, :, None, None]  # linear (C, C) -> 1x1 conv (C, C, 1, 1)
    return {prefix + k: v for k, v in out.items()}


@torch.no_grad()
def load_ldm_vae(vae, sd: dict[str, Tensor], prefix: str = "", assign: bool = False) -> None:
    """Load LDM-layout VAE tensors into a diffusers `AutoencoderKL` with strict key checking."""
    levels = len(vae.config.block_out_channels)
    hf = vae_state_dict_from_ldm(sd, levels, prefix)
    own = vae.state_dict()
    missing, unexpected = sorted(set(own) - set(hf)), sorted(set(hf) - set(own))

    def ldm(k: str) -> str:  # a key as the file spells it
        return prefix + (_hf_to_ldm_key(k, levels) or k)

    shapes = [
        f"{ldm(k)}: file {list(hf[k].shape)} vs model {list(v.shape)}"
        for k, v in own.items()
        if k in hf and hf[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        what = f"VAE ({prefix}*)" if prefix else "VAE"
        raise mismatch_error(what, [ldm(k) for k in missing], [ldm(k) for k in unexpected], shapes)
    vae.load_state_dict(hf, strict=True, assign=assign)
