"""Video files that play everywhere: mp4 (H.264, yuv420p, even sizes) through PyAV, and GIF.

Tensors are (C, T, H, W) in [-1, 1] (one video) unless a function says otherwise.
"""

from __future__ import annotations

import errno
import io
import stat
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .errors import DataError

VIDEO_FORMATS = ("mp4", "gif")


class VideoDecodeError(DataError, RuntimeError):
    """A video that cannot be used; `str(e)` is one line, `e.reason` a short skip reason
    ("undecodable", "missing file", "too large", ...: see `decode_video`)."""

    def __init__(self, message: str, reason: str = "undecodable"):
        super().__init__(_one_line(message, 500))
        self.reason = reason

    def __reduce__(self):  # keep the reason across processes (DataLoader workers)
        return type(self), (str(self), self.reason)


class ClipTooShort(VideoDecodeError):
    """A decodable video with fewer frames than the clip needs."""

    def __init__(self, message: str, reason: str = "too short"):
        super().__init__(message, reason)


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


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_video_file(path: Path) -> None:
    """Raise VideoDecodeError (with its reason) unless `path` is a readable, non-empty regular file
    (cheap: a stat and an open; never blocks on a FIFO)."""
    try:
        st = path.stat()
    except ValueError as e:  # an embedded NUL or an unencodable character in the name
        raise VideoDecodeError(f"{path!r}: not a valid file name ({e})", "missing file") from None
    except FileNotFoundError:
        kind = "broken symlink" if path.is_symlink() else "file not found"
        raise VideoDecodeError(f"{path}: {kind}", "missing file") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise VideoDecodeError(f"{path}: symlink loop", "symlink loop") from None
        raise VideoDecodeError(f"{path}: cannot stat ({_one_line(e.strerror or e)})", "unreadable") from None
    if stat.S_ISDIR(st.st_mode):
        raise VideoDecodeError(f"{path}: is a folder, not a video file", "not a file")
    if not stat.S_ISREG(st.st_mode):
        raise VideoDecodeError(f"{path}: not a regular file", "not a file")
    if st.st_size == 0:
        raise VideoDecodeError(f"{path}: empty file", "empty file")
    try:
        with path.open("rb"):
            pass
    except OSError as e:
        raise VideoDecodeError(f"{path}: cannot read ({_one_line(e.strerror or e)})", "unreadable") from None


def _too_large(name: str, w: int, h: int, max_pixels: int | None) -> None:
    if max_pixels and w * h > max_pixels:
        raise VideoDecodeError(
            f"{name}: {w}x{h} frames ({w * h} pixels) exceed the limit of {max_pixels} pixels "
            "(data.max_video_pixels)",
            "too large",
        )


def decode_video(
    source: str | Path | bytes,
    *,
    pick: Callable[[int, float], Sequence[int]] | None = None,
    max_frames: int | None = None,
    size: tuple[int, int] | Callable[[int, int], tuple[int, int]] | None = None,
    max_pixels: int | None = None,
) -> tuple[np.ndarray, float]:
    """The project's one PyAV decoder: a file or in-memory bytes -> ((T, H, W, 3) uint8, source fps).

    Args:
        source: a video file or its bytes.
        pick: (frame count, source fps) -> the frame indices to keep (may repeat; may raise
            ClipTooShort). When the container knows its frame count, decoding stops after the last
            picked frame; otherwise every frame is decoded (at the output size) and `pick` is applied
            to what was decoded. None: every frame, in order.
        max_frames: with `pick=None`, stop after this many frames.
        size: output (height, width), or (source height, width) -> (height, width). Frames are scaled
            while decoding (swscale, area filter) whenever that shrinks either side, so a huge clip is
            never held at full size; a pure upscale is left to the caller (frames come back at the
            source size).
        max_pixels: refuse (reason "too large") frames of more pixels than this, before decoding.

    Raises:
        VideoDecodeError with a one-line message and a `reason`: "missing file", "symlink loop",
        "not a file", "unreadable", "empty file", "too large", "too short" (ClipTooShort) or
        "undecodable" (corrupt, truncated, no video stream).
    """
    import av
    from av.video.reformatter import VideoReformatter

    name = "<bytes>" if isinstance(source, bytes) else str(source)
    if isinstance(source, bytes):
        if not source:
            raise VideoDecodeError(f"{name}: empty file", "empty file")
    else:
        check_video_file(Path(source))
    out_size: tuple[int, int] | None = None
    scaler = VideoReformatter()  # one scaling context for the whole clip (4x faster than one per frame)

    def convert(frame) -> np.ndarray:
        nonlocal out_size
        _too_large(name, frame.width, frame.height, max_pixels)
        if out_size is None:
            out_size = (size(frame.height, frame.width) if callable(size) else size) or (0, 0)
        oh, ow = out_size
        if oh and ow and (oh < frame.height or ow < frame.width):
            frame = scaler.reformat(frame, width=ow, height=oh, format="rgb24", interpolation="AREA", threads=1)
        return frame.to_ndarray(format="rgb24")

    def stack(frames: list[np.ndarray]) -> np.ndarray:
        if not frames:
            raise VideoDecodeError(f"{name}: no decodable frames")
        if len({f.shape for f in frames}) > 1:
            raise VideoDecodeError(f"{name}: the frame size changes mid-stream")
        return np.stack(frames)

    try:
        with av.open(io.BytesIO(source) if isinstance(source, bytes) else name) as container:
            if not container.streams.video:
                raise VideoDecodeError(f"{name}: no video stream")
            stream = container.streams.video[0]
            _too_large(name, stream.codec_context.width, stream.codec_context.height, max_pixels)
            src_fps = float(stream.average_rate or stream.guessed_rate or 0) or 0.0
            total = int(stream.frames or 0)
            if pick is not None and total > 0:  # known length: decode only up to the last picked frame
                wanted = list(pick(total, src_fps))
                needed, last, kept = set(wanted), max(wanted), {}
                for i, frame in enumerate(container.decode(stream)):
                    if i in needed:
                        kept[i] = convert(frame)
                    if i >= last:
                        break
                if len(kept) < len(needed):
                    raise ClipTooShort(
                        f"{name}: stream ended after {len(kept)} of the {len(needed)} needed frames "
                        f"(header says {total}; truncated?)"
                    )
                return stack([kept[i] for i in wanted]), src_fps
            decoded = []
            for frame in container.decode(stream):
                decoded.append(convert(frame))
                if pick is None and max_frames is not None and len(decoded) >= max_frames:
                    break
    except VideoDecodeError:
        raise
    except PermissionError as e:
        raise VideoDecodeError(f"{name}: cannot read ({_one_line(e)})", "unreadable") from e
    except Exception as e:  # PyAV raises many error types for broken files
        raise VideoDecodeError(f"{name}: cannot decode ({type(e).__name__}: {_one_line(e)})") from e
    if pick is not None and decoded:
        return stack([decoded[i] for i in pick(len(decoded), src_fps)]), src_fps
    return stack(decoded), src_fps


def read_video(path: str | Path, max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """Decode a video file at its own size -> ((T, H, W, 3) uint8, fps). Raises VideoDecodeError."""
    return decode_video(path, max_frames=max_frames)


def frames_to_tensor(frames: np.ndarray) -> Tensor:
    """(T, H, W, 3) uint8 -> (3, T, H, W) float in [-1, 1]."""
    return torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1.0
