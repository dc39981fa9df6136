"""VideoCrafter2 (LVDM) behind the backbone contract, and every released T2V-Turbo VC2 checkpoint.

Parts: our `VC2UNet` (official parameter names, see vc2_unet.py), diffusers' `AutoencoderKL` applied
per frame (strict LDM key converter in vc2_vae.py) and transformers' `CLIPTextModelWithProjection` as
the OpenCLIP ViT-H-14 text tower (converter in open_clip.py), conditioning on the penultimate block
followed by `ln_final` (77 tokens, zero padding).

The native format *is* the official one: `official_state_dict()` returns the 2039 keys of
VideoCrafter2's Lightning `model.ckpt` (13 DDPM schedule buffers, `model.diffusion_model.*`,
`first_stage_model.*`, `cond_stage_model.model.*`), and `save_pretrained` writes exactly that as
`model.safetensors`, next to `config.json` and `t2v_turbo.json`.

`VideoCrafter2.from_pretrained` reads:
- a folder written by `save_pretrained`;
- the official `model.ckpt` (strict key check; a mismatch names the missing and unexpected keys);
- a bare UNet file (`.pt`/`.safetensors`): the merged T2V-Turbo VC2 UNet, or v2's `unet_mg.pt` /
  `unet_no_mg.pt`, given with `base=` (a model.ckpt or folder supplying the VAE and text encoder);
- a LoRA list (`unet_lora.pt`, with `base=`): the student is built, its guidance projection seeded
  (LoRA-only releases lack that base weight; a warning says so) and the LoRA merged.
"""

from __future__ import annotations

import copy
import json
import math
import pickle
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import Tensor, nn

from ..schedule import NoiseSchedule, guidance_embedding
from .base import Backbone, FrameVAEMixin, read_metadata
from .vc2_unet import VC2UNet, VC2UNetConfig
from .vc2_vae import build_vae, load_ldm_vae, vae_config, vae_state_dict_to_ldm

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.model."
# LatentDiffusion's persistent DDPM buffers (register_schedule), in state_dict order
SCHEDULE_BUFFERS = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "scale_arr",
)
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


# ----------------------------------------------------------------------------- config and recipe
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


@dataclass(frozen=True)
class VC2Recipe:
    """The paper's T2V-Turbo (VC2) recipe: what a `vc2-lora` preset holds."""

    height: int = 320
    width: int = 512
    num_frames: int = 16
    fps: int = 16
    lora_rank: int = 64
    lora_alpha: float = 64.0  # scale 1 (no alpha / r)
    lora_dropout: float = 0.1
    num_inference_steps: int = 4
    guidance_scale: float = 7.5  # T2V-Turbo convention: the student embeds w itself
    guidance_convention: str = "t2v-turbo"


VC2_RECIPE = VC2Recipe()


def paper_recipe() -> VC2Recipe:
    """The paper's VC2 recipe: 320x512, 16 frames at fps 16, LoRA rank 64, 4 steps at guidance 7.5."""
    return VC2_RECIPE


# ----------------------------------------------------------------------------- helpers
def ldm_schedule_buffers(linear_start: float = 0.00085, linear_end: float = 0.012, n: int = 1000) -> dict:
    """LatentDiffusion's DDPM buffers (computed in float64, stored float32) for the official key layout.

    LDM "linear" schedule = betas linspace(sqrt(b0), sqrt(b1), n)^2, i.e. the scaled-linear schedule.
    `scale_arr` is [linspace(1, 0.7, 400), 0.7 x 1000] (1400 entries, as in the official model).
    """
    betas = torch.linspace(linear_start**0.5, linear_end**0.5, n, dtype=torch.float64) ** 2
    alphas = 1.0 - betas
    ac = torch.cumprod(alphas, 0)  # abar_t
    ac_prev = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
    # DDPM posterior q(x_{t-1} | x_t, x0): variance and mean coefficients (Ho et al. 2020, Eq. 7)
    post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
    bufs = {
        "betas": betas,
        "alphas_cumprod": ac,
        "alphas_cumprod_prev": ac_prev,
        "sqrt_alphas_cumprod": ac.sqrt(),
        "sqrt_one_minus_alphas_cumprod": (1.0 - ac).sqrt(),
        "log_one_minus_alphas_cumprod": (1.0 - ac).log(),
        "sqrt_recip_alphas_cumprod": (1.0 / ac).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1.0 / ac - 1).sqrt(),
        "posterior_variance": post_var,
        "posterior_log_variance_clipped": post_var.clamp(min=1e-20).log(),
        "posterior_mean_coef1": betas * ac_prev.sqrt() / (1.0 - ac),
        "posterior_mean_coef2": (1.0 - ac_prev) * alphas.sqrt() / (1.0 - ac),
        "scale_arr": torch.cat([torch.linspace(1.0, 0.7, 400, dtype=torch.float64), torch.full((n,), 0.7)]),
    }
    return {k: v.to(torch.float32) for k, v in bufs.items()}


def read_weights(path: str | Path):
    """A checkpoint's content: safetensors, or `torch.load(weights_only=True)` (mmap when possible).

    A Lightning checkpoint's `state_dict` (or a DeepSpeed `module`) sub-dict is returned unwrapped.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) serialisation cannot be memory-mapped
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"{path} holds Python objects besides tensors, which are not unpickled here (weights_only=True). "
            "If you trust the file, extract its weights once: torch.save(torch.load(path, weights_only=False)"
            "['state_dict'], 'weights.pt')"
        ) from e
    if isinstance(obj, dict):
        for key in ("state_dict", "module"):
            if isinstance(obj.get(key), dict):
                return obj[key]
    return obj


def _unet_config_for(sd: dict[str, Tensor], base: VC2UNetConfig) -> VC2UNetConfig:
    """`base` with the student projections present in the UNet state dict `sd` (bare keys)."""
    tc, mc = sd.get("time_cond_proj.weight"), sd.get("motion_cond_proj.weight")
    return replace(
        base,
        time_cond_proj_dim=int(tc.shape[1]) if tc is not None else None,
        motion_cond_proj_dim=int(mc.shape[1]) if mc is not None else None,
    )


def _strip_unet_prefix(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    if any(k.startswith(UNET_PREFIX) for k in sd):
        other = [k for k in sd if not k.startswith(UNET_PREFIX)]
        if other:
            raise KeyError(f"a UNet file with keys outside {UNET_PREFIX!r}: {other[:10]}")
        return {k[len(UNET_PREFIX) :]: v for k, v in sd.items()}
    return dict(sd)


def _load_strict(
    module: nn.Module, sd: dict[str, Tensor], prefix: str, what: str, assign: bool = False
) -> None:
    """load_state_dict(strict) with an error that names missing/unexpected keys in the file's own layout."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    wrong = [
        f"{prefix}{k}: file {list(sd[k].shape)} vs model {list(v.shape)}"
        for k, v in expected.items()
        if k in sd and sd[k].shape != v.shape
    ]
    if missing or unexpected or wrong:
        raise KeyError(
            f"{what} does not match: missing {[prefix + k for k in missing][:20]} ({len(missing)}), "
            f"unexpected {[prefix + k for k in unexpected][:20]} ({len(unexpected)}), shape mismatches {wrong[:10]}"
        )
    module.load_state_dict(sd, strict=True, assign=assign)


def _char_tokenizer(max_length: int):
    from .tiny import char_clip_tokenizer

    return char_clip_tokenizer(max_length)


def _clip_tokenizer():
    from ..rewards.tokenizers import clip_tokenizer

    return clip_tokenizer()


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

        from .open_clip import open_clip_text_config

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
            kind = self.config.tokenizer
            if kind == "char":
                self._tokenizer = _char_tokenizer(self.config.context_length)
            elif kind == "clip":
                self._tokenizer = _clip_tokenizer()
            else:
                raise ValueError(f"unknown tokenizer {kind!r}; valid: ['clip', 'char'] (or pass tokenizer=)")
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
        from .open_clip import open_clip_text_hidden

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
        """eps prediction (B, 4, T, h, w) at fps `self.fps`; `motion_emb` only for v2 students."""
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
        if unexpected or sorted(missing) != sorted(new):
            raise RuntimeError(f"student/teacher mismatch: missing={missing}, unexpected={unexpected}")
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

    # ------------------------------------------------------------------ official layout
    def _plain_unet(self) -> nn.Module:
        from .lora import has_lora, merge_lora

        return merge_lora(copy.deepcopy(self.unet)) if has_lora(self.unet) else self.unet

    def official_state_dict(self) -> dict[str, Tensor]:
        """The official LatentDiffusion state dict (2039 keys for the teacher; LoRA merged in a copy)."""
        from .open_clip import text_state_dict_to_open_clip

        bufs = self._schedule_buffers or ldm_schedule_buffers(
            self.config.linear_start, self.config.linear_end
        )
        sd: dict[str, Tensor] = dict(bufs)
        sd.update({UNET_PREFIX + k: v for k, v in self._plain_unet().state_dict().items()})
        levels = len(self.vae.config.block_out_channels)
        sd.update(vae_state_dict_to_ldm(self.vae.state_dict(), levels, VAE_PREFIX))
        text = text_state_dict_to_open_clip(self.text_encoder.state_dict())
        text["logit_scale"] = self.text_logit_scale
        sd.update({TEXT_PREFIX + k: v for k, v in text.items()})
        return sd

    @torch.no_grad()
    def load_official_state_dict(self, sd: dict[str, Tensor], assign: bool = False) -> None:
        """Load the official layout strictly; one error names every missing and unexpected key."""
        from .open_clip import text_state_dict_from_open_clip

        groups = {UNET_PREFIX: {}, VAE_PREFIX: {}, TEXT_PREFIX: {}}
        buffers, unexpected = {}, []
        for k, v in sd.items():
            prefix = next((p for p in groups if k.startswith(p)), None)
            if prefix is not None:
                groups[prefix][k] = v
            elif k in SCHEDULE_BUFFERS:
                buffers[k] = v
            else:
                unexpected.append(k)
        missing = [k for k in SCHEDULE_BUFFERS if k not in buffers]
        if TEXT_PREFIX + "logit_scale" not in groups[TEXT_PREFIX]:
            missing.append(TEXT_PREFIX + "logit_scale")
        if missing or unexpected:
            raise KeyError(
                f"not a VideoCrafter2 checkpoint layout: missing {missing}, unexpected {unexpected[:20]}"
            )
        if "alphas_cumprod" in buffers:
            diff = (buffers["alphas_cumprod"].float() - self.schedule.alphas_cumprod).abs().max().item()
            if diff > 1e-5:
                warnings.warn(
                    f"checkpoint alphas_cumprod differs from the configured schedule by {diff:.2e}",
                    stacklevel=2,
                )
        self._schedule_buffers = {k: buffers[k] for k in SCHEDULE_BUFFERS}
        unet_sd = {k[len(UNET_PREFIX) :]: v for k, v in groups[UNET_PREFIX].items()}
        _load_strict(self.unet, unet_sd, UNET_PREFIX, "UNet (model.diffusion_model.*)", assign)
        load_ldm_vae(self.vae, groups[VAE_PREFIX], VAE_PREFIX, assign)
        text = {k[len(TEXT_PREFIX) :]: v for k, v in groups[TEXT_PREFIX].items()}
        self.text_logit_scale.copy_(text.pop("logit_scale"))
        bad = [
            k
            for k in text
            if not k.startswith(
                ("transformer.", "token_embedding", "positional_embedding", "ln_final", "text_projection")
            )
        ]
        if bad:
            raise KeyError(f"text encoder: unexpected keys {[TEXT_PREFIX + k for k in bad][:20]}")
        _load_strict(self.text_encoder, text_state_dict_from_open_clip(text), TEXT_PREFIX, "text encoder")

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, path: str | Path) -> None:
        """Folder: `model.safetensors` (official LVDM key layout), `config.json`, `t2v_turbo.json`."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        sd = {k: v.detach().contiguous().cpu() for k, v in self.official_state_dict().items()}
        save_file(sd, str(path / WEIGHTS_NAME), metadata={"format": "pt", "layout": "lvdm"})
        cfg = self.config.to_dict()
        cfg["fps"] = self.fps
        (path / CONFIG_NAME).write_text(json.dumps(cfg, indent=2))
        self.write_metadata(
            path, {"fps": self.fps, "layout": "lvdm", "motion_embedding_dim": self.motion_embedding_dim}
        )

    @classmethod
    def from_config(cls, config: VC2Config, device: str | torch.device | None = None, **kw) -> VideoCrafter2:
        return cls(config, device=device, **kw)

    @classmethod
    def _from_official(
        cls, sd: dict[str, Tensor], config: VC2Config, torch_dtype: torch.dtype, tokenizer
    ) -> VideoCrafter2:
        bare = {k[len(UNET_PREFIX) :]: v for k, v in sd.items() if k.startswith(UNET_PREFIX)}
        config = replace(config, unet=_unet_config_for(bare, config.unet))
        with torch.device("meta"):  # UNet and VAE take the file's tensors directly (no double memory)
            unet, vae = VC2UNet(config.unet), build_vae(config.vae)
        model = cls(config, unet, vae, tokenizer=tokenizer)
        model.load_official_state_dict(sd, assign=True)
        return model.to(torch_dtype)

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
            config: architecture for `model.ckpt` files (default `VC2Config.official()`).
            seed: seed of the guidance projection's base weight when loading a LoRA list.
            fps: override the fps conditioning (default: the saved value, else 16).
        """
        path = Path(path)
        if path.is_dir():
            model = cls._from_folder(path, tokenizer, torch_dtype)
        else:
            obj = read_weights(path)
            if isinstance(obj, (list, tuple)):
                model = cls._from_lora_list(list(obj), cls._base(base, path, tokenizer, torch_dtype), seed)
            elif not isinstance(obj, dict):
                raise TypeError(f"{path}: unsupported checkpoint content {type(obj).__name__}")
            elif any(k.startswith(VAE_PREFIX) for k in obj):
                if config is None and (path.parent / CONFIG_NAME).exists():
                    # an architecture recorded next to the checkpoint (e.g. a resized synthetic model.ckpt)
                    cfg_json = json.loads((path.parent / CONFIG_NAME).read_text())
                    config = VC2Config.from_dict(cfg_json)
                model = cls._from_official(obj, config or VC2Config.official(), torch_dtype, tokenizer)
            else:
                model = cls._from_unet_file(obj, cls._base(base, path, tokenizer, torch_dtype), torch_dtype)
        if fps is not None:
            model.fps = fps
        return model.eval()  # like diffusers / transformers: call .train() to train

    @classmethod
    def _base(cls, base, path: Path, tokenizer, torch_dtype) -> VideoCrafter2:
        if base is None:
            raise ValueError(
                f"{path.name} holds only a UNet (or its LoRA): pass base= (VideoCrafter2's model.ckpt or a "
                "saved folder) for the VAE and text encoder"
            )
        return (
            base
            if isinstance(base, VideoCrafter2)
            else cls.from_pretrained(base, tokenizer=tokenizer, torch_dtype=torch_dtype)
        )

    @classmethod
    def _from_folder(cls, path: Path, tokenizer, torch_dtype) -> VideoCrafter2:
        if not (path / CONFIG_NAME).exists() or not (path / WEIGHTS_NAME).exists():
            raise FileNotFoundError(
                f"{path}: expected {CONFIG_NAME} and {WEIGHTS_NAME} (written by save_pretrained)"
            )
        from safetensors.torch import load_file

        config = VC2Config.from_dict(json.loads((path / CONFIG_NAME).read_text()))
        model = cls._from_official(load_file(str(path / WEIGHTS_NAME)), config, torch_dtype, tokenizer)
        meta = read_metadata(path)
        model.guidance_convention = meta.get("guidance_convention", model.guidance_convention)
        return model

    @classmethod
    def _from_unet_file(cls, sd: dict[str, Tensor], base: VideoCrafter2, torch_dtype) -> VideoCrafter2:
        sd = _strip_unet_prefix(sd)
        cfg = _unet_config_for(sd, base.config.unet)
        with torch.device("meta"):
            unet = VC2UNet(cfg)
        _load_strict(unet, sd, "", "UNet file", assign=True)
        return base._with_unet(unet.to(torch_dtype))

    @classmethod
    def _from_lora_list(cls, tensors: list[Tensor], base: VideoCrafter2, seed: int) -> VideoCrafter2:
        from .release_lora import load_release_lora

        student = base.make_student(256, init="normal", seed=seed)
        load_release_lora(student.unet, tensors, merge=True, seed=seed)
        return student
