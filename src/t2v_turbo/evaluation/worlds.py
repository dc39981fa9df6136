"""Evaluation worlds: what a plugin world brings to `t2v-turbo eval` through the `EVAL_WORLDS`
registry (the MovingDigits world registers "moving-digits"): a canonical prompt set, an objective
judge, a default text-alignment model and real videos for FVD. The core never names a world."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..registry import Registry


@dataclass(frozen=True)
class EvalWorld:
    """A world's evaluation kit.

    Attributes:
        prompts: (n, seed) -> n canonical prompts (a seeded subset).
        matches: prompts -> whether every prompt belongs to the world (its judge can score them).
        judge: () -> an object with `score(videos, prompts) -> {name: (B,) tensor}`, or None.
        default_clip: a reward spec for text alignment when every model has the world's `resolution`.
        real_videos: (prompts, seeds) -> real videos (N, 3, T, H, W) in [-1, 1] for FVD, or None.
        resolution: (T, H, W) of the world's videos.
    """

    prompts: Callable[[int, int], list[str]]
    matches: Callable[[Sequence[str]], bool]
    judge: Callable[[], object] | None = None
    default_clip: Callable[[], str | None] | None = None
    real_videos: Callable | None = None
    resolution: tuple[int, int, int] | None = None


EVAL_WORLDS: Registry = Registry("evaluation world")


def world_of(prompts: Sequence[str]) -> tuple[str, EvalWorld] | None:
    """The registered world whose `matches` accepts every prompt, if any."""
    for name, world in EVAL_WORLDS.items():
        if world.matches(prompts):
            return name, world
    return None
