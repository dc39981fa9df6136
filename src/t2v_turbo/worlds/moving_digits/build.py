"""Train the MovingDigits world's models from scratch, one function per stage.

Stages and their output folders (under `out_dir`, by default the shipped
`src/t2v_turbo/assets/moving_digits/`), in order:

1. `train_vae`               -> vae/                     AutoencoderKL, 4 latent channels
2. `train_text_and_rewards`  -> text_encoder/, tokenizer/, reward_image/, reward_video/
3. `train_teacher`           -> unet/, scheduler/, model_index.json, t2v_turbo.json
                                (with 1-2: a `DiffusersVideoBackbone` folder)
4. `train_students`          -> students/... (a hook: the project's trainer distills them)

`build_world(out_dir)` runs them all and reports how long each took.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import models as md_models
from .dataset import sample_batch

STAGES = ("vae", "text_and_rewards", "teacher", "students")


def default_dir() -> Path:
    """The shipped world folder: src/t2v_turbo/assets/moving_digits/."""
    return md_models.ASSETS_DIR


def _cosine_lr(step: int, total: int, warmup: int, base: float, final_frac: float = 0.05) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * p)))


def _set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr


def _write_log(folder: Path, name: str, info: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(info, indent=2))


# ------------------------------------------------------------------------------------------ 1. VAE
def train_vae(
    out_dir: str | Path | None = None,
    steps: int = 1200,
    batch_videos: int = 4,
    lr: float = 1e-3,
    kl_weight: float = 1e-6,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Train the world's VAE (diffusers AutoencoderKL, 4 latent channels) on frames; write `out_dir/vae`.

    Loss: per-pixel MSE + L1 on [-1, 1] frames + `kl_weight` x KL. The scaling factor recorded in the
    saved config is 1 / std of posterior samples over 64 held-out-glyph videos.

    Args:
        out_dir: world folder (default: the shipped assets folder).
        steps: optimizer steps; each sees `batch_videos` x 8 frames.
        batch_videos: videos per step.
        lr: peak AdamW learning rate (warm-up then cosine decay).
        kl_weight: weight of the KL term.
        seed: seeds model init and data.
        progress: show a tqdm bar.

    Returns:
        dict with steps, seconds, final reconstruction MSE on held-out videos and the scaling factor.
    """
    out = Path(out_dir) if out_dir is not None else default_dir()
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 101])
    vae = md_models.build_vae(seed=seed).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    t0 = time.time()
    bar = tqdm(range(steps), desc="vae", disable=not progress, mininterval=2.0)
    for step in bar:
        _set_lr(opt, _cosine_lr(step, steps, 50, lr))
        videos, _, _ = sample_batch(rng, batch_videos)
        x = videos.permute(0, 2, 1, 3, 4).reshape(-1, 3, *videos.shape[-2:])  # (B*T, 3, H, W)
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        mse = F.mse_loss(rec, x)
        loss = mse + F.l1_loss(rec, x) + kl_weight * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 20 == 0:
            bar.set_postfix(mse=f"{mse.item():.4f}")
    vae.eval()
    # scaling factor = 1 / std of latents (LDM convention), on held-out glyphs
    val, _, _ = sample_batch(np.random.default_rng([seed, 202]), 64, split="heldout")
    frames = val.permute(0, 2, 1, 3, 4).reshape(-1, 3, *val.shape[-2:])
    with torch.no_grad():
        post = vae.encode(frames).latent_dist
        z = post.sample(generator=torch.Generator().manual_seed(seed))
        rec_mse = float(F.mse_loss(vae.decode(post.mode()).sample, frames))
    scaling = float(1.0 / z.std())
    vae.register_to_config(scaling_factor=scaling)
    vae.save_pretrained(out / "vae")
    info = {"stage": "vae", "steps": steps, "seconds": time.time() - t0, "heldout_mse": rec_mse, "scaling_factor": scaling}
    _write_log(out / "logs", "vae.json", info)
    return info
