"""`t2v-turbo eval`: models x step counts on a prompt file -> results.json, results.md, score_vs_steps.png.

Examples::

    t2v-turbo eval --moving-digits 280 --model turbo --model vcm --model teacher --seeds 0 1 2
    t2v-turbo eval --prompt-file prompts.txt --model mine=runs/x/final --steps 1 2 4 8 \\
        --reward hpsv2.1:path=HPS_v2.1_compressed.pt --clip clip-vit-l-14:path=clip-l-folder
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..errors import UserError
from .runner import STUDENT_DEFAULT_STEPS, TEACHER_DEFAULT_STEPS, Scorers, evaluate


def parse_spec(spec: str) -> tuple[str, dict]:
    """'name' or 'name:key=value,key=value' -> (name, kwargs); values become int/float when they parse."""
    name, _, rest = spec.partition(":")
    kwargs: dict = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise UserError(f"bad option {item!r} in {spec!r}: expected key=value")
        for conv in (int, float):
            try:
                value = conv(value)
                break
            except ValueError:
                continue
        kwargs[key.strip()] = value
    if not name:
        raise UserError(f"bad spec {spec!r}: expected NAME or NAME:key=value,...")
    return name, kwargs


def build_scorer(spec: str):
    """A registered reward from a spec, frozen, in eval mode; unknown names or missing files -> UserError."""
    from ..rewards.base import build_reward

    name, kw = parse_spec(spec)
    frames = kw.pop("frames", None)
    try:
        model = build_reward(name, **kw)
    except (ValueError, FileNotFoundError) as e:
        raise UserError(f"reward {spec!r}: {e}") from e
    if frames is not None:
        model.num_frames = int(frames)
    return model.requires_grad_(False).eval()


def _shipped_world_reward(name: str) -> bool:
    """Whether the shipped MovingDigits folder holds the world reward `name` ("md-image" / "md-video")."""
    from ..pipeline import WORLD_DIR

    return (WORLD_DIR / {"md-image": "reward_image", "md-video": "reward_video"}[name]).exists()


def read_eval_prompts(args) -> list[str]:
    """Prompts from `--moving-digits N` (a seeded canonical subset) or positional args + `--prompt-file`."""
    from ..pipeline import read_prompts

    if args.moving_digits:
        from ..worlds.moving_digits.dataset import prompt_subset

        return prompt_subset(args.moving_digits, seed=args.prompt_seed) + [
            p for p in args.prompts if p.strip()
        ]
    return read_prompts(args.prompts, args.prompt_file)


def _is_moving_digits(prompts: list[str]) -> bool:
    try:
        from ..worlds.moving_digits.dataset import parse_caption
    except ImportError:
        return False
    try:
        for p in prompts:
            parse_caption(p)
    except ValueError:
        return False
    return True


def _load_models(specs: list[str], device: str):
    from ..pipeline import load_backbone

    models, sources = {}, {}
    for spec in specs:
        label, eq, source = spec.partition("=")
        if not eq:
            label, source = Path(spec).name or spec, spec
        if label in models:
            raise UserError(f"two models share the label {label!r}: name them LABEL=PATH")
        try:
            models[label] = load_backbone(source, device=device)
        except (FileNotFoundError, ValueError, KeyError, TypeError) as e:
            raise UserError(f"cannot load model {source!r}: {e}") from e
        sources[label] = source
    return models, sources


def _real_videos_fn(spec: str):
    if spec == "moving-digits":
        from ..worlds.moving_digits.dataset import prompt_videos

        def real(prompts, seeds):
            return torch.cat([prompt_videos(prompts, seed=int(s))[0] for s in seeds])

        return real
    folder = Path(spec)
    if not folder.is_dir():
        raise UserError(f"--real must be 'moving-digits' or a folder of videos, got {spec!r}")

    def real_folder(prompts, seeds):
        from ..video_io import frames_to_tensor, read_video

        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".mp4", ".gif"))
        if len(files) < 2:
            raise UserError(f"{folder}: FVD needs at least 2 real videos")
        videos = [frames_to_tensor(read_video(f)[0]) for f in files]
        t = min(v.shape[1] for v in videos)
        return torch.stack([v[:, :t] for v in videos])

    return real_folder


def make_parser() -> argparse.ArgumentParser:
    """The `t2v-turbo eval` argument parser."""
    p = argparse.ArgumentParser(
        prog="t2v-turbo eval",
        description="Generate with fixed seeds for each model and step count, score every video, and write "
        "results.json, results.md and score_vs_steps.png.",
    )
    p.add_argument("prompts", nargs="*", help="prompts (in addition to --prompt-file / --moving-digits)")
    p.add_argument("--prompt-file", help="a text file with one prompt per line")
    p.add_argument(
        "--moving-digits",
        type=int,
        default=0,
        metavar="N",
        help="use N canonical MovingDigits prompts (a fixed seeded subset; 280 = all)",
    )
    p.add_argument("--prompt-seed", type=int, default=0, help="seed of the --moving-digits subset")
    p.add_argument(
        "--model",
        action="append",
        default=None,
        metavar="[LABEL=]NAME_OR_PATH",
        help="turbo | vcm | teacher (shipped MovingDigits) or a checkpoint; repeatable "
        "(default: turbo, vcm, teacher)",
    )
    p.add_argument(
        "--steps", type=int, nargs="+", default=list(STUDENT_DEFAULT_STEPS), help="student step counts"
    )
    p.add_argument(
        "--teacher-steps",
        type=int,
        nargs="+",
        default=list(TEACHER_DEFAULT_STEPS),
        help="DDIM steps for teachers (models without a guidance embedding)",
    )
    p.add_argument("--guidance", type=float, default=7.5, help="student guidance w (T2V-Turbo convention)")
    p.add_argument(
        "--teacher-guidance",
        type=float,
        default=None,
        help="teacher CFG scale (default 1 + --guidance, the same strength)",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="one generation per prompt per seed")
    p.add_argument(
        "--reward",
        action="append",
        default=[],
        metavar="NAME[:key=value,...]",
        help="a registered reward model to score with (repeatable), e.g. md-video or "
        "hpsv2.1:path=HPS_v2.1_compressed.pt",
    )
    p.add_argument(
        "--clip",
        default="auto",
        metavar="NAME[:key=value,...]|auto|none",
        help="image-text model for text alignment and consistency features "
        "(auto: md-image when the shipped world has it)",
    )
    p.add_argument(
        "--consistency-features",
        choices=["auto", "clip", "pixels"],
        default="auto",
        help="frame features for temporal consistency (auto: the --clip image tower if any)",
    )
    p.add_argument(
        "--judge",
        choices=["auto", "on", "off"],
        default="auto",
        help="MovingDigits judge (digit/color/direction correct); auto: when every prompt parses",
    )
    p.add_argument("--i3d", help="I3D TorchScript file for FVD (StyleGAN-V i3d_torchscript.pt)")
    p.add_argument("--real", default="moving-digits", help="FVD real videos: moving-digits or a folder")
    p.add_argument("--out-dir", default="eval", help="output folder")
    p.add_argument("--save-videos", action="store_true", help="also write every video (VBench naming)")
    p.add_argument("--format", choices=["mp4", "gif"], default="mp4")
    p.add_argument("--timestep-rule", choices=["t2v-turbo", "diffusers"], default="t2v-turbo")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p


def cli(argv: list[str]) -> int:
    """Run `t2v-turbo eval` with `argv`; returns the exit code (bad input raises UserError)."""
    a = make_parser().parse_args(argv)
    prompts = read_eval_prompts(a)
    if min(a.steps + a.teacher_steps) < 1 or not a.seeds:
        raise UserError("step counts must be >= 1 and at least one seed is needed")
    models, sources = _load_models(a.model or ["turbo", "vcm", "teacher"], a.device)

    scorers = Scorers()
    for spec in a.reward:
        scorers.rewards[parse_spec(spec)[0]] = build_scorer(spec).to(a.device)
    clip_spec = a.clip
    if clip_spec == "auto":
        world_sized = all(tuple(m.resolution[1:]) == (32, 32) for m in models.values())
        use_md = _is_moving_digits(prompts) and world_sized and _shipped_world_reward("md-image")
        clip_spec = "md-image" if use_md else "none"
        if clip_spec == "none":
            print("note: no --clip model given: text alignment skipped, temporal consistency on pixels")
    if clip_spec != "none":
        scorers.clip = build_scorer(clip_spec).to(a.device)
        scorers.clip_name = clip_spec
    use_clip_features = a.consistency_features == "clip" or (
        a.consistency_features == "auto" and scorers.clip is not None
    )
    if use_clip_features:
        if scorers.clip is None or not hasattr(scorers.clip, "image_features"):
            raise UserError("--consistency-features clip needs a --clip model with an image tower")
        scorers.feature_fn, scorers.feature_name = scorers.clip.image_features, f"{clip_spec} image"
    if a.judge == "on" or (a.judge == "auto" and _is_moving_digits(prompts)):
        if not _is_moving_digits(prompts):
            raise UserError("--judge on needs MovingDigits captions ('a red digit 7 moving left')")
        from ..worlds.moving_digits.judge import get_judge

        scorers.judge = get_judge()
    if a.i3d:
        from .fvd import load_detector

        try:
            scorers.fvd_detector = load_detector(a.i3d, a.device)
        except (FileNotFoundError, ValueError) as e:
            raise UserError(str(e)) from e
        if a.real == "moving-digits" and not _is_moving_digits(prompts):
            raise UserError("--real moving-digits needs MovingDigits prompts; give --real FOLDER")
        scorers.real_videos = _real_videos_fn(a.real)

    results = evaluate(
        models,
        prompts,
        steps=a.steps,
        teacher_steps=a.teacher_steps,
        guidance=a.guidance,
        teacher_guidance=a.teacher_guidance,
        seeds=a.seeds,
        scorers=scorers,
        batch_size=a.batch_size,
        video_dir=Path(a.out_dir, "videos") if a.save_videos else None,
        video_format=a.format,
        sources=sources,
        timestep_rule=a.timestep_rule,
    )
    from .report import markdown_table, write_report

    paths = write_report(results, a.out_dir, plots=not a.no_plots)
    print(markdown_table(results))
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0
