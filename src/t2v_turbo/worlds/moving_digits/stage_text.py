"""Stage 2 of the world: the tokenizer, the two reward models and the teacher's frozen text tower."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch

from ...errors import ConfigError
from . import models as md_models
from .stage_common import world_dir, write_log

TEXT_ENCODERS = ("random", "video-reward")


def train_text_and_rewards(
    out_dir: str | Path | None = None,
    image_steps: int = 8000,
    video_steps: int = 1600,
    image_lr: float = 1e-3,
    video_lr: float = 2e-3,
    batch_size: int = 48,
    image_hard_fraction: float = 0.8,
    kinds: Sequence[str] = ("video", "image"),
    text_encoder: str = "video-reward",
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Build the tokenizer, train both reward models contrastively, and export the text encoder.

    Writes `tokenizer/`, `reward_image/` (md-image), `reward_video/` (md-video), `text_encoder/`
    (the teacher's frozen CLIPTextModel, see `text_encoder`) and `logs/text_and_rewards.json`.

    Args:
        out_dir: world folder (default: the shipped assets folder).
        image_steps: contrastive steps of the image reward (one frame per video, `batch_size` videos;
            8000 with `image_hard_fraction` 0.8: digit top-1 on held-out glyphs 0.957, against 0.58 after
            2500 steps at 0.5).
        image_hard_fraction: share of the image reward's batches whose videos share one colour and one
            direction (in-batch negatives differ only in the digit).
        video_steps: contrastive steps of the video reward.
        image_lr: peak learning rate of the image reward (a ViT: lower than the conv net's).
        video_lr: peak learning rate of the video reward.
        batch_size: videos per step.
        kinds: which rewards to train; both by default.
        text_encoder: the teacher's frozen text tower: "video-reward" (default: the video reward's
            contrastively trained text tower, its projection dropped; needs "video" in `kinds`), as real
            T2V teachers freeze a contrastively trained CLIP / OpenCLIP tower, or "random" (a seeded
            random CLIPTextModel of `models.text_config`: captions that differ only in the digit get
            nearly the same states, and the UNet family's students then drew digits at 0.16 instead
            of 0.53, docs/moving_digits/NOTES.md).
        seed: seeds inits and data.
        progress: show tqdm bars.

    Returns:
        dict with times and zero-shot accuracies (on held-out glyphs) of both rewards.

    Raises:
        ConfigError: an unknown `text_encoder`, or "video-reward" without the video reward.
    """
    from .reward_training import reward_accuracy, train_reward
    from .rewards import build_image_reward, build_video_reward

    if text_encoder not in TEXT_ENCODERS:
        raise ConfigError(f"unknown text_encoder {text_encoder!r}; valid: {list(TEXT_ENCODERS)}")
    if text_encoder == "video-reward" and "video" not in kinds:
        raise ConfigError("text_encoder='video-reward' needs the video reward: add 'video' to kinds")
    out = world_dir(out_dir)
    t0 = time.time()
    tokenizer = md_models.build_tokenizer()
    tokenizer.save_pretrained(out / "tokenizer")
    info: dict = {"stage": "text_and_rewards"}
    for kind, steps, lr in (("video", video_steps, video_lr), ("image", image_steps, image_lr)):
        if kind not in kinds:
            continue
        reward = (build_video_reward if kind == "video" else build_image_reward)(tokenizer, seed=seed)
        hard = {"hard_fraction": image_hard_fraction} if kind == "image" else {}
        info[f"{kind}_train"] = train_reward(
            reward, steps=steps, batch_size=batch_size, lr=lr, seed=seed, progress=progress, **hard
        )
        info[f"{kind}_accuracy"] = reward_accuracy(reward, seed=seed)
        reward.save_pretrained(out / f"reward_{kind}")
        if kind == "video" and text_encoder == "video-reward":
            reward_text_tower(reward).save_pretrained(out / "text_encoder")
    if text_encoder == "random":
        random_text_tower(tokenizer, seed).save_pretrained(out / "text_encoder")
    info["seconds"] = time.time() - t0
    write_log(out / "logs", "text_and_rewards.json", info)
    return info


def random_text_tower(tokenizer, seed: int = 0):
    """A seeded random CLIPTextModel of the world's text config, in eval mode."""
    from transformers import CLIPTextModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text = CLIPTextModel(md_models.text_config(tokenizer))
    return text.eval()


def reward_text_tower(reward):
    """The video reward's text tower as a plain CLIPTextModel (its projection dropped), in eval mode."""
    from transformers import CLIPTextModel

    text = CLIPTextModel(reward.text_encoder.config)
    text.load_state_dict(reward.text_encoder.text_model.state_dict())
    return text.eval()
