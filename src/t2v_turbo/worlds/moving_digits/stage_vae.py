"""Stage 1 of the world: the VAE (diffusers AutoencoderKL, 4 latent channels), trained on frames."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import models as md_models
from .dataset import sample_batch
from .stage_common import cosine_lr, set_lr, world_dir, write_log


def train_vae(
    out_dir: str | Path | None = None,
    steps: int = 600,
    batch_frames: int = 32,
    lr: float = 2e-3,
    glyph_weight: float = 10.0,
    kl_weight: float = 1e-6,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Train the world's VAE on frames; write `out_dir/vae` and `out_dir/logs/vae.json`.

    Loss: per-pixel MSE + L1 on [-1, 1] frames, glyph (non-black) pixels weighted by 1 +
    `glyph_weight`, plus `kl_weight` x KL. Each step sees one random frame of each of `batch_frames`
    fresh videos. The scaling factor recorded in the saved config is 1 / std of posterior samples
    over 64 held-out-glyph videos (the LDM convention).

    Args:
        out_dir: world folder (default: the shipped assets folder).
        steps: optimizer steps.
        batch_frames: frames (each from a different video) per step.
        lr: peak AdamW learning rate (warm-up then cosine decay).
        glyph_weight: extra loss weight of glyph pixels.
        kl_weight: weight of the KL term.
        seed: seeds model init and data.
        progress: show a tqdm bar.

    Returns:
        dict with steps, seconds, final reconstruction MSE on held-out videos and the scaling factor.
    """
    out = world_dir(out_dir)
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 101])
    vae = md_models.build_vae(seed=seed).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    t0 = time.time()
    bar = tqdm(range(steps), desc="vae", disable=not progress, mininterval=2.0)
    for step in bar:
        set_lr(opt, cosine_lr(step, steps, 50, lr))
        # one random frame from each of `batch_frames` videos: (B, 3, H, W)
        videos, _, _ = sample_batch(rng, batch_frames)
        x = videos[
            torch.arange(batch_frames), :, torch.from_numpy(rng.integers(0, videos.shape[2], batch_frames))
        ]
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        # the glyph covers a small part of each frame: weight it up so the black background does not dominate
        weight = 1.0 + glyph_weight * (x > -0.95).any(dim=1, keepdim=True).float()
        loss = (weight * ((rec - x).pow(2) + (rec - x).abs())).mean() + kl_weight * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 20 == 0:
            bar.set_postfix(mse=f"{F.mse_loss(rec, x).item():.4f}", loss=f"{loss.item():.4f}")
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
    info = {
        "stage": "vae",
        "steps": steps,
        "seconds": time.time() - t0,
        "heldout_mse": rec_mse,
        "scaling_factor": scaling,
    }
    write_log(out / "logs", "vae.json", info)
    return info
