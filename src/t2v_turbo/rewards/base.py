"""The reward contract, the registry and mixtures.

A reward model maps a video in [-1, 1] (B, C, T, H, W) and prompts to scores (B,), differentiably
in the video. Frame selection belongs to the reward: an image reward scores `num_frames` random
frames and averages; a video reward scores `num_frames` strided frames from a random start.
Heavy architectures are built lazily by name (factories import their stacks on call).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..registry import Registry

RewardFactory = Callable[..., "RewardModel"]


def _builtin_rewards() -> None:
    from . import _register_builtin  # noqa: F401  (its imports register the built-in factories)


REWARDS: Registry = Registry("reward", builtins=_builtin_rewards)


def register_reward(name: str) -> Callable[[RewardFactory], RewardFactory]:
    """Decorator: register a factory `(**kwargs) -> RewardModel` under `name` (plugins use it too)."""

    def deco(fn: RewardFactory) -> RewardFactory:
        REWARDS.register(name, fn, replace=True)
        return fn

    return deco


def select_frames(
    num_total: int, num_frames: int, kind: str, generator: torch.Generator | None = None
) -> list[int]:
    """Frame indices a reward scores.

    kind "image": `num_frames` distinct random frames (T2V-Turbo: M = 5 in code, 6 in the paper).
    kind "video": `num_frames` frames with stride s = T // N from a start drawn uniformly from
    0 .. s - 1, as T2V-Turbo's training script does (T=16, N=8: start 0-1; T=10, N=4: stride 2,
    start 0-1, so the last frames of a T that is not a multiple of N are never the first pick).
    With N >= T every frame is used (repeated for N > T).
    """
    if num_frames >= num_total:
        return (
            list(range(num_total))
            if kind == "image"
            else [min(i * num_total // num_frames, num_total - 1) for i in range(num_frames)]
        )
    if kind == "image":
        return sorted(torch.randperm(num_total, generator=generator)[:num_frames].tolist())
    if kind == "video":
        stride = num_total // num_frames  # >= 1 here
        start = int(torch.randint(0, stride, (1,), generator=generator))
        return [start + i * stride for i in range(num_frames)]
    raise ValueError(f"unknown reward kind {kind!r}; valid: ['image', 'video']")


class RewardModel(nn.Module):
    """Base class: subclasses implement `score(video, prompts)` on the already-selected frames.

    Attributes:
        kind: "image" (frames scored independently, mean over frames) or "video" (a clip).
        num_frames: how many frames this reward looks at.
    """

    kind: str = "image"
    num_frames: int = 5

    def select_frames(self, num_total: int, generator: torch.Generator | None = None) -> list[int]:
        return select_frames(num_total, self.num_frames, self.kind, generator)

    def score(self, video: Tensor, prompts: Sequence[str]) -> Tensor:  # pragma: no cover - abstract
        """video (B, C, T', H, W) in [-1, 1] with the selected frames -> (B,) scores."""
        raise NotImplementedError

    def forward(self, video: Tensor, prompts: Sequence[str]) -> Tensor:
        if self.kind == "image":
            b, c, t, h, w = video.shape
            frames = video.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
            per_frame = self.score_images(frames, [p for p in prompts for _ in range(t)])
            return per_frame.view(b, t).mean(dim=1)
        return self.score(video, prompts)

    def score_images(self, images: Tensor, prompts: Sequence[str]) -> Tensor:
        """images (N, C, H, W) in [-1, 1] -> (N,) scores. Image rewards implement this."""
        return self.score(images.unsqueeze(2), prompts)


class CallableReward(RewardModel):
    """Wrap a user callable `(video (B,C,T,H,W) in [-1,1], prompts) -> (B,)` as a reward."""

    def __init__(
        self, fn: Callable[[Tensor, Sequence[str]], Tensor], kind: str = "video", num_frames: int = 8
    ):
        super().__init__()
        self.fn, self.kind, self.num_frames = fn, kind, num_frames

    def forward(self, video: Tensor, prompts: Sequence[str]) -> Tensor:
        return self.fn(video, prompts)


@dataclass
class RewardTerm:
    """One weighted term of the mixed reward: loss -= weight * mean(reward(frames))."""

    name: str
    model: RewardModel
    weight: float = 1.0


def build_reward(name: str, **kwargs) -> RewardModel:
    """Build a registered reward by name; unknown names list the valid ones."""
    return REWARDS.get(name)(**kwargs)


def build_rewards(specs: Sequence[dict | RewardTerm | Callable]) -> list[RewardTerm]:
    """Mixture from config: [{name: hpsv2.1, weight: 1.0, frames: 5, path: ...}, ...] or callables."""
    terms: list[RewardTerm] = []
    for i, spec in enumerate(specs):
        if isinstance(spec, RewardTerm):
            terms.append(spec)
        elif isinstance(spec, RewardModel):
            terms.append(RewardTerm(f"reward{i}", spec, 1.0))
        elif callable(spec) and not isinstance(spec, dict):
            terms.append(RewardTerm(f"reward{i}", CallableReward(spec), 1.0))
        else:
            spec = dict(spec)
            name = spec.pop("name")
            weight = float(spec.pop("weight", 1.0))
            frames = spec.pop("frames", None)
            model = build_reward(name, **spec)
            if frames is not None:
                model.num_frames = int(frames)
            model.requires_grad_(False).eval()
            terms.append(RewardTerm(name, model, weight))
    return terms
