"""Turn `evaluate()` results into a markdown table and PNG plots (score vs steps)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from .hardware import machine_label

# metric -> (column title, higher is better); unknown metrics (reward/*, fvd*) are added after these
KNOWN = {
    "judge/all_correct": ("all correct", True),
    "judge/digit_correct": ("digit", True),
    "judge/color_correct": ("color", True),
    "judge/direction_correct": ("direction", True),
    "judge/consistency": ("judge consistency", True),
    "text_alignment": ("text alignment", True),
    "temporal_consistency": ("temporal consistency", True),
    "motion_amount": ("motion (frame diff)", None),
    "centroid_displacement": ("motion (px/frame)", None),
}
SKIP = {"judge/speed"}


def metric_order(results: dict) -> list[str]:
    """Metric names present in any run, known ones first, then rewards, then FVD."""
    names: list[str] = []
    for run in results["runs"]:
        names += [n for n in run["metrics"] if n not in names and n not in SKIP]
    known = [n for n in KNOWN if n in names]
    rewards = sorted(n for n in names if n.startswith("reward/"))
    rest = sorted(n for n in names if n not in known and n not in rewards)
    return known + rewards + rest


def title(name: str) -> str:
    """Column / panel title of a metric."""
    return KNOWN[name][0] if name in KNOWN else name


def _teacher_seconds(results: dict) -> float | None:
    teachers = [r for r in results["runs"] if r["sampler"] != "consistency"]
    return max(teachers, key=lambda r: r["steps"])["seconds_per_video"] if teachers else None


def markdown_table(results: dict) -> str:
    """One row per (model, steps): UNet evaluations and seconds per video, speed-up against the
    teacher's longest run (if any), then each metric's mean ± standard error."""
    names = metric_order(results)
    ref = _teacher_seconds(results)
    head = ["model", "steps", "sampler", "guidance", "UNet evals/video", "s/video (min-max)"]
    if ref:
        head.append("speed-up vs teacher")
    head += [title(n) for n in names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results["runs"]:
        row = [
            r["model"],
            str(r["steps"]),
            r["sampler"],
            _guidance(r),
            str(r["unet_evals_per_video"]),
            _seconds(r),
        ]
        if ref:
            row.append(f"{ref / r['seconds_per_video']:.1f}x")
        for n in names:
            m = r["metrics"].get(n)
            if m is None:
                row.append("-")
            elif m["n"] > 1:
                row.append(f"{m['mean']:.3f} ± {m['sem']:.3f}")
            else:
                row.append(f"{m['mean']:.3f}")
        lines.append("| " + " | ".join(row) + " |")
    s = results["settings"]
    caption = (
        f"{s['num_prompts']} prompts x {len(s['seeds'])} seed(s) {s['seeds']}; students embed w, teachers "
        f"run CFG (default scale 1 + w); speed: {s.get('timing', 'wall clock')}; resolution {s['resolution']} at {s['fps']} fps, temporal consistency on "
        f"{s['temporal_consistency_features']} features; mean ± s.e.m. over videos. "
        f"Machine: {machine_label(results['machine'])}."
    )
    return "\n".join(lines) + "\n\n" + caption + "\n"


def _guidance(run: dict) -> str:
    if run.get("w") is not None:
        return f"w={run['w']:g}"
    if run.get("cfg_scale") is not None:
        return f"cfg={run['cfg_scale']:g}"
    return "-"


def _seconds(run: dict) -> str:
    lo, hi = run.get("seconds_per_video_range", [None, None])
    if lo is None or run.get("timing_rounds", 0) < 2:
        return f"{run['seconds_per_video']:.4f}"
    return f"{run['seconds_per_video']:.4f} ({lo:.4f}-{hi:.4f})"


def plot_results(results: dict, path: str | Path) -> Path:
    """A grid of score-vs-steps panels (one per metric, plus seconds per video), students as lines
    over steps (log2 axis), teachers as dashed horizontal lines. Written as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = metric_order(results) + ["seconds_per_video"]
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    students = {}
    for r in results["runs"]:
        if r["sampler"] == "consistency":
            students.setdefault(r["model"], []).append(r)
    teachers = [r for r in results["runs"] if r["sampler"] != "consistency"]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    all_steps = sorted({r["steps"] for rs in students.values() for r in rs})

    def value(r: dict, n: str) -> float:
        if n == "seconds_per_video":
            return r["seconds_per_video"]
        m = r["metrics"].get(n)
        return m["mean"] if m else float("nan")

    for ax, n in zip(axes.flat, names):
        for i, (label, rs) in enumerate(students.items()):
            rs = sorted(rs, key=lambda r: r["steps"])
            ax.plot(
                [r["steps"] for r in rs],
                [value(r, n) for r in rs],
                "o-",
                color=colors[i % len(colors)],
                label=label,
            )
        for j, r in enumerate(teachers):
            ax.axhline(
                value(r, n),
                ls="--",
                color=colors[(len(students) + j) % len(colors)],
                label=f"{r['model']} ({r['steps']} steps, CFG)",
            )
        ax.set_xscale("log", base=2)
        if all_steps:
            ax.set_xticks(all_steps, [str(x) for x in all_steps])
            ax.minorticks_off()
        ax.set_xlabel("steps")
        ax.set_title("seconds per video" if n == "seconds_per_video" else title(n), fontsize=10)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=max(1, len(labels)), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(results: dict, out_dir: str | Path, plots: bool = True) -> dict[str, Path]:
    """Write results.json, results.md and score_vs_steps.png into `out_dir`; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "markdown": out / "results.md"}
    paths["json"].write_text(json.dumps(results, indent=1))
    paths["markdown"].write_text("# Evaluation\n\n" + markdown_table(results))
    if plots:
        paths["plot"] = plot_results(results, out / "score_vs_steps.png")
    return paths
