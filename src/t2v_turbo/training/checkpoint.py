"""Crash-safe checkpoints: written to a temporary folder, then renamed into place (atomic on POSIX).

A checkpoint folder `checkpoints/step-00001000/` holds:

    trainable.safetensors   trainable student weights (LoRA A/B, or the whole UNet)
    ema.safetensors         the EMA target's copies of those weights (target = "ema" only)
    optimizer.pt            optimizer state    } torch.save of tensors / numbers only:
    scheduler.pt            LR scheduler state } read back with weights_only=True
    rng.pt                  per-rank RNG states (torch, CUDA, python)
    state.json              step, per-rank data positions, NaN / skip counters
    config.yaml             the resolved config

A folder without state.json, or named `.tmp-*`, is incomplete and ignored (a killed save).

Sharded runs (`train.parallel=fsdp`) write the same folder with `sharded/` (a
torch.distributed.checkpoint folder: every rank writes its shards of the trainable weights, the EMA
target and the AdamW state, rank 0 the metadata) in place of trainable / ema .safetensors and
optimizer.pt; the rest is the same, and the folder is renamed into place only once every rank has
written. A sharded checkpoint resumes on any number of processes, sharded or not (DCP reshards);
an unsharded one resumes on unsharded runs only (one-line CheckpointError otherwise).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

import torch

from ..errors import CheckpointError

STEP_DIR = re.compile(r"^step-(\d+)$")
SHARDED = "sharded"  # the torch.distributed.checkpoint folder inside a sharded checkpoint


def checkpoint_root(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = checkpoint_root(run_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if STEP_DIR.match(p.name) and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(STEP_DIR.match(p.name).group(1)))


def find_resume(resume: str | None, run_dir: str | Path) -> Path | None:
    """None (start fresh), "latest" (newest complete checkpoint, or None when there is none) or a folder."""
    if not resume:
        return None
    if resume == "latest":
        found = list_checkpoints(run_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / "state.json").is_file():
        raise CheckpointError(f"train.resume={resume!r}: not a checkpoint folder (no state.json)")
    return path


def rng_state() -> dict:
    """This process's RNG states (tensors and ints only, so they load with weights_only=True)."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    *,
    trainable: dict[str, torch.Tensor],
    optimizer: dict,
    scheduler: dict,
    rng: list[dict],
    state: dict,
    config_yaml: str,
    ema: dict[str, torch.Tensor] | None = None,
    limit: int | None = None,
) -> Path:
    """Write `checkpoints/step-XXXXXXXX` atomically and keep only the newest `limit` checkpoints.

    Args:
        trainable: trainable student tensors by parameter name.
        optimizer, scheduler: their state dicts.
        rng: one `rng_state()` per rank.
        state: step, per-rank data positions and counters (JSON).
        config_yaml: the resolved config.
        ema: the EMA target's tensors under the same names, or None.
        limit: checkpoints kept (older ones are deleted after the new one is in place).

    Returns:
        The checkpoint folder.
    """
    from safetensors.torch import save_file

    root = checkpoint_root(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-step-{step:08d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    meta = {"step": str(step)}
    save_file(
        {k: v.detach().contiguous().cpu() for k, v in trainable.items()},
        str(tmp / "trainable.safetensors"),
        meta,
    )
    if ema is not None:
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in ema.items()}, str(tmp / "ema.safetensors"), meta
        )
    torch.save(optimizer, tmp / "optimizer.pt")
    torch.save(scheduler, tmp / "scheduler.pt")
    torch.save(rng, tmp / "rng.pt")
    (tmp / "config.yaml").write_text(config_yaml)
    (tmp / "state.json").write_text(json.dumps(state, indent=2))  # written last: marks the folder complete
    for f in tmp.iterdir():
        _fsync(f)
    if final.exists():  # re-saving a step (e.g. the final save): move the old one aside first
        old = root / f".tmp-old-{final.name}-{os.getpid()}"
        final.rename(old)
        shutil.rmtree(old, ignore_errors=True)
    tmp.rename(final)
    _fsync(root)
    if limit:
        for old in list_checkpoints(run_dir)[:-limit]:
            shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp-*"):  # leftovers of killed saves
        shutil.rmtree(stale, ignore_errors=True)
    return final


def _base_optimizer(optimizer):
    return getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer wraps one


def _sharded_state(unet, target_unet, optimizer) -> dict:
    """The state DCP saves and loads in place: trainable weights, EMA copies, AdamW state (FQN keys)."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    names = [n for n, p in unet.named_parameters() if p.requires_grad]
    params = dict(unet.named_parameters())
    state = {
        "trainable": {n: params[n].detach() for n in names},
        "optimizer": get_optimizer_state_dict(unet, _base_optimizer(optimizer)),
    }
    if target_unet is not None:
        tparams = dict(target_unet.named_parameters())
        state["ema"] = {n: tparams[n].detach() for n in names}
    return state


def save_sharded(
    run_dir: str | Path,
    step: int,
    *,
    unet,
    target_unet,
    optimizer,
    scheduler: dict,
    rng: list[dict],
    state: dict,
    config_yaml: str,
    main: bool,
    barrier,
    limit: int | None = None,
) -> Path:
    """`save_checkpoint` for sharded (or sharded-format) runs; collective: every rank calls it.

    All ranks write their shards into one temporary folder (shared by the ranks: on several machines
    output_dir must be a shared file system); rank 0 then adds the small files, state.json last, and
    renames the folder into place.
    """
    import torch.distributed.checkpoint as dcp

    root = checkpoint_root(run_dir)
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-step-{step:08d}-sharded"
    if main:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    barrier()
    dcp.save(_sharded_state(unet, target_unet, optimizer), checkpoint_id=str(tmp / SHARDED))
    barrier()
    if main:
        torch.save(scheduler, tmp / "scheduler.pt")
        torch.save(rng, tmp / "rng.pt")
        (tmp / "config.yaml").write_text(config_yaml)
        (tmp / "state.json").write_text(json.dumps({**state, "format": SHARDED}, indent=2))
        for f in tmp.rglob("*"):
            if f.is_file():
                _fsync(f)
        if final.exists():
            old = root / f".tmp-old-{final.name}-{os.getpid()}"
            final.rename(old)
            shutil.rmtree(old, ignore_errors=True)
        tmp.rename(final)
        _fsync(root)
        if limit:
            for old in list_checkpoints(run_dir)[:-limit]:
                shutil.rmtree(old, ignore_errors=True)
        for stale in root.glob(".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
    barrier()
    return final


def _load_sharded(path: Path, raw_unet, target, optimizer) -> None:
    """Load a sharded checkpoint's weights, EMA copies and optimizer state into the live objects
    (sharded or not, any number of processes: DCP reads the slices each rank holds)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    target_unet = target.unet if target is not None else None
    sd = _sharded_state(raw_unet, target_unet, optimizer)
    meta = dcp.FileSystemReader(str(path / SHARDED)).read_metadata().state_dict_metadata
    if target_unet is not None and not any(k.startswith("ema.") for k in meta):
        sd.pop("ema")  # a checkpoint of a run without EMA target: the target keeps the student's copy
    unknown = [k.split(".", 1)[1] for k in meta if k.startswith("trainable.")]
    unknown = sorted(set(unknown) - set(sd["trainable"]))
    if unknown or len(sd["trainable"]) != sum(k.startswith("trainable.") for k in meta):
        missing = sorted(set(sd["trainable"]) - {k.split(".", 1)[1] for k in meta if k.startswith("trainable.")})
        raise CheckpointError(
            f"checkpoint {path} does not fit this model: unknown tensors {unknown[:3]}, missing {missing[:3]}"
        )
    from torch.distributed.checkpoint.api import CheckpointException

    try:
        dcp.load(sd, checkpoint_id=str(path / SHARDED))
    except (Exception, CheckpointException) as e:  # DCP's own (a BaseException: rank -> failure), several lines
        cause = next(iter(getattr(e, "failures", {}).values()), e)
        why = f"{type(cause).__name__}: {str(cause).splitlines()[0][:200] if str(cause) else 'truncated or corrupt'}"
        raise CheckpointError(f"checkpoint {path}: sharded state unreadable ({why})") from None
    opts = StateDictOptions(strict=False)
    set_model_state_dict(raw_unet, sd["trainable"], options=opts)
    if "ema" in sd:
        set_model_state_dict(target_unet, sd["ema"], options=opts)
    set_optimizer_state_dict(raw_unet, _base_optimizer(optimizer), sd["optimizer"])


def load_checkpoint(path: str | Path) -> dict:
    """Everything `save_checkpoint` wrote: trainable, ema (or None), optimizer, scheduler, rng, state,
    config_yaml."""
    from safetensors.torch import load_file

    path = Path(path)

    def pt(name: str):
        return torch.load(path / name, map_location="cpu", weights_only=True)

    try:
        return {
            "trainable": load_file(str(path / "trainable.safetensors")),
            "ema": load_file(str(path / "ema.safetensors")) if (path / "ema.safetensors").exists() else None,
            "optimizer": pt("optimizer.pt"),
            "scheduler": pt("scheduler.pt"),
            "rng": pt("rng.pt"),
            "state": json.loads((path / "state.json").read_text()),
            "config_yaml": (path / "config.yaml").read_text(),
        }
    except FileNotFoundError as e:
        raise CheckpointError(
            f"checkpoint {path} is incomplete: {Path(e.filename).name} is missing"
        ) from None


def restore(path: Path, raw_unet, target, optimizer, scheduler, rank: int, world: int, say=print) -> dict:
    """Load a checkpoint into the live objects; returns the loop state (step, positions, counters).

    When the world size changed, the data streams restart (positions cannot be mapped) and RNG
    states are not restored; weights, EMA, optimizer and scheduler always are.
    """
    from .roles import load_into

    path = Path(path)
    if (path / SHARDED).is_dir():
        _load_sharded(path, raw_unet, target, optimizer)
        try:
            loaded = {"scheduler": torch.load(path / "scheduler.pt", map_location="cpu", weights_only=True),
                      "rng": torch.load(path / "rng.pt", map_location="cpu", weights_only=True),
                      "state": json.loads((path / "state.json").read_text())}  # fmt: skip
        except FileNotFoundError as e:
            raise CheckpointError(f"checkpoint {path} is incomplete: {Path(e.filename).name} is missing") from None
    else:
        if any(type(p).__name__ == "DTensor" for p in raw_unet.parameters()):
            raise CheckpointError(
                f"checkpoint {path} is unsharded (a train.parallel=ddp run): resume it with train.parallel=ddp; "
                "a sharded (fsdp) run resumes sharded checkpoints only"
            )
        loaded = load_checkpoint(path)
        load_into(raw_unet, loaded["trainable"], "weights")
        if target is not None and loaded["ema"] is not None:
            load_into(target.unet, loaded["ema"], "EMA weights")
        optimizer.load_state_dict(loaded["optimizer"])
    scheduler.load_state_dict(loaded["scheduler"])
    state = loaded["state"]
    if state["world_size"] == world:
        set_rng_state(loaded["rng"][rank])
    else:
        say(f"warning: checkpoint of {state['world_size']} process(es) resumed on {world}: data restarts")
        state.update(positions=[0] * world, skipped=[{} for _ in range(world)], world_size=world)
    say(f"resumed from {path} at step {state['step']}")
    return state
