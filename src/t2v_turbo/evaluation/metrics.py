"""Per-video quality metrics as pure functions over video tensors.

Every function takes videos (B, C, T, H, W) in [-1, 1] (the project's convention) and returns one
number per video, (B,) float64 on the CPU, so that aggregates are exact and reproducible. Models
(image encoders, image-text scorers) are passed in as callables; nothing here loads weights.

| metric | definition | range |
|---|---|---|
| `temporal_consistency` | mean cosine similarity of consecutive frame features | [-1, 1] |
| `motion_amount` | mean absolute difference of consecutive frames, pixels in [0, 1] | [0, 1] |
| `centroid_displacement` | mean distance (px) between intensity centroids of consecutive frames | [0, diag] |
| `text_alignment` | mean over *all* frames of an image-text score (CLIP cosine) | scorer's |
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

FeatureFn = Callable[[Tensor], Tensor]
ImageTextFn = Callable[[Tensor, Sequence[str]], Tensor]


def _check_video(videos: Tensor) -> None:
    if videos.dim() != 5:
        raise ValueError(f"expected videos (B, C, T, H, W), got shape {tuple(videos.shape)}")


def _frames(videos: Tensor) -> Tensor:
    """(B, C, T, H, W) -> (B*T, C, H, W), frames of one video contiguous."""
    b, c, t, h, w = videos.shape
    return videos.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)


def pixel_features(frames: Tensor) -> Tensor:
    """Raw-pixel frame features: each frame (C, H, W) flattened and mean-centred, float64 (N, C*H*W).

    Centring makes the cosine of two frames their Pearson correlation, so a shared black background
    does not make every pair of frames look alike. A constant frame has a zero feature (cosine 0).
    """
    x = frames.detach().double().flatten(1)
    return x - x.mean(dim=1, keepdim=True)


@torch.no_grad()
def frame_features(videos: Tensor, feature_fn: FeatureFn | None = None, batch_size: int = 256) -> Tensor:
    """Features of every frame: (B, C, T, H, W) -> (B, T, E) float64.

    Args:
        feature_fn: images (N, C, H, W) in [-1, 1] -> (N, E), e.g. a CLIP image tower
            (`CLIPReward.image_features`); None uses `pixel_features`.
    """
    _check_video(videos)
    b, t = videos.shape[0], videos.shape[2]
    frames = _frames(videos)
    fn = feature_fn or pixel_features
    feats = torch.cat(
        [fn(frames[i : i + batch_size]).detach().double().cpu() for i in range(0, len(frames), batch_size)]
    )
    return feats.view(b, t, -1)


@torch.no_grad()
def temporal_consistency(videos: Tensor, feature_fn: FeatureFn | None = None) -> Tensor:
    """Mean cosine similarity of consecutive frame features, per video (B,).

    TC = 1/(T-1) sum_{t=1}^{T-1} cos(phi(x_t), phi(x_{t+1})) (the CLIP-feature "temporal consistency"
    of EvalCrafter / VBench's subject consistency without the first-frame term). phi = `feature_fn`
    or mean-centred raw pixels. Videos of one frame score 1.
    """
    feats = frame_features(videos, feature_fn)
    if feats.shape[1] < 2:
        return torch.ones(feats.shape[0], dtype=torch.float64)
    cos = F.cosine_similarity(feats[:, 1:], feats[:, :-1], dim=2, eps=1e-12)  # (B, T-1)
    return cos.mean(dim=1)


@torch.no_grad()
def motion_amount(videos: Tensor) -> Tensor:
    """Mean absolute difference of consecutive frames with pixels in [0, 1], per video (B,).

    M = mean_{t, c, h, w} |x_{t+1} - x_t| / 2 (the /2 maps the [-1, 1] range to [0, 1]); 0 for a still video.
    """
    _check_video(videos)
    x = videos.detach().double().cpu()
    if x.shape[2] < 2:
        return torch.zeros(x.shape[0], dtype=torch.float64)
    return (x[:, :, 1:] - x[:, :, :-1]).abs().mean(dim=(1, 2, 3, 4)) / 2.0


def weighted_centroids(intensity: Tensor, threshold: float = 0.0, min_mass: float = 1e-12) -> Tensor:
    """Intensity-weighted centroids (x, y) in pixels of maps (..., H, W) -> (..., 2), in their dtype.

    Weights are the intensity minus `threshold`, clipped at 0 (so a dark background weighs nothing);
    a map whose total weight is below `min_mass` gets the map centre ((W - 1) / 2, (H - 1) / 2).
    """
    h, w = intensity.shape[-2:]
    wgt = (intensity - threshold).clamp(min=0.0)
    mass = wgt.sum(dim=(-2, -1))
    xs = torch.arange(w, dtype=wgt.dtype, device=wgt.device)
    ys = torch.arange(h, dtype=wgt.dtype, device=wgt.device).unsqueeze(-1)
    cx = (wgt * xs).sum(dim=(-2, -1)) / mass.clamp(min=min_mass)
    cy = (wgt * ys).sum(dim=(-2, -1)) / mass.clamp(min=min_mass)
    empty = mass < min_mass
    cx = torch.where(empty, torch.full_like(cx, (w - 1) / 2), cx)
    cy = torch.where(empty, torch.full_like(cy, (h - 1) / 2), cy)
    return torch.stack([cx, cy], dim=-1)


def intensity_centroids(videos: Tensor, threshold: float = 0.0) -> Tensor:
    """Intensity-weighted centroid (x, y) in pixels of every frame: (B, C, T, H, W) -> (B, T, 2) float64.

    Intensity = channel mean mapped to [0, 1]; see `weighted_centroids` for `threshold` and empty frames.
    """
    _check_video(videos)
    x = ((videos.detach().double().cpu() + 1.0) / 2.0).mean(dim=1)  # (B, T, H, W)
    return weighted_centroids(x, threshold)


@torch.no_grad()
def centroid_displacement(videos: Tensor, threshold: float = 0.1) -> Tensor:
    """Optical-flow-free motion: mean distance (pixels) between consecutive frames' intensity centroids (B,).

    D = 1/(T-1) sum_t ||c_{t+1} - c_t||_2, c_t from `intensity_centroids` (a glyph sliding 2 px/frame
    on black scores 2).
    """
    c = intensity_centroids(videos, threshold)
    if c.shape[1] < 2:
        return torch.zeros(c.shape[0], dtype=torch.float64)
    return (c[:, 1:] - c[:, :-1]).norm(dim=-1).mean(dim=1)


@torch.no_grad()
def text_alignment(
    videos: Tensor, prompts: Sequence[str], score_images: ImageTextFn, batch_size: int = 256
) -> Tensor:
    """CLIP-style text alignment: mean over all frames of score(frame, prompt), per video (B,).

    A = 1/T sum_t s(x_t, p), s = `score_images(images (N, C, H, W) in [-1, 1], prompts) -> (N,)`,
    e.g. the cosine of a CLIP model's image and text embeddings (`CLIPReward.score_images`).
    """
    _check_video(videos)
    b, t = videos.shape[0], videos.shape[2]
    if len(prompts) != b:
        raise ValueError(f"{b} videos but {len(prompts)} prompts")
    frames = _frames(videos)
    per_frame = [p for p in prompts for _ in range(t)]
    scores = torch.cat(
        [
            score_images(frames[i : i + batch_size], per_frame[i : i + batch_size]).detach().double().cpu()
            for i in range(0, len(frames), batch_size)
        ]
    )
    return scores.view(b, t).mean(dim=1)


def summarize(values: Tensor | Sequence[float]) -> dict[str, float]:
    """mean, sample std and standard error of the mean of per-video values."""
    v = torch.as_tensor(values, dtype=torch.float64).flatten()
    n = v.numel()
    if n == 0:
        return {"mean": float("nan"), "std": float("nan"), "sem": float("nan"), "n": 0}
    std = float(v.std(unbiased=True)) if n > 1 else 0.0
    return {"mean": float(v.mean()), "std": std, "sem": std / n**0.5, "n": n}
