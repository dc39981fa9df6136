"""VBench export and evaluation (library; the command is `t2v-turbo export-vbench`).

Layout of an export folder `OUT/`:

- `OUT/videos/`: the videos and nothing else, named `{prompt}-{i}.mp4` (VBench's naming). VBench's
  `vbench_standard` mode takes the file extension from the first entry of the folder listing, so a
  metadata file in this folder would make it find no video at all.
- `OUT/vbench_export.json`: model, steps, `w` (students) or `cfg_scale` (teachers), timesteps, seeds,
  resolution, fps, hardware, the prompts and their sample counts, and every file name VBench cannot
  map back to its prompt (with the reason).
- `OUT/vbench_prompts.json`: `{file name: prompt}`, VBench's `--prompt_file` format (custom_input mode).
- `OUT/vbench_results/DIMENSION/`: VBench's own output, one folder per dimension (`run_vbench`).

File names. VBench reads a prompt back from a file name in two ways (vbench 0.1.5):
`custom_input` mode takes the name's stem (`pathlib` rule: up to the last dot) minus a trailing
`-<digits>`; `vbench_standard` mode looks up exactly `f"{prompt}-{i}{ext}"` for i = 0..4. So the name
is the prompt itself, byte for byte; only what a POSIX file name cannot hold is changed: `/` becomes
U+2215 (`∕`) and NUL is dropped, and a name longer than 255 bytes of UTF-8 (the ext4 / APFS limit; a
CJK character is 3 bytes) is cut at a character boundary. Such names are listed in the metadata as
inexact (VBench cannot recover those prompts by name; `run_vbench` passes the exact prompts in
custom_input mode). Two prompts that would share a name are refused up front, naming both.

Seeds. File `{prompt}-{i}` comes from seed `seed + i`: one `pipeline.generate` call per index i over
the prompts that have more than i samples, in order (in batches of `batch_size`, which is recorded
because it orders the noise draws).

The dimensions and VBench's standard prompt suite are in `vbench_suite` (re-exported here).
"""

from __future__ import annotations

import datetime
import json
import os
import re
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import DataError, InputError
from ..models.base import Backbone
from .hardware import machine_info
from .vbench_suite import (  # noqa: F401  (re-exported: the dimensions and the standard suite)
    DEFAULT_DIMENSIONS,
    DIMENSIONS,
    MODES,
    NUM_PER_PROMPT,
    TEMPORAL_FLICKERING_NUM_PER_PROMPT,
    WEIGHT_FREE_DIMENSIONS,
    Dimension,
    load_suite,
    resolve_dimensions,
    suite_dimension_prompts,
    suite_prompts,
)

METADATA_FILE = "vbench_export.json"
PROMPT_MAP_FILE = "vbench_prompts.json"
VIDEOS_DIR = "videos"
RESULTS_DIR = "vbench_results"
PARTIAL_DIR = ".partial"
VIDEO_FORMATS = ("mp4", "gif")
MAX_NAME_BYTES = 255
SLASH_REPLACEMENT = "\u2215"  # DIVISION SLASH: looks like '/', allowed in a file name


# ---------------------------------------------------------------------------------------------------
# file names


def vbench_prompt_from_name(filename: str) -> str:
    """The prompt VBench's custom_input mode reads from a file name: the name's stem (pathlib's rule)
    without a trailing `-<digits>` (a `\\d+` regex, so Unicode digits count)."""
    return re.sub(r"-\d+$", "", PurePosixPath(filename).stem)


@dataclass(frozen=True)
class VideoName:
    """The file stem of one prompt's videos (`{stem}-{i}.{fmt}`) and whether VBench gets the prompt back."""

    prompt: str
    stem: str
    exact: bool
    reason: str = ""

    def file(self, index: int, fmt: str = "mp4") -> str:
        return f"{self.stem}-{index}.{fmt}"


def video_name(prompt: str, num_samples: int = NUM_PER_PROMPT, fmt: str = "mp4", max_bytes: int = MAX_NAME_BYTES) -> VideoName:
    """The VBench name of `prompt`'s videos: the prompt itself where a file name can hold it.

    `/` -> U+2215 and NUL dropped (a POSIX name cannot hold them); cut at a UTF-8 character
    boundary when `{stem}-{num_samples - 1}.{fmt}` would exceed `max_bytes` bytes. Either makes the
    name inexact (`reason` says why): VBench then reads a different prompt from it.
    """
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"prompt {prompt[:60]!r} is not valid UTF-8 text") from None
    reasons = []
    if "/" in prompt:
        reasons.append("'/' cannot be in a file name (written as U+2215)")
    if "\x00" in prompt:
        reasons.append("NUL cannot be in a file name (dropped)")
    stem = prompt.replace("/", SLASH_REPLACEMENT).replace("\x00", "")
    suffix = f"-{max(num_samples - 1, 0)}.{fmt}".encode()
    raw = stem.encode("utf-8")
    if len(raw) + len(suffix) > max_bytes:
        stem = raw[: max_bytes - len(suffix)].decode("utf-8", errors="ignore").rstrip()
        reasons.append(f"cut to a {max_bytes}-byte file name (the full name needs {len(raw) + len(suffix)} bytes)")
    if not stem.strip():
        raise InputError(f"prompt {prompt!r} leaves no usable file name")
    name = VideoName(prompt, stem, True)
    exact = not reasons and all(
        vbench_prompt_from_name(name.file(i, fmt)) == prompt for i in {0, max(num_samples - 1, 0)}
    )
    if not reasons and not exact:
        reasons.append("VBench reads a different prompt from this name")
    return VideoName(prompt, stem, exact, "; ".join(reasons))


@dataclass
class ExportPlan:
    """What an export writes: unique prompts in order, their sample counts and file names."""

    prompts: list[str]
    counts: list[int]
    names: list[VideoName]
    fmt: str = "mp4"

    def files(self) -> list[str]:
        return [n.file(i, self.fmt) for n, c in zip(self.names, self.counts) for i in range(c)]

    def prompt_map(self) -> dict[str, str]:
        """{file name: exact prompt}: VBench's `--prompt_file` / `prompt_list` format."""
        return {n.file(i, self.fmt): p for p, n, c in zip(self.prompts, self.names, self.counts) for i in range(c)}

    def inexact(self) -> list[dict]:
        return [{"prompt": n.prompt, "file_stem": n.stem, "reason": n.reason} for n in self.names if not n.exact]


def plan_export(
    prompts: Sequence[str],
    num_per_prompt: int | Sequence[int] = NUM_PER_PROMPT,
    fmt: str = "mp4",
    case_insensitive: bool = False,
    max_bytes: int = MAX_NAME_BYTES,
) -> ExportPlan:
    """Names for every prompt (blank ones dropped, repeats merged keeping the larger count), checked
    for collisions: two prompts that get the same name raise InputError naming both and why."""
    if fmt not in VIDEO_FORMATS:
        raise InputError(f"unknown video format {fmt!r}; valid: {', '.join(VIDEO_FORMATS)}")
    prompts = list(prompts)
    counts_in = [num_per_prompt] * len(prompts) if isinstance(num_per_prompt, int) else list(num_per_prompt)
    if len(counts_in) != len(prompts):
        raise InputError(f"{len(counts_in)} sample counts for {len(prompts)} prompts")
    if any(int(c) < 1 for c in counts_in):
        raise InputError(f"every prompt needs >= 1 sample, got {min(counts_in)}")
    counts: dict[str, int] = {}
    for p, c in zip(prompts, counts_in):
        if p.strip():
            counts[p] = max(counts.get(p, 0), int(c))
    if not counts:
        raise InputError("no prompts given (all are blank)")
    names = [video_name(p, c, fmt, max_bytes) for p, c in counts.items()]
    seen: dict[str, VideoName] = {}
    for n in names:
        key = n.stem.casefold() if case_insensitive else n.stem
        other = seen.setdefault(key, n)
        if other is not n:
            if case_insensitive and other.stem != n.stem:
                why = "they differ only in letter case and this file system ignores case"
            else:
                why = "; ".join(r for r in dict.fromkeys([other.reason, n.reason]) if r) or "identical names"
            raise InputError(
                f"prompts {other.prompt!r} and {n.prompt!r} would share the file name {n.stem!r}-{{i}}.{fmt} ({why}); "
                "change or drop one of them"
            )
    return ExportPlan(list(counts), list(counts.values()), names, fmt)


def filesystem_quirks(folder: str | Path) -> dict:
    """Whether the file system of `folder` ignores letter case and whether it rewrites non-ASCII
    names (Unicode normalization, e.g. HFS+): probed with two empty files, removed again."""
    folder = Path(folder)
    tag = f".t2v_probe_{os.getpid()}_"
    upper, nfc = folder / f"{tag}Aa", folder / f"{tag}\u00e7"
    quirks = {"case_insensitive": False, "normalizes_names": False}
    try:
        upper.touch()
        quirks["case_insensitive"] = (folder / f"{tag}aA").exists()
        nfc.touch()
        listed = {n for n in os.listdir(folder) if n.startswith(tag)}
        quirks["normalizes_names"] = nfc.name not in listed
    except OSError:
        pass
    finally:
        for n in os.listdir(folder):
            if n.startswith(tag):
                (folder / n).unlink(missing_ok=True)
    return quirks


# ---------------------------------------------------------------------------------------------------
# export


def export_vbench(
    model: Backbone,
    prompts: Sequence[str],
    out_dir: str | Path,
    *,
    steps: int = 4,
    w: float | None = None,
    cfg_scale: float | None = None,
    num_per_prompt: int | Sequence[int] = NUM_PER_PROMPT,
    seed: int = 0,
    fps: int | None = None,
    fmt: str = "mp4",
    upscale: int = 1,
    batch_size: int = 64,
    origin_steps: int = 50,
    timestep_rule: str = "t2v-turbo",
    source: str | None = None,
    suite: dict | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Write `out_dir/videos/{prompt}-{i}.{fmt}` for every prompt and i < its sample count, then
    `vbench_export.json` and `vbench_prompts.json` beside the videos folder.

    Args:
        w: the student's embedded guidance (T2V-Turbo convention; default `pipeline.DEFAULT_W`).
        cfg_scale: a teacher's classifier-free guidance scale (default 1 + w).
        num_per_prompt: one count for all prompts or one per prompt (the suite's 5 / 25).
        suite: what to record about a standard-suite export (`{"name": "vbench", "dimensions": [...]}`).
        progress: `(done_videos, total_videos)` after every written video.
    Returns:
        The metadata dict (also in `out_dir/vbench_export.json`).
    Raises:
        InputError: bad arguments, colliding names, a videos folder holding other files, a write failure.
    """
    from ..pipeline import DEFAULT_W, generate
    from ..video_io import write_video

    w = DEFAULT_W if w is None else float(w)
    if batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {batch_size}")
    if upscale < 1:
        raise InputError(f"--upscale must be >= 1, got {upscale}")
    fps = fps or model.native_fps
    if fps < 1:
        raise InputError(f"--fps must be >= 1, got {fps}")
    out = Path(out_dir)
    videos_dir = out / VIDEOS_DIR
    # probed where the folder will be (its nearest existing parent): nothing is created before the
    # first videos are ready, so a bad argument leaves nothing behind
    quirks = filesystem_quirks(next(p for p in [out, *out.parents] if p.is_dir()))
    plan = plan_export(prompts, num_per_prompt, fmt, case_insensitive=quirks["case_insensitive"])
    if quirks["normalizes_names"]:
        rewritten = "this file system rewrites non-ASCII names (Unicode normalization)"
        plan.names = [
            n if n.stem.isascii() else VideoName(n.prompt, n.stem, False, "; ".join(filter(None, [n.reason, rewritten])))
            for n in plan.names
        ]
    expected = plan.files()
    foreign = sorted(set(os.listdir(videos_dir)) - set(expected)) if videos_dir.is_dir() else []
    if foreign:
        raise InputError(
            f"{videos_dir} already holds {len(foreign)} other file(s) (e.g. {foreign[0]!r}); VBench reads every file "
            "there: use an empty --out-dir or remove them"
        )
    partial = out / PARTIAL_DIR
    max_count = max(plan.counts)
    seeds = [seed + i for i in range(max_count)]
    total, written, seconds, settings, shape = len(expected), 0, 0.0, {}, None
    for i, s in enumerate(seeds):
        idx = [k for k, c in enumerate(plan.counts) if c > i]
        gen = generate(
            model,
            [plan.prompts[k] for k in idx],
            steps,
            w=w,
            cfg_scale=cfg_scale,
            seed=s,
            origin_steps=origin_steps,
            timestep_rule=timestep_rule,
            batch_size=batch_size,
            decode=False,
        )
        seconds += gen.seconds
        settings = gen.settings
        t0 = time.perf_counter()
        if i == 0:
            for folder in (videos_dir, partial):
                try:
                    folder.mkdir(parents=True, exist_ok=True)
                except OSError as e:
                    raise InputError(f"cannot create {folder}: {e.strerror}") from None
        # decode in chunks: the whole suite's decoded videos would not fit in memory
        for c in range(0, len(idx), batch_size):
            z = gen.videos[c : c + batch_size].to(model.device, model.dtype)
            videos = model.decode_latents(z).clamp(-1, 1).float().cpu()
            shape = tuple(videos.shape[2:])
            for video, k in zip(videos, idx[c : c + batch_size]):
                name = plan.names[k].file(i, fmt)
                tmp = partial / f"{written}.{fmt}"
                try:
                    write_video(tmp, video, fps=fps, upscale=upscale)
                    os.replace(tmp, videos_dir / name)
                except OSError as e:
                    raise InputError(f"cannot write {name!r} in {videos_dir}: {e.strerror or e}") from None
                written += 1
                if progress is not None:
                    progress(written, total)
        seconds += time.perf_counter() - t0
    _remove_empty(partial)
    listed = {unicodedata.normalize("NFC", n) for n in os.listdir(videos_dir)}
    wanted = {unicodedata.normalize("NFC", n) for n in expected}
    if listed != wanted:
        missing = sorted(wanted - listed)
        raise InputError(
            f"{videos_dir} does not hold the expected files after writing (missing {len(missing)}, e.g. "
            f"{missing[0] if missing else sorted(listed - wanted)[0]!r}): the file system changed the names"
        )
    t, h, w_px = shape
    is_student = settings["sampler"] == "consistency"
    meta = {
        "model": source or model.family,
        "family": model.family,
        "steps": steps,
        "sampler": settings["sampler"],
        "w": settings.get("w") if is_student else None,
        "cfg_scale": None if is_student else settings.get("cfg_scale"),
        "guidance_convention": (
            "student w, T2V-Turbo convention: teacher target eps_c + w (eps_c - eps_u)"
            if is_student
            else "teacher cfg_scale g: eps_u + g (eps_c - eps_u)"
        ),
        "checkpoint_guidance_convention": model.guidance_convention,
        "timestep_rule": settings["timestep_rule"],
        "timesteps": settings["timesteps"],
        "origin_steps": origin_steps if is_student else None,
        "num_prompts": len(plan.prompts),
        "num_per_prompt": num_per_prompt if isinstance(num_per_prompt, int) else sorted(set(plan.counts)),
        "seeds": seeds,
        "seed_rule": (
            "file {prompt}-{i} comes from seed seeds[i]: one generator per seed over the prompts with more than "
            "i samples, in the order of `prompts`, in batches of batch_size"
        ),
        "batch_size": batch_size,
        "num_frames": t,
        "resolution": [h, w_px],
        "saved_resolution": [h * upscale, w_px * upscale],
        "upscale": upscale,
        "fps": fps,
        "format": fmt,
        "videos_dir": VIDEOS_DIR,
        "naming": "{prompt}-{i}." + fmt,
        "prompt_file": PROMPT_MAP_FILE,
        "num_files": written,
        "inexact_names": plan.inexact(),
        "filesystem": quirks,
        "generation_seconds": seconds,
        "seconds_per_video": seconds / max(written, 1),
        "hardware": machine_info(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "suite": suite,
        "prompts": plan.prompts,
        "samples_per_prompt": plan.counts,
    }
    _write_json(out / PROMPT_MAP_FILE, plan.prompt_map())
    _write_json(out / METADATA_FILE, meta)
    return meta


def _remove_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


def _write_json(path: Path, data) -> None:
    try:
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False), encoding="utf-8")
    except OSError as e:
        raise InputError(f"cannot write {path}: {e.strerror}") from None


def read_export(out_dir: str | Path) -> dict:
    """The metadata of an export folder (DataError if there is none)."""
    path = Path(out_dir) / METADATA_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path} not found: {out_dir} is not an export-vbench folder") from None
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    if not isinstance(meta, dict) or "prompts" not in meta:
        raise DataError(f"{path} is not export-vbench metadata")
    return meta
