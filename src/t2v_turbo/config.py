"""Training configuration: dataclasses (every knob, with the released recipe as default), YAML
presets and dotted `key=value` overrides checked against the dataclass types.

    cfg = load_config("moving-digits", ["train.max_steps=200", "optim.lr=1e-4"])

A preset is found by path or by name in the installed `t2v_turbo/configs/` folder (the single
source of truth; the repository's top-level `configs/` holds symlinks to it). Any bad key or value
raises `UserError` with one clear line (the CLI prints it and exits with code 2).
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .distill import DistillConfig
from .errors import UserError
from .losses import LOSS_TYPES

PRESET_DIR = Path(__file__).parent / "configs"


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true / false (so `mixed_precision: no` stays the string "no")."""


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)


def _choice(default: Any, *choices: Any, doc: str = "") -> Any:
    return field(default=default, metadata={"choices": choices, "doc": doc})


# ------------------------------------------------------------------------------------------ sections
@dataclass
class ModelSection:
    """The teacher and how the student is made from it.

    Attributes:
        teacher: "tiny" (models/tiny.py, for tests), a shipped MovingDigits name ("teacher") or a
            local checkpoint folder / file (ModelScope diffusers folder, VideoCrafter2 model.ckpt).
        tiny_seed: seed of the tiny teacher.
        w_embedding_dim: size of the guidance embedding w_emb (time_cond_proj input).
        student_init: init of the new time_cond_proj: "normal" (released) or "zero" (student = teacher).
        gradient_checkpointing: recompute UNet block activations in backward.
    """

    teacher: str = "tiny"
    tiny_seed: int = 0
    w_embedding_dim: int = 256
    student_init: str = _choice("normal", "normal", "zero")
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
class DistillSection(DistillConfig):
    """Algorithm 1's knobs: every `distill.DistillConfig` field (its defaults are the released recipe)
    plus the solver grid and the EMA target.

    Attributes:
        num_ddim_timesteps: DDIM grid size N (skip k = 1000 / N; released 50).
        ema_decay: decay of the EMA target when target == "ema" (LCM 0.95).
    """

    num_ddim_timesteps: int = 50
    ema_decay: float = 0.95

    def step_config(self) -> DistillConfig:
        """The plain `DistillConfig` that `distill_step` takes."""
        names = {f.name for f in dataclasses.fields(DistillConfig)}
        return DistillConfig(**{k: v for k, v in dataclasses.asdict(self).items() if k in names})


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
        teacher_steps, teacher_guidance: DDIM sampling of latents for source "prompts".
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
    resize: str = _choice("crop", "crop", "stretch")
    shuffle: bool = True
    num_workers: int = 0
    teacher_steps: int = 25
    teacher_guidance: float = 7.5
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

    name: str = _choice("adamw", "adamw", "adamw8bit")
    lr: float = 1e-5
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 1e-2
    eps: float = 1e-8
    scheduler: str = _choice("constant", "constant", "constant_with_warmup", "linear", "cosine")
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
        chain_steps, chain_backprop, chain_guidance: N, K and w of the chain baseline.
    """

    mode: str = _choice("distill", "distill", "chain")
    chain_steps: int = 4
    chain_backprop: int = 1
    chain_guidance: float = 7.5
    max_steps: int = 10_000
    batch_size: int = 1
    grad_accum: int = 1
    mixed_precision: str = _choice("no", "no", "bf16", "fp16")
    device: str = _choice("auto", "auto", "cpu", "cuda")
    placement: str = _choice("all", "all", "released", "custom")
    cd_ranks: list[int] | None = None
    max_nan_steps: int = 5
    resume: str | None = None
    log_every: int = 1
    trackers: list[str] = field(default_factory=list)
    progress: bool = True


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
    """

    every: int = 0
    prompts: list[str] = field(default_factory=list)
    prompt_file: str | None = None
    steps: list[int] = field(default_factory=lambda: [1, 4])
    guidance: float = 7.5
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


# ------------------------------------------------------------------------------------------ typed building
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check / coerce one value against a type hint; raise UserError naming the dotted key."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, key)
            except UserError as e:
                errors.append(str(e))
        raise UserError(errors[0] if len(errors) == 1 else f"{key}: expected {_type_name(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(tp, type) and isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise UserError(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise UserError(f"{key}: expected a list, got {value!r}")
        return [_convert(v, item, f"{key}.{i}") for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise UserError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-5" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise UserError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise UserError(f"{key}: expected a string, got {value!r}")
    return value


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build dataclass `cls` from a (nested) dict, rejecting unknown keys with the valid ones listed."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            valid = ", ".join(f"{prefix}{k}" for k in fields)
            raise UserError(f"unknown config key {prefix}{key!s}; valid keys: {valid}")
        value = _convert(value, hints[key], f"{prefix}{key}")
        choices = fields[key].metadata.get("choices")
        if choices and value not in choices:
            raise UserError(f"{prefix}{key}: {value!r} is not one of {list(choices)}")
        kwargs[key] = value
    return cls(**kwargs)


# ------------------------------------------------------------------------------------------ overrides
def parse_value(text: str) -> Any:
    """A command-line value as YAML ("3" -> 3, "[1, 4]" -> list, "null" -> None, "abc" -> "abc")."""
    try:
        return _yaml_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


def apply_override(data: dict, key: str, value: Any) -> None:
    """Set `data[a][b][c] = value` for key "a.b.c"; integer parts index lists ("rewards.0.weight")."""
    parts = key.split(".")
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            node = node[_list_index(node, part, where)]
            continue
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
        if not isinstance(node, (dict, list)):
            raise UserError(f"cannot set {key}: {where} is a single value, not a section")
    last = parts[-1]
    if isinstance(node, list):
        node[_list_index(node, last, key)] = value
    else:
        node[last] = value


def _list_index(node: list, part: str, where: str) -> int:
    if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
        raise UserError(f"{where}: no list item {part!r} (the list has {len(node)} item(s))")
    return int(part)


def parse_overrides(items: list[str]) -> list[tuple[str, Any]]:
    out = []
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"bad override {item!r}: expected key=value, e.g. optim.lr=1e-4")
        out.append((key.strip(), parse_value(text)))
    return out


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
    raise UserError(
        f"config {str(name_or_path)!r} not found: give a YAML path or a preset name {list_presets()}"
    )


def read_yaml(path: Path) -> dict:
    try:
        data = _yaml_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: a config must be a mapping of sections, got {type(data).__name__}")
    return data


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
        UserError: unknown keys (the valid ones listed), values of the wrong type, inconsistent values.
    """
    if isinstance(name_or_path, Config):
        data = name_or_path.to_dict()
    elif isinstance(name_or_path, dict):
        data = dataclasses.asdict(from_dict(Config, name_or_path))  # unknown keys fail here too
    elif name_or_path is None:
        data = Config().to_dict()
    else:
        data = read_yaml(find_preset(name_or_path))
    pairs = parse_overrides(overrides) if isinstance(overrides, list) else list((overrides or {}).items())
    for key, value in pairs:
        apply_override(data, key, value)
    cfg = from_dict(Config, data)
    validate(cfg)
    return cfg


# ------------------------------------------------------------------------------------------ validation
def validate(cfg: Config) -> None:
    """Cross-field checks that types alone cannot express (raise UserError)."""

    def need(ok: bool, message: str) -> None:
        if not ok:
            raise UserError(message)

    from .data import DATA_SOURCES

    t, o, d, v = cfg.train, cfg.optim, cfg.distill, cfg.validation
    DATA_SOURCES.get(cfg.data.source)  # unknown sources: one line listing the registered ones
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
    bad = [x for x in t.trackers if x not in ("tensorboard", "wandb")]
    need(not bad, f"train.trackers: unknown {bad}; valid: ['tensorboard', 'wandb']")
    need(o.lr > 0, f"optim.lr must be > 0, got {o.lr}")
    need(
        len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas),
        f"optim.betas must be two numbers in [0, 1), got {o.betas}",
    )
    need(o.grad_clip >= 0, f"optim.grad_clip must be >= 0 (0 disables), got {o.grad_clip}")
    need(o.warmup_steps >= 0, f"optim.warmup_steps must be >= 0, got {o.warmup_steps}")
    need(d.loss_type in LOSS_TYPES, f"distill.loss_type: {d.loss_type!r} is not one of {list(LOSS_TYPES)}")
    need(d.target in ("online", "ema"), f"distill.target: {d.target!r} is not one of ['online', 'ema']")
    need(0 <= d.w_min <= d.w_max, f"distill.w_min must be in [0, distill.w_max], got {d.w_min}..{d.w_max}")
    need(d.huber_c > 0, f"distill.huber_c must be > 0, got {d.huber_c}")
    need(0 <= d.ema_decay < 1, f"distill.ema_decay must be in [0, 1), got {d.ema_decay}")
    need(
        1 <= d.num_ddim_timesteps <= 1000,
        f"distill.num_ddim_timesteps must be in [1, 1000], got {d.num_ddim_timesteps}",
    )
    need(cfg.lora.rank >= 0, f"lora.rank must be >= 0 (0 = full fine-tuning), got {cfg.lora.rank}")
    need(0 <= cfg.lora.dropout < 1, f"lora.dropout must be in [0, 1), got {cfg.lora.dropout}")
    need(
        cfg.model.w_embedding_dim >= 2 and cfg.model.w_embedding_dim % 2 == 0,
        f"model.w_embedding_dim must be an even number >= 2, got {cfg.model.w_embedding_dim}",
    )
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


def describe(cfg: Config, num_processes: int | None = None) -> str:
    """The resolved config as YAML plus the effective global batch, for printing."""
    n = num_processes or world_size()
    glob = cfg.train.batch_size * cfg.train.grad_accum * n
    head = (
        f"# effective global batch: {glob} videos per optimizer step "
        f"= {cfg.train.batch_size} per process x {cfg.train.grad_accum} accumulation x {n} process(es)"
    )
    return f"{head}\n{cfg.to_yaml()}"
