"""A contact sheet of the world's models: for a few prompts, each model's 8 frames side by side.

Rows: one block per prompt, one row per model (e.g. teacher 50 steps, VCM 4, T2V-Turbo 4 and 1);
columns: the frames, upscaled with nearest-neighbour so that a 12x12 glyph is readable. The label of
each row (model, steps, and the judge's reading of the video) is written in the left margin.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

SHEET_PROMPTS = (
    "a red digit 7 moving left",
    "a green digit 3 moving up",
    "a blue digit 0 moving right",
    "a yellow digit 5 moving down",
    "a white digit 8 moving left",
    "a magenta digit 2 moving up",
)


def video_strip(video: torch.Tensor, scale: int = 3, gap: int = 2) -> np.ndarray:
    """(3, T, H, W) in [-1, 1] -> (H * scale, T * (W * scale + gap) - gap, 3) uint8, frames left to right."""
    v = ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # (3, T, H, W)
    frames = v.permute(1, 2, 3, 0).numpy()  # (T, H, W, 3)
    frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    t, h, w, _ = frames.shape
    out = np.full((h, t * (w + gap) - gap, 3), 40, dtype=np.uint8)
    for i in range(t):
        out[:, i * (w + gap) : i * (w + gap) + w] = frames[i]
    return out


def contact_sheet(
    rows: Sequence[tuple[str, object, int]],
    path: str | Path,
    prompts: Sequence[str] = SHEET_PROMPTS,
    seed: int = 0,
    w: float | None = None,
    scale: int = 3,
    judge=None,
) -> Path:
    """Sample every (label, backbone, steps) of `rows` on `prompts` (seed `seed`) and write a PNG.

    Args:
        rows: (label, backbone, sampler steps); a teacher runs its solver + CFG, a student the
            consistency sampler (as `pipeline.generate` decides).
        path: output PNG.
        w: the students' w (teachers: cfg 1 + w); default `pipeline.DEFAULT_W`.
        judge: if given, each row's label ends with what the judge reads: "digit/colour/direction",
            each marked ok or x against the prompt.
    Returns:
        the path written.
    """
    from PIL import Image, ImageDraw

    from ...pipeline import DEFAULT_W, generate

    w = DEFAULT_W if w is None else w
    videos = {label: generate(model, list(prompts), steps, w=w, seed=seed).videos for label, model, steps in rows}
    readings: dict[str, list[str]] = {}
    if judge is not None:
        for label, vids in videos.items():
            sc = judge.score(vids, list(prompts))
            keys = ("digit_correct", "color_correct", "direction_correct")
            readings[label] = ["/".join("ok" if sc[k][i] > 0 else "x" for k in keys) for i in range(len(prompts))]
    margin, title_h, pad = 190, 16, 6
    strip_w = video_strip(next(iter(videos.values()))[0], scale).shape[1]
    strip_h = 32 * scale
    block_h = title_h + len(rows) * (strip_h + pad) + pad
    img = Image.new("RGB", (margin + strip_w + pad, len(prompts) * block_h), (24, 24, 24))
    draw = ImageDraw.Draw(img)
    for i, prompt in enumerate(prompts):
        y = i * block_h
        draw.text((pad, y + 2), f'"{prompt}"', fill=(235, 235, 235))
        y += title_h
        for label, _, _ in rows:
            img.paste(Image.fromarray(video_strip(videos[label][i], scale)), (margin, y))
            draw.text((pad, y + strip_h // 2 - 12), label, fill=(200, 200, 200))
            if label in readings:
                draw.text((pad, y + strip_h // 2 + 2), f"digit/colour/dir: {readings[label][i]}", fill=(150, 150, 150))
            y += strip_h + pad
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
