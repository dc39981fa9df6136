"""Config: presets, released-recipe defaults, typed dotted overrides, clear errors, the distill CLI."""

import dataclasses
import typing
from pathlib import Path

import pytest
import yaml

from t2v_turbo import cli
from t2v_turbo.config import PRESET_DIR, Config, describe, find_preset, list_presets, load_config
from t2v_turbo.distill import DistillConfig
from t2v_turbo.errors import ConfigError
from t2v_turbo.training.roles import distill_config

REPO = Path(__file__).resolve().parents[1]


def test_presets_ship_with_the_package_and_top_level_links_point_there():
    assert list_presets() == ["moving-digits", "moving-digits-fm", "ms-lora", "vc2-lora", "wan-lora"]
    for name in list_presets():
        text = (PRESET_DIR / f"{name}.yaml").read_text()
        assert text.startswith("# ") and "Run:" in text and "Hardware:" in text
        top = REPO / "configs" / f"{name}.yaml"
        assert top.resolve() == (PRESET_DIR / f"{name}.yaml").resolve()
        assert load_config(name) == load_config(str(top))  # by name and by path
    assert find_preset("moving-digits.yaml") == PRESET_DIR / "moving-digits.yaml"


def test_released_recipe_defaults():
    c = Config()
    assert (c.optim.name, c.optim.lr, c.optim.scheduler, c.optim.grad_clip) == (
        "adamw",
        1e-5,
        "constant",
        1.0,
    )
    assert (c.lora.dropout, c.lora.alpha) == (0.1, None)  # alpha None = rank: scale 1.0
    assert (c.distill.w_min, c.distill.w_max, c.distill.huber_c, c.distill.loss_type) == (
        5.0,
        15.0,
        0.001,
        "huber",
    )
    assert (c.distill.num_ddim_timesteps, c.distill.target, c.distill.ema_decay) == (50, "online", 0.95)
    assert (c.train.max_steps, c.train.batch_size, c.train.placement) == (10_000, 1, "all")
    step = distill_config(c)
    assert (step.w_min, step.w_max, step.huber_c, step.target) == (5.0, 15.0, 0.001, "online")
    # the config section and the library's DistillConfig agree on every shared knob's default and choices
    shared = {f.name for f in dataclasses.fields(DistillConfig)}
    assert shared <= {f.name for f in dataclasses.fields(c.distill)}
    assert all(getattr(c.distill, k) == getattr(DistillConfig(), k) for k in shared)
    hints, lib = typing.get_type_hints(type(c.distill)), typing.get_type_hints(DistillConfig)
    assert all(hints[k] == lib[k] for k in shared)
    assert distill_config(load_config(None, {"data.path": "x", "distill.loss_type": "l2"})).loss_type == "l2"


def test_paper_presets():
    ms = load_config("ms-lora")
    assert ms.lora.rank == 32 and ms.lora.dropout == 0.1
    assert [(r.name, r.weight, r.frames) for r in ms.rewards] == [("hpsv2.1", 2.0, 5), ("viclip", 3.0, 8)]
    assert (ms.data.num_frames, ms.data.height, ms.data.width, ms.data.fps) == (16, 256, 256, 8)
    vc2 = load_config("vc2-lora")
    assert vc2.lora.rank == 64
    assert [(r.name, r.weight, r.frames) for r in vc2.rewards] == [
        ("hpsv2.1", 1.0, 5),
        ("internvideo2", 2.0, 4),
    ]
    assert (vc2.data.num_frames, vc2.data.height, vc2.data.width, vc2.data.fps) == (16, 320, 512, 16)
    for c in (ms, vc2):
        assert (c.optim.lr, c.optim.scheduler, c.train.batch_size, c.train.max_steps) == (
            1e-5,
            "constant",
            1,
            10_000,
        )
        assert (c.train.mixed_precision, c.model.gradient_checkpointing) == ("bf16", True)
    md = load_config("moving-digits")
    assert md.model.teacher == "teacher" and md.data.source == "moving-digits"
    assert [r.name for r in md.rewards] == ["md-image", "md-video"]


def test_dotted_overrides_are_typed():
    c = load_config(
        "moving-digits",
        [
            "optim.lr=1e-4",
            "train.max_steps=7",
            "rewards.1.weight=5",
            "validation.steps=[1, 2, 8]",
            "lora.alpha=null",
            "model.gradient_checkpointing=true",
            "distill.w_min=3",
            "rewards.0.ranks=[0]",
            "train.placement=custom",
            "model.teacher=2024",
        ],
    )
    assert c.optim.lr == 1e-4 and isinstance(c.optim.lr, float)
    assert c.train.max_steps == 7 and c.rewards[1].weight == 5.0 and isinstance(c.rewards[1].weight, float)
    assert c.validation.steps == [1, 2, 8] and c.lora.alpha is None and c.model.gradient_checkpointing is True
    assert c.distill.w_min == 3.0 and c.rewards[0].ranks == [0] and c.model.teacher == "2024"
    assert load_config("moving-digits", ["rewards=[]"]).rewards == []
    # YAML 1.2 booleans: "no" stays a string
    assert load_config("ms-lora", ["train.mixed_precision=no"]).train.mixed_precision == "no"
    assert load_config(None, {"optim.lr": 2e-5, "data.path": "clips.csv"}).optim.lr == 2e-5
    assert load_config({"optim": {"lr": 3e-5}, "data": {"path": "clips.csv"}}).optim.lr == 3e-5


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lrr=1", "unknown config key optim.lrr; valid keys: optim.name, optim.lr, optim.betas"),
        ("trian.max_steps=1", "unknown config key trian; valid keys: name, output_dir, seed, model"),
        ("train.max_steps=1.5", "train.max_steps: expected an integer, got 1.5"),
        ("train.max_steps=abc", "train.max_steps: expected an integer, got 'abc'"),
        ("optim.lr=fast", "optim.lr: expected a number, got 'fast'"),
        (
            "model.gradient_checkpointing=maybe",
            "model.gradient_checkpointing: expected true or false, got 'maybe'",
        ),
        ("distill.loss_type=l1", "distill.loss_type: 'l1' is not one of ['huber', 'l2']"),
        ("train.mixed_precision=fp8", "train.mixed_precision: 'fp8' is not one of ['no', 'bf16', 'fp16']"),
        ("distill.w_min=20", "distill.w_min must be in [0, distill.w_max], got 20.0..15.0"),
        ("rewards.5.weight=1", "rewards.5: no list item '5' (the list has 2 item(s))"),
        (
            "rewards.0.color=red",
            "unknown config key rewards.0.color; valid keys: rewards.0.name, rewards.0.weight",
        ),
        ("train.max_steps=0", "train.max_steps must be >= 1, got 0"),
        ("data.source=videos", "data.path is required for data.source=videos"),
        (
            "rewards.0.ranks=[1]",
            "rewards.N.ranks / train.cd_ranks are set, but train.placement is not 'custom'",
        ),
        ("validation.steps=4", "validation.steps: expected a list, got 4"),
        ("no_equals_sign", "bad override 'no_equals_sign': expected key=value"),
        ("optim.lr.x=1", "cannot set optim.lr.x: optim.lr is a single value, not a section"),
        (
            "train.trackers=[tensorbord]",
            "train.trackers.0: 'tensorbord' is not one of ['tensorboard', 'wandb']",
        ),
        ("model.student_init=zeros", "model.student_init: 'zeros' is not one of ['normal', 'zero']"),
        ("train.progress=1", "train.progress: expected true or false, got 1"),
        ("optim.lr=true", "optim.lr: expected a number, got True"),
        # renamed guidance keys: w (the student's embedded guidance) and cfg_scale (a teacher's CFG)
        (
            "data.teacher_guidance=7.5",
            "config key data.teacher_guidance is no longer accepted: use data.teacher_cfg_scale",
        ),
        (
            "train.chain_guidance=7.5",
            "config key train.chain_guidance is no longer accepted: use train.chain_w",
        ),
        ("validation.guidance=7.5", "config key validation.guidance is no longer accepted: use validation.w"),
        (
            "distill.compute_cd=false",
            "config key distill.compute_cd is no longer accepted: reward-only ranks follow",
        ),
    ],
)
def test_bad_overrides_give_one_clear_line(override, message):
    with pytest.raises(ConfigError) as e:
        load_config("moving-digits", [override])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_renamed_keys_are_refused_in_files_and_dicts_too(tmp_path):
    (tmp_path / "old.yaml").write_text("validation:\n  guidance: 5.0\n")
    with pytest.raises(
        ConfigError, match="^config key validation.guidance is no longer accepted: use validation.w"
    ):
        load_config(str(tmp_path / "old.yaml"))
    with pytest.raises(ConfigError, match="use data.teacher_cfg_scale"):
        load_config({"data": {"teacher_guidance": 3.0}})
    c = load_config(
        None, {"data.path": "x", "data.teacher_cfg_scale": 3.0, "train.chain_w": 4.0, "validation.w": 5.0}
    )
    assert (c.data.teacher_cfg_scale, c.train.chain_w, c.validation.w) == (3.0, 4.0, 5.0)


def test_bad_yaml_files(tmp_path):
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="a config must be a mapping"):
        load_config(str(tmp_path / "list.yaml"))
    (tmp_path / "broken.yaml").write_text("train: {max_steps: [\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(str(tmp_path / "broken.yaml"))
    with pytest.raises(
        ConfigError, match=r"config 'nope' not found: give a YAML path or a preset name \['moving-digits'"
    ):
        load_config("nope")


def test_describe_prints_the_effective_global_batch(monkeypatch):
    c = load_config("moving-digits", ["train.batch_size=2", "train.grad_accum=3"])
    assert describe(c, 4).splitlines()[0] == (
        "# effective global batch: 24 videos per optimizer step "
        "= 2 per process x 3 accumulation x 4 process(es)"
    )
    monkeypatch.setenv("WORLD_SIZE", "8")
    assert "effective global batch: 48 " in describe(c)
    assert yaml.safe_load(describe(c)) == c.to_dict()  # the printed config is valid YAML of the whole config


def test_cli_dry_run_and_errors(capsys, tmp_path):
    assert cli.main(["distill", "vc2-lora", "--dry-run", "train.grad_accum=2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# effective global batch: 2 videos") and "height: 320" in out
    assert cli.main(["distill", "vc2-lora", "optim.lrr=1"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("error: unknown config key optim.lrr")
        and err.count("\n") == 1
        and "Traceback" not in err
    )
    assert cli.main(["distill", "ms-lora", "--dry-run", "rewards.0.name=hpsv9"]) == 2
    assert "unknown reward(s) ['hpsv9']; valid:" in capsys.readouterr().err
    assert cli.main(["distill", "moving-digits", "model.teacher=" + str(tmp_path / "missing")]) == 2
    assert "not found" in capsys.readouterr().err
