"""`t2v-turbo eval`: models x step counts on a prompt set -> results.json, results.md, score_vs_steps.png.

Examples::

    t2v-turbo eval --prompt-set moving-digits --num-prompts 280 --model turbo --model vcm --model teacher
    t2v-turbo eval --prompt-file prompts.txt --model mine=runs/x/final --steps 1 2 4 8 \\
        --reward hpsv2.1:path=HPS_v2.1_compressed.pt --clip clip-vit-l-14:path=clip-l-folder
"""

from __future__ import annotations

import math
from pathlib import Path

from ..errors import InputError
from . import _common as common


def make_parser():
    from ..evaluation.runner import STUDENT_DEFAULT_STEPS, TEACHER_DEFAULT_STEPS

    p = common.parser(
        "eval",
        "Generate with fixed seeds for each model and step count, score every video, and write "
        "results.json, results.md and score_vs_steps.png.",
    )
    p.add_argument("prompts", nargs="*", help="prompts (in addition to --prompt-file / --prompt-set)")
    p.add_argument("--prompt-file", help="a text file with one prompt per line (blank and # lines skipped)")
    p.add_argument("--prompt-set", default=None, help="a registered world's canonical prompts (e.g. moving-digits)")
    p.add_argument("--num-prompts", type=int, default=280, help="prompts taken from --prompt-set (a seeded subset)")
    p.add_argument("--prompt-seed", type=int, default=0, help="seed of the --prompt-set subset")
    p.add_argument(
        "--model",
        action="append",
        default=None,
        metavar="[LABEL=]NAME_OR_PATH",
        help="a registered model name or a checkpoint; repeatable (default: turbo, vcm, teacher)",
    )
    p.add_argument("--steps", type=int, nargs="+", default=list(STUDENT_DEFAULT_STEPS), help="student step counts")
    p.add_argument(
        "--teacher-steps", type=int, nargs="+", default=list(TEACHER_DEFAULT_STEPS), help="DDIM steps for teachers"
    )
    p.add_argument("--w", type=float, default=7.5, help="the students' embedded guidance w (T2V-Turbo convention)")
    p.add_argument("--cfg-scale", type=float, default=None, help="the teachers' CFG scale (default: 1 + w)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="one generation per prompt per seed")
    p.add_argument(
        "--reward",
        action="append",
        default=[],
        metavar="NAME[:key=value,...]",
        help="a registered reward model to score with (repeatable), e.g. md-video or hpsv2.1:path=HPS_v2.1_compressed.pt",
    )
    p.add_argument(
        "--clip",
        default="auto",
        metavar="NAME[:key=value,...]|auto|none",
        help="image-text model for text alignment and consistency features (auto: the prompts' world's own)",
    )
    p.add_argument(
        "--consistency-features",
        choices=["auto", "clip", "pixels"],
        default="auto",
        help="frame features for temporal consistency (auto: the --clip image tower if any)",
    )
    p.add_argument(
        "--judge", choices=["auto", "on", "off"], default="auto", help="a world's judge; auto: when every prompt is the world's"
    )
    p.add_argument("--i3d", help="I3D TorchScript file for FVD (StyleGAN-V i3d_torchscript.pt)")
    p.add_argument("--real", default="auto", help="FVD real videos: a registered world, a folder, or auto (the prompts' world)")
    p.add_argument("--out-dir", default="eval", help="output folder")
    p.add_argument("--save-videos", action="store_true", help="also write every video (VBench naming)")
    p.add_argument("--format", choices=["mp4", "gif"], default="mp4")
    p.add_argument("--timestep-rule", choices=["t2v-turbo", "diffusers"], default="t2v-turbo")
    p.add_argument("--batch-size", type=int, default=64, help="videos per sampler call")
    p.add_argument("--timing-repeats", type=int, default=3, help="interleaved timing rounds (0: time the scored run)")
    p.add_argument("--no-plots", action="store_true")
    common.add_compute_args(p)
    return p


def check_args(a) -> None:
    if min(a.steps + a.teacher_steps) < 1:
        raise InputError(f"step counts must be >= 1, got {min(a.steps + a.teacher_steps)}")
    if a.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {a.batch_size}")
    if a.num_prompts < 1:
        raise InputError(f"--num-prompts must be >= 1, got {a.num_prompts}")
    if a.timing_repeats < 0:
        raise InputError(f"--timing-repeats must be >= 0, got {a.timing_repeats}")
    if any(not 0 <= s < 2**63 for s in a.seeds):
        raise InputError(f"--seeds must be in [0, 2**63), got {a.seeds}")
    for flag, value in (("--w", a.w), ("--cfg-scale", a.cfg_scale)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise InputError(f"{flag} must be a finite number >= 0, got {value}")


def read_eval_prompts(a) -> list[str]:
    from ..evaluation.worlds import EVAL_WORLDS

    extra = [p for p in a.prompts if p.strip()]
    if a.prompt_set:
        prompts = EVAL_WORLDS.get(a.prompt_set).prompts(a.num_prompts, a.prompt_seed) + extra
        if a.prompt_file:
            prompts += common.read_prompts([], a.prompt_file)
        return prompts
    return common.read_prompts(extra, a.prompt_file)


def load_models(specs: list[str], device: str) -> tuple[dict, dict]:
    models, sources = {}, {}
    for spec in specs:
        label, eq, source = spec.partition("=")
        if not eq:
            label, source = Path(spec).name or spec, spec
        if label in models:
            raise InputError(f"two models share the label {label!r}: name them LABEL=PATH")
        models[label] = common.load_model(source, device=device)
        sources[label] = source
    return models, sources


def main(argv: list[str]) -> int:
    from ..evaluation.report import markdown_table, write_report
    from ..evaluation.runner import Scorers, evaluate
    from ..evaluation.specs import build_scorer, parse_spec, real_folder_videos
    from ..evaluation.worlds import EVAL_WORLDS, world_of

    a = make_parser().parse_args(argv)
    check_args(a)
    device = common.setup_compute(a)
    prompts = read_eval_prompts(a)
    common.check_out_dir(a.out_dir)
    models, sources = load_models(a.model or ["turbo", "vcm", "teacher"], device)
    for model in models.values():
        common.warn_unknown_words(model, prompts)
    found = world_of(prompts)
    world = found[1] if found else None

    scorers = Scorers()
    for spec in a.reward:
        scorers.rewards[parse_spec(spec)[0]] = build_scorer(spec).to(device)
    clip_spec = a.clip
    if clip_spec == "auto":
        world_sized = world is not None and all(tuple(m.resolution) == tuple(world.resolution) for m in models.values())
        clip_spec = (world.default_clip() if world_sized and world.default_clip else None) or "none"
        if clip_spec == "none":
            print("note: no --clip model given: text alignment skipped, temporal consistency on pixels")
    if clip_spec != "none":
        scorers.clip = build_scorer(clip_spec).to(device)
        scorers.clip_name = clip_spec
    if a.consistency_features == "clip" or (a.consistency_features == "auto" and scorers.clip is not None):
        if scorers.clip is None or not hasattr(scorers.clip, "image_features"):
            raise InputError("--consistency-features clip needs a --clip model with an image tower")
        scorers.feature_fn, scorers.feature_name = scorers.clip.image_features, f"{clip_spec} image"
    if a.judge == "on" or (a.judge == "auto" and world is not None and world.judge is not None):
        if world is None or world.judge is None:
            raise InputError(f"--judge on needs every prompt to belong to a world with a judge ({EVAL_WORLDS.names()})")
        scorers.judge = world.judge()
    if a.i3d:
        from ..evaluation.fvd import load_detector

        scorers.fvd_detector = load_detector(a.i3d, device)
        if a.real == "auto":
            if world is None or world.real_videos is None:
                raise InputError("--real auto needs the prompts of a world with real videos; give --real FOLDER")
            scorers.real_videos = world.real_videos
        elif a.real in EVAL_WORLDS:
            real_world = EVAL_WORLDS.get(a.real)
            if real_world is not world:
                raise InputError(f"--real {a.real} needs that world's prompts; give --real FOLDER")
            scorers.real_videos = real_world.real_videos
        else:
            scorers.real_videos = real_folder_videos(a.real)

    results = evaluate(
        models,
        prompts,
        steps=a.steps,
        teacher_steps=a.teacher_steps,
        w=a.w,
        cfg_scale=a.cfg_scale,
        seeds=a.seeds,
        scorers=scorers,
        batch_size=a.batch_size,
        video_dir=Path(a.out_dir, "videos") if a.save_videos else None,
        video_format=a.format,
        sources=sources,
        timestep_rule=a.timestep_rule,
        timing_repeats=a.timing_repeats,
    )
    paths = write_report(results, a.out_dir, plots=not a.no_plots)
    print(markdown_table(results))
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0
