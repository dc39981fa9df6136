"""Training configuration: dataclasses (every knob, with the released recipe as default), YAML
presets and dotted `key=value` overrides checked against the dataclass types (config_io.py).

    cfg = load_config("moving-digits", ["train.max_steps=200", "optim.lr=1e-4"])

A preset is found by path or by name in the installed `t2v_turbo/configs/` folder (the single
source of truth; the repository's top-level `configs/` holds symlinks to it). Any bad key or value
raises `ConfigError` with one clear line (the CLI prints it and exits with code 2).

Guidance vocabulary: `w` is the student's embedded guidance (T2V-Turbo convention, teacher target
eps_c + w (eps_c - eps_u)); `cfg_scale` is a teacher's classifier-free guidance scale g
(eps_u + g (eps_c - eps_u)).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from .config_io import apply_override, check_renamed, from_dict, parse_overrides, read_yaml
from .errors import ConfigError

__all__ = ["Config", "PRESET_DIR", "RENAMED_KEYS", "describe", "find_preset", "list_presets", "load_config",
           "read_yaml", "validate", "world_size"]  # fmt: skip

PRESET_DIR = Path(__file__).parent / "configs"

# old dotted key -> how to say it now (a one-line ConfigError)
RENAMED_KEYS = {
    "data.teacher_guidance": "use data.teacher_cfg_scale (the teacher's classifier-free guidance scale)",
    "train.chain_guidance": "use train.chain_w (the student's embedded guidance w)",
    "validation.guidance": "use validation.w (the student's embedded guidance w)",
    "distill.compute_cd": "reward-only ranks follow from train.placement (and train.cd_ranks)",
}


# ------------------------------------------------------------------------------------------ sections
@dataclass
class ModelSection:
    """The teacher and how the student is made from it.

    Attributes:
        teacher: "tiny" (models/tiny.py, for tests), a shipped MovingDigits name ("teacher") or a
            local checkpoint folder / file (ModelScope diffusers folder, VideoCrafter2 model.ckpt).
        tiny_seed: seed of the tiny teacher.
        w_embedding_dim: size of the guidance embedding w_emb (time_cond_proj input); null: a plain
            student distilled at one w, `fixed_w` (option b, Wan: run at cfg 1; docs/flow_matching.md).
        fixed_w: the w a plain student (w_embedding_dim: null) is distilled at; the trainer then uses
            w_min = w_max = fixed_w.
        student_init: init of the new time_cond_proj: "normal" (released) or "zero" (student = teacher).
        gradient_checkpointing: recompute UNet block activations in backward.
    """

    teacher: str = "tiny"
    tiny_seed: int = 0
    w_embedding_dim: int | None = 256
    fixed_w: float | None = None
    student_init: Literal["normal", "zero"] = "normal"
    gradient_checkpointing: bool = False


@dataclass
class LoraSection:
    """LoRA on every Linear/Conv of the student UNet (released: rank 64, VC2; 32, ModelScope).

    Attributes:
        rank: LoRA rank; 0 trains the whole UNet instead (full fine-tuning).
        alpha: LoRA alpha; None means alpha = rank (scale 1.0, the released recipe).
        dropout: LoRA dropout (released 0.1).
    """

    rank: int = 64
    alpha: float | None = None
    dropout: float = 0.1


@dataclass
class DistillSection:
    """Algorithm 1's knobs (released recipe as defaults). `training.roles.distill_config` maps them onto
    the `distill.DistillConfig` that `distill_step` takes; the solver grid and the EMA decay are the
    trainer's.

    Attributes:
        w_min, w_max: range of the student's guidance w ~ U[w_min, w_max] per sample.
        loss_type: "huber" (pseudo-Huber, c = huber_c) or "l2".
        target: "online" (the student under stop-gradient, released code) or "ema" (paper).
        sigma_data, timestep_scaling: constants of the boundary scalings c_skip, c_out.
        decode_checkpointing: recompute VAE decoder activations in the reward backward.
        num_ddim_timesteps: DDIM grid size N (skip k = 1000 / N; released 50).
        ema_decay: decay of the EMA target when target == "ema" (LCM 0.95).
    """

    w_min: float = 5.0
    w_max: float = 15.0
    loss_type: Literal["huber", "l2"] = "huber"
    huber_c: float = 0.001
    target: Literal["online", "ema"] = "online"
    sigma_data: float = 0.5
    timestep_scaling: float = 10.0
    decode_checkpointing: bool = False
    num_ddim_timesteps: int = 50
    ema_decay: float = 0.95


@dataclass
class RewardSpec:
    """One reward term: loss -= weight * R (built by `rewards.build_rewards`).

    Attributes:
        name: registered reward name (e.g. "hpsv2.1", "viclip").
        weight: beta of the term.
        frames: frames it scores (None: the reward's default).
        path: checkpoint path for the reward model.
        ranks: processes that compute this term (None: every rank; see train.placement).
        options: extra keyword arguments for the reward factory.
    """

    name: str = ""
    weight: float = 1.0
    frames: int | None = None
    path: str | None = None
    ranks: list[int] | None = None
    options: dict = field(default_factory=dict)


@dataclass
class DataSection:
    """Where training videos come from (see data/__init__.py).

    Attributes:
        source: a registered data source (data.DATA_SOURCES): "videos" (folder or CSV), "webdataset"
            (tar shards of mp4 + txt), "cache" (`t2v-turbo precompute` output), "prompts" (a prompt
            file; the teacher samples the latents), or a plugin's ("moving-digits", the world).
        path: folder / CSV / shard pattern / cache folder / prompt file.
        video_root: folder that relative paths in a CSV are resolved against (default: the CSV's folder).
        num_frames, height, width: clip size (default: the teacher's resolution).
        fps: frames are sampled at this rate from a random start (default: the teacher's native fps).
        resize: "crop" (aspect-preserving resize + center crop) or "stretch" (released code).
        shuffle: a seeded permutation per epoch (off: listing order; the world source is random anyway).
        num_workers: DataLoader worker processes.
        teacher_steps, teacher_cfg_scale: DDIM steps and classifier-free guidance scale g of the
            teacher samples that are the latents of source "prompts".
        paraphrase_prob: MovingDigits caption paraphrase probability.
        max_warnings: skipped-file warnings printed per run (all are counted).
        max_video_pixels: videos whose frames hold more pixels are skipped ("too large"); smaller ones
            are scaled to the clip size while decoding (0: no limit).
    """

    source: str = "videos"
    path: str | None = None
    video_root: str | None = None
    num_frames: int | None = None
    height: int | None = None
    width: int | None = None
    fps: float | None = None
    resize: Literal["crop", "stretch"] = "crop"
    shuffle: bool = True
    num_workers: int = 0
    teacher_steps: int = 25
    teacher_cfg_scale: float = 7.5
    paraphrase_prob: float = 0.0
    max_warnings: int = 20
    max_video_pixels: int = 4096 * 4096


@dataclass
class OptimSection:
    """Optimizer and learning-rate schedule (released: AdamW 1e-5 constant, clip 1.0).

    Attributes:
        name: "adamw" or "adamw8bit" (needs bitsandbytes).
        scheduler: a diffusers `get_scheduler` name.
    """

    name: Literal["adamw", "adamw8bit"] = "adamw"
    lr: float = 1e-5
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 1e-2
    eps: float = 1e-8
    scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine"] = "constant"
    warmup_steps: int = 0
    grad_clip: float = 1.0


@dataclass
class TrainSection:
    """The loop.

    Attributes:
        max_steps: optimizer steps (released 10K).
        batch_size: videos per process per micro-step (released 1).
        grad_accum: micro-steps per optimizer step.
        mixed_precision: "no", "bf16" or "fp16" (autocast; GPU).
        device: "auto" (CUDA when available), "cpu" or "cuda".
        placement: "all" (every term on every rank), "released" (the released code's split: CD and
            image rewards on the first 3/4 of the ranks, video rewards on the rest) or "custom"
            (each reward's `ranks` and `cd_ranks`).
        cd_ranks: ranks computing the consistency loss with placement "custom" (None: all).
        max_nan_steps: consecutive non-finite steps that stop the run.
        resume: None, "latest" or a checkpoint folder.
        trackers: "tensorboard" and/or "wandb" (through accelerate).
        mode: "distill" (T2V-Turbo, Algorithm 1) or "chain" (the DRaFT-K / VADER baseline: reward
            backpropagated through the last `chain_backprop` of `chain_steps` consistency sampling steps;
            no consistency loss, data supplies only prompts).
        chain_steps, chain_backprop, chain_w: N, K and the student's embedded w of the chain baseline.
        parallel: "ddp" (every process holds the whole student) or "fsdp" (FSDP2: the student and
            its EMA target sharded over the processes, sharded checkpoints; training/distributed.py).
        fsdp_cpu_offload: FSDP only: keep sharded parameters, gradients and optimizer state on the CPU.
        fsdp_reshard_after_forward: FSDP only: free gathered weights after each block's forward
            (ZeRO-3 memory; False keeps them until backward, ZeRO-2-like, faster).
    """

    mode: Literal["distill", "chain"] = "distill"
    chain_steps: int = 4
    chain_backprop: int = 1
    chain_w: float = 7.5
    max_steps: int = 10_000
    batch_size: int = 1
    grad_accum: int = 1
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    placement: Literal["all", "released", "custom"] = "all"
    cd_ranks: list[int] | None = None
    max_nan_steps: int = 5
    resume: str | None = None
    log_every: int = 1
    trackers: list[Literal["tensorboard", "wandb"]] = field(default_factory=list)
    progress: bool = True
    parallel: Literal["ddp", "fsdp"] = "ddp"
    fsdp_cpu_offload: bool = False
    fsdp_reshard_after_forward: bool = True


@dataclass
class CheckpointSection:
    """Checkpoints: every `every` steps (0: only at the end), keeping the newest `limit`.

    Attributes:
        export: at the end, write the merged student (native format) and the LoRA alone.
    """

    every: int = 500
    limit: int = 3
    export: bool = True


@dataclass
class ValidationSection:
    """Held-out prompts sampled at a few step counts; videos saved and reward scores logged.

    Attributes:
        every: validate every N steps (0: only at the end); nothing runs without prompts.
        prompts: prompts (or `prompt_file`, one per line).
        steps: sampling step counts.
        w: the student's embedded guidance when sampling.
    """

    every: int = 0
    prompts: list[str] = field(default_factory=list)
    prompt_file: str | None = None
    steps: list[int] = field(default_factory=lambda: [1, 4])
    w: float = 7.5
    seed: int = 0
    save_videos: bool = True
    fps: int | None = None


@dataclass
class Config:
    """A whole training run. `output_dir` receives config.yaml, metrics.jsonl, checkpoints/,
    validation/, student/ (merged native export), lora.safetensors and loss.png."""

    name: str = "t2v-turbo"
    output_dir: str = "runs/t2v-turbo"
    seed: int = 0
    model: ModelSection = field(default_factory=ModelSection)
    lora: LoraSection = field(default_factory=LoraSection)
    distill: DistillSection = field(default_factory=DistillSection)
    rewards: list[RewardSpec] = field(default_factory=list)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    validation: ValidationSection = field(default_factory=ValidationSection)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, width=110)


# ------------------------------------------------------------------------------------------ presets
def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def find_preset(name_or_path: str | os.PathLike) -> Path:
    """A YAML file by path, or a shipped preset by name ("moving-digits" or "moving-digits.yaml")."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    stem = path.name[: -len(".yaml")] if path.name.endswith(".yaml") else path.name
    shipped = PRESET_DIR / f"{stem}.yaml"
    if str(path.parent) in (".", "") and shipped.is_file():
        return shipped
    raise ConfigError(
        f"config {str(name_or_path)!r} not found: give a YAML path or a preset name {list_presets()}"
    )


def load_config(
    name_or_path: str | os.PathLike | dict | Config | None = None, overrides: list[str] | dict | None = None
) -> Config:
    """Build a validated Config.

    Args:
        name_or_path: a preset name, a YAML path, a dict of sections, a Config, or None (defaults).
        overrides: dotted overrides, ["optim.lr=1e-4", "rewards.0.weight=2"] or {"optim.lr": 1e-4}.

    Returns:
        The Config.

    Raises:
        ConfigError: unknown keys (the valid ones listed), values of the wrong type, inconsistent values.
    """
    if isinstance(name_or_path, Config):
        data = name_or_path.to_dict()
    elif isinstance(name_or_path, dict):
        check_renamed(name_or_path, RENAMED_KEYS)
        data = dataclasses.asdict(from_dict(Config, name_or_path))  # unknown keys fail here
    elif name_or_path is None:
        data = Config().to_dict()
    else:
        data = read_yaml(find_preset(name_or_path))
    pairs = parse_overrides(overrides) if isinstance(overrides, list) else list((overrides or {}).items())
    for key, value in pairs:
        apply_override(data, key, value)
    check_renamed(data, RENAMED_KEYS)  # old keys from the file, the dict or an override
    cfg = from_dict(Config, data)
    validate(cfg)
    return cfg


# ------------------------------------------------------------------------------------------ validation
def validate(cfg: Config) -> None:
    """Cross-field checks that types alone cannot express (raise ConfigError)."""

    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    from .data import DATA_SOURCES

    t, o, d, v = cfg.train, cfg.optim, cfg.distill, cfg.validation
    DATA_SOURCES.get(cfg.data.source)  # unknown sources: one line listing the registered ones (choices
    # that plugins extend are registry names, checked here; fixed choices are Literal field types)
    need(t.max_steps >= 1, f"train.max_steps must be >= 1, got {t.max_steps}")
    need(t.batch_size >= 1, f"train.batch_size must be >= 1, got {t.batch_size}")
    need(t.grad_accum >= 1, f"train.grad_accum must be >= 1, got {t.grad_accum}")
    need(t.max_nan_steps >= 1, f"train.max_nan_steps must be >= 1, got {t.max_nan_steps}")
    need(t.log_every >= 1, f"train.log_every must be >= 1, got {t.log_every}")
    need(
        1 <= t.chain_backprop <= t.chain_steps,
        f"train.chain_backprop must be in 1..train.chain_steps ({t.chain_steps}), got {t.chain_backprop}",
    )
    need(t.mode != "chain" or bool(cfg.rewards), "train.mode=chain needs at least one reward")
    need(o.lr > 0, f"optim.lr must be > 0, got {o.lr}")
    need(
        len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas),
        f"optim.betas must be two numbers in [0, 1), got {o.betas}",
    )
    need(o.grad_clip >= 0, f"optim.grad_clip must be >= 0 (0 disables), got {o.grad_clip}")
    need(o.warmup_steps >= 0, f"optim.warmup_steps must be >= 0, got {o.warmup_steps}")
    need(0 <= d.w_min <= d.w_max, f"distill.w_min must be in [0, distill.w_max], got {d.w_min}..{d.w_max}")
    need(d.huber_c > 0, f"distill.huber_c must be > 0, got {d.huber_c}")
    need(0 <= d.ema_decay < 1, f"distill.ema_decay must be in [0, 1), got {d.ema_decay}")
    need(
        1 <= d.num_ddim_timesteps <= 1000,
        f"distill.num_ddim_timesteps must be in [1, 1000], got {d.num_ddim_timesteps}",
    )
    need(cfg.lora.rank >= 0, f"lora.rank must be >= 0 (0 = full fine-tuning), got {cfg.lora.rank}")
    need(0 <= cfg.lora.dropout < 1, f"lora.dropout must be in [0, 1), got {cfg.lora.dropout}")
    m = cfg.model
    need(
        m.w_embedding_dim is None or (m.w_embedding_dim >= 2 and m.w_embedding_dim % 2 == 0),
        f"model.w_embedding_dim must be an even number >= 2 (or null with model.fixed_w), got {m.w_embedding_dim}",
    )
    need(
        m.fixed_w is None or m.w_embedding_dim is None,
        f"model.fixed_w={m.fixed_w} needs model.w_embedding_dim: null (a student with a w embedding takes w itself)",
    )
    need(
        m.w_embedding_dim is not None or m.fixed_w is not None,
        "model.w_embedding_dim: null needs model.fixed_w (the w the plain student is distilled at)",
    )
    need(m.fixed_w is None or m.fixed_w >= 0, f"model.fixed_w must be >= 0, got {m.fixed_w}")
    need(
        bool(cfg.model.teacher),
        "model.teacher is empty: give 'tiny', a shipped model name or a checkpoint path",
    )
    for i, r in enumerate(cfg.rewards):
        need(bool(r.name), f"rewards.{i}.name is empty")
        need(r.frames is None or r.frames >= 1, f"rewards.{i}.frames must be >= 1, got {r.frames}")
        need(r.ranks is None or all(x >= 0 for x in r.ranks), f"rewards.{i}.ranks must be ranks >= 0")
    names = [r.name for r in cfg.rewards]
    need(len(set(names)) == len(names), f"rewards: each reward name may appear once, got {names}")
    if t.placement != "custom":
        need(
            t.cd_ranks is None and all(r.ranks is None for r in cfg.rewards),
            "rewards.N.ranks / train.cd_ranks are set, but train.placement is not 'custom'",
        )
    need(
        not DATA_SOURCES.get(cfg.data.source).needs_path or bool(cfg.data.path),
        f"data.path is required for data.source={cfg.data.source}",
    )
    for name in ("num_frames", "height", "width"):
        x = getattr(cfg.data, name)
        need(x is None or x >= 1, f"data.{name} must be >= 1, got {x}")
    need(cfg.data.fps is None or cfg.data.fps > 0, f"data.fps must be > 0, got {cfg.data.fps}")
    need(cfg.data.num_workers >= 0, f"data.num_workers must be >= 0, got {cfg.data.num_workers}")
    need(
        cfg.checkpoint.every >= 0,
        f"checkpoint.every must be >= 0 (0 = only at the end), got {cfg.checkpoint.every}",
    )
    need(cfg.checkpoint.limit >= 1, f"checkpoint.limit must be >= 1, got {cfg.checkpoint.limit}")
    need(v.every >= 0, f"validation.every must be >= 0, got {v.every}")
    need(all(s >= 1 for s in v.steps), f"validation.steps must be >= 1, got {v.steps}")
    need(t.resume is None or bool(t.resume), "train.resume: give 'latest' or a checkpoint folder")


def world_size() -> int:
    """Processes of this launch (accelerate / torchrun set WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def summarize(cfg: Config, num_processes: int | None = None) -> str:
    """A few lines for the start of a run (the full resolved config is the run folder's config.yaml)."""
    n = num_processes or world_size()
    t, d = cfg.train, cfg.data
    rewards = ", ".join(f"{r.name} x{r.weight:g}" for r in cfg.rewards) or "none (VCM)"
    lora = f"LoRA rank {cfg.lora.rank}" if cfg.lora.rank > 0 else "full fine-tune"
    return "\n".join(
        [
            f"run {cfg.name}: teacher {cfg.model.teacher}, student {lora}, mode {t.mode}",
            f"  data {d.source}{' ' + d.path if d.path else ''}; {t.max_steps} steps, global batch "
            f"{t.batch_size * t.grad_accum * n} ({t.batch_size} x {t.grad_accum} accumulation x {n} process(es))",
            (f"  w in [{cfg.distill.w_min:g}, {cfg.distill.w_max:g}]" if cfg.model.fixed_w is None
             else f"  fixed w {cfg.model.fixed_w:g} (plain student)") + f", loss {cfg.distill.loss_type}, "
            f"target {cfg.distill.target}; rewards: {rewards}; lr {cfg.optim.lr:g}",
            f"  full config: {Path(cfg.output_dir) / 'config.yaml'}",
        ]
    )


def describe(cfg: Config, num_processes: int | None = None) -> str:
    """The resolved config as YAML plus the effective global batch, for printing."""
    n = num_processes or world_size()
    glob = cfg.train.batch_size * cfg.train.grad_accum * n
    head = (
        f"# effective global batch: {glob} videos per optimizer step "
        f"= {cfg.train.batch_size} per process x {cfg.train.grad_accum} accumulation x {n} process(es)"
    )
    return f"{head}\n{cfg.to_yaml()}"
