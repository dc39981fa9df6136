"""VBench's dimensions and its standard prompt suite (the shipped VBench_full_info.json).

Dimensions and the weights VBench downloads for them (into `$VBENCH_CACHE_DIR`, default
`~/.cache/vbench`, on first use) are in `DIMENSIONS`; only `temporal_flickering` needs none, so it is
the default. Six dimensions need the standard suite (`--suite vbench`, vbench_standard mode) because
they read per-prompt auxiliary info (objects, colours, scenes, styles).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError, InputError

NUM_PER_PROMPT = 5  # VBench: 5 videos per prompt
TEMPORAL_FLICKERING_NUM_PER_PROMPT = 25  # VBench: 25, of which its static filter keeps 5 static ones

SUITE_DIR = Path(__file__).resolve().parents[1] / "assets" / "vbench"
SUITE_FILE = SUITE_DIR / "VBench_full_info.json"
SUITE_SHA256 = "5dd2de80ee43cda750b2b72ea7023657c0b90d3702041c7e4608c65dbe50dccd"
SUITE_SOURCE = "vbench 0.1.5 (PyPI), VBench_full_info.json, Apache-2.0"


@dataclass(frozen=True)
class Dimension:
    """One VBench dimension: the weights vbench downloads for it ('' = none) and whether it can run on
    custom prompts (custom_input mode) or needs the standard suite's auxiliary info."""

    weights: str
    custom_input: bool = True


_CLIP_B32 = "CLIP ViT-B/32 (ViT-B-32.pt)"
_GRIT = "GRiT (grit_b_densecap_objectdet.pth) and detectron2"
_VICLIP = "ViCLIP (ViClip-InternVid-10M-FLT.pth)"
DIMENSIONS: dict[str, Dimension] = {
    "subject_consistency": Dimension("DINO ViT-B/16 (dino_vitbase16_pretrain.pth + the facebookresearch/dino repo)"),
    "background_consistency": Dimension(_CLIP_B32),
    "temporal_flickering": Dimension(""),
    "motion_smoothness": Dimension("AMT-S frame interpolation (amt-s.pth)"),
    "dynamic_degree": Dimension("RAFT optical flow (raft-things.pth)"),
    "aesthetic_quality": Dimension("CLIP ViT-L/14 (ViT-L-14.pt) + LAION aesthetic head (sa_0_4_vit_l_14_linear.pth)"),
    "imaging_quality": Dimension("MUSIQ-SPAQ via pyiqa (musiq_spaq_ckpt-358bb6af.pth)"),
    "object_class": Dimension(_GRIT, custom_input=False),
    "multiple_objects": Dimension(_GRIT, custom_input=False),
    "human_action": Dimension("UMT-L/16 Kinetics-400 (l16_ptk710_ftk710_ftk400_f16_res224.pth)"),
    "color": Dimension(_GRIT, custom_input=False),
    "spatial_relationship": Dimension(_GRIT, custom_input=False),
    "scene": Dimension("Tag2Text Swin (tag2text_swin_14m.pth)", custom_input=False),
    "temporal_style": Dimension(_VICLIP),
    "appearance_style": Dimension(_CLIP_B32, custom_input=False),
    "overall_consistency": Dimension(_VICLIP),
}
WEIGHT_FREE_DIMENSIONS = tuple(d for d, info in DIMENSIONS.items() if not info.weights)
DEFAULT_DIMENSIONS = WEIGHT_FREE_DIMENSIONS
MODES = ("custom_input", "vbench_standard")



def resolve_dimensions(dimensions: Sequence[str] | None, mode: str | None = None) -> list[str]:
    """Check dimension names; `all` means every dimension the mode can run (custom_input: the ten that
    need no suite info). Raises InputError naming an unknown dimension or one the mode cannot run."""
    if mode is not None and mode not in MODES:
        raise InputError(f"unknown VBench mode {mode!r}; valid: {', '.join(MODES)}")
    dims = list(DEFAULT_DIMENSIONS if not dimensions else dimensions)
    if "all" in dims:
        dims = [d for d, info in DIMENSIONS.items() if mode != "custom_input" or info.custom_input]
    unknown = [d for d in dims if d not in DIMENSIONS]
    if unknown:
        raise InputError(f"unknown VBench dimension {unknown[0]!r}; valid: all, {', '.join(DIMENSIONS)}")
    if mode == "custom_input":
        suite_only = [d for d in dims if not DIMENSIONS[d].custom_input]
        if suite_only:
            raise InputError(
                f"dimension {suite_only[0]} needs VBench's standard prompt suite (--suite vbench): "
                "custom prompts have no object / colour / scene / style info"
            )
    return list(dict.fromkeys(dims))


def load_suite(path: str | Path | None = None) -> list[dict]:
    """VBench's standard prompt suite (default: the shipped copy, `SUITE_FILE`): a list of
    {prompt_en, dimension: [...], auxiliary_info?}."""
    path = Path(SUITE_FILE if path is None else path)
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read the VBench prompt suite {path}: {e}") from None
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and isinstance(e.get("prompt_en"), str) and isinstance(e.get("dimension"), list)
        for e in entries
    ):
        raise DataError(f"{path} is not a VBench full-info file (a list of {{prompt_en, dimension}})")
    return entries


def suite_dimension_prompts(entries: Sequence[dict] | None = None) -> dict[str, list[str]]:
    """The suite's prompt list of every dimension (suite order, no duplicates)."""
    entries = load_suite() if entries is None else entries
    out: dict[str, list[str]] = {d: [] for d in DIMENSIONS}
    for e in entries:
        for d in e["dimension"]:
            if e["prompt_en"] not in out.setdefault(d, []):
                out[d].append(e["prompt_en"])
    return out


def suite_prompts(dimensions: Sequence[str], entries: Sequence[dict] | None = None) -> tuple[list[str], list[int]]:
    """The suite's prompts for `dimensions` (suite order, each once) and their VBench sample counts:
    25 for a temporal_flickering prompt when that dimension is selected, else 5."""
    per_dim = suite_dimension_prompts(entries)
    wanted = set(dimensions)
    counts: dict[str, int] = {}
    for d, prompts in per_dim.items():
        if d not in wanted:
            continue
        n = TEMPORAL_FLICKERING_NUM_PER_PROMPT if d == "temporal_flickering" else NUM_PER_PROMPT
        for p in prompts:
            counts[p] = max(counts.get(p, 0), n)
    order = [e["prompt_en"] for e in (load_suite() if entries is None else entries)]
    prompts = [p for p in dict.fromkeys(order) if p in counts]
    return prompts, [counts[p] for p in prompts]


def sha256_file(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
