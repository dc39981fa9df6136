"""Training data sources behind one loader (see loader.py):

- "moving-digits": the built-in world, rendered on the fly (world.py);
- "videos": a folder of videos with `.txt` captions, or a CSV (WebVid columns accepted) (videos.py);
- "webdataset": tar shards of mp4 + txt, split by rank (shards.py; optional `webdataset` package);
- "cache": latents + text embeddings written once by `t2v-turbo precompute` (cache.py);
- "prompts": a prompt file; the teacher samples the latents (prompts.py).
"""

from __future__ import annotations

from .loader import Loader, SkipCounter, Skipped

__all__ = ["Loader", "SkipCounter", "Skipped", "build_dataset", "build_loader", "clip_size"]


def clip_size(data, model) -> tuple[int, int, int, float | None]:
    """(num_frames, height, width, fps) of training clips: the data section's values, else the model's."""
    t, h, w = model.resolution
    return (data.num_frames or t, data.height or h, data.width or w, data.fps or model.native_fps)


def build_dataset(cfg, size: tuple, rank: int = 0, world: int = 1, epochs: int | None = None):
    """The dataset of `cfg.data.source` for clips of `size` = (T, H, W, fps)."""
    d = cfg.data
    t, h, w, fps = size
    clip = {"num_frames": t, "height": h, "width": w, "fps": fps, "resize": d.resize}
    if d.source == "moving-digits":
        from .world import MovingDigitsClips

        return MovingDigitsClips(cfg.seed, d.paraphrase_prob, size)
    if d.source == "videos":
        from .videos import VideoClips, list_videos

        return VideoClips(list_videos(d.path, d.video_root), seed=cfg.seed, **clip)
    if d.source == "webdataset":
        from .shards import ShardClips

        return ShardClips(d.path, rank, world, cfg.seed, epochs=epochs, **clip)
    if d.source == "cache":
        from .cache import LatentCache

        return LatentCache(d.path)
    if d.source == "prompts":
        from .prompts import PromptList, read_prompt_file

        return PromptList(read_prompt_file(d.path))
    raise ValueError(f"unknown data.source {d.source!r}")


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
        shuffle=cfg.data.shuffle and cfg.data.source != "moving-digits",
        skips=SkipCounter(cfg.data.max_warnings, printer),
    )
