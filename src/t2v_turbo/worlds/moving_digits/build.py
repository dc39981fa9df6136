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
from collections.abc import Callable, Sequence
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
    steps: int = 600,
    batch_frames: int = 32,
    lr: float = 2e-3,
    glyph_weight: float = 10.0,
    kl_weight: float = 1e-6,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Train the world's VAE (diffusers AutoencoderKL, 4 latent channels) on frames; write `out_dir/vae`.

    Loss: per-pixel MSE + L1 on [-1, 1] frames, glyph pixels weighted by 1 + `glyph_weight`, plus
    `kl_weight` x KL. Each step sees one random frame of each of `batch_frames` fresh videos. The
    scaling factor recorded in the
    saved config is 1 / std of posterior samples over 64 held-out-glyph videos.

    Args:
        out_dir: world folder (default: the shipped assets folder).
        steps: optimizer steps.
        batch_frames: frames (each from a different video) per step.
        lr: peak AdamW learning rate (warm-up then cosine decay).
        glyph_weight: extra loss weight of glyph (non-black) pixels.
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
        # one random frame from each of `batch_frames` videos: (B, 3, H, W)
        videos, _, _ = sample_batch(rng, batch_frames)
        x = videos[
            torch.arange(batch_frames), :, torch.from_numpy(rng.integers(0, videos.shape[2], batch_frames))
        ]
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        # glyph pixels are ~7% of a frame: weight them up so the black background does not dominate
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
    _write_log(out / "logs", "vae.json", info)
    return info


# ------------------------------------------------------------------------------------------ 2. text + rewards
def train_text_and_rewards(
    out_dir: str | Path | None = None,
    image_steps: int = 2500,
    video_steps: int = 1600,
    image_lr: float = 1e-3,
    video_lr: float = 2e-3,
    batch_size: int = 48,
    kinds: Sequence[str] = ("video", "image"),
    text_encoder: str = "random",
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Build the tokenizer, train both reward models contrastively, and export the text encoder.

    Writes `tokenizer/`, `reward_image/` (md-image), `reward_video/` (md-video) and `text_encoder/`
    (the teacher's frozen CLIPTextModel, see `text_encoder`).

    Args:
        out_dir: world folder (default: the shipped assets folder).
        image_steps: contrastive steps of the image reward (one frame per video, `batch_size` videos).
        video_steps: contrastive steps of the video reward.
        image_lr: peak learning rate of the image reward (a ViT: lower than the conv net's).
        video_lr: peak learning rate of the video reward.
        batch_size: videos per step.
        kinds: which rewards to train; both by default.
        text_encoder: the teacher's frozen text tower: "random" (a seeded random CLIPTextModel, the
            default) or "video-reward" (the video reward's contrastively trained text tower). Random
            is the default because contrastive training learns the easy attributes first: after 400
            steps the reward's text tower had nearly merged the digits (pooled cosine 0.99 between
            "digit 3" and "digit 7"), while a random tower keeps every token distinct and the
            teacher's cross-attention learns what it needs.
        seed: seeds inits and data.
        progress: show tqdm bars.

    Returns:
        dict with times and zero-shot accuracies (on held-out glyphs) of both rewards.
    """
    from transformers import CLIPTextModel

    from .rewards import build_image_reward, build_video_reward, reward_accuracy, train_reward

    out = Path(out_dir) if out_dir is not None else default_dir()
    t0 = time.time()
    tokenizer = md_models.build_tokenizer()
    tokenizer.save_pretrained(out / "tokenizer")
    info: dict = {"stage": "text_and_rewards"}
    for kind, steps, lr in (("video", video_steps, video_lr), ("image", image_steps, image_lr)):
        if kind not in kinds:
            continue
        reward = (build_video_reward if kind == "video" else build_image_reward)(tokenizer, seed=seed)
        info[f"{kind}_train"] = train_reward(
            reward, steps=steps, batch_size=batch_size, lr=lr, seed=seed, progress=progress
        )
        info[f"{kind}_accuracy"] = reward_accuracy(reward, seed=seed)
        reward.save_pretrained(out / f"reward_{kind}")
        if kind == "video" and text_encoder == "video-reward":
            text = CLIPTextModel(reward.text_encoder.config)
            text.load_state_dict(reward.text_encoder.text_model.state_dict())
            text.eval().save_pretrained(out / "text_encoder")
    if text_encoder == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            text = CLIPTextModel(md_models.text_config(tokenizer))
        text.eval().save_pretrained(out / "text_encoder")
    elif text_encoder != "video-reward":
        raise ValueError(f"unknown text_encoder {text_encoder!r}; valid: ['random', 'video-reward']")
    info["seconds"] = time.time() - t0
    _write_log(out / "logs", "text_and_rewards.json", info)
    return info


# ------------------------------------------------------------------------------------------ 3. teacher
@torch.no_grad()
def evaluate_backbone(
    backbone,
    prompts: Sequence[str] | None = None,
    num_steps: int = 50,
    guidance: float = 7.5,
    seed: int = 0,
    batch_size: int = 70,
) -> dict:
    """Judge scores of a backbone's samples (one per prompt; default all 280 canonical prompts).

    A teacher samples with DDIM + CFG (`guidance` = the usual CFG scale), a student with the
    consistency sampler (`guidance` = its embedded w). Returns the judge summary plus seconds.
    """
    from ...pipeline import generate
    from .dataset import canonical_prompts
    from .judge import get_judge

    prompts = list(prompts) if prompts is not None else canonical_prompts()
    gen = generate(
        backbone, prompts, num_steps=num_steps, guidance=guidance, seed=seed, batch_size=batch_size
    )
    out = get_judge().evaluate(gen.videos, prompts)
    out.update(seconds=gen.seconds, num_steps=num_steps, guidance=guidance, seed=seed)
    return out


@torch.no_grad()
def word_sensitivity(
    backbone,
    timesteps: Sequence[int] = (950, 800, 600, 400, 200),
    num_videos: int = 28,
    seed: int = 0,
) -> dict[int, dict[str, float]]:
    """How much the denoiser uses each part of the prompt: its training loss (eps- or v-MSE) on
    ground-truth videos with the true caption, with one attribute swapped (colour, digit,
    direction), and with the empty prompt.

    The same noised latents are scored under every caption, so a model that ignores an attribute
    gets exactly the "true" loss for its swap. Returns {t: {"true", "color", "digit", "direction",
    "empty"}}. (The shipped MovingDigits teacher, 28 videos: reversing the direction raises the loss
    50-95 % at t = 950 ... 600, a colour swap 18-132 %, a digit swap at most 0.6 %; the epsilon teacher
    shipped before it ignored the direction, 0.1 % at most: `t2v-turbo world sensitivity`.)
    """
    from .dataset import (
        COLORS,
        DIGITS,
        DIRECTIONS,
        canonical_caption,
        parse_caption,
        prompt_subset,
        prompt_videos,
    )

    prompts = prompt_subset(num_videos, seed=seed)
    videos, _ = prompt_videos(prompts, seed=seed, split="train")
    gen = torch.Generator().manual_seed(seed)
    z0 = backbone.encode_video(videos, generator=gen)
    colors, digits, dirs = list(COLORS), list(DIGITS), list(DIRECTIONS)

    def swap(p: str, what: str) -> str:
        c, d, m = parse_caption(p)
        if what == "color":
            c = colors[(colors.index(c) + 1) % len(colors)]
        elif what == "digit":
            d = digits[(digits.index(d) + 1) % len(digits)]
        else:
            m = dirs[dirs.index(m) ^ 1]  # the opposite direction (left <-> right, up <-> down)
        return canonical_caption(c, d, m)

    captions = {
        "true": prompts,
        **{w: [swap(p, w) for p in prompts] for w in ("color", "digit", "direction")},
        "empty": [""] * len(prompts),
    }
    conds = {k: backbone.encode_prompt(v) for k, v in captions.items()}
    sched = backbone.schedule  # the loss in the model's own parameterisation (eps or v)
    bad = [t for t in timesteps if not 0 <= int(t) < sched.num_train_timesteps]
    if bad:
        raise ValueError(f"timesteps must be in 0..{sched.num_train_timesteps - 1}, got {bad}")
    out: dict[int, dict[str, float]] = {}
    for t in timesteps:
        eps = torch.randn(z0.shape, generator=gen)
        tt = torch.full((len(prompts),), int(t))
        z_t = sched.add_noise(z0, eps, tt)
        target = sched.get_velocity(z0, eps, tt) if sched.prediction_type == "v_prediction" else eps
        out[int(t)] = {
            k: float((backbone.model_output(z_t, tt, c) - target).pow(2).mean()) for k, c in conds.items()
        }
    return out


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
) -> dict:
    """Train the teacher: a text-to-video latent diffusion UNetMotionModel on the scaled-linear
    schedule, classifier-free guidance via `cond_dropout` empty prompts. Writes `out_dir/teacher/`.

    Needs `vae/`, `text_encoder/` and `tokenizer/` in `out_dir` (stages 1-2). The saved UNet holds
    the EMA weights. The defaults are the shipped teacher's recipe, the first that made the tiny
    teacher follow direction words (every epsilon-prediction variant stayed at chance, see the
    README): v-prediction on a near-zero terminal SNR (beta_end 0.03, sqrt(abar_T) = 0.0024, so the
    start noise hides the clip's track), min-SNR-5 weighting floored at an x0 weight of 1, a quarter
    of each batch at t >= 800, and fixed (frame, row, column) position channels with the latents.

    Args:
        out_dir: world folder (default: the shipped assets folder).
        steps: optimizer steps.
        batch_size: videos per step.
        lr: peak AdamW learning rate (warm-up, cosine decay).
        cond_dropout: probability of replacing a caption by "" (CFG training).
        paraphrase_prob: probability of a paraphrased caption.
        min_snr_gamma: min-SNR loss weighting; None for plain MSE.
        snr_floor: with `min_snr_gamma`, weight the loss as clamp(SNR, snr_floor, gamma) in x0 terms
            instead of min(SNR, gamma): min-SNR's cap plus the floor of Salimans & Ho's truncated-SNR
            weighting, so the noisiest steps (where the layout of the clip is decided) are not
            weighted ~SNR = 0 (1.0: an x0-error weight of at least 1).
        ema_decay: EMA decay of the saved weights.
        eval_every: every this many steps, judge EMA samples (DDIM 25, CFG 5) on `eval_prompts` prompts.
        eval_prompts: size of the seeded canonical-prompt subset for those checks.
        save_every_eval: also save the EMA teacher at every evaluation.
        seed: seeds init, data and noise.
        progress: show a tqdm bar.
        callback: called as callback(step, eval_result) after each evaluation.
        init_from: continue from a saved teacher UNet folder (e.g. a snapshot's `teacher/unet`).
        warmup: learning-rate warm-up steps.
        x0_weight_cap: if set, multiply the loss by clamp(1 / SNR, 1, cap): up to `cap` times the
            weight where the eps loss barely sees the clean video (high noise decides the layout).
        high_noise_frac: fraction of each batch whose timesteps are drawn from
            [high_noise_from, T) instead of [0, T).
        high_noise_from: lower end of that range.
        prediction_type: "epsilon" or "v_prediction" (the loss is then the MSE on v).
        beta_end: end of the scaled-linear beta schedule (0.012: Stable Diffusion's; 0.03 gives a
            terminal signal rate sqrt(abar_T) of 0.0024 instead of 0.068).
        frame_tokens: condition every frame on a frame-index token after the text
            (`DiffusersVideoBackbone(frame_tokens=True)`).
        position_channels: feed the UNet fixed (frame, row, column) Fourier channels with the
            latents (`DiffusersVideoBackbone(position_channels=True)`).

    Returns:
        dict with steps, seconds, final loss and the intermediate evaluations.
    """
    import copy

    from .dataset import prompt_subset

    if snr_floor is not None and (min_snr_gamma is None or snr_floor > min_snr_gamma):
        raise ValueError(f"snr_floor ({snr_floor}) needs min_snr_gamma set and >= it, got {min_snr_gamma}")
    out = Path(out_dir) if out_dir is not None else default_dir()
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 505])
    gen = torch.Generator().manual_seed(seed)
    unet = md_models.build_unet(seed=seed, position_channels=position_channels)
    if init_from is not None:
        from diffusers import UNetMotionModel

        unet.load_state_dict(UNetMotionModel.from_pretrained(init_from).state_dict())
    from ...schedule import NoiseSchedule

    backbone = md_models.build_backbone(
        unet,
        md_models.load_vae(out),
        md_models.load_text_encoder(out),
        md_models.load_tokenizer(out),
        NoiseSchedule.make(beta_end=beta_end, prediction_type=prediction_type),
        frame_tokens=frame_tokens,
        position_channels=position_channels,
    )
    schedule = backbone.schedule
    ema = copy.deepcopy(unet).requires_grad_(False).eval()
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.01)
    text_cache: dict[str, torch.Tensor] = {}

    def encode(captions: list[str]) -> torch.Tensor:
        missing = [c for c in dict.fromkeys(captions) if c not in text_cache]
        if missing:
            text_cache.update(zip(missing, backbone.encode_prompt(missing)))
        return torch.stack([text_cache[c] for c in captions])

    evals: list[dict] = []
    losses: list[float] = []
    t0 = time.time()
    bar = tqdm(range(steps), desc="teacher", disable=not progress, mininterval=2.0)
    for step in bar:
        unet.train()
        _set_lr(opt, _cosine_lr(step, steps, warmup, lr))
        # 1. data: videos -> scaled latents z0 (B, 4, 8, 8, 8); captions with CFG dropout
        videos, captions, _ = sample_batch(rng, batch_size, paraphrase_prob=paraphrase_prob)
        captions = ["" if rng.random() < cond_dropout else c for c in captions]
        z0 = backbone.encode_video(videos, generator=gen)
        cond = encode(captions)
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
        per_sample = (pred - target).pow(2).mean(dim=(1, 2, 3, 4))
        if min_snr_gamma is not None:
            abar = schedule.abar(t)
            per_sample = per_sample * snr_loss_weight(abar / (1 - abar), prediction_type, min_snr_gamma, snr_floor)
        if x0_weight_cap is not None:
            abar = schedule.abar(t)
            per_sample = per_sample * ((1 - abar) / abar).clamp(1.0, x0_weight_cap)
        loss = per_sample.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        # 4. EMA of the weights (what is saved and evaluated)
        decay = min(ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), unet.parameters()):
                pe.lerp_(p, 1 - decay)
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
    _write_log(out / "logs", "teacher.json", info)
    return info


def _save_teacher(backbone, unet, ema, out: Path) -> None:
    backbone.unet = ema
    try:
        backbone.save_pretrained(out / "teacher", save_text=False)
    finally:
        backbone.unet = unet


def _eval_ema(backbone, unet, ema, prompts: list[str]) -> dict:
    backbone.unet = ema
    try:
        res = evaluate_backbone(backbone, prompts, num_steps=25, guidance=5.0, seed=0)
    finally:
        backbone.unet = unet
    return {k: v for k, v in res.items() if isinstance(v, float)}


# ------------------------------------------------------------------------------------------ 4. students (hook)
STUDENTS = {
    # name -> distillation recipe for the project's trainer (T2V-Turbo vs plain VCM, same everything else)
    "turbo": {"rewards": [{"name": "md-image", "weight": 1.0}, {"name": "md-video", "weight": 2.0}]},
    "vcm": {"rewards": []},
}


def train_students(
    out_dir: str | Path | None = None,
    trainer: Callable[[Path, str, dict], dict] | None = None,
    names: Sequence[str] = tuple(STUDENTS),
) -> dict:
    """Hook for stage 4: distill the teacher into the two students (`turbo`, `vcm`) under `out_dir/<name>/`.

    The students are trained by the project's trainer, not here: pass `trainer(out_dir, name, recipe)`,
    which must distill `out_dir/teacher` with `recipe` (see `STUDENTS`) and save the student UNet
    folder `out_dir/<name>/` (loadable with `models.load_teacher(out_dir, name)`).

    Raises:
        NotImplementedError: when no trainer is given.
    """
    out = Path(out_dir) if out_dir is not None else default_dir()
    if trainer is None:
        raise NotImplementedError(
            "MovingDigits students are distilled by the project's trainer: pass trainer=(out_dir, name, recipe)"
        )
    info: dict = {"stage": "students"}
    t0 = time.time()
    for name in names:
        info[name] = trainer(out, name, STUDENTS[name])
    info["seconds"] = time.time() - t0
    return info


# ------------------------------------------------------------------------------------------ all
QUICK = {  # smoke-test sizes: minutes -> seconds; the models are the same, just barely trained
    "vae": {"steps": 20},
    "text_and_rewards": {"image_steps": 10, "video_steps": 10, "batch_size": 16},
    "teacher": {"steps": 10, "batch_size": 2},
}


def build_world(
    out_dir: str | Path | None = None,
    stages: Sequence[str] = ("vae", "text_and_rewards", "teacher"),
    quick: bool = False,
    seed: int = 0,
    num_threads: int | None = None,
    progress: bool = True,
    trainer: Callable[[Path, str, dict], dict] | None = None,
) -> dict:
    """Rebuild the MovingDigits world from scratch: VAE, tokenizer + text encoder + rewards, teacher
    (and the students when "students" is among `stages` and a `trainer` is given).

    Args:
        out_dir: where to write (default: the shipped `assets/moving_digits/`; `quick` requires one).
        stages: which stages to run, in order; later stages read earlier ones' outputs from `out_dir`.
        quick: a seconds-long smoke run with tiny step counts (weights are not useful).
        seed: seeds every stage.
        num_threads: torch CPU threads (1 is much faster than 2 on a machine shared with other jobs).
        progress: show tqdm bars.
        trainer: the students' trainer (see `train_students`).

    Returns:
        dict: per-stage logs and "seconds" for the whole build.
    """
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stages {unknown}; valid: {list(STAGES)}")
    if quick and out_dir is None:
        raise ValueError("a quick build needs an explicit out_dir (it would overwrite the shipped weights)")
    out = Path(out_dir) if out_dir is not None else default_dir()
    out.mkdir(parents=True, exist_ok=True)
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    funcs = {
        "vae": train_vae,
        "text_and_rewards": train_text_and_rewards,
        "teacher": train_teacher,
    }
    t0 = time.time()
    report: dict = {"out_dir": str(out), "quick": quick}
    for stage in (s for s in STAGES if s in stages):
        t_stage = time.time()
        if stage == "students":
            report[stage] = train_students(out, trainer)
        else:
            kw = dict(QUICK[stage]) if quick else {}
            report[stage] = funcs[stage](out, seed=seed, progress=progress, **kw)
        report[stage]["wall_seconds"] = time.time() - t_stage
        tqdm.write(f"[world] stage {stage} done in {time.time() - t_stage:.0f} s")
    report["seconds"] = time.time() - t0
    tqdm.write(f"[world] built {list(stages)} in {report['seconds']:.0f} s -> {out}")
    _write_log(out / "logs", "build.json", report)
    return report
