"""InternVideo2-Stage2-1B (Wang et al. 2024) video-text model, official parameter names, no flash-attn.

Official file `InternVideo2-stage2_1b-224p-f4.pt` = {'module': state dict}:
- `vision_encoder.*`: `patch_embed.proj` (Conv3d, tubelet 1, patch 14), `cls_token`, `pos_embed`
  (1, 1 + T (224/14)^2, 1408), 40 `blocks.N.{norm1, attn.{qkv, q_norm, k_norm, proj}, ls1.gamma, norm2,
  mlp.{fc1, fc2}, ls2.gamma}` (RMSNorm eps 1e-6, no qkv bias, q/k RMS-normalised over all heads,
  LayerScale), and `clip_projector` = attention pooling (query = mean token; LayerNorms `norm1_q/k/v`;
  `cross_attn.{q, k, v}` without bias plus `q_bias/k_bias/v_bias`, `proj` to 768).
- `text_encoder.bert.*`: BERT-large (transformers `BertModel` names); the text-only pass runs the
  first 19 layers (fusion layer 19), pools [CLS].
- `vision_proj` (768 -> 512), `text_proj` (1024 -> 512), `temp`.
Unused by the score and skipped on load (IGNORED): the distillation heads (`clip_decoder`,
`final_clip_decoder`, `clip_pos_embed`, `clip_img_pos_embed`), `img_pos_embed`, `itm_head`, the MLM
head `text_encoder.cls`, BERT layers >= 19 (cross-attention layers) and position-id buffers.
The fused flash-attn MLP uses tanh-approximate GELU ("gelu_tanh", default); "gelu" is the unfused one.

Frame count: the released file stores `pos_embed` for 4 frames. Like the official loader
(`interpolate_pos_embed_internvideo2`), a model built for T frames linearly interpolates the stored
frame-major patch positions along time (class token kept; `F.interpolate(mode="linear",
align_corners=False)` over (g*g*C, T0) -> T) when loading (`adapt_state_dict`); a model asked to
encode another number of frames than it was built for interpolates its own embedding the same way.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .viclip import activation

FULL = dict(
    image_size=224, patch_size=14, num_frames=4, embed_dim=1408, depth=40, heads=16, mlp_ratio=48 / 11,
    init_values=0.1, clip_embed_dim=768, attn_pool_heads=16, proj_dim=512, mlp_act="gelu_tanh",
    text=dict(vocab_size=30522, hidden_size=1024, num_hidden_layers=19, num_attention_heads=16,
              intermediate_size=4096, max_position_embeddings=512),
    max_text_length=40,
)  # fmt: skip
TINY = dict(
    FULL, patch_size=32, embed_dim=32, depth=2, heads=4, clip_embed_dim=16, attn_pool_heads=4, proj_dim=8
)
TINY["text"] = dict(
    FULL["text"], hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
)


def interpolate_temporal_pos_embed(pos_embed: Tensor, num_frames: int, grid: int) -> Tensor:
    """(1, 1 + T0 * N, C) class + frame-major patch positions -> (1, 1 + num_frames * N, C).

    The official InternVideo2 loader's temporal step: the N = grid^2 patch positions of each of the
    T0 frames, viewed (1, T0, N, C) -> (N * C, T0), linear interpolation to `num_frames`
    (align_corners=False), back to frame-major order; the class token is unchanged.
    """
    c = pos_embed.shape[-1]
    cls, patches = pos_embed[:, :1], pos_embed[:, 1:]
    n = grid * grid
    t0 = patches.shape[1] // n
    if t0 * n != patches.shape[1]:
        raise ValueError(f"pos_embed holds {patches.shape[1]} patch positions, not a multiple of {n}")
    if t0 == num_frames:
        return pos_embed
    x = patches.reshape(1, t0, n, c).permute(0, 2, 3, 1).reshape(n * c, 1, t0)
    x = F.interpolate(x.float(), size=num_frames, mode="linear", align_corners=False).to(pos_embed.dtype)
    x = x.reshape(1, n, c, num_frames).permute(0, 3, 1, 2).reshape(1, num_frames * n, c)
    return torch.cat([cls, x], dim=1)


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight, computed in float32 (T5/LLaMA RMSNorm)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(dim)), eps

    def forward(self, x: Tensor) -> Tensor:
        h = x.float()
        return self.weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)


class LayerScale(nn.Module):
    """x * gamma, multiplied in float32 (InternVideo2 forces fp32 layer scale)."""

    def __init__(self, dim: int, init_values: float):
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return (x.float() * self.gamma.float()).to(x.dtype)


class Attention(nn.Module):
    """Self-attention with RMS-normalised q and k (over the full width, before splitting heads)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_norm, self.k_norm = RMSNorm(dim), RMSNorm(dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = (t.view(b, n, self.heads, c // self.heads).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(d)) v
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, act: str):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), activation(act), nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm block with LayerScale: x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x)))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, init_values: float, act: str):
        super().__init__()
        self.norm1, self.attn, self.ls1 = RMSNorm(dim), Attention(dim, heads), LayerScale(dim, init_values)
        self.norm2, self.mlp = RMSNorm(dim), Mlp(dim, int(dim * mlp_ratio), act)
        self.ls2 = LayerScale(dim, init_values)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class CrossAttention(nn.Module):
    """Attention of a query token to all tokens; q/k/v Linears without bias plus separate bias vectors."""

    def __init__(self, dim: int, heads: int, out_dim: int):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v = (nn.Linear(dim, dim, bias=False) for _ in range(3))
        self.q_bias, self.k_bias, self.v_bias = (nn.Parameter(torch.zeros(dim)) for _ in range(3))
        self.proj = nn.Linear(dim, out_dim)

    def forward(self, x: Tensor, k: Tensor, v: Tensor) -> Tensor:
        b, n, c = x.shape
        h = self.heads
        q = F.linear(x, self.q.weight, self.q_bias).view(b, n, h, -1).transpose(1, 2)
        k = F.linear(k, self.k.weight, self.k_bias).view(b, k.shape[1], h, -1).transpose(1, 2)
        v = F.linear(v, self.v.weight, self.v_bias).view(b, v.shape[1], h, -1).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class AttentionPoolingBlock(nn.Module):
    """clip_projector: the mean token attends to all tokens -> (B, out_dim)."""

    def __init__(self, dim: int, heads: int, out_dim: int):
        super().__init__()
        self.norm1_q, self.norm1_k, self.norm1_v = (nn.LayerNorm(dim, eps=1e-5) for _ in range(3))
        self.cross_attn = CrossAttention(dim, heads, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        q = self.norm1_q(x.mean(1, keepdim=True))
        return self.cross_attn(q, self.norm1_k(x), self.norm1_v(x)).squeeze(1)


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, dim: int):
        super().__init__()
        self.proj = nn.Conv3d(3, dim, (1, patch_size, patch_size), (1, patch_size, patch_size))

    def forward(self, x: Tensor) -> Tensor:
        x = self.proj(x)  # (B, C, T, g, g)
        return x.flatten(3).permute(0, 2, 3, 1).flatten(1, 2)  # (B, T * g * g, C), frame-major


class InternVideo2Vision(nn.Module):
    """The 1B video ViT up to the attention-pooled 768-d clip embedding."""

    def __init__(self, cfg: dict):
        super().__init__()
        d, g = cfg["embed_dim"], cfg["image_size"] // cfg["patch_size"]
        self.num_frames, self.grid = cfg["num_frames"], g
        self.patch_embed = PatchEmbed(cfg["patch_size"], d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.num_frames * g * g, d))
        self.blocks = nn.ModuleList(
            [
                Block(d, cfg["heads"], cfg["mlp_ratio"], cfg["init_values"], cfg["mlp_act"])
                for _ in range(cfg["depth"])
            ]
        )
        self.clip_projector = AttentionPoolingBlock(d, cfg["attn_pool_heads"], cfg["clip_embed_dim"])

    def forward(self, x: Tensor) -> Tensor:
        pos = self.pos_embed
        if x.shape[2] != self.num_frames:  # the official loader's interpolation, done on the fly
            pos = interpolate_temporal_pos_embed(pos, x.shape[2], self.grid)
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1) + pos
        for block in self.blocks:
            x = block(x)
        return self.clip_projector(x)


class InternVideo2(nn.Module):
    """InternVideo2-Stage2 dual encoder: `vision_encoder`, `text_encoder.bert`, `vision_proj`, `text_proj`, `temp`."""

    def __init__(self, config: dict | str | None = None):
        super().__init__()
        from transformers import BertConfig, BertModel

        self.config = cfg = self.resolve_config(config)
        self.vision_encoder = InternVideo2Vision(cfg)
        self.text_encoder = nn.Module()
        tcfg = BertConfig(**cfg["text"], hidden_act="gelu", layer_norm_eps=1e-12, type_vocab_size=2)
        self.text_encoder.bert = BertModel(tcfg, add_pooling_layer=False)
        self.vision_proj = nn.Linear(cfg["clip_embed_dim"], cfg["proj_dim"])
        self.text_proj = nn.Linear(cfg["text"]["hidden_size"], cfg["proj_dim"])
        self.temp = nn.Parameter(torch.tensor(1 / 100.0))

    @staticmethod
    def resolve_config(config: dict | str | None = None) -> dict:
        """None (full size), "tiny", or a dict of overrides of the full config (`text` merged)."""
        cfg = dict(TINY if config == "tiny" else FULL)
        if isinstance(config, dict):
            cfg.update({k: v for k, v in config.items() if k != "text"})
            cfg["text"] = dict(cfg["text"], **config.get("text", {}))
        return cfg

    def adapt_state_dict(self, sd: dict[str, Tensor]) -> dict[str, Tensor]:
        """Interpolate a stored `vision_encoder.pos_embed` made for another frame count to this model's
        (the official loader's temporal interpolation); other keys are returned unchanged."""
        key = "vision_encoder.pos_embed"
        enc = self.vision_encoder
        if key in sd and sd[key].shape != enc.pos_embed.shape and sd[key].shape[-1] == enc.pos_embed.shape[-1]:
            sd = dict(sd)
            sd[key] = interpolate_temporal_pos_embed(sd[key], enc.num_frames, enc.grid)
        return sd

    def ignored(self, key: str) -> bool:
        """Checkpoint keys the score does not use (see the module docstring)."""
        if re.search(r"(^vision_encoder\.(clip_decoder|final_clip_decoder|clip_pos_embed|clip_img_pos_embed"
                     r"|img_pos_embed)|^itm_head\.|^text_encoder\.cls\.|\.position_ids$)", key):  # fmt: skip
            return True
        m = re.match(r"^text_encoder\.bert\.encoder\.layer\.(\d+)\.", key)
        return m is not None and int(m.group(1)) >= self.config["text"]["num_hidden_layers"]

    def encode_video(self, video: Tensor) -> Tensor:
        """Normalised frames (B, C, T, 224, 224) -> unit video embeddings (B, proj_dim)."""
        return F.normalize(self.vision_proj(self.vision_encoder(video)).float(), dim=-1)

    def encode_text(self, prompts: list[str]) -> Tensor:
        """Prompts -> unit text embeddings (N, proj_dim): BERT uncased, 40 tokens, [CLS] of the text layers.

        The official tokenizer (InternVideo2's own BertTokenizer) writes `[CLS] text` with no [SEP]:
        max length 40 keeps 39 text tokens.
        """
        from ..tokenizers import bert_tokenize

        ids, mask = bert_tokenize(prompts, self.config["max_text_length"], sep=False)
        dev = self.temp.device
        h = self.text_encoder.bert(input_ids=ids.to(dev), attention_mask=mask.to(dev)).last_hidden_state
        return F.normalize(self.text_proj(h[:, 0]).float(), dim=-1)

    def checkpoint_layers(self) -> list[nn.Module]:
        """Blocks to recompute in backward (the video tower's)."""
        return list(self.vision_encoder.blocks)
