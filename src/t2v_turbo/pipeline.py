"""Few-step generation: load a backbone by name or path, sample, write videos; `t2v-turbo generate`."""

from __future__ import annotations

import argparse
import importlib
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from .errors import UserError
from .models.base import Backbone, guidance_to_w, read_metadata
from .sampling import consistency_sample, consistency_timesteps, ddim_cfg_sample

from .models.registry import BACKBONES, MODELS, load_backbone  # noqa: F401  (re-exported)

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
    guidance: float = 7.5,
    seed: int = 0,
    num_frames: int | None = None,
    origin_steps: int = 50,
    timestep_rule: str = "t2v-turbo",
    timesteps: Sequence[int] | None = None,
    batch_size: int = 64,
    decode: bool = True,
) -> Generation:
    """Sample one video per prompt. A student (w embedding) uses the multistep consistency sampler;
    a teacher (no w embedding) uses DDIM with classifier-free guidance at `num_steps`.

    Guidance: for a student, the value embedded in T2V-Turbo's convention (converted to the
    checkpoint's own convention); for a teacher, the usual CFG scale.
    """
    prompts = list(prompts)
    if not prompts:
        raise UserError("no prompts given")
    g = torch.Generator(device="cpu").manual_seed(seed)
    is_student = model.w_embedding_dim is not None
    if is_student:
        ts = (
            list(timesteps)
            if timesteps is not None
            else consistency_timesteps(num_steps, origin_steps, timestep_rule)
        )
    else:
        ts = []
    uncond = model.encode_prompt([""]) if not is_student and guidance > 1 else None
    videos, evals = [], 0
    start = time.perf_counter()
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i : i + batch_size]
        cond = model.encode_prompt(chunk)
        shape = model.latent_shape(len(chunk), num_frames)
        noise = torch.randn(shape, generator=g).to(model.device, model.dtype)
        if is_student:
            w_emb = model.w_embedding(guidance_to_w(guidance, model.guidance_convention), len(chunk))

            def fn(z, t, cond=cond, w_emb=w_emb):
                return model.model_output(z, t, cond, w_emb)

            z = consistency_sample(fn, model.schedule, shape, ts, generator=g, latents=noise)
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
                guidance,
                generator=g,
                latents=noise,
                model_fn_batched=both if unc is not None else None,
            )
            evals = num_steps * (2 if unc is not None else 1)
        videos.append(model.decode_latents(z).clamp(-1, 1).float().cpu() if decode else z.float().cpu())
    seconds = time.perf_counter() - start
    settings = {
        "steps": num_steps,
        "guidance": guidance,
        "seed": seed,
        "sampler": "consistency" if is_student else "ddim-cfg",
        "timestep_rule": timestep_rule if is_student else "ddim-leading",
        "timesteps": ts,
    }
    # unet_evals: UNet evaluations per video (a CFG step counts its two branches)
    return Generation(torch.cat(videos), prompts, seconds, evals, ts, settings)


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


def read_prompts(args_prompts: Sequence[str], prompt_file: str | None) -> list[str]:
    prompts = [p for p in args_prompts if p.strip()]
    if prompt_file:
        f = Path(prompt_file)
        if not f.exists():
            raise UserError(f"prompt file not found: {f}")
        prompts += [line.strip() for line in f.read_text().splitlines() if line.strip()]
    if not prompts:
        raise UserError("give at least one non-empty prompt (arguments or --prompt-file)")
    return prompts


def cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="t2v-turbo generate", description="Generate videos in a few steps.")
    p.add_argument("prompts", nargs="*", help="text prompts")
    p.add_argument("--prompt-file", help="a text file with one prompt per line")
    p.add_argument(
        "--model", default="turbo", help="turbo | vcm | teacher (shipped MovingDigits) or a checkpoint path"
    )
    p.add_argument(
        "--steps", type=int, default=None, help="sampling steps (default 4 for students, 50 for a teacher)"
    )
    p.add_argument(
        "--guidance",
        type=float,
        default=7.5,
        help="guidance (T2V-Turbo convention for students; CFG scale for a teacher)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-per-prompt", type=int, default=1)
    p.add_argument("--out-dir", default="outputs")
    p.add_argument("--format", choices=["mp4", "gif"], default="mp4")
    p.add_argument("--fps", type=int, default=None, help="default: the model's native fps")
    p.add_argument("--upscale", type=int, default=1, help="nearest-neighbour upscale factor for small videos")
    p.add_argument("--timestep-rule", choices=["t2v-turbo", "diffusers"], default="t2v-turbo")
    p.add_argument("--base", default=None, help="base model (VAE + text encoder) for a UNet-only or LoRA checkpoint")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args(argv)
    prompts = read_prompts(a.prompts, a.prompt_file)
    try:
        model = load_backbone(a.model, device=a.device, **({"base": a.base} if a.base else {}))
    except (FileNotFoundError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"cannot load model {a.model!r}: {e}") from e
    steps = a.steps or (4 if model.w_embedding_dim is not None else 50)
    if steps < 1:
        raise UserError("--steps must be >= 1")
    written = []
    t0 = time.perf_counter()
    for k in range(a.num_per_prompt):
        gen = generate(model, prompts, steps, a.guidance, a.seed + k, timestep_rule=a.timestep_rule)
        written += save_videos(
            gen, a.out_dir, [k] * len(prompts), a.fps or model.native_fps, a.format, a.upscale
        )
    meta = {"model": str(a.model), **gen.settings, "num_per_prompt": a.num_per_prompt, "seed": a.seed}
    Path(a.out_dir, "generation.json").write_text(json.dumps(meta, indent=2))
    for w in written:
        print(w)
    print(
        f"{len(written)} video(s) in {time.perf_counter() - t0:.2f}s ({steps} steps, {gen.settings['sampler']})"
    )
    return 0
