"""VBench-ready export: `{prompt}-{index}.mp4` for index 0..4 (5 seeds per prompt) plus a metadata file.

`t2v-turbo export-vbench --model turbo --steps 4 --prompt-file prompts.txt --out-dir vbench_videos`

Video `{prompt}-{i}` is generated with seed `seed + i`: one `pipeline.generate` call per index over
all prompts in order (batches of `batch_size`; the batch size is recorded because it orders the
noise draws). `vbench_export.json` records model, steps, guidance and its convention, timesteps,
seeds, resolution, fps and the hardware. When the `vbench` package is importable, `--run-vbench`
evaluates the folder with it (custom-input dimensions by default); otherwise it says so and skips.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..errors import UserError
from ..models.base import Backbone
from .hardware import machine_info

METADATA_FILE = "vbench_export.json"
VBENCH_NUM_PER_PROMPT = 5
# dimensions VBench evaluates on custom prompts (the others need its own prompt suite)
CUSTOM_DIMENSIONS = (
    "subject_consistency",
    "background_consistency",
    "motion_smoothness",
    "dynamic_degree",
    "aesthetic_quality",
    "imaging_quality",
)


def vbench_filename(prompt: str, index: int, fmt: str = "mp4") -> str:
    """VBench's naming rule: the prompt text itself, a dash, the sample index."""
    from ..pipeline import safe_filename

    return f"{safe_filename(prompt)}-{index}.{fmt}"


def export_vbench(
    model: Backbone,
    prompts: Sequence[str],
    out_dir: str | Path,
    steps: int = 4,
    guidance: float = 7.5,
    num_per_prompt: int = VBENCH_NUM_PER_PROMPT,
    seed: int = 0,
    fps: int | None = None,
    fmt: str = "mp4",
    upscale: int = 1,
    batch_size: int = 64,
    source: str | None = None,
    timestep_rule: str = "t2v-turbo",
    progress: bool = True,
) -> dict:
    """Write `{prompt}-{i}.{fmt}` for every prompt and i < num_per_prompt, and the metadata file.

    Returns:
        The metadata dict (also written to `out_dir/vbench_export.json`).
    """
    from ..pipeline import generate, save_videos

    unique = list(dict.fromkeys(p for p in prompts if p.strip()))
    if not unique:
        raise UserError("no prompts given")
    names = [vbench_filename(p, 0, fmt) for p in unique]
    if len(set(names)) != len(names):
        raise UserError(
            "two prompts map to the same VBench file name (they differ only in '/' or control characters)"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fps = fps or model.native_fps
    seeds = [seed + i for i in range(num_per_prompt)]
    seconds, settings, files = 0.0, {}, 0
    for i, s in enumerate(tqdm(seeds, desc="export-vbench", disable=not progress)):
        gen = generate(model, unique, steps, guidance, s, batch_size=batch_size, timestep_rule=timestep_rule)
        seconds += gen.seconds
        settings = gen.settings
        files += len(save_videos(gen, out, [i] * len(unique), fps, fmt, upscale))
        shape = tuple(gen.videos.shape[2:])
    t, h, w = shape
    meta = {
        "model": source or model.family,
        "family": model.family,
        "steps": steps,
        "sampler": settings["sampler"],
        "guidance": guidance,
        "guidance_convention": (
            "t2v-turbo: the student embeds w (teacher CFG eps_c + w (eps_c - eps_u))"
            if settings["sampler"] == "consistency"
            else "cfg scale: eps_u + g (eps_c - eps_u)"
        ),
        "checkpoint_guidance_convention": model.guidance_convention,
        "timestep_rule": settings["timestep_rule"],
        "timesteps": settings["timesteps"],
        "num_prompts": len(unique),
        "num_per_prompt": num_per_prompt,
        "seeds": seeds,
        "seed_rule": "file {prompt}-{i} comes from seed seeds[i]; one generator per seed over all prompts in order",
        "batch_size": batch_size,
        "num_frames": t,
        "resolution": [h, w],
        "saved_resolution": [h * upscale, w * upscale],
        "upscale": upscale,
        "fps": fps,
        "format": fmt,
        "naming": "{prompt}-{index}." + fmt,
        "num_files": files,
        "generation_seconds": seconds,
        "seconds_per_video": seconds / max(files, 1),
        "hardware": machine_info(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "prompts": unique,
    }
    (out / METADATA_FILE).write_text(json.dumps(meta, indent=2))
    return meta


def vbench_available() -> bool:
    """Whether the optional `vbench` package can be imported."""
    return importlib.util.find_spec("vbench") is not None


def run_vbench(
    videos_dir: str | Path,
    output_dir: str | Path,
    dimensions: Sequence[str] = CUSTOM_DIMENSIONS,
    mode: str = "custom_input",
    name: str = "t2v_turbo",
    device: str | None = None,
) -> dict | None:
    """Evaluate an exported folder with the `vbench` package; None (with a message) if not installed.

    Calls `VBench(device, VBench_full_info.json, output_dir).evaluate(videos_path, name, dimension_list,
    mode=mode)`, VBench's documented Python entry point; its result files land in `output_dir`.
    """
    if not vbench_available():
        print(
            "vbench is not installed: skipping the VBench run (pip install vbench; see its README for "
            "the extra checkpoints and detectron2). The exported folder is ready for it."
        )
        return None
    import vbench
    from vbench import VBench

    full_info = Path(vbench.__file__).parent / "VBench_full_info.json"
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    VBench(dev, str(full_info), str(out)).evaluate(
        videos_path=str(videos_dir), name=name, dimension_list=list(dimensions), mode=mode
    )
    results = sorted(out.glob(f"{name}*eval_results.json"))
    summary = json.loads(results[-1].read_text()) if results else {}
    return {
        "dimensions": list(dimensions),
        "mode": mode,
        "seconds": time.perf_counter() - t0,
        "results": summary,
    }


def cli(argv: list[str]) -> int:
    """Run `t2v-turbo export-vbench` with `argv`; returns the exit code."""
    from .cli import read_eval_prompts

    p = argparse.ArgumentParser(prog="t2v-turbo export-vbench", description=__doc__.split("\n")[0])
    p.add_argument("prompts", nargs="*", help="prompts (in addition to --prompt-file / --moving-digits)")
    p.add_argument("--prompt-file", help="a text file with one prompt per line (VBench's prompt lists work)")
    p.add_argument(
        "--moving-digits", type=int, default=0, metavar="N", help="N canonical MovingDigits prompts"
    )
    p.add_argument("--prompt-seed", type=int, default=0)
    p.add_argument("--model", default="turbo", help="turbo | vcm | teacher or a checkpoint path")
    p.add_argument("--steps", type=int, default=None, help="default 4 for students, 50 for a teacher")
    p.add_argument(
        "--guidance",
        type=float,
        default=7.5,
        help="student w (T2V-Turbo convention) or a teacher's CFG scale",
    )
    p.add_argument("--num-per-prompt", type=int, default=VBENCH_NUM_PER_PROMPT)
    p.add_argument("--seed", type=int, default=0, help="index i uses seed + i")
    p.add_argument("--out-dir", default="vbench_videos")
    p.add_argument("--format", choices=["mp4", "gif"], default="mp4")
    p.add_argument("--fps", type=int, default=None, help="default: the model's native fps")
    p.add_argument("--upscale", type=int, default=1, help="nearest-neighbour upscale of small videos")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--timestep-rule", choices=["t2v-turbo", "diffusers"], default="t2v-turbo")
    p.add_argument("--run-vbench", action="store_true", help="evaluate the folder with vbench if installed")
    p.add_argument("--dimensions", nargs="+", default=list(CUSTOM_DIMENSIONS))
    p.add_argument("--vbench-mode", default="custom_input", choices=["custom_input", "vbench_standard"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args(argv)
    if a.num_per_prompt < 1 or a.upscale < 1:
        raise UserError("--num-per-prompt and --upscale must be >= 1")
    from ..pipeline import load_backbone

    prompts = read_eval_prompts(a)
    try:
        model = load_backbone(a.model, device=a.device)
    except (FileNotFoundError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"cannot load model {a.model!r}: {e}") from e
    steps = a.steps or (4 if model.w_embedding_dim is not None else 50)
    if steps < 1:
        raise UserError("--steps must be >= 1")
    meta = export_vbench(
        model,
        prompts,
        a.out_dir,
        steps,
        a.guidance,
        a.num_per_prompt,
        a.seed,
        a.fps,
        a.format,
        a.upscale,
        a.batch_size,
        source=str(a.model),
        timestep_rule=a.timestep_rule,
    )
    print(
        f"{meta['num_files']} videos ({meta['num_prompts']} prompts x {a.num_per_prompt}) in {a.out_dir}, "
        f"metadata in {Path(a.out_dir, METADATA_FILE)}"
    )
    if a.run_vbench:
        result = run_vbench(
            a.out_dir, Path(a.out_dir, "vbench_results"), a.dimensions, a.vbench_mode, device=a.device
        )
        if result is not None:
            meta["vbench"] = result
            Path(a.out_dir, METADATA_FILE).write_text(json.dumps(meta, indent=2))
            print(json.dumps(result["results"], indent=1)[:2000])
    return 0
