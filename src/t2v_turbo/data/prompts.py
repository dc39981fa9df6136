"""Prompt lists (one prompt per line, `#` comments allowed): training without videos.

The trainer samples each batch's latents z0 from the teacher (DDIM with CFG at
`data.teacher_steps`), so consistency distillation and the reward terms run on prompts alone.
"""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

from ..errors import InputError


def read_prompt_file(path: str | Path) -> list[str]:
    """Prompts of a UTF-8 text file, one per line; blank lines and lines starting with `#` are skipped
    (the one rule for every command and the trainer).

    Raises:
        InputError: the file is missing, not UTF-8 text (e.g. binary), or holds no prompt.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"prompt file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"prompt file {path} is not UTF-8 text (byte {e.start}): give a text file") from None
    if "\x00" in text:
        raise InputError(f"prompt file {path} is binary, not text")
    lines = [line.strip() for line in text.splitlines()]
    prompts = [line for line in lines if line and not line.startswith("#")]
    if not prompts:
        raise InputError(f"{path} holds no prompts")
    return prompts


class PromptList(Dataset):
    """Items {"prompt"}; keys (epoch, index)."""

    def __init__(self, prompts: list[str]):
        self.prompts = list(prompts)

    def __len__(self) -> int:
        return len(self.prompts)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        return {"prompt": self.prompts[key[1]]}
