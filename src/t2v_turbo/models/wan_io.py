"""Wan2.1 folders and add-ons for `models/wan.py`: the student's guidance embedding (attach / find),
strict loading of each component of a diffusers-format folder (one-line `CheckpointError` naming the
component), and the LoRA export in diffusers' format (`WanPipeline.load_lora_weights`)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import CheckpointError, InputError
from ..flow import FlowSchedule

if TYPE_CHECKING:
    from .wan import WanBackbone

GUIDANCE_FILE = "guidance_proj.safetensors"
WAN_COMPONENTS: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "transformer": ("diffusers", ("WanTransformer3DModel",)),
    "vae": ("diffusers", ("AutoencoderKLWan",)),
    "text_encoder": ("transformers", ("UMT5EncoderModel", "T5EncoderModel")),
    "tokenizer": ("transformers", None),
    "scheduler": (
        "diffusers",
        (
            "UniPCMultistepScheduler",
            "FlowMatchEulerDiscreteScheduler",
            "FlowMatchLCMScheduler",
            "FlowMatchHeunDiscreteScheduler",
        ),
    ),
}


# ------------------------------------------------------------------------------------ guidance embedding
def _stash_w_emb(module: nn.Module, args, kwargs):
    """Forward pre-hook of the transformer: take our `w_emb` keyword out of the call (diffusers' forward
    does not know it) and hand it to the time embedder for this call only."""
    module.condition_embedder.time_embedder._t2v_w_emb = kwargs.pop("w_emb", None)
    return args, kwargs


def _add_guidance(module: nn.Module, args):
    """Forward pre-hook of `condition_embedder.time_embedder` (TimestepEmbedding): its input, the
    timestep sinusoid (B, freq_dim), plus guidance_proj(w_emb), before the MLP (LCM's time_cond_proj)."""
    w = module.__dict__.get("_t2v_w_emb")
    if w is None:
        return None
    (sample, *rest) = args
    proj = module.guidance_proj
    # emb = sinusoid(t) + W_g w_emb  (W_g zero-initialised: the student starts equal to the teacher)
    return (sample + proj(w.to(proj.weight.device, proj.weight.dtype)).to(sample.dtype), *rest)


def attach_guidance(
    transformer: nn.Module, w_embedding_dim: int, init: str = "zero", seed: int = 0
) -> nn.Linear:
    """Give a WanTransformer3DModel a guidance embedding: `transformer(..., w_emb=...)` then adds
    Linear(w_embedding_dim -> freq_dim, bias=False)(w_emb) to the timestep sinusoid.

    The projection lives at `condition_embedder.time_embedder.guidance_proj` (kept in float32 with the
    time embedder, whose diffusers keys stay unchanged). init "zero" (default): the student starts
    exactly equal to its teacher; "normal": PyTorch's default Linear init from `seed`.
    """
    if init not in ("zero", "normal"):
        raise ValueError(f"unknown init {init!r}; valid: ['zero', 'normal']")
    te = transformer.condition_embedder.time_embedder
    if hasattr(te, "guidance_proj"):
        raise ValueError("this transformer already has a guidance embedding")
    freq_dim = int(transformer.config.freq_dim)
    ref = te.linear_1.weight
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        proj = nn.Linear(w_embedding_dim, freq_dim, bias=False)
    if init == "zero":
        nn.init.zeros_(proj.weight)
    te.guidance_proj = proj.to(ref.device, ref.dtype)
    te._t2v_w_emb = None
    transformer.register_forward_pre_hook(_stash_w_emb, with_kwargs=True)
    te.register_forward_pre_hook(_add_guidance)
    return te.guidance_proj


def guidance_proj_of(transformer: nn.Module) -> nn.Linear | None:
    return getattr(transformer.condition_embedder.time_embedder, "guidance_proj", None)


# ------------------------------------------------------------------------------------ strict loading
def _first_line(e: BaseException) -> str:
    line = next((s.strip() for s in str(e).splitlines() if s.strip()), "")
    return line[:240] or type(e).__name__


def _read_index(root: Path, path: Path) -> dict:
    f = root / "model_index.json"
    if not f.is_file():
        raise CheckpointError(
            f"{root}: model_index.json is missing (expected a diffusers WanPipeline folder: model_index.json, "
            "transformer/, vae/, text_encoder/, tokenizer/, scheduler/)"
        )
    try:
        index = json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{f}: invalid JSON ({_first_line(e)})") from None
    if not isinstance(index, dict):
        raise CheckpointError(f"{f}: expected a JSON object")
    return index


def _check_component(root: Path, name: str, index: dict, folder: Path, lib: str, classes) -> None:
    entry = index.get(name)
    if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(x, str) for x in entry)):
        raise CheckpointError(f"{root}: component '{name}' is missing from model_index.json")
    got_lib, got_cls = entry
    if got_lib != lib or (classes is not None and got_cls not in classes):
        want = lib if classes is None else f"{lib} {'/'.join(classes)}"
        raise CheckpointError(
            f"{root}: component '{name}' is {got_lib} {got_cls} in model_index.json; a Wan folder needs {want}"
        )
    if not folder.is_dir():
        raise CheckpointError(f"{root}: component '{name}' is missing ({folder} not found)")


def _config_class(name: str, folder: Path, config_file: str, root: Path) -> dict:
    f = folder / config_file
    if not f.is_file():
        raise CheckpointError(f"{root}: component '{name}' has no {config_file} in {folder}")
    try:
        return json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(
            f"{root}: component '{name}': invalid {config_file} ({_first_line(e)})"
        ) from None


def _raise_on_loading_info(name: str, info: dict, root: Path) -> None:
    def norm(x) -> list[str]:
        return sorted(str(k) for k in (x or []))

    missing, unexpected = norm(info.get("missing_keys")), norm(info.get("unexpected_keys"))
    mismatched = norm(info.get("mismatched_keys"))
    errors = [e for e in info.get("error_msgs") or [] if e]
    if missing or mismatched or errors:
        what = []
        if missing:
            what.append(f"{len(missing)} missing weights (e.g. {missing[0]})")
        if mismatched:
            what.append(f"{len(mismatched)} weights of mismatched shape (e.g. {mismatched[0]})")
        if errors:
            what.append(_first_line(Exception(errors[0])))
        raise CheckpointError(f"{root}: component '{name}' does not match its weights: " + "; ".join(what))
    if unexpected:
        warnings.warn(
            f"{root}: component '{name}': ignoring {len(unexpected)} unexpected weights", stacklevel=3
        )


def _load_diffusers(name: str, folder: Path, cls_name: str, dtype: torch.dtype, root: Path):
    import diffusers

    config = _config_class(name, folder, "config.json", root)
    if config.get("_class_name") != cls_name:
        raise CheckpointError(
            f"{root}: component '{name}' is {config.get('_class_name')!r} in {folder}/config.json; expected {cls_name}"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, info = getattr(diffusers, cls_name).from_pretrained(
                folder, torch_dtype=dtype, output_loading_info=True
            )
    except (OSError, ValueError, RuntimeError, TypeError, KeyError) as e:
        raise CheckpointError(f"{root}: component '{name}' does not load: {_first_line(e)}") from None
    _raise_on_loading_info(name, info, root)
    return model.eval()


def _load_text_encoder(folder: Path, cls_name: str, dtype: torch.dtype, root: Path):
    import transformers

    config = _config_class("text_encoder", folder, "config.json", root)
    archs = config.get("architectures") or [cls_name]
    if cls_name not in archs and not any(a in WAN_COMPONENTS["text_encoder"][1] for a in archs):
        raise CheckpointError(
            f"{root}: component 'text_encoder' is {archs} in {folder}/config.json; expected {cls_name}"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, info = getattr(transformers, cls_name).from_pretrained(
                folder, dtype=dtype, output_loading_info=True
            )
    except (OSError, ValueError, RuntimeError, TypeError, KeyError) as e:
        raise CheckpointError(f"{root}: component 'text_encoder' does not load: {_first_line(e)}") from None
    _raise_on_loading_info("text_encoder", info, root)
    return model.eval()


def _load_tokenizer(folder: Path, root: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError, RuntimeError, TypeError, KeyError, ImportError) as e:
        raise CheckpointError(f"{root}: component 'tokenizer' does not load: {_first_line(e)}") from None


def _load_scheduler(folder: Path, cls_name: str, root: Path):
    import diffusers

    from ..errors import ConfigError

    config = _config_class("scheduler", folder, "scheduler_config.json", root)
    try:
        schedule = FlowSchedule.from_config(config)
    except ConfigError as e:
        raise CheckpointError(f"{root}: component 'scheduler': {e}") from None
    try:
        scheduler = getattr(diffusers, cls_name).from_config(config)
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise CheckpointError(f"{root}: component 'scheduler' does not load: {_first_line(e)}") from None
    return scheduler, schedule


def _load_guidance(transformer: nn.Module, w_dim: int, file: Path) -> None:
    from ..weights import load_strict, read_state_dict

    if not file.is_file():
        raise CheckpointError(f"{file.parent}: component 'guidance_proj' is missing ({file.name} not found)")
    attach_guidance(transformer, w_dim, "zero")
    load_strict(guidance_proj_of(transformer), read_state_dict(file), f"component 'guidance_proj' ({file})")


# ------------------------------------------------------------------------------------ export
def lora_adapter_config(transformer: nn.Module) -> dict:
    """The peft LoraConfig of the transformer's LoRA as a dict (written as diffusers' LoRA metadata)."""
    cfg = getattr(transformer, "peft_config", {}).get("default")
    if cfg is None:
        raise InputError("the student has no LoRA to export (lora.rank = 0 trains the whole transformer)")
    d = cfg.to_dict()
    d["target_modules"] = sorted(d.get("target_modules") or [])
    return {k: (sorted(v) if isinstance(v, set) else v) for k, v in d.items()}


def export_lora_diffusers(
    student: WanBackbone, path: str | Path, weight_name: str = "pytorch_lora_weights.safetensors"
) -> Path:
    """Write the student's LoRA in diffusers' format (`WanPipeline.save_lora_weights`: keys
    "transformer.<module>.lora_A/B.weight", the peft config as metadata), loadable by
    `WanPipeline.load_lora_weights` on the teacher's transformer.

    Raises:
        InputError: the student takes w through a guidance embedding (option a), which WanPipeline
            cannot feed: export the merged transformer instead (`save_pretrained(path, w=...)` folds it).
    """
    from diffusers import WanPipeline
    from peft import get_peft_model_state_dict

    if student.w_embedding_dim is not None:
        raise InputError(
            "this student takes w through a guidance embedding that WanPipeline cannot feed: export the merged "
            "transformer with a fixed w (save_pretrained(path, w=...)) or distill with a fixed w"
        )
    meta = lora_adapter_config(student.unet)
    state = {
        k: v.detach().float().cpu().contiguous() for k, v in get_peft_model_state_dict(student.unet).items()
    }
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    WanPipeline.save_lora_weights(
        path, transformer_lora_layers=state, weight_name=weight_name, transformer_lora_adapter_metadata=meta
    )
    return path / weight_name
