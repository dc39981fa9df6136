"""train(cfg): the T2V-Turbo training loop (the `t2v-turbo distill` command is commands/distill.py).

One process or many through `accelerate launch` (DDP; on a machine without CUDA the same command
runs gloo CPU processes):

    t2v-turbo distill moving-digits                          # the CPU world
    accelerate launch --multi_gpu --num_processes 8 -m t2v_turbo.cli distill vc2-lora data.path=...
    ... distill vc2-lora train.parallel=fsdp ...   # FSDP2: the student sharded (training/distributed.py)

Each optimizer step: `grad_accum` micro-steps of Algorithm 1 (`distill_step`: consistency loss +
mixed reward), a non-finite check across ranks (a NaN / Inf step is skipped, weights untouched),
gradient clipping, AdamW, the EMA target update. Every random draw is seeded from
(seed, rank, step, micro-step), so a resumed run replays the uninterrupted one exactly.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .baselines.chain import chain_reward_step
from .config import Config, load_config, summarize, validate
from .data.loader import SkipCounter
from .distill import distill_step, ema_update
from .errors import ConfigError, T2VTurboError
from .flow import teacher_solver
from .models.base import Backbone


class TrainingStopped(T2VTurboError):
    """The run stopped itself (repeated non-finite losses); the last good checkpoint is intact."""


@dataclass
class TrainResult:
    """What a finished run produced (paths are inside `run_dir`)."""

    run_dir: Path
    step: int
    student_dir: Path | None = None
    lora_path: Path | None = None
    last_checkpoint: Path | None = None
    metrics: Path | None = None
    plot: Path | None = None
    nan_steps: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class _Run:
    """The live objects of one run that checkpointing and validation read (set up once by `train`)."""

    cfg: Config
    acc: Any  # accelerate.Accelerator
    run_dir: Path
    student: Backbone
    raw_unet: nn.Module  # the student's network without the DDP wrapper
    target: Backbone | None
    optimizer: torch.optim.Optimizer
    scheduler: Any
    loader: Any  # data.Loader
    log: Any  # training.metrics.MetricsLog
    say: Callable[[str], None]


def step_seed(seed: int, rank: int, step: int, micro: int) -> int:
    """The seed of one micro-step on one rank (independent of anything that happened before)."""
    return int(np.random.SeedSequence([seed, rank, step, micro]).generate_state(1, np.uint64)[0] >> 1)


def _print_if(enabled: bool, printer: Callable[[str], None], msg: str) -> None:
    if enabled:
        printer(msg)


def _print_ranked(rank: int, printer: Callable[[str], None], msg: str) -> None:
    printer(msg if rank == 0 else f"[rank {rank}] {msg}")


def _prepare_batch(batch, teacher, cfg, g, dev):
    """(z0, cond, prompts) from a batch: encode videos, take cached latents, or sample the teacher."""
    prompts = batch["prompts"]
    with torch.no_grad():
        if "latents" in batch:
            z0 = batch["latents"].to(dev)
        elif "video" in batch:
            z0 = teacher.encode_video(batch["video"].to(dev, teacher.dtype), generator=g)
        else:  # prompt list: the teacher's DDIM + CFG sample is the data
            from .pipeline import generate

            seed = int(torch.randint(0, 2**31 - 1, (1,), generator=g))
            d = cfg.data
            z0 = generate(
                teacher,
                prompts,
                num_steps=d.teacher_steps,
                cfg_scale=d.teacher_cfg_scale,
                seed=seed,
                decode=False,
            ).videos
        cond = batch["cond"].to(dev) if "cond" in batch else teacher.encode_prompt(prompts)
    return z0.to(dev).float(), cond, prompts


def _chain_step(student, *, z0, prompts, cond, generator, **kw) -> dict:
    """`chain_reward_step` called like `distill_step` (the data latents are unused: the chain samples)."""
    return chain_reward_step(student, prompts, generator=generator, cond=cond, **kw)


def save(r: _Run, *, step: int, state: dict) -> Path | None:
    """Checkpoint `step` (every rank contributes its RNG, data position and skip counts; rank 0 writes)."""
    from accelerate.utils import gather_object

    from .training import checkpoint as ckpt
    from .training import roles

    per_rank = gather_object([(ckpt.rng_state(), r.loader.position, r.loader.skips.state_dict())])
    path = None
    if r.cfg.train.parallel == "fsdp":  # sharded checkpoint (training/checkpoint.py), every rank writes
        rngs, positions, skips = (list(x) for x in zip(*per_rank))
        return ckpt.save_sharded(
            r.run_dir, step, unet=r.raw_unet, target_unet=r.target.unet if r.target is not None else None,
            optimizer=r.optimizer, scheduler=r.scheduler.state_dict(), rng=rngs, config_yaml=r.cfg.to_yaml(),
            state={**state, "step": step, "positions": positions, "skipped": skips, "written_by_rank": 0},
            main=r.acc.is_main_process, barrier=r.acc.wait_for_everyone, limit=r.cfg.checkpoint.limit,
        )  # fmt: skip
    if r.acc.is_main_process:
        rngs, positions, skips = (list(x) for x in zip(*per_rank))
        trainable = roles.trainable_state(r.raw_unet)
        written = {**state, "step": step, "positions": positions, "skipped": skips,
                   "written_by_rank": r.acc.process_index}  # fmt: skip
        path = ckpt.save_checkpoint(
            r.run_dir, step, trainable=trainable, optimizer=r.optimizer.state_dict(),
            scheduler=r.scheduler.state_dict(), rng=rngs, state=written, config_yaml=r.cfg.to_yaml(),
            ema=roles.named_like(r.target.unet, trainable) if r.target is not None else None,
            limit=r.cfg.checkpoint.limit,
        )  # fmt: skip
    r.acc.wait_for_everyone()
    return path


def validate_now(r: _Run, *, step: int, prompts: list[str], terms: list) -> None:
    """Sample the validation prompts with the current student (rank 0), log rewards, save videos."""
    from .training import roles
    from .training.distributed import is_sharded
    from .training.validation import run_validation

    main = r.acc.is_main_process
    if prompts and (main or is_sharded(r.raw_unet)):  # a sharded forward is collective: every rank samples
        v = r.cfg.validation
        folder = r.run_dir / "validation" / f"step-{step:08d}" if v.save_videos and main else None
        with r.acc.autocast(), roles.swap_unet(r.student, r.raw_unet):
            out = run_validation(r.student, prompts, v.steps, terms, folder, w=v.w, seed=v.seed, fps=v.fps)
    if prompts and main:
        r.log.log(step, out)
        r.say(f"step {step} validation: " + ", ".join(f"{k[4:]}={x:.4g}" for k, x in out.items()))
    r.acc.wait_for_everyone()


def _accelerator(cfg: Config, trackers: list[str]):
    """accelerate's Accelerator for this run; one-line ConfigErrors for what it cannot do."""
    from accelerate import Accelerator

    t = cfg.train
    if t.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda, but no CUDA device is visible")
    cpu = t.device == "cpu" or not torch.cuda.is_available()
    if cpu and t.mixed_precision == "fp16":
        raise ConfigError("train.mixed_precision=fp16 needs a GPU; use bf16 or no on CPU")
    kw = {"cpu": cpu, "mixed_precision": t.mixed_precision, "log_with": trackers or None}
    try:
        acc = Accelerator(**kw, project_dir=cfg.output_dir)
    except ValueError as e:
        # accelerate keeps the first Accelerator's precision / device for the whole process and has no
        # public way to forget them; a process that trains again with other settings (a notebook, a
        # test session) resets that private state, in this case only and never under a launcher
        if "already been initialized" not in str(e) or int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=False)
        acc = Accelerator(**kw, project_dir=cfg.output_dir)
    from .training.distributed import check_launch

    check_launch(acc.distributed_type.name)  # accelerate's DeepSpeed / FSDP launches: one-line refusals
    return acc


def train(cfg: Config | dict | str, overrides: list[str] | dict | None = None, printer=None) -> TrainResult:
    """Run (or resume) a T2V-Turbo distillation; returns the run folder, the final student and the LoRA.

    Args:
        cfg: a Config, a dict of sections, or a preset name / YAML path.
        overrides: dotted overrides (["optim.lr=1e-4"] or {"optim.lr": 1e-4}).
        printer: where messages go (default: tqdm-safe print on the main process).
    Raises:
        T2VTurboError (one line): a bad config, unreadable data or checkpoint, an output_dir holding
            another run's checkpoints; `TrainingStopped` after `train.max_nan_steps` non-finite steps.
    """
    from accelerate.utils import gather_object
    from tqdm.auto import tqdm

    from .data import build_loader, clip_size
    from .training import checkpoint as ckpt
    from .training import metrics, roles
    from .training.placement import CD, resolve_placement
    from .training.validation import validation_prompts

    cfg = load_config(cfg, overrides) if not isinstance(cfg, Config) or overrides else cfg
    validate(cfg)
    t, run_dir, start_time = cfg.train, Path(cfg.output_dir), time.perf_counter()
    val_prompts = validation_prompts(cfg)  # a missing prompt file fails before any model loads

    # 0. Processes and devices (accelerate reads the launcher's environment).
    print_ = printer or tqdm.write
    trackers = metrics.available_trackers(t.trackers, print_)
    acc = _accelerator(cfg, trackers)
    rank, world, main, dev = acc.process_index, acc.num_processes, acc.is_main_process, acc.device
    say = partial(_print_if, main, print_)

    # 1. Roles: frozen teacher (weights in the autocast dtype), trainable student, optional EMA target.
    torch.manual_seed(cfg.seed)
    teacher = roles.load_teacher(cfg, dev)
    if t.mixed_precision != "no":
        teacher.to(dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[t.mixed_precision])
    student = roles.build_student(cfg, teacher)
    params = student.trainable_parameters()
    for p in params:  # trainable weights stay fp32 under autocast
        p.data = p.data.float()
    target = roles.make_target(cfg, teacher, student) if cfg.distill.target == "ema" else None

    # 2. Rewards and their placement on ranks (validated; effective weights printed).
    terms = roles.build_reward_terms(cfg)
    placement = resolve_placement(cfg, terms, world)
    say(placement.describe({CD: 1.0, **{r.name: r.weight for r in terms}}))
    local_terms = [r for r in terms if placement.on(r.name, rank)]
    for r in local_terms:
        r.model.to(dev)

    # 3. Optimizer (AdamW / 8-bit AdamW) and LR schedule; accelerate wraps the student UNet (DDP etc.).
    # train.parallel=fsdp: FSDP2 shards the student and its EMA target over the ranks (not DDP-wrapped)
    from .training import distributed

    distributed.check(cfg, world, placement.ranks[CD])
    sharded = t.parallel == "fsdp" and world > 1
    if sharded:
        fsdp_kw = {"mixed_precision": t.mixed_precision, "cpu_offload": t.fsdp_cpu_offload,
                   "reshard_after_forward": t.fsdp_reshard_after_forward}  # fmt: skip
        for net in [student.unet] + ([target.unet] if target is not None else []):
            distributed.shard(net, dev, **fsdp_kw)
        params = [p for p in student.unet.parameters() if p.requires_grad]  # now sharded DTensors
    optimizer = roles.make_optimizer(cfg, params)
    scheduler = roles.make_scheduler(cfg, optimizer)  # stepped once per optimizer step, by us
    if sharded:
        optimizer = acc.prepare(optimizer)
    else:
        student.unet, optimizer = acc.prepare(student.unet, optimizer)
    raw_unet = acc.unwrap_model(student.unet)

    # 4. Resume (weights, EMA, optimizer, scheduler, RNG, data positions).
    state = {"step": 0, "positions": [0] * world, "nan_steps": 0, "world_size": world}
    resume_from = ckpt.find_resume(t.resume, run_dir)
    if resume_from is None and ckpt.list_checkpoints(run_dir):
        raise ConfigError(
            f"{run_dir} already holds checkpoints of an earlier run: continue it with train.resume=latest, "
            "or give a new output_dir"
        )
    if t.resume == "latest" and resume_from is None:
        say(f"train.resume=latest: no checkpoint in {ckpt.checkpoint_root(run_dir)} yet; starting a new run")
    if resume_from is not None:
        state = ckpt.restore(resume_from, raw_unet, target, optimizer, scheduler, rank, world, say)

    # 5. Data: this rank's stream from its saved position; skipped items are counted, never fatal. Built
    # before the run folder, so unreadable data (a DataError) leaves no half-made run behind.
    size = clip_size(cfg.data, teacher)  # (T, H, W, fps)
    loader = build_loader(
        cfg, size, rank, world, state["positions"][rank], partial(_print_ranked, rank, print_)
    )
    if resume_from is not None and len(state.get("skipped", [])) == world:
        loader.skips.load_state_dict(state["skipped"][rank])
    uncond = teacher.encode_prompt([""])
    if hasattr(loader.dataset, "check_compatible"):  # a latent cache must match this teacher
        loader.dataset.check_compatible(teacher.latent_shape(1, size[0])[1:], uncond.shape[1:])

    # 6. The run folder: resolved config, metrics log, trackers.
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(cfg.to_yaml())
        say(summarize(cfg, world))
    if trackers:
        acc.init_trackers(cfg.name, config={"lr": cfg.optim.lr, "steps": t.max_steps, "batch": t.batch_size})
    log = metrics.MetricsLog(run_dir, acc, state["step"] if resume_from else None, enabled=main)
    r = _Run(cfg, acc, run_dir, student, raw_unet, target, optimizer, scheduler, loader, log, say)

    # 7. The step function, bound once: Algorithm 1 (CD only on the ranks placed for it), or the chain
    # baseline; the loop calls it with the batch and the micro-step's generator.
    if t.mode == "chain":  # the chain-backprop baseline (benchmarks/training.py measures it)
        step_fn = partial(
            _chain_step, student, rewards=local_terms, num_steps=t.chain_steps, backprop_steps=t.chain_backprop,
            w=t.chain_w, decode_checkpointing=cfg.distill.decode_checkpointing,
        )  # fmt: skip
    else:
        step_fn = partial(
            distill_step, student=student, teacher=teacher, solver=teacher_solver(teacher.schedule, cfg.distill.num_ddim_timesteps),
            uncond=uncond, rewards=local_terms, config=roles.distill_config(cfg), target=target,
            compute_cd=placement.on(CD, rank),
        )  # fmt: skip
    keys = ["loss", "loss_cd", *[f"reward/{x.name}" for x in terms], "w", "t"]  # logged per step
    bar_keys = {"loss": "loss", "loss_cd": "loss_cd", **{f"reward/{x.name}": f"r/{x.name}" for x in terms}}

    # 8. The loop: grad_accum micro-steps, one optimizer step.
    bar = tqdm(total=t.max_steps, initial=state["step"], disable=not (main and t.progress), desc=cfg.name)
    consecutive_bad, last_ckpt, loop_start, first_step = 0, None, time.perf_counter(), state["step"]
    for step in range(state["step"], t.max_steps):
        sums = torch.zeros(len(keys), dtype=torch.float64)
        counts = torch.zeros(len(keys), dtype=torch.float64)
        bad = 0.0
        for micro in range(t.grad_accum):
            batch = next(loader)
            seed = step_seed(cfg.seed, rank, step, micro)
            torch.manual_seed(seed)  # LoRA dropout and any other global draw
            random.seed(seed)
            g = torch.Generator().manual_seed(seed)
            z0, cond, prompts = _prepare_batch(batch, teacher, cfg, g, dev)
            sync = micro == t.grad_accum - 1
            with contextlib.nullcontext() if sync else acc.no_sync(student.unet), acc.autocast():
                out = step_fn(z0=z0, prompts=prompts, cond=cond, generator=g)
                # backward even when non-finite: DDP needs every rank's backward; the step is skipped below
                acc.backward(out["loss"] / t.grad_accum)
            if not torch.isfinite(out["loss"].detach()).item():
                bad = 1.0
                continue
            for i, k in enumerate(keys):
                if k in out:
                    sums[i] += float(out[k].detach())
                    counts[i] += 1
        # one collective per step: loss-term sums and counts, and whether any rank saw a non-finite loss
        flags = torch.tensor([bad], dtype=torch.float64)
        totals = acc.reduce(torch.cat([sums, counts, flags]).to(dev), "sum").cpu()
        ok = totals[-1].item() == 0
        if ok:  # clip (returns the global norm); a non-finite gradient also skips the step
            norm = acc.clip_grad_norm_(params, cfg.optim.grad_clip or float("inf"))
            ok = bool(torch.isfinite(torch.as_tensor(norm)).item())
        if ok:
            optimizer.step()
            if not getattr(optimizer, "step_was_skipped", False):
                scheduler.step()
            if target is not None:
                ema_update(target.unet, raw_unet, cfg.distill.ema_decay)
        optimizer.zero_grad(set_to_none=True)
        consecutive_bad = 0 if ok else consecutive_bad + 1
        state["nan_steps"] += 0 if ok else 1
        done = step + 1

        # log per-term means over micro-steps and ranks; stop on repeated NaNs; checkpoint; validate
        n = len(keys)
        means = {k: float(totals[i] / totals[n + i]) for i, k in enumerate(keys) if totals[n + i] > 0}
        if done % t.log_every == 0 or done == t.max_steps:
            log.log(done, {**means, "lr": scheduler.get_last_lr()[0], "skipped_step": not ok,
                           "nan_steps": state["nan_steps"], "data_skipped": loader.skips.total,
                           "time": time.perf_counter() - start_time})  # fmt: skip
        bar.set_postfix({short: f"{means[k]:.4g}" for k, short in bar_keys.items() if k in means})
        bar.update(1)
        if consecutive_bad >= t.max_nan_steps:
            bar.close()
            last = ckpt.list_checkpoints(run_dir)
            raise TrainingStopped(
                f"stopped at step {done}: {consecutive_bad} consecutive steps had a non-finite loss or "
                f"gradient (lower optim.lr, check data and rewards); last good checkpoint: "
                f"{last[-1] if last else 'none'}"
            )
        if cfg.checkpoint.every and done % cfg.checkpoint.every == 0 and done < t.max_steps:
            last_ckpt = save(r, step=done, state=state)
        if cfg.validation.every and done % cfg.validation.every == 0 and done < t.max_steps:
            validate_now(r, step=done, prompts=val_prompts, terms=local_terms)
    bar.close()

    # 9. The end: checkpoint, validation, export (merged student + LoRA alone), plot, summary.
    done = max(state["step"], t.max_steps)
    last_ckpt = save(r, step=done, state=state)
    validate_now(r, step=done, prompts=val_prompts, terms=local_terms)
    from .training.distributed import consolidated_student, full_trainable, is_sharded

    sha = roles.weights_sha256(full_trainable(raw_unet))  # whole tensors (gathered when sharded)
    out_student, out_unet = student, raw_unet  # a sharded student is consolidated on rank 0 for export
    if is_sharded(raw_unet) and cfg.checkpoint.export:
        out_student = consolidated_student(cfg, teacher, raw_unet, main)
        out_unet = out_student.unet if main else None
    per_rank = gather_object([(loader.skips.state_dict(), sha)])
    skipped = SkipCounter.merged([c for c, _ in per_rank])  # a file two ranks drew counts once
    shas = [sha for _, sha in per_rank]
    result = TrainResult(run_dir, done, last_checkpoint=last_ckpt, metrics=run_dir / "metrics.jsonl",
                         nan_steps=state["nan_steps"], skipped=dict(skipped))  # fmt: skip
    if main:
        if cfg.checkpoint.export:
            result.lora_path, result.student_dir = roles.export(out_student, out_unet, cfg, run_dir)
        result.plot = metrics.plot_metrics(run_dir / "metrics.jsonl", run_dir / "loss.png", cfg.name)
        result.seconds = time.perf_counter() - start_time
        rate = (done - first_step) / max(time.perf_counter() - loop_start, 1e-9)
        summary = {"step": done, "steps_this_session": done - first_step, "steps_per_second": rate,
                   "world_size": world, "nan_steps": state["nan_steps"], "skipped": result.skipped,
                   "rank_weights_sha256": shas, "seconds": result.seconds}  # fmt: skip
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        if len(set(shas)) > 1:
            say(f"warning: ranks ended with different weights: {shas}")
        say(metrics.finish_message(done, result.seconds, rate, result.skipped, state["nan_steps"], run_dir))
    acc.wait_for_everyone()
    if trackers:
        acc.end_training()
    return result
