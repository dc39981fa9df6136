"""ImageReward v1.0 on transformers' BLIP pieces.

Architecture (ImageReward paper, Xu et al. 2023; BLIP, Li et al. 2022): a BLIP ViT-L/16 image
encoder (pre-norm, LayerNorm eps 1e-6, final norm), a BERT-base text encoder whose layers
cross-attend to the image tokens (BLIP "med" BERT: no token-type embeddings, key/value from the
1024-d image width), the [CLS] state -> MLP 768-1024-128-64-16-1, then (r - mean) / std.

Official file `ImageReward.pt` (a plain state dict): `blip.visual_encoder.*` (timm ViT names:
cls_token, pos_embed, patch_embed.proj, blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1,
mlp.fc2}, norm), `blip.text_encoder.*` (names identical to transformers' `BlipTextModel`) and
`mlp.layers.{0,2,4,6,7}`. The ViT keys are renamed one-to-one to `BlipVisionModel`'s.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..weights import checkpoint_forward, load_strict
from .base import RewardModel
from .common import freeze
from .preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, center_crop, normalize, resize_shortest, to_unit

# ImageReward/ImageReward.py: reward normalisation constants of v1.0
REWARD_MEAN = 0.16717362830052426
REWARD_STD = 1.0333394966054072
MAX_TEXT_LENGTH = 35
SPECIAL_TOKENS = ("[DEC]", "[ENC]")  # BLIP init_tokenizer: bos [DEC] = 30522, [ENC] = 30523
FULL = dict(
    vision=dict(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, patch_size=16
    ),
    text=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
)
TINY = dict(
    vision=dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, patch_size=32
    ),
    text=dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=40,
    ),
)
# checkpoint keys the score does not use (BLIP's contrastive projections, a persistent buffer)
IGNORED = (r"\.position_ids$", r"^blip\.(vision_proj|text_proj)\.")
_VIT = [
    (r"^cls_token$", "embeddings.class_embedding"),
    (r"^pos_embed$", "embeddings.position_embedding"),
    (r"^patch_embed\.proj\.", "embeddings.patch_embedding."),
    (r"^blocks\.(\d+)\.norm1\.", r"encoder.layers.\1.layer_norm1."),
    (r"^blocks\.(\d+)\.norm2\.", r"encoder.layers.\1.layer_norm2."),
    (r"^blocks\.(\d+)\.attn\.qkv\.", r"encoder.layers.\1.self_attn.qkv."),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"encoder.layers.\1.self_attn.projection."),
    (r"^blocks\.(\d+)\.mlp\.(fc[12])\.", r"encoder.layers.\1.mlp.\2."),
    (r"^norm\.", "post_layernorm."),
]


def vit_key_to_hf(key: str) -> str:
    """BLIP/timm ViT key -> transformers BlipVisionModel key (KeyError if unknown)."""
    for pat, rep in _VIT:
        new, n = re.subn(pat, rep, key)
        if n:
            return new
    raise KeyError(f"unexpected BLIP ViT key {key!r}")


def convert_official(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """ImageReward.pt keys -> this module's keys (only the visual encoder is renamed)."""
    pre = "blip.visual_encoder."
    return {(pre + vit_key_to_hf(k[len(pre) :]) if k.startswith(pre) else k): v for k, v in sd.items()}


class ImageReward(RewardModel):
    """ImageReward score of (N, C, H, W) images in [-1, 1].

    Args:
        config: None (full size), "tiny", or {"vision": {...}, "text": {...}} overrides of the full config.
        num_frames: frames scored per video.
        cap: None for the normalised reward r; a float c gives T2V-Turbo's capped reward -relu(c - r).
        dtype: tower dtype (float32 or bfloat16).
        gradient_checkpointing: recompute vision and text layers in backward.
    """

    kind = "image"

    def __init__(
        self,
        config: dict | str | None = None,
        num_frames: int = 5,
        cap: float | None = None,
        dtype: torch.dtype = torch.float32,
        gradient_checkpointing: bool = False,
    ):
        super().__init__()
        from transformers import BlipTextConfig, BlipTextModel, BlipVisionConfig, BlipVisionModel

        over = TINY if config == "tiny" else (config or {})
        vkw = dict(FULL["vision"], image_size=224, hidden_act="gelu", layer_norm_eps=1e-6)
        vkw.update(over.get("vision", {}))
        tkw = dict(FULL["text"], vocab_size=30524, max_position_embeddings=512, layer_norm_eps=1e-12)
        tkw.update(hidden_act="gelu", pad_token_id=0, is_decoder=True, encoder_hidden_size=vkw["hidden_size"])
        tkw.update(over.get("text", {}))
        self.blip = nn.Module()
        self.blip.visual_encoder = BlipVisionModel(BlipVisionConfig(**vkw))
        # is_decoder=True only makes transformers build the cross-attention; forward runs bidirectionally
        self.blip.text_encoder = BlipTextModel(BlipTextConfig(**tkw), add_pooling_layer=False)
        self.mlp = nn.Module()
        h = tkw["hidden_size"]
        self.mlp.layers = nn.Sequential(
            nn.Linear(h, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
            nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1),
        )  # fmt: skip
        self.num_frames, self.cap, self.dtype = num_frames, cap, dtype
        self.image_size = vkw["image_size"]
        self.max_length = min(MAX_TEXT_LENGTH, tkw["max_position_embeddings"])
        self._tokens: dict[str, tuple[Tensor, Tensor]] = {}
        freeze(self, dtype)
        if gradient_checkpointing:
            checkpoint_forward(list(self.blip.visual_encoder.encoder.layers))  # each layer, not the ModuleList
            checkpoint_forward(list(self.blip.text_encoder.encoder.layer))

    def load_official(self, sd: dict[str, Tensor], strict: bool = True) -> None:
        """Load an ImageReward.pt state dict (official key names) strictly."""
        load_strict(self, convert_official(sd), what="image-reward", ignore=IGNORED, allow_unexpected=not strict)

    def preprocess(self, images: Tensor) -> Tensor:
        """ImageReward _transform: Resize(224, bicubic) short side, CenterCrop(224), OpenAI CLIP mean/std."""
        x = resize_shortest(to_unit(images.float()), self.image_size)
        return normalize(center_crop(x, self.image_size, rounding="round"), OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)

    def tokens(self, prompts: Sequence[str], device: torch.device) -> tuple[Tensor, Tensor]:
        """BERT ids and mask (N, 35), padded to max_length, cached per prompt."""
        from ..tokenizers import bert_tokenize

        new = [p for p in dict.fromkeys(prompts) if p not in self._tokens]
        if new:
            ids, mask = bert_tokenize(new, self.max_length, SPECIAL_TOKENS)
            self._tokens.update({p: (i, m) for p, i, m in zip(new, ids, mask)})
        ids, mask = zip(*(self._tokens[p] for p in prompts))
        return torch.stack(ids).to(device), torch.stack(mask).to(device)

    def score_images(self, images: Tensor, prompts: Sequence[str]) -> Tensor:
        x = self.preprocess(images).to(self.dtype)
        image_embeds = self.blip.visual_encoder(pixel_values=x).last_hidden_state  # (N, 1 + L, 1024)
        ids, mask = self.tokens(prompts, x.device)
        out = self.blip.text_encoder(
            input_ids=ids, attention_mask=mask, encoder_hidden_states=image_embeds, is_decoder=False
        )
        r = self.mlp.layers(out.last_hidden_state[:, 0]).squeeze(-1).float()
        r = (r - REWARD_MEAN) / REWARD_STD
        # T2V-Turbo's ImageReward loss relu(c - r): the reward is its negative
        return r if self.cap is None else -F.relu(self.cap - r)
