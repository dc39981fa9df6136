"""Differentiable image/video preprocessing of the reward models (torch only, no PIL).

Images are (N, C, H, W) floats. The reference pipelines resize with PIL bicubic; torch's
`interpolate(mode="bicubic", antialias=True)` uses PIL's kernel (a = -0.5) with its antialiasing
support scaling, so `antialias=True` is the default here. Values are not clamped after the resize
(PIL would round to uint8), which keeps gradients everywhere.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# OpenAI CLIP (clip/clip.py _transform; open_clip OPENAI_DATASET_MEAN/STD)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# ImageNet (torchvision), used by ViCLIP and InternVideo2
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_unit(x: Tensor) -> Tensor:
    """[-1, 1] -> [0, 1], clamped (T2V-Turbo's reward input: (x / 2 + 0.5).clamp(0, 1))."""
    return (x / 2 + 0.5).clamp(0, 1)


def normalize(x: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """(x - mean) / std over the channel axis 1 (torchvision Normalize)."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(shape)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(shape)
    return (x - m) / s


def resize(x: Tensor, size: tuple[int, int], mode: str = "bicubic", antialias: bool = True) -> Tensor:
    """Resize (N, C, H, W) to `size` = (h, w); identity when already that size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=antialias)


def squash(x: Tensor, size: int, antialias: bool = True) -> Tensor:
    """Resize to size x size ignoring the aspect ratio."""
    return resize(x, (size, size), antialias=antialias)


def longest_side_size(h: int, w: int, size: int) -> tuple[int, int]:
    """open_clip ResizeMaxSize: scale = size / max(h, w); new = round(dim * scale)."""
    scale = size / max(h, w)
    return round(h * scale), round(w * scale)


def resize_longest_and_pad(x: Tensor, size: int = 224, fill: float = 0.0, antialias: bool = True) -> Tensor:
    """HPSv2: longest side -> `size` (bicubic), then pad to size x size, centred, with `fill`.

    Padding splits as (d // 2 before, d - d // 2 after) on each axis; `fill` is in the [0, 1] pixel
    space (0 = black, as open_clip's PIL pad), i.e. this runs before `normalize`.
    """
    h, w = x.shape[-2:]
    nh, nw = longest_side_size(h, w, size)
    x = resize(x, (nh, nw), antialias=antialias)
    ph, pw = size - nh, size - nw
    return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), value=fill)


def shortest_side_size(h: int, w: int, size: int, rounding: str = "int") -> tuple[int, int]:
    """Output (h, w) of a short-side resize to `size`.

    rounding "int": torchvision Resize(int) / CLIPImageProcessor (ImageReward, PickScore's processor):
        short = size, long = int(size * long / short) (truncated).
    rounding "round": T2V-Turbo's ResizeCropMinSize (its ViCLIP / InternVideo2 input): scale =
        size / short, every side = round(side * scale). E.g. 232 x 246 -> (224, 238) where "int" gives 237.
    """
    if rounding == "round":
        scale = size / min(h, w)
        return round(h * scale), round(w * scale)
    if rounding != "int":
        raise ValueError(f"rounding must be 'int' or 'round', got {rounding!r}")
    if h <= w:
        return size, int(size * w / h)
    return int(size * h / w), size


def resize_shortest(x: Tensor, size: int, antialias: bool = True, rounding: str = "int") -> Tensor:
    """Resize so that the short side is `size`, keeping the aspect ratio (see `shortest_side_size`)."""
    return resize(x, shortest_side_size(*x.shape[-2:], size, rounding), antialias=antialias)


def crop_offsets(h: int, w: int, size: int, rounding: str = "round") -> tuple[int, int]:
    """Centre-crop offsets: torchvision rounds (h - size) / 2 ("round"); transformers floors ("floor")."""
    if rounding == "round":
        return int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    if rounding == "floor":
        return (h - size) // 2, (w - size) // 2
    raise ValueError(f"rounding must be 'round' or 'floor', got {rounding!r}")


def center_crop(x: Tensor, size: int, rounding: str = "round") -> Tensor:
    """Centre crop the last two axes to size x size."""
    top, left = crop_offsets(*x.shape[-2:], size, rounding)
    return x[..., top : top + size, left : left + size]


def random_crop(x: Tensor, size: int, generator: torch.Generator | None = None) -> Tensor:
    """One uniformly random size x size crop of the last two axes (torchvision RandomCrop; shared by all leading dims)."""
    h, w = x.shape[-2:]
    top = int(torch.randint(0, h - size + 1, (1,), generator=generator))
    left = int(torch.randint(0, w - size + 1, (1,), generator=generator))
    return x[..., top : top + size, left : left + size]


VIDEO_CROPS = ("random", "random_per_video", "center")


def short_side_crop_video(
    video: Tensor,
    size: int = 224,
    crop: str = "center",
    generator: torch.Generator | None = None,
    rounding: str = "round",
) -> Tensor:
    """ViCLIP / InternVideo2 geometry as T2V-Turbo feeds them (reward_fn.ResizeCropMinSize):
    (B, C, T, H, W) -> short side `size` (long side rounded, see `shortest_side_size`), then a
    size x size crop.

    crop: "random" = one crop for the whole batch (the authors apply RandomCrop once to the stacked
    (B*T) frames), "random_per_video" = one crop per video (the same for all its frames), or "center"
    (torchvision CenterCrop). Unlike the authors' module, a frame whose short side already is `size`
    is still cropped (theirs skips resize and crop at scale 1, which only works for square input).
    """
    b, c, t, h, w = video.shape
    nh, nw = shortest_side_size(h, w, size, rounding)
    frames = video.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
    frames = resize(frames, (nh, nw)).view(b, t, c, nh, nw)
    if crop == "center":
        out = center_crop(frames, size)
    elif crop == "random":
        out = random_crop(frames, size, generator)
    elif crop == "random_per_video":
        out = torch.stack([random_crop(v, size, generator) for v in frames])
    else:
        raise ValueError(f"crop must be one of {list(VIDEO_CROPS)}, got {crop!r}")
    return out.permute(0, 2, 1, 3, 4)
