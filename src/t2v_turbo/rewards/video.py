"""Video-text rewards: ViCLIP (8 frames) and InternVideo2-Stage2-1B (4 or 8 frames).

Score = cosine(video embedding, text embedding) of `num_frames` strided frames (selected by the
base class), as T2V-Turbo's reward_fn computes it. Geometry (its ResizeCropMinSize): short side ->
224 (bicubic, long side rounded), a 224 x 224 crop (one random crop per batch in training, as the
authors; "random_per_video" or "center" as options; a seed for reproducible evaluation), ImageNet
mean/std. InternVideo2 scores 8 frames from the released 4-frame file by interpolating its temporal
position embedding as the official loader does. Factories never download.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from ..weights import checkpoint_forward, load_strict, read_state_dict
from .base import RewardModel, register_reward
from .common import TextCache, freeze, require_path
from .preprocess import IMAGENET_MEAN, IMAGENET_STD, VIDEO_CROPS, normalize, short_side_crop_video, to_unit

PUBLISHED = {
    "viclip": "https://huggingface.co/OpenGVLab/ViCLIP (ViClip-InternVid-10M-FLT.pth)",
    "internvideo2": "https://huggingface.co/OpenGVLab/InternVideo2-Stage2_1B-224p-f4 (InternVideo2-stage2_1b-224p-f4.pt)",
}


class VideoTextReward(RewardModel):
    """cosine(video, text) of a dual encoder exposing `encode_video` / `encode_text` (unit vectors).

    Args:
        model: a `ViCLIP` or `InternVideo2` module (frozen here).
        num_frames: frames per clip (ViCLIP: its temporal size; InternVideo2: any, see internvideo2.py).
        crop: "random" (one crop per batch, T2V-Turbo training), "random_per_video" or "center".
        seed: seeds the random crops (reproducible evaluation); None uses the global RNG.
        dtype: tower dtype (float32 or bfloat16); scores are float32.
        gradient_checkpointing: recompute the video tower's blocks in backward.
    """

    kind = "video"

    def __init__(
        self,
        model: nn.Module,
        num_frames: int,
        crop: str = "random",
        seed: int | None = None,
        dtype: torch.dtype = torch.float32,
        gradient_checkpointing: bool = False,
    ):
        super().__init__()
        if crop not in VIDEO_CROPS:
            raise ValueError(f"crop must be one of {list(VIDEO_CROPS)}, got {crop!r}")
        self.model = freeze(model, dtype)
        self.num_frames, self.crop, self.dtype = num_frames, crop, dtype
        self.image_size = model.config["image_size"]
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None
        self.text_features = TextCache(model.encode_text)
        if gradient_checkpointing:
            checkpoint_forward(model.checkpoint_layers())

    def preprocess(self, video: Tensor) -> Tensor:
        """(B, C, T, H, W) in [-1, 1] -> (B, C, T, 224, 224) ImageNet-normalised."""
        x = short_side_crop_video(to_unit(video.float()), self.image_size, self.crop, self.generator)
        return normalize(x, IMAGENET_MEAN, IMAGENET_STD)

    def score(self, video: Tensor, prompts: Sequence[str]) -> Tensor:
        v = self.model.encode_video(self.preprocess(video).to(self.dtype))
        return (v * self.text_features(prompts, v.device)).sum(-1)


def _split(kw: dict) -> tuple[dict, bool]:
    strict = kw.pop("strict", True)
    return kw, strict


@register_reward("viclip")
def viclip(path: str | Path | None = None, config: dict | str | None = None, num_frames: int = 8, **kw):
    """ViCLIP-L/14 InternVid-10M-FLT; checkpoint {'model': state dict}."""
    from .viclip import ViCLIP

    kw, strict = _split(kw)
    path = require_path(
        path, "viclip", "ViClip-InternVid-10M-FLT.pth ({'model': state dict})", PUBLISHED["viclip"]
    )
    model = ViCLIP(config)
    load_strict(model, read_state_dict(path, unwrap=("model",)), what="viclip", allow_unexpected=not strict)
    return VideoTextReward(model, num_frames, **kw)


@register_reward("internvideo2")
def internvideo2(
    path: str | Path | None = None, config: dict | str | None = None, num_frames: int | None = None, **kw
):
    """InternVideo2-Stage2-1B; checkpoint {'module': state dict} (the released f4 file: 4 frames).

    `num_frames` (or `config={'num_frames': N}`) builds the model for N frames; a checkpoint stored
    for another frame count gets its temporal position embedding interpolated on load, as the
    official loader does (the authors' v1 recipe scores 8 frames with the 4-frame file).
    """
    from .internvideo2 import InternVideo2

    kw, strict = _split(kw)
    expected = "InternVideo2-stage2_1b-224p-f4.pt ({'module': state dict})"
    path = require_path(path, "internvideo2", expected, PUBLISHED["internvideo2"])
    if num_frames is not None:
        config = {**InternVideo2.resolve_config(config), "num_frames": int(num_frames)}
    model = InternVideo2(config)
    sd = model.adapt_state_dict(read_state_dict(path, unwrap=("module",)))
    load_strict(model, sd, what="internvideo2", ignore=(model.ignored,), allow_unexpected=not strict)
    return VideoTextReward(model, model.config["num_frames"], **kw)
