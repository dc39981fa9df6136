"""VideoCrafter2 on disk: the official LatentDiffusion key layout, its conversion, and the loaders.

The native format *is* the official one: `official_state_dict` gives the 2039 keys of
VideoCrafter2's Lightning `model.ckpt` (13 DDPM schedule buffers, `model.diffusion_model.*`,
`first_stage_model.*`, `cond_stage_model.model.*`), and `save_folder` writes exactly that as
`model.safetensors`, next to `config.json` and `t2v_turbo.json`.

`load_pretrained` (behind `VideoCrafter2.from_pretrained`) reads:
- a folder written by `save_folder`, or a folder holding the official `model.ckpt`;
- the official `model.ckpt` (strict key check; a mismatch names the missing and unexpected keys);
- a bare UNet file (`.pt`/`.safetensors`): the merged T2V-Turbo VC2 UNet, or v2's `unet_mg.pt` /
  `unet_no_mg.pt`, given with `base=` (a model.ckpt or folder supplying the VAE and text encoder);
- a LoRA list (`unet_lora.pt`, with `base=`): the student is built, its guidance projection seeded
  (LoRA-only releases lack that base weight; a warning says so) and the LoRA merged.
Every file is read weights-only (`t2v_turbo.weights`); every way it can be wrong is a one-line
`CheckpointError`.
"""

from __future__ import annotations

import copy
import json
import warnings
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ..errors import CheckpointError
from ..open_clip_convert import text_state_dict_from_open_clip, text_state_dict_to_open_clip
from ..weights import load_strict, read_checkpoint
from .base import read_metadata
from .vc2_unet import VC2UNet, VC2UNetConfig
from .vc2_vae import build_vae, load_ldm_vae, vae_state_dict_to_ldm

if TYPE_CHECKING:
    from .videocrafter2 import VC2Config, VideoCrafter2

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.model."
# LatentDiffusion's persistent DDPM buffers (register_schedule), in state_dict order
SCHEDULE_BUFFERS = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "scale_arr",
)
TEXT_KEYS = ("transformer.", "token_embedding", "positional_embedding", "ln_final", "text_projection")
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
OFFICIAL_NAME = "model.ckpt"


def ldm_schedule_buffers(linear_start: float = 0.00085, linear_end: float = 0.012, n: int = 1000) -> dict:
    """LatentDiffusion's DDPM buffers (computed in float64, stored float32) for the official key layout.

    LDM "linear" schedule = betas linspace(sqrt(b0), sqrt(b1), n)^2, i.e. the scaled-linear schedule.
    `scale_arr` is [linspace(1, 0.7, 400), 0.7 x 1000] (1400 entries, as in the official model).
    """
    betas = torch.linspace(linear_start**0.5, linear_end**0.5, n, dtype=torch.float64) ** 2
    alphas = 1.0 - betas
    ac = torch.cumprod(alphas, 0)  # abar_t
    ac_prev = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
    # DDPM posterior q(x_{t-1} | x_t, x0): variance and mean coefficients (Ho et al. 2020, Eq. 7)
    post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
    bufs = {
        "betas": betas,
        "alphas_cumprod": ac,
        "alphas_cumprod_prev": ac_prev,
        "sqrt_alphas_cumprod": ac.sqrt(),
        "sqrt_one_minus_alphas_cumprod": (1.0 - ac).sqrt(),
        "log_one_minus_alphas_cumprod": (1.0 - ac).log(),
        "sqrt_recip_alphas_cumprod": (1.0 / ac).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1.0 / ac - 1).sqrt(),
        "posterior_variance": post_var,
        "posterior_log_variance_clipped": post_var.clamp(min=1e-20).log(),
        "posterior_mean_coef1": betas * ac_prev.sqrt() / (1.0 - ac),
        "posterior_mean_coef2": (1.0 - ac_prev) * alphas.sqrt() / (1.0 - ac),
        "scale_arr": torch.cat([torch.linspace(1.0, 0.7, 400, dtype=torch.float64), torch.full((n,), 0.7)]),
    }
    return {k: v.to(torch.float32) for k, v in bufs.items()}


def unet_config_for(sd: dict[str, Tensor], base: VC2UNetConfig) -> VC2UNetConfig:
    """`base` with the student projections present in the UNet state dict `sd` (bare keys)."""
    tc, mc = sd.get("time_cond_proj.weight"), sd.get("motion_cond_proj.weight")
    return replace(
        base,
        time_cond_proj_dim=int(tc.shape[1]) if tc is not None else None,
        motion_cond_proj_dim=int(mc.shape[1]) if mc is not None else None,
    )


def strip_unet_prefix(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """A UNet file's keys without `model.diffusion_model.` (files may or may not carry it)."""
    if any(k.startswith(UNET_PREFIX) for k in sd):
        other = [k for k in sd if not k.startswith(UNET_PREFIX)]
        if other:
            raise CheckpointError(
                f"a UNet file with {len(other)} keys outside {UNET_PREFIX}*, e.g. {', '.join(other[:5])}"
            )
        return {k[len(UNET_PREFIX) :]: v for k, v in sd.items()}
    return dict(sd)


# ----------------------------------------------------------------------------- official layout
def _plain_unet(unet: nn.Module) -> nn.Module:
    from .lora import has_lora, merge_lora

    return merge_lora(copy.deepcopy(unet)) if has_lora(unet) else unet


def official_state_dict(model: VideoCrafter2) -> dict[str, Tensor]:
    """The official LatentDiffusion state dict (2039 keys for the teacher; LoRA merged in a copy)."""
    cfg = model.config
    bufs = model._schedule_buffers or ldm_schedule_buffers(cfg.linear_start, cfg.linear_end)
    sd: dict[str, Tensor] = dict(bufs)
    sd.update({UNET_PREFIX + k: v for k, v in _plain_unet(model.unet).state_dict().items()})
    levels = len(model.vae.config.block_out_channels)
    sd.update(vae_state_dict_to_ldm(model.vae.state_dict(), levels, VAE_PREFIX))
    text = text_state_dict_to_open_clip(model.text_encoder.state_dict())
    text["logit_scale"] = model.text_logit_scale
    sd.update({TEXT_PREFIX + k: v for k, v in text.items()})
    return sd


@torch.no_grad()
def load_official_state_dict(model: VideoCrafter2, sd: dict[str, Tensor], assign: bool = False) -> None:
    """Load the official layout into `model` strictly; a `CheckpointError` names what does not match."""
    groups: dict[str, dict[str, Tensor]] = {UNET_PREFIX: {}, VAE_PREFIX: {}, TEXT_PREFIX: {}}
    buffers, unexpected = {}, []
    for k, v in sd.items():
        prefix = next((p for p in groups if k.startswith(p)), None)
        if prefix is not None:
            groups[prefix][k] = v
        elif k in SCHEDULE_BUFFERS:
            buffers[k] = v
        else:
            unexpected.append(k)
    missing = [k for k in SCHEDULE_BUFFERS if k not in buffers]
    if TEXT_PREFIX + "logit_scale" not in groups[TEXT_PREFIX]:
        missing.append(TEXT_PREFIX + "logit_scale")
    if missing or unexpected:
        raise CheckpointError(
            f"not a VideoCrafter2 checkpoint layout: missing {len(missing)} ({', '.join(missing[:5])}), "
            f"unexpected {len(unexpected)} ({', '.join(unexpected[:5])})"
        )
    diff = (buffers["alphas_cumprod"].float() - model.schedule.alphas_cumprod).abs().max().item()
    if diff > 1e-5:
        warnings.warn(f"checkpoint alphas_cumprod differs from the configured schedule by {diff:.2e}", stacklevel=2)
    model._schedule_buffers = {k: buffers[k] for k in SCHEDULE_BUFFERS}
    unet_sd = {k[len(UNET_PREFIX) :]: v for k, v in groups[UNET_PREFIX].items()}
    load_strict(model.unet, unet_sd, what="UNet (model.diffusion_model.*)", prefix=UNET_PREFIX, assign=assign)
    load_ldm_vae(model.vae, groups[VAE_PREFIX], VAE_PREFIX, assign)
    text = {k[len(TEXT_PREFIX) :]: v for k, v in groups[TEXT_PREFIX].items()}
    model.text_logit_scale.copy_(text.pop("logit_scale"))
    bad = [TEXT_PREFIX + k for k in text if not k.startswith(TEXT_KEYS)]
    if bad:
        raise CheckpointError(f"text encoder: {len(bad)} unexpected keys, e.g. {', '.join(bad[:5])}")
    load_strict(model.text_encoder, text_state_dict_from_open_clip(text), what="text encoder", prefix=TEXT_PREFIX)


# ----------------------------------------------------------------------------- the folder format
def save_folder(model: VideoCrafter2, path: str | Path) -> None:
    """`model.safetensors` (official LVDM key layout), `config.json`, `t2v_turbo.json`."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().contiguous().cpu() for k, v in official_state_dict(model).items()}
    save_file(sd, str(path / WEIGHTS_NAME), metadata={"format": "pt", "layout": "lvdm"})
    cfg = model.config.to_dict()
    cfg["fps"] = model.fps
    (path / CONFIG_NAME).write_text(json.dumps(cfg, indent=2))
    model.write_metadata(
        path, {"fps": model.fps, "layout": "lvdm", "motion_embedding_dim": model.motion_embedding_dim}
    )


def read_config(cls: type[VideoCrafter2], file: Path) -> VC2Config:
    """The `VC2Config` recorded in `file` (a `config.json`)."""
    try:
        return cls.config_class.from_dict(json.loads(file.read_text()))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError, ValueError, AttributeError) as e:
        msg = " ".join(str(e).split())
        raise CheckpointError(f"not a VideoCrafter2 config ({type(e).__name__}: {msg}): {file}") from None


# ----------------------------------------------------------------------------- the loaders
def load_pretrained(
    cls: type[VideoCrafter2],
    path: str | Path,
    base: str | Path | VideoCrafter2 | None = None,
    config: VC2Config | None = None,
    tokenizer=None,
    torch_dtype: torch.dtype = torch.float32,
    seed: int = 0,
    fps: int | None = None,
) -> VideoCrafter2:
    """See `VideoCrafter2.from_pretrained`."""
    path = Path(path)
    if path.is_dir():
        model = _from_folder(cls, path, config, tokenizer, torch_dtype)
    else:
        model = _from_file(cls, path, base, config, tokenizer, torch_dtype, seed)
    if fps is not None:
        model.fps = fps
    return model.eval()  # like diffusers / transformers: call .train() to train


def _from_file(cls, path: Path, base, config, tokenizer, torch_dtype, seed: int) -> VideoCrafter2:
    obj = read_checkpoint(path)
    if isinstance(obj, (list, tuple)):
        return _from_lora_list(list(obj), _base(cls, base, path, tokenizer, torch_dtype), seed)
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise CheckpointError(f"not a VideoCrafter2 checkpoint (holds a {type(obj).__name__}): {path}")
    if any(k.startswith(VAE_PREFIX) for k in obj):
        if config is None and (path.parent / CONFIG_NAME).exists():
            # an architecture recorded next to the checkpoint (e.g. a resized synthetic model.ckpt)
            config = read_config(cls, path.parent / CONFIG_NAME)
        return _from_official(cls, obj, config or cls.config_class.official(), torch_dtype, tokenizer)
    return _from_unet_file(obj, _base(cls, base, path, tokenizer, torch_dtype), torch_dtype)


def _from_official(cls, sd: dict[str, Tensor], config: VC2Config, torch_dtype, tokenizer) -> VideoCrafter2:
    bare = {k[len(UNET_PREFIX) :]: v for k, v in sd.items() if k.startswith(UNET_PREFIX)}
    config = replace(config, unet=unet_config_for(bare, config.unet))
    with torch.device("meta"):  # UNet and VAE take the file's tensors directly (no double memory)
        unet, vae = VC2UNet(config.unet), build_vae(config.vae)
    model = cls(config, unet, vae, tokenizer=tokenizer)
    load_official_state_dict(model, sd, assign=True)
    return model.to(torch_dtype)


def _base(cls, base, path: Path, tokenizer, torch_dtype) -> VideoCrafter2:
    if base is None:
        raise CheckpointError(
            f"{path.name} holds only a UNet (or its LoRA), not a full VideoCrafter2 model: pass base= "
            "(VideoCrafter2's model.ckpt or a saved folder) for the VAE and text encoder"
        )
    if isinstance(base, cls):
        return base
    return load_pretrained(cls, base, tokenizer=tokenizer, torch_dtype=torch_dtype)


def _from_folder(cls, path: Path, config, tokenizer, torch_dtype) -> VideoCrafter2:
    if (path / WEIGHTS_NAME).is_file():
        if not (path / CONFIG_NAME).is_file():
            raise CheckpointError(f"{path}: {WEIGHTS_NAME} without the {CONFIG_NAME} save_pretrained writes beside it")
        sd = read_checkpoint(path / WEIGHTS_NAME)
        model = _from_official(cls, sd, read_config(cls, path / CONFIG_NAME), torch_dtype, tokenizer)
        meta = read_metadata(path)
        model.guidance_convention = meta.get("guidance_convention", model.guidance_convention)
        if "sampling_defaults" in meta:  # e.g. T2V-Turbo-v2's motion guidance and origin grid
            model.sampling_defaults = meta["sampling_defaults"]
        return model
    if (path / OFFICIAL_NAME).is_file():
        return _from_file(cls, path / OFFICIAL_NAME, None, config, tokenizer, torch_dtype, 0)
    raise CheckpointError(
        f"{path}: no VideoCrafter2 weights in this folder: expected {OFFICIAL_NAME} (the official checkpoint) "
        f"or {WEIGHTS_NAME} + {CONFIG_NAME} (written by save_pretrained)"
    )


def _from_unet_file(sd: dict[str, Tensor], base: VideoCrafter2, torch_dtype) -> VideoCrafter2:
    sd = strip_unet_prefix(sd)
    cfg = unet_config_for(sd, base.config.unet)
    with torch.device("meta"):
        unet = VC2UNet(cfg)
    load_strict(unet, sd, what="UNet file", assign=True)
    return base._with_unet(unet.to(torch_dtype))


def _from_lora_list(tensors: list[Tensor], base: VideoCrafter2, seed: int) -> VideoCrafter2:
    from .release_lora import load_release_lora

    if not all(isinstance(t, Tensor) for t in tensors):
        raise CheckpointError("a LoRA list file must hold only tensors (T2V-Turbo's unet_lora.pt)")
    student = base.make_student(256, init="normal", seed=seed)
    load_release_lora(student.unet, tensors, merge=True, seed=seed)
    return student
