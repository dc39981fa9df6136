"""The MovingDigits world's flow-matching (FM) family: a tiny Wan2.1 transformer on the world's VAE and text.

`MovingDigitsWanBackbone` is a `models.wan.WanBackbone` (diffusers' `WanTransformer3DModel`, rectified
flow, velocity v = eps - x0, the guidance embedding of `make_student(w_embedding_dim=D)`, LoRA, the merged
plain transformer on save) in which only what the world changes is overridden:

- VAE: the world's `AutoencoderKL` (4x spatial, no temporal compression), frame by frame with its scaling
  factor, through the very code path of the UNet family (`models.base.FrameVAEMixin`): latents
  (B, 4, 8, 8, 8) for 8 frames of 32x32 (temporal factor 1, any frame count), not AutoencoderKLWan's
  causal 3D latents (8x spatial, 4x temporal, 4k + 1 frames, per-channel mean / std);
- text: the world's frozen CLIP text tower and word-level CLIP tokenizer, conditioning on the last hidden
  state (B, 16, 64) exactly as the UNet family (`DiffusersVideoBackbone.encode_prompt`), not UMT5 with
  512 zero-padded positions;
- folders: a model folder holds only the transformer and its schedule; vae/, text_encoder/ and
  tokenizer/ are read from the world root (`base=`), as `MovingDigitsBackbone.from_pretrained(root /
  name, base=root)` does for the UNet family:

      fm_teacher/  transformer/ (diffusers WanTransformer3DModel: config.json + safetensors; shipped
                                 weights stored in fp16 and loaded as float32)
                   scheduler/   (FlowMatchEulerDiscreteScheduler with the flow shift)
                   t2v_turbo.json (family "moving-digits-fm", schedule, resolution, fixed_w, ...)
      fm_vcm/, fm_turbo/: the same + guidance_proj.safetensors (the students' w embedding, wan_io)

  There is no model_index.json (a real Wan folder's WanPipeline index would name AutoencoderKLWan and
  UMT5, which these models do not use); `save_pretrained(save_text=True)` (the trainer's export) also
  writes vae/, text_encoder/ and tokenizer/ into the folder, so it loads on its own.

The transformer (`build_transformer`): patch (1, 2, 2) on the 4 x 8 x 8 x 8 latents (4 x 4 tokens per
frame, 128 tokens), 6 layers of 4 heads x 32 (hidden 128), FFN 512, text_dim 64, 3D rotary positions over
(frame, row, column); 1.79M parameters (`FM_TRANSFORMER` records the sizes and why).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from ...errors import CheckpointError
from ...flow import FlowSchedule
from ...models.base import FrameVAEMixin, read_metadata
from ...models.wan import WanBackbone
from ...models.wan_io import GUIDANCE_FILE, attach_guidance, guidance_proj_of
from .backbone import NUM_POSITION_CHANNELS, video_position_channels

FAMILY = "moving-digits-fm"
FM_TEXT_ENCODER = "fm_text_encoder"  # the FM family's frozen text tower (md-video's, contrastively trained)
DEFAULT_SHIFT = 1.0  # see stage_fm.FLOW_SHIFT_NOTE (measured on the world's latents)

# The world transformer's size. Measured on this machine's busy CPU, 1 thread, batch 8, fwd + bwd + AdamW
# of the transformer alone (the VAE encode of a batch adds ~0.25 s):
#   patch (1, 1, 1), hidden 128 (4 x 32), FFN 256, 4 layers, 0.97M params: 0.95 s/step (512 tokens)
#   patch (1, 1, 1), hidden 64 (2 x 32), FFN 128, 4 layers, 0.26M params: 0.37 s/step
#   patch (1, 2, 2), hidden 128 (4 x 32), FFN 512, 6 layers, 1.77M params: 0.29 s/step (128 tokens)
# Patch 1 fits the ~0.6 s/step budget (3000 steps in 30 min) only at 0.26M parameters; patch 2 affords a
# 7x larger model for the same time, and in equal-time 200-step probes it reached a lower held-out velocity
# error at every noise level (stage_fm.train_fm_teacher's docstring has the numbers). A glyph (12 px = 3
# latent pixels) spans 2-4 tokens per frame; each token decodes its 2x2 latent patch through a linear
# layer from 128 dimensions, enough for the sub-token position of a 2 px/frame motion.
FM_TRANSFORMER = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 4,
    "attention_head_dim": 32,
    "ffn_dim": 512,
    "num_layers": 6,
    "freq_dim": 256,
}


def build_transformer(
    seed: int = 0, text_dim: int = 64, latent_channels: int = 4, position_channels: bool = False, **sizes
):
    """A fresh (seeded) `WanTransformer3DModel` for the world's latents, sizes `FM_TRANSFORMER` unless
    overridden (`patch_size`, `num_attention_heads`, `attention_head_dim`, `ffn_dim`, `num_layers`,
    `freq_dim`); 3D RoPE, RMS q/k norm across heads and the cross-attention norm as Wan2.1.

    `position_channels`: in_channels = latent channels + `NUM_POSITION_CHANNELS` (the fixed frame / row /
    column channels the backbone concatenates, as Wan's image-to-video model concatenates its condition
    channels); out_channels stay the latent channels."""
    from diffusers import WanTransformer3DModel

    cfg = {**FM_TRANSFORMER, **sizes}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = WanTransformer3DModel(
            patch_size=tuple(cfg["patch_size"]),
            num_attention_heads=cfg["num_attention_heads"],
            attention_head_dim=cfg["attention_head_dim"],
            in_channels=latent_channels + (NUM_POSITION_CHANNELS if position_channels else 0),
            out_channels=latent_channels,
            text_dim=text_dim,
            freq_dim=cfg["freq_dim"],
            ffn_dim=cfg["ffn_dim"],
            num_layers=cfg["num_layers"],
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            rope_max_seq_len=32,
        )
    return model


class MovingDigitsWanBackbone(FrameVAEMixin, WanBackbone):
    """A Wan2.1 transformer (flow matching) on the MovingDigits world's VAE and CLIP text tower.

    Args:
        transformer: `WanTransformer3DModel` with in / out channels = the VAE's latent channels and
            text_dim = the text tower's hidden size.
        vae: the world's `AutoencoderKL` (frames encoded / decoded independently, scaled by its
            `scaling_factor`).
        text_encoder, tokenizer: the world's `CLIPTextModel` and `CLIPTokenizer` (max length 16).
        schedule: a `FlowSchedule` (default shift `DEFAULT_SHIFT`).
        resolution: (T, H, W) in pixels (the world's (8, 32, 32)); any T (temporal factor 1).
        fixed_w: option (b) students: the w they were distilled at.
        vae_chunk: frames per VAE call.
        text_encoder_dir: the text tower's folder under the world root (recorded in t2v_turbo.json):
            "text_encoder" (the UNet family's) or `FM_TEXT_ENCODER`.
        position_channels: concatenate the UNet family's fixed (frame, row, column) Fourier channels
            (`backbone.video_position_channels`) to the latents; the transformer then has
            in_channels = latent channels + `NUM_POSITION_CHANNELS`. Wan's 3D RoPE is relative: attention
            scores depend only on offsets between tokens, so without these the model is
            translation-equivariant and cannot place "start on the right, end on the left" from pure
            noise (the FM teacher without them: direction 0.16-0.25 at 500-1500 steps, chance 0.25).
    """

    family = FAMILY

    def __init__(
        self,
        transformer: nn.Module,
        vae: nn.Module,
        text_encoder: nn.Module,
        tokenizer,
        schedule: FlowSchedule | None = None,
        native_fps: int = 8,
        resolution: tuple[int, int, int] = (8, 32, 32),
        guidance_convention: str = "t2v-turbo",
        scheduler=None,
        fixed_w: float | None = None,
        vae_chunk: int = 64,
        text_encoder_dir: str = "text_encoder",
        position_channels: bool = False,
    ):
        nn.Module.__init__(self)  # not WanBackbone.__init__: it reads AutoencoderKLWan's latents_mean / std
        self.unet, self.vae, self.text_encoder, self.tokenizer = transformer, vae, text_encoder, tokenizer
        self.schedule = schedule or FlowSchedule(shift=DEFAULT_SHIFT)
        self.native_fps = int(native_fps)
        self.guidance_convention = guidance_convention
        self.scheduler = scheduler
        self.fixed_w = fixed_w
        self.vae_chunk = int(vae_chunk)
        self.text_encoder_dir = str(text_encoder_dir)
        self.position_channels = bool(position_channels)
        ml = getattr(tokenizer, "model_max_length", 77)
        self.max_sequence_length = int(ml if ml and ml < 10_000 else 77)
        t, h, w = (int(x) for x in resolution)
        mult = self.spatial_factor * int(transformer.config.patch_size[1])
        if h % mult or w % mult:
            raise CheckpointError(f"{FAMILY}: height and width must be multiples of {mult}, got {h}x{w}")
        self.resolution = (t, h, w)
        tc = transformer.config
        want_in = self.vae_latent_channels + (NUM_POSITION_CHANNELS if self.position_channels else 0)
        if int(tc.in_channels) != want_in or int(tc.out_channels) != self.vae_latent_channels:
            raise CheckpointError(
                f"{FAMILY}: transformer in/out channels {tc.in_channels}/{tc.out_channels} do not match "
                f"{want_in}/{self.vae_latent_channels} (the VAE's latent channels"
                f"{' + position channels' if self.position_channels else ''})"
            )
        if int(tc.text_dim) != int(text_encoder.config.hidden_size):
            raise CheckpointError(
                f"{FAMILY}: transformer text_dim {tc.text_dim} does not match the text tower's hidden size "
                f"{text_encoder.config.hidden_size}"
            )
        proj = guidance_proj_of(transformer)
        self.w_embedding_dim = None if proj is None else int(proj.in_features)
        self.vae.requires_grad_(False)
        self.text_encoder.requires_grad_(False)

    # ------------------------------------------------------------------ what the world changes
    @property
    def scaling_factor(self) -> float:
        return float(getattr(self.vae.config, "scaling_factor", 0.18215))

    @property
    def vae_latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    @property
    def temporal_factor(self) -> int:
        return 1  # a 2D VAE applied frame by frame

    @property
    def spatial_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def num_video_frames(self, latent_frames: int) -> int:
        return int(latent_frames)

    def latent_shape(self, batch: int, num_frames: int | None = None) -> tuple[int, ...]:
        """(B, 4, T, H / 4, W / 4): one latent frame per video frame."""
        t, h, w = self.resolution
        sf = self.spatial_factor
        return (batch, self.latent_channels, int(num_frames or t), h // sf, w // sf)

    def model_output(self, z_t: Tensor, t: Tensor, cond: Tensor, w_emb: Tensor | None = None) -> Tensor:
        """The velocity at z_t (B, 4, T, h, w), with the position channels concatenated when enabled."""
        if self.position_channels:
            pos = video_position_channels(*z_t.shape[2:]).to(z_t.device, z_t.dtype)
            z_t = torch.cat([z_t, pos.expand(z_t.shape[0], -1, -1, -1, -1)], dim=1)
        return super().model_output(z_t, t, cond, w_emb)

    @torch.no_grad()
    def encode_prompt(self, prompts: Sequence[str]) -> Tensor:
        """prompts -> (B, 16, 64): the CLIP tower's last hidden state, as the UNet family (the same code)."""
        from ...models.diffusers_video import DiffusersVideoBackbone

        return DiffusersVideoBackbone.encode_prompt(self, prompts)

    # encode_video / decode_latents: FrameVAEMixin (first in the MRO), the UNet family's per-frame path

    # ------------------------------------------------------------------ students
    def make_student(
        self, w_embedding_dim: int | None = 256, init: str = "zero", seed: int = 0, fixed_w: float | None = None
    ) -> MovingDigitsWanBackbone:
        """A trainable copy of the teacher transformer, as `WanBackbone.make_student` (option a: the
        zero-initialised guidance embedding `wan_io.attach_guidance`; option b: `w_embedding_dim=None`,
        `fixed_w`), keeping this class and the world's VAE and text tower."""
        if guidance_proj_of(self.unet) is not None:
            raise ValueError("make_student needs a teacher (this backbone already has a guidance embedding)")
        transformer = copy.deepcopy(self.unet)
        if w_embedding_dim is not None:
            attach_guidance(transformer, int(w_embedding_dim), init, seed)
        transformer.requires_grad_(True)
        return type(self)(
            transformer,
            self.vae,
            self.text_encoder,
            self.tokenizer,
            self.schedule,
            self.native_fps,
            self.resolution,
            self.guidance_convention,
            self.scheduler,
            fixed_w=fixed_w if w_embedding_dim is None else None,
            vae_chunk=self.vae_chunk,
            text_encoder_dir=self.text_encoder_dir,
            position_channels=self.position_channels,
        )

    # ------------------------------------------------------------------ persistence
    def t2v_turbo_metadata(self) -> dict:
        return super().t2v_turbo_metadata() | {
            "vae_chunk": self.vae_chunk,
            "text_encoder_dir": self.text_encoder_dir,
            "position_channels": self.position_channels,
        }

    def save_pretrained(
        self,
        path: str | Path,
        save_text: bool = True,
        w: float | None = None,
        storage_dtype: torch.dtype | None = None,
    ) -> None:
        """Write transformer/ (merged, plain; `WanBackbone.plain_transformer`), scheduler/,
        t2v_turbo.json and, for a student with a w embedding, guidance_proj.safetensors.

        save_text: also write the world's vae/, text_encoder/ and tokenizer/ (a self-contained folder);
            False: the model folder only, loaded with `base=` the world root.
        w: fold the guidance embedding at this w into the transformer (a plain fixed-w student).
        storage_dtype: the transformer's stored dtype (torch.float16 for shipped weights; loading
            always gives float32 unless asked otherwise). The guidance projection stays float32.
        """
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        plain = self.plain_transformer(w)
        # diffusers' layout (config.json + diffusion_pytorch_model.safetensors), written directly so that the
        # stored dtype can differ from the module's (ModelMixin.save_pretrained saves the module's own)
        tdir = path / "transformer"
        tdir.mkdir(exist_ok=True)
        plain.save_config(tdir)
        config = json.loads((tdir / "config.json").read_text())
        if config.pop("_name_or_path", None) is not None:  # where it was loaded from: not part of the model
            (tdir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        state = {
            k: (v if storage_dtype is None else v.to(storage_dtype)).detach().cpu().contiguous()
            for k, v in plain.state_dict().items()
        }
        save_file(state, str(tdir / "diffusion_pytorch_model.safetensors"), metadata={"format": "pt"})
        self.diffusers_scheduler().save_pretrained(path / "scheduler")
        if save_text:
            self.vae.save_pretrained(path / "vae")
            self.text_encoder.save_pretrained(path / "text_encoder")
            self.tokenizer.save_pretrained(path / "tokenizer")
        proj = guidance_proj_of(self.unet)
        meta = {}
        guidance = path / GUIDANCE_FILE
        if proj is not None and w is None:
            save_file({"weight": proj.weight.detach().float().cpu().contiguous()}, str(guidance))
        else:
            guidance.unlink(missing_ok=True)
            if proj is not None:
                meta = {"w_embedding_dim": None, "fixed_w": float(w)}
        self.write_metadata(path, meta)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        base: str | Path | None = None,
        torch_dtype: torch.dtype = torch.float32,
        transformer_path: str | Path | None = None,
    ) -> MovingDigitsWanBackbone:
        """Load a folder written by `save_pretrained` (strictly: a missing or mismatched component is a
        one-line `CheckpointError` naming it).

        Args:
            base: the world root holding vae/, the text tower (t2v_turbo.json's `text_encoder_dir`,
                default text_encoder/) and tokenizer/ (default: `path` itself).
            torch_dtype: the transformer's dtype (fp16-stored weights load as float32 by default).
            transformer_path: a transformer folder to use instead of `path/transformer`.
        """
        from diffusers import AutoencoderKL
        from transformers import AutoTokenizer, CLIPTextModel

        from ...models.diffusers_video import _load_part
        from ...models.wan_io import _load_diffusers, _load_guidance

        path = Path(path)
        if not path.is_dir():
            raise CheckpointError(f"{FAMILY} model folder not found: {path}")
        root = Path(base) if base is not None else path
        # a self-contained folder (save_text=True) holds its own tower in text_encoder/; in a world root the
        # tower's folder is the one recorded at save time
        text_dir = "text_encoder" if base is None else str(read_metadata(path).get("text_encoder_dir", "text_encoder"))
        tdir = Path(transformer_path) if transformer_path else path / "transformer"
        for what, need in (
            ("transformer", tdir),
            ("vae", root / "vae"),
            ("text_encoder", root / text_dir),
            ("tokenizer", root / "tokenizer"),
        ):
            if not need.is_dir():
                raise CheckpointError(
                    f"{path}: component '{what}' is missing ({need} not found); a {FAMILY} folder holds "
                    "transformer/ and reads vae/, text_encoder/, tokenizer/ from its world root (base=)"
                )
        transformer = _load_diffusers("transformer", tdir, "WanTransformer3DModel", torch_dtype, path)
        vae = _load_part(
            "VAE", root / "vae", lambda: AutoencoderKL.from_pretrained(root / "vae", torch_dtype=torch.float32)
        ).eval()
        text_encoder = _load_part(
            "text encoder",
            root / text_dir,
            lambda: CLIPTextModel.from_pretrained(root / text_dir, torch_dtype=torch.float32),
        ).eval()
        tokenizer = _load_part(
            "tokenizer", root / "tokenizer", lambda: AutoTokenizer.from_pretrained(root / "tokenizer")
        )
        meta = read_metadata(path)
        if meta.get("family", FAMILY) != FAMILY:
            raise CheckpointError(f"{path}: t2v_turbo.json records family {meta.get('family')!r}, not {FAMILY!r}")
        scheduler, schedule = None, None
        sched_file = path / "scheduler" / "scheduler_config.json"
        if sched_file.is_file():
            from ...models.wan_io import _load_scheduler

            name = json.loads(sched_file.read_text()).get("_class_name", "FlowMatchEulerDiscreteScheduler")
            scheduler, schedule = _load_scheduler(path / "scheduler", name, path)
        elif "schedule" in meta:
            schedule = FlowSchedule.from_config(meta["schedule"])
        w_dim = meta.get("w_embedding_dim")
        if w_dim is not None:
            _load_guidance(transformer, int(w_dim), tdir.parent / GUIDANCE_FILE)
        return cls(
            transformer,
            vae,
            text_encoder,
            tokenizer,
            schedule,
            native_fps=meta.get("native_fps", 8),
            resolution=tuple(meta.get("resolution", (8, 32, 32))),
            guidance_convention=meta.get("guidance_convention", "t2v-turbo"),
            scheduler=scheduler,
            fixed_w=meta.get("fixed_w"),
            vae_chunk=meta.get("vae_chunk", 64),
            text_encoder_dir=text_dir,
            position_channels=bool(meta.get("position_channels", False)),
        )


def build_fm_backbone(
    root: str | Path,
    seed: int = 0,
    shift: float = DEFAULT_SHIFT,
    text_encoder_dir: str = "text_encoder",
    position_channels: bool = False,
    **sizes,
) -> MovingDigitsWanBackbone:
    """A fresh (seeded) FM teacher on the world folder `root`'s VAE, text tower (`text_encoder_dir`)
    and tokenizer."""
    from transformers import CLIPTextModel

    from . import models as md_models

    text_encoder = CLIPTextModel.from_pretrained(Path(root) / text_encoder_dir, torch_dtype=torch.float32).eval()
    transformer = build_transformer(
        seed, text_dim=int(text_encoder.config.hidden_size), position_channels=position_channels, **sizes
    )
    return MovingDigitsWanBackbone(
        transformer,
        md_models.load_vae(root),
        text_encoder,
        md_models.load_tokenizer(root),
        FlowSchedule(shift=shift),
        text_encoder_dir=text_encoder_dir,
        position_channels=position_channels,
    )
