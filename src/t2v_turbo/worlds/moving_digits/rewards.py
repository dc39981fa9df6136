"""The world's two reward models, trained contrastively on MovingDigits, behind the reward contract.

- "md-image" (`MDImageReward`), the HPSv2.1 analogue: a tiny transformers `CLIPModel` on 32x32 frames;
  score = cosine(image features, text features), averaged over `num_frames` random frames.
- "md-video" (`MDVideoReward`), the ViCLIP analogue: a small 3-D convolutional clip encoder (sees
  motion through its temporal kernels) with a `CLIPTextModelWithProjection` text tower;
  score = cosine(clip features, text features) on `num_frames` strided frames.

Both take pixels in [-1, 1] directly (they were trained on that range), are differentiable in the
pixels, and keep their text side under no_grad. Training: multi-positive InfoNCE with a learned
temperature, where every caption describing the same content is a positive (image: same color and
digit, since one frame cannot show motion; video: same color, digit and direction).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from ...rewards.base import RewardModel, register_reward
from .dataset import (
    COLORS,
    DIRECTIONS,
    canonical_prompts,
    make_caption,
    parse_caption,
    prompt_videos,
    sample_batch,
    sample_spec,
)
from .models import ASSETS_DIR, build_tokenizer, text_config

try:  # diffusers' mixins give the clip encoder a standard save_pretrained/from_pretrained folder
    from diffusers import ConfigMixin, ModelMixin
    from diffusers.configuration_utils import register_to_config
except ImportError:  # pragma: no cover - diffusers is a core dependency
    raise


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


class _TextCache:
    """Text features per prompt string (the text towers are frozen at reward time)."""

    def __init__(self, max_size: int = 4096):
        self.store: dict[str, Tensor] = {}
        self.max_size = max_size

    def get(self, prompts: Sequence[str], compute) -> Tensor:
        missing = [p for p in dict.fromkeys(prompts) if p not in self.store]
        if missing:
            if len(self.store) + len(missing) > self.max_size:
                self.store.clear()
            with torch.no_grad():
                feats = compute(missing)
            self.store.update({p: f for p, f in zip(missing, feats)})
        return torch.stack([self.store[p] for p in prompts])


class _WorldReward(RewardModel):
    """Shared plumbing: tokenization, cached normalised text features, the contrastive logit scale."""

    logit_scale: Tensor

    def __init__(self, tokenizer):
        super().__init__()
        self.tokenizer = tokenizer
        self._cache = _TextCache()

    def _ids(self, prompts: Sequence[str]) -> Tensor:
        return self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(self.logit_scale.device)

    def text_features(self, prompts: Sequence[str], train: bool = False) -> Tensor:
        """Unit-norm text features (N, D); cached and without grad unless `train`."""
        if train:
            return F.normalize(self._encode_text(self._ids(prompts)), dim=-1)
        return self._cache.get(prompts, lambda ps: F.normalize(self._encode_text(self._ids(ps)), dim=-1)).to(
            self.logit_scale.device
        )

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
        cfg = json.loads((path / "reward_config.json").read_text())
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
        cfg = json.loads((path / "reward_config.json").read_text())
        enc = MDVideoEncoder.from_pretrained(path / "video_encoder", torch_dtype=torch.float32)
        text = CLIPTextModelWithProjection.from_pretrained(path / "text_encoder", torch_dtype=torch.float32)
        tok = CLIPTokenizer.from_pretrained(path / "tokenizer")
        return cls(enc, text, tok, num_frames or cfg["num_frames"], cfg.get("logit_scale", 0.0)).eval()


# ------------------------------------------------------------------------------------------ factories
@register_reward("md-image")
def md_image_reward(path: str | Path | None = None, num_frames: int | None = None, **_) -> MDImageReward:
    """The MovingDigits image-text reward (default: the shipped weights), frozen, eval mode."""
    reward = MDImageReward.from_pretrained(Path(path) if path else ASSETS_DIR / "reward_image", num_frames)
    return reward.requires_grad_(False).eval()


@register_reward("md-video")
def md_video_reward(path: str | Path | None = None, num_frames: int | None = None, **_) -> MDVideoReward:
    """The MovingDigits video-text reward (default: the shipped weights), frozen, eval mode."""
    reward = MDVideoReward.from_pretrained(Path(path) if path else ASSETS_DIR / "reward_video", num_frames)
    return reward.requires_grad_(False).eval()


# ------------------------------------------------------------------------------------------ building
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


def _content_key(caption: str, kind: str) -> tuple:
    color, digit, direction = parse_caption(caption)
    return (color, digit) if kind == "image" else (color, digit, direction)


def _hard_batch(
    rng: np.random.Generator, batch_size: int, paraphrase_prob: float
) -> tuple[Tensor, list[str]]:
    """A batch whose videos share one color and one direction (digits, glyphs, starts vary)."""
    color = list(COLORS)[int(rng.integers(len(COLORS)))]
    direction = list(DIRECTIONS)[int(rng.integers(len(DIRECTIONS)))]
    specs = [sample_spec(rng, "train", color=color, direction=direction) for _ in range(batch_size)]
    captions = [make_caption(s, rng, paraphrase_prob) for s in specs]
    return torch.stack([s.render() for s in specs]), captions


def multi_positive_infonce(a: Tensor, b: Tensor, positives: Tensor, logit_scale: Tensor) -> Tensor:
    """Symmetric InfoNCE where positives[i, j] marks every matching pair (CLIP loss with duplicates).

    loss = -mean_i log sum_{j in P(i)} softmax_j(s a_i . b_j), averaged over both directions.
    """
    logits = logit_scale.clamp(max=math.log(100.0)).exp() * a @ b.T  # (N, N)
    neg_inf = torch.finfo(logits.dtype).min
    l_ab = torch.logsumexp(logits.masked_fill(~positives, neg_inf), 1) - torch.logsumexp(logits, 1)
    l_ba = torch.logsumexp(logits.T.masked_fill(~positives.T, neg_inf), 1) - torch.logsumexp(logits.T, 1)
    return -(l_ab.mean() + l_ba.mean()) / 2


def train_reward(
    reward: MDImageReward | MDVideoReward,
    steps: int = 600,
    batch_size: int = 64,
    lr: float = 2e-3,
    paraphrase_prob: float = 0.5,
    noise_std: float = 0.15,
    hard_fraction: float = 0.5,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Contrastive training of a world reward on training glyphs (in place). Returns a log dict.

    Each step renders `batch_size` videos; the image reward sees one random frame of each. Inputs get
    Gaussian noise of a random std in [0, noise_std] so the reward stays smooth on imperfect videos.
    A `hard_fraction` of the batches share one color and one direction, so that in-batch negatives
    differ by digit: without them, training learns color and direction within a few hundred steps
    and then stalls with digits at chance.
    """
    kind = reward.kind
    rng = np.random.default_rng([seed, 303 if kind == "image" else 404])
    gen = torch.Generator().manual_seed(seed)
    reward.train()
    params = [p for p in reward.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    t0 = time.time()
    bar = tqdm(range(steps), desc=f"reward-{kind}", disable=not progress, mininterval=2.0)
    losses = []
    for step in bar:
        # warm-up then cosine decay
        frac = min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * step / steps))
        for g in opt.param_groups:
            g["lr"] = lr * max(frac, 0.02)
        if rng.random() < hard_fraction:
            videos, captions = _hard_batch(rng, batch_size, paraphrase_prob)
        else:
            videos, captions, _ = sample_batch(rng, batch_size, paraphrase_prob=paraphrase_prob)
        std = torch.rand(batch_size, 1, 1, 1, 1, generator=gen) * noise_std
        videos = videos + std * torch.randn(videos.shape, generator=gen)
        keys = [_content_key(c, kind) for c in captions]
        pos = torch.tensor([[ki == kj for kj in keys] for ki in keys])
        text = reward.text_features(captions, train=True)
        if kind == "image":
            t_idx = torch.randint(0, videos.shape[2], (batch_size,), generator=gen)
            vis = reward.image_features(videos[torch.arange(batch_size), :, t_idx])
        else:
            vis = reward.embed_videos(videos)
        loss = multi_positive_infonce(vis, text, pos, reward.logit_scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    reward.eval()
    reward._cache.store.clear()
    return {"steps": steps, "seconds": time.time() - t0, "final_loss": float(np.mean(losses[-50:]))}


@torch.no_grad()
def reward_accuracy(
    reward: MDImageReward | MDVideoReward, seed: int = 0, split: str = "heldout"
) -> dict[str, float]:
    """Zero-shot classification of one ground-truth video per canonical prompt among the 280 prompts.

    Returns accuracies of the argmax prompt's digit, color, direction and all three (the image reward
    cannot see direction: its direction accuracy is about chance by construction), and the mean
    margin between the true prompt's score and the best wrong prompt's.
    """
    prompts = canonical_prompts()
    videos, _ = prompt_videos(prompts, seed=seed, split=split)
    reward.eval()
    vis = torch.cat([reward.embed_videos(videos[i : i + 70]) for i in range(0, len(prompts), 70)])
    sims = vis @ reward.text_features(prompts).T  # (280 videos, 280 prompts)
    pred = [parse_caption(prompts[j]) for j in sims.argmax(dim=1).tolist()]
    true = [parse_caption(p) for p in prompts]
    acc = {
        name: float(np.mean([p[i] == t[i] for p, t in zip(pred, true)]))
        for i, name in enumerate(("color_acc", "digit_acc", "direction_acc"))
    }
    acc["all_acc"] = float(np.mean([p == t for p, t in zip(pred, true)]))
    acc["color_digit_acc"] = float(np.mean([p[:2] == t[:2] for p, t in zip(pred, true)]))
    diag = sims.diag()
    acc["true_score"] = float(diag.mean())
    acc["chance"] = {"color": 1 / len(COLORS), "digit": 0.1, "direction": 1 / len(DIRECTIONS)}
    return acc
