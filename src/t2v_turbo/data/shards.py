"""WebDataset tar shards of `KEY.mp4` + `KEY.txt` (the usual WebVid / video2dataset layout).

Shards are split by rank (rank r reads shards r, r + world, ...), read in a seeded order per
epoch, and every sample goes through the same decoding as video files (data/videos.py), so a
broken sample is skipped and counted. Needs the optional `webdataset` package.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from torch.utils.data import IterableDataset

from ..errors import ConfigError, DataError
from .loader import Skipped
from .videos import VIDEO_SUFFIXES, load_clip


def _require_webdataset():
    try:
        import webdataset
    except ModuleNotFoundError:
        raise ConfigError(
            "data.source=webdataset needs the optional package webdataset: "
            "pip install 't2v-turbo[webdataset]'"
        ) from None
    return webdataset


def expand_shards(pattern: str) -> list[str]:
    """Shard list from a brace pattern ("shards/{00000..00099}.tar"), a glob, a folder or a text file."""
    path = Path(pattern)
    if path.is_dir():
        urls = sorted(str(p) for p in path.glob("*.tar"))
    elif path.suffix == ".txt" and path.is_file():
        urls = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    elif "{" in pattern:
        import braceexpand

        urls = list(braceexpand.braceexpand(pattern))
    else:
        urls = sorted(glob.glob(pattern)) or ([pattern] if path.exists() else [])
    if not urls:
        raise DataError(f"no webdataset shards found for data.path={pattern!r}")
    return urls


def _identity(src):
    return src


class ShardClips(IterableDataset):
    """Endless stream of clips from this rank's shards; `start` samples are skipped on resume.

    Args:
        pattern: shard pattern (see `expand_shards`).
        rank, world: process index and count; needs at least `world` shards.
        seed: shard order per epoch and random clip starts.
        epochs: stop after this many passes (None: endless).
        clip: keyword arguments of `load_clip` (num_frames, height, width, fps, resize, max_pixels).
    """

    def __init__(self, pattern: str, rank: int, world: int, seed: int, epochs: int | None = None, **clip):
        _require_webdataset()
        urls = expand_shards(pattern)
        if len(urls) < world:
            raise DataError(
                f"{len(urls)} webdataset shard(s) for {world} processes: every process needs at least one"
            )
        self.urls, self.rank, self.world, self.seed, self.clip = urls[rank::world], rank, world, seed, clip
        self.epochs = epochs
        self.start = 0

    def __iter__(self) -> Iterator[dict | Skipped]:
        wds = _require_webdataset()
        position, epoch = 0, 0
        while self.epochs is None or epoch < self.epochs:
            order = np.random.default_rng([self.seed, self.rank, epoch]).permutation(len(self.urls))
            urls = [self.urls[i] for i in order]
            source = wds.WebDataset(
                urls,
                shardshuffle=False,
                nodesplitter=_identity,
                workersplitter=_identity,
                empty_check=False,
                handler=wds.warn_and_continue,
            )
            seen = 0
            for sample in source:
                seen += 1
                position += 1
                if position <= self.start:
                    continue
                yield self._decode(sample, position)
            if seen == 0:
                raise DataError(
                    f"the webdataset shards of rank {self.rank} hold no readable samples: {urls[:3]}..."
                )
            epoch += 1

    def _decode(self, sample: dict, position: int) -> dict | Skipped:
        key = f"{sample.get('__url__', '?')}:{sample.get('__key__', '?')}"
        video = next((sample[k] for k in sample if "." + k.lower() in VIDEO_SUFFIXES), None)
        if video is None:
            return Skipped(
                "missing file",
                key,
                f"no video member among {sorted(k for k in sample if not k.startswith('__'))}",
            )
        text = sample.get("txt") or sample.get("caption") or b""
        caption = text.decode("utf-8", errors="replace") if isinstance(text, bytes) else str(text)
        rng = np.random.default_rng([self.seed, self.rank, position])
        return load_clip(bytes(video), caption, rng=rng, where=key, **self.clip)
