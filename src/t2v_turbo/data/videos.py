"""Video files + captions: a folder (captions in `.txt` sidecars) or a CSV (WebVid columns accepted).

Each clip is decoded with PyAV, `num_frames` frames are sampled at a target fps from a random
start, resized and cropped to the model's resolution (aspect-preserving; "stretch" as the
released code did) and returned as (3, T, H, W) in [-1, 1]. A missing, empty, corrupt, truncated,
undecodable or too-short file, or an empty caption, is returned as `Skipped` (the loader counts
it and moves on); it never stops a run.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from ..errors import UserError
from ..video_io import VideoDecodeError
from .loader import Skipped

VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".gif")
PATH_COLUMNS = ("path", "file", "filename", "video", "video_path")
CAPTION_COLUMNS = ("caption", "text", "name", "prompt")


class ClipTooShort(VideoDecodeError):
    """A decodable video with fewer frames than the clip needs."""


# ------------------------------------------------------------------------------------------ decoding
def sample_indices(
    total: int, src_fps: float, num_frames: int, fps: float, rng: np.random.Generator
) -> list[int]:
    """Source frame indices for `num_frames` frames at `fps` from a random start (raises ClipTooShort)."""
    step = src_fps / fps if src_fps > 0 else 1.0
    span = (num_frames - 1) * step  # in source frames
    if total < math.floor(span) + 1:
        raise ClipTooShort(
            f"{total} frames, need {math.floor(span) + 1} for {num_frames} frames at {fps:g} fps"
        )
    start = rng.uniform(0.0, total - 1 - span) if total - 1 - span > 0 else 0.0
    return [min(int(round(start + k * step)), total - 1) for k in range(num_frames)]


def decode_clip(
    source: str | Path | bytes,
    num_frames: int,
    fps: float | None,
    rng: np.random.Generator,
) -> np.ndarray:
    """Decode `num_frames` frames sampled at `fps` (None: every frame) -> (T, H, W, 3) uint8.

    Raises:
        VideoDecodeError (ClipTooShort for a too-short video).
    """
    import av

    name = "<bytes>" if isinstance(source, bytes) else str(source)
    if not isinstance(source, bytes):
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(name)
        if path.stat().st_size == 0:
            raise VideoDecodeError(f"{name}: empty file")
    try:
        with av.open(io.BytesIO(source) if isinstance(source, bytes) else str(source)) as container:
            if not container.streams.video:
                raise VideoDecodeError(f"{name}: no video stream")
            stream = container.streams.video[0]
            src_fps = float(stream.average_rate or stream.guessed_rate or 0) or float(fps or 0)
            target = fps or src_fps or 1.0
            total = int(stream.frames or 0)
            if total > 0:  # container knows its length: decode only up to the last needed frame
                wanted = sample_indices(total, src_fps, num_frames, target, rng)
                frames: dict[int, np.ndarray] = {}
                for i, frame in enumerate(container.decode(stream)):
                    if i in wanted:
                        frames[i] = frame.to_ndarray(format="rgb24")
                    if i >= wanted[-1]:
                        break
                if len(frames) < len(set(wanted)):
                    raise ClipTooShort(
                        f"{name}: stream ended after {len(frames)} of the needed frames (truncated?)"
                    )
                return np.stack([frames[i] for i in wanted])
            decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    except VideoDecodeError:
        raise
    except Exception as e:  # PyAV raises many error types for broken files
        raise VideoDecodeError(f"{name}: cannot decode ({type(e).__name__}: {e})") from e
    if not decoded:
        raise VideoDecodeError(f"{name}: no decodable frames")
    wanted = sample_indices(len(decoded), src_fps, num_frames, target, rng)
    return np.stack([decoded[i] for i in wanted])


def resize_clip(frames: np.ndarray, height: int, width: int, mode: str = "crop") -> Tensor:
    """(T, H, W, 3) uint8 -> (3, T, height, width) float in [-1, 1].

    mode "crop": scale the short side to cover the target (aspect preserved), then center-crop;
    mode "stretch": resize straight to (height, width) (the released code's behaviour).
    """
    x = (
        torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    )  # (T, 3, H, W)
    h, w = x.shape[-2:]
    if mode == "stretch":
        size = (height, width)
    elif mode == "crop":
        scale = max(height / h, width / w)
        size = (max(height, math.ceil(h * scale - 1e-6)), max(width, math.ceil(w * scale - 1e-6)))
    else:
        raise ValueError(f"unknown resize mode {mode!r}; valid: ['crop', 'stretch']")
    if (h, w) != size:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    top, left = (x.shape[-2] - height) // 2, (x.shape[-1] - width) // 2
    x = x[..., top : top + height, left : left + width]
    return x.clamp(-1, 1).permute(1, 0, 2, 3).contiguous()


def load_clip(
    source: str | Path | bytes,
    caption: str | None,
    num_frames: int,
    height: int,
    width: int,
    fps: float | None,
    resize: str,
    rng: np.random.Generator,
    where: str = "",
) -> dict | Skipped:
    """One training item {"video": (3, T, H, W), "prompt"} or the reason it is skipped."""
    where = where or str(source)[:200]
    if not (caption or "").strip():
        return Skipped("empty caption", where)
    try:
        frames = decode_clip(source, num_frames, fps, rng)
    except FileNotFoundError:
        return Skipped("missing file", where)
    except ClipTooShort as e:
        return Skipped("too short", where, str(e))
    except VideoDecodeError as e:
        reason = "empty file" if str(e).endswith("empty file") else "undecodable"
        return Skipped(reason, where, str(e))
    return {"video": resize_clip(frames, height, width, resize), "prompt": caption.strip()}


# ------------------------------------------------------------------------------------------ listings
def _pick(columns: Sequence[str], names: Sequence[str]) -> str | None:
    lower = {c.lower().strip(): c for c in columns}
    return next((lower[n] for n in names if n in lower), None)


def list_csv(path: Path, root: Path | None = None) -> list[tuple[Path, str]]:
    """(video path, caption) rows of a CSV.

    Accepted columns: a path column (path / file / video ...) and a caption column (caption / text /
    name / prompt), or WebVid's `videoid,name,page_dir` (file `{root}/{page_dir}/{videoid}.mp4`) and
    `videoid,contentUrl` (file `{root}/{videoid}.mp4`, else the URL's file name).
    """
    root = root or path.parent
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        path_col, cap_col = _pick(columns, PATH_COLUMNS), _pick(columns, CAPTION_COLUMNS)
        vid_col, page_col, url_col = (
            _pick(columns, ("videoid",)),
            _pick(columns, ("page_dir",)),
            _pick(columns, ("contenturl",)),
        )
        if cap_col is None or (path_col is None and vid_col is None):
            raise UserError(
                f"{path}: cannot find the video and caption columns in {columns}; expected e.g. "
                "`path,caption` or WebVid's `videoid,name,page_dir` / `videoid,contentUrl`"
            )
        rows = []
        for row in reader:
            caption = row.get(cap_col) or ""
            if path_col is not None:
                rows.append((root / (row.get(path_col) or ""), caption))
                continue
            vid = (row.get(vid_col) or "").strip()
            candidates = []
            if page_col and row.get(page_col):
                candidates.append(root / row[page_col] / f"{vid}.mp4")
            candidates.append(root / f"{vid}.mp4")
            if url_col and row.get(url_col):
                candidates.append(root / Path(row[url_col].split("?")[0]).name)
            rows.append((next((c for c in candidates if c.exists()), candidates[0]), caption))
    return rows


def list_folder(path: Path) -> list[tuple[Path, str]]:
    """Every video file under `path` (recursive, sorted) with its `.txt` sidecar's caption ("" if none)."""
    rows = []
    for f in sorted(p for p in path.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()):
        side = f.with_suffix(".txt")
        rows.append((f, side.read_text(encoding="utf-8", errors="replace").strip() if side.exists() else ""))
    return rows


def list_videos(path: str | Path, root: str | Path | None = None) -> list[tuple[Path, str]]:
    """A folder of videos with `.txt` captions, or a CSV file (see `list_csv`)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"data.path not found: {path}")
    if path.is_dir():
        rows = list_folder(path)
    elif path.suffix.lower() in (".csv", ".tsv"):
        rows = list_csv(path, Path(root) if root else None)
    else:
        raise UserError(f"data.path {path} is neither a folder of videos nor a .csv file")
    if not rows:
        raise UserError(f"no videos listed in {path} (looked for {', '.join(VIDEO_SUFFIXES)})")
    return rows


class VideoClips(Dataset):
    """Map-style dataset of clips; keys are (epoch, index) so every draw is reproducible.

    Args:
        rows: (path, caption) pairs from `list_videos`.
        num_frames, height, width: clip size.
        fps: sampling rate (None: every source frame).
        resize: "crop" or "stretch".
        seed: base seed of the random start of each draw.
    """

    def __init__(
        self,
        rows,
        num_frames: int,
        height: int,
        width: int,
        fps: float | None,
        resize: str = "crop",
        seed: int = 0,
    ):
        self.rows, self.num_frames, self.height, self.width = list(rows), num_frames, height, width
        self.fps, self.resize, self.seed = fps, resize, seed

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: tuple[int, int]) -> dict | Skipped:
        epoch, i = key
        path, caption = self.rows[i]
        rng = np.random.default_rng([self.seed, epoch, i])
        return load_clip(
            path, caption, self.num_frames, self.height, self.width, self.fps, self.resize, rng, str(path)
        )
