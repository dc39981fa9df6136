"""Contrastive training and zero-shot evaluation of the world's two reward models.

Training: multi-positive InfoNCE with a learned temperature, where every caption describing the same
content is a positive (image: same color and digit, since one frame cannot show motion; video: same
color, digit and direction).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from .dataset import (
    COLORS,
    DIRECTIONS,
    canonical_prompts,
    make_caption,
    parse_caption,
    prompt_videos,
    sample_batch,
    sample_spec,
)
from .rewards import MDImageReward, MDVideoReward


def _content_key(caption: str, kind: str) -> tuple:
    color, digit, direction = parse_caption(caption)
    return (color, digit) if kind == "image" else (color, digit, direction)


def _hard_batch(
    rng: np.random.Generator, batch_size: int, paraphrase_prob: float
) -> tuple[Tensor, list[str]]:
    """A batch whose videos share one color and one direction (digits, glyphs, starts vary)."""
    color = list(COLORS)[int(rng.integers(len(COLORS)))]
    direction = list(DIRECTIONS)[int(rng.integers(len(DIRECTIONS)))]
    specs = [sample_spec(rng, "train", color=color, direction=direction) for _ in range(batch_size)]
    captions = [make_caption(s, rng, paraphrase_prob) for s in specs]
    return torch.stack([s.render() for s in specs]), captions


def multi_positive_infonce(a: Tensor, b: Tensor, positives: Tensor, logit_scale: Tensor) -> Tensor:
    """Symmetric InfoNCE where positives[i, j] marks every matching pair (CLIP loss with duplicates).

    loss = -mean_i log sum_{j in P(i)} softmax_j(s a_i . b_j), averaged over both directions.
    """
    logits = logit_scale.clamp(max=math.log(100.0)).exp() * a @ b.T  # (N, N)
    neg_inf = torch.finfo(logits.dtype).min
    l_ab = torch.logsumexp(logits.masked_fill(~positives, neg_inf), 1) - torch.logsumexp(logits, 1)
    l_ba = torch.logsumexp(logits.T.masked_fill(~positives.T, neg_inf), 1) - torch.logsumexp(logits.T, 1)
    return -(l_ab.mean() + l_ba.mean()) / 2


def train_reward(
    reward: MDImageReward | MDVideoReward,
    steps: int = 600,
    batch_size: int = 64,
    lr: float = 2e-3,
    paraphrase_prob: float = 0.5,
    noise_std: float = 0.15,
    hard_fraction: float = 0.5,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Contrastive training of a world reward on training glyphs (in place). Returns a log dict.

    Each step renders `batch_size` videos; the image reward sees one random frame of each. Inputs get
    Gaussian noise of a random std in [0, noise_std] so the reward stays smooth on imperfect videos.
    A `hard_fraction` of the batches share one color and one direction, so that in-batch negatives
    differ only by digit. The learning rate warms up over 50 steps, then follows a cosine, floored at
    2 % of `lr`.
    """
    kind = reward.kind
    rng = np.random.default_rng([seed, 303 if kind == "image" else 404])
    gen = torch.Generator().manual_seed(seed)
    reward.train()
    params = [p for p in reward.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    t0 = time.time()
    bar = tqdm(range(steps), desc=f"reward-{kind}", disable=not progress, mininterval=2.0)
    losses = []
    for step in bar:
        # warm-up then cosine decay
        frac = min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * step / steps))
        for g in opt.param_groups:
            g["lr"] = lr * max(frac, 0.02)
        if rng.random() < hard_fraction:
            videos, captions = _hard_batch(rng, batch_size, paraphrase_prob)
        else:
            videos, captions, _ = sample_batch(rng, batch_size, paraphrase_prob=paraphrase_prob)
        std = torch.rand(batch_size, 1, 1, 1, 1, generator=gen) * noise_std
        videos = videos + std * torch.randn(videos.shape, generator=gen)
        keys = [_content_key(c, kind) for c in captions]
        pos = torch.tensor([[ki == kj for kj in keys] for ki in keys])
        text = reward.text_features(captions, train=True)
        if kind == "image":
            t_idx = torch.randint(0, videos.shape[2], (batch_size,), generator=gen)
            vis = reward.image_features(videos[torch.arange(batch_size), :, t_idx])
        else:
            vis = reward.embed_videos(videos)
        loss = multi_positive_infonce(vis, text, pos, reward.logit_scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    reward.eval()
    reward.clear_text_cache()
    return {"steps": steps, "seconds": time.time() - t0, "final_loss": float(np.mean(losses[-50:]))}


@torch.no_grad()
def reward_accuracy(
    reward: MDImageReward | MDVideoReward, seed: int = 0, split: str = "heldout"
) -> dict[str, float]:
    """Zero-shot classification of one ground-truth video per canonical prompt among the 280 prompts.

    Returns accuracies of the argmax prompt's digit, color, direction and all three (the image reward
    cannot see direction: its direction accuracy is about chance by construction), and the mean
    margin between the true prompt's score and the best wrong prompt's.
    """
    prompts = canonical_prompts()
    videos, _ = prompt_videos(prompts, seed=seed, split=split)
    reward.eval()
    vis = torch.cat([reward.embed_videos(videos[i : i + 70]) for i in range(0, len(prompts), 70)])
    sims = vis @ reward.text_features(prompts).T  # (280 videos, 280 prompts)
    pred = [parse_caption(prompts[j]) for j in sims.argmax(dim=1).tolist()]
    true = [parse_caption(p) for p in prompts]
    acc = {
        name: float(np.mean([p[i] == t[i] for p, t in zip(pred, true)]))
        for i, name in enumerate(("color_acc", "digit_acc", "direction_acc"))
    }
    acc["all_acc"] = float(np.mean([p == t for p, t in zip(pred, true)]))
    acc["color_digit_acc"] = float(np.mean([p[:2] == t[:2] for p, t in zip(pred, true)]))
    diag = sims.diag()
    acc["true_score"] = float(diag.mean())
    acc["chance"] = {"color": 1 / len(COLORS), "digit": 0.1, "direction": 1 / len(DIRECTIONS)}
    return acc
