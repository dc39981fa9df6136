"""The world's two reward models behind the reward contract (trained in `reward_training.py`).

- "md-image" (`MDImageReward`), the HPSv2.1 analogue: a tiny transformers `CLIPModel` on 32x32 frames;
  score = cosine(image features, text features), averaged over `num_frames` random frames.
- "md-video" (`MDVideoReward`), the ViCLIP analogue: a small 3-D convolutional clip encoder (sees
  motion through its temporal kernels) with a `CLIPTextModelWithProjection` text tower;
  score = cosine(clip features, text features) on `num_frames` strided frames.

Both take pixels in [-1, 1] directly (they were trained on that range), are differentiable in the
pixels, and keep their text side under no_grad.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

# diffusers' mixins give the clip encoder a standard save_pretrained / from_pretrained folder
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import Tensor, nn

from ...errors import CheckpointError, ConfigError
from ...rewards.base import RewardModel, register_reward
from ...rewards.common import TextCache
from .models import ASSETS_DIR, build_tokenizer, text_config


class MDVideoEncoder(ModelMixin, ConfigMixin):
    """Clip encoder: 3-D conv stack (3x3x3 kernels, GroupNorm, SiLU) -> global mean and max -> linear.

    Args:
        channels: channels of the four conv layers (strides (1,2,2), (1,2,2), (2,2,2), (2,2,2)).
        embed_dim: output feature size (the joint video-text space).
    """

    @register_to_config
    def __init__(self, channels: tuple[int, ...] = (32, 64, 64, 128), embed_dim: int = 64):
        super().__init__()
        strides = [(1, 2, 2), (1, 2, 2), (2, 2, 2), (2, 2, 2)]
        layers: list[nn.Module] = []
        c_in = 3
        for c, s in zip(channels, strides):
            layers += [nn.Conv3d(c_in, c, 3, stride=s, padding=1), nn.GroupNorm(8, c), nn.SiLU()]
            c_in = c
        self.body = nn.Sequential(*layers)
        self.proj = nn.Linear(2 * c_in, embed_dim)

    def forward(self, video: Tensor) -> Tensor:
        """video (B, 3, T, H, W) in [-1, 1] -> features (B, embed_dim) (not normalised)."""
        h = self.body(video * 0.5 + 0.5)  # [-1, 1] -> [0, 1] (black = 0): (B, C, T', h, w)
        # mean and max over space-time: the glyph is small, a mean alone dilutes it in the background
        return self.proj(torch.cat([h.mean(dim=(2, 3, 4)), h.amax(dim=(2, 3, 4))], dim=1))


class _WorldReward(RewardModel):
    """Shared plumbing: tokenization, cached normalised text features, the contrastive logit scale."""

    logit_scale: Tensor

    def __init__(self, tokenizer):
        super().__init__()
        self.tokenizer = tokenizer
        self._cache = TextCache(self._unit_text_features)

    def _ids(self, prompts: Sequence[str]) -> Tensor:
        return self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(self.logit_scale.device)

    def _unit_text_features(self, prompts: Sequence[str]) -> Tensor:
        return F.normalize(self._encode_text(self._ids(prompts)), dim=-1)

    def text_features(self, prompts: Sequence[str], train: bool = False) -> Tensor:
        """Unit-norm text features (N, D); cached and without grad unless `train`."""
        if train:
            return self._unit_text_features(prompts)
        return self._cache(prompts, self.logit_scale.device)

    def clear_text_cache(self) -> None:
        """Forget cached text features (after the text tower's weights change)."""
        self._cache.clear()

    def _encode_text(self, ids: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class MDImageReward(_WorldReward):
    """HPSv2.1 analogue: tiny CLIPModel on frames; reward = cosine(frame, prompt).

    Args:
        clip: a transformers `CLIPModel` with 32x32 images.
        tokenizer: its tokenizer.
        num_frames: random frames scored per video (T2V-Turbo's code uses 5).
    """

    kind = "image"

    def __init__(self, clip, tokenizer, num_frames: int = 5):
        super().__init__(tokenizer)
        self.clip, self.num_frames = clip, num_frames

    @property
    def logit_scale(self) -> Tensor:  # type: ignore[override]
        return self.clip.logit_scale

    def _encode_text(self, ids: Tensor) -> Tensor:
        return self.clip.get_text_features(input_ids=ids).pooler_output

    def image_features(self, images: Tensor) -> Tensor:
        """images (N, 3, 32, 32) in [-1, 1] -> unit-norm features (N, D)."""
        pixels = images * 0.5 + 0.5  # [-1, 1] -> [0, 1] (black = 0)
        return F.normalize(self.clip.get_image_features(pixel_values=pixels).pooler_output, dim=-1)

    def score_images(self, images: Tensor, prompts: Sequence[str]) -> Tensor:
        """images (N, 3, H, W) in [-1, 1] -> cosine similarity with prompts (N,)."""
        return (self.image_features(images) * self.text_features(prompts)).sum(dim=-1)

    def score(self, video: Tensor, prompts: Sequence[str]) -> Tensor:
        """Mean frame score of videos (B, 3, T, H, W)."""
        return self.forward(video, prompts)

    def embed_videos(self, video: Tensor) -> Tensor:
        """Mean unit-norm frame feature of each video (for zero-shot classification)."""
        b, c, t, h, w = video.shape
        f = self.image_features(video.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w))
        return f.view(b, t, -1).mean(dim=1)

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        self.clip.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        (path / "reward_config.json").write_text(
            json.dumps({"name": "md-image", "num_frames": self.num_frames})
        )

    @classmethod
    def from_pretrained(cls, path: str | Path, num_frames: int | None = None) -> MDImageReward:
        from transformers import CLIPModel, CLIPTokenizer

        path = Path(path)
        cfg = _reward_config(path, "md-image")
        clip = CLIPModel.from_pretrained(path, torch_dtype=torch.float32)
        tok = CLIPTokenizer.from_pretrained(path)
        return cls(clip, tok, num_frames or cfg["num_frames"]).eval()


class MDVideoReward(_WorldReward):
    """ViCLIP analogue: a 3-D conv clip encoder + CLIP text tower; reward = cosine(clip, prompt).

    Args:
        video_encoder: `MDVideoEncoder`.
        text_encoder: a transformers `CLIPTextModelWithProjection`.
        tokenizer: its tokenizer.
        num_frames: strided frames scored per clip (ViCLIP uses 8).
    """

    kind = "video"

    def __init__(
        self,
        video_encoder: MDVideoEncoder,
        text_encoder,
        tokenizer,
        num_frames: int = 8,
        logit_scale: float = math.log(1 / 0.07),
    ):
        super().__init__(tokenizer)
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale)))
        self.video_encoder, self.text_encoder, self.num_frames = video_encoder, text_encoder, num_frames

    def _encode_text(self, ids: Tensor) -> Tensor:
        return self.text_encoder(input_ids=ids).text_embeds

    def embed_videos(self, video: Tensor) -> Tensor:
        """video (B, 3, T, H, W) in [-1, 1] -> unit-norm clip features (B, D)."""
        return F.normalize(self.video_encoder(video), dim=-1)

    def score(self, video: Tensor, prompts: Sequence[str]) -> Tensor:
        """video (B, 3, T, H, W) in [-1, 1] -> cosine similarity with prompts (B,)."""
        return (self.embed_videos(video) * self.text_features(prompts)).sum(dim=-1)

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        self.video_encoder.save_pretrained(path / "video_encoder")
        self.text_encoder.save_pretrained(path / "text_encoder")
        self.tokenizer.save_pretrained(path / "tokenizer")
        cfg = {
            "name": "md-video",
            "num_frames": self.num_frames,
            "logit_scale": float(self.logit_scale.detach()),
        }
        (path / "reward_config.json").write_text(json.dumps(cfg))

    @classmethod
    def from_pretrained(cls, path: str | Path, num_frames: int | None = None) -> MDVideoReward:
        from transformers import CLIPTextModelWithProjection, CLIPTokenizer

        path = Path(path)
        cfg = _reward_config(path, "md-video")
        enc = MDVideoEncoder.from_pretrained(path / "video_encoder", torch_dtype=torch.float32)
        text = CLIPTextModelWithProjection.from_pretrained(path / "text_encoder", torch_dtype=torch.float32)
        tok = CLIPTokenizer.from_pretrained(path / "tokenizer")
        return cls(enc, text, tok, num_frames or cfg["num_frames"], cfg.get("logit_scale", 0.0)).eval()


# ------------------------------------------------------------------------------------------ factories
def _reward_config(path: Path, name: str) -> dict:
    f = path / "reward_config.json"
    if not f.is_file():
        raise CheckpointError(f"{path} is not a {name} reward folder (no reward_config.json)")
    return json.loads(f.read_text())


def _no_other_options(name: str, options: dict) -> None:
    if options:
        raise ConfigError(f"reward {name!r} got unknown option(s) {sorted(options)}; valid: ['num_frames', 'path']")


@register_reward("md-image")
def md_image_reward(path: str | Path | None = None, num_frames: int | None = None, **options) -> MDImageReward:
    """The MovingDigits image-text reward (default: the shipped weights), frozen, eval mode.

    Raises:
        ConfigError: an option other than `path` and `num_frames`.
        CheckpointError: `path` is not a reward folder.
    """
    _no_other_options("md-image", options)
    reward = MDImageReward.from_pretrained(Path(path) if path else ASSETS_DIR / "reward_image", num_frames)
    return reward.requires_grad_(False).eval()


@register_reward("md-video")
def md_video_reward(path: str | Path | None = None, num_frames: int | None = None, **options) -> MDVideoReward:
    """The MovingDigits video-text reward (default: the shipped weights), frozen, eval mode (raises as
    `md_image_reward`)."""
    _no_other_options("md-video", options)
    reward = MDVideoReward.from_pretrained(Path(path) if path else ASSETS_DIR / "reward_video", num_frames)
    return reward.requires_grad_(False).eval()


# ------------------------------------------------------------------------------------------ fresh models
def build_image_reward(tokenizer=None, seed: int = 0, hidden: int = 64) -> MDImageReward:
    """A fresh (seeded) image reward: CLIPModel with 32x32 images, patch 4, 2 layers, width 64."""
    from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig

    tokenizer = tokenizer or build_tokenizer()
    vision = CLIPVisionConfig(
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=4,
        projection_dim=hidden,
    )
    cfg = CLIPConfig(
        text_config=text_config(tokenizer).to_dict(), vision_config=vision.to_dict(), projection_dim=hidden
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        clip = CLIPModel(cfg)
    return MDImageReward(clip, tokenizer)


def build_video_reward(tokenizer=None, seed: int = 0, hidden: int = 64) -> MDVideoReward:
    """A fresh (seeded) video reward: `MDVideoEncoder` + CLIPTextModelWithProjection (width 64, 2 layers)."""
    from transformers import CLIPTextModelWithProjection

    tokenizer = tokenizer or build_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        enc = MDVideoEncoder(embed_dim=hidden)
        text = CLIPTextModelWithProjection(text_config(tokenizer, hidden=hidden))
    return MDVideoReward(enc, text, tokenizer)
