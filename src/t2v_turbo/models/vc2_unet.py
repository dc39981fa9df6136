"""The VideoCrafter2 (LVDM) 3D UNet, written compactly with the official parameter names.

Every submodule is registered under the name and in the order of the official `UNetModel`, so
`state_dict()` equals the `model.diffusion_model.*` block of VideoCrafter2's `model.ckpt` (minus the
prefix) key for key, including the original spelling `temopral_conv`. The LoRA release lists are
ordered by `named_modules()`, so that order is part of the contract too.

Layout (B videos of T frames; spatial layers see frames as a batch of B*T images):
- timestep sinusoid (cos half first) -> `time_embed` MLP; fps sinusoid -> `fps_embedding` MLP, added.
- students: `time_cond_proj(w_emb)` is added to the timestep sinusoid *before* `time_embed`
  (T2V-Turbo); v2 also has `motion_cond_proj` and `combine_proj`.
- `input_blocks`: conv_in, then per level `num_res_blocks` x [ResBlock (+ temporal conv), and at
  attention levels SpatialTransformer + TemporalTransformer], then a Downsample (except the last level).
- `init_attn`: an extra temporal transformer (Conv1d projections) run right after conv_in.
- `middle_block`: ResBlock, SpatialTransformer, TemporalTransformer, ResBlock.
- `output_blocks`: mirror of the input blocks with skip concatenation and Upsample; `out`: norm, SiLU, conv.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


@dataclass
class VC2UNetConfig:
    """Hyper-parameters of the LVDM UNet (defaults: VideoCrafter2, `inference_t2v_512_v2.0.yaml`).

    Attributes:
        time_cond_proj_dim: guidance-embedding size of a T2V-Turbo student (None for the teacher).
        motion_cond_proj_dim: motion-embedding size of a T2V-Turbo-v2 student (None otherwise).
        num_groups: GroupNorm groups (32 in LVDM; smaller only for tiny test models).
        temporal_conv_dropout: dropout inside the temporal conv blocks (0.1 in LVDM, active in train mode).
    """

    in_channels: int = 4
    out_channels: int = 4
    model_channels: int = 320
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (4, 2, 1)
    num_head_channels: int = 64
    transformer_depth: int = 1
    context_dim: int = 1024
    init_attn_heads: int = 8
    fps_cond: bool = True
    num_groups: int = 32
    dropout: float = 0.0
    temporal_conv_dropout: float = 0.1
    time_cond_proj_dim: int | None = None
    motion_cond_proj_dim: int | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channel_mult"] = list(self.channel_mult)
        d["attention_resolutions"] = list(self.attention_resolutions)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> VC2UNetConfig:
        d = dict(d)
        for k in ("channel_mult", "attention_resolutions"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """LVDM sinusoid: f_i = exp(-ln(max_period) i / half), emb = [cos(t f), sin(t f)] (cos half first).

    Args:
        t: (B,) timesteps (or fps values). Returns (B, dim) float32.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 (LVDM's `normalization()`), cast back to the input dtype."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.float()).to(x.dtype)


# ----------------------------------------------------------------------------- attention
class CrossAttention(nn.Module):
    """Multi-head attention; self-attention when `context` is None. Bias only on the output layer."""

    def __init__(
        self, query_dim: int, context_dim: int | None, heads: int, dim_head: int, dropout: float = 0.0
    ):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.dim_head = heads, dim_head
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim or query_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim or query_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim), nn.Dropout(dropout))

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        context = x if context is None else context
        b, n, _ = x.shape
        # (b, n, h*d) -> (b, h, n, d)
        q, k, v = (
            y.view(b, -1, self.heads, self.dim_head).transpose(1, 2)
            for y in (self.to_q(x), self.to_k(context), self.to_v(context))
        )
        # softmax(q k^T / sqrt(d)) v
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(b, n, self.heads * self.dim_head))


class GEGLU(nn.Module):
    """proj to 2*inner, then value * gelu(gate)."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: Tensor) -> Tensor:
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, dim * mult), nn.Dropout(dropout), nn.Linear(dim * mult, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    """Pre-norm block: self-attention, cross-attention (self-attention when context_dim is None), GEGLU FF.

    Registration order (attn1, ff, attn2, norm1..3) follows the official state_dict.
    """

    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int | None, dropout: float = 0.0):
        super().__init__()
        self.attn1 = CrossAttention(dim, None, heads, dim_head, dropout)
        self.ff = FeedForward(dim, dropout=dropout)
        self.attn2 = CrossAttention(dim, context_dim, heads, dim_head, dropout)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(nn.Module):
    """Per-frame transformer over the h*w tokens, cross-attending to the text (linear projections)."""

    def __init__(self, channels: int, heads: int, dim_head: int, depth: int, context_dim: int, groups: int):
        super().__init__()
        inner = heads * dim_head
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(inner, heads, dim_head, context_dim) for _ in range(depth)]
        )
        self.proj_out = nn.Linear(inner, channels)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        bt, c, h, w = x.shape
        y = self.norm(x).flatten(2).transpose(1, 2)  # (BT, h*w, c)
        y = self.proj_in(y)
        for block in self.transformer_blocks:
            y = block(y, context)
        y = self.proj_out(y)
        return y.transpose(1, 2).reshape(bt, c, h, w) + x


class TemporalTransformer(nn.Module):
    """Self-attention along time at every pixel; the GroupNorm spans the whole clip (B, c, T, h, w).

    `use_linear=False` (only `init_attn`) gives Conv1d(k=1) projections, as in the official model.
    """

    def __init__(
        self, channels: int, heads: int, dim_head: int, depth: int, groups: int, use_linear: bool = True
    ):
        super().__init__()
        inner = heads * dim_head
        self.use_linear = use_linear
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner) if use_linear else nn.Conv1d(channels, inner, 1)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(inner, heads, dim_head, None) for _ in range(depth)]
        )
        self.proj_out = nn.Linear(inner, channels) if use_linear else nn.Conv1d(inner, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, t, h, w = x.shape
        y = self.norm(x).permute(0, 3, 4, 1, 2).reshape(b * h * w, c, t)  # (B*h*w, c, T)
        if self.use_linear:
            y = self.proj_in(y.transpose(1, 2))  # (B*h*w, T, inner)
        else:
            y = self.proj_in(y).transpose(1, 2)
        for block in self.transformer_blocks:
            y = block(y)
        if self.use_linear:
            y = self.proj_out(y).transpose(1, 2)  # (B*h*w, c, T)
        else:
            y = self.proj_out(y.transpose(1, 2))
        return y.reshape(b, h, w, c, t).permute(0, 3, 4, 1, 2) + x


# ----------------------------------------------------------------------------- convolutional blocks
class TemporalConvBlock(nn.Module):
    """Four residual (3, 1, 1) Conv3d layers along time; the last one starts at zero (identity block)."""

    def __init__(self, channels: int, groups: int, dropout: float = 0.1):
        super().__init__()

        def conv(with_dropout: bool) -> nn.Sequential:
            layers = [nn.GroupNorm(groups, channels), nn.SiLU()]
            if with_dropout:
                layers.append(nn.Dropout(dropout))
            return nn.Sequential(*layers, nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0)))

        self.conv1, self.conv2, self.conv3, self.conv4 = conv(False), conv(True), conv(True), conv(True)
        nn.init.zeros_(self.conv4[-1].weight)
        nn.init.zeros_(self.conv4[-1].bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv4(self.conv3(self.conv2(self.conv1(x))))


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv residual block with an additive timestep embedding, then a temporal conv block."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int, cfg: VC2UNetConfig):
        super().__init__()
        g = cfg.num_groups
        self.in_layers = nn.Sequential(
            GroupNorm32(g, channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(
            GroupNorm32(g, out_channels),
            nn.SiLU(),
            nn.Dropout(cfg.dropout),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        nn.init.zeros_(self.out_layers[-1].weight)
        nn.init.zeros_(self.out_layers[-1].bias)
        self.skip_connection = (
            nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)
        )
        self.temopral_conv = TemporalConvBlock(out_channels, g, cfg.temporal_conv_dropout)

    def forward(self, x: Tensor, emb: Tensor, batch: int) -> Tensor:
        h = self.in_layers(x)
        h = h + self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        h = self.skip_connection(x) + self.out_layers(h)  # (B*T, c, h, w)
        bt, c, hh, ww = h.shape
        h = h.view(batch, bt // batch, c, hh, ww).transpose(1, 2)  # (B, c, T, h, w)
        h = self.temopral_conv(h)
        return h.transpose(1, 2).reshape(bt, c, hh, ww)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class TimestepEmbedSequential(nn.Sequential):
    """Runs its layers on (B*T, c, h, w) features, routing emb / context / the 5D view by layer type."""

    def forward(self, x: Tensor, emb: Tensor, context: Tensor, batch: int) -> Tensor:  # type: ignore[override]
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb, batch)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context)
            elif isinstance(layer, TemporalTransformer):
                bt, c, h, w = x.shape
                x5 = x.view(batch, bt // batch, c, h, w).transpose(1, 2)  # (B, c, T, h, w)
                x = layer(x5).transpose(1, 2).reshape(bt, c, h, w)
            else:
                x = layer(x)
        return x


# ----------------------------------------------------------------------------- the UNet
class VC2UNet(nn.Module):
    """VideoCrafter2's `UNetModel` (optionally a T2V-Turbo student) with the official parameter names.

    Args:
        config: `VC2UNetConfig`.
    """

    def __init__(self, config: VC2UNetConfig | None = None):
        super().__init__()
        cfg = self.config = config or VC2UNetConfig()
        mc, emb_dim, g = cfg.model_channels, cfg.model_channels * 4, cfg.num_groups
        self.gradient_checkpointing = False

        def spatial_temporal(ch: int) -> list[nn.Module]:
            heads = ch // cfg.num_head_channels
            d = cfg.num_head_channels
            return [
                SpatialTransformer(ch, heads, d, cfg.transformer_depth, cfg.context_dim, g),
                TemporalTransformer(ch, heads, d, cfg.transformer_depth, g),
            ]

        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        if cfg.fps_cond:
            self.fps_embedding = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        # T2V-Turbo student: w embedding -> added to the timestep sinusoid (registered after fps_embedding)
        self.time_cond_proj = (
            nn.Linear(cfg.time_cond_proj_dim, mc, bias=False) if cfg.time_cond_proj_dim else None
        )
        if cfg.motion_cond_proj_dim:
            if not cfg.time_cond_proj_dim:
                raise ValueError("motion_cond_proj_dim needs time_cond_proj_dim (T2V-Turbo-v2 student)")
            self.motion_cond_proj = nn.Linear(cfg.motion_cond_proj_dim, mc, bias=False)
            self.combine_proj = nn.Linear(2 * mc, mc, bias=False)
        else:
            self.motion_cond_proj = self.combine_proj = None

        # ---- encoder
        blocks: list[nn.Module] = [TimestepEmbedSequential(nn.Conv2d(cfg.in_channels, mc, 3, padding=1))]
        skip_channels, ch, ds = [mc], mc, 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers = [ResBlock(ch, emb_dim, mult * mc, cfg)]
                ch = mult * mc
                if ds in cfg.attention_resolutions:
                    layers += spatial_temporal(ch)
                blocks.append(TimestepEmbedSequential(*layers))
                skip_channels.append(ch)
            if level != len(cfg.channel_mult) - 1:
                blocks.append(TimestepEmbedSequential(Downsample(ch)))
                skip_channels.append(ch)
                ds *= 2
        self.input_blocks = nn.ModuleList(blocks)
        # the extra initial temporal attention (Conv1d projections, fixed head count)
        self.init_attn = TimestepEmbedSequential(
            TemporalTransformer(
                mc, cfg.init_attn_heads, cfg.num_head_channels, cfg.transformer_depth, g, use_linear=False
            )
        )
        self.middle_block = TimestepEmbedSequential(
            ResBlock(ch, emb_dim, ch, cfg), *spatial_temporal(ch), ResBlock(ch, emb_dim, ch, cfg)
        )
        # ---- decoder
        blocks = []
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                layers = [ResBlock(ch + skip_channels.pop(), emb_dim, mult * mc, cfg)]
                ch = mult * mc
                if ds in cfg.attention_resolutions:
                    layers += spatial_temporal(ch)
                if level and i == cfg.num_res_blocks:
                    layers.append(Upsample(ch))
                    ds //= 2
                blocks.append(TimestepEmbedSequential(*layers))
        self.output_blocks = nn.ModuleList(blocks)
        self.out = nn.Sequential(GroupNorm32(g, ch), nn.SiLU(), nn.Conv2d(mc, cfg.out_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    # ------------------------------------------------------------------ helpers
    def _block(self, block: nn.Module, h: Tensor, emb: Tensor, context: Tensor, batch: int) -> Tensor:
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(block, h, emb, context, batch, use_reentrant=False)
        return block(h, emb, context, batch)

    def forward(
        self,
        x: Tensor,
        timesteps: Tensor,
        context: Tensor,
        fps: Tensor | float = 16,
        timestep_cond: Tensor | None = None,
        motion_cond: Tensor | None = None,
    ) -> Tensor:
        """Predict the UNet output for video latents.

        Args:
            x: (B, c, T, h, w) latents.
            timesteps: (B,) integer timesteps.
            context: (B, L, context_dim) text embeddings.
            fps: frame rate conditioning (scalar or (B,)).
            timestep_cond: (B, time_cond_proj_dim) guidance embedding (students only).
            motion_cond: (B, motion_cond_proj_dim) motion-guidance embedding (v2 students only).
        Returns:
            (B, out_channels, T, h, w).
        """
        cfg = self.config
        b, _, t, hh, ww = x.shape
        dtype = self.time_embed[0].weight.dtype
        timesteps = torch.as_tensor(timesteps, device=x.device)
        t_emb = timestep_embedding(timesteps.reshape(-1).expand(b), cfg.model_channels).to(dtype)  # (B, mc)
        if timestep_cond is not None:
            if self.time_cond_proj is None:
                raise ValueError("this UNet has no time_cond_proj (a teacher); pass timestep_cond=None")
            cond = self.time_cond_proj(timestep_cond.to(dtype))
            if motion_cond is not None:
                if self.motion_cond_proj is None:
                    raise ValueError("this UNet has no motion_cond_proj; pass motion_cond=None")
                # T2V-Turbo-v2: combine_proj([time_cond_proj(w), motion_cond_proj(m)])
                cond = self.combine_proj(
                    torch.cat([cond, self.motion_cond_proj(motion_cond.to(dtype))], dim=1)
                )
            # T2V-Turbo: the w projection is added to the timestep sinusoid before the MLP
            t_emb = t_emb + cond
        emb = self.time_embed(t_emb)  # (B, 4 mc)
        if cfg.fps_cond:
            fps = torch.as_tensor(fps, device=x.device).reshape(-1).expand(b)
            emb = emb + self.fps_embedding(timestep_embedding(fps, cfg.model_channels).to(dtype))
        # frames become batch entries for the 2D layers: (B*T, ...)
        emb = emb.repeat_interleave(t, dim=0)
        context = context.repeat_interleave(t, dim=0)
        h = x.transpose(1, 2).reshape(b * t, -1, hh, ww).to(dtype)
        skips = []
        for i, block in enumerate(self.input_blocks):
            h = self._block(block, h, emb, context, b)
            if i == 0:
                h = self._block(self.init_attn, h, emb, context, b)
            skips.append(h)
        h = self._block(self.middle_block, h, emb, context, b)
        for block in self.output_blocks:
            h = self._block(block, torch.cat([h, skips.pop()], dim=1), emb, context, b)
        y = self.out(h)  # (B*T, out, h, w)
        return y.view(b, t, -1, hh, ww).transpose(1, 2).to(x.dtype)
