"""The backbone registries and `load_backbone`.

- `BACKBONES`: family name -> loader `(path, **kw) -> Backbone` (the family is recorded as
  "family" in every saved folder's `t2v_turbo.json`).
- `MODELS`: model name -> factory `(**kw) -> Backbone`, for models known by name (a plugin's
  shipped weights, e.g. the MovingDigits world's "turbo", "vcm", "teacher").

Adapters import their heavy stacks inside the loaders, so importing this module is cheap.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import CheckpointError
from ..registry import Registry
from .base import Backbone, read_metadata

BACKBONES: Registry = Registry("backbone family")
MODELS: Registry = Registry("model")


@BACKBONES.register("modelscope", help="ModelScopeT2V / AnimateDiff diffusers folders (UNet3D / UNetMotion)")
def _load_diffusers_video(path, **kw) -> Backbone:
    from .diffusers_video import DiffusersVideoBackbone

    return DiffusersVideoBackbone.from_pretrained(path, **kw)


BACKBONES.register("animatediff", _load_diffusers_video, help="alias of modelscope (UNetMotionModel folders)")


@BACKBONES.register("videocrafter2", help="VideoCrafter2 model.ckpt, native folders, T2V-Turbo UNet / LoRA files")
def _load_videocrafter2(path, **kw) -> Backbone:
    from .videocrafter2 import VideoCrafter2

    return VideoCrafter2.from_pretrained(path, **kw)


@BACKBONES.register("wan", help="Wan2.1 diffusers folders (WanTransformer3DModel + AutoencoderKLWan + UMT5), flow matching")
def _load_wan(path, **kw) -> Backbone:
    from .wan import WanBackbone

    return WanBackbone.from_pretrained(path, **kw)


def guess_family(path: Path) -> str:
    """The family of a local checkpoint: its `t2v_turbo.json`, else by layout (files and `*.ckpt`
    folders are VideoCrafter2, other folders diffusers)."""
    meta = read_metadata(path) if path.is_dir() else {}
    if meta.get("family"):
        return str(meta["family"])
    if path.is_file() or any(path.glob("*.ckpt")):
        return "videocrafter2"
    if (path / "transformer").is_dir():
        return "wan"
    return "modelscope"


def load_backbone(name_or_path: str | Path, device: str | torch.device = "cpu", **kw) -> Backbone:
    """A model registered by name (`MODELS`) or a local checkpoint folder / file, in eval mode.

    Raises:
        CheckpointError: the name is unknown and no such path exists, or the checkpoint cannot be
            read (corrupt, truncated, not weights-only, wrong layout), in one line.
    """
    import pickle

    try:
        return _load_backbone(name_or_path, device, **kw)
    except (pickle.UnpicklingError, EOFError, OSError, KeyError) as e:
        raise CheckpointError(f"cannot load model {str(name_or_path)!r}: {_one_line(e)}") from None
    except Exception as e:
        if type(e).__name__ == "SafetensorError":  # safetensors' own error for corrupt files
            raise CheckpointError(f"cannot load model {str(name_or_path)!r}: corrupt safetensors file ({_one_line(e)})") from None
        raise


def _one_line(e: BaseException) -> str:
    text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    return " ".join(text.split()) or type(e).__name__


def _load_backbone(name_or_path, device, **kw) -> Backbone:
    name = str(name_or_path)
    if not isinstance(name_or_path, Path) and name in MODELS:
        return MODELS.get(name)(**kw).to(device).eval()
    path = Path(name_or_path)
    if not path.exists():
        raise CheckpointError(
            f"model {name!r} not found: give one of {MODELS.names()} or a local checkpoint path"
        )
    family = guess_family(path)
    loader = BACKBONES.get(family)
    if family != "videocrafter2" and path.is_dir() and not (path / "vae").exists() and (path.parent / "vae").exists():
        kw.setdefault("base", path.parent)  # a UNet-only student folder next to its teacher's components
    return loader(path, **kw).to(device).eval()
