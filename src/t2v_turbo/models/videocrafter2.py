"""VideoCrafter2 (LVDM) behind the backbone contract.

Parts: our `VC2UNet` (official parameter names, see vc2_unet.py), diffusers' `AutoencoderKL` applied
per frame (strict LDM key converter in vc2_vae.py) and transformers' `CLIPTextModelWithProjection` as
the OpenCLIP ViT-H-14 text tower (converter in open_clip_convert.py), conditioning on the penultimate
block followed by `ln_final` (77 tokens, zero padding).

Files (the official `model.ckpt`, the native folder, T2V-Turbo's UNet and LoRA releases) are read
and written by vc2_checkpoint.py; `from_pretrained` / `save_pretrained` here call it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..schedule import NoiseSchedule, guidance_embedding
from ..weights import mismatch_error
from . import vc2_checkpoint
from .base import Backbone, FrameVAEMixin
from .vc2_unet import VC2UNet, VC2UNetConfig
from .vc2_vae import build_vae, vae_config

# T2V-Turbo-v2 students (`unet_mg.pt`, with motion_cond_proj): the authors' sampling settings (their
# Replicate predictor, the one entry point that samples v2 with motion conditioning on: 16 steps,
# w 7.5, fps 8, motion_gs 0.05, percentage 0.5, lcm_origin_steps 200; their gradio app uses the same
# origin grid and motion_gs, percentage 0.3 and 8 steps). `pipeline.generate` reads origin_steps,
# motion_guidance and motion_percentage as its defaults; all are written to t2v_turbo.json on save.
V2_SAMPLING_DEFAULTS = {
    "origin_steps": 200, "motion_guidance": 0.05, "motion_percentage": 0.5, "num_steps": 16, "w": 7.5, "fps": 8
}


# ----------------------------------------------------------------------------- config
@dataclass
class VC2Config:
    """Everything needed to build a VideoCrafter2 backbone (defaults: the official model).

    Attributes:
        unet: UNet hyper-parameters (students set `time_cond_proj_dim` / `motion_cond_proj_dim`).
        vae: `AutoencoderKL` config (see `vae_config`).
        text: overrides for `open_clip_text_config("ViT-H-14", ...)`.
        tokenizer: "clip" (the real CLIP BPE, 49408 ids) or "char" (the tiny test tokenizer).
        fps: the frame rate the UNet is conditioned on (16 when distilling VC2).
        resolution: (T, H, W) in pixels.
    """

    unet: VC2UNetConfig = field(default_factory=VC2UNetConfig)
    vae: dict = field(default_factory=vae_config)
    text: dict = field(default_factory=dict)
    tokenizer: str = "clip"
    text_layer: str = "penultimate"
    context_length: int = 77
    scale_factor: float = 0.18215
    linear_start: float = 0.00085
    linear_end: float = 0.012
    fps: int = 16
    resolution: tuple[int, int, int] = (16, 320, 512)

    @classmethod
    def official(cls) -> VC2Config:
        """VideoCrafter2 at full size (`inference_t2v_512_v2.0.yaml`)."""
        return cls()

    @classmethod
    def tiny(cls) -> VC2Config:
        """The same module structure at toy sizes (tests): ~1M parameters, 4 frames of 16x16."""
        return cls(
            unet=VC2UNetConfig(
                model_channels=16,
                channel_mult=(1, 2, 2),
                num_res_blocks=1,
                attention_resolutions=(1, 2),
                num_head_channels=8,
                context_dim=32,
                init_attn_heads=2,
                num_groups=4,
            ),
            vae=vae_config(ch=8, ch_mult=(1, 2), num_res_blocks=1, norm_num_groups=4, sample_size=16),
            text=dict(
                vocab_size=514,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                projection_dim=32,
                bos_token_id=512,
                eos_token_id=513,
            ),
            tokenizer="char",
            resolution=(4, 16, 16),
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["unet"] = self.unet.to_dict()
        d["resolution"] = list(self.resolution)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> VC2Config:
        d = dict(d)
        d["unet"] = VC2UNetConfig.from_dict(d.get("unet", {}))
        d["resolution"] = tuple(d.get("resolution", (16, 320, 512)))
        return cls(**d)


# ----------------------------------------------------------------------------- tokenizers
def _make_tokenizer(kind: str, context_length: int):
    from ..tokenizers import char_clip_tokenizer, clip_tokenizer

    if kind == "char":
        return char_clip_tokenizer(context_length)
    if kind == "clip":
        return clip_tokenizer("open_clip")  # FrozenOpenCLIPEmbedder tokenizes with open_clip's cleaning
    raise ConfigError(f"unknown tokenizer {kind!r}; valid: ['clip', 'char'] (or pass tokenizer=)")


# ----------------------------------------------------------------------------- the backbone
class VideoCrafter2(FrameVAEMixin, Backbone):
    """VideoCrafter2 text-to-video LDM (or a T2V-Turbo student of it) behind the backbone contract.

    Args:
        config: `VC2Config` (use `VC2Config.tiny()` for tests, `VC2Config.official()` for the real model).
        unet, vae, text_encoder: prebuilt parts (default: built from `config`, randomly initialised).
        tokenizer: a transformers-style tokenizer; default from `config.tokenizer` (built lazily).
        device: build on this device ("meta" gives a weightless model for layout checks).
        vae_chunk: frames per VAE call.
    """

    family = "videocrafter2"
    config_class = VC2Config

    def __init__(
        self,
        config: VC2Config | None = None,
        unet: nn.Module | None = None,
        vae: nn.Module | None = None,
        text_encoder: nn.Module | None = None,
        tokenizer=None,
        device: str | torch.device | None = None,
        vae_chunk: int = 16,
    ):
        super().__init__()
        from transformers import CLIPTextModelWithProjection

        from ..open_clip_convert import open_clip_text_config

        self.config = cfg = config or VC2Config()
        with torch.device(device or "cpu"):
            self.unet = unet if unet is not None else VC2UNet(cfg.unet)
            self.vae = vae if vae is not None else build_vae(cfg.vae)
            if text_encoder is None:
                text_encoder = CLIPTextModelWithProjection(open_clip_text_config("ViT-H-14", **cfg.text))
            self.text_encoder = text_encoder.eval()
            # open_clip's CLIP logit scale: stored in model.ckpt, unused for conditioning
            self.register_buffer("text_logit_scale", torch.tensor(math.log(1 / 0.07)))
        self._tokenizer = tokenizer
        # DDPM buffers read from an official checkpoint (kept so that a round trip is byte-exact)
        self._schedule_buffers: dict[str, Tensor] | None = None
        self.schedule = NoiseSchedule.make("scaled_linear", cfg.linear_start, cfg.linear_end)
        self.native_fps = cfg.fps
        self.fps = cfg.fps
        self.resolution = tuple(cfg.resolution)
        self.vae_chunk = vae_chunk
        self.w_embedding_dim = cfg.unet.time_cond_proj_dim
        self.motion_embedding_dim = cfg.unet.motion_cond_proj_dim
        self.vae.requires_grad_(False)
        self.text_encoder.requires_grad_(False)

    # ------------------------------------------------------------------ text
    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = _make_tokenizer(self.config.tokenizer, self.config.context_length)
        return self._tokenizer

    def tokenize(self, prompts: Sequence[str]) -> Tensor:
        """open_clip-style ids (B, 77): SOT, tokens, EOT (kept last on truncation), zero padding."""
        n = self.config.context_length
        enc = self.tokenizer(list(prompts), truncation=True, max_length=n)["input_ids"]
        ids = torch.zeros(len(enc), n, dtype=torch.long)
        for i, row in enumerate(enc):
            ids[i, : len(row)] = torch.as_tensor(row[:n])
        return ids

    @torch.no_grad()
    def encode_prompt(self, prompts: Sequence[str]) -> Tensor:
        """prompts -> (B, 77, 1024): penultimate OpenCLIP block, then ln_final (FrozenOpenCLIPEmbedder)."""
        from ..open_clip_convert import open_clip_text_hidden

        ids = self.tokenize(prompts).to(self.text_encoder.device)
        return open_clip_text_hidden(self.text_encoder, ids, self.config.text_layer).to(self.dtype)

    # ------------------------------------------------------------------ denoiser
    def model_output(
        self,
        z_t: Tensor,
        t: Tensor,
        cond: Tensor,
        w_emb: Tensor | None = None,
        motion_emb: Tensor | None = None,
    ) -> Tensor:
        """eps prediction (B, 4, T, h, w) at fps `self.fps`; `motion_emb` only for v2 students.

        Every call uses `self.fps`, so distillation runs the teacher's conditional and unconditional
        CFG branches (one batched call) at the model's fps. The authors' v1 training calls the
        unconditional teacher without fps, i.e. at the UNet's default 16: identical for the VC2 recipe
        (fps 16); with another fps (e.g. 8) their unconditional branch sees 16 and this one does not.
        """
        t = torch.as_tensor(t, device=z_t.device)
        if t.dim() == 0:
            t = t.expand(z_t.shape[0])
        return self.unet(z_t, t, cond, fps=self.fps, timestep_cond=w_emb, motion_cond=motion_emb)

    def motion_embedding(self, m: Tensor | float, batch: int | None = None) -> Tensor | None:
        """T2V-Turbo-v2 motion-strength embedding (the same sinusoid as w), or None without motion_cond_proj."""
        if self.motion_embedding_dim is None:
            return None
        m = torch.as_tensor(m, dtype=torch.float32)
        if m.dim() == 0:
            m = m.expand(batch or 1)
        return guidance_embedding(m, self.motion_embedding_dim).to(self.device, self.dtype)

    @property
    def sampling_defaults(self) -> dict:
        """Sampling settings recorded with the weights (t2v_turbo.json "sampling_defaults"); a
        T2V-Turbo-v2 student without a record gets the authors' `V2_SAMPLING_DEFAULTS`."""
        saved = self.__dict__.get("_sampling_defaults")
        if saved is not None:
            return dict(saved)
        return dict(V2_SAMPLING_DEFAULTS) if self.motion_embedding_dim is not None else {}

    @sampling_defaults.setter
    def sampling_defaults(self, value: dict | None) -> None:
        self.__dict__["_sampling_defaults"] = None if value is None else dict(value)

    def t2v_turbo_metadata(self) -> dict:
        meta = super().t2v_turbo_metadata()
        if self.sampling_defaults:
            meta["sampling_defaults"] = self.sampling_defaults
        return meta

    # ------------------------------------------------------------------ VAE (per frame)
    @property
    def scaling_factor(self) -> float:
        return float(self.config.scale_factor)

    def latent_shape(self, batch: int, num_frames: int | None = None) -> tuple[int, ...]:
        t, h, w = self.resolution
        down = 2 ** (len(self.vae.config.block_out_channels) - 1)
        return (batch, self.config.unet.in_channels, num_frames or t, h // down, w // down)

    # ------------------------------------------------------------------ training affordances
    def _with_unet(self, unet: VC2UNet) -> VideoCrafter2:
        """A backbone sharing this one's VAE, text encoder and tokenizer around another UNet."""
        cfg = replace(self.config, unet=unet.config)
        other = VideoCrafter2(
            cfg, unet, self.vae, self.text_encoder, self._tokenizer, vae_chunk=self.vae_chunk
        )
        other.text_logit_scale = self.text_logit_scale
        other._schedule_buffers = self._schedule_buffers
        other.fps = self.fps
        other.guidance_convention = self.guidance_convention
        return other

    def make_student(
        self,
        w_embedding_dim: int = 256,
        init: str = "normal",
        seed: int = 0,
        motion_cond_dim: int | None = None,
    ) -> VideoCrafter2:
        """A copy of this UNet with `time_cond_proj` (and, for v2, `motion_cond_proj` + `combine_proj`).

        init: "normal" gives the new layers PyTorch's default Linear init from `seed` (the released code
        leaves them random); "zero" makes the student start exactly equal to the teacher.
        """
        if init not in ("normal", "zero"):
            raise ValueError(f"unknown init {init!r}; valid: ['normal', 'zero']")
        cfg = replace(
            self.config.unet, time_cond_proj_dim=w_embedding_dim, motion_cond_proj_dim=motion_cond_dim
        )
        teacher = self.unet.state_dict()
        with torch.device("meta"):
            unet = VC2UNet(cfg)
        unet = unet.to_empty(device=self.device).to(self.dtype)
        missing, unexpected = unet.load_state_dict(teacher, strict=False)
        new = [k for k in unet.state_dict() if k not in teacher]
        if unexpected or sorted(missing) != sorted(new):  # the teacher's UNet does not rebuild from its config
            raise mismatch_error(
                "the teacher UNet (rebuilt as a student from its config)", sorted(set(missing) - set(new)), unexpected
            )
        g = torch.Generator(device="cpu").manual_seed(seed)
        with torch.no_grad():
            for k in new:  # registration order: time_cond_proj, motion_cond_proj, combine_proj
                p = unet.get_parameter(k)
                w = torch.zeros(p.shape)
                if init == "normal":
                    nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=g)  # nn.Linear's default init
                p.copy_(w.to(p.dtype))
        unet.gradient_checkpointing = self.unet.gradient_checkpointing
        unet.train(self.unet.training)  # the teacher's mode (train mode enables temporal-conv dropout)
        student = self._with_unet(unet)
        unet.requires_grad_(True)
        return student

    def enable_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each UNet block (input/init_attn/middle/output) in backward."""
        self.unet.gradient_checkpointing = enabled

    # ------------------------------------------------------------------ files (vc2_checkpoint.py)
    def official_state_dict(self) -> dict[str, Tensor]:
        """The official LatentDiffusion state dict (2039 keys for the teacher; LoRA merged in a copy)."""
        return vc2_checkpoint.official_state_dict(self)

    def load_official_state_dict(self, sd: dict[str, Tensor], assign: bool = False) -> None:
        """Load the official layout strictly; one `CheckpointError` names the missing and unexpected keys."""
        vc2_checkpoint.load_official_state_dict(self, sd, assign)

    def save_pretrained(self, path: str | Path) -> None:
        """Folder: `model.safetensors` (official LVDM key layout), `config.json`, `t2v_turbo.json`."""
        vc2_checkpoint.save_folder(self, path)

    @classmethod
    def from_config(cls, config: VC2Config, device: str | torch.device | None = None, **kw) -> VideoCrafter2:
        return cls(config, device=device, **kw)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        base: str | Path | VideoCrafter2 | None = None,
        config: VC2Config | None = None,
        tokenizer=None,
        torch_dtype: torch.dtype = torch.float32,
        seed: int = 0,
        fps: int | None = None,
    ) -> VideoCrafter2:
        """Load a native folder, the official `model.ckpt`, a bare/merged UNet file or a LoRA list.

        Args:
            path: folder, `model.ckpt`, UNet `.pt`/`.safetensors` (merged VC2 student, v2 `unet_mg.pt`),
                or `unet_lora.pt`.
            base: for UNet files and LoRA lists: the teacher (path or a loaded `VideoCrafter2`).
            config: architecture for `model.ckpt` files (default: a `config.json` beside the file,
                else `VC2Config.official()`).
            seed: seed of the guidance projection's base weight when loading a LoRA list.
            fps: override the fps conditioning (default: the saved value, else 16).
        Raises:
            CheckpointError: a missing, unreadable or mismatching file, or a UNet / LoRA file without base=.
        """
        return vc2_checkpoint.load_pretrained(cls, path, base, config, tokenizer, torch_dtype, seed, fps)
