"""The world's flow-matching (FM) family: the FM teacher stage and the two FM students.

Stages (build.py, `t2v-turbo world build --family fm`), writing into the world folder:

1. "fm_teacher"   `train_fm_teacher`    -> fm_teacher/ (transformer/ in fp16, scheduler/, t2v_turbo.json)
2. "fm_students"  `train_fm_students`   -> fm_vcm/, fm_turbo/ (distilled by `t2v_turbo.train` with the
                                           `moving-digits-fm` preset; + guidance_proj.safetensors)

Both read the world's shared components from the world folder: vae/, text_encoder/, tokenizer/ (and the
students reward_image/, reward_video/). Those are the UNet family's stages 1-2; when the folder lacks them
(e.g. a fresh `--out` folder) `shared_components` copies the shipped ones, so the FM family always sits on
the same VAE, text tower and rewards as the shipped UNet family.

The flow shift (`FLOW_SHIFT = 3.0`), measured with `attribute_posterior` on the world's latents (2,400
training clips as an empirical data distribution, 160 other clips noised to x_s = (1 - s) x0 + s eps;
the posterior mass p(x0_i | x_s) on pool clips of the true clip's colour / direction / digit):

    s        0.30   0.70   0.80   0.85   0.90   0.93   0.95   0.97   0.99   (chance)
    colour   0.888  0.865  0.849  0.721  0.521  0.244  0.194  0.159  0.144  (0.143)
    direction 1.000 1.000  1.000  0.966  0.853  0.615  0.416  0.289  0.253  (0.250)
    digit    0.300  0.331  0.266  0.197  0.154  0.121  0.105  0.100  0.100  (0.100)

Colour and direction are decided between s = 0.85 and 0.97 (the glyph is repeated in all 8 frames, so its
colour and path survive a lot of noise), the digit's shape below s ~ 0.8. Unshifted, a logit-normal(0, 1)
puts 4 % of the training sigmas and a 25-step Euler grid ~3 steps in [0.85, 0.97]; shift 3 (Wan's 480p
value, the top of the 1-3 range) puts 25 % and ~6 steps there while keeping 48 % of the training mass
below s = 0.74 for the digit. (The UNet family needed the same push to high noise: beta_end 0.03 and a
quarter of each batch at t >= 800 before its teacher learned direction.)
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ...distill import ema_update
from ...errors import CheckpointError, ConfigError, InputError
from ...flow import shift_sigmas
from ...rewards.common import TextCache
from .dataset import sample_batch
from .stage_common import cosine_lr, latent_batch, set_lr, world_dir, write_log

FLOW_SHIFT = 3.0
FM_PRESET = "moving-digits-fm"
FM_TEACHER = "fm_teacher"
FM_STUDENT_NAMES = ("fm_vcm", "fm_turbo")
SHARED_COMPONENTS = ("vae", "text_encoder", "tokenizer", "reward_image", "reward_video")
SIGMA_SAMPLING = ("logit-normal", "uniform")


# ------------------------------------------------------------------------------------ shared components
def shared_components(out: Path, names: Sequence[str] = SHARED_COMPONENTS) -> list[str]:
    """Copy the shipped shared components (`names`) into the world folder `out` where it lacks them.

    Returns the names copied. Raises InputError (one line) when one is missing in both places.
    """
    from .models import ASSETS_DIR

    copied = []
    for name in names:
        if (out / name).exists():
            continue
        src = ASSETS_DIR / name
        if not src.is_dir() or out.resolve() == ASSETS_DIR.resolve():
            raise InputError(
                f"{out / name} is missing and there is no shipped copy: build the shared stages first "
                "(`t2v-turbo world build --family unet --stages vae,text_and_rewards`)"
            )
        shutil.copytree(src, out / name)
        copied.append(name)
    if copied:
        tqdm.write(f"[world] {out}: copied the shipped shared components {copied} (the FM family uses the world's)")
    return copied


# ------------------------------------------------------------------------------------ the shift measurement
@torch.no_grad()
def attribute_posterior(
    root: str | Path | None = None,
    sigmas: Sequence[float] = (0.3, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.99),
    pool: int = 2400,
    queries: int = 160,
    seed: int = 0,
) -> dict[float, dict[str, float]]:
    """Where the flow decides each attribute: for each s, the mean posterior mass that the empirical
    distribution of `pool` encoded training clips puts on clips sharing the query's colour / direction /
    digit, given x_s = (1 - s) x0 + s eps of `queries` other clips (p(i | x_s) ~ exp(-|x_s - (1 - s)
    x0_i|^2 / (2 s^2))). Chance levels: 1/7, 1/4, 1/10. ~1 minute on one thread at the defaults."""
    from . import models as md_models

    vae = md_models.load_vae(world_dir(root))
    sf = float(vae.config.scaling_factor)

    def encode(n: int, s: int):
        rng = np.random.default_rng([seed, s, 77])
        zs, specs = [], []
        for i in range(0, n, 16):
            v, _, sp = sample_batch(rng, min(16, n - i))
            frames = v.transpose(1, 2).reshape(-1, 3, v.shape[-2], v.shape[-1])
            zs.append((vae.encode(frames).latent_dist.mean * sf).reshape(len(sp), -1))
            specs += sp
        return torch.cat(zs), specs

    x_pool, p_specs = encode(pool, 0)
    x_q, q_specs = encode(queries, 1)
    g = torch.Generator().manual_seed(seed)
    attrs = {"color": lambda s: s.color, "direction": lambda s: s.direction, "digit": lambda s: s.digit}
    same = {
        a: torch.tensor([[f(q) == f(p) for p in p_specs] for q in q_specs], dtype=torch.float32)
        for a, f in attrs.items()
    }
    out = {}
    for s in sigmas:
        x = (1 - s) * x_q + s * torch.randn(x_q.shape, generator=g)
        logp = -torch.cdist(x, (1 - s) * x_pool).pow(2) / (2 * s * s)
        post = torch.softmax(logp, dim=1)
        out[float(s)] = {a: float((post * m).sum(1).mean()) for a, m in same.items()}
    return out


# ------------------------------------------------------------------------------------ the FM teacher
def sample_sigmas(
    batch: int,
    generator: torch.Generator,
    shift: float = FLOW_SHIFT,
    sampling: str = "logit-normal",
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
    high_noise_frac: float = 0.0,
    high_noise_from: float = 0.9,
) -> torch.Tensor:
    """Training noise levels (B,): u ~ logit-normal(mean, std) (SD3's "lognorm") or U(0, 1), then
    shifted, s = k u / (1 + (k - 1) u); the first round(high_noise_frac B) are replaced by draws
    uniform in [high_noise_from, 1] (after the shift)."""
    if sampling == "logit-normal":
        u = torch.sigmoid(logit_mean + logit_std * torch.randn(batch, generator=generator))
    elif sampling == "uniform":
        u = torch.rand(batch, generator=generator)
    else:
        raise ConfigError(f"unknown sigma sampling {sampling!r}; valid: {list(SIGMA_SAMPLING)}")
    s = shift_sigmas(u, shift)
    n_high = int(round(high_noise_frac * batch))
    if n_high:
        s[:n_high] = high_noise_from + (1 - high_noise_from) * torch.rand(n_high, generator=generator)
    return s


def train_fm_teacher(
    out_dir: str | Path | None = None,
    steps: int = 3000,
    batch_size: int = 8,
    lr: float = 1e-3,
    cond_dropout: float = 0.1,
    paraphrase_prob: float = 0.2,
    shift: float = FLOW_SHIFT,
    sigma_sampling: str = "logit-normal",
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
    ema_decay: float = 0.998,
    warmup: int = 100,
    weight_decay: float = 0.01,
    eval_every: int = 0,
    eval_prompts: int = 56,
    eval_cfg_scale: float = 5.0,
    eval_steps: int = 25,
    save_every_eval: bool = True,
    seed: int = 0,
    progress: bool = True,
    callback: Callable[[int, dict], None] | None = None,
    init_from: str | Path | None = None,
    storage_dtype: torch.dtype | None = torch.float16,
    transformer: dict | None = None,
    text_encoder: str = "video-reward",
    position_channels: bool = True,
    high_noise_frac: float = 0.0,
    high_noise_from: float = 0.9,
) -> dict:
    """Train the FM teacher (a `MovingDigitsWanBackbone`) by rectified flow, with classifier-free guidance
    learned through `cond_dropout` empty prompts; write `out_dir/fm_teacher/` (the EMA weights) and
    `out_dir/logs/fm_teacher.json`.

    The loop is the UNet teacher's (`stage_teacher.train_teacher`): `dataset.sample_batch` with
    paraphrases, CFG dropout, AdamW with linear warm-up then cosine decay, EMA of the weights (warmed up as
    min(ema_decay, (1 + k) / (10 + k))), gradient clipping at 1, judge checks of the EMA model every
    `eval_every` steps and a snapshot save at each.

    Loss: the velocity MSE |v_theta(x_s, 1000 s) - (eps - x0)|^2 with x_s = (1 - s) x0 + s eps
    (rectified flow), unweighted, s drawn logit-normal(0, 1) and then shifted by `shift`. Why
    logit-normal: SD3 (Esser et al. 2024) compared the rectified-flow samplings and found logit-normal(0, 1)
    best; it spends few samples at the two ends, where the velocity target is nearly determined by the
    input or irreducible (at s -> 1 the best v is x_s - E[x0]; at s -> 0 it is -x_s, the rest unpredictable
    noise), and the shift
    then moves the mass to the high noise where this world decides colour and direction (see the module
    docstring). "uniform" (then shifted) is kept as an option.

    Measured (this 2-core machine under a load of ~4.5, 1 thread, batch 8, the whole loop with the VAE
    encode): 0.48-0.52 s/step at the default size, i.e. ~25 min for 3000 steps, plus ~45 s per judge check
    (56 prompts, Euler 25 + CFG).
    200-step probes (held-out velocity MSE at s = 0.3 / 0.6 / 0.8 / 0.9 / 0.95 on 64 clips):
        patch (1, 2, 2), hidden 128, 6 layers, lr 5e-4, 200 steps (96 s): 0.851 0.675 0.802 0.873 0.850
        patch (1, 1, 1), hidden 64, 4 layers, lr 5e-4, 175 steps (96 s):  1.012 0.859 0.930 0.901 0.870
        patch (1, 2, 2), hidden 128, 6 layers, lr 1e-3, 200 steps:        0.757 0.603 0.730 0.829 0.822
    (patch 1 at hidden 128 costs 1.2 s/step: 60 min for 3000 steps.) Hence patch 2 and lr 1e-3.

    Args:
        out_dir: world folder (default: the shipped assets folder); needs vae/, text_encoder/, tokenizer/
            (copied from the shipped world when missing, `shared_components`).
        steps, batch_size, lr, weight_decay, warmup: optimizer steps, videos per step, peak AdamW lr.
        cond_dropout: probability of replacing a caption by "" (CFG training).
        paraphrase_prob: probability of a paraphrased caption.
        shift: the flow shift k (recorded in the scheduler: the Euler grid of sampling and distillation).
        sigma_sampling: "logit-normal" (default) or "uniform", before the shift.
        logit_mean, logit_std: the logit-normal's parameters.
        ema_decay: EMA decay of the saved weights.
        eval_every: every this many steps, judge EMA samples (Euler `eval_steps` steps, CFG
            `eval_cfg_scale`) on `eval_prompts` canonical prompts; 0: no checks.
        save_every_eval: also save the EMA teacher at every check.
        seed: seeds init, data and noise.
        progress: show a tqdm bar.
        callback: called as callback(step, eval_result) after each check.
        init_from: continue from a saved FM teacher folder (its transformer weights).
        storage_dtype: dtype of the saved transformer (fp16: the shipped format; None keeps float32).
        transformer: sizes overriding `fm_backbone.FM_TRANSFORMER` (patch_size, num_layers, ...).
        text_encoder: the frozen text tower: "video-reward" (default: md-video's contrastively trained
            tower, exported to `fm_text_encoder/` by `fm_text_tower`; it tells the digits apart, pooled
            cosine 0.75 between captions that differ only in the digit against 0.98 for the random tower)
            or "random" (the world's `text_encoder/`: random only in a world built with
            `train_text_and_rewards(text_encoder="random")`; the shipped one is md-video's tower too).
        position_channels: feed the transformer the fixed (frame, row, column) channels
            (`MovingDigitsWanBackbone(position_channels=True)`; RoPE alone is relative). With `init_from`
            a teacher without them, its patch embedding is widened with zero weights for the new
            channels (the same function at step 0).
        high_noise_frac, high_noise_from: that share of each batch gets sigmas uniform in
            [high_noise_from, 1] instead (the UNet teacher's "quarter of each batch at t >= 800", where
            the start noise hides the clip and only the text can set the direction); 0 keeps the draw.

    Returns:
        dict: steps, seconds, seconds_per_step, final loss, transformer parameters, the recipe, the checks.
    """
    from .dataset import prompt_subset
    from .fm_backbone import build_fm_backbone

    if not 0 <= cond_dropout < 1:
        raise ConfigError(f"cond_dropout must be in [0, 1), got {cond_dropout}")
    if sigma_sampling not in SIGMA_SAMPLING:
        raise ConfigError(f"unknown sigma sampling {sigma_sampling!r}; valid: {list(SIGMA_SAMPLING)}")
    if not 0 <= high_noise_frac <= 1 or not 0 <= high_noise_from < 1:
        raise ConfigError(f"high_noise_frac must be in [0, 1] and high_noise_from in [0, 1), got {high_noise_frac}, {high_noise_from}")
    recipe = {
        "steps": steps, "batch_size": batch_size, "lr": lr, "warmup": warmup, "schedule": "cosine",
        "weight_decay": weight_decay, "ema_decay": ema_decay, "cond_dropout": cond_dropout,
        "paraphrase_prob": paraphrase_prob, "shift": shift, "sigma_sampling": sigma_sampling,
        "logit_mean": logit_mean, "logit_std": logit_std, "seed": seed, "transformer": transformer or {},
        "high_noise_frac": high_noise_frac, "high_noise_from": high_noise_from, "num_threads": torch.get_num_threads(),
    }  # fmt: skip
    out = world_dir(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shared_components(out, ("vae", "text_encoder", "tokenizer"))
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 606])
    gen = torch.Generator().manual_seed(seed)
    if text_encoder not in ("video-reward", "random"):
        raise ConfigError(f"unknown text_encoder {text_encoder!r}; valid: ['video-reward', 'random']")
    text_dir = fm_text_tower(out) if text_encoder == "video-reward" else "text_encoder"
    backbone = build_fm_backbone(
        out, seed=seed, shift=shift, text_encoder_dir=text_dir, position_channels=position_channels, **(transformer or {})
    )
    net = backbone.unet
    if init_from is not None:
        from .fm_backbone import MovingDigitsWanBackbone

        state = MovingDigitsWanBackbone.from_pretrained(init_from, base=out).unet.state_dict()
        net.load_state_dict(widen_patch_embedding(state, net.state_dict()))
    net.requires_grad_(True)
    ema = copy.deepcopy(net).requires_grad_(False).eval()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    text_cache = TextCache(backbone.encode_prompt)  # the text tower is frozen: encode each caption once
    n_train = backbone.schedule.num_train_timesteps

    evals: list[dict] = []
    losses: list[float] = []
    t0 = time.time()
    bar = tqdm(range(steps), desc="fm teacher", disable=not progress, mininterval=2.0)
    for step in bar:
        net.train()
        set_lr(opt, cosine_lr(step, steps, warmup, lr))
        # 1. data: videos -> scaled latents x0 (B, 4, 8, 8, 8); captions with CFG dropout
        x0, cond, _ = latent_batch(backbone, text_cache, rng, gen, batch_size, paraphrase_prob, cond_dropout)
        # 2. rectified flow: x_s = (1 - s) x0 + s eps, s logit-normal then shifted; timestep t = 1000 s
        s = sample_sigmas(batch_size, gen, shift, sigma_sampling, logit_mean, logit_std, high_noise_frac, high_noise_from)
        eps = torch.randn(x0.shape, generator=gen)
        x_s = backbone.schedule.add_noise(x0, eps, s * n_train)
        # 3. velocity MSE: v_theta(x_s, t) vs v = eps - x0
        pred = backbone.model_output(x_s, s * n_train, cond)
        loss = (pred.float() - backbone.schedule.get_velocity(x0, eps)).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        # 4. EMA of the weights (what is saved and evaluated), decay warmed up over the first steps
        ema_update(ema, net, min(ema_decay, (1 + step) / (10 + step)))
        losses.append(loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-100:]):.4f}")
        if eval_every and (step + 1) % eval_every == 0 and step + 1 < steps:
            res = _eval_ema(backbone, net, ema, prompt_subset(eval_prompts, seed=1), eval_steps, eval_cfg_scale)
            res.update(step=step + 1, elapsed=time.time() - t0, loss=float(np.mean(losses[-100:])))
            evals.append(res)
            if save_every_eval:  # a usable teacher on disk even if the run is stopped early
                _save_fm(backbone, net, ema, out / FM_TEACHER, storage_dtype)
            tqdm.write(f"[fm teacher step {step + 1}] " + json.dumps({k: round(v, 3) for k, v in res.items()}))
            if callback is not None:
                callback(step + 1, res)
    seconds = time.time() - t0
    _save_fm(backbone, net, ema, out / FM_TEACHER, storage_dtype)
    info = {
        "stage": "fm_teacher",
        "steps": steps,
        "seconds": seconds,
        "seconds_per_step": seconds / max(1, steps),
        "final_loss": float(np.mean(losses[-200:])) if losses else None,
        "transformer_params": sum(p.numel() for p in ema.parameters()),
        "recipe": recipe,
        "evals": evals,
    }
    write_log(out / "logs", "fm_teacher.json", info)
    return info


def _save_fm(backbone, net, ema, path: Path, storage_dtype) -> None:
    backbone.unet = ema
    try:
        backbone.save_pretrained(path, save_text=False, storage_dtype=storage_dtype)
    finally:
        backbone.unet = net


def _eval_ema(backbone, net, ema, prompts: list[str], num_steps: int, cfg_scale: float) -> dict:
    from .diagnostics import evaluate_backbone

    backbone.unet = ema
    try:
        res = evaluate_backbone(backbone, prompts, num_steps=num_steps, cfg_scale=cfg_scale, seed=0)
    finally:
        backbone.unet = net
    return {k: v for k, v in res.items() if isinstance(v, float)}


def widen_patch_embedding(state: dict, target: dict, key: str = "patch_embedding.weight") -> dict:
    """`state` with its patch embedding (out, c_in, *k) zero-padded to the target's wider input channels
    (the extra channels start with no effect); unchanged when the widths already match."""
    w, want = state[key], target[key]
    if w.shape == want.shape:
        return state
    if w.shape[0] != want.shape[0] or w.shape[1] > want.shape[1] or w.shape[2:] != want.shape[2:]:
        raise CheckpointError(f"cannot widen {key} {tuple(w.shape)} to {tuple(want.shape)}")
    pad = torch.zeros(w.shape[0], want.shape[1] - w.shape[1], *w.shape[2:], dtype=w.dtype)
    return {**state, key: torch.cat([w, pad], dim=1)}


def fm_text_tower(out: Path) -> str:
    """Export md-video's text tower (reward_video/text_encoder, its projection dropped) as the plain
    CLIPTextModel `out/fm_text_encoder/` unless it exists; returns the folder name."""
    from transformers import CLIPTextModel

    from .fm_backbone import FM_TEXT_ENCODER

    dest = out / FM_TEXT_ENCODER
    if not dest.is_dir():
        src = out / "reward_video" / "text_encoder"
        if not src.is_dir():
            shared_components(out, ("reward_video",))
        CLIPTextModel.from_pretrained(src, torch_dtype=torch.float32).save_pretrained(dest)
    return FM_TEXT_ENCODER


# ------------------------------------------------------------------------------------ the FM students
def fm_student_recipe(name: str) -> dict:
    """The recipe `students.distill_student` runs for an FM student: the `moving-digits-fm` preset from
    the world's `fm_teacher/`, keeping transformer/, scheduler/ and the guidance file; "fm_turbo" with the
    preset's rewards (md-image + md-video), "fm_vcm" with none."""
    from ...config import load_config
    from ...models.wan_io import GUIDANCE_FILE

    if name not in FM_STUDENT_NAMES:
        raise InputError(f"unknown FM student {name!r}; valid: {list(FM_STUDENT_NAMES)}")
    rewards = []
    if name == "fm_turbo":
        for r in load_config(FM_PRESET).rewards:
            spec = {"name": r.name, "weight": r.weight}
            if r.frames is not None:
                spec["frames"] = r.frames
            rewards.append(spec)
    return {
        "rewards": rewards,
        "preset": FM_PRESET,
        "teacher": FM_TEACHER,
        "keep": ["transformer", "scheduler", GUIDANCE_FILE],
    }


def store_fp16(folder: Path) -> None:
    """Rewrite the transformer weights under `folder/transformer` in fp16 (the shipped storage; loading
    gives float32)."""
    from safetensors.torch import load_file, save_file

    for f in sorted((folder / "transformer").glob("*.safetensors")):
        state = load_file(str(f))
        save_file({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, str(f), {"format": "pt"})


def train_fm_students(
    out_dir: str | Path | None = None,
    trainer: Callable[[Path, str, dict], dict] | None = None,
    names: Sequence[str] = FM_STUDENT_NAMES,
    fp16: bool = True,
) -> dict:
    """Distill `out_dir/fm_teacher` into `out_dir/<name>/` for each FM student with `trainer(out_dir, name,
    recipe)` (default `students.distill_student`, `recipe` from `fm_student_recipe`), then store the
    transformers in fp16. Returns per-student logs and seconds."""
    from .students import distill_student

    out = world_dir(out_dir)
    if not (out / FM_TEACHER / "transformer").is_dir():
        raise InputError(f"{out / FM_TEACHER} is missing: run the fm_teacher stage first")
    shared_components(out)
    trainer = trainer or distill_student
    info: dict = {"stage": "fm_students"}
    t0 = time.time()
    for name in names:
        info[name] = trainer(out, name, fm_student_recipe(name))
        if fp16 and (out / name / "transformer").is_dir():
            store_fp16(out / name)
    info["seconds"] = time.time() - t0
    return info
