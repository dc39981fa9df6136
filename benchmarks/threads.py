"""Torch CPU threads on a small machine: the default every command uses (`--threads`, 1).

    python benchmarks/threads.py [--videos 8] [--repeats 3]

Generates the same batch with the shipped MovingDigits turbo (4 steps) with 1, 2 and all-core torch
threads, on an idle machine and with one busy-looping process per core in the background (what a
developer's laptop or a shared CI box looks like), timed in interleaved rounds in one run. Prints the
median seconds per batch with the spread (min-max) and the ratio to 1 thread. Writes
benchmarks/results/threads.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import time
from pathlib import Path


def _spin(stop):
    while not stop.is_set():
        pass


def _time_generate(threads: int, videos: int) -> float:
    import torch

    from t2v_turbo.pipeline import generate, load_backbone

    torch.set_num_threads(threads)
    model = _time_generate.model = getattr(_time_generate, "model", None) or load_backbone("turbo")
    prompts = ["a red digit 7 moving left"] * videos
    t0 = time.perf_counter()
    generate(model, prompts, 4, w=7.5, seed=0)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--videos", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    cores = os.cpu_count() or 1
    counts = sorted({1, 2, cores})
    _time_generate(1, 1)  # load and warm up
    results = {}
    for load in ("idle", "busy"):
        stop = mp.Event()
        spinners = [mp.Process(target=_spin, args=(stop,), daemon=True) for _ in range(cores if load == "busy" else 0)]
        for s in spinners:
            s.start()
        try:
            times = {n: [] for n in counts}
            for _ in range(a.repeats):
                for n in counts:  # interleaved: every thread count once per round
                    times[n].append(_time_generate(n, a.videos))
        finally:
            stop.set()
            for s in spinners:
                s.join()
        results[load] = times
    print(f"| machine load | torch threads | s per {a.videos} videos (median) | min-max | ratio to 1 thread |")
    print("|---|---|---|---|---|")
    for load, times in results.items():
        ref = statistics.median(times[1])
        for n in counts:
            med = statistics.median(times[n])
            print(f"| {load} | {n} | {med:.3f} | {min(times[n]):.3f}-{max(times[n]):.3f} | {med / ref:.2f}x |")
    out = Path(__file__).parent / "results" / "threads.json"
    out.write_text(json.dumps({"cores": cores, "videos": a.videos, "repeats": a.repeats, "seconds": results}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
