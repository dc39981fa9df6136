"""The released T2V-Turbo LoRA files (`unet_lora.pt`): an ordered list of tensors, no names.

Format (for both the VideoCrafter2 and the ModelScope releases):
- a plain Python list `[up_0, down_0, up_1, down_1, ...]`, float32, one (up, down) pair per layer;
- the layers are every module whose class is *exactly* `nn.Linear`, `nn.Conv2d` or `nn.Conv3d`
  (subclasses and Conv1d are skipped), in `named_modules()` order of the whole UNet;
- rank r (64 for VC2, 32 for MS), clamped to min(in, out): conv_in/conv_out get rank 4;
- Linear: up (out, r), down (r, in); ConvNd: up (out, r, 1, ...), down (r, in, *kernel) with the base
  layer's stride and padding;
- merge: W += up.flatten(1) @ down.flatten(1), reshaped to W (scale 1: no alpha / r).

The ModelScope release also exists in a 250-tensor layout (diffusers <= 0.26 without the peft backend
saw most layers as LoRACompatible subclasses): conv_in, time_embedding.cond_proj, the temporal
transformers' proj_in/proj_out, every temporal Conv3d, conv_out. The list length tells them apart.

These functions take a plain UNet (ours for VC2, diffusers' `UNet3DConditionModel` for MS) and either
inject peft LoRA layers holding the tensors (`load_lora_list`, for training on or inspecting the
delta) or fold them straight into the weights (`merge_lora_list`, for inference).

LoRA-only releases do not store the base weight of the guidance projection (`time_cond_proj` /
`time_embedding.cond_proj`): the authors' code re-creates it with an unseeded random init.
`init_guidance_projection` makes that explicit: a seeded init and a warning.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import CheckpointError
from ..weights import read_checkpoint

RELEASE_LORA_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv2d, nn.Conv3d)
LAYOUTS = ("full", "ms-legacy")
# the 250-tensor ModelScope layout (diffusers <= 0.26 without peft), expressed on module names
_MS_LEGACY = re.compile(
    r"^(conv_in|conv_out|time_embedding\.cond_proj|transformer_in\.proj_(in|out)"
    r"|.*\.temp_attentions\.\d+\.proj_(in|out)|.*\.temp_convs\.\d+\.conv\d\.\d+)$"
)
GUIDANCE_PROJECTIONS = ("time_cond_proj", "time_embedding.cond_proj")
MERGED_RELEASE_HINT = (
    "Only the merged T2V-Turbo (VC2) UNet release stores the weight the authors actually used; "
    "load that file for bit-exact reproduction of their samples."
)


@dataclass
class LoraPair:
    """One wrapped layer of a release list: its module name, the base layer and its (up, down) tensors."""

    name: str
    module: nn.Module
    up: Tensor
    down: Tensor

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])


def release_lora_targets(unet: nn.Module, layout: str = "full") -> list[str]:
    """Names of the layers a release list covers, in list order.

    Args:
        unet: a plain (not LoRA-injected) UNet.
        layout: "full" (every exact Linear/Conv2d/Conv3d) or "ms-legacy" (the 250-tensor MS layout).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; valid: {list(LAYOUTS)}")
    names = [n for n, m in unet.named_modules() if n and type(m) in RELEASE_LORA_TYPES]
    if layout == "ms-legacy":
        names = [n for n in names if _MS_LEGACY.match(n)]
    return names


def _in_out(m: nn.Module) -> tuple[int, int, tuple[int, ...]]:
    if isinstance(m, nn.Linear):
        return m.in_features, m.out_features, ()
    return m.in_channels, m.out_channels, tuple(m.kernel_size)


def release_lora_shapes(m: nn.Module, rank: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(up, down) tensor shapes the release format uses for base layer `m` at requested `rank`."""
    cin, cout, kernel = _in_out(m)
    r = min(rank, cin, cout)
    return (cout, r, *([1] * len(kernel))), (r, cin, *kernel)


def _fits(m: nn.Module, up: Tensor, down: Tensor) -> bool:
    cin, cout, kernel = _in_out(m)
    r = down.shape[0]
    return (
        tuple(down.shape) == (r, cin, *kernel)
        and tuple(up.shape) == (cout, r, *([1] * len(kernel)))
        and 1 <= r <= min(cin, cout)
    )


def read_lora_list(path: str | Path) -> list[Tensor]:
    """Read a released `unet_lora.pt` (a list of tensors), weights-only (`t2v_turbo.weights`)."""
    obj = read_checkpoint(path, unwrap=())
    if isinstance(obj, tuple):
        obj = list(obj)
    if not isinstance(obj, list) or not all(isinstance(t, Tensor) for t in obj):
        raise CheckpointError(
            f"expected a list of tensors (T2V-Turbo's unet_lora.pt), got a {type(obj).__name__}: {path}"
        )
    return obj


def _describe_mismatch(names: list[str], mods: list[nn.Module], pairs: list[tuple[Tensor, Tensor]]) -> str:
    """Align layers and (up, down) pairs by shape (one-step lookahead) and name what is missing/unexpected."""
    missing, unexpected, wrong = [], [], []
    i = j = 0
    while i < len(names) and j < len(pairs):
        if _fits(mods[i], *pairs[j]):
            i, j = i + 1, j + 1
        elif j + 1 < len(pairs) and _fits(mods[i], *pairs[j + 1]):
            unexpected.append(j)
            j += 1
        elif i + 1 < len(names) and _fits(mods[i + 1], *pairs[j]):
            missing.append(names[i])
            i += 1
        else:
            wrong.append(f"{names[i]} <- tensors {2 * j},{2 * j + 1}")
            i, j = i + 1, j + 1
    missing += names[i:]
    unexpected += range(j, len(pairs))
    unexp = [
        f"tensors {2 * k},{2 * k + 1} (up {list(pairs[k][0].shape)}, down {list(pairs[k][1].shape)})"
        for k in unexpected
    ]
    msg = f"missing LoRA for layers: {missing[:20]}; unexpected: {unexp[:20]}; shape mismatches: {wrong[:20]}"
    if any(p[1].dim() == 2 and p[1].shape[1] == 256 for p in (pairs[k] for k in unexpected)):
        msg += " (a LoRA for a 256-d guidance projection: build the student first, e.g. make_student())"
    return msg


def match_lora_list(unet: nn.Module, tensors: Sequence[Tensor], layout: str = "auto") -> list[LoraPair]:
    """Pair every tensor of a release list with its layer, checking count and shapes strictly.

    Args:
        unet: a plain UNet (the student for v1 lists: they include `time_cond_proj`).
        tensors: `[up_0, down_0, up_1, down_1, ...]`.
        layout: "auto" (by length: "full" or "ms-legacy"), "full" or "ms-legacy".
    Raises:
        CheckpointError naming the missing layers and the unexpected tensors on any mismatch.
    """
    tensors = list(tensors)
    if len(tensors) % 2:
        raise CheckpointError(f"a release LoRA list holds (up, down) pairs; got an odd length {len(tensors)}")
    if layout == "auto":
        n_full = len(release_lora_targets(unet, "full"))
        legacy = release_lora_targets(unet, "ms-legacy")
        layout = "ms-legacy" if len(tensors) == 2 * len(legacy) and len(tensors) != 2 * n_full else "full"
    names = release_lora_targets(unet, layout)
    mods = [unet.get_submodule(n) for n in names]
    pairs = [(tensors[2 * k], tensors[2 * k + 1]) for k in range(len(tensors) // 2)]
    if len(pairs) != len(names) or not all(_fits(m, *p) for m, p in zip(mods, pairs)):
        raise CheckpointError(
            f"LoRA list does not fit this UNet ({len(tensors)} tensors for {len(names)} layers, layout "
            f"{layout!r}, i.e. {2 * len(names)} expected): " + _describe_mismatch(names, mods, pairs)
        )
    return [LoraPair(n, m, up, down) for n, m, (up, down) in zip(names, mods, pairs)]


@torch.no_grad()
def merge_lora_list(
    unet: nn.Module, tensors: Sequence[Tensor], layout: str = "auto", scale: float = 1.0
) -> nn.Module:
    """Fold a release list into the base weights in place: W += scale * up @ down (the authors' collapse)."""
    for p in match_lora_list(unet, tensors, layout):
        w = p.module.weight
        # (out, r) @ (r, in * prod(kernel)) -> (out, in * prod(kernel))
        delta = p.up.flatten(1).float() @ p.down.flatten(1).float()
        w.add_((scale * delta).reshape(w.shape).to(w.dtype))
    return unet


def load_lora_list(
    unet: nn.Module,
    tensors: Sequence[Tensor],
    layout: str = "auto",
    dropout: float = 0.0,
    adapter_name: str = "default",
    trainable: bool = False,
) -> nn.Module:
    """Inject peft LoRA layers holding a release list (scale 1, each layer at its own rank); in place.

    The result behaves like the authors' injected model; `models.lora.merge_lora` folds it in.
    Base weights are frozen; the LoRA tensors train only when `trainable`.
    """
    from peft import LoraConfig, inject_adapter_in_model
    from peft.tuners.lora import LoraLayer

    pairs = match_lora_list(unet, tensors, layout)
    ranks = [p.rank for p in pairs]
    r = max(set(ranks), key=ranks.count)
    # "^name" anchors peft's pattern (it matches "(.*\.)?(pattern)$") to this exact module
    pattern = {"^" + re.escape(p.name): p.rank for p in pairs if p.rank != r}
    config = LoraConfig(
        r=r,
        lora_alpha=r,
        rank_pattern=pattern,
        alpha_pattern=dict(pattern),
        target_modules=[p.name for p in pairs],
        lora_dropout=dropout,
    )
    unet.requires_grad_(False)
    inject_adapter_in_model(config, unet, adapter_name=adapter_name)
    injected = {n for n, m in unet.named_modules() if isinstance(m, LoraLayer)}
    if injected != {p.name for p in pairs}:
        raise RuntimeError(
            f"peft wrapped other layers than the list covers: extra {sorted(injected - {p.name for p in pairs})[:10]}, "
            f"missing {sorted({p.name for p in pairs} - injected)[:10]}"
        )
    with torch.no_grad():
        for p in pairs:
            layer = unet.get_submodule(p.name)
            if layer.r[adapter_name] != p.rank or not math.isclose(layer.scaling[adapter_name], 1.0):
                raise RuntimeError(
                    f"{p.name}: peft rank {layer.r[adapter_name]} / scale {layer.scaling[adapter_name]}"
                )
            a, b = layer.lora_A[adapter_name].weight, layer.lora_B[adapter_name].weight
            a.copy_(p.down.reshape(a.shape))
            b.copy_(p.up.reshape(b.shape))
            a.requires_grad_(trainable)
            b.requires_grad_(trainable)
    return unet


def lora_list_from_peft(unet: nn.Module, layout: str = "full", adapter_name: str = "default") -> list[Tensor]:
    """The inverse of `load_lora_list`: a release-format list from a LoRA-injected UNet.

    Layers in `layout` without a LoRA (e.g. Conv1d never has one in the release format, and any layer
    the adapter skipped) raise. The peft scale alpha / r is folded into `up`.
    """
    from peft.tuners.lora import LoraLayer

    out: list[Tensor] = []
    layers: dict[str, nn.Module] = {}
    names: list[str] = []
    inside: tuple[str, ...] = ()
    for n, m in unet.named_modules():
        if not n or n.startswith(inside):
            continue  # the root, or peft's own children (base_layer, lora_A, ...)
        if isinstance(m, LoraLayer):
            inside += (n + ".",)
            if type(m.get_base_layer()) in RELEASE_LORA_TYPES:
                names.append(n)
                layers[n] = m
        elif type(m) in RELEASE_LORA_TYPES:
            names.append(n)
    if layout == "ms-legacy":
        names = [n for n in names if _MS_LEGACY.match(n)]
    missing = [n for n in names if n not in layers]
    if missing:
        raise ValueError(f"these layers have no LoRA, so no release-format list exists: {missing[:20]}")
    for n in names:
        layer = layers[n]
        up = layer.lora_B[adapter_name].weight.detach() * layer.scaling[adapter_name]
        out += [up.float().clone(), layer.lora_A[adapter_name].weight.detach().float().clone()]
    return out


def guidance_projection(unet: nn.Module) -> tuple[str, nn.Linear] | None:
    """(name, layer) of the student's guidance projection (VC2 `time_cond_proj`, diffusers `time_embedding.cond_proj`)."""
    for name in GUIDANCE_PROJECTIONS:
        try:
            m = unet.get_submodule(name)
        except AttributeError:
            continue
        if isinstance(m, nn.Module) and hasattr(m, "weight"):
            return name, m
    return None


@torch.no_grad()
def init_guidance_projection(unet: nn.Module, seed: int = 0, warn: bool = True) -> str:
    """Give the guidance projection's base weight a seeded default `nn.Linear` init (kaiming-uniform).

    Released LoRA-only files do not store this weight; the authors' app re-created it unseeded, so no
    LoRA-only load can reproduce their exact outputs. Returns the layer name.
    """
    found = guidance_projection(unet)
    if found is None:
        raise ValueError(
            f"no guidance projection ({' / '.join(GUIDANCE_PROJECTIONS)}) in this UNet: not a student"
        )
    name, layer = found
    w = layer.get_base_layer().weight if hasattr(layer, "get_base_layer") else layer.weight
    g = torch.Generator(device="cpu").manual_seed(seed)
    fresh = torch.empty(w.shape, dtype=torch.float32)
    nn.init.kaiming_uniform_(fresh, a=math.sqrt(5), generator=g)  # nn.Linear's default init
    w.copy_(fresh.to(w.dtype))
    if warn:
        warnings.warn(
            f"{name}.weight (the guidance projection's base weight) is not stored in LoRA-only releases; "
            f"it was initialised from seed {seed}. The authors' code used an unseeded random init, so samples "
            f"will differ from theirs. {MERGED_RELEASE_HINT}",
            stacklevel=2,
        )
    return name


def load_release_lora(
    unet: nn.Module,
    path_or_tensors: str | Path | Sequence[Tensor],
    merge: bool = True,
    seed: int | None = 0,
    layout: str = "auto",
    dropout: float = 0.0,
) -> nn.Module:
    """Apply a released `unet_lora.pt` to a plain student UNet (VC2 `VC2UNet` or diffusers `UNet3DConditionModel`).

    Args:
        merge: fold into the weights (inference) or keep peft LoRA layers (further training).
        seed: re-initialise the guidance projection's base weight from this seed (with a warning);
            None keeps the UNet's current weight (e.g. one you set yourself).
    """
    tensors = (
        read_lora_list(path_or_tensors) if isinstance(path_or_tensors, (str, Path)) else list(path_or_tensors)
    )
    if seed is not None and guidance_projection(unet) is not None:
        init_guidance_projection(unet, seed, warn=True)
    if merge:
        return merge_lora_list(unet, tensors, layout)
    return load_lora_list(unet, tensors, layout, dropout=dropout, trainable=True)
