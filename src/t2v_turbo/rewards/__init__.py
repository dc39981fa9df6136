"""Differentiable reward models behind one contract (see base.py)."""

from .base import (
    REWARDS,
    CallableReward,
    RewardModel,
    RewardTerm,
    build_reward,
    build_rewards,
    register_reward,
    select_frames,
)

__all__ = ["REWARDS", "CallableReward", "RewardModel", "RewardTerm", "build_reward", "build_rewards", "register_reward", "select_frames"]
