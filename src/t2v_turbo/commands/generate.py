"""`t2v-turbo generate`: sample videos from a registered model or a checkpoint and write them
VBench-style (`{prompt}-{index}.mp4`) with a `generation.json` of everything that produced them."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from ..errors import InputError
from . import _common as common


def make_parser():
    p = common.parser("generate", "Generate videos in a few steps (a student) or with DDIM + CFG (a teacher).")
    p.add_argument("prompts", nargs="*", help="text prompts")
    p.add_argument("--prompt-file", help="a text file with one prompt per line (blank and # lines skipped)")
    common.add_model_args(p)
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: 4 for a student, 50 for a teacher)")
    p.add_argument("--w", type=float, default=7.5, help="the student's embedded guidance w (T2V-Turbo convention)")
    p.add_argument(
        "--cfg-scale", type=float, default=None, help="a teacher's classifier-free guidance scale (default: 1 + w)"
    )
    p.add_argument(
        "--origin-steps",
        type=int,
        default=None,
        help="LCM origin grid size the student timesteps come from (default: the checkpoint's, else 50; v2: 200)",
    )
    p.add_argument(
        "--motion-guidance",
        type=float,
        default=None,
        help="T2V-Turbo-v2 students: motion guidance strength motion_gs (default: the checkpoint's, 0.05 for v2)",
    )
    p.add_argument(
        "--motion-percentage",
        type=float,
        default=None,
        help="T2V-Turbo-v2: share of the sampling (t >= 1000 (1 - p)) that gets motion conditioning (default 0.5 for v2)",
    )
    p.add_argument("--timestep-rule", choices=["t2v-turbo", "diffusers"], default="t2v-turbo")
    p.add_argument("--seed", type=int, default=0, help="seed of the first video; video k of a prompt uses seed + k")
    p.add_argument("--num-per-prompt", type=int, default=1, help="videos per prompt")
    p.add_argument("--out-dir", default="outputs", help="output folder")
    p.add_argument("--format", choices=["mp4", "gif"], default="mp4")
    p.add_argument("--fps", type=int, default=None, help="frames per second of the written files (default: the model's)")
    p.add_argument(
        "--upscale",
        type=int,
        default=None,
        help="nearest-neighbour upscale factor (default: up to ~256 px for small videos; 1 keeps the raw size)",
    )
    common.add_compute_args(p)
    return p


def check_args(a) -> None:
    """Every numeric argument in range, with one line naming the bad value."""
    if a.steps is not None and a.steps < 1:
        raise InputError(f"--steps must be >= 1, got {a.steps}")
    if a.num_per_prompt < 1:
        raise InputError(f"--num-per-prompt must be >= 1, got {a.num_per_prompt}")
    if a.fps is not None and a.fps < 1:
        raise InputError(f"--fps must be >= 1, got {a.fps}")
    if a.upscale is not None and a.upscale < 1:
        raise InputError(f"--upscale must be >= 1, got {a.upscale}")
    if not 0 <= a.seed < 2**63 - a.num_per_prompt:
        raise InputError(f"--seed must be in [0, 2**63), got {a.seed}")
    for flag, value in (("--w", a.w), ("--cfg-scale", a.cfg_scale)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise InputError(f"{flag} must be a finite number >= 0, got {value}")
    if a.origin_steps is not None and not 1 <= a.origin_steps <= 1000:
        raise InputError(f"--origin-steps must be in 1..1000, got {a.origin_steps}")
    if a.motion_guidance is not None and not math.isfinite(a.motion_guidance):
        raise InputError(f"--motion-guidance must be a finite number, got {a.motion_guidance}")
    if a.motion_percentage is not None and not 0 <= a.motion_percentage <= 1:
        raise InputError(f"--motion-percentage must be in [0, 1], got {a.motion_percentage}")


def default_upscale(height: int, target: int = 256) -> int:
    """Small videos (the MovingDigits world's 32 px) are upscaled for viewing, to about `target` px."""
    return max(1, target // max(1, height))


def main(argv: list[str]) -> int:
    from ..pipeline import generate, save_videos
    from ..progress import progress_bar

    a = make_parser().parse_args(argv)
    check_args(a)
    device = common.setup_compute(a)
    prompts = common.read_prompts(a.prompts, a.prompt_file)
    out = common.check_out_dir(a.out_dir)
    model = common.load_model(a.model, device=device, base=a.base)
    from ..pipeline import is_student as _is_student

    is_student = _is_student(model)  # a w embedding, or a fixed-w (Wan option b) student
    if not is_student and a.steps is not None and a.steps > model.schedule.num_train_timesteps:
        raise InputError(f"--steps {a.steps}: a teacher samples at most {model.schedule.num_train_timesteps} steps")
    origin = a.origin_steps or getattr(model, "sampling_defaults", {}).get("origin_steps") or 50
    if is_student and a.steps is not None and a.steps > origin:
        raise InputError(f"--steps {a.steps}: a student samples at most {origin} steps (its origin grid; see --origin-steps)")
    common.warn_unknown_words(model, prompts)
    fixed = getattr(model, "fixed_w", None)
    if fixed is not None and "--w" in argv:
        print(f"warning: this student was distilled at a fixed w={fixed:g} (no guidance embedding): --w is ignored", file=sys.stderr)
    steps = a.steps or (4 if is_student else 50)
    upscale = a.upscale or default_upscale(model.resolution[1])
    fps = a.fps or model.native_fps
    common.check_out_dir(out, create=True)
    written, gen = [], None
    t0 = time.perf_counter()
    with progress_bar(a.num_per_prompt * steps, desc="sampling", unit="step") as bar:
        for k in range(a.num_per_prompt):
            base = bar.n

            def tick(done, total, base=base):
                bar.n = base + round(done * steps / total)
                bar.refresh()

            gen = generate(
                model,
                prompts,
                steps,
                w=a.w,
                cfg_scale=a.cfg_scale,
                seed=a.seed + k,
                origin_steps=a.origin_steps,
                timestep_rule=a.timestep_rule,
                motion_guidance=a.motion_guidance,
                motion_percentage=a.motion_percentage,
                progress=tick,
            )
            written += save_videos(gen, out, [k] * len(prompts), fps, a.format, upscale)
    meta = {
        "model": str(a.model),
        **gen.settings,
        "seed": a.seed,
        "seeds": [a.seed + k for k in range(a.num_per_prompt)],
        "num_per_prompt": a.num_per_prompt,
        "prompts": prompts,
        "fps": fps,
        "upscale": upscale,
        "resolution": list(model.resolution),
        "files": [p.name for p in written],
    }
    Path(out, "generation.json").write_text(json.dumps(meta, indent=2, allow_nan=False))
    for path in written:
        print(path)
    print(f"{len(written)} video(s) in {time.perf_counter() - t0:.2f}s ({steps} steps, {gen.settings['sampler']})")
    return 0
