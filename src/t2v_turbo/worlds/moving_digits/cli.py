"""`t2v-turbo world build | table`: rebuild the MovingDigits world, regenerate its results table."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ...errors import InputError

CLAIMS_DOC = """The paper's claims, in miniature, as the world's goals (issue 17; checked on the table above):
1. the 50-step teacher draws what it is asked for: digit >= 0.70, all correct >= 0.60, colour and
   direction >= 0.95;
2. T2V-Turbo at 4 steps at least matches the 50-step teacher on all correct;
3. it clearly beats VCM at 4 steps (all correct, +0.15 or more);
4. T2V-Turbo at 1 step is within 0.05 of the teacher (all correct) or better;
5. T2V-Turbo at 4 steps is at least 15x faster per video than the teacher."""

TEACHER_GOALS = {"judge/digit_correct": 0.70, "judge/all_correct": 0.60, "judge/color_correct": 0.95, "judge/direction_correct": 0.95}


FM_CLAIMS_DOC = """The same claims for the flow-matching family (issue 19):
1. FM-T2V-Turbo at 4 steps at least matches the 50-step FM teacher on all correct;
2. it clearly beats FM-VCM at 4 steps (all correct, +0.15 or more);
3. it is at least 15x faster per video than the FM teacher."""

# family -> (teacher, VCM, T2V-Turbo) labels in the results and asset folders under the world root
FAMILY_MODELS = {
    "unet": {"teacher": "teacher", "vcm": "vcm", "turbo": "turbo"},
    "fm": {"teacher": "fm-teacher", "vcm": "fm-vcm", "turbo": "fm-turbo"},
}


def _run(results: dict, model: str, steps: int | None) -> dict | None:
    for r in results["runs"]:
        if r["model"] == model and (steps is None or r["steps"] == steps):
            return r
    return None


def check_claims(results: dict, alignment: str = "judge/all_correct", family: str = "unet") -> list[dict]:
    """The world's goals as (claim, measured numbers, holds) from an eval results dict: `CLAIMS_DOC`
    for the UNet family, `FM_CLAIMS_DOC` for the flow-matching one (`family="fm"`)."""
    names = FAMILY_MODELS[family]
    turbo, turbo1 = _run(results, names["turbo"], 4), _run(results, names["turbo"], 1)
    vcm, teacher = _run(results, names["vcm"], 4), _run(results, names["teacher"], None)
    if not (turbo and vcm and teacher):
        return []
    tag = "" if family == "unet" else "FM-"

    def m(run, key=alignment):
        return run["metrics"][key]["mean"]

    speed = teacher["seconds_per_video"] / turbo["seconds_per_video"]
    claims = []
    if family == "unet":
        claims.append(
            {
                "claim": "teacher DDIM-50: digit >= 0.70, all correct >= 0.60, colour and direction >= 0.95",
                "measured": ", ".join(f"{k.split('/')[1]} {m(teacher, k):.3f}" for k in TEACHER_GOALS),
                "holds": all(m(teacher, k) >= v for k, v in TEACHER_GOALS.items()),
            }
        )
    claims += [
        {
            "claim": f"{tag}T2V-Turbo 4 steps >= {tag}teacher 50 steps (all correct)",
            "measured": f"{m(turbo):.3f} vs {m(teacher):.3f}",
            "holds": m(turbo) >= m(teacher),
        },
        {
            "claim": f"{tag}T2V-Turbo 4 steps clearly beats {tag}VCM 4 steps (all correct, +0.15 or more)",
            "measured": f"{m(turbo):.3f} vs {m(vcm):.3f}",
            "holds": m(turbo) >= m(vcm) + 0.15,
        },
    ]
    if turbo1 is not None and family == "unet":
        claims.append(
            {
                "claim": "T2V-Turbo 1 step within 0.05 of the teacher DDIM-50 or better (all correct)",
                "measured": f"{m(turbo1):.3f} vs {m(teacher):.3f}",
                "holds": m(turbo1) >= m(teacher) - 0.05,
            }
        )
    claims.append(
        {
            "claim": f"{tag}T2V-Turbo 4 steps >= 15x faster per video than the {tag}teacher",
            "measured": f"{speed:.1f}x ({turbo['seconds_per_video'] * 1000:.1f} ms vs {teacher['seconds_per_video'] * 1000:.1f} ms)",
            "holds": speed >= 15,
        }
    )
    return claims


def claims_lines(results: dict) -> list[str]:
    """The claims docs and one "holds / FAILS" line per claim, as written under the table."""
    lines = []
    for family, doc in (("unet", CLAIMS_DOC), ("fm", FM_CLAIMS_DOC)):
        claims = [c for c in results["claims"] if c.get("family", "unet") == family]
        if claims:
            lines += [doc, ""] + [f"- {'holds' if c['holds'] else 'FAILS'}: {c['claim']}: {c['measured']}" for c in claims]
            lines.append("")
    return lines


def family_folders(root: Path, family: str) -> dict[str, Path]:
    """label -> asset folder of a family's three models under a world root ("fm-vcm" -> root/fm_vcm)."""
    return {label: root / label.replace("-", "_") for label in FAMILY_MODELS[family].values()}


def load_family(root: Path, family: str, shipped: bool) -> dict:
    """label -> backbone for a family's teacher, VCM and T2V-Turbo (shipped: through the model registry).

    Raises:
        InputError: a folder is missing (one line naming it and the build command).
    """
    from ...models.registry import load_backbone

    models = {}
    for label, folder in family_folders(root, family).items():
        if not folder.is_dir():
            flag = "" if family == "unet" else " --family fm"
            raise InputError(f"{folder} is missing: build the world first (`t2v-turbo world build{flag}`)")
        models[label] = load_backbone(label) if shipped else load_backbone(folder)
    return models


def sheet_rows(models: dict, family: str) -> list[tuple[str, object, int]]:
    """The contact sheet's rows of one family: teacher 50 steps, VCM 4, T2V-Turbo 4 and 1."""
    n = FAMILY_MODELS[family]
    tag = "" if family == "unet" else "FM-"
    return [
        (f"{tag}teacher, 50 steps", models[n["teacher"]], 50),
        (f"{tag}VCM, 4 steps", models[n["vcm"]], 4),
        (f"{tag}T2V-Turbo, 4 steps", models[n["turbo"]], 4),
        (f"{tag}T2V-Turbo, 1 step", models[n["turbo"]], 1),
    ]


def results_table(
    world: str | Path | None = None,
    out_dir: str | Path = "docs/moving_digits",
    num_prompts: int = 280,
    seeds: tuple[int, ...] = (0,),
    batch_size: int = 70,
    families: tuple[str, ...] | None = None,
    sheets: bool = True,
    merge: bool = False,
) -> dict:
    """Generate every model x step count on the canonical prompts, judge and score them, and write
    results.json, results.md, score_vs_steps.png and one contact sheet per family
    (contact_sheet.png, contact_sheet_fm.png) to `out_dir`. Returns the results with "claims".

    `families`: "unet" and/or "fm" (default: "unet", plus "fm" when the world has its folders).
    `merge`: keep the other families' rows of `out_dir/results.json` (same prompts, seeds and w; each
    family's speed ratios are measured within its own run), so one re-trained family can be re-measured
    without re-running the others.
    """
    from ...evaluation.report import markdown_table, write_report
    from ...evaluation.runner import Scorers, evaluate
    from ...evaluation.specs import build_scorer
    from .contact_sheet import contact_sheet
    from .dataset import prompt_subset
    from .judge import get_judge
    from .models import ASSETS_DIR

    root = Path(world) if world else ASSETS_DIR
    if families is None:
        families = ("unet",) + (("fm",) if all(f.is_dir() for f in family_folders(root, "fm").values()) else ())
    unknown = [f for f in families if f not in FAMILY_MODELS]
    if unknown:
        raise InputError(f"unknown families {unknown}; valid: {list(FAMILY_MODELS)}")
    old = _mergeable(Path(out_dir), prompt_subset(num_prompts), seeds) if merge else None  # before any loading
    per_family = {f: load_family(root, f, shipped=world is None) for f in families}
    models = {label: m for fam in per_family.values() for label, m in fam.items()}
    scorers = Scorers(judge=get_judge())
    for name, folder in (("md-image", "reward_image"), ("md-video", "reward_video")):
        scorers.rewards[name] = build_scorer(f"{name}:path={root / folder}")
    scorers.clip, scorers.clip_name = scorers.rewards["md-image"], "md-image"
    scorers.feature_fn, scorers.feature_name = scorers.clip.image_features, "md-image image features"
    prompts = prompt_subset(num_prompts)
    t0 = time.time()
    results = evaluate(
        models,
        prompts,
        steps=(1, 2, 4, 8),
        teacher_steps=(50,),
        seeds=seeds,
        scorers=scorers,
        batch_size=batch_size,
    )
    results["seconds"] = time.time() - t0
    if old is not None:
        families = merge_results(old, results)
    results["claims"] = [dict(c, family=f) for f in families for c in check_claims(results, family=f)]
    out = Path(out_dir)
    write_report(results, out)
    md = (out / "results.md").read_text()
    notes = [results["merged"] + ".", ""] if "merged" in results else []
    lines = [md.rstrip(), "", *notes, *claims_lines(results)]
    (out / "results.md").write_text("\n".join(lines).rstrip() + "\n")
    (out / "results.json").write_text(json.dumps(results, indent=1))
    if sheets:
        for f, fam in per_family.items():
            name = "contact_sheet.png" if f == "unet" else f"contact_sheet_{f}.png"
            contact_sheet(sheet_rows(fam, f), out / name, judge=get_judge())
    print(markdown_table(results))
    for c in results["claims"]:
        print(f"{'holds' if c['holds'] else 'FAILS'}: {c['claim']}: {c['measured']}")
    return results


def merge_results(old: dict, new: dict) -> tuple[str, ...]:
    """Add `old`'s rows of the models `new` did not measure to `new`'s, in family order (in place; a
    note under "merged") and return the families the merged runs cover."""
    measured = {r["model"] for r in new["runs"]}
    kept = [r for r in old["runs"] if r["model"] not in measured]
    order = {label: i for i, label in enumerate(n for f in FAMILY_MODELS.values() for n in f.values())}
    # family order (UNet first), so the table's "speed-up vs teacher" column keeps the UNet teacher as its base
    new["runs"] = sorted(kept + new["runs"], key=lambda r: order.get(r["model"], len(order)))
    if kept:
        new["merged"] = (
            f"rows of {', '.join(sorted({r['model'] for r in kept}))} kept from the previous results.json; "
            f"{', '.join(sorted(measured))} re-measured"
        )
    return tuple(f for f in FAMILY_MODELS if any(_run(new, n, None) for n in FAMILY_MODELS[f].values()))


def _mergeable(out: Path, prompts: list[str], seeds: tuple[int, ...]) -> dict:
    """The previous results.json of `out` when a merge can keep its rows (same prompts and seeds)."""
    path = out / "results.json"
    if not path.is_file():
        raise InputError(f"--merge: {path} not found: run `t2v-turbo world table` first")
    try:
        old = json.loads(path.read_text())
        same = list(old["settings"]["prompts"]) == list(prompts) and list(old["settings"]["seeds"]) == list(seeds)
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"--merge: {path} is not a world table ({e})") from None
    if not same:
        raise InputError(f"--merge: {path} was measured on other prompts or seeds; regenerate the whole table")
    return old


def retime_results(out_dir: str | Path = "docs/moving_digits", world: str | Path | None = None, repeats: int = 3, prompts: int = 8) -> dict:
    """Re-measure only the speed of an existing results.json (the scores are kept): every run timed
    interleaved, `repeats` rounds on the first `prompts` prompts, as `evaluate` does; then the claims,
    results.md and the plot are rewritten. For a table whose timing pass shared the machine with other
    work (speed ratios are only comparable when measured together on an otherwise idle machine)."""
    from ...evaluation.report import markdown_table, write_report
    from ...evaluation.runner import time_runs
    from ...pipeline import generate
    from .models import ASSETS_DIR

    out = Path(out_dir)
    path = out / "results.json"
    if not path.is_file():
        raise InputError(f"{path} not found: run `t2v-turbo world table` first")
    results = json.loads(path.read_text())
    root = Path(world) if world else ASSETS_DIR
    families = sorted({c.get("family", "unet") for c in results.get("claims", [])}) or ["unet"]
    models = {label: m for f in families for label, m in load_family(root, f, shipped=world is None).items()}
    jobs = [(r["model"], models[r["model"]], int(r["steps"])) for r in results["runs"] if r["model"] in models]
    settings = results["settings"]
    w, cfg, rule = settings.get("w", 7.5), settings.get("cfg_scale"), settings.get("timestep_rule", "t2v-turbo")
    batch = list(settings["prompts"][:prompts])  # the same prompts as the table's timing pass
    for m in models.values():  # first-call costs stay out of the timings
        generate(m, batch[:1], 1, w=w, cfg_scale=cfg, seed=0, timestep_rule=rule)
    times = time_runs(jobs, batch, w, cfg, repeats, rule)
    for r in results["runs"]:
        t = sorted(times[(r["model"], int(r["steps"]))])
        r["seconds_per_video"], r["seconds_per_video_range"] = t[len(t) // 2], [t[0], t[-1]]
        r["timing_rounds"] = len(t)
    results["retimed"] = f"speed re-measured apart from the scores: {repeats} interleaved rounds on {prompts} prompts"
    results["claims"] = [dict(c, family=f) for f in families for c in check_claims(results, family=f)]
    write_report(results, out)
    md = (out / "results.md").read_text()
    notes = [results["merged"] + ".", ""] if "merged" in results else []
    lines = [md.rstrip(), "", *notes, results["retimed"] + ".", "", *claims_lines(results)]
    (out / "results.md").write_text("\n".join(lines).rstrip() + "\n")
    path.write_text(json.dumps(results, indent=1))
    print(markdown_table(results))
    for c in results["claims"]:
        print(f"{'holds' if c['holds'] else 'FAILS'}: {c['claim']}: {c['measured']}")
    return results


def cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="t2v-turbo world", description="The MovingDigits world.", formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser(
        "build", help="rebuild the world from scratch (VAE, text + rewards, teacher, students)"
    )
    b.add_argument("--out", default="world", help="world folder to write (the shipped assets are never overwritten unless --in-place)")
    b.add_argument("--in-place", action="store_true", help="write into the installed package's shipped assets folder")
    b.add_argument(
        "--family",
        choices=["unet", "fm"],
        default="unet",
        help="unet: the UNetMotionModel family; fm: the flow-matching (Wan transformer) family on the same "
        "VAE, text tower and rewards (taken from the shipped world when --out lacks them)",
    )
    b.add_argument(
        "--stages",
        default=None,
        help="comma-separated stages (default: the family's, unet: vae,text_and_rewards,teacher,students; "
        "fm: fm_teacher,fm_students)",
    )
    b.add_argument("--quick", action="store_true", help="a seconds-long smoke build (useless weights)")
    b.add_argument("--threads", type=int, default=1, help="torch threads (1 is faster on a busy machine)")
    b.add_argument("--student-steps", type=int, default=None, help="override the students' train.max_steps")
    t = sub.add_parser("table", help="regenerate the results table (markdown, JSON, PNG plot)")
    t.add_argument("--world", default=None, help="world folder (default: the shipped models)")
    t.add_argument("--out-dir", default="docs/moving_digits")
    t.add_argument("--prompts", type=int, default=280, help="number of canonical prompts (280 = all)")
    t.add_argument("--seeds", type=int, nargs="+", default=[0])
    t.add_argument("--families", default=None, help="unet, fm or unet,fm (default: unet, plus fm when built)")
    t.add_argument("--no-sheets", action="store_true", help="skip the contact sheets")
    t.add_argument(
        "--merge", action="store_true", help="keep the other families' rows of --out-dir's results.json (with --families)"
    )
    t.add_argument("--retime", action="store_true", help="only re-measure the speed of --out-dir's results.json (scores kept)")
    c = sub.add_parser("sheet", help="only the contact sheet(s): 6 prompts, teacher-50 / VCM-4 / T2V-Turbo-4 and -1")
    c.add_argument("--world", default=None, help="world folder (default: the shipped models)")
    c.add_argument("--out-dir", default="docs/moving_digits")
    c.add_argument("--families", default="unet", help="unet, fm or unet,fm")
    w = sub.add_parser(
        "sensitivity", help="how much a model's denoising loss depends on each word (colour, digit, direction)"
    )
    w.add_argument("--world", default=None, help="world folder (default: the shipped models)")
    w.add_argument("--model", default="teacher", help="UNet folder in the world: teacher, vcm or turbo")
    w.add_argument("--videos", type=int, default=28)
    w.add_argument("--timesteps", type=int, nargs="+", default=[950, 800, 600, 400, 200])
    for sp in (t, w, c):
        sp.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    a = p.parse_args(argv)
    if a.threads is not None and a.threads < 1:
        raise InputError(f"--threads must be >= 1, got {a.threads}")
    if a.cmd != "build":
        import torch

        torch.set_num_threads(a.threads)
    if a.cmd == "table" and (a.prompts < 1 or not a.seeds):
        raise InputError(f"--prompts must be >= 1 and --seeds non-empty, got {a.prompts}, {a.seeds}")
    if a.cmd == "sensitivity":
        return _sensitivity(a)
    if a.cmd == "build":
        from .build import FAMILIES as FAMILY_STAGES
        from .build import build_world
        from .students import distill_student

        valid = FAMILY_STAGES[a.family]
        stages = [s.strip() for s in (a.stages or ",".join(valid)).split(",") if s.strip()]
        bad = [s for s in stages if s not in valid]
        if bad:
            raise InputError(f"unknown stages {bad} for --family {a.family}; valid: {list(valid)}")
        if a.quick and a.in_place:
            raise InputError("--quick with --in-place would overwrite the shipped weights with useless ones")
        out = None if a.in_place else a.out
        overrides = {}
        if a.student_steps:
            overrides["train.max_steps"] = a.student_steps
        if a.quick:
            overrides.update({"train.max_steps": 2, "checkpoint.every": 1, "validation.every": 0})

        def trainer(out, name, recipe):
            return distill_student(out, name, recipe, overrides)

        report = build_world(out, stages, quick=a.quick, num_threads=a.threads, trainer=trainer)
        print(f"world built in {report['seconds']:.0f} s -> {report['out_dir']}")
        return 0
    fam_arg = getattr(a, "families", None)
    families = None if fam_arg is None else tuple(f.strip() for f in fam_arg.split(",") if f.strip())
    if a.cmd == "sheet":
        return _sheets(a.world, a.out_dir, families)
    if a.retime:
        retime_results(a.out_dir, a.world)
        return 0
    if a.merge and not families:
        raise InputError("--merge needs --families (the families to re-measure)")
    results_table(
        a.world, a.out_dir, a.prompts, tuple(a.seeds), families=families, sheets=not a.no_sheets, merge=a.merge
    )
    return 0


def _sheets(world: str | None, out_dir: str, families: tuple[str, ...]) -> int:
    from .contact_sheet import contact_sheet
    from .judge import get_judge
    from .models import ASSETS_DIR

    unknown = [f for f in families if f not in FAMILY_MODELS]
    if unknown:
        raise InputError(f"unknown families {unknown}; valid: {list(FAMILY_MODELS)}")
    root = Path(world) if world else ASSETS_DIR
    for f in families:
        name = "contact_sheet.png" if f == "unet" else f"contact_sheet_{f}.png"
        fam = load_family(root, f, shipped=world is None)
        print(contact_sheet(sheet_rows(fam, f), Path(out_dir) / name, judge=get_judge()))
    return 0


def _sensitivity(a) -> int:
    """Print the loss with one word swapped relative to the true caption (1.000 = the word is ignored)."""
    from . import models as md_models
    from .diagnostics import word_sensitivity

    if a.videos < 1:
        raise InputError(f"--videos must be >= 1, got {a.videos}")
    if any(not 0 <= t < 1000 for t in a.timesteps):
        raise InputError(f"--timesteps must be in 0..999, got {a.timesteps}")
    root = Path(a.world) if a.world else md_models.ASSETS_DIR
    if not (root / a.model / "unet").exists():
        raise InputError(f"no UNet folder {root / a.model / 'unet'}; models here: teacher, vcm, turbo")
    backbone = md_models.load_teacher(root, a.model)
    if backbone.w_embedding_dim is not None:
        raise InputError(f"{a.model!r} is a student (guidance-embedded); this check is for teachers")
    res = word_sensitivity(backbone, a.timesteps, a.videos)
    print(f"loss with one attribute swapped / with the true caption ({a.videos} ground-truth videos)")
    print("|    t | true MSE | colour | digit | direction | empty prompt |")
    print("|---|---|---|---|---|---|")
    for t, r in res.items():
        rel = {k: r[k] / r["true"] for k in r}
        print(
            f"| {t:4d} | {r['true']:.5f} | {rel['color']:.3f} | {rel['digit']:.3f} | "
            f"{rel['direction']:.3f} | {rel['empty']:.3f} |"
        )
    return 0

