"""Adapter for Wan2.1 text-to-video through diffusers: `WanTransformer3DModel` (a flow-matching DiT
predicting the velocity), `AutoencoderKLWan` (a causal 3D VAE, 8x spatial / 4x temporal) and a UMT5
text encoder, behind the backbone contract (models/base.py).

What differs from the DDPM adapters (docs/flow_matching.md):
- the schedule is a `flow.FlowSchedule`: timesteps are float tensors t = 1000 s, the model output is
  v = eps - x0, and the consistency function is f(x_s, s) = x_s - s v;
- latents are the VAE posterior sample normalised per channel, (z - mean) / std, with the mean / std
  stored in the VAE config (WanPipeline divides by 1 / std and adds the mean before decoding);
- clips have 4k + 1 frames (latent frame 0 <-> pixel frame 0, latent frame j >= 1 <-> pixel frames
  4j - 3 .. 4j); the decoder is causal, so pixel frame p depends on every latent frame up to its own:
  `decode_latents(frames=...)` decodes the smallest exact span, the latent prefix ending at the latent
  frame of the last requested frame (a window starting later would not reproduce the same pixels);
- Wan has no guidance-scale embedding. `make_student(w_embedding_dim=D)` adds one (option a): a
  zero-initialised Linear(D -> freq_dim, no bias) whose output is added to the timestep sinusoid
  before the time-embedding MLP (as LCM's / T2V-Turbo's `time_cond_proj`), so the student takes w and
  starts equal to its teacher. `make_student(w_embedding_dim=None, fixed_w=w)` (option b) keeps the
  plain architecture: the student is distilled at one w (distill.w_min = distill.w_max = w) and is run
  without CFG (cfg 1), as Wan distillations do; it stays loadable by `WanPipeline` as is.

Folders: a diffusers `WanPipeline` folder (model_index.json, transformer/, vae/, text_encoder/,
tokenizer/, scheduler/), the layout of Wan-AI/Wan2.1-T2V-1.3B-Diffusers, loaded strictly (a missing
component, a wrong class or mismatched shapes is a one-line `CheckpointError` naming the component),
plus `t2v_turbo.json` and, for option (a), `guidance_proj.safetensors`. `save_pretrained` writes the
same layout (the transformer merged and plain, so `WanPipeline.from_pretrained` reads it).

Nothing here runs at import time; diffusers / transformers are imported inside functions.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import CheckpointError, InputError
from ..flow import FlowSchedule
from .base import Backbone, read_metadata
from .wan_io import (  # noqa: F401  (re-exported: the adapter's public helpers)
    GUIDANCE_FILE,
    WAN_COMPONENTS,
    _check_component,
    _load_diffusers,
    _load_guidance,
    _load_scheduler,
    _load_text_encoder,
    _load_tokenizer,
    _read_index,
    attach_guidance,
    export_lora_diffusers,
    guidance_proj_of,
    lora_adapter_config,
)

# component -> (library, accepted classes); None: any class of that library (the tokenizer)
DEFAULT_RESOLUTION = (81, 480, 832)  # Wan2.1-T2V-1.3B: 480x832, 81 frames at 16 fps


# ------------------------------------------------------------------------------------ clip lengths
def check_num_frames(num_frames: int, temporal: int = 4, round_to_valid: bool = False) -> int:
    """Wan clips have `temporal` k + 1 frames (1, 5, 9, ..., 81). Returns a valid count.

    Raises:
        InputError: a count that is not k * temporal + 1 (one line, naming the nearest valid ones),
            unless `round_to_valid`, which rounds to the nearest valid count (ties go down) and warns.
    """
    n = int(num_frames)
    if n >= 1 and (n - 1) % temporal == 0:
        return n
    lo = max(1, (n - 1) // temporal * temporal + 1)
    hi = lo + temporal
    if not round_to_valid:
        raise InputError(
            f"Wan clips have {temporal}k + 1 frames (1, 5, 9, ..., 81); got {num_frames}: use {lo} or {hi}"
        )
    out = lo if n - lo <= hi - n else hi
    warnings.warn(
        f"rounding {num_frames} frames to {out} (Wan clips have {temporal}k + 1 frames)", stacklevel=2
    )
    return out


def latent_frame_of(frame: int, temporal: int = 4) -> int:
    """The latent frame holding pixel frame p of a causal Wan clip: 0 for p = 0, else (p - 1) // 4 + 1."""
    return 0 if frame == 0 else (frame - 1) // temporal + 1


def pixel_frames(latent_frames: int, temporal: int = 4) -> int:
    """Frames decoded from `latent_frames` latent frames: 1 + 4 (n - 1)."""
    return 1 + temporal * (latent_frames - 1)


# ------------------------------------------------------------------------------------ tokenizer / tiny
# ------------------------------------------------------------------------------------ the backbone
class WanBackbone(Backbone):
    """Wan2.1 (diffusers) behind the backbone contract; `self.unet` is the WanTransformer3DModel.

    Args:
        transformer, vae, text_encoder, tokenizer: the `WanPipeline` components.
        schedule: a `FlowSchedule` (default shift 3.0, Wan2.1's 480p value).
        resolution: (T, H, W) in pixels; T = 4k + 1, H and W multiples of 16.
        max_sequence_length: text tokens (WanPipeline: 512), padded with zero embeddings.
        scheduler: the diffusers scheduler to write back on save (default: Euler with the shift).
        fixed_w: option (b) students: the w they were distilled at (metadata; run them at cfg 1).
    """

    family = "wan"

    def __init__(
        self,
        transformer: nn.Module,
        vae: nn.Module,
        text_encoder: nn.Module,
        tokenizer,
        schedule: FlowSchedule | None = None,
        native_fps: int = 16,
        resolution: tuple[int, int, int] = DEFAULT_RESOLUTION,
        guidance_convention: str = "t2v-turbo",
        max_sequence_length: int = 512,
        scheduler=None,
        fixed_w: float | None = None,
    ):
        super().__init__()
        self.unet, self.vae, self.text_encoder, self.tokenizer = transformer, vae, text_encoder, tokenizer
        self.schedule = schedule or FlowSchedule(shift=3.0)
        self.native_fps = int(native_fps)
        self.guidance_convention = guidance_convention
        self.max_sequence_length = int(max_sequence_length)
        self.scheduler = scheduler
        self.fixed_w = fixed_w
        t, h, w = resolution
        check_num_frames(t, self.temporal_factor)
        mult = self.spatial_factor * int(transformer.config.patch_size[1])
        if h % mult or w % mult:
            raise InputError(f"Wan needs height and width divisible by {mult}; got {h}x{w}")
        self.resolution = (int(t), int(h), int(w))
        proj = guidance_proj_of(transformer)
        self.w_embedding_dim = None if proj is None else int(proj.in_features)
        self.vae.requires_grad_(False)
        self.text_encoder.requires_grad_(False)
        mean = torch.tensor(vae.config.latents_mean, dtype=torch.float32).view(1, -1, 1, 1, 1)
        std = torch.tensor(vae.config.latents_std, dtype=torch.float32).view(1, -1, 1, 1, 1)
        self.register_buffer("latents_mean", mean, persistent=False)
        self.register_buffer("latents_std", std, persistent=False)

    @property
    def transformer(self) -> nn.Module:
        return self.unet

    @property
    def dtype(self) -> torch.dtype:
        """The transformer's compute dtype (its patch embedding's; the first parameter of a bf16 Wan
        is the fp32 `scale_shift_table`)."""
        pe = self.unet.patch_embedding
        pe = pe.get_base_layer() if hasattr(pe, "get_base_layer") else pe  # under LoRA
        return pe.weight.dtype

    @property
    def temporal_factor(self) -> int:
        return int(getattr(self.vae.config, "scale_factor_temporal", None) or 4)

    @property
    def spatial_factor(self) -> int:
        return int(getattr(self.vae.config, "scale_factor_spatial", None) or 8)

    # ------------------------------------------------------------------ text
    @torch.no_grad()
    def encode_prompt(self, prompts: Sequence[str]) -> Tensor:
        """prompts -> (B, max_sequence_length, d_model), as WanPipeline: cleaned text, padded to the
        full length with add_special_tokens, the encoder run with the attention mask, and every
        position after the prompt's own tokens set to zero."""
        from diffusers.pipelines.wan.pipeline_wan import prompt_clean

        texts = [prompt_clean(p) for p in prompts]
        enc = self.tokenizer(
            texts,
            padding="max_length",
            max_length=self.max_sequence_length,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        dev = self.text_encoder.device
        ids, mask = enc.input_ids.to(dev), enc.attention_mask.to(dev)
        hidden = self.text_encoder(ids, mask).last_hidden_state  # (B, L, D)
        seq_len = mask.gt(0).sum(dim=1)
        keep = torch.arange(hidden.shape[1], device=dev)[None, :] < seq_len[:, None]  # (B, L)
        # positions past each prompt's length are zeros (WanPipeline: u[:len] padded with zeros)
        hidden = torch.where(keep[..., None], hidden, torch.zeros((), dtype=hidden.dtype, device=dev))
        return hidden.to(self.dtype)

    # ------------------------------------------------------------------ denoiser
    def model_output(self, z_t: Tensor, t: Tensor, cond: Tensor, w_emb: Tensor | None = None) -> Tensor:
        """The velocity v = eps - x0 at z_t (B, 16, T', h, w); t = 1000 s, float (B,) or scalar."""
        t = torch.as_tensor(t, device=z_t.device)
        if not t.is_floating_point():
            t = t.float()
        if t.dim() == 0:
            t = t.expand(z_t.shape[0])
        extra = {}
        if w_emb is not None:
            if self.w_embedding_dim is None:
                raise ValueError(
                    "this backbone has no guidance embedding (a teacher or a fixed-w student); pass w_emb=None"
                )
            extra["w_emb"] = w_emb
        dtype = self.dtype
        # (B, c, T', h, w) -> (B, c, T', h, w)
        return self.unet(
            hidden_states=z_t.to(dtype),
            timestep=t,
            encoder_hidden_states=cond.to(dtype),
            return_dict=False,
            **extra,
        )[0]

    @property
    def latent_channels(self) -> int:
        return int(self.unet.config.out_channels)

    def num_video_frames(self, latent_frames: int) -> int:
        """Pixel frames decoded from `latent_frames` latent frames: 1 + 4 (n - 1) (21 -> 81)."""
        return pixel_frames(latent_frames, self.temporal_factor)

    def latent_shape(self, batch: int, num_frames: int | None = None) -> tuple[int, ...]:
        """(B, 16, (T - 1) / 4 + 1, H / 8, W / 8); T must be 4k + 1 (else InputError)."""
        t, h, w = self.resolution
        t = check_num_frames(num_frames or t, self.temporal_factor)
        sf = self.spatial_factor
        return (batch, self.latent_channels, (t - 1) // self.temporal_factor + 1, h // sf, w // sf)

    # ------------------------------------------------------------------ VAE
    @torch.no_grad()
    def encode_video(self, video: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """video (B, 3, 4k + 1, H, W) in [-1, 1] -> normalised latents (posterior sample - mean) / std."""
        check_num_frames(video.shape[2], self.temporal_factor)
        raw = self.vae.encode(video.to(self.vae.dtype)).latent_dist.sample(generator=generator)
        mean, std = self.latents_mean.to(raw.device), self.latents_std.to(raw.device)
        # z = (z_raw - mean) / std  (WanPipeline decodes z / (1 / std) + mean)
        return ((raw.float() - mean) / std).to(raw.dtype)

    def decode_latents(
        self,
        z: Tensor,
        frames: Sequence[int] | Tensor | None = None,
        checkpoint: bool = False,
        *,
        context_grad: bool = False,
    ) -> Tensor:
        """Normalised latents (B, 16, n, h, w) -> video (B, 3, T', H, W) in [-1, 1] (clamped, as
        AutoencoderKLWan.decode), differentiable.

        The decoder is causal and runs latent frame by latent frame through a feature cache (as
        diffusers does), so pixel frame p depends on every latent frame up to its own. With `frames`,
        only latent frames 0..L are decoded, L = the latent frame of the last requested frame (the
        smallest exact span). The latent frames before the first requested frame's are context: decoded
        without gradients unless `context_grad` (pixels are exact either way; the gradient with respect
        to the latent frames that hold requested frames is exact too, and is zero for the context
        frames, whose influence runs only through the cache). Peak memory: the activations of the
        latent frames holding requested frames, not of the whole prefix.

        checkpoint: recompute each latent frame's decoder activations in backward (peak = one latent
            frame's activations; cache state is passed explicitly, so the recompute is exact).
        """
        n = z.shape[2]
        total = pixel_frames(n, self.temporal_factor)
        if frames is None:
            idx, first, last = None, 0, n - 1
        else:
            idx = torch.as_tensor(frames, dtype=torch.long).flatten().cpu()
            if idx.numel() == 0:
                raise InputError("decode_latents: no frames requested")
            if int(idx.min()) < 0 or int(idx.max()) >= total:
                raise InputError(f"frames must be in [0, {total}) for {n} latent frames; got {idx.tolist()}")
            first = 0 if context_grad else latent_frame_of(int(idx.min()), self.temporal_factor)
            last = latent_frame_of(int(idx.max()), self.temporal_factor)
        mean, std = self.latents_mean.to(z.device), self.latents_std.to(z.device)
        # z_raw = z * std + mean  (undo the per-channel normalisation)
        raw = (z[:, :, : last + 1].float() * std + mean).to(self.vae.dtype)
        video = self._causal_decode(raw, first, checkpoint)  # pixel frames of latent frames first..last
        if idx is None:
            return video
        offset = (
            0 if first == 0 else pixel_frames(first, self.temporal_factor)
        )  # first pixel of latent `first`
        return video[:, :, (idx - offset).to(video.device)]

    def _causal_decode(self, raw: Tensor, first: int, checkpoint: bool) -> Tensor:
        """AutoencoderKLWan's decode loop (post_quant_conv, then the decoder one latent frame at a time
        with its causal feature cache), returning the pixels of latent frames first..n-1; frames before
        `first` only fill the cache, without gradients."""
        from torch.utils.checkpoint import checkpoint as ckpt

        vae = self.vae
        vae.clear_cache()
        cache = list(vae._feat_map)  # one slot per causal conv of the decoder (None / "Rep" / tensor)
        vae.clear_cache()
        x = vae.post_quant_conv(raw)  # a 1x1x1 conv: frame by frame

        def frame_fn(x_i: Tensor, *cache_in, first_chunk: bool):
            state = list(cache_in)  # a fresh list: the recompute in backward sees the same input state
            out = vae.decoder(x_i, feat_cache=state, feat_idx=[0], first_chunk=first_chunk)
            return (out, *state)

        outs = []
        for i in range(raw.shape[2]):
            x_i = x[:, :, i : i + 1]
            if i < first:
                with torch.no_grad():
                    _, *cache = frame_fn(x_i, *cache, first_chunk=i == 0)
                continue
            if checkpoint and torch.is_grad_enabled() and x_i.requires_grad:
                out, *cache = ckpt(frame_fn, x_i, *cache, use_reentrant=False, first_chunk=i == 0)
            else:
                out, *cache = frame_fn(x_i, *cache, first_chunk=i == 0)
            outs.append(out)
        # AutoencoderKLWan.decode clamps its output to [-1, 1]
        return torch.clamp(torch.cat(outs, dim=2), min=-1.0, max=1.0)

    # ------------------------------------------------------------------ training affordances
    def make_student(
        self,
        w_embedding_dim: int | None = 256,
        init: str = "zero",
        seed: int = 0,
        fixed_w: float | None = None,
    ) -> WanBackbone:
        """A trainable copy of the teacher transformer.

        w_embedding_dim: option (a), the student takes w through a new guidance embedding (see
            `attach_guidance`; init "zero" starts it equal to the teacher); None: option (b), the plain
            architecture, distilled at one w (record it as `fixed_w`) and sampled at cfg 1.
        """
        if guidance_proj_of(self.unet) is not None:
            raise ValueError("make_student needs a teacher (this backbone already has a guidance embedding)")
        transformer = copy.deepcopy(self.unet)
        if w_embedding_dim is not None:
            attach_guidance(transformer, int(w_embedding_dim), init, seed)
        transformer.requires_grad_(True)
        return WanBackbone(
            transformer,
            self.vae,
            self.text_encoder,
            self.tokenizer,
            self.schedule,
            self.native_fps,
            self.resolution,
            self.guidance_convention,
            self.max_sequence_length,
            self.scheduler,
            fixed_w=fixed_w if w_embedding_dim is None else None,
        )

    def enable_gradient_checkpointing(self, enabled: bool = True) -> None:
        """diffusers' own block checkpointing of WanTransformer3DModel (state-dict keys unchanged)."""
        if enabled:
            self.unet.enable_gradient_checkpointing()
        else:
            self.unet.disable_gradient_checkpointing()

    def add_lora(self, rank: int = 64, alpha: float | None = None, dropout: float = 0.0, **kw) -> None:
        """peft LoRA on every Linear / Conv of the transformer (models/lora.py); the guidance projection
        (option a) is not LoRA'd but trained in full (freq_dim x w_dim weights, zero-initialised)."""
        from .lora import add_lora

        exclude = tuple(kw.pop("exclude", ())) + ("guidance_proj",)
        self.unet = add_lora(self.unet, rank=rank, alpha=alpha, dropout=dropout, exclude=exclude, **kw)
        proj = guidance_proj_of(self.unet)
        if proj is not None:
            proj.requires_grad_(True)

    # ------------------------------------------------------------------ export helpers
    def export_lora_diffusers(self, path: str | Path) -> Path | None:
        """The trainer's export (training/roles.export): the LoRA in diffusers' format under `path`
        (`pytorch_lora_weights.safetensors`, loadable by `WanPipeline.load_lora_weights`) for a plain
        student (option b); None for an option (a) student (its guidance embedding is no LoRA: its
        merged folder is the export)."""
        if self.w_embedding_dim is not None:
            return None
        return export_lora_diffusers(self, path)

    def plain_transformer(self, w: float | None = None) -> nn.Module:
        """A plain `WanTransformer3DModel` (a new module; self unchanged): LoRA merged, no guidance
        embedding. With `w` (option a), the guidance term at that w is folded exactly into the time
        embedder's first bias: linear_1(x + W_g e(w)) = linear_1(x) + W_1 W_g e(w).
        """
        from .lora import has_lora, merge_lora

        src = self.unet
        if has_lora(src):
            src = merge_lora(copy.deepcopy(src))
        sd = {k: v.detach().clone() for k, v in src.state_dict().items() if ".guidance_proj." not in k}
        proj = guidance_proj_of(src)
        if proj is not None and w is not None:
            from ..schedule import guidance_embedding

            te = src.condition_embedder.time_embedder
            with torch.no_grad():
                e = guidance_embedding(torch.tensor([float(w)]), proj.in_features).to(proj.weight)
                shift = te.linear_1.weight.float() @ proj(e)[0].float()  # W_1 W_g e(w)
                key = "condition_embedder.time_embedder.linear_1.bias"
                sd[key] = (sd[key].float() + shift).to(sd[key].dtype)
        from ..weights import load_strict

        plain = type(src).from_config(src.config)
        # assign=True keeps each tensor's dtype (a bf16 model keeps diffusers' fp32 modules)
        load_strict(plain, sd, "transformer", assign=True)
        return plain.eval()

    def diffusers_scheduler(self):
        """The scheduler written on save: the one loaded, else FlowMatchEulerDiscreteScheduler(shift)."""
        if self.scheduler is not None:
            return self.scheduler
        from diffusers import FlowMatchEulerDiscreteScheduler

        return FlowMatchEulerDiscreteScheduler(
            num_train_timesteps=self.schedule.num_train_timesteps, shift=self.schedule.shift
        )

    def t2v_turbo_metadata(self) -> dict:
        return super().t2v_turbo_metadata() | {
            "max_sequence_length": self.max_sequence_length,
            "fixed_w": self.fixed_w,
        }

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, path: str | Path, save_text: bool = True, w: float | None = None) -> None:
        """Write a `WanPipeline` folder (model_index.json, transformer/ merged and plain, vae/,
        text_encoder/, tokenizer/, scheduler/) + t2v_turbo.json (+ guidance_proj.safetensors).

        save_text=False writes only transformer/ (+ metadata): a student next to its teacher's folder.
        w: fold the guidance embedding at this w into the transformer (option a) and save a plain
            student (no guidance_proj file; it then runs at that w with cfg 1, like an option-b one).
        """
        from diffusers import WanPipeline
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        plain = self.plain_transformer(w)
        if save_text:
            pipe = WanPipeline(
                tokenizer=self.tokenizer,
                text_encoder=self.text_encoder,
                vae=self.vae,
                scheduler=self.diffusers_scheduler(),
                transformer=plain,
            )
            pipe.save_pretrained(path)
        else:
            plain.save_pretrained(path / "transformer")
        proj = guidance_proj_of(self.unet)
        meta = {}
        if proj is not None and w is None:
            save_file({"weight": proj.weight.detach().float().cpu().contiguous()}, str(path / GUIDANCE_FILE))
        elif proj is not None:
            meta = {"w_embedding_dim": None, "fixed_w": float(w)}
        self.write_metadata(path, meta)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        torch_dtype: torch.dtype = torch.float32,
        base: str | Path | None = None,
        transformer_path: str | Path | None = None,
        vae_dtype: torch.dtype = torch.float32,
    ) -> WanBackbone:
        """Load a `WanPipeline` folder strictly.

        Args:
            torch_dtype: transformer and text encoder dtype (bf16 keeps diffusers' fp32 modules: the
                time embedder, norms, rope; the guidance projection stays fp32).
            base: folder holding vae/, text_encoder/, tokenizer/ (and model_index.json) when `path`
                holds only a student's transformer/.
            transformer_path: a transformer folder to use instead of `path/transformer`.
            vae_dtype: the VAE's dtype (diffusers recommends float32 for Wan's VAE).
        Raises:
            CheckpointError: one line naming the component: a missing folder / file, a class in
                model_index.json (or the component's own config) that is not a Wan one, weights that
                are missing or of mismatched shapes, components whose sizes do not fit together.
        """
        path = Path(path)
        if not path.is_dir():
            raise CheckpointError(f"Wan folder not found: {path}")
        root = Path(base) if base is not None else path
        index = _read_index(root, path)
        folders = {name: root / name for name in WAN_COMPONENTS}
        folders["transformer"] = Path(transformer_path) if transformer_path else path / "transformer"
        for name, (lib, classes) in WAN_COMPONENTS.items():
            _check_component(root, name, index, folders[name], lib, classes)

        transformer = _load_diffusers(
            "transformer", folders["transformer"], "WanTransformer3DModel", torch_dtype, root
        )
        vae = _load_diffusers("vae", folders["vae"], "AutoencoderKLWan", vae_dtype, root)
        text_encoder = _load_text_encoder(
            folders["text_encoder"], index["text_encoder"][1], torch_dtype, root
        )
        tokenizer = _load_tokenizer(folders["tokenizer"], root)
        scheduler, schedule = _load_scheduler(folders["scheduler"], index["scheduler"][1], root)

        # components must fit together
        tc, vc, ec = transformer.config, vae.config, text_encoder.config
        if int(tc.in_channels) != int(vc.z_dim) or int(tc.out_channels) != int(vc.z_dim):
            raise CheckpointError(
                f"{root}: transformer in/out channels {tc.in_channels}/{tc.out_channels} do not match the vae's "
                f"z_dim {vc.z_dim}"
            )
        if int(tc.text_dim) != int(ec.d_model):
            raise CheckpointError(
                f"{root}: transformer text_dim {tc.text_dim} does not match the text_encoder's d_model {ec.d_model}"
            )

        meta = read_metadata(path) or read_metadata(folders["transformer"].parent)
        w_dim = meta.get("w_embedding_dim")
        if w_dim is not None:
            _load_guidance(transformer, int(w_dim), folders["transformer"].parent / GUIDANCE_FILE)
        max_len = meta.get("max_sequence_length")
        if max_len is None:
            ml = getattr(tokenizer, "model_max_length", 512)
            max_len = 512 if not ml or ml > 10_000 else min(int(ml), 512)
        return cls(
            transformer,
            vae,
            text_encoder,
            tokenizer,
            schedule,
            native_fps=meta.get("native_fps", 16),
            resolution=tuple(meta.get("resolution", DEFAULT_RESOLUTION)),
            guidance_convention=meta.get("guidance_convention", "t2v-turbo"),
            max_sequence_length=max_len,
            scheduler=scheduler,
            fixed_w=meta.get("fixed_w"),
        )
