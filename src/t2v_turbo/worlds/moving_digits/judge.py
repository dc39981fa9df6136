"""The MovingDigits judge: objective per-video scores, independent of every trained model of the world.

- digit: an RBF-SVM (scikit-learn) fitted on the judge's own features of rendered frames of the
  *training* glyphs and validated on the held-out glyphs; a video's digit is the argmax of the
  decision values averaged over frames. Features: the 14x14 window around the glyph's centroid,
  area-downsampled to 8x8 and normalised to peak 1.
- color: the mean RGB of bright pixels (max channel > 0.5), normalised to peak 1, nearest palette color.
- direction: least-squares slope of the glyph centroid over frames (px/frame); the direction is the
  palette direction with the largest dot product, and counts only if the speed along it is at
  least `min_speed` (a static glyph is not "moving").
- consistency: mean over consecutive frames of max(0, Pearson correlation of the centroid-aligned RGB
  crops) x (brightness ratio min/max): 1 for a rigidly moving glyph, ~0 for noise.

Chance levels: digit 0.1, color 1/7, direction 0.25 (less with `min_speed`), all 1/280.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ...evaluation.metrics import weighted_centroids
from .dataset import COLORS, DIRECTIONS, FRAME_SIZE, GLYPH_SIZE, glyph_indices, parse_caption, render

CROP = 14  # centroid-centred window side (pixels)
FEATURE_SIDE = 8  # the classifier sees 8x8 crops, like sklearn's digits
SCORE_KEYS = ("digit_correct", "color_correct", "direction_correct", "all_correct", "consistency", "speed")

_COLOR_NAMES = list(COLORS)
_COLOR_RGB = torch.tensor([COLORS[c] for c in _COLOR_NAMES])  # (7, 3)
_DIR_NAMES = list(DIRECTIONS)
_DIR_VEC = torch.tensor([DIRECTIONS[d] for d in _DIR_NAMES], dtype=torch.float32)  # (4, 2)


# ------------------------------------------------------------------------------------------ features
def _to_unit(video: Tensor) -> Tensor:
    """(B, 3, T, H, W) in [-1, 1] -> (B, T, 3, H, W) in [0, 1], float32, detached."""
    return ((video.detach().float() + 1.0) / 2.0).clamp(0.0, 1.0).permute(0, 2, 1, 3, 4)


def crops(frames: Tensor, centers: Tensor, side: int = CROP) -> Tensor:
    """Windows (N, C, side, side) of frames (N, C, H, W) centred on the rounded centers (N, 2), zero-padded."""
    n, c, h, w = frames.shape
    pad = side
    padded = F.pad(frames, (pad, pad, pad, pad))
    x0 = (centers[:, 0] - (side - 1) / 2).round().long() + pad
    y0 = (centers[:, 1] - (side - 1) / 2).round().long() + pad
    out = torch.empty(n, c, side, side)
    for i in range(n):
        out[i] = padded[i, :, y0[i] : y0[i] + side, x0[i] : x0[i] + side]
    return out


def digit_features(intensity_crops: Tensor) -> np.ndarray:
    """(N, 1, CROP, CROP) intensity crops -> (N, 64) features: area-downsampled to 8x8, peak-normalised."""
    x = F.adaptive_avg_pool2d(intensity_crops, FEATURE_SIDE).flatten(1)
    x = x / x.amax(dim=1, keepdim=True).clamp(min=0.05)
    return x.numpy().astype(np.float64)


def frame_features(frames: Tensor) -> tuple[np.ndarray, Tensor, Tensor]:
    """Frames (N, 3, H, W) in [0, 1] -> (digit features (N, 64), centroids (N, 2), RGB crops)."""
    intensity = frames.amax(dim=1)  # (N, H, W)
    cent = weighted_centroids(intensity, threshold=0.15, min_mass=1e-6)
    rgb_crops = crops(frames, cent)
    return digit_features(rgb_crops.amax(dim=1, keepdim=True)), cent, rgb_crops


def _glyph_frames(split: str, positions_per_glyph: int, seed: int) -> tuple[Tensor, np.ndarray]:
    """One white frame per (glyph, random position) of a split, rendered by the world's own renderer."""
    from .dataset import glyph_label

    rng = np.random.default_rng(seed)
    frames, labels = [], []
    last = FRAME_SIZE - GLYPH_SIZE
    for g in glyph_indices(split):
        d = glyph_label(int(g))
        for _ in range(positions_per_glyph):
            start = (int(rng.integers(0, last + 1)), int(rng.integers(0, last + 1)))
            # a "down" video rendered with one frame is a single frame at `start`
            frames.append(render(d, "white", "down", int(g), start, num_frames=1)[:, 0])
            labels.append(d)
    return (torch.stack(frames) + 1.0) / 2.0, np.asarray(labels)


# ------------------------------------------------------------------------------------------ judge
class Judge:
    """Scores MovingDigits videos against their captions.

    Args:
        seed: seed of the rendered training/validation frames (the classifier itself is deterministic).
        positions_per_glyph: random positions at which each training glyph is rendered.
        min_speed: smallest speed (px/frame) along the named direction that counts as moving.
    """

    def __init__(self, seed: int = 0, positions_per_glyph: int = 3, min_speed: float = 1.0):
        from sklearn.svm import SVC

        self.min_speed = min_speed
        train_frames, y_train = _glyph_frames("train", positions_per_glyph, seed)
        x_train = frame_features(train_frames)[0]
        self.classifier = SVC(C=10.0, gamma="scale", decision_function_shape="ovr").fit(x_train, y_train)
        val_frames, y_val = _glyph_frames("heldout", 1, seed + 1)
        #: digit accuracy of single frames of the held-out glyphs (sanity check of the classifier)
        self.validation_accuracy = float(
            (self.classifier.predict(frame_features(val_frames)[0]) == y_val).mean()
        )

    # -------------------------------------------------------------------- per-attribute predictions
    @torch.no_grad()
    def analyse(self, videos: Tensor) -> dict[str, Tensor]:
        """Attribute predictions for videos (B, 3, T, H, W) in [-1, 1].

        Returns:
            dict with "digit" (B,), "color" (B,) and "direction" (B,) as indices into 0..9,
            `list(COLORS)`, `list(DIRECTIONS)`; "velocity" (B, 2) px/frame (x right, y down);
            "consistency" (B,).
        """
        x = _to_unit(videos)  # (B, T, 3, H, W)
        b, t = x.shape[:2]
        frames = x.reshape(b * t, *x.shape[2:])
        feats, cent, rgb_crops = frame_features(frames)
        # digit: average the one-vs-rest decision values over frames
        dec = torch.from_numpy(self.classifier.decision_function(feats)).float().view(b, t, -1)
        digit = torch.as_tensor(self.classifier.classes_)[dec.mean(dim=1).argmax(dim=1)]
        # color: mean RGB of bright pixels, peak-normalised, nearest palette entry
        bright = (x.amax(dim=2, keepdim=True) > 0.5).float()  # (B, T, 1, H, W)
        n_bright = bright.sum(dim=(1, 3, 4))  # (B, 1)
        mean_rgb = (x * bright).sum(dim=(1, 3, 4)) / n_bright.clamp(min=1.0)  # (B, 3)
        mean_rgb = mean_rgb / mean_rgb.amax(dim=1, keepdim=True).clamp(min=1e-6)
        color = torch.cdist(mean_rgb, _COLOR_RGB).argmin(dim=1)
        # direction: least-squares slope of the centroid track, (B, 2) px/frame
        cent = cent.view(b, t, 2)
        k = torch.arange(t, dtype=torch.float32) - (t - 1) / 2
        velocity = (cent * k.view(1, t, 1)).sum(dim=1) / (k**2).sum()
        along = velocity @ _DIR_VEC.T  # (B, 4): speed along each direction
        direction = along.argmax(dim=1)
        speed = along.gather(1, direction[:, None])[:, 0]
        # consistency: correlation of consecutive aligned crops x brightness ratio
        c = rgb_crops.view(b, t, -1)
        c = c - c.mean(dim=2, keepdim=True)
        corr = F.cosine_similarity(c[:, 1:], c[:, :-1], dim=2, eps=1e-8).clamp(min=0.0)  # (B, T-1)
        brightness = x.sum(dim=(2, 3, 4))  # (B, T)
        ratio = torch.minimum(brightness[:, 1:], brightness[:, :-1]) / torch.maximum(
            brightness[:, 1:], brightness[:, :-1]
        ).clamp(min=1e-6)
        consistency = (corr * ratio).mean(dim=1)
        return {
            "digit": digit,
            "color": color,
            "direction": direction,
            "speed": speed,
            "velocity": velocity,
            "consistency": consistency,
        }

    # -------------------------------------------------------------------- scores
    def score(self, videos: Tensor, prompts: Sequence[str]) -> dict[str, Tensor]:
        """Per-video scores of videos (B, 3, T, H, W) in [-1, 1] against their prompts.

        Returns:
            dict of (B,) float tensors: digit_correct, color_correct, direction_correct, all_correct
            (1.0/0.0), consistency in [0, 1], speed (px/frame along the predicted direction).
        """
        if len(prompts) != videos.shape[0]:
            raise ValueError(f"{videos.shape[0]} videos but {len(prompts)} prompts")
        pred = self.analyse(videos)
        parsed = [parse_caption(p) for p in prompts]
        want_color = torch.tensor([_COLOR_NAMES.index(c) for c, _, _ in parsed])
        want_digit = torch.tensor([d for _, d, _ in parsed])
        want_dir = torch.tensor([_DIR_NAMES.index(m) for _, _, m in parsed])
        digit_ok = (pred["digit"] == want_digit).float()
        color_ok = (pred["color"] == want_color).float()
        dir_ok = ((pred["direction"] == want_dir) & (pred["speed"] >= self.min_speed)).float()
        return {
            "digit_correct": digit_ok,
            "color_correct": color_ok,
            "direction_correct": dir_ok,
            "all_correct": digit_ok * color_ok * dir_ok,
            "consistency": pred["consistency"],
            "speed": pred["speed"],
        }

    def evaluate(self, videos: Tensor, prompts: Sequence[str], batch_size: int = 64) -> dict[str, float]:
        """Mean scores over many videos (processed in batches)."""
        parts = [
            self.score(videos[i : i + batch_size], prompts[i : i + batch_size])
            for i in range(0, len(prompts), batch_size)
        ]
        return summarize({k: torch.cat([p[k] for p in parts]) for k in SCORE_KEYS})


def summarize(scores: dict[str, Tensor]) -> dict[str, float]:
    """Aggregate per-video scores of one model: accuracies (means of the 0/1 scores) and means."""
    names = {
        "digit_correct": "digit_acc",
        "color_correct": "color_acc",
        "direction_correct": "direction_acc",
        "all_correct": "all_acc",
        "consistency": "consistency",
        "speed": "speed",
    }
    out = {names[k]: float(v.float().mean()) for k, v in scores.items() if k in names}
    out["num_videos"] = int(next(iter(scores.values())).numel())
    return out


@functools.lru_cache(maxsize=4)
def get_judge(seed: int = 0) -> Judge:
    """A process-wide cached judge (fitting takes about a second)."""
    return Judge(seed=seed)
