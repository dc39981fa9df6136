"""Adapter for diffusers video UNets: ModelScopeT2V (`UNet3DConditionModel`) and AnimateDiff-style
`UNetMotionModel`, with `AutoencoderKL` applied per frame and a CLIP text encoder.

Adds what diffusers lacks for training these models: gradient checkpointing on
UNet3DConditionModel (its blocks are wrapped here, without patching diffusers) and LoRA by module
type (models/lora.py). Saves and loads a diffusers-style folder (unet/, vae/, text_encoder/,
tokenizer/, scheduler/, model_index.json) plus `t2v_turbo.json` metadata.
"""

from __future__ import annotations

import copy
import json
import pickle
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import CheckpointError
from ..schedule import NoiseSchedule
from ..weights import as_checkpoint_error, checkpoint_forward, mismatch_error
from .base import Backbone, FrameVAEMixin, read_metadata

UNET_CLASSES = ("UNet3DConditionModel", "UNetMotionModel")


def _unet_class(name: str):
    import diffusers

    if name not in UNET_CLASSES:
        raise CheckpointError(f"unsupported UNet class {name!r}; supported: {list(UNET_CLASSES)}")
    return getattr(diffusers, name)


def _load_part(what: str, folder: Path, load):
    """`load()` (a diffusers / transformers `from_pretrained`), its failures as one-line CheckpointErrors."""
    from safetensors import SafetensorError

    try:
        return load()
    except CheckpointError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError, EOFError, pickle.UnpicklingError, SafetensorError) as e:
        pickles = sorted(p for p in folder.glob("*") if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
        raise as_checkpoint_error(e, pickles[0] if len(pickles) == 1 else folder, what) from None


def _unet_class_of(unet_dir: Path):
    file = unet_dir / "config.json"
    try:
        name = json.loads(file.read_text())["_class_name"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"not a diffusers UNet config ({type(e).__name__}: {e}): {file}") from None
    return _unet_class(name)


class DiffusersVideoBackbone(FrameVAEMixin, Backbone):
    """ModelScope / AnimateDiff-style text-to-video model behind the backbone contract.

    Args:
        unet: `UNet3DConditionModel` or `UNetMotionModel` taking (B, c, T, h, w) latents.
        vae: `AutoencoderKL` (frames are encoded/decoded independently).
        text_encoder: a transformers `CLIPTextModel`; the last hidden state conditions the UNet.
        tokenizer: its tokenizer (saved with the weights: ids must never change).
        schedule: training noise schedule; default scaled-linear, epsilon.
        vae_chunk: frames per VAE call (bounds memory at full resolution).

    Subclasses extend the model's input through `unet_input` and list extra constructor options in
    `metadata_options`: those are recorded in `t2v_turbo.json`, read back by `from_pretrained` and
    passed on by `make_student` (which returns the subclass).
    """

    family = "modelscope"
    metadata_options: tuple[str, ...] = ()

    def __init__(
        self,
        unet: nn.Module,
        vae: nn.Module,
        text_encoder: nn.Module,
        tokenizer,
        schedule: NoiseSchedule | None = None,
        native_fps: int = 8,
        resolution: tuple[int, int, int] = (16, 256, 256),
        guidance_convention: str = "t2v-turbo",
        vae_chunk: int = 16,
        family: str | None = None,
    ):
        super().__init__()
        self.unet, self.vae, self.text_encoder, self.tokenizer = unet, vae, text_encoder, tokenizer
        self.schedule = schedule or NoiseSchedule.make()
        self.native_fps = native_fps
        self.resolution = tuple(resolution)
        self.guidance_convention = guidance_convention
        self.vae_chunk = vae_chunk
        self.family = family or ("animatediff" if type(unet).__name__ == "UNetMotionModel" else "modelscope")
        self.w_embedding_dim = getattr(unet.config, "time_cond_proj_dim", None)
        self.vae.requires_grad_(False)
        self.text_encoder.requires_grad_(False)
        self._checkpointing = False

    # ------------------------------------------------------------------ text
    @property
    def scaling_factor(self) -> float:
        return float(getattr(self.vae.config, "scaling_factor", 0.18215))

    @torch.no_grad()
    def encode_prompt(self, prompts: Sequence[str]) -> Tensor:
        max_len = getattr(self.tokenizer, "model_max_length", 77)
        max_len = max_len if max_len and max_len < 10_000 else 77
        ids = self.tokenizer(
            list(prompts), padding="max_length", max_length=max_len, truncation=True, return_tensors="pt"
        ).input_ids.to(self.text_encoder.device)
        # (B, L, D): the text tower's last hidden state (ModelScope / AnimateDiff conditioning)
        return self.text_encoder(ids)[0].to(self.dtype)

    # ------------------------------------------------------------------ denoiser
    def model_output(self, z_t: Tensor, t: Tensor, cond: Tensor, w_emb: Tensor | None = None) -> Tensor:
        t = torch.as_tensor(t, device=z_t.device)
        if t.dim() == 0:
            t = t.expand(z_t.shape[0])
        if w_emb is not None and self.w_embedding_dim is None:
            raise ValueError("this backbone has no guidance embedding (a teacher); pass w_emb=None")
        added = self.added_cond_kwargs(cond, z_t.shape[0])
        if type(self.unet).__name__ == "UNetMotionModel" and cond.shape[0] == z_t.shape[0]:
            # UNetMotionModel runs its spatial layers per frame and expects (B * T, L, D) conditioning
            # (AnimateDiff pipelines repeat it themselves): frame-major within each video
            cond = cond.repeat_interleave(z_t.shape[2], dim=0)
        # (B, c, T, h, w) -> (B, c, T, h, w)
        x = self.unet_input(z_t)
        extra = {} if added is None else {"added_cond_kwargs": added}  # UNet3DConditionModel has no such input
        return self.unet(x, t, encoder_hidden_states=cond, timestep_cond=w_emb, return_dict=False, **extra)[0]

    def added_cond_kwargs(self, cond: Tensor, batch: int) -> dict | None:
        """SDXL-style pooled text for a UNet built with `addition_embed_type="text_time"`: the mean of the
        (B, L, D) text states as `text_embeds` and the native fps as the one `time_ids` entry, which the
        UNet embeds and adds to its timestep embedding (a global path for the prompt next to
        cross-attention). None for every other UNet."""
        unet = getattr(self.unet, "module", self.unet)  # DDP / FSDP wrappers hold the model in .module
        if getattr(getattr(unet, "config", None), "addition_embed_type", None) != "text_time":
            return None
        pooled = cond.mean(dim=1)
        if pooled.shape[0] != batch:
            pooled = pooled.expand(batch, -1)
        fps = torch.full((batch, 1), float(self.native_fps), device=cond.device, dtype=cond.dtype)
        return {"text_embeds": pooled, "time_ids": fps}

    def unet_input(self, z_t: Tensor) -> Tensor:
        """The UNet's input for latents z_t (B, c, T, h, w): z_t itself (subclasses may append channels)."""
        return z_t

    @property
    def latent_channels(self) -> int:
        return int(self.unet.config.out_channels)  # in_channels also counts channels `unet_input` adds

    def latent_shape(self, batch: int, num_frames: int | None = None) -> tuple[int, ...]:
        t, h, w = self.resolution
        down = 2 ** (len(self.vae.config.block_out_channels) - 1)
        return (batch, self.latent_channels, num_frames or t, h // down, w // down)

    # ------------------------------------------------------------------ training affordances
    def make_student(
        self, w_embedding_dim: int = 256, init: str = "normal", seed: int = 0
    ) -> DiffusersVideoBackbone:
        """Copy the teacher UNet into one with `time_cond_proj_dim = w_embedding_dim`.

        The new `time_embedding.cond_proj` (Linear(w_dim -> C, bias=False)) is the only new weight:
        "normal" gives PyTorch's default Linear init from a seeded RNG (as the released code builds it),
        "zero" makes the student start exactly equal to the teacher.
        """
        if init not in ("normal", "zero"):
            raise ValueError(f"unknown init {init!r}; valid: ['normal', 'zero']")
        cls = type(self.unet)
        config = dict(self.unet.config)
        # diffusers drops overrides of keys it flags as defaults; the student must get its w projection
        config.pop("_use_default_values", None)
        config["time_cond_proj_dim"] = w_embedding_dim
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            unet = cls.from_config(config)
        missing, unexpected = unet.load_state_dict(self.unet.state_dict(), strict=False)
        extra = [k for k in missing if not k.startswith("time_embedding.cond_proj")]
        if unexpected or extra:  # the teacher's UNet does not rebuild from its own config
            raise mismatch_error("the teacher UNet (rebuilt as a student from its config)", extra, unexpected)
        if init == "zero":
            nn.init.zeros_(unet.time_embedding.cond_proj.weight)
        unet.to(self.device)
        if self.dtype != torch.float32:
            unet.to(dtype=self.dtype)
        student = type(self)(
            unet,
            self.vae,
            self.text_encoder,
            self.tokenizer,
            self.schedule,
            native_fps=self.native_fps,
            resolution=self.resolution,
            guidance_convention=self.guidance_convention,
            vae_chunk=self.vae_chunk,
            family=self.family,
            **self._option_values(),
        )
        unet.requires_grad_(True)
        return student

    def enable_gradient_checkpointing(self, enabled: bool = True) -> None:
        """diffusers refuses checkpointing for UNet3DConditionModel: wrap each block's forward here
        (state-dict keys unchanged). UNetMotionModel uses diffusers' own checkpointing."""
        if getattr(self.unet, "_supports_gradient_checkpointing", False):
            if enabled:
                self.unet.enable_gradient_checkpointing()
            else:
                self.unet.disable_gradient_checkpointing()
            self._checkpointing = enabled
            return
        checkpoint_forward([*self.unet.down_blocks, self.unet.mid_block, *self.unet.up_blocks], enabled)
        self._checkpointing = enabled

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, path: str | Path, save_text: bool = True) -> None:
        """Write a diffusers-style folder. A LoRA-injected UNet is saved merged (a copy; self unchanged)."""
        from .lora import has_lora, merge_lora

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        unet = self.unet
        if has_lora(unet):
            unet = merge_lora(copy.deepcopy(unet))
        unet.save_pretrained(path / "unet")
        if save_text:
            self.vae.save_pretrained(path / "vae")
            self.text_encoder.save_pretrained(path / "text_encoder")
            self.tokenizer.save_pretrained(path / "tokenizer")
        sched = {
            "_class_name": "DDIMScheduler",
            **self.schedule.to_config(),
            "clip_sample": False,
            "set_alpha_to_one": False,
        }
        (path / "scheduler").mkdir(exist_ok=True)
        (path / "scheduler" / "scheduler_config.json").write_text(json.dumps(sched, indent=2))
        index = {
            "_class_name": "TextToVideoSDPipeline",
            "unet": ["diffusers", type(unet).__name__],
            "vae": ["diffusers", type(self.vae).__name__],
            "text_encoder": ["transformers", type(self.text_encoder).__name__],
            "tokenizer": ["transformers", type(self.tokenizer).__name__],
            "scheduler": ["diffusers", "DDIMScheduler"],
        }
        (path / "model_index.json").write_text(json.dumps(index, indent=2))
        self.write_metadata(path, {"vae_chunk": self.vae_chunk, **self._option_values()})

    def _option_values(self) -> dict:
        return {k: getattr(self, k) for k in self.metadata_options}

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        unet_path: str | Path | None = None,
        torch_dtype: torch.dtype = torch.float32,
        base: str | Path | None = None,
    ) -> DiffusersVideoBackbone:
        """Load a folder written by `save_pretrained` (or a diffusers TextToVideoSDPipeline folder).

        Args:
            unet_path: use this UNet folder instead of `path/unet` (e.g. a student next to a teacher).
            base: folder holding vae/, text_encoder/, tokenizer/ when `path` holds only a UNet.
        """
        from diffusers import AutoencoderKL
        from transformers import AutoTokenizer, CLIPTextModel

        path = Path(path)
        if not path.is_dir():
            what = "model folder not found" if not path.exists() else "expected a model folder, got a file"
            raise CheckpointError(f"{what}: {path}")
        base = Path(base) if base is not None else path
        unet_dir = Path(unet_path) if unet_path else path / "unet"
        for what, need in (
            ("UNet config", unet_dir / "config.json"),
            ("VAE", base / "vae"),
            ("text encoder", base / "text_encoder"),
            ("tokenizer", base / "tokenizer"),
        ):
            if not need.exists():
                raise CheckpointError(
                    f"{path}: the {what} is missing ({need}); expected a diffusers-style folder with "
                    "unet/, vae/, text_encoder/, tokenizer/"
                )
        unet_cls = _unet_class_of(unet_dir)
        unet = _load_part("UNet", unet_dir, lambda: unet_cls.from_pretrained(unet_dir, torch_dtype=torch_dtype))
        vae = _load_part("VAE", base / "vae", lambda: AutoencoderKL.from_pretrained(base / "vae", torch_dtype=torch_dtype))
        text_encoder = _load_part(
            "text encoder",
            base / "text_encoder",
            lambda: CLIPTextModel.from_pretrained(base / "text_encoder", torch_dtype=torch_dtype),
        )
        tokenizer = _load_part("tokenizer", base / "tokenizer", lambda: AutoTokenizer.from_pretrained(base / "tokenizer"))
        meta = read_metadata(path) or read_metadata(unet_dir.parent)
        sched_file = path / "scheduler" / "scheduler_config.json"
        if sched_file.exists():
            schedule = NoiseSchedule.from_scheduler_config(json.loads(sched_file.read_text()))
        else:
            schedule = NoiseSchedule.from_scheduler_config(meta.get("schedule", {}))
        return cls(
            unet,
            vae,
            text_encoder,
            tokenizer,
            schedule,
            native_fps=meta.get("native_fps", 8),
            resolution=tuple(meta.get("resolution", (16, 256, 256))),
            guidance_convention=meta.get("guidance_convention", "t2v-turbo"),
            vae_chunk=meta.get("vae_chunk", 16),
            family=meta.get("family"),
            **{k: meta[k] for k in cls.metadata_options if k in meta},
        )
