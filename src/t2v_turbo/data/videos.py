"""Video files + captions: a folder (captions in `.txt` sidecars) or a CSV (WebVid columns accepted).

Each clip is decoded with PyAV (`video_io.decode_video`), `num_frames` frames are sampled at a target
fps from a random start, scaled while decoding and cropped to the model's resolution
(aspect-preserving; "stretch" as the released code did) and returned as (3, T, H, W) in [-1, 1].

Nothing a dataset holds stops a run: every broken item is returned as `Skipped` with a reason (the
loader counts it once per file and moves on):

    missing file        the file (or a CSV row's file) does not exist, or is a broken symlink
    symlink loop        a symlink that points at itself, or a folder link back to a parent folder
    not a file          a folder (or FIFO, device) named like a video, e.g. `x.mp4/`
    unreadable          no permission to read the file, its caption sidecar or a sub-folder
    empty file          0 bytes
    too large           frames of more than `max_pixels` pixels (data.max_video_pixels)
    undecodable         corrupt, truncated, not a video, no video stream
    too short           fewer frames than the clip needs at the target fps
    empty caption       no or blank caption
    bad utf-8 caption   a CSV row whose caption is not valid UTF-8
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from ..errors import DataError
from ..video_io import ClipTooShort, VideoDecodeError, check_video_file, decode_video
from .loader import Skipped, printable

VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".gif")
PATH_COLUMNS = ("path", "file", "filename", "video", "video_path")
CAPTION_COLUMNS = ("caption", "text", "name", "prompt")
MAX_VIDEO_PIXELS = 4096 * 4096  # default pixel limit per frame (config: data.max_video_pixels)

__all__ = [
    "CAPTION_COLUMNS", "MAX_VIDEO_PIXELS", "PATH_COLUMNS", "VIDEO_SUFFIXES", "ClipTooShort", "VideoClips",
    "decode_clip", "decode_size", "list_csv", "list_folder", "list_videos", "load_clip", "resize_clip",
    "sample_indices",
]  # fmt: skip


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
    size: tuple[int, int] | None = None,
    resize: str = "crop",
    max_pixels: int | None = None,
) -> np.ndarray:
    """Decode `num_frames` frames sampled at `fps` (None: the source rate) -> (T, H, W, 3) uint8.

    With `size` = (height, width), frames are scaled while decoding to what `resize_clip` would scale
    them to (see `decode_size`), so only the crop is left; a clip is never held at full size when it
    is larger than that. Frames of more than `max_pixels` pixels are refused before decoding.

    Raises:
        VideoDecodeError with its `reason` (ClipTooShort for a too-short video).
    """

    def pick(total: int, src_fps: float) -> list[int]:
        src = src_fps or float(fps or 0)
        return sample_indices(total, src, num_frames, fps or src or 1.0, rng)

    scale = None if size is None else (lambda h, w: decode_size(h, w, size[0], size[1], resize))
    frames, _ = decode_video(source, pick=pick, size=scale, max_pixels=max_pixels)
    return frames


def decode_size(h: int, w: int, height: int, width: int, mode: str = "crop") -> tuple[int, int]:
    """The size a (h, w) frame is scaled to before the center crop to (height, width).

    mode "crop": the short side covers the target (aspect preserved); "stretch": (height, width).
    """
    if mode == "stretch":
        return height, width
    if mode != "crop":
        raise ValueError(f"unknown resize mode {mode!r}; valid: ['crop', 'stretch']")
    scale = max(height / h, width / w)
    return max(height, math.ceil(h * scale - 1e-6)), max(width, math.ceil(w * scale - 1e-6))


def resize_clip(frames: np.ndarray, height: int, width: int, mode: str = "crop") -> Tensor:
    """(T, H, W, 3) uint8 -> (3, T, height, width) float in [-1, 1].

    mode "crop": scale the short side to cover the target (aspect preserved), then center-crop;
    mode "stretch": resize straight to (height, width) (the released code's behaviour).
    """
    x = (
        torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    )  # (T, 3, H, W)
    h, w = x.shape[-2:]
    size = decode_size(h, w, height, width, mode)
    if (h, w) != size:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    top, left = (x.shape[-2] - height) // 2, (x.shape[-1] - width) // 2
    x = x[..., top : top + height, left : left + width]
    return x.clamp(-1, 1).permute(1, 0, 2, 3).contiguous()


def load_clip(
    source: str | Path | bytes,
    caption: str | Skipped | None,
    num_frames: int,
    height: int,
    width: int,
    fps: float | None,
    resize: str,
    rng: np.random.Generator,
    where: str = "",
    max_pixels: int | None = MAX_VIDEO_PIXELS,
) -> dict | Skipped:
    """One training item {"video": (3, T, H, W), "prompt"} or the reason it is skipped.

    Args:
        caption: the caption, or the `Skipped` a listing recorded for this row (returned as is).
        max_pixels: frames of more pixels are skipped as "too large" (None or 0: no limit).
    """
    if isinstance(caption, Skipped):
        return caption
    where = where or str(source)[:200]
    try:
        if not isinstance(source, bytes):  # file problems first: a folder `x.mp4/` has no caption either
            check_video_file(Path(source))
        if not (caption or "").strip():
            return Skipped("empty caption", where)
        frames = decode_clip(source, num_frames, fps, rng, (height, width), resize, max_pixels)
    except VideoDecodeError as e:
        detail, name = str(e), "<bytes>" if isinstance(source, bytes) else str(source)
        detail = detail[len(name) + 2 :] if detail.startswith(f"{name}: ") else detail
        return Skipped(e.reason, where, "" if detail == e.reason else detail)
    return {"video": resize_clip(frames, height, width, resize), "prompt": caption.strip()}


# ------------------------------------------------------------------------------------------ listings
def _pick(columns: Sequence[str], names: Sequence[str]) -> str | None:
    lower = {c.lower().strip(): c for c in columns}
    return next((lower[n] for n in names if n in lower), None)


def _bad_text(text: str) -> bool:
    """Whether decoded text holds undecodable bytes (surrogate escapes)."""
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def list_csv(path: Path, root: Path | None = None) -> list[tuple[Path, str | Skipped]]:
    """(video path, caption) rows of a CSV; a row whose caption is not valid UTF-8 gets a `Skipped`
    ("bad utf-8 caption") instead of its caption.

    Accepted columns: a path column (path / file / video ...) and a caption column (caption / text /
    name / prompt), or WebVid's `videoid,name,page_dir` (file `{root}/{page_dir}/{videoid}.mp4`) and
    `videoid,contentUrl` (file `{root}/{videoid}.mp4`, else the URL's file name). Paths keep
    undecodable bytes (a POSIX file name need not be UTF-8).

    Raises:
        DataError: the file cannot be read as CSV, or has no video / caption column.
    """
    root = root or path.parent
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    text = raw.decode("utf-8-sig", errors="surrogateescape")  # bad bytes: surrogate escapes, checked per row
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        columns = reader.fieldnames or []
    except csv.Error as e:
        raise DataError(f"{path}: not a readable CSV header ({e})") from None
    path_col, cap_col = _pick(columns, PATH_COLUMNS), _pick(columns, CAPTION_COLUMNS)
    vid_col, page_col, url_col = (
        _pick(columns, ("videoid",)),
        _pick(columns, ("page_dir",)),
        _pick(columns, ("contenturl",)),
    )
    if cap_col is None or (path_col is None and vid_col is None):
        hint = " (the header is not valid UTF-8)" if any(_bad_text(c) for c in columns) else ""
        raise DataError(
            printable(
                f"{path}: cannot find the video and caption columns in {columns}{hint}; expected e.g. "
                "`path,caption` or WebVid's `videoid,name,page_dir` / `videoid,contentUrl`"
            )
        )
    rows: list[tuple[Path, str | Skipped]] = []
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:  # e.g. a field larger than the csv module's limit: one row lost
            rows.append((path, Skipped("undecodable", f"{path}:{reader.line_num}", f"bad CSV row ({e})")))
            continue
        caption: str | Skipped = row.get(cap_col) or ""
        if path_col is not None:
            video = root / (row.get(path_col) or "")
        else:
            vid = (row.get(vid_col) or "").strip()
            candidates = []
            if page_col and row.get(page_col):
                candidates.append(root / row[page_col] / f"{vid}.mp4")
            candidates.append(root / f"{vid}.mp4")
            if url_col and row.get(url_col):
                candidates.append(root / Path(row[url_col].split("?")[0]).name)
            video = next((c for c in candidates if _exists(c)), candidates[0])
        if _bad_text(caption):
            caption = Skipped(
                "bad utf-8 caption",
                f"{path}:{reader.line_num}",
                printable(f"caption of {video} is not valid UTF-8 text: {caption[:80]!r}"),
            )
        rows.append((video, caption))
    return rows


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def _caption(video: Path) -> str | Skipped:
    """The `.txt` sidecar's caption ("" if none; undecodable bytes replaced), or why it is unreadable."""
    side = video.with_suffix(".txt")
    try:
        return side.read_text(encoding="utf-8", errors="replace").strip()
    except FileNotFoundError:
        return ""
    except OSError as e:
        return Skipped("unreadable", str(video), f"caption file {side}: {e.strerror or e}")


def list_folder(path: Path) -> list[tuple[Path, str | Skipped]]:
    """Every entry named like a video under `path` (recursive, sorted) with its `.txt` sidecar's caption.

    Nothing is left out silently: a folder, broken symlink or symlink loop named like a video is
    listed (the dataset skips it with its reason), a sub-folder that cannot be read or a folder
    symlink back to a parent folder is listed with a `Skipped` instead of a caption.
    """
    rows: list[tuple[Path, str | Skipped]] = []

    def walk(folder: Path, ancestors: frozenset) -> None:
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as e:
            rows.append((folder, Skipped("unreadable", str(folder), f"cannot list the folder: {e.strerror or e}")))
            return
        for entry in entries:
            p = Path(entry.path)
            if p.suffix.lower() in VIDEO_SUFFIXES:
                rows.append((p, _caption(p)))  # whatever it is: the dataset says why it is unusable
            try:
                if not entry.is_dir():  # follows symlinks; a looping link raises (named like a video: listed)
                    continue
                st = os.stat(entry.path)
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if key in ancestors:
                rows.append((p, Skipped("symlink loop", str(p), f"links back to {os.path.realpath(p)}")))
            else:
                walk(p, ancestors | {key})

    st = os.stat(path)
    walk(path, frozenset({(st.st_dev, st.st_ino)}))
    return sorted(rows, key=lambda r: r[0].parts)


def list_videos(path: str | Path, root: str | Path | None = None) -> list[tuple[Path, str | Skipped]]:
    """A folder of videos with `.txt` captions, or a CSV file (see `list_csv`, `list_folder`).

    Rows whose problem is known from the listing carry a `Skipped` instead of a caption.

    Raises:
        DataError: the path is missing, not a folder or CSV, or lists no usable row.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"data.path not found: {path}")
    if path.is_dir():
        rows = list_folder(path)
    elif path.suffix.lower() in (".csv", ".tsv"):
        rows = list_csv(path, Path(root) if root else None)
    else:
        raise DataError(f"data.path {path} is neither a folder of videos nor a .csv file")
    if not rows:
        raise DataError(f"no videos listed in {path} (looked for {', '.join(VIDEO_SUFFIXES)})")
    broken = Counter(c.reason for _, c in rows if isinstance(c, Skipped))
    if sum(broken.values()) == len(rows):
        parts = ", ".join(f"{n} {r}" for r, n in sorted(broken.items()))
        raise DataError(f"no usable rows in {path}: all {len(rows)} are broken ({parts})")
    return rows


class VideoClips(Dataset):
    """Map-style dataset of clips; keys are (epoch, index) so every draw is reproducible.

    Args:
        rows: (path, caption or Skipped) pairs from `list_videos`.
        num_frames, height, width: clip size.
        fps: sampling rate (None: every source frame).
        resize: "crop" or "stretch".
        seed: base seed of the random start of each draw.
        max_pixels: frames of more pixels are skipped as "too large" (None or 0: no limit).
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
        max_pixels: int | None = MAX_VIDEO_PIXELS,
    ):
        self.rows, self.num_frames, self.height, self.width = list(rows), num_frames, height, width
        self.fps, self.resize, self.seed, self.max_pixels = fps, resize, seed, max_pixels

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: tuple[int, int]) -> dict | Skipped:
        epoch, i = key
        path, caption = self.rows[i]
        rng = np.random.default_rng([self.seed, epoch, i])
        return load_clip(
            path, caption, self.num_frames, self.height, self.width, self.fps, self.resize, rng, str(path),
            self.max_pixels,
        )  # fmt: skip
