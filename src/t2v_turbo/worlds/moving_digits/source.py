"""The MovingDigits source: the built-in world rendered on the fly (no files, no downloads)."""

from __future__ import annotations

from torch.utils.data import Dataset

from ...errors import ConfigError

LENGTH = 10_000_000  # distinct seeded items; the stream is effectively endless


class MovingDigitsClips(Dataset):
    """Items {"video": (3, 8, 32, 32), "prompt"} from the world's `MovingDigits`; keys (epoch, index)."""

    def __init__(self, seed: int = 0, paraphrase_prob: float = 0.0, size: tuple | None = None):
        from .dataset import FPS, FRAME_SIZE, NUM_FRAMES, MovingDigits

        native = (NUM_FRAMES, FRAME_SIZE, FRAME_SIZE)
        if size is not None and tuple(size[:3]) != native:
            raise ConfigError(
                f"the moving-digits source renders {native[0]} frames of {native[1]}x{native[2]}; "
                f"the run asks for {tuple(size[:3])} (set data.num_frames/height/width to match or leave "
                "them unset)"
            )
        if size is not None and size[3] is not None and float(size[3]) != float(FPS):
            raise ConfigError(f"the moving-digits source is {FPS} fps; data.fps={size[3]} cannot be resampled")
        self.items = MovingDigits(length=LENGTH, seed=seed, split="train", paraphrase_prob=paraphrase_prob)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        epoch, i = key
        item = self.items[(i + epoch * 7919) % len(self.items)]
        return {"video": item["video"], "prompt": item["caption"]}
