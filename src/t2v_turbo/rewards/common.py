"""Shared plumbing of the real reward models: required checkpoint paths, freezing, the text cache.

Reading checkpoints, strict loading and gradient checkpointing live in `t2v_turbo.weights`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import CheckpointError


def require_path(path: str | Path | None, what: str, expected: str, published: str) -> Path:
    """Return `path` as a Path, or raise CheckpointError naming what is expected and where it is published."""
    if path is not None and Path(path).exists():
        return Path(path)
    raise CheckpointError(
        f"{what}: no checkpoint at {str(path)!r}. Expected {expected}. "
        f"The official file is published at {published}; download it yourself and pass path=... "
        "(nothing is downloaded automatically)."
    )


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
