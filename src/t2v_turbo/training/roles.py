"""Build the roles of a run from its config (teacher, student, EMA target, rewards, optimizer, the
step's `DistillConfig`) and export the result (the LoRA alone, the merged student in its native
format)."""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

import torch
from torch import nn

from ..distill import DistillConfig
from ..errors import CheckpointError, ConfigError
from ..models.base import Backbone


def load_teacher(cfg, device: str | torch.device = "cpu") -> Backbone:
    """`model.teacher`: "tiny" (models/tiny.py, sized by the data section), a shipped name or a path."""
    spec = cfg.model.teacher
    if spec == "tiny-wan":  # a tiny Wan2.1 (flow matching) teacher, 4k + 1 frames, sides multiple of 16
        from ..errors import T2VTurboError
        from ..models.tiny import tiny_wan_teacher

        d = cfg.data
        try:
            teacher = tiny_wan_teacher(
                seed=cfg.model.tiny_seed, frames=d.num_frames or 5, height=d.height or d.width or 16,
                width=d.width or d.height or 16,
            )  # fmt: skip
        except T2VTurboError as e:
            raise ConfigError(f"model.teacher=tiny-wan: {e}") from None
    elif spec == "tiny":
        from ..models.tiny import tiny_modelscope

        d = cfg.data
        if d.width is not None and d.height is not None and d.width != d.height:
            raise ConfigError("the tiny teacher makes square videos: set data.height == data.width")
        teacher = tiny_modelscope(
            seed=cfg.model.tiny_seed, frames=d.num_frames or 4, size=d.height or d.width or 16
        )
    else:
        from ..models.registry import load_backbone

        try:
            teacher = load_backbone(spec)
        except FileNotFoundError as e:
            raise CheckpointError(f"model.teacher={spec!r}: {e}") from None
    return teacher.to(device).freeze().eval()


def distill_config(cfg) -> DistillConfig:
    """The `distill_step` knobs of the config's `distill` section (the grid and EMA decay stay here)."""
    d = cfg.distill
    fixed = getattr(cfg.model, "fixed_w", None)  # option (b): a plain student distilled at one w
    return DistillConfig(
        w_min=d.w_min if fixed is None else fixed, w_max=d.w_max if fixed is None else fixed, loss_type=d.loss_type, huber_c=d.huber_c, target=d.target,
        sigma_data=d.sigma_data, timestep_scaling=d.timestep_scaling, decode_checkpointing=d.decode_checkpointing,
    )  # fmt: skip


def build_student(cfg, teacher: Backbone) -> Backbone:
    """The student: the teacher's UNet with a w embedding, then LoRA (lora.rank > 0) or the whole UNet
    trainable."""
    fixed = getattr(cfg.model, "fixed_w", None)
    if fixed is None:
        student = teacher.make_student(cfg.model.w_embedding_dim, init=cfg.model.student_init, seed=cfg.seed)
    else:  # option (b): the plain architecture distilled at one w (Wan; docs/flow_matching.md section 4)
        import inspect

        if "fixed_w" not in inspect.signature(teacher.make_student).parameters:
            raise ConfigError(
                f"model.fixed_w: a {getattr(teacher, 'family', type(teacher).__name__)} teacher has no plain "
                "fixed-w student; give model.w_embedding_dim instead"
            )
        student = teacher.make_student(None, init=cfg.model.student_init, seed=cfg.seed, fixed_w=fixed)
    student.unet.requires_grad_(True)
    if cfg.lora.rank > 0:
        student.add_lora(rank=cfg.lora.rank, alpha=cfg.lora.alpha, dropout=cfg.lora.dropout)
    if cfg.model.gradient_checkpointing:
        student.enable_gradient_checkpointing(True)
    student.unet.train()
    return student


def make_target(cfg, teacher: Backbone, student: Backbone) -> Backbone:
    """The EMA target network: a frozen copy of the student (same structure, same weights)."""
    target = build_student(cfg, teacher)
    for p in target.trainable_parameters():  # EMA copies of trainable weights stay fp32 (as the student's)
        p.data = p.data.float()
    target.unet.load_state_dict(student.unet.state_dict())
    target.unet.requires_grad_(False).eval()
    return target


def trainable_state(unet: nn.Module) -> dict[str, torch.Tensor]:
    """{name: tensor} of the trainable parameters (LoRA A/B, or every UNet weight)."""
    return {n: p.detach() for n, p in unet.named_parameters() if p.requires_grad}


def named_like(module: nn.Module, names) -> dict[str, torch.Tensor]:
    """Parameters of `module` under the given names (for the EMA target, whose params are frozen)."""
    params = dict(module.named_parameters())
    return {n: params[n].detach() for n in names}


@torch.no_grad()
def load_into(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Copy `state` into the same-named parameters of `module` (all names must exist, shapes match)."""
    params = dict(module.named_parameters())
    missing = [n for n in state if n not in params]
    if missing:
        raise CheckpointError(f"checkpoint {what} does not fit this model: unknown tensors {missing[:5]}")
    for n, t in state.items():
        if params[n].shape != t.shape:
            raise CheckpointError(
                f"checkpoint {what}: {n} has shape {tuple(t.shape)}, the model {tuple(params[n].shape)}"
            )
        params[n].copy_(t.to(params[n].dtype))


def make_optimizer(cfg, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    o = cfg.optim
    kw = {"lr": o.lr, "betas": tuple(o.betas), "weight_decay": o.weight_decay, "eps": o.eps}
    if o.name == "adamw8bit":
        try:
            import bitsandbytes as bnb
        except ModuleNotFoundError:
            raise ConfigError(
                "optim.name=adamw8bit needs bitsandbytes: pip install 't2v-turbo[bnb]' (or optim.name=adamw)"
            ) from None
        return bnb.optim.AdamW8bit(params, **kw)
    return torch.optim.AdamW(params, **kw)


def make_scheduler(cfg, optimizer: torch.optim.Optimizer):
    from diffusers.optimization import get_scheduler

    return get_scheduler(
        cfg.optim.scheduler,
        optimizer,
        num_warmup_steps=cfg.optim.warmup_steps,
        num_training_steps=cfg.train.max_steps,
    )


def reward_specs(cfg) -> list[dict]:
    """`cfg.rewards` as `rewards.build_rewards` specs."""
    specs = []
    for r in cfg.rewards:
        spec = {"name": r.name, "weight": r.weight, **r.options}
        if r.frames is not None:
            spec["frames"] = r.frames
        if r.path is not None:
            spec["path"] = r.path
        specs.append(spec)
    return specs


def check_reward_names(cfg) -> None:
    """Fail early (ConfigError) on reward names the registry does not know."""
    from ..rewards.base import REWARDS

    unknown = [r.name for r in cfg.rewards if r.name not in REWARDS]
    if unknown:
        raise ConfigError(f"unknown reward(s) {unknown}; valid: {REWARDS.names()}")


def build_reward_terms(cfg):
    """The reward mixture (frozen reward models); bad names or options are ConfigErrors, missing or
    broken checkpoints CheckpointErrors (one line each)."""
    from ..errors import T2VTurboError
    from ..rewards.base import build_rewards

    check_reward_names(cfg)
    try:
        return build_rewards(reward_specs(cfg))
    except T2VTurboError:
        raise
    except FileNotFoundError as e:
        raise CheckpointError(f"rewards: {e}") from None
    except ValueError as e:
        raise ConfigError(f"rewards: {e}") from None


def weights_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """A digest of named tensors (to check that DDP ranks hold identical weights)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


@contextlib.contextmanager
def swap_unet(backbone: Backbone, unet: nn.Module):
    """Temporarily give `backbone` another UNet (the unwrapped one: sampling and export bypass DDP)."""
    wrapped = backbone.unet
    backbone.unet = unet
    try:
        yield backbone
    finally:
        backbone.unet = wrapped


def export(student: Backbone, raw_unet: nn.Module, cfg, run: Path) -> tuple[Path | None, Path]:
    """Write `lora.safetensors` (peft keys; LoRA runs only) and the merged student in its native format."""
    from safetensors.torch import save_file

    from ..models.lora import has_lora, lora_state_dict

    lora_path = None
    with swap_unet(student, raw_unet):
        if has_lora(raw_unet):
            lora_path = run / "lora.safetensors"
            meta = {
                "format": "peft",
                "rank": str(cfg.lora.rank),
                "alpha": str(cfg.lora.alpha or cfg.lora.rank),
                "teacher": cfg.model.teacher,
                "w_embedding_dim": str(cfg.model.w_embedding_dim),
                "guidance_convention": student.guidance_convention,
            }
            tensors = {k: v.contiguous().cpu() for k, v in lora_state_dict(raw_unet).items()}
            save_file(tensors, str(lora_path), meta)
        student.unet.eval()
        student.save_pretrained(run / "student")  # merges a LoRA into a copy of the weights
        if has_lora(raw_unet) and hasattr(student, "export_lora_diffusers"):  # Wan: diffusers' LoRA format
            student.export_lora_diffusers(run / "lora_diffusers")
    return lora_path, run / "student"
