"""FSDP2 sharding of the student (and its EMA target) for `train.parallel=fsdp`.

accelerate (1.15) starts the processes and the process group (NCCL on GPUs, gloo on CPUs) and does
autocast, reductions and gathers; it enables its own FSDP plugin only for GPU launches (its
MULTI_CPU state never becomes FSDP). So that one code path runs, and is tested, on both, the trainer
applies torch's FSDP2 `fully_shard` itself on accelerate's process group:

* each top-level block (every element of the outermost `nn.ModuleList`s: UNet down / mid / up
  blocks, transformer blocks) is one FSDP unit, the network's root another: weights are gathered
  block by block in forward and backward and freed after (`train.fsdp_reshard_after_forward`);
* gradients are reduce-scattered (averaged) over the processes, so each process keeps only its
  shard of gradients and of the AdamW state;
* `train.mixed_precision=bf16`: weights are gathered and used in bf16, gradients reduced in fp32,
  the sharded master copy of trainable weights stays fp32;
* `model.gradient_checkpointing`: the backbone's per-block activation checkpointing (unchanged);
* `train.fsdp_cpu_offload`: sharded parameters, gradients and optimizer state live on the CPU.

The EMA target is sharded with the same layout, so `ema_update` is elementwise on the local shards.
Every forward of a sharded network is collective, so every rank must run the same forwards: the
consistency term must be computed on every rank (placement "all", or "custom" with every rank in
`cd_ranks`); reward terms may still be placed on any ranks (reward models are not sharded).
DeepSpeed is not supported (refused with one line); FSDP covers ZeRO-2/3-style sharding here.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError


def check_launch(distributed_type: str) -> None:
    """One-line ConfigErrors for launches the trainer does not use (accelerate's DeepSpeed / FSDP)."""
    if distributed_type == "DEEPSPEED":
        raise ConfigError(
            "DeepSpeed is not supported: launch with --multi_gpu (or on CPUs plainly) and set "
            "train.parallel=fsdp for ZeRO-2/3-style sharding (train.fsdp_reshard_after_forward)"
        )
    if distributed_type == "FSDP":
        raise ConfigError(
            "accelerate's own FSDP launch (--use_fsdp / an FSDP config) is not used: launch with --multi_gpu "
            "and set train.parallel=fsdp (the trainer shards the student with FSDP2 itself)"
        )


def check(cfg, world: int, cd_ranks: list[int]) -> None:
    """One-line ConfigErrors for what sharded training cannot do (before the student is sharded)."""
    t = cfg.train
    if t.parallel != "fsdp":
        if t.fsdp_cpu_offload:
            raise ConfigError("train.fsdp_cpu_offload=true needs train.parallel=fsdp")
        return
    if world > 1 and sorted(cd_ranks) != list(range(world)):
        raise ConfigError(
            f"train.parallel=fsdp needs the consistency term on every rank (it runs on {cd_ranks} of "
            f"{world}): sharded weights are gathered collectively in each forward; use train.placement=all"
        )
    if cfg.optim.name == "adamw8bit":
        raise ConfigError("train.parallel=fsdp: 8-bit AdamW is not supported on sharded weights")


def is_sharded(module: nn.Module) -> bool:
    """True when `module` (or any submodule) is an FSDP2 unit."""
    from torch.distributed.fsdp import FSDPModule

    return any(isinstance(m, FSDPModule) for m in module.modules())


def block_units(net: nn.Module) -> list[nn.Module]:
    """The FSDP units below the root: every element of each outermost nn.ModuleList, in module order."""
    units, taken = [], []
    for name, m in net.named_modules():
        if any(name == p or name.startswith(p + ".") for p in taken):
            continue
        if isinstance(m, nn.ModuleList) and name:
            taken.append(name)
            units.extend(child for child in m if any(True for _ in child.parameters()))
    return units


def shard(net: nn.Module, device: torch.device, *, mixed_precision: str = "no", cpu_offload: bool = False,
          reshard_after_forward: bool = True) -> nn.Module:  # fmt: skip
    """Apply FSDP2 `fully_shard` to the blocks of `net` and to `net` itself (in place; returns `net`).

    Needs an initialised default process group (accelerate's). Parameters become DTensors sharded
    along dim 0 over all processes; names are unchanged.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    world = torch.distributed.get_world_size()
    mesh = init_device_mesh(device.type, (world,))
    mp = MixedPrecisionPolicy()
    if mixed_precision in ("bf16", "fp16"):
        low = {"bf16": torch.bfloat16, "fp16": torch.float16}[mixed_precision]
        mp = MixedPrecisionPolicy(param_dtype=low, reduce_dtype=torch.float32)
        # one original dtype per FSDP unit: the frozen weights join the fp32 master copy of trainable ones
        for p in net.parameters():
            p.data = p.data.float()
    offload = CPUOffloadPolicy(pin_memory=device.type == "cuda") if cpu_offload else OffloadPolicy()
    kw = {"mesh": mesh, "mp_policy": mp, "offload_policy": offload}
    for unit in block_units(net):
        fully_shard(unit, reshard_after_forward=reshard_after_forward, **kw)
    fully_shard(net, reshard_after_forward=reshard_after_forward, **kw)
    return net


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor (a collective for a DTensor: every rank must call it)."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def full_trainable(net: nn.Module) -> dict[str, torch.Tensor]:
    """{name: whole tensor} of the trainable parameters, gathered on every rank (collective)."""
    return {n: full_tensor(p.detach()).cpu() for n, p in net.named_parameters() if p.requires_grad}


def consolidated_student(cfg, teacher, sharded_unet: nn.Module, main: bool):
    """A plain (unsharded) copy of the student on the main process, holding the trained weights, for
    export and for anything that runs on one process only; None on the other ranks. Collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    from .roles import build_student

    full = get_model_state_dict(sharded_unet, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not main:
        return None
    student = build_student(cfg, teacher)
    for p in student.trainable_parameters():
        p.data = p.data.float()
    student.unet.to("cpu")
    missing, unexpected = student.unet.load_state_dict(full, strict=False)
    if unexpected or [k for k in missing if k in dict(student.unet.named_parameters())]:
        raise RuntimeError(f"consolidated student does not fit: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return student
