"""`t2v-turbo export-vbench`: write a folder VBench evaluates as it is (`OUT/videos/{prompt}-{i}.mp4`,
metadata beside it) for your prompts or VBench's own suite, and optionally run VBench on it."""

from __future__ import annotations

import sys

from ..errors import InputError
from ..evaluation import vbench as vb
from ..evaluation import vbench_run as vr
from ..evaluation import vbench_suite as vs
from . import _common as common

EPILOG = f"""\
Layout: OUT/videos/ holds the videos only (VBench reads every file there); OUT/{vb.METADATA_FILE}
records model, steps, w / cfg_scale, timesteps, seeds, resolution, fps and hardware; OUT/{vb.PROMPT_MAP_FILE}
maps file names to prompts (VBench's --prompt_file format); OUT/{vb.RESULTS_DIR}/DIM/ holds VBench's output.

--suite vbench: VBench's standard prompts (shipped, Apache-2.0) of the --dimensions, 5 videos per prompt
and 25 for temporal_flickering prompts (VBench's static filter keeps 5 of them; its standard mode scores
files -0..-4). Evaluate with --run-vbench (vbench_standard mode) or
`vbench evaluate --videos_path OUT/videos --mode vbench_standard --dimension DIM`.

Dimensions (--dimensions, or `all`) and the weights VBench downloads for them on first use:
""" + "\n".join(
    f"  {name:<23} {info.weights or 'none'}{'' if info.custom_input else '  [--suite vbench only]'}"
    for name, info in vb.DIMENSIONS.items()
) + """

Exit codes: 0 done; 2 nothing evaluated (bad input, vbench not importable); 1 some dimensions failed
(the others' scores and each error are in the metadata)."""


def make_parser():
    p = common.parser(
        "export-vbench", "Write a folder VBench evaluates as it is (your prompts or VBench's suite); optionally run VBench."
    )
    p.epilog = EPILOG
    p.add_argument("prompts", nargs="*", help="prompts (in addition to --prompt-file / --prompt-set)")
    p.add_argument("--prompt-file", help="a text file with one prompt per line (blank and # lines skipped)")
    p.add_argument("--suite", choices=["vbench"], default=None, help="VBench's standard prompt suite for --dimensions")
    p.add_argument("--prompt-set", default=None, help="a registered world's canonical prompts (e.g. moving-digits)")
    p.add_argument("--num-prompts", type=int, default=280, help="prompts taken from --prompt-set (a seeded subset)")
    p.add_argument("--prompt-seed", type=int, default=0, help="seed of the --prompt-set subset")
    common.add_model_args(p)
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: 4 for a student, 50 for a teacher)")
    p.add_argument("--w", type=float, default=None, help="the student's embedded guidance w (T2V-Turbo convention; 7.5 when not given)")
    p.add_argument(
        "--cfg-scale", type=float, default=None, help="a teacher's classifier-free guidance scale (default: 1 + w)"
    )
    p.add_argument("--origin-steps", type=int, default=50, help="LCM origin grid size the student timesteps come from")
    p.add_argument("--timestep-rule", choices=["t2v-turbo", "diffusers"], default="t2v-turbo")
    p.add_argument(
        "--num-per-prompt",
        type=int,
        default=None,
        help=f"videos per prompt (default {vb.NUM_PER_PROMPT}; with --suite: 5, and 25 for temporal_flickering)",
    )
    p.add_argument("--seed", type=int, default=0, help="file {prompt}-{i} uses seed + i")
    p.add_argument("--out-dir", default="vbench_videos", help="export folder (videos go to OUT/videos/)")
    p.add_argument("--format", choices=list(vb.VIDEO_FORMATS), default="mp4")
    p.add_argument("--fps", type=int, default=None, help="frames per second of the files (default: the model's)")
    p.add_argument("--upscale", type=int, default=1, help="nearest-neighbour upscale factor of the written videos")
    p.add_argument("--batch-size", type=int, default=64, help="prompts per sampling / decoding batch (recorded)")
    p.add_argument("--run-vbench", action="store_true", help="evaluate the folder with vbench (checked up front)")
    p.add_argument(
        "--evaluate-only", action="store_true", help="evaluate an existing export in --out-dir; generate nothing"
    )
    p.add_argument(
        "--dimensions",
        nargs="+",
        default=list(vb.DEFAULT_DIMENSIONS),
        help="VBench dimensions to export (--suite) and evaluate, or `all` (default: the weight-free ones)",
    )
    p.add_argument(
        "--vbench-mode", choices=list(vb.MODES), default=None, help="default: vbench_standard with --suite, else custom_input"
    )
    p.add_argument("--local-weights", action="store_true", help="VBench's local mode: weights already in its cache")
    common.add_compute_args(p)
    return p


def check_args(a) -> None:
    """Every numeric argument in range, with one line naming the bad value."""
    for flag, value in (
        ("--steps", a.steps),
        ("--num-per-prompt", a.num_per_prompt),
        ("--fps", a.fps),
        ("--upscale", a.upscale),
        ("--batch-size", a.batch_size),
        ("--origin-steps", a.origin_steps),
        ("--num-prompts", a.num_prompts),
    ):
        if value is not None and value < 1:
            raise InputError(f"{flag} must be >= 1, got {value}")
    if not 0 <= a.seed < 2**63 - vb.TEMPORAL_FLICKERING_NUM_PER_PROMPT:
        raise InputError(f"--seed must be in [0, 2**63), got {a.seed}")
    if a.suite and (a.prompts or a.prompt_file or a.prompt_set):
        raise InputError("--suite vbench takes VBench's own prompts: give no other prompts with it")


def read_prompts(a) -> list[str]:
    """Positional prompts, a world's canonical ones (`--prompt-set`) and a prompt file."""
    from ..evaluation.worlds import EVAL_WORLDS

    prompts = [p for p in a.prompts if p.strip()]
    if a.prompt_set:
        prompts = EVAL_WORLDS.get(a.prompt_set).prompts(a.num_prompts, a.prompt_seed) + prompts
        if not a.prompt_file:
            return prompts
    return common.read_prompts(prompts, a.prompt_file)


def print_results(summary: dict) -> int:
    """One line per dimension; returns 1 if any failed, else 0."""
    failed = 0
    for dim, r in summary["dimensions"].items():
        if "error" in r:
            failed += 1
            print(f"{dim}: error: {r['error']}", file=sys.stderr)
        else:
            print(f"{dim}: {r['score']:.4f} ({r['num_videos']} videos, {r['seconds']:.1f} s)")
    if failed:
        print(f"{failed} of {len(summary['dimensions'])} VBench dimensions failed (details in {vb.RESULTS_DIR}/DIM/error.txt)", file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    from ..progress import progress_bar

    a = make_parser().parse_args(argv)
    check_args(a)
    device = common.setup_compute(a)
    if a.evaluate_only:
        vb.read_export(a.out_dir)
        return print_results(vr.run_vbench(a.out_dir, a.dimensions, a.vbench_mode, device, local_weights=a.local_weights))
    if a.run_vbench:
        dims, mode = vr.prepare_vbench(a.dimensions, a.vbench_mode, suite=bool(a.suite))
    else:
        dims, mode = vb.resolve_dimensions(a.dimensions, a.vbench_mode), None
    suite = None
    if a.suite:
        prompts, counts = vb.suite_prompts(dims)
        if a.num_per_prompt is not None:
            counts = [a.num_per_prompt] * len(prompts)
        suite = {
            "name": "vbench",
            "source": vs.SUITE_SOURCE,
            "sha256": vs.sha256_file(vs.SUITE_FILE),
            "dimensions": dims,
            "prompts_per_dimension": {d: len(vb.suite_dimension_prompts()[d]) for d in dims},
            "num_per_prompt": {"default": vb.NUM_PER_PROMPT, "temporal_flickering": vb.TEMPORAL_FLICKERING_NUM_PER_PROMPT}
            if a.num_per_prompt is None
            else a.num_per_prompt,
        }
    else:
        prompts = read_prompts(a)
        counts = a.num_per_prompt or vb.NUM_PER_PROMPT
    # names and collisions are checked before the model loads
    vb.plan_export(prompts, counts, a.format)
    common.check_out_dir(a.out_dir)
    model = common.load_model(a.model, device=device, base=a.base)
    from ..pipeline import is_student

    steps = a.steps or (4 if is_student(model) else 50)
    with progress_bar(desc="export-vbench", unit="video") as bar:

        def tick(done, total):
            bar.total = total
            bar.n = done
            bar.refresh()

        meta = vb.export_vbench(
            model,
            prompts,
            a.out_dir,
            steps=steps,
            w=a.w,
            cfg_scale=a.cfg_scale,
            num_per_prompt=counts,
            seed=a.seed,
            fps=a.fps,
            fmt=a.format,
            upscale=a.upscale,
            batch_size=a.batch_size,
            origin_steps=a.origin_steps,
            timestep_rule=a.timestep_rule,
            source=str(a.model),
            suite=suite,
            progress=tick,
        )
    for item in meta["inexact_names"][:5]:
        stem = item["file_stem"] if len(item["file_stem"]) <= 60 else item["file_stem"][:57] + "..."
        print(f"warning: VBench cannot read the prompt back from {stem!r}: {item['reason']}", file=sys.stderr)
    if len(meta["inexact_names"]) > 5:
        print(f"warning: ... {len(meta['inexact_names'])} such names in all (listed in the metadata)", file=sys.stderr)
    print(
        f"{meta['num_files']} videos ({meta['num_prompts']} prompts) in {a.out_dir}/{vb.VIDEOS_DIR}, "
        f"metadata in {a.out_dir}/{vb.METADATA_FILE}"
    )
    if not a.run_vbench:
        return 0
    return print_results(
        vr.run_vbench(
            a.out_dir, dims, mode, device, local_weights=a.local_weights, progress=lambda d: print(f"VBench: {d} ...")
        )
    )
