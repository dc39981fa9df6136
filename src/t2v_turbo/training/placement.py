"""Which process computes which loss term, validated against the world size.

Default ("all"): every rank computes the consistency loss and every reward term. The released
T2V-Turbo code instead split 8 GPUs into ranks 0-5 (CD + image reward) and 6-7 (video reward
only), which silently drops the video reward on fewer GPUs and reweights the terms by 6/8 and 2/8
after DDP's gradient averaging. Here that split is an explicit option ("released", generalised:
the last quarter of the ranks, at least one, computes video rewards only) and every placement
prints the effective weight of each term: weight x (ranks computing it) / world size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import ConfigError
from ..rewards.base import RewardTerm

CD = "consistency"


@dataclass
class Placement:
    """ranks[term] = sorted ranks computing it ("consistency" for the CD loss)."""

    ranks: dict[str, list[int]]
    world: int

    def on(self, name: str, rank: int) -> bool:
        return rank in self.ranks[name]

    def effective_weights(self, weights: dict[str, float]) -> dict[str, float]:
        return {n: weights[n] * len(self.ranks[n]) / self.world for n in self.ranks}

    def describe(self, weights: dict[str, float]) -> str:
        eff = self.effective_weights(weights)
        lines = [f"loss terms over {self.world} process(es) (effective weight = weight x ranks / world):"]
        for n, r in self.ranks.items():
            where = "all ranks" if len(r) == self.world else f"ranks {r}"
            lines.append(f"  {n:<16} weight {weights[n]:g} on {where} -> effective {eff[n]:.4g}")
        return "\n".join(lines)


def resolve_placement(cfg, terms: Sequence[RewardTerm], world: int) -> Placement:
    """Ranks of each loss term for `cfg.train.placement`.

    Args:
        cfg: the run's Config (train.placement, train.cd_ranks, rewards[i].ranks).
        terms: the built reward terms (their `model.kind` decides the "released" split).
        world: the number of processes.

    Raises:
        ConfigError: a rank outside the world, a term on no rank, or a rank with nothing to compute.
    """
    names = [t.name for t in terms]
    mode = cfg.train.placement
    if mode == "all":
        ranks = {n: list(range(world)) for n in [CD, *names]}
    elif mode == "released":
        if world < 2:
            raise ConfigError(
                "train.placement=released needs >= 2 processes (the released code used 8: ranks 0-5 CD + "
                "image "
                "rewards, 6-7 video rewards); with 1 process use train.placement=all"
            )
        n_video = max(1, world // 4)
        first, last = list(range(world - n_video)), list(range(world - n_video, world))
        ranks = {CD: first}
        for t in terms:
            ranks[t.name] = last if t.model.kind == "video" else first
    else:  # custom
        specs = {r.name: r.ranks for r in cfg.rewards}
        ranks = {CD: list(cfg.train.cd_ranks) if cfg.train.cd_ranks is not None else list(range(world))}
        for n in names:
            r = specs.get(n)
            ranks[n] = sorted(set(r)) if r is not None else list(range(world))
    for n, r in ranks.items():
        bad = [x for x in r if not 0 <= x < world]
        if bad:
            raise ConfigError(
                f"placement of {n!r} names rank(s) {bad}, but this run has {world} process(es) "
                f"(ranks 0..{world - 1})"
            )
        if not r:
            raise ConfigError(f"placement puts {n!r} on no rank: the term would be silently dropped")
    idle = [k for k in range(world) if not any(k in r for r in ranks.values())]
    if idle:
        raise ConfigError(f"placement gives rank(s) {idle} no loss term to compute")
    return Placement({n: sorted(r) for n, r in ranks.items()}, world)
