"""A resumable, skip-tolerant batch loader shared by every data source.

Items are dicts ({"video": (3, T, H, W)} or {"latents", "cond"}, plus "prompt") or `Skipped`
markers. The loader draws keys from a seeded per-rank stream, drops skipped items (counting
each file once by reason, with a bounded number of printed warnings), and fills each batch with good
items only. Its `position` (keys consumed on this rank) is all a checkpoint needs to resume
the exact same stream.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, IterableDataset, Sampler

from ..errors import DataError


def printable(text: str) -> str:
    """`text` safe to print: undecodable bytes kept in paths (surrogate escapes) shown as U+FFFD."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")


@dataclass
class Skipped:
    """An item that could not be used: why, where (a path or shard key: one per file) and details."""

    reason: str
    where: str
    detail: str = ""


class SkipCounter:
    """Counts skipped files by reason, each file once however often it is drawn (epochs repeat it);
    prints a warning for each of the first `max_warnings` files.

    Attributes:
        counts: reason -> number of distinct files (the `where` of the Skipped items).
        files: where -> reason of every skipped file (the first reason seen).
        events: skipped draws in all (a file failing every epoch adds one per epoch).
    """

    def __init__(self, max_warnings: int = 20, printer=print):
        self.counts: Counter[str] = Counter()
        self.files: dict[str, str] = {}
        self.events = 0
        self.max_warnings, self.printer = max_warnings, printer
        self._warned = 0

    def add(self, item: Skipped) -> bool:
        """Count `item`; True when its file was not counted before."""
        self.events += 1
        if item.where in self.files:
            return False
        self.files[item.where] = item.reason
        self.counts[item.reason] += 1
        if self._warned < self.max_warnings:
            self._warned += 1
            detail = f" ({item.detail})" if item.detail else ""
            self.printer(printable(f"warning: skipped {item.where}: {item.reason}{detail}"))
            if self._warned == self.max_warnings:
                self.printer("warning: further skipped files are counted but not printed")
        return True

    @property
    def total(self) -> int:
        """Distinct skipped files."""
        return sum(self.counts.values())

    def summary(self) -> dict[str, int]:
        """reason -> number of distinct skipped files, sorted by reason."""
        return dict(sorted(self.counts.items()))

    def describe(self) -> str:
        """One line, e.g. "skipped 3 file(s): 1 empty file, 2 undecodable"."""
        if not self.total:
            return "skipped 0 files"
        parts = ", ".join(f"{n} {reason}" for reason, n in self.summary().items())
        return f"skipped {self.total} file(s): {parts}"

    def state_dict(self) -> dict:
        """JSON-ready state for a checkpoint: {"files": {where: reason}, "events": n}."""
        return {"files": dict(self.files), "events": self.events}

    def load_state_dict(self, state: dict) -> None:
        """Restore a `state_dict()` (a resumed run then counts no file twice). A plain {reason: n}
        dict (older checkpoints) is added to `counts` as is."""
        if isinstance(state.get("files"), dict):
            for where, reason in state["files"].items():
                if where not in self.files:
                    self.files[where] = reason
                    self.counts[reason] += 1
            self.events += int(state.get("events", 0))
        else:
            self.counts.update({str(k): int(v) for k, v in state.items()})

    @staticmethod
    def merged(states) -> dict[str, int]:
        """reason -> distinct files over several ranks' `state_dict()`s (a file two ranks drew counts once)."""
        files: dict[str, str] = {}
        for st in states:
            for where, reason in st.get("files", {}).items():
                files.setdefault(where, reason)
        return dict(sorted(Counter(files.values()).items()))


class KeyStream(Sampler):
    """Endless (epoch, index) keys for one rank: draw g = p * world + rank of a seeded permutation
    per epoch (identity when shuffle is off), starting at this rank's position `start`."""

    def __init__(
        self, length: int, seed: int, rank: int = 0, world: int = 1, start: int = 0, shuffle: bool = True
    ):
        if length < 1:
            raise DataError("the dataset is empty")
        self.length, self.seed, self.rank, self.world, self.start, self.shuffle = (
            length,
            seed,
            rank,
            world,
            start,
            shuffle,
        )
        self._epoch, self._perm = -1, None

    def key(self, p: int) -> tuple[int, int]:
        g = p * self.world + self.rank
        epoch, i = divmod(g, self.length)
        if not self.shuffle:
            return epoch, i
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.length, generator=gen)
        return epoch, int(self._perm[i])

    def __iter__(self) -> Iterator[tuple[int, int]]:
        p = self.start
        while True:
            yield self.key(p)
            p += 1

    def __len__(self) -> int:  # endless; DataLoader only needs a number
        return 2**62


def collate(items: list[dict]) -> dict:
    """Stack tensors, list the prompts."""
    out: dict = {"prompts": [it["prompt"] for it in items]}
    for name in ("video", "latents", "cond"):
        if name in items[0]:
            out[name] = torch.stack([it[name] for it in items])
    return out


def _identity(x):
    return x


class Loader:
    """Batches of `batch_size` good items, forever, from a map-style dataset keyed by (epoch, index)
    or from an iterable dataset that takes a `start` position.

    Attributes:
        position: items (good or skipped) consumed on this rank; resume by passing it as `start`.
        skips: the SkipCounter.
    """

    def __init__(
        self,
        dataset,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        start: int = 0,
        num_workers: int = 0,
        shuffle: bool = True,
        skips: SkipCounter | None = None,
        max_consecutive_skips: int | None = None,
    ):
        self.dataset, self.batch_size, self.position = dataset, batch_size, start
        self.skips = skips or SkipCounter()
        if isinstance(dataset, IterableDataset):
            dataset.start = start  # the iterable source skips what was consumed before
            self._loader = DataLoader(
                dataset, batch_size=None, num_workers=min(num_workers, 1), collate_fn=_identity
            )
            limit = 10_000
        else:
            sampler = KeyStream(len(dataset), seed, rank, world, start, shuffle)
            self._loader = DataLoader(
                dataset, sampler=sampler, batch_size=None, num_workers=num_workers, collate_fn=_identity
            )
            limit = max(100, len(dataset))
        self.max_consecutive_skips = max_consecutive_skips or limit
        self._it: Iterator | None = None
        self._run = 0  # consecutive skipped items

    def __iter__(self) -> Loader:
        return self

    def __next__(self) -> dict:
        if self._it is None:
            self._it = iter(self._loader)
        items = []
        while len(items) < self.batch_size:
            try:
                item = next(self._it)
            except StopIteration:
                raise DataError("the data source ran dry (no usable items left)") from None
            self.position += 1
            if isinstance(item, Skipped):
                self.skips.add(item)
                self._run += 1
                if self._run >= self.max_consecutive_skips:
                    raise DataError(
                        f"no usable training items: {self._run} in a row were skipped "
                        f"({self.skips.describe()})"
                    )
                continue
            self._run = 0
            items.append(item)
        return collate(items)
