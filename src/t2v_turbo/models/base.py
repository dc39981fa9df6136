"""The backbone contract: a narrow denoiser protocol, a training mixin, and `Backbone`, both together.

Conventions (stated once, used everywhere):
- Video tensors are (B, C, T, H, W); pixels are in [-1, 1] (black = -1).
- Latents are (B, c, T, h, w), already multiplied by the VAE's scaling factor
  (`encode_video` multiplies, `decode_latents` divides).
- Timesteps are (B,) tensors in the schedule's units (integers in [0, num_train_timesteps) for a
  discrete DDPM schedule).
- Guidance convention "t2v-turbo": the student embeds w itself, where the teacher's CFG is
  eps_c + w (eps_c - eps_u) (Imagen scale 1 + w). diffusers' LCM pipelines embed w - 1 instead
  (convention "diffusers-lcm"); `guidance_to_w` converts on load.

Two layers:
- `Denoiser` (a typing Protocol): all that samplers, `distill_step`, the chain baseline and generation
  call. Anything with these members works there, subclass or not.
- `TrainableMixin`: what training and export need on top (a student with a w embedding, LoRA,
  gradient checkpointing, trainable parameters, persistence). It works on one network, `self.unet`
  (whatever its architecture: a UNet, or a video transformer for Wan).
An adapter subclasses `Backbone` (nn.Module + both) and implements the abstract methods.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
import torch.utils.checkpoint
from torch import Tensor, nn

from ..schedule import NoiseSchedule, guidance_embedding

GUIDANCE_CONVENTIONS = ("t2v-turbo", "diffusers-lcm")


def guidance_to_w(guidance: float, convention: str) -> float:
    """Map a user-facing w (T2V-Turbo convention) to the value the student embeds for `convention`."""
    if convention == "t2v-turbo":
        return float(guidance)
    if convention == "diffusers-lcm":
        # diffusers' LCM pipelines embed (guidance_scale - 1)
        return float(guidance) - 1.0
    raise ValueError(f"unknown guidance convention {convention!r}; valid: {list(GUIDANCE_CONVENTIONS)}")


@runtime_checkable
class Denoiser(Protocol):
    """The narrow model contract the sampling and distillation math uses.

    Attributes:
        schedule: the training noise schedule (`to_x0_eps`, `add_noise`, `consistency_scalings`).
        w_embedding_dim: size of the guidance embedding the network takes, or None for a teacher.
        guidance_convention: how the student embeds w ("t2v-turbo" or "diffusers-lcm", `guidance_to_w`).
    """

    schedule: NoiseSchedule
    w_embedding_dim: int | None
    guidance_convention: str

    def encode_prompt(self, prompts: Sequence[str]) -> Tensor:
        """prompts -> text conditioning (B, L, D) (no grad; text towers stay frozen)."""
        ...

    def model_output(self, z_t: Tensor, t: Tensor, cond: Tensor, w_emb: Tensor | None = None) -> Tensor:
        """The network's raw output in `schedule`'s parameterisation for latents z_t (B, c, T, h, w)."""
        ...

    def encode_video(self, video: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """video (B, 3, T, H, W) in [-1, 1] -> scaled latents (posterior sample x scaling factor)."""
        ...

    def decode_latents(
        self, z: Tensor, frames: Sequence[int] | Tensor | None = None, checkpoint: bool = False
    ) -> Tensor:
        """Scaled latents (B, c, T, h, w) -> video (B, 3, T', H, W) in [-1, 1], differentiable.

        Args:
            frames: decode only these frame indices (T' = len(frames)); None decodes all.
            checkpoint: recompute decoder activations in backward to save memory.
        """
        ...

    def latent_shape(self, batch: int, num_frames: int | None = None) -> tuple[int, ...]:
        """Latent shape (B, c, T, h, w) for a batch of videos at the model's resolution."""
        ...

    def w_embedding(self, w: Tensor | float, batch: int | None = None) -> Tensor | None:
        """The guidance embedding of w (None for a model without one)."""
        ...

    @property
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype: ...


class TrainableMixin(abc.ABC):
    """Training and export affordances of an nn.Module backbone.

    Needs: `self.unet`, the nn.Module that trains (the trainer wraps it for DDP and swaps it back);
    the host class is an nn.Module (for `requires_grad_`) that also carries `schedule`,
    `w_embedding_dim`, `guidance_convention`, `family`, `native_fps` and `resolution` (the metadata
    every checkpoint records).
    """

    unet: nn.Module

    @abc.abstractmethod
    def make_student(self, w_embedding_dim: int = 256, init: str = "normal", seed: int = 0) -> Backbone:
        """A copy of this (teacher) backbone whose network takes a w embedding (`time_cond_proj`).

        init: "normal" (a seeded default PyTorch Linear init, as the released code) or "zero"
        (the student then starts exactly equal to the teacher).
        """

    @abc.abstractmethod
    def enable_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute the network's block activations in backward."""

    def add_lora(self, rank: int = 64, alpha: float | None = None, dropout: float = 0.0, **kw) -> None:
        """Inject peft LoRA into every Linear/Conv of the network (see models/lora.py)."""
        from .lora import add_lora

        self.unet = add_lora(self.unet, rank=rank, alpha=alpha, dropout=dropout, **kw)

    def merge_lora(self) -> None:
        """Fold LoRA weights into the base weights (for inference and native export)."""
        from .lora import merge_lora

        self.unet = merge_lora(self.unet)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.unet.parameters() if p.requires_grad]

    def freeze(self) -> Backbone:
        """Freeze every parameter (teacher / target use); returns self."""
        self.requires_grad_(False)
        return self

    # ------------------------------------------------------------------ persistence
    @abc.abstractmethod
    def save_pretrained(self, path: str | Path) -> None:
        """Save in the backbone's native format (a diffusers-style folder where that applies)."""

    @classmethod
    @abc.abstractmethod
    def from_pretrained(cls, path: str | Path, **kw) -> Backbone:
        """Load from a local folder or file in the native format."""

    def t2v_turbo_metadata(self) -> dict:
        """What every saved checkpoint records: guidance convention, schedule, embedding size."""
        return {
            "family": self.family,
            "guidance_convention": self.guidance_convention,
            "w_embedding_dim": self.w_embedding_dim,
            "schedule": self.schedule.to_config(),
            "native_fps": self.native_fps,
            "resolution": list(self.resolution),
        }

    def write_metadata(self, path: str | Path, extra: dict | None = None) -> None:
        meta = self.t2v_turbo_metadata() | (extra or {})
        Path(path, "t2v_turbo.json").write_text(json.dumps(meta, indent=2))


class Backbone(TrainableMixin, nn.Module):
    """A text-to-video latent diffusion model: the `Denoiser` protocol (abstract here) plus training.

    Attributes:
        schedule: the model's training noise schedule (and prediction type).
        w_embedding_dim: size of the guidance embedding the network takes, or None for a teacher.
        guidance_convention: how w was embedded when this student was trained.
        native_fps: frame rate of the model's training videos (metadata; VC2 also conditions on it).
        resolution: (T, H, W) of the model's videos in pixels.
    """

    schedule: NoiseSchedule
    w_embedding_dim: int | None = None
    guidance_convention: str = "t2v-turbo"
    native_fps: int = 8
    resolution: tuple[int, int, int] = (16, 256, 256)
    family: str = "base"

    # ------------------------------------------------------------------ the Denoiser protocol
    @abc.abstractmethod
    def encode_prompt(self, prompts: Sequence[str]) -> Tensor:
        """prompts -> text conditioning (B, L, D) (no grad; text towers stay frozen)."""

    @abc.abstractmethod
    def model_output(self, z_t: Tensor, t: Tensor, cond: Tensor, w_emb: Tensor | None = None) -> Tensor:
        """The network's raw output in `schedule.prediction_type` for latents z_t (B, c, T, h, w)."""

    @abc.abstractmethod
    def encode_video(self, video: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """video (B, 3, T, H, W) in [-1, 1] -> scaled latents (posterior sample x scaling factor)."""

    @abc.abstractmethod
    def decode_latents(
        self, z: Tensor, frames: Sequence[int] | Tensor | None = None, checkpoint: bool = False
    ) -> Tensor:
        """Scaled latents (B, c, T, h, w) -> video (B, 3, T', H, W) in [-1, 1], differentiable."""

    @abc.abstractmethod
    def latent_shape(self, batch: int, num_frames: int | None = None) -> tuple[int, ...]:
        """Latent shape (B, c, T, h, w) for a batch of videos at the model's resolution."""

    def w_embedding(self, w: Tensor | float, batch: int | None = None) -> Tensor | None:
        """Guidance embedding for the student (None for a teacher without time_cond_proj)."""
        if self.w_embedding_dim is None:
            return None
        w = torch.as_tensor(w, dtype=torch.float32)
        if w.dim() == 0:
            w = w.expand(batch or 1)
        return guidance_embedding(w, self.w_embedding_dim).to(self.device, self.dtype)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def latent_channels(self) -> int:
        return int(self.unet.config.in_channels) if hasattr(self.unet, "config") else 4


def read_metadata(path: str | Path) -> dict:
    f = Path(path, "t2v_turbo.json")
    return json.loads(f.read_text()) if f.exists() else {}


class FrameVAEMixin:
    """`encode_video` / `decode_latents` for adapters with a 2D image VAE (diffusers `AutoencoderKL`)
    applied frame by frame. Needs `self.vae`, `self.scaling_factor` and `self.vae_chunk` (frames per call)."""

    @staticmethod
    def _frames_2d(x: Tensor) -> Tensor:
        # (B, C, T, H, W) -> (B * T, C, H, W), frame-major within each video
        b, c, t, h, w = x.shape
        return x.transpose(1, 2).reshape(b * t, c, h, w)

    @staticmethod
    def _frames_5d(x: Tensor, b: int) -> Tensor:
        # (B * T, C, H, W) -> (B, C, T, H, W)
        n, c, h, w = x.shape
        return x.view(b, n // b, c, h, w).transpose(1, 2)

    @torch.no_grad()
    def encode_video(self, video: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """(B, 3, T, H, W) in [-1, 1] -> posterior sample x scaling factor (LDM convention), per frame."""
        frames = self._frames_2d(video.to(self.vae.dtype))
        parts = [
            self.vae.encode(chunk).latent_dist.sample(generator=generator) * self.scaling_factor
            for chunk in frames.split(self.vae_chunk)
        ]
        return self._frames_5d(torch.cat(parts), video.shape[0])

    def decode_latents(
        self, z: Tensor, frames: Sequence[int] | Tensor | None = None, checkpoint: bool = False
    ) -> Tensor:
        """Scaled latents (B, c, T, h, w) -> video (B, 3, T', H, W) in [-1, 1], differentiable, per frame."""
        if frames is not None:
            z = z[:, :, torch.as_tensor(frames, dtype=torch.long, device=z.device)]
        flat = self._frames_2d(z / self.scaling_factor).to(self.vae.dtype)

        def _decode(x: Tensor) -> Tensor:
            return self.vae.decode(x).sample

        parts = []
        for chunk in flat.split(self.vae_chunk):
            if checkpoint and torch.is_grad_enabled():
                parts.append(torch.utils.checkpoint.checkpoint(_decode, chunk, use_reentrant=False))
            else:
                parts.append(_decode(chunk))
        return self._frames_5d(torch.cat(parts), z.shape[0])
