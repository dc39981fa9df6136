"""Seeing that it learns: `metrics.jsonl` (one line per step, plus validation lines), accelerate
trackers (TensorBoard / wandb when installed and asked for) and a PNG plot at the end."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}


def available_trackers(asked: list[str], printer=print) -> list[str]:
    """The asked trackers whose package is installed (a warning for each missing one)."""
    out = []
    for name in asked:
        if importlib.util.find_spec(TRACKER_PACKAGES[name]) is None:
            printer(
                f"warning: train.trackers asks for {name}, which is not installed (pip install {name}); "
                "skipping it"
            )
        else:
            out.append(name)
    return out


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsLog:
    """Appends JSON lines to `metrics.jsonl` (main process) and forwards to accelerate's trackers.

    On resume, lines after the resumed step (written by the interrupted run) are dropped first.
    """

    def __init__(self, run_dir: Path, accelerator, resume_step: int | None, enabled: bool):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.accelerator, self.enabled = accelerator, enabled
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if resume_step is not None and self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    if json.loads(line).get("step", 0) <= resume_step:
                        kept.append(line)
                except json.JSONDecodeError:  # a line cut by a kill
                    continue
        self.path.write_text("".join(line + "\n" for line in kept))

    def log(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        row = {"step": step, **{k: _clean(v) for k, v in values.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self.accelerator.trackers:
            self.accelerator.log({k: v for k, v in values.items() if isinstance(v, (int, float))}, step=step)


def finish_message(done: int, seconds: float, rate: float, skipped: dict, nan_steps: int, run: Path) -> str:
    """The last lines a run prints: what was skipped and how fast it went."""
    total = sum(skipped.values())
    reasons = ", ".join(f"{n} {k}" for k, n in sorted(skipped.items()))
    return (
        f"skipped {total} data item(s){': ' + reasons if total else ''}; "
        f"{nan_steps} non-finite step(s) skipped\n"
        f"done: {done} steps in {seconds:.1f}s ({rate:.3g} steps/s) -> {run}"
    )


def read_metrics(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def plot_metrics(metrics_path: str | Path, out: str | Path, title: str = "") -> Path | None:
    """Loss terms and reward terms over steps, and validation rewards per step count, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    train_rows = [r for r in rows if "loss" in r]
    val_rows = [r for r in rows if any(k.startswith("val/") for k in r)]
    if not train_rows:
        return None
    panels = [
        ("loss terms", ["loss", "loss_cd"]),
        ("reward terms (train)", sorted({k for r in train_rows for k in r if k.startswith("reward/")})),
    ]
    val_keys = sorted({k for r in val_rows for k in r if k.startswith("val/") and not k.endswith("seconds")})
    if val_keys:
        panels.append(("validation rewards", val_keys))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (name, keys) in zip(axes[0], panels):
        source = val_rows if name.startswith("validation") else train_rows
        for k in keys:
            pts = [(r["step"], r[k]) for r in source if r.get(k) is not None]
            if not pts:
                continue
            xs, ys = zip(*pts)
            if len(pts) < 20:
                ax.plot(xs, ys, marker="o", label=k, linewidth=1)
                continue
            # long runs: the raw per-step values faintly, a running mean over ~2% of the run on top
            (line,) = ax.plot(xs, ys, linewidth=0.5, alpha=0.3)
            w = max(2, len(ys) // 50)
            windows = [ys[max(0, i - w + 1) : i + 1] for i in range(len(ys))]
            smooth = [sum(win) / len(win) for win in windows]
            ax.plot(xs, smooth, color=line.get_color(), linewidth=1.2, label=f"{k} (mean of {w})")
        ax.set_title(name)
        ax.set_xlabel("step")
        if ax.lines:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
