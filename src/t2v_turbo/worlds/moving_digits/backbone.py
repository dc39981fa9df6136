"""The MovingDigits backbone: the generic diffusers video adapter plus the world's two input options.

- `position_channels`: fixed Fourier features of every latent element's (frame, row, column),
  concatenated to the latents before the UNet (`video_position_channels`); the UNet's `in_channels`
  is then latent channels + `NUM_POSITION_CHANNELS` and its output keeps the latent channels.
- `frame_tokens` (`UNetMotionModel` only): a fixed frame-index token appended to each frame's text
  conditioning (`frame_position_tokens`), so the per-frame spatial cross-attention sees the frame.

Both are recorded in `t2v_turbo.json`, kept by students, and off by default. Saved folders record
the backbone family `FAMILY` ("moving-digits"), whose loader the world's plugin registers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ...errors import ConfigError
from ...models.diffusers_video import DiffusersVideoBackbone

FAMILY = "moving-digits"
POSITION_FREQS = (1, 2)
NUM_POSITION_CHANNELS = 6 * len(POSITION_FREQS)  # sin + cos of frame, row, column per frequency


def frame_position_tokens(num_frames: int, dim: int, norm: float | None = None) -> Tensor:
    """Fixed sinusoidal frame-index tokens, (T, dim), each of L2 norm `norm` (default sqrt(dim)).

    Row t is [sin(t f_k), cos(t f_k)] over frequencies f_k = 10^(-2k/dim), k < dim/2 (from 1 down
    to 0.1 rad/frame), rescaled to norm `norm`; the default matches the norm of tokens after CLIP's
    final LayerNorm.
    """
    if dim % 2:
        raise ConfigError(f"frame tokens need an even conditioning width, got {dim}")
    pos = torch.arange(num_frames, dtype=torch.float64)[:, None]
    freq = 10.0 ** (-2.0 * torch.arange(dim // 2, dtype=torch.float64) / dim)
    ang = pos * freq[None]
    tok = torch.cat([ang.sin(), ang.cos()], dim=1)  # each row has norm sqrt(dim / 2)
    scale = (norm if norm is not None else dim**0.5) / (dim / 2) ** 0.5
    return (tok * scale).float()


def video_position_channels(
    num_frames: int, height: int, width: int, freqs: Sequence[int] = POSITION_FREQS
) -> Tensor:
    """Fixed Fourier features of each latent element's (frame, row, column), (6 * len(freqs), T, h, w).

    Each coordinate is normalised to [-1, 1] over the clip (c = linspace(-1, 1, n)) and encoded as
    sin(pi f c / 2), cos(pi f c / 2) for every f in `freqs`; channel order: frame, row, column, and
    within each the (sin, cos) pairs by frequency.
    """
    grids = torch.meshgrid(
        torch.linspace(-1, 1, num_frames, dtype=torch.float64),
        torch.linspace(-1, 1, height, dtype=torch.float64),
        torch.linspace(-1, 1, width, dtype=torch.float64),
        indexing="ij",
    )
    chans = []
    for c in grids:
        for f in freqs:
            chans += [torch.sin(math.pi * f * c / 2), torch.cos(math.pi * f * c / 2)]
    return torch.stack(chans).float()


class MovingDigitsBackbone(DiffusersVideoBackbone):
    """`DiffusersVideoBackbone` with the world's optional position channels and frame tokens.

    Args:
        unet, vae, text_encoder, tokenizer, schedule, **kw: as `DiffusersVideoBackbone` (a recorded
            `family` is replaced by "moving-digits").
        frame_tokens: append `frame_position_tokens` to each frame's text conditioning
            (needs a `UNetMotionModel`, which conditions its spatial layers per frame).
        position_channels: concatenate `video_position_channels` to the latents; needs a UNet with
            `in_channels == out_channels + NUM_POSITION_CHANNELS`.

    Raises:
        ConfigError: an option the UNet cannot take.
    """

    metadata_options = ("frame_tokens", "position_channels")

    def __init__(
        self,
        unet: nn.Module,
        vae: nn.Module,
        text_encoder: nn.Module,
        tokenizer,
        schedule=None,
        *,
        frame_tokens: bool = False,
        position_channels: bool = False,
        **kw,
    ):
        kw["family"] = FAMILY
        super().__init__(unet, vae, text_encoder, tokenizer, schedule, **kw)
        if frame_tokens and type(unet).__name__ != "UNetMotionModel":
            raise ConfigError("frame_tokens needs a UNetMotionModel (per-frame text conditioning)")
        if position_channels:
            c_in, c_out = unet.config.in_channels, unet.config.out_channels
            if c_in != c_out + NUM_POSITION_CHANNELS:
                raise ConfigError(
                    f"position_channels needs a UNet with in_channels = out_channels + {NUM_POSITION_CHANNELS}, "
                    f"got in_channels={c_in}, out_channels={c_out}"
                )
        if frame_tokens and getattr(unet.config, "addition_embed_type", None) == "text_time":
            raise ConfigError("frame_tokens and a pooled-text UNet (addition_embed_type='text_time') do not combine")
        self.frame_tokens = bool(frame_tokens)
        self.position_channels = bool(position_channels)

    def unet_input(self, z_t: Tensor) -> Tensor:
        """(B, c, T, h, w) latents -> (B, c + 12, T, h, w) with the position channels (if enabled)."""
        if not self.position_channels:
            return z_t
        pos = video_position_channels(*z_t.shape[2:]).to(z_t.device, z_t.dtype)
        return torch.cat([z_t, pos.expand(z_t.shape[0], -1, -1, -1, -1)], dim=1)

    def model_output(self, z_t: Tensor, t: Tensor, cond: Tensor, w_emb: Tensor | None = None) -> Tensor:
        b, f = z_t.shape[0], z_t.shape[2]
        if self.frame_tokens and cond.shape[0] == b:
            # (B, L, D) -> (B * T, L + 1, D): per-frame text (frame-major within each video) + frame token
            cond = cond.repeat_interleave(f, dim=0)
            tok = frame_position_tokens(f, cond.shape[-1]).to(cond.device, cond.dtype)
            cond = torch.cat([cond, tok.repeat(b, 1)[:, None]], dim=1)
        return super().model_output(z_t, t, cond, w_emb)

