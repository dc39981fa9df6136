"""Few-step generation as a library: sample videos from a backbone (`generate`) and write them
(`save_videos`). The command line lives in commands/generate.py."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from .errors import InputError
from .flow import consistency_sigmas, euler_cfg_sample, flow_consistency_sample, is_flow
from .models.base import Backbone, guidance_to_w
from .models.registry import BACKBONES, MODELS, load_backbone  # noqa: F401  (re-exported)
from .sampling import consistency_sample, consistency_timesteps, ddim_cfg_sample, ddim_timesteps

DEFAULT_W = 7.5  # the student's embedded guidance (T2V-Turbo convention)


def teacher_cfg_scale(w: float, cfg_scale: float | None = None) -> float:
    """A teacher's CFG scale: `cfg_scale` if given, else 1 + w, the scale of the teacher target a
    student trained at w imitates (T2V-Turbo: eps_c + w (eps_c - eps_u) = CFG with g = 1 + w)."""
    return float(cfg_scale) if cfg_scale is not None else 1.0 + float(w)

def is_student(model: Backbone) -> bool:
    """A few-step student: a w embedding, or (option b, Wan) a plain network distilled at a fixed w."""
    return model.w_embedding_dim is not None or getattr(model, "fixed_w", None) is not None


def sampler_name(model: Backbone) -> str:
    """The sampler `generate` runs: "consistency" for students, "euler-cfg" for flow teachers (Wan),
    "ddim-cfg" for DDPM teachers."""
    if is_student(model):
        return "consistency"
    return "euler-cfg" if is_flow(model.schedule) else "ddim-cfg"


@dataclass
class Generation:
    """Videos (N, 3, T, H, W) in [-1, 1] with what produced them."""

    videos: Tensor
    prompts: list[str]
    seconds: float
    unet_evals: int
    timesteps: list[int] = field(default_factory=list)
    settings: dict = field(default_factory=dict)


@torch.no_grad()
def generate(
    model: Backbone,
    prompts: Sequence[str],
    num_steps: int = 4,
    w: float = DEFAULT_W,
    cfg_scale: float | None = None,
    seed: int = 0,
    num_frames: int | None = None,
    origin_steps: int | None = None,
    timestep_rule: str = "t2v-turbo",
    timesteps: Sequence[int] | None = None,
    batch_size: int = 64,
    decode: bool = True,
    progress: Callable[[int, int], None] | None = None,
    motion_guidance: float | None = None,
    motion_percentage: float | None = None,
    motion_conditioning: bool | None = None,
) -> Generation:
    """Sample one video per prompt.

    A student (a model with a w embedding) uses the multistep consistency sampler and embeds `w`
    (T2V-Turbo convention, converted to the checkpoint's own). A teacher uses DDIM with
    classifier-free guidance at scale `cfg_scale` (default 1 + w, see `teacher_cfg_scale`), so the
    same prompt, seed and w give the same teacher video in every command.

    Args:
        num_steps: sampler steps (students: 1..origin_steps; teachers: 1..num_train_timesteps).
        seed: seeds the one CPU generator every random draw comes from (0 <= seed < 2**63).
        origin_steps: the LCM origin grid the student's timesteps come from (default: the model's
            `sampling_defaults`, e.g. 200 for T2V-Turbo-v2 students: 4 steps = [999, 749, 499, 249];
            else 50: [999, 759, 519, 279]).
        progress: a callable `(done_steps, total_steps)` called after every sampler step.
        motion_guidance: T2V-Turbo-v2 students only (a motion embedding, `unet_mg.pt`): the motion
            strength embedded like w (the authors' `motion_gs`; default from `sampling_defaults`, 0.05).
        motion_percentage: share of the schedule that gets it (the authors' `percentage`; default 0.5):
            a step at timestep t embeds `motion_guidance` when t >= T (1 - p) (T = 1000 training steps)
            and 0 otherwise, as the authors' pipeline does. With an origin grid that is a multiple of
            the step count this is the first ceil(p * steps) steps (4 steps, p = 0.3: 999 and 749);
            otherwise count the timesteps (16 steps on the 200 grid, p = 0.5: 9 steps, t >= 519).
        motion_conditioning: False runs a v2 student without the motion embedding (the authors'
            use_motion_cond=False: combine_proj skipped); default True for a model with one.
    Raises:
        InputError: no prompts, a non-finite or negative w / cfg_scale, steps or seed out of range,
            motion settings for a model without a motion embedding or a percentage outside [0, 1].
    """
    prompts = list(prompts)
    if not prompts:
        raise InputError("no prompts given")
    if is_flow(model.schedule):
        if motion_guidance is not None or motion_percentage is not None or motion_conditioning:
            raise InputError("motion_guidance / motion_percentage need a T2V-Turbo-v2 student with a motion embedding")
        return _generate_flow(
            model, prompts, num_steps, w, cfg_scale, seed, num_frames, origin_steps, timestep_rule, timesteps,
            batch_size, decode, progress,
        )  # fmt: skip
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 <= int(seed) < 2**63:
        raise InputError(f"seed must be in [0, 2**63), got {seed}")
    is_student = model.w_embedding_dim is not None
    defaults = dict(getattr(model, "sampling_defaults", None) or {})
    origin_steps = int(origin_steps if origin_steps is not None else defaults.get("origin_steps", 50))
    if origin_steps < 1:
        raise InputError(f"origin_steps must be >= 1, got {origin_steps}")
    has_motion = is_student and getattr(model, "motion_embedding_dim", None) is not None
    motion_on = has_motion if motion_conditioning is None else bool(motion_conditioning)
    if motion_on and not has_motion:
        raise InputError("motion conditioning needs a T2V-Turbo-v2 student (a UNet with motion_cond_proj)")
    if not has_motion and (motion_guidance is not None or motion_percentage is not None):
        raise InputError("motion_guidance / motion_percentage need a T2V-Turbo-v2 student with a motion embedding")
    if motion_on:
        motion_guidance = float(defaults.get("motion_guidance", 0.05) if motion_guidance is None else motion_guidance)
        motion_percentage = float(
            defaults.get("motion_percentage", 0.5) if motion_percentage is None else motion_percentage
        )
        if not math.isfinite(motion_guidance):
            raise InputError(f"motion_guidance must be a finite number, got {motion_guidance}")
        if not 0.0 <= motion_percentage <= 1.0:
            raise InputError(f"motion_percentage must be in [0, 1], got {motion_percentage}")
    cfg = teacher_cfg_scale(w, cfg_scale)
    for name, value in (("w", w), ("cfg_scale", cfg)):
        if not math.isfinite(value) or value < 0:
            raise InputError(f"{name} must be a finite number >= 0, got {value}")
    n_train = model.schedule.num_train_timesteps
    if is_student:
        if timesteps is not None:
            ts = [int(t) for t in timesteps]
        else:
            if not 1 <= num_steps <= origin_steps:
                raise InputError(f"a student samples 1..{origin_steps} steps (the origin grid), got {num_steps}")
            ts = consistency_timesteps(num_steps, origin_steps, timestep_rule, n_train)
    else:
        if not 1 <= num_steps <= n_train:
            raise InputError(f"a teacher samples 1..{n_train} DDIM steps, got {num_steps}")
        ts = ddim_timesteps(num_steps, n_train)
    motion_threshold = n_train * (1.0 - motion_percentage) if motion_on else None
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    use_cfg = not is_student and cfg > 1
    uncond = model.encode_prompt([""]) if use_cfg else None
    tick = _step_counter(len(ts) * _num_chunks(len(prompts), batch_size), progress)

    videos, evals = [], 0
    start = time.perf_counter()
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i : i + batch_size]
        cond = model.encode_prompt(chunk)
        shape = model.latent_shape(len(chunk), num_frames)
        noise = torch.randn(shape, generator=g).to(model.device, model.dtype)
        if is_student and motion_on:
            w_emb = model.w_embedding(guidance_to_w(w, model.guidance_convention), len(chunk))
            m_on, m_off = (model.motion_embedding(m, len(chunk)) for m in (motion_guidance, 0.0))

            def fn(z, t, cond=cond, w_emb=w_emb, m_on=m_on, m_off=m_off):
                # the authors' rule: motion strength at t >= T (1 - p), the embedding of 0 below
                m_emb = m_on if int(t.reshape(-1)[0]) >= motion_threshold else m_off
                return model.model_output(z, t, cond, w_emb, m_emb)

            z = consistency_sample(fn, model.schedule, shape, ts, generator=g, latents=noise, callback=tick)
            evals = len(ts)
        elif is_student:
            w_emb = model.w_embedding(guidance_to_w(w, model.guidance_convention), len(chunk))

            def fn(z, t, cond=cond, w_emb=w_emb):
                return model.model_output(z, t, cond, w_emb)

            z = consistency_sample(fn, model.schedule, shape, ts, generator=g, latents=noise, callback=tick)
            evals = len(ts)
        else:
            unc = uncond.expand(len(chunk), -1, -1) if uncond is not None else None

            def both(z, t, cond=cond, unc=unc):
                out = model.model_output(torch.cat([z, z]), torch.cat([t, t]), torch.cat([cond, unc]))
                return out.chunk(2)

            def cond_fn(z, t, cond=cond):
                return model.model_output(z, t, cond)

            z = ddim_cfg_sample(
                cond_fn,
                None,
                model.schedule,
                shape,
                num_steps,
                cfg,
                generator=g,
                latents=noise,
                model_fn_batched=both if unc is not None else None,
                callback=tick,
            )
            evals = num_steps * (2 if unc is not None else 1)
        videos.append(model.decode_latents(z).clamp(-1, 1).float().cpu() if decode else z.float().cpu())
    seconds = time.perf_counter() - start
    settings = {
        "steps": num_steps,
        "sampler": "consistency" if is_student else "ddim-cfg",
        "w": float(w) if is_student else None,
        "cfg_scale": None if is_student else cfg,
        "guidance_convention": model.guidance_convention if is_student else None,
        "seed": int(seed),
        "timestep_rule": timestep_rule if is_student else "ddim-leading",
        "timesteps": ts,
        "origin_steps": origin_steps if is_student and timesteps is None else None,
        "motion_guidance": motion_guidance if motion_on else None,
        "motion_percentage": motion_percentage if motion_on else None,
        "motion_timesteps": [t for t in ts if t >= motion_threshold] if motion_on else [],
    }
    # unet_evals: UNet evaluations per video (a CFG step counts its two branches)
    return Generation(torch.cat(videos), prompts, seconds, evals, ts, settings)


def _generate_flow(
    model, prompts, num_steps, w, cfg_scale, seed, num_frames, origin_steps, timestep_rule, timesteps,
    batch_size, decode, progress,
) -> Generation:
    """`generate` on a flow-matching backbone (Wan; docs/flow_matching.md section 5).

    Student: the FM multistep consistency sampler (`flow.flow_consistency_sample`) on
    `consistency_sigmas(num_steps, shift, origin_steps, timestep_rule)`, embedding w (option a) or at
    its fixed w without CFG (option b). Teacher: Euler + CFG in Wan's form, v = v_u + g (v_c - v_u) with
    g = `cfg_scale` (default 1 + w), on diffusers' FlowMatchEulerDiscreteScheduler grid (= WanPipeline).
    `timesteps` (students): explicit t = 1000 s values, descending. Recorded timesteps are floats.
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 <= int(seed) < 2**63:
        raise InputError(f"seed must be in [0, 2**63), got {seed}")
    sched = model.schedule
    n_train = sched.num_train_timesteps
    student = is_student(model)
    fixed_w = getattr(model, "fixed_w", None) if model.w_embedding_dim is None else None
    origin_steps = int(origin_steps if origin_steps is not None else 50)
    if origin_steps < 1:
        raise InputError(f"origin_steps must be >= 1, got {origin_steps}")
    cfg = teacher_cfg_scale(w, cfg_scale)
    for name, value in (("w", w), ("cfg_scale", cfg)):
        if not math.isfinite(value) or value < 0:
            raise InputError(f"{name} must be a finite number >= 0, got {value}")
    if student:
        if timesteps is not None:
            sigmas = [float(t) / n_train for t in timesteps]
            if not sigmas or any(not 0 <= s <= 1 for s in sigmas):
                raise InputError(f"timesteps must be in [0, {n_train}], got {list(timesteps)}")
        else:
            if not 1 <= num_steps <= origin_steps:
                raise InputError(f"a student samples 1..{origin_steps} steps (the origin grid), got {num_steps}")
            try:
                sigmas = consistency_sigmas(num_steps, sched.shift, origin_steps, timestep_rule, n_train)
            except ValueError as e:
                raise InputError(str(e)) from None
        steps = len(sigmas)
    else:
        if not 1 <= num_steps <= n_train:
            raise InputError(f"a teacher samples 1..{n_train} Euler steps, got {num_steps}")
        steps = num_steps
    try:
        shape0 = model.latent_shape(1, num_frames)
    except ValueError as e:  # a clip length that is not 4k + 1
        raise InputError(str(e)) from None
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    use_cfg = not student and cfg > 1
    uncond = model.encode_prompt([""]) if use_cfg else None
    tick = _step_counter(steps * _num_chunks(len(prompts), batch_size), progress)

    videos, evals = [], 0
    start = time.perf_counter()
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i : i + batch_size]
        cond = model.encode_prompt(chunk)
        shape = (len(chunk), *shape0[1:])
        noise = torch.randn(shape, generator=g).to(model.device, model.dtype)
        if student:
            w_emb = model.w_embedding(guidance_to_w(w, model.guidance_convention), len(chunk))

            def fn(z, t, cond=cond, w_emb=w_emb):
                return model.model_output(z, t, cond, w_emb)

            z = flow_consistency_sample(
                fn, sched, shape, sigmas, generator=g, latents=noise, dtype=model.dtype, callback=tick
            )
            evals = steps
        else:
            unc = uncond.expand(len(chunk), -1, -1) if uncond is not None else None

            def both(z, t, cond=cond, unc=unc):
                out = model.model_output(torch.cat([z, z]), torch.cat([t, t]), torch.cat([cond, unc]))
                return out.chunk(2)

            def cond_fn(z, t, cond=cond):
                return model.model_output(z, t, cond)

            z = euler_cfg_sample(
                cond_fn, None, sched, shape, num_steps, cfg, generator=g, latents=noise, dtype=model.dtype,
                model_fn_batched=both if unc is not None else None, callback=tick,
            )  # fmt: skip
            evals = num_steps * (2 if unc is not None else 1)
        videos.append(model.decode_latents(z).clamp(-1, 1).float().cpu() if decode else z.float().cpu())
    seconds = time.perf_counter() - start
    if student:
        ts = [float(s) * n_train for s in sigmas]
    else:
        from .flow import euler_sigmas

        ts = [float(s) * n_train for s in euler_sigmas(num_steps, sched.shift, "diffusers", n_train)[:-1]]
    settings = {
        "steps": steps,
        "sampler": "consistency" if student else "euler-cfg",
        "w": (float(fixed_w) if fixed_w is not None else float(w)) if student else None,
        "cfg_scale": None if student else cfg,
        "fixed_w": fixed_w,
        "guidance_convention": model.guidance_convention if student else None,
        "seed": int(seed),
        "timestep_rule": timestep_rule if student else "flow-euler",
        "timesteps": ts,
        "flow_shift": sched.shift,
        "origin_steps": origin_steps if student and timesteps is None else None,
        "motion_guidance": None,
        "motion_percentage": None,
        "motion_timesteps": [],
    }
    return Generation(torch.cat(videos), prompts, seconds, evals, ts, settings)


def _num_chunks(n: int, batch_size: int) -> int:
    return (n + batch_size - 1) // batch_size


def _step_counter(total: int, progress: Callable[[int, int], None] | None):
    """A sampler callback `(i, z)` that reports (steps done, total) to `progress` after every step."""
    done = [0]

    def tick(i, z):
        done[0] += 1
        if progress is not None:
            progress(done[0], total)

    return tick


def safe_filename(prompt: str, max_len: int = 180) -> str:
    """VBench-style file stem: the prompt itself, minus path separators and control characters."""
    name = re.sub(r"[/\\\x00-\x1f]", " ", prompt).strip()
    return name[:max_len] or "empty"


def save_videos(
    gen: Generation, out_dir: str | Path, indices: Sequence[int], fps: int, fmt: str = "mp4", upscale: int = 1
) -> list[Path]:
    """Write `{prompt}-{index}.{fmt}` files (VBench naming)."""
    from .video_io import write_video

    out = Path(out_dir)
    paths = []
    for video, prompt, idx in zip(gen.videos, gen.prompts, indices):
        paths.append(
            write_video(out / f"{safe_filename(prompt)}-{idx}.{fmt}", video, fps=fps, upscale=upscale)
        )
    return paths
