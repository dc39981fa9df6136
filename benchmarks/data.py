"""Data throughput: videos per second through the trainer's data pipeline.

    python benchmarks/data.py [--quick] [--files 32] [--batch 4] [--threads N]

Sources, each measured in interleaved rounds in one run:
- raw decode: `video_io.read_video` of every file (PyAV, all frames) - the baseline of the ratios;
- videos: the trainer's video-folder dataset (`data.videos.VideoClips` through `data.Loader`, with 0
  and 1 worker processes) on synthetic mp4s written here with `video_io.write_video`
  (captions in .txt sidecars), at two sizes: MovingDigits-like clips (64x64 source -> 8 x 32 x 32
  at 8 fps) and ModelScope-like clips (256x256 source -> 8 x 256 x 256 at 8 fps);
- moving-digits: the world's renderer through the same loader (`data.world.MovingDigitsClips`), and
  `sample_batch` directly.
The last column compares each rate with what a T2V-Turbo training step consumes (batch / s per
step from benchmarks/results/training.json, when that benchmark has been run).
Writes benchmarks/results/data.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

SETS = {  # name -> (source frames, source side, source fps, clip (T, H, W, fps))
    "md-like": (24, 64, 16, (8, 32, 32, 8)),
    "ms-like": (32, 256, 16, (8, 256, 256, 8)),
}


def synthetic_video(frames: int, side: int, seed: int) -> torch.Tensor:
    """A smooth moving blob on a gradient: (3, T, H, W) in [-1, 1] (compresses like real footage, not noise)."""
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side] / side
    color = g.uniform(-1, 1, 3)
    cx, cy, vx, vy = g.uniform(0.2, 0.8), g.uniform(0.2, 0.8), g.uniform(-0.02, 0.02), g.uniform(-0.02, 0.02)
    out = np.empty((3, frames, side, side), dtype=np.float32)
    for t in range(frames):
        blob = np.exp(-((xx - cx - vx * t) ** 2 + (yy - cy - vy * t) ** 2) / 0.01)
        for c in range(3):
            out[c, t] = np.clip(0.5 * (xx - yy) + color[c] * blob, -1, 1)
    return torch.from_numpy(out)


def write_set(folder: Path, n: int, frames: int, side: int, fps: int) -> list[Path]:
    from t2v_turbo.video_io import write_video

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = write_video(folder / f"clip{i:04d}.mp4", synthetic_video(frames, side, i), fps=fps)
        path.with_suffix(".txt").write_text(f"a synthetic blob number {i}")
        paths.append(path)
    return paths


def pull(loader, n_batches: int):
    """A measurement that draws `n_batches` batches from one long-lived loader (steady state: its worker
    processes start once, in the warm-up)."""

    def fn():
        for _ in range(n_batches):
            next(loader)

    return fn


def rate(fn, n_videos: int) -> float:
    t0 = time.perf_counter()
    fn()
    return n_videos / (time.perf_counter() - t0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--files", type=int, default=None, help="synthetic mp4s per size (default 32; quick 8)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=None, help="rounds (default 3; quick 1)")
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args(argv)
    from tqdm.auto import tqdm

    from t2v_turbo.data.loader import Loader
    from t2v_turbo.data.videos import VideoClips, list_videos
    from t2v_turbo.data.world import MovingDigitsClips
    from t2v_turbo.video_io import frames_to_tensor, read_video
    from t2v_turbo.worlds.moving_digits.dataset import sample_batch

    threads = C.set_threads(a.threads)
    info = C.machine()
    n_files = a.files or (8 if a.quick else 32)
    repeats = a.repeats or (1 if a.quick else 3)
    sets = {"md-like": SETS["md-like"]} if a.quick else SETS
    n_batches = max(1, n_files // a.batch)
    n = n_batches * a.batch
    tmp = Path(tempfile.mkdtemp(prefix="t2v_data_bench_"))
    fns, notes = {}, {}
    for name, (frames, side, fps, clip) in tqdm(sets.items(), desc="writing synthetic mp4s"):
        paths = write_set(tmp / name, n_files, frames, side, fps)
        notes[name] = (
            f"{n_files} mp4s of {frames} frames {side}x{side} at {fps} fps -> clips {clip[:3]} at {clip[3]} fps"
        )

        def raw(paths=paths):
            for path in paths[:n]:
                frames_to_tensor(read_video(path)[0])

        fns[f"{name}: raw decode (read_video)"] = raw
        for workers in (0, 1):
            ds = VideoClips(list_videos(tmp / name), *clip[:3], fps=clip[3], resize="crop", seed=0)
            fns[f"{name}: VideoClips + Loader, {workers} worker(s)"] = pull(
                Loader(ds, a.batch, seed=0, num_workers=workers, shuffle=True), n_batches
            )

    def md_render():
        rng = np.random.default_rng(0)
        for _ in range(n_batches):
            sample_batch(rng, a.batch)

    for workers in (0, 1):
        fns[f"moving-digits: MovingDigitsClips + Loader, {workers} worker(s)"] = pull(
            Loader(MovingDigitsClips(seed=0), a.batch, seed=0, num_workers=workers, shuffle=False), n_batches
        )
    fns["moving-digits: sample_batch (renderer)"] = md_render
    for fn in fns.values():  # warm-up: worker start-up, caches (glyphs), first decode
        fn()

    rates: dict[str, list[float]] = {k: [] for k in fns}
    with tqdm(total=repeats * len(fns), desc="data rounds") as bar:
        for _ in range(repeats):
            for k, fn in fns.items():
                rates[k].append(rate(fn, n))
                bar.update(1)
    best = {k: max(v) for k, v in rates.items()}  # least-disturbed round

    consume, consume_note = None, "run benchmarks/training.py for this column"
    tr = C.RESULTS / "training.json"
    if tr.exists():
        t = json.loads(tr.read_text())
        consume = t["batch"] / t["seconds_per_step"]["t2v-turbo"]
        consume_note = f"T2V-Turbo step consumes {consume:.2f} videos/s (benchmarks/results/training.json)"
    rows = []
    for k, v in best.items():
        base_key = f"{k.split(':')[0]}: raw decode (read_video)"
        base = best.get(base_key)
        rows.append([k, v, v / base if base else "-", v / consume if consume else "-"])
    headers = [
        "source",
        "videos/s (best round)",
        "vs raw decode of the same files",
        "vs T2V-Turbo step consumption",
    ]
    table = C.markdown(headers, rows)
    print(f"\n## Data throughput: batches of {a.batch}, {n} videos per measurement, {repeats} round(s)\n")
    print(
        f"Machine: {C.machine_line(info)}. Synthetic sets: "
        + "; ".join(f"{k}: {v}" for k, v in notes.items())
    )
    print(f"{consume_note}.\n")
    print(table)
    payload = {
        "benchmark": "data",
        "machine": info,
        "threads": threads,
        "batch": a.batch,
        "videos": n,
        "sets": notes,
        "rates": rates,
        "best": best,
        "training_consumption": consume,
        "table": table,
    }
    print(f"\nwrote {C.write_json('data', payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
