"""LoRA through peft, with targets chosen by module type (not by name).

diffusers' video UNets have no peft mixin, and names such as `conv1`/`conv2` also match
`nn.Sequential` blocks in ModelScope's temporal convolutions, which peft rejects. So we list the
exact dotted names of every Linear / Conv1d / Conv2d / Conv3d and hand peft that list.
The released T2V-Turbo recipe: rank 64 (ModelScope 32), scale 1.0 (alpha = rank), dropout 0.1,
up-projection zero-initialised (peft's default), merged into the weights for inference.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import CheckpointError

DEFAULT_TARGET_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def lora_target_names(
    module: nn.Module,
    target_types: Sequence[type[nn.Module]] = DEFAULT_TARGET_TYPES,
    exclude: Sequence[str] = (),
) -> list[str]:
    """Dotted names of every submodule whose *exact* type is in `target_types` (subclasses excluded),
    in module order, minus names containing any string in `exclude`."""
    types = tuple(target_types)
    return [
        name
        for name, m in module.named_modules()
        if name and type(m) in types and not any(x in name for x in exclude)
    ]


def add_lora(
    unet: nn.Module,
    rank: int = 64,
    alpha: float | None = None,
    dropout: float = 0.0,
    target_types: Sequence[type[nn.Module]] = DEFAULT_TARGET_TYPES,
    exclude: Sequence[str] = (),
    adapter_name: str = "default",
    init_lora_weights: bool | str = True,
) -> nn.Module:
    """Inject peft LoRA layers into every Linear/Conv of `unet` (in place; returns it).

    Base weights are frozen, only the LoRA A/B matrices train. `alpha=None` means alpha = rank
    (scale 1.0, the released recipe).
    """
    from peft import LoraConfig, inject_adapter_in_model

    targets = lora_target_names(unet, target_types, exclude)
    if not targets:
        raise ValueError("no Linear/Conv modules found to put LoRA on")
    config = LoraConfig(
        r=rank,
        lora_alpha=float(alpha if alpha is not None else rank),
        lora_dropout=dropout,
        target_modules=targets,
        init_lora_weights=init_lora_weights,
    )
    unet.requires_grad_(False)
    inject_adapter_in_model(config, unet, adapter_name=adapter_name)
    for name, p in unet.named_parameters():
        p.requires_grad_("lora_" in name)
    return unet


def has_lora(module: nn.Module) -> bool:
    from peft.tuners.lora import LoraLayer

    return any(isinstance(m, LoraLayer) for m in module.modules())


@torch.no_grad()
def merge_lora(unet: nn.Module) -> nn.Module:
    """Fold every LoRA layer into its base weight and put the plain base layer back (in place)."""
    from peft.tuners.lora import LoraLayer

    for name, m in list(unet.named_modules()):
        if isinstance(m, LoraLayer):
            m.merge()
            parent_name, _, child = name.rpartition(".")
            parent = unet.get_submodule(parent_name) if parent_name else unet
            setattr(parent, child, m.get_base_layer())
    return unet


def lora_state_dict(unet: nn.Module) -> dict[str, torch.Tensor]:
    """The LoRA tensors alone, keyed in peft's format (`...lora_A.weight`), for a standard LoRA file."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(unet).items()}


def load_lora_state_dict(unet: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load tensors produced by `lora_state_dict` into a LoRA-injected UNet (strict)."""
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(unet, state)
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        shown = ", ".join(unexpected[:5]) + (", ..." if len(unexpected) > 5 else "")
        raise CheckpointError(f"LoRA state dict does not match the model: unexpected keys {len(unexpected)} ({shown})")
