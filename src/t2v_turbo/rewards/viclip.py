"""ViCLIP (InternVid, Wang et al. 2023): a CLIP ViT-L/14 extended to video, with the official parameter names.

Official file `ViClip-InternVid-10M-FLT.pth` = {'model': state dict} with keys
`vision_encoder.{conv1, class_embedding, positional_embedding, temporal_positional_embedding,
ln_pre, transformer.resblocks.N.*, ln_post, proj}`, `text_encoder.{token_embedding,
positional_embedding, transformer.resblocks.N.*, ln_final, text_projection}` and `temp`.
Resblocks are OpenAI CLIP blocks (ln_1, nn.MultiheadAttention `attn`, ln_2, mlp.c_fc, mlp.c_proj).

Video tower: Conv3d patch embedding with temporal kernel 1, spatial positions added per frame,
learned temporal positions added per patch, one class token, joint space-time attention over
1 + (H/14)(W/14)T tokens (patch-major order), ln_post on the class token, `@ proj`.
Text tower: CLIP's causal transformer over 32 tokens, EOT pooling, `@ text_projection`.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

FULL = dict(
    image_size=224, patch_size=14, vision_width=1024, vision_layers=24, vision_heads=16, num_frames=8,
    embed_dim=768, context_length=32, vocab_size=49408, text_width=768, text_layers=12, text_heads=12,
    act="quick_gelu",
)  # fmt: skip
TINY = dict(FULL, patch_size=32, vision_width=32, vision_layers=2, vision_heads=4, embed_dim=16)
TINY.update(text_width=32, text_layers=2, text_heads=4)


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x) (OpenAI CLIP's activation)."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


def activation(name: str) -> nn.Module:
    """'quick_gelu' (OpenAI CLIP), 'gelu' (exact) or 'gelu_tanh'."""
    acts = {"quick_gelu": QuickGELU, "gelu": nn.GELU, "gelu_tanh": lambda: nn.GELU(approximate="tanh")}
    if name not in acts:
        raise ValueError(f"unknown activation {name!r}; valid: {sorted(acts)}")
    return acts[name]()


class ResidualAttentionBlock(nn.Module):
    """CLIP pre-norm block: x + attn(ln_1(x)), then x + mlp(ln_2(x)); batch-first (B, L, W)."""

    def __init__(self, width: int, heads: int, act: str = "quick_gelu"):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(
                c_fc=nn.Linear(width, 4 * width), gelu=activation(act), c_proj=nn.Linear(4 * width, width)
            )
        )
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=attn_mask)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """A stack of `ResidualAttentionBlock`s named `resblocks` (official layout)."""

    def __init__(self, width: int, layers: int, heads: int, act: str = "quick_gelu"):
        super().__init__()
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(width, heads, act) for _ in range(layers)])

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        for block in self.resblocks:
            x = block(x, attn_mask)
        return x


class ViCLIPVision(nn.Module):
    """ViCLIP video ViT: (B, C, T, H, W) normalised frames -> (B, embed_dim)."""

    def __init__(self, image_size, patch_size, width, layers, heads, embed_dim, num_frames, act="quick_gelu"):
        super().__init__()
        p = patch_size
        self.conv1 = nn.Conv3d(3, width, (1, p, p), (1, p, p), bias=False)
        self.class_embedding = nn.Parameter(torch.randn(width) * width**-0.5)
        self.positional_embedding = nn.Parameter(torch.randn((image_size // p) ** 2 + 1, width) * width**-0.5)
        self.ln_pre = nn.LayerNorm(width)
        self.temporal_positional_embedding = nn.Parameter(torch.zeros(1, num_frames, width))
        self.transformer = Transformer(width, layers, heads, act)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.randn(width, embed_dim) * width**-0.5)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)  # (B, W, T, g, g)
        b, c, t, gh, gw = x.shape
        x = x.permute(0, 2, 3, 4, 1).reshape(b, t, gh * gw, c) + self.positional_embedding[1:]
        tpe = self.temporal_positional_embedding
        if t == 1:  # the official code averages the temporal embedding for single frames
            tpe = tpe.mean(1, keepdim=True)
        elif t != tpe.shape[1]:
            raise ValueError(f"ViCLIP was built for {tpe.shape[1]} frames (or 1), got {t}")
        x = x + tpe[:, :, None]  # (B, T, N, W): temporal position per frame
        x = x.transpose(1, 2).reshape(b, gh * gw * t, c)  # patch-major "(n t)" token order
        cls = (self.class_embedding + self.positional_embedding[0]).expand(b, 1, c)
        x = self.transformer(self.ln_pre(torch.cat([cls, x], dim=1)))
        return self.ln_post(x[:, 0]) @ self.proj


class CLIPTextTower(nn.Module):
    """OpenAI CLIP text transformer (causal, EOT = argmax pooling), official parameter names."""

    def __init__(self, context_length, vocab_size, width, layers, heads, embed_dim, act="quick_gelu"):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.randn(context_length, width) * 0.01)
        self.transformer = Transformer(width, layers, heads, act)
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.randn(width, embed_dim) * width**-0.5)
        self.register_buffer(
            "attn_mask", torch.full((context_length, context_length), float("-inf")).triu(1), persistent=False
        )

    def forward(self, ids: Tensor) -> Tensor:
        """ids (N, context_length) -> (N, embed_dim)."""
        x = self.token_embedding(ids) + self.positional_embedding
        x = self.ln_final(self.transformer(x, self.attn_mask.to(x.dtype)))
        return x[torch.arange(x.shape[0], device=x.device), ids.argmax(-1)] @ self.text_projection


class ViCLIP(nn.Module):
    """ViCLIP: `vision_encoder`, `text_encoder`, `temp` (official top-level names)."""

    def __init__(self, config: dict | str | None = None):
        super().__init__()
        cfg = dict(TINY if config == "tiny" else FULL)
        if isinstance(config, dict):
            cfg.update(config)
        self.config = cfg
        self.vision_encoder = ViCLIPVision(
            cfg["image_size"], cfg["patch_size"], cfg["vision_width"], cfg["vision_layers"], cfg["vision_heads"],
            cfg["embed_dim"], cfg["num_frames"], cfg["act"],
        )  # fmt: skip
        self.text_encoder = CLIPTextTower(
            cfg["context_length"], cfg["vocab_size"], cfg["text_width"], cfg["text_layers"], cfg["text_heads"],
            cfg["embed_dim"], cfg["act"],
        )  # fmt: skip
        self.temp = nn.Parameter(torch.tensor(1 / 100.0))

    def encode_video(self, video: Tensor) -> Tensor:
        """Normalised frames (B, C, T, 224, 224) -> unit video embeddings (B, E)."""
        return F.normalize(self.vision_encoder(video).float(), dim=-1)

    def encode_text(self, prompts: list[str]) -> Tensor:
        """Prompts -> unit text embeddings (N, E): CLIP BPE, 32-token context, ViCLIP's SimpleTokenizer
        cleaning (ftfy, html unescape, whitespace, lower case), zero padding."""
        from ..tokenizers import clip_tokenize

        ids = clip_tokenize(prompts, self.config["context_length"], clean="open_clip").to(self.temp.device)
        return F.normalize(self.text_encoder(ids).float(), dim=-1)

    def checkpoint_layers(self) -> list[nn.Module]:
        """Blocks to recompute in backward (the video tower's)."""
        return list(self.vision_encoder.transformer.resblocks)
