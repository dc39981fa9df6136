"""Stage 3 of the world: the teacher, a text-to-video latent diffusion `UNetMotionModel`."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ...distill import ema_update
from ...errors import ConfigError
from ...rewards.common import TextCache
from . import models as md_models
from .dataset import sample_batch
from .stage_common import cosine_lr, latent_batch, set_lr, world_dir, write_log


def snr_loss_weight(
    snr: torch.Tensor, prediction_type: str, gamma: float, floor: float | None = None
) -> torch.Tensor:
    """Per-sample weight of the eps- or v-MSE that makes it an x0-error MSE weighted clamp(SNR, floor,
    gamma) (min-SNR-gamma, Hang et al. 2023, when `floor` is None: min(SNR, gamma)).

    ||eps error||^2 = SNR ||x0 error||^2 and ||v error||^2 = (SNR + 1) ||x0 error||^2, so the weight
    is w_x0 / SNR for epsilon and w_x0 / (SNR + 1) for v.
    """
    w_x0 = snr.clamp(max=gamma)
    if floor is not None:
        w_x0 = w_x0.clamp(min=floor)
    return w_x0 / (snr + 1 if prediction_type == "v_prediction" else snr)


def glyph_box_weights(specs, latent_size: int, glyph_weight: float) -> torch.Tensor:
    """(B, T, h, w) loss weights 1 + (glyph_weight - 1) x (fraction of each latent element's pixel
    patch inside the video's 12x12 glyph box, from the specs' start and direction)."""
    from .dataset import FRAME_SIZE, GLYPH_SIZE, NUM_FRAMES, positions

    box = torch.zeros(len(specs), NUM_FRAMES, FRAME_SIZE, FRAME_SIZE)
    for i, spec in enumerate(specs):
        for k, (x, y) in enumerate(positions(spec.direction, spec.start)):
            box[i, k, y : y + GLYPH_SIZE, x : x + GLYPH_SIZE] = 1.0
    frac = torch.nn.functional.adaptive_avg_pool2d(box, latent_size)
    return 1.0 + (glyph_weight - 1.0) * frac


def train_teacher(
    out_dir: str | Path | None = None,
    steps: int = 3000,
    batch_size: int = 8,
    lr: float = 8e-4,
    cond_dropout: float = 0.1,
    paraphrase_prob: float = 0.2,
    min_snr_gamma: float | None = 5.0,
    snr_floor: float | None = 1.0,
    ema_decay: float = 0.998,
    eval_every: int = 0,
    eval_prompts: int = 56,
    save_every_eval: bool = True,
    seed: int = 0,
    progress: bool = True,
    callback: Callable[[int, dict], None] | None = None,
    init_from: str | Path | None = None,
    warmup: int = 100,
    x0_weight_cap: float | None = None,
    high_noise_frac: float = 0.25,
    high_noise_from: int = 800,
    prediction_type: str = "v_prediction",
    beta_end: float = 0.03,
    frame_tokens: bool = False,
    position_channels: bool = True,
    glyph_weight: float | None = None,
    pooled_text: bool = False,
    text_encoder_dir: str | Path | None = None,
    image_batch: int = 0,
) -> dict:
    """Train the teacher on the scaled-linear schedule, with classifier-free guidance learned through
    `cond_dropout` empty prompts; write `out_dir/teacher/` (a UNet folder holding the EMA weights)
    and `out_dir/logs/teacher.json`.

    Needs `vae/`, `text_encoder/` and `tokenizer/` in `out_dir` (stages 1-2). The defaults are the
    shipped teacher's recipe: v-prediction with beta_end 0.03, min-SNR-5 weighting floored at an x0
    weight of 1, a quarter of each batch at t >= 800, and position channels (docs/moving_digits/NOTES.md
    tells how it was found).

    Args:
        out_dir: world folder (default: the shipped assets folder).
        steps: optimizer steps.
        batch_size: videos per step.
        lr: peak AdamW learning rate (warm-up, cosine decay).
        cond_dropout: probability of replacing a caption by "" (CFG training).
        paraphrase_prob: probability of a paraphrased caption.
        min_snr_gamma: min-SNR loss weighting; None for plain MSE.
        snr_floor: with `min_snr_gamma`, weight the loss as clamp(SNR, snr_floor, gamma) in x0 terms
            instead of min(SNR, gamma) (min-SNR's cap plus the floor of Salimans & Ho's
            truncated-SNR weighting; 1.0: an x0-error weight of at least 1 at every noise level).
        ema_decay: EMA decay of the saved weights (warmed up as min(ema_decay, (1 + k) / (10 + k))).
        eval_every: every this many steps, judge EMA samples (DDIM 25, CFG 5) on `eval_prompts` prompts.
        eval_prompts: size of the seeded canonical-prompt subset for those checks.
        save_every_eval: also save the EMA teacher at every evaluation.
        seed: seeds init, data and noise.
        progress: show a tqdm bar.
        callback: called as callback(step, eval_result) after each evaluation.
        init_from: continue from a saved teacher UNet folder (e.g. a snapshot's `teacher/unet`).
        warmup: learning-rate warm-up steps.
        x0_weight_cap: if set, multiply the loss by clamp(1 / SNR, 1, cap).
        high_noise_frac: fraction of each batch whose timesteps are drawn from
            [high_noise_from, T) instead of [0, T).
        high_noise_from: lower end of that range.
        prediction_type: "epsilon" or "v_prediction" (the loss is then the MSE on v).
        beta_end: end of the scaled-linear beta schedule (0.012: Stable Diffusion's; 0.03 gives a
            terminal signal rate sqrt(abar_T) of 0.0024 instead of 0.068).
        frame_tokens: condition every frame on a frame-index token after the text
            (`MovingDigitsBackbone(frame_tokens=True)`).
        position_channels: feed the UNet fixed (frame, row, column) Fourier channels with the
            latents (`MovingDigitsBackbone(position_channels=True)`).
        glyph_weight: if set, weight each latent element's squared error by
            1 + (glyph_weight - 1) x (the fraction of its 4x4 pixel patch inside the 12x12 glyph box),
            `glyph_box_weights`; the glyph box is ~14 % of a frame, so with plain MSE the shape of the
            digit (the only thing the digit word decides) is a small part of the loss.
        pooled_text: a UNet with SDXL's pooled-text path (`build_unet(pooled_text=True)`): the mean
            text state is also added to the timestep embedding, a global route for the digit word.
        text_encoder_dir: read the frozen text tower from this folder instead of `out_dir/text_encoder`
            (e.g. `out_dir/reward_video/text_encoder`, the contrastively trained one).
        image_batch: joint image-video training (VideoCrafter2's recipe for per-frame quality): every
            step also trains on this many single frames (one random frame of as many fresh videos,
            as 1-frame clips with the same captions), whose loss is added to the videos'. A frame costs
            an eighth of a video, so the digit shapes are seen many more times per second.

    Returns:
        dict with steps, seconds, final loss and the intermediate evaluations.

    Raises:
        ConfigError: `snr_floor` without `min_snr_gamma`, or above it.
    """
    from ...schedule import NoiseSchedule
    from .dataset import prompt_subset

    if snr_floor is not None and (min_snr_gamma is None or snr_floor > min_snr_gamma):
        raise ConfigError(f"snr_floor ({snr_floor}) needs min_snr_gamma set and >= it, got {min_snr_gamma}")
    out = world_dir(out_dir)
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 505])
    gen = torch.Generator().manual_seed(seed)
    unet = md_models.build_unet(seed=seed, position_channels=position_channels, pooled_text=pooled_text)
    if init_from is not None:
        from diffusers import UNetMotionModel

        unet.load_state_dict(UNetMotionModel.from_pretrained(init_from).state_dict())
    backbone = md_models.build_backbone(
        unet,
        md_models.load_vae(out),
        md_models.load_text_encoder(out) if text_encoder_dir is None else _load_text_tower(text_encoder_dir),
        md_models.load_tokenizer(out),
        NoiseSchedule.make(beta_end=beta_end, prediction_type=prediction_type),
        frame_tokens=frame_tokens,
        position_channels=position_channels,
    )
    schedule = backbone.schedule
    ema = copy.deepcopy(unet).requires_grad_(False).eval()
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.01)
    text_cache = TextCache(backbone.encode_prompt)  # the text tower is frozen: encode each caption once

    evals: list[dict] = []
    losses: list[float] = []
    t0 = time.time()
    bar = tqdm(range(steps), desc="teacher", disable=not progress, mininterval=2.0)
    for step in bar:
        unet.train()
        set_lr(opt, cosine_lr(step, steps, warmup, lr))
        # 1. data: videos -> scaled latents z0 (B, 4, 8, 8, 8); captions with CFG dropout
        z0, cond, specs = latent_batch(backbone, text_cache, rng, gen, batch_size, paraphrase_prob, cond_dropout)
        # 2. forward noising z_t = alpha_t z0 + sigma_t eps (DDPM Eq. 4)
        t = torch.randint(0, schedule.num_train_timesteps, (batch_size,), generator=gen)
        n_high = int(round(high_noise_frac * batch_size))
        if n_high:
            t[:n_high] = torch.randint(high_noise_from, schedule.num_train_timesteps, (n_high,), generator=gen)
        eps = torch.randn(z0.shape, generator=gen)
        z_t = schedule.add_noise(z0, eps, t)
        # 3. epsilon- (or v-) prediction loss, optionally min-SNR weighted
        pred = backbone.model_output(z_t, t, cond)
        target = schedule.get_velocity(z0, eps, t) if prediction_type == "v_prediction" else eps
        err = (pred - target).pow(2)
        if glyph_weight is not None:
            err = err * glyph_box_weights(specs, z0.shape[-1], glyph_weight)[:, None]
        per_sample = err.mean(dim=(1, 2, 3, 4))
        if min_snr_gamma is not None:
            abar = schedule.abar(t)
            per_sample = per_sample * snr_loss_weight(abar / (1 - abar), prediction_type, min_snr_gamma, snr_floor)
        if x0_weight_cap is not None:
            abar = schedule.abar(t)
            per_sample = per_sample * ((1 - abar) / abar).clamp(1.0, x0_weight_cap)
        loss = per_sample.mean()
        if image_batch:
            loss = loss + _image_loss(backbone, text_cache, rng, gen, image_batch, cond_dropout, paraphrase_prob,
                                      prediction_type, min_snr_gamma, snr_floor)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        # 4. EMA of the weights (what is saved and evaluated), decay warmed up over the first steps
        ema_update(ema, unet, min(ema_decay, (1 + step) / (10 + step)))
        losses.append(loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-100:]):.4f}")
        if eval_every and (step + 1) % eval_every == 0 and step + 1 < steps:
            res = _eval_ema(backbone, unet, ema, prompt_subset(eval_prompts, seed=1))
            res["step"] = step + 1
            res["elapsed"] = time.time() - t0
            evals.append(res)
            if save_every_eval:  # a usable teacher on disk even if the run is stopped early
                _save_teacher(backbone, unet, ema, out)
            tqdm.write(f"[teacher step {step + 1}] " + json.dumps({k: round(v, 3) for k, v in res.items()}))
            if callback is not None:
                callback(step + 1, res)
    _save_teacher(backbone, unet, ema, out)
    backbone.unet = ema
    info = {
        "stage": "teacher",
        "steps": steps,
        "seconds": time.time() - t0,
        "final_loss": float(np.mean(losses[-200:])),
        "evals": evals,
        "unet_params": sum(p.numel() for p in ema.parameters()),
    }
    write_log(out / "logs", "teacher.json", info)
    return info


def _image_loss(backbone, text_cache, rng, gen, n, cond_dropout, paraphrase_prob, prediction_type, gamma, floor):
    """The denoising loss of `n` single frames (1-frame clips: one random frame of each of `n` fresh
    videos, with their captions and CFG dropout), weighted like the videos' (timesteps uniform)."""
    schedule = backbone.schedule
    videos, captions, _ = sample_batch(rng, n, paraphrase_prob=paraphrase_prob)
    captions = ["" if rng.random() < cond_dropout else c for c in captions]
    k = torch.from_numpy(rng.integers(0, videos.shape[2], n))
    frames = videos[torch.arange(n), :, k][:, :, None]  # (n, 3, 1, H, W)
    z0 = backbone.encode_video(frames, generator=gen)
    t = torch.randint(0, schedule.num_train_timesteps, (n,), generator=gen)
    eps = torch.randn(z0.shape, generator=gen)
    pred = backbone.model_output(schedule.add_noise(z0, eps, t), t, text_cache(captions, z0.device))
    target = schedule.get_velocity(z0, eps, t) if prediction_type == "v_prediction" else eps
    per_sample = (pred - target).pow(2).mean(dim=(1, 2, 3, 4))
    if gamma is not None:
        abar = schedule.abar(t)
        per_sample = per_sample * snr_loss_weight(abar / (1 - abar), prediction_type, gamma, floor)
    return per_sample.mean()


def _load_text_tower(path: str | Path):
    from transformers import CLIPTextModel

    return CLIPTextModel.from_pretrained(path, torch_dtype=torch.float32).eval()


def _save_teacher(backbone, unet, ema, out: Path) -> None:
    backbone.unet = ema
    try:
        backbone.save_pretrained(out / "teacher", save_text=False)
    finally:
        backbone.unet = unet


def _eval_ema(backbone, unet, ema, prompts: list[str]) -> dict:
    from .diagnostics import evaluate_backbone

    backbone.unet = ema
    try:
        res = evaluate_backbone(backbone, prompts, num_steps=25, cfg_scale=5.0, seed=0)
    finally:
        backbone.unet = unet
    return {k: v for k, v in res.items() if isinstance(v, float)}
