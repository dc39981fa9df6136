"""Training data sources behind one loader (see loader.py), registered by name in `DATA_SOURCES`
(plugins add their own, e.g. the MovingDigits world's "moving-digits"):

- "videos": a folder of videos with `.txt` captions, or a CSV (WebVid columns accepted) (videos.py);
- "webdataset": tar shards of mp4 + txt, split by rank (shards.py; optional `webdataset` package);
- "cache": latents + text embeddings written once by `t2v-turbo precompute` (cache.py);
- "prompts": a prompt file; the teacher samples the latents (prompts.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..registry import Registry
from .loader import Loader, SkipCounter, Skipped

__all__ = ["DATA_SOURCES", "DataSource", "Loader", "SkipCounter", "Skipped", "build_dataset", "build_loader", "clip_size"]


def clip_size(data, model) -> tuple[int, int, int, float | None]:
    """(num_frames, height, width, fps) of training clips: the data section's values, else the model's."""
    t, h, w = model.resolution
    return (data.num_frames or t, data.height or h, data.width or w, data.fps or model.native_fps)


@dataclass(frozen=True)
class DataSource:
    """A registered training-data source.

    Attributes:
        build: (cfg, size, rank, world, epochs) -> Dataset of items {"video" or "latents", "prompt", ...},
            keyed by (epoch, index); size = (T, H, W, fps) of the clips.
        endless: the stream never ends (precompute then needs --limit).
        shuffle: whether the loader shuffles (an endless seeded stream is already random).
        needs_path: whether `data.path` is required.
    """

    build: Callable
    endless: bool = False
    shuffle: bool = True
    needs_path: bool = True


DATA_SOURCES: Registry = Registry("data source")


def _videos(cfg, size, rank, world, epochs):
    from .videos import VideoClips, list_videos

    d = cfg.data
    return VideoClips(list_videos(d.path, d.video_root), seed=cfg.seed, **_clip(cfg, size))


def _webdataset(cfg, size, rank, world, epochs):
    from .shards import ShardClips

    return ShardClips(cfg.data.path, rank, world, cfg.seed, epochs=epochs, **_clip(cfg, size))


def _cache(cfg, size, rank, world, epochs):
    from .cache import LatentCache

    return LatentCache(cfg.data.path)


def _prompts(cfg, size, rank, world, epochs):
    from .prompts import PromptList, read_prompt_file

    return PromptList(read_prompt_file(cfg.data.path))


def _clip(cfg, size) -> dict:
    t, h, w, fps = size
    return {"num_frames": t, "height": h, "width": w, "fps": fps, "resize": cfg.data.resize,
            "max_pixels": cfg.data.max_video_pixels}  # fmt: skip


DATA_SOURCES.register("videos", DataSource(_videos), help="a folder of videos with .txt captions, or a CSV")
DATA_SOURCES.register("webdataset", DataSource(_webdataset), help="tar shards of mp4 + txt, split by rank")
DATA_SOURCES.register("cache", DataSource(_cache), help="latents + text embeddings from `t2v-turbo precompute`")
DATA_SOURCES.register("prompts", DataSource(_prompts), help="a prompt file; the teacher samples the latents")


def build_dataset(cfg, size: tuple, rank: int = 0, world: int = 1, epochs: int | None = None):
    """The dataset of `cfg.data.source` for clips of `size` = (T, H, W, fps)."""
    return DATA_SOURCES.get(cfg.data.source).build(cfg, size, rank, world, epochs)


def build_loader(cfg, size: tuple, rank: int = 0, world: int = 1, start: int = 0, printer=print) -> Loader:
    """A resumable loader of `cfg.train.batch_size` good items per batch for one rank.

    Args:
        cfg: the run's Config (data section, seed, batch size).
        size: (num_frames, height, width, fps) of the clips (see `clip_size`).
        rank, world: this process and the process count (each rank reads its own stream).
        start: items this rank consumed before (a checkpoint's data position).
        printer: where skip warnings go.
    """
    dataset = build_dataset(cfg, size, rank, world)
    return Loader(
        dataset,
        cfg.train.batch_size,
        seed=cfg.seed,
        rank=rank,
        world=world,
        start=start,
        num_workers=cfg.data.num_workers,
        shuffle=cfg.data.shuffle and DATA_SOURCES.get(cfg.data.source).shuffle,
        skips=SkipCounter(cfg.data.max_warnings, printer),
    )
