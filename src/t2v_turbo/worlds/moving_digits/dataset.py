"""The MovingDigits data: captioned 8-frame videos of real handwritten digits sliding on black.

The spec (fixed; evaluation tools depend on it, see MOVING_DIGITS.md):
- glyphs: scikit-learn's `load_digits()` (1,797 8x8 digits, values 0..16); glyphs whose index % 5 == 0
  are held out of training;
- a video is 8 frames of 32x32 RGB on black; the glyph is resized to 12x12 (bilinear), scaled to
  [0, 1] (divide by 16) and multiplied by the color's RGB;
- 7 colors, 4 directions at 2 px/frame; the start position is uniform over the positions that keep
  the whole glyph inside the frame for all 8 frames;
- tensors are (C, T, H, W) = (3, 8, 32, 32) in [-1, 1] (black = -1);
- canonical caption `a {color} digit {d} moving {direction}`; 7 x 10 x 4 = 280 canonical prompts.

Everything here is deterministic given a seed: item i of `MovingDigits(seed=s)` is always the same video.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset, IterableDataset

NUM_FRAMES = 8
FRAME_SIZE = 32
GLYPH_SIZE = 12
SPEED = 2  # pixels per frame
FPS = 8
HELDOUT_MODULUS = 5  # glyph index % 5 == 0 -> held out of training

COLORS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    "cyan": (0.0, 1.0, 1.0),
    "magenta": (1.0, 0.0, 1.0),
    "white": (1.0, 1.0, 1.0),
}
# (dx, dy) per frame in pixels; x grows to the right, y grows downwards (image rows)
DIRECTIONS: dict[str, tuple[int, int]] = {
    "left": (-1, 0),
    "right": (1, 0),
    "up": (0, -1),
    "down": (0, 1),
}
DIGITS = tuple(range(10))
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SPLITS = ("train", "heldout", "all")

# Paraphrase templates for training captions; index 0 is the canonical form.
CAPTION_TEMPLATES = (
    "a {color} digit {d} moving {direction}",
    "the {color} digit {d} moving {direction}",
    "a {color} digit {word} moving {direction}",
    "a {color} {word} moving {direction}",
    "a {color} digit {d} sliding {direction}",
    "a {color} number {d} moving {direction}",
    "a digit {d} in {color} moving {direction}",
    "moving {direction}, a {color} digit {d}",
    "the {color} {word} sliding {direction}",
    "a {color} digit {d} going {direction}",
)


# ------------------------------------------------------------------------------------------ captions
def canonical_caption(color: str, digit: int, direction: str) -> str:
    """The canonical caption `a {color} digit {d} moving {direction}` (every evaluation prompt)."""
    return CAPTION_TEMPLATES[0].format(
        color=color, d=int(digit), word=NUMBER_WORDS[digit], direction=direction
    )


def paraphrase(color: str, digit: int, direction: str, template: int) -> str:
    """Caption number `template` of `CAPTION_TEMPLATES` (0 = canonical)."""
    return CAPTION_TEMPLATES[template].format(
        color=color, d=int(digit), word=NUMBER_WORDS[digit], direction=direction
    )


def all_captions(color: str, digit: int, direction: str) -> list[str]:
    """Every caption (canonical first, then paraphrases) describing one video's content."""
    return [paraphrase(color, digit, direction, i) for i in range(len(CAPTION_TEMPLATES))]


def canonical_prompts() -> list[str]:
    """The 280 canonical evaluation prompts, ordered by color, then digit, then direction."""
    return [canonical_caption(c, d, m) for c in COLORS for d in DIGITS for m in DIRECTIONS]


def prompt_subset(n: int, seed: int = 0) -> list[str]:
    """A fixed seeded subset of `n` canonical prompts (for quick evaluations), in canonical order."""
    prompts = canonical_prompts()
    if n >= len(prompts):
        return prompts
    idx = np.random.default_rng(seed).choice(len(prompts), size=n, replace=False)
    return [prompts[i] for i in sorted(idx.tolist())]


_WORD_TO_DIGIT = {w: i for i, w in enumerate(NUMBER_WORDS)} | {str(i): i for i in DIGITS}


def parse_caption(caption: str) -> tuple[str, int, str]:
    """(color, digit, direction) named by a caption (canonical form or any paraphrase).

    Raises:
        ValueError: when the caption does not name exactly one color, digit and direction.
    """
    words = re.findall(r"[a-z0-9]+", caption.lower())
    colors = [w for w in words if w in COLORS]
    digits = [_WORD_TO_DIGIT[w] for w in words if w in _WORD_TO_DIGIT]
    directions = [w for w in words if w in DIRECTIONS]
    if len(colors) != 1 or len(digits) != 1 or len(directions) != 1:
        raise ValueError(f"cannot parse MovingDigits caption {caption!r}")
    return colors[0], digits[0], directions[0]


def caption_words() -> list[str]:
    """Every word the caption grammar uses (sorted; for the tokenizer's word-level vocabulary)."""
    words: set[str] = set()
    for c in COLORS:
        for d in DIGITS:
            for m in DIRECTIONS:
                for cap in all_captions(c, d, m):
                    words.update(re.findall(r"[a-z0-9]+", cap))
    return sorted(words)


# ------------------------------------------------------------------------------------------ glyphs
@functools.lru_cache(maxsize=1)
def _digits_data() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.float32), d.target.astype(np.int64)


def load_glyphs() -> tuple[Tensor, Tensor]:
    """All 1,797 sklearn digit glyphs: images (N, 8, 8) with values 0..16 and labels (N,)."""
    images, labels = _digits_data()
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.copy())


def glyph_indices(split: str = "train", digit: int | None = None) -> np.ndarray:
    """Glyph indices of a split: "train" (index % 5 != 0), "heldout" (index % 5 == 0) or "all"."""
    _, labels = _digits_data()
    idx = np.arange(len(labels))
    if split == "train":
        idx = idx[idx % HELDOUT_MODULUS != 0]
    elif split == "heldout":
        idx = idx[idx % HELDOUT_MODULUS == 0]
    elif split != "all":
        raise ValueError(f"unknown split {split!r}; valid: {list(SPLITS)}")
    if digit is not None:
        idx = idx[labels[idx] == digit]
    return idx


def resize_glyphs(images: Tensor, size: int = GLYPH_SIZE) -> Tensor:
    """(N, 8, 8) glyphs with values 0..16 -> (N, size, size) in [0, 1] (bilinear resize, then / 16)."""
    x = F.interpolate(images[:, None].float(), size=(size, size), mode="bilinear", align_corners=False)
    return (x[:, 0] / 16.0).clamp(0.0, 1.0)


@functools.lru_cache(maxsize=1)
def _resized_glyphs() -> Tensor:
    images, _ = load_glyphs()
    return resize_glyphs(images)


def glyph_label(glyph_index: int) -> int:
    """The digit a glyph shows."""
    return int(_digits_data()[1][glyph_index])


# ------------------------------------------------------------------------------------------ rendering
def start_range(direction: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """Inclusive (x_min, x_max), (y_min, y_max) of top-left start positions keeping the glyph inside.

    The glyph's top-left corner at frame k is start + k * SPEED * (dx, dy).
    """
    dx, dy = DIRECTIONS[direction]
    travel = SPEED * (NUM_FRAMES - 1)
    last = FRAME_SIZE - GLYPH_SIZE  # largest top-left coordinate that keeps the glyph inside

    def axis(d: int) -> tuple[int, int]:
        if d > 0:
            return 0, last - travel
        if d < 0:
            return travel, last
        return 0, last

    return axis(dx), axis(dy)


def positions(direction: str, start: tuple[int, int], num_frames: int = NUM_FRAMES) -> list[tuple[int, int]]:
    """Top-left (x, y) of the glyph in each frame."""
    dx, dy = DIRECTIONS[direction]
    return [(start[0] + k * SPEED * dx, start[1] + k * SPEED * dy) for k in range(num_frames)]


def render(
    digit: int,
    color: str,
    direction: str,
    glyph_index: int,
    start: tuple[int, int],
    num_frames: int = NUM_FRAMES,
    size: int = FRAME_SIZE,
) -> Tensor:
    """Render one video.

    Args:
        digit: the digit; must be the label of `glyph_index`.
        color: a key of `COLORS`.
        direction: a key of `DIRECTIONS`.
        glyph_index: index into sklearn's `load_digits()`.
        start: top-left (x, y) of the 12x12 glyph in frame 0.
        num_frames: frames to render (the spec uses 8).
        size: frame side in pixels (the spec uses 32).

    Returns:
        (3, num_frames, size, size) tensor in [-1, 1], black background = -1.
    """
    if color not in COLORS:
        raise ValueError(f"unknown color {color!r}; valid: {list(COLORS)}")
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; valid: {list(DIRECTIONS)}")
    if glyph_label(glyph_index) != int(digit):
        raise ValueError(f"glyph {glyph_index} shows a {glyph_label(glyph_index)}, not a {digit}")
    glyph = _resized_glyphs()[glyph_index]  # (12, 12) in [0, 1]
    rgb = torch.tensor(COLORS[color]).view(3, 1, 1)
    video = torch.zeros(3, num_frames, size, size)
    for k, (x, y) in enumerate(positions(direction, start, num_frames)):
        if not (0 <= x <= size - GLYPH_SIZE and 0 <= y <= size - GLYPH_SIZE):
            raise ValueError(f"frame {k}: glyph at ({x}, {y}) leaves the {size}x{size} frame")
        video[:, k, y : y + GLYPH_SIZE, x : x + GLYPH_SIZE] = glyph[None] * rgb
    return video * 2.0 - 1.0


@dataclass(frozen=True)
class VideoSpec:
    """Everything that determines one MovingDigits video."""

    digit: int
    color: str
    direction: str
    glyph_index: int
    start: tuple[int, int]

    @property
    def caption(self) -> str:
        return canonical_caption(self.color, self.digit, self.direction)

    def render(self) -> Tensor:
        return render(self.digit, self.color, self.direction, self.glyph_index, self.start)


def sample_spec(
    rng: np.random.Generator,
    split: str = "train",
    digit: int | None = None,
    color: str | None = None,
    direction: str | None = None,
) -> VideoSpec:
    """Draw a video: digit, color and direction uniform (unless given), a glyph of that digit uniform
    within `split`, then a start position uniform over the valid ones."""
    digit = int(rng.integers(10)) if digit is None else int(digit)
    color = list(COLORS)[int(rng.integers(len(COLORS)))] if color is None else color
    direction = list(DIRECTIONS)[int(rng.integers(len(DIRECTIONS)))] if direction is None else direction
    glyphs = glyph_indices(split, digit)
    glyph_index = int(glyphs[int(rng.integers(len(glyphs)))])
    (x0, x1), (y0, y1) = start_range(direction)
    start = (int(rng.integers(x0, x1 + 1)), int(rng.integers(y0, y1 + 1)))
    return VideoSpec(digit, color, direction, glyph_index, start)


def make_caption(spec: VideoSpec, rng: np.random.Generator, paraphrase_prob: float = 0.0) -> str:
    """The canonical caption, or with probability `paraphrase_prob` a uniformly drawn paraphrase."""
    if paraphrase_prob > 0 and rng.random() < paraphrase_prob:
        template = int(rng.integers(1, len(CAPTION_TEMPLATES)))
        return paraphrase(spec.color, spec.digit, spec.direction, template)
    return spec.caption


def _item(spec: VideoSpec, caption: str) -> dict:
    return {
        "video": spec.render(),
        "caption": caption,
        "digit": spec.digit,
        "color": spec.color,
        "direction": spec.direction,
        "glyph_index": spec.glyph_index,
        "start": torch.tensor(spec.start),
    }


class MovingDigits(Dataset):
    """A map-style MovingDigits dataset: item i is a deterministic function of (seed, split, i).

    Items are dicts: "video" (3, 8, 32, 32) in [-1, 1], "caption", "digit", "color", "direction",
    "glyph_index", "start" (a (2,) tensor, top-left x, y of frame 0).

    Args:
        length: number of items.
        seed: base seed.
        split: "train" (default), "heldout" or "all" glyphs.
        paraphrase_prob: probability that an item's caption is a paraphrase rather than the canonical one.
    """

    def __init__(
        self, length: int = 10_000, seed: int = 0, split: str = "train", paraphrase_prob: float = 0.0
    ):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid: {list(SPLITS)}")
        self.length, self.seed, self.split, self.paraphrase_prob = length, seed, split, paraphrase_prob

    def __len__(self) -> int:
        return self.length

    def spec(self, i: int) -> tuple[VideoSpec, str]:
        """The (spec, caption) of item i."""
        if not 0 <= i < self.length:
            raise IndexError(i)
        rng = np.random.default_rng([self.seed, SPLITS.index(self.split), i])
        spec = sample_spec(rng, self.split)
        return spec, make_caption(spec, rng, self.paraphrase_prob)

    def __getitem__(self, i: int) -> dict:
        spec, caption = self.spec(i)
        return _item(spec, caption)


class MovingDigitsStream(IterableDataset):
    """An endless, seeded stream of MovingDigits items (same item format as `MovingDigits`).

    With DataLoader workers each worker draws from its own seeded stream (seed, worker id).
    """

    def __init__(self, seed: int = 0, split: str = "train", paraphrase_prob: float = 0.0):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid: {list(SPLITS)}")
        self.seed, self.split, self.paraphrase_prob = seed, split, paraphrase_prob

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([self.seed, SPLITS.index(self.split), 0 if info is None else info.id, 7])
        while True:
            spec = sample_spec(rng, self.split)
            yield _item(spec, make_caption(spec, rng, self.paraphrase_prob))


def sample_batch(
    rng: np.random.Generator, batch_size: int, split: str = "train", paraphrase_prob: float = 0.0
) -> tuple[Tensor, list[str], list[VideoSpec]]:
    """A training batch: videos (B, 3, 8, 32, 32) in [-1, 1], captions, and the specs."""
    specs = [sample_spec(rng, split) for _ in range(batch_size)]
    captions = [make_caption(s, rng, paraphrase_prob) for s in specs]
    return torch.stack([s.render() for s in specs]), captions, specs


def prompt_videos(
    prompts: Sequence[str], seed: int = 0, split: str = "heldout"
) -> tuple[Tensor, list[VideoSpec]]:
    """Ground-truth videos for prompts (one each), with glyphs from `split` (held-out by default)."""
    rng = np.random.default_rng([seed, 1234])
    specs = []
    for p in prompts:
        color, digit, direction = parse_caption(p)
        specs.append(sample_spec(rng, split, digit=digit, color=color, direction=direction))
    return torch.stack([s.render() for s in specs]), specs
