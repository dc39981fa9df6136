"""Running VBench on an export (`export_vbench`'s folder): check up front that vbench and every
chosen dimension import (one line naming what to install), then run each dimension on its own and
report per-dimension scores and errors (a NaN or empty result is that dimension's error)."""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import DataError, InputError
from . import vbench_suite
from .vbench import (
    METADATA_FILE,
    PROMPT_MAP_FILE,
    RESULTS_DIR,
    VIDEOS_DIR,
    _write_json,
    read_export,
    resolve_dimensions,
)

_PIP_NAMES = {
    "cv2": "opencv-python",
    "clip": "openai-clip",
    "PIL": "Pillow",
    "skimage": "scikit-image",
    "sklearn": "scikit-learn",
    "yaml": "pyyaml",
    "detectron2": "detectron2 (see its install guide)",
}


# ---------------------------------------------------------------------------------------------------
# evaluation


def _missing_module_hint(e: BaseException) -> str:
    name = getattr(e, "name", None) or ""
    top = name.split(".")[0]
    if not top:
        return ""
    pip = _PIP_NAMES.get(top, top)
    if top == "torchvision":
        import torch

        pip = f"torchvision built for this torch ({torch.__version__})"
    return f"; install {pip}"


def check_vbench(dimensions: Sequence[str]) -> None:
    """Import vbench and the module of every dimension now, before any video is generated.

    Raises:
        InputError: one line saying what cannot be imported and what to install.
    """
    if importlib.util.find_spec("vbench") is None:
        raise InputError(
            "--run-vbench: vbench is not installed; pip install vbench (it needs torchvision built for your torch, "
            "decord and opencv-python), or drop --run-vbench"
        )
    for module in ["vbench", *(f"vbench.{d}" for d in dimensions)]:
        try:
            importlib.import_module(module)
        except Exception as e:  # an ImportError, or whatever a broken dependency raises at import
            raise InputError(
                f"--run-vbench: `import {module}` fails ({type(e).__name__}: {_one_line(e)}){_missing_module_hint(e)}"
            ) from None


def prepare_vbench(dimensions: Sequence[str] | None, mode: str | None, suite: bool) -> tuple[list[str], str]:
    """Everything `run_vbench` needs, checked before any video is generated: the mode (default
    vbench_standard for a suite export, else custom_input), the dimensions, and that vbench and each
    dimension's module import. Returns (dimensions, mode); raises InputError (one line)."""
    mode = mode or ("vbench_standard" if suite else "custom_input")
    dims = resolve_dimensions(dimensions, mode)
    if mode == "vbench_standard" and not suite:
        raise InputError("vbench_standard mode needs an export of VBench's own prompts (--suite vbench)")
    check_vbench(dims)
    return dims, mode


def _one_line(e: BaseException, limit: int = 300) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def dimension_result(results_file: str | Path, dimension: str) -> tuple[float, int]:
    """(score, number of videos scored) from a VBench `*_eval_results.json`.

    Raises:
        DataError: no result file, no entry for the dimension, a NaN / non-numeric score, or no video.
    """
    path = Path(results_file)
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"VBench wrote no result file {path.name}") from None
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read VBench's result {path}: {e}") from None
    entry = results.get(dimension) if isinstance(results, dict) else None
    if entry is None:
        raise DataError(f"VBench's result {path.name} has no {dimension} entry")
    score, per_video = (entry[0], entry[1]) if isinstance(entry, list) and len(entry) == 2 else (entry, None)
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
        raise DataError(f"VBench scored {dimension} as {score!r}: it found no usable video (check the file names)")
    n = len(per_video) if isinstance(per_video, list) else 0
    if n == 0:
        raise DataError(f"VBench scored {dimension} on no video (check the file names)")
    return float(score), n


def run_vbench(
    out_dir: str | Path,
    dimensions: Sequence[str] | None = None,
    mode: str | None = None,
    device: str | None = None,
    name: str = "t2v_turbo",
    local_weights: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Evaluate an export folder with VBench, one dimension at a time.

    Every dimension runs on its own (`VBench(device, suite file, OUT/vbench_results/DIM).evaluate(...)`,
    VBench's Python entry point), so one that fails (a download, a missing dependency, no video
    found, a NaN score) is recorded with its error and the others still run. custom_input mode passes
    the exact prompts (`vbench_prompts.json`), so even inexact names are scored with their prompt.

    Args:
        mode: custom_input or vbench_standard (default: vbench_standard for a `--suite vbench` export).
        local_weights: VBench's `local=True` (weights already in its cache folder).
        progress: called with each dimension's name before it runs.
    Returns:
        {"mode", "dimensions": {dim: {"score", "num_videos", "seconds"} or {"error", "seconds"}}, "seconds"};
        also stored under "vbench" in the folder's metadata.
    Raises:
        InputError: an unknown dimension, a mode the export cannot be evaluated in, vbench not importable.
        DataError: the folder is not an export.
    """
    import torch

    out = Path(out_dir)
    meta = read_export(out)
    dims, mode = prepare_vbench(dimensions, mode, suite=bool(meta.get("suite")))
    from vbench import VBench

    videos = out / meta.get("videos_dir", VIDEOS_DIR)
    prompt_map = {}
    if mode == "custom_input":
        map_file = out / meta.get("prompt_file", PROMPT_MAP_FILE)
        prompt_map = json.loads(map_file.read_text(encoding="utf-8")) if map_file.is_file() else {}
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    results: dict[str, dict] = {}
    start = time.perf_counter()
    for dim in dims:
        if progress is not None:
            progress(dim)
        dim_dir = out / RESULTS_DIR / dim
        dim_dir.mkdir(parents=True, exist_ok=True)
        run_name = f"{name}_{dim}"
        (dim_dir / f"{run_name}_eval_results.json").unlink(missing_ok=True)
        t0 = time.perf_counter()
        try:
            VBench(dev, str(vbench_suite.SUITE_FILE), str(dim_dir)).evaluate(
                videos_path=str(videos),
                name=run_name,
                prompt_list=dict(prompt_map),
                dimension_list=[dim],
                local=local_weights,
                mode=mode,
            )
            score, n = dimension_result(dim_dir / f"{run_name}_eval_results.json", dim)
            results[dim] = {"score": score, "num_videos": n, "seconds": time.perf_counter() - t0}
        except Exception as e:  # one dimension's failure must not stop the others
            (dim_dir / "error.txt").write_text(traceback.format_exc(), encoding="utf-8")
            results[dim] = {"error": f"{type(e).__name__}: {_one_line(e)}", "seconds": time.perf_counter() - t0}
    summary = {
        "mode": mode,
        "device": str(dev),
        "dimensions": results,
        "results_dir": RESULTS_DIR,
        "seconds": time.perf_counter() - start,
        "vbench_version": _version("vbench"),
    }
    meta["vbench"] = summary
    _write_json(out / METADATA_FILE, meta)
    _write_json(out / RESULTS_DIR / "summary.json", summary)
    return summary


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None
