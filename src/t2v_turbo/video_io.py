"""Video files that play everywhere: mp4 (H.264, yuv420p, even sizes) through PyAV, and GIF.

Tensors are (C, T, H, W) in [-1, 1] (one video) unless a function says otherwise.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

VIDEO_FORMATS = ("mp4", "gif")


class VideoDecodeError(RuntimeError):
    """A video file that cannot be decoded (missing, truncated, corrupt, no video stream)."""


def to_uint8_frames(video: Tensor, upscale: int = 1) -> np.ndarray:
    """(C, T, H, W) in [-1, 1] -> (T, H', W', 3) uint8; nearest-neighbour upscale by an integer factor."""
    if video.dim() != 4 or video.shape[0] not in (1, 3):
        raise ValueError(f"expected a video (C, T, H, W) with C in (1, 3), got {tuple(video.shape)}")
    x = ((video.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1, -1)
    frames = x.permute(1, 2, 3, 0).cpu().numpy()
    if upscale > 1:
        frames = frames.repeat(upscale, axis=1).repeat(upscale, axis=2)
    return np.ascontiguousarray(frames)


def write_video(path: str | Path, video: Tensor, fps: int = 8, upscale: int = 1, crf: int = 18) -> Path:
    """Write one video; the format comes from the suffix (.mp4: H.264 yuv420p; .gif)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = to_uint8_frames(video, upscale)
    suffix = path.suffix.lower().lstrip(".")
    if suffix == "gif":
        import imageio.v3 as iio

        iio.imwrite(path, frames, extension=".gif", duration=1000 / fps, loop=0)
        return path
    if suffix != "mp4":
        raise ValueError(f"unknown video format {suffix!r}; valid: {list(VIDEO_FORMATS)}")
    import av

    t, h, w, _ = frames.shape
    # yuv420p needs even sizes: pad by edge replication
    ph, pw = h % 2, w % 2
    if ph or pw:
        frames = np.pad(frames, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
    tmp = path.with_name(path.name + ".part")
    with av.open(str(tmp), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "medium", "movflags": "+faststart"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(path)
    return path


def read_video(path: str | Path, max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """Decode a video file with PyAV -> ((T, H, W, 3) uint8, fps). Raises VideoDecodeError."""
    import av

    path = Path(path)
    if not path.exists():
        raise VideoDecodeError(f"{path}: file not found")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoDecodeError(f"{path}: no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0) or 0.0
            frames = []
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
                if max_frames is not None and len(frames) >= max_frames:
                    break
    except VideoDecodeError:
        raise
    except Exception as e:  # PyAV raises many error types for broken files
        raise VideoDecodeError(f"{path}: cannot decode ({type(e).__name__}: {e})") from e
    if not frames:
        raise VideoDecodeError(f"{path}: no decodable frames")
    return np.stack(frames), fps


def frames_to_tensor(frames: np.ndarray) -> Tensor:
    """(T, H, W, 3) uint8 -> (3, T, H, W) float in [-1, 1]."""
    return torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1.0
