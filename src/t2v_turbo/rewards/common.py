"""Shared plumbing of the real reward models: checkpoint files, strict loading, checkpointing, text cache."""

from __future__ import annotations

import functools
import re
import warnings
import zipfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


def require_path(path: str | Path | None, what: str, expected: str, published: str) -> Path:
    """Return `path` as a Path, or raise FileNotFoundError naming what is expected and where it is published."""
    if path is not None and Path(path).exists():
        return Path(path)
    raise FileNotFoundError(
        f"{what}: no checkpoint at {str(path)!r}. Expected {expected}. "
        f"The official file is published at {published}; download it yourself and pass path=... "
        "(nothing is downloaded automatically)."
    )


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zips holding `constants.pkl` (torch.save zips do not)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("constants.pkl") for n in z.namelist())


def load_state_dict(path: str | Path, key: str | None = None) -> dict[str, Tensor]:
    """Read a state dict from .safetensors / .pt / .pth / .bin (weights_only) or an OpenAI TorchScript archive.

    Args:
        path: the file.
        key: the top-level entry holding the weights (HPS 'state_dict', ViCLIP 'model',
            InternVideo2 'module'); a file without that entry is taken as the state dict itself.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path))
    elif _is_torchscript(path):  # OpenAI's ViT-L-14.pt (weights_only torch.load refuses it)
        sd = torch.jit.load(str(path), map_location="cpu").state_dict()
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    if key is not None and isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
        sd = sd[key]
    if not isinstance(sd, dict):
        raise TypeError(f"{path}: expected a dict of tensors, got {type(sd).__name__}")
    if sd and all(k.startswith("module.") for k in sd):  # saved from a DDP wrapper
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return dict(sd)


def strict_load(
    module: nn.Module,
    sd: dict[str, Tensor],
    ignore: Sequence[str | Callable[[str], bool]] = (),
    strict: bool = True,
    what: str = "",
) -> None:
    """Load `sd` into `module` requiring every key on both sides, except checkpoint keys in `ignore`.

    `ignore` (regexes searched in the key, or predicates) lists checkpoint keys known to be unused
    by the score (training heads, persistent position-id buffers). With strict=False other
    unexpected keys only warn; missing keys and shape mismatches always raise.
    """
    tests = [p if callable(p) else re.compile(p).search for p in ignore]
    sd = {k: v for k, v in sd.items() if not any(t(k) for t in tests)}
    own = module.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = [
        f"{k}: {tuple(sd[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in sd and sd[k].shape != own[k].shape
    ]
    if missing or shapes or (unexpected and strict):
        raise RuntimeError(
            f"{what} checkpoint does not match the architecture: missing {missing[:8]} ({len(missing)}), "
            f"unexpected {unexpected[:8]} ({len(unexpected)}), shape mismatches {shapes[:8]}"
        )
    if unexpected:
        warnings.warn(
            f"{what}: ignoring {len(unexpected)} unexpected keys, e.g. {unexpected[:5]}", stacklevel=2
        )
        sd = {k: v for k, v in sd.items() if k in own}
    module.load_state_dict(sd, strict=True)


def _checkpointed(fn: Callable, *args, **kwargs):
    tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, Tensor)]
    if torch.is_grad_enabled() and any(a.requires_grad for a in tensors):
        return checkpoint(fn, *args, use_reentrant=False, **kwargs)
    return fn(*args, **kwargs)


def enable_checkpointing(layers: Iterable[nn.Module]) -> None:
    """Recompute each layer's activations in backward (works in eval mode, keeps state-dict keys)."""
    for layer in layers:
        if not getattr(layer, "_t2v_checkpointed", False):
            layer.forward = functools.partial(_checkpointed, layer.forward)
            layer._t2v_checkpointed = True


def freeze(module: nn.Module, dtype: torch.dtype = torch.float32) -> nn.Module:
    """Eval mode, no parameter gradients, cast to `dtype`."""
    return module.to(dtype).eval().requires_grad_(False)


class TextCache:
    """Per-prompt cache of text features computed once under no_grad (keyed by the prompt string)."""

    def __init__(self, encode: Callable[[list[str]], Tensor]):
        self.encode = encode
        self.store: dict[str, Tensor] = {}

    def __call__(self, prompts: Sequence[str], device: torch.device) -> Tensor:
        new = [p for p in dict.fromkeys(prompts) if p not in self.store]
        if new:
            with torch.no_grad():
                feats = self.encode(new).float()
            self.store.update({p: f for p, f in zip(new, feats)})
        return torch.stack([self.store[p] for p in prompts]).to(device)

    def clear(self) -> None:
        self.store.clear()
