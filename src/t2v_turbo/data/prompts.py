"""Prompt lists (one prompt per line, `#` comments allowed): training without videos.

The trainer samples each batch's latents z0 from the teacher (DDIM with CFG at
`data.teacher_steps`), so consistency distillation and the reward terms run on prompts alone.
"""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

from ..errors import UserError


def read_prompt_file(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"prompt file not found: {path}")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    prompts = [line for line in lines if line and not line.startswith("#")]
    if not prompts:
        raise UserError(f"{path} holds no prompts")
    return prompts


class PromptList(Dataset):
    """Items {"prompt"}; keys (epoch, index)."""

    def __init__(self, prompts: list[str]):
        self.prompts = list(prompts)

    def __len__(self) -> int:
        return len(self.prompts)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        return {"prompt": self.prompts[key[1]]}
