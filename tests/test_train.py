"""The trainer on tiny models: end to end, EMA, NaNs, placement, latent cache, kill-and-resume, DDP."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from t2v_turbo import cli
from t2v_turbo.config import load_config
from t2v_turbo.errors import ConfigError, DataError, T2VTurboError
from t2v_turbo.train import TrainingStopped, train
from t2v_turbo.video_io import write_video

# Test rewards, registered here and in the subprocess runner (same source, executed in both places).
REWARDS_SRC = '''
import torch
from t2v_turbo.rewards.base import RewardModel, register_reward

NAN_CALLS = set()  # call numbers (1-based) at which "test-nan" returns NaN; {"all"} = always from now on
CALLS = [0]


class ChannelReward(RewardModel):
    """Mean of one color channel (image kind) or of its frame-to-frame change (video kind)."""

    def __init__(self, channel=0, kind="image", num_frames=2, nan=False):
        super().__init__()
        self.channel, self.kind, self.num_frames, self.nan = channel, kind, num_frames, nan

    def score(self, video, prompts):
        x = video[:, self.channel]  # (B, T, H, W)
        s = (x[:, 1:] - x[:, :-1]).flatten(1).mean(1) if self.kind == "video" else x.flatten(1).mean(1)
        if self.nan:
            CALLS[0] += 1
            if CALLS[0] in NAN_CALLS or "all" in NAN_CALLS:
                s = s * float("nan")
        return s


register_reward("test-red")(lambda **kw: ChannelReward(0, "image", **kw))
register_reward("test-motion")(lambda **kw: ChannelReward(1, "video", **kw))
register_reward("test-nan")(lambda **kw: ChannelReward(0, "image", nan=True, **kw))
'''
_ns: dict = {}
exec(compile(REWARDS_SRC, "test_rewards", "exec"), _ns)
NAN_CALLS, CALLS = _ns["NAN_CALLS"], _ns["CALLS"]

RUNNER = (
    REWARDS_SRC
    + """
import sys
torch.set_num_threads(1)
from t2v_turbo.cli import main
sys.exit(main(sys.argv[1:]))
"""
)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Six 8-frame 24x32 clips with captions (a folder source)."""
    root = tmp_path_factory.mktemp("clips")
    g = torch.Generator().manual_seed(0)
    for i in range(6):
        write_video(root / f"clip{i}.mp4", torch.rand(3, 8, 24, 32, generator=g) * 2 - 1, fps=8)
        (root / f"clip{i}.txt").write_text(["a red square", "a green ball", "a blue sky"][i % 3])
    return root


def tiny(tmp_path: Path, videos: Path, **overrides) -> dict:
    cfg = {
        "name": "tiny",
        "output_dir": str(tmp_path / "run"),
        "seed": 0,
        "model": {"teacher": "tiny", "w_embedding_dim": 32},
        "lora": {"rank": 4, "dropout": 0.1},
        "rewards": [{"name": "test-red", "weight": 1.0, "frames": 2}],
        "data": {
            "source": "videos",
            "path": str(videos),
            "num_frames": 4,
            "height": 16,
            "width": 16,
            "fps": 8,
        },
        "optim": {"lr": 1e-3},
        "train": {"max_steps": 3, "batch_size": 1, "progress": False},
        "checkpoint": {"every": 0, "limit": 1, "export": False},
    }
    for key, value in overrides.items():
        section, _, name = key.partition("__")
        if name:
            cfg.setdefault(section, {})[name] = value
        else:
            cfg[section] = value
    return cfg


def steps_of(run: Path) -> list[dict]:
    return [
        json.loads(line)
        for line in (run / "metrics.jsonl").read_text().splitlines()
        if '"skipped_step"' in line
    ]


def test_end_to_end_lora_run_exports_logs_and_validates(tmp_path, videos, capsys):
    from t2v_turbo.models.lora import load_lora_state_dict
    from t2v_turbo.pipeline import load_backbone
    from t2v_turbo.training.roles import build_student, load_teacher

    trackers = ["tensorboard"] if __import__("importlib").util.find_spec("tensorboard") else []
    cfg = tiny(
        tmp_path,
        videos,
        train__max_steps=4,
        checkpoint__every=2,
        checkpoint__export=True,
        validation={"prompts": ["a red square"], "steps": [1, 2]},
        train__trackers=trackers,
    )
    result = train(cfg)
    run = tmp_path / "run"
    rows = steps_of(run)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all({"loss", "loss_cd", "reward/test-red", "w", "t", "lr"} <= set(r) for r in rows)
    assert all(r["loss"] == pytest.approx(r["loss_cd"] - r["reward/test-red"], abs=1e-6) for r in rows)
    assert all(5.0 <= r["w"] <= 15.0 and r["lr"] == 1e-3 for r in rows)
    val = [
        json.loads(line)
        for line in (run / "metrics.jsonl").read_text().splitlines()
        if "val/1step/test-red" in line
    ]
    assert len(val) == 1 and val[0]["step"] == 4 and "val/2step/test-red" in val[0]
    assert sorted(p.name for p in (run / "validation" / "step-00000004").iterdir()) == ["1-step", "2-step"]
    assert (run / "validation" / "step-00000004" / "1-step" / "a red square-0.mp4").stat().st_size > 0
    # checkpoints: limit 1 keeps only the final one, complete
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-00000004"]
    state = json.loads((run / "checkpoints" / "step-00000004" / "state.json").read_text())
    assert state["step"] == 4 and state["positions"] == [4] and state["written_by_rank"] == 0
    assert load_config(str(run / "config.yaml")) == load_config(cfg)  # the saved config reloads identically
    assert (run / "loss.png").stat().st_size > 1000 and result.plot == run / "loss.png"
    if trackers:
        assert any(run.rglob("events.out.tfevents.*"))
    with pytest.raises(ConfigError, match="already holds checkpoints of an earlier run: continue it with"):
        train(cfg)  # a fresh run never mixes its checkpoints with an old run's
    # exports: the LoRA alone (peft keys) and the merged student, consistent with each other
    lora = load_file(str(result.lora_path))
    assert lora and all("lora_" in k for k in lora)
    trained = load_file(str(run / "checkpoints" / "step-00000004" / "trainable.safetensors"))
    assert (
        sum(float(v.abs().sum()) for k, v in trained.items() if "lora_B" in k) > 0
    )  # LoRA up moved off zero
    c = load_config(cfg)
    torch.manual_seed(0)
    rebuilt = build_student(c, load_teacher(c))
    load_lora_state_dict(rebuilt.unet, lora)
    rebuilt.merge_lora()
    exported = load_backbone(result.student_dir)
    assert exported.w_embedding_dim == 32
    ref = rebuilt.unet.state_dict()
    for k, v in exported.unet.state_dict().items():
        torch.testing.assert_close(v, ref[k], rtol=0, atol=1e-6)
    out = capsys.readouterr().out
    assert "global batch 1 (1 x 1 accumulation x 1 process(es))" in out and "skipped 0 data item(s)" in out


def test_ema_target_follows_the_lcm_update(tmp_path, videos):
    cfg = tiny(
        tmp_path,
        videos,
        train__max_steps=1,
        checkpoint__every=1,
        distill__target="ema",
        distill__ema_decay=0.9,
    )
    train(cfg)
    ck = tmp_path / "run" / "checkpoints" / "step-00000001"
    student, ema = load_file(str(ck / "trainable.safetensors")), load_file(str(ck / "ema.safetensors"))
    assert student.keys() == ema.keys()
    for k in student:
        if "lora_B" in k:  # zero-initialised: after one step theta_ema = 0.9 * 0 + 0.1 * theta
            torch.testing.assert_close(ema[k], 0.1 * student[k], rtol=1e-6, atol=0)
    assert any(float(student[k].abs().sum()) > 0 for k in student if "lora_B" in k)


def test_a_nan_step_is_skipped_with_weights_and_optimizer_untouched(tmp_path, videos):
    NAN_CALLS.clear()
    NAN_CALLS.add(2)
    CALLS[0] = 0
    cfg = tiny(
        tmp_path,
        videos,
        rewards=[{"name": "test-nan", "frames": 2}],
        checkpoint__every=1,
        checkpoint__limit=5,
    )
    result = train(cfg)
    run = tmp_path / "run"
    rows = steps_of(run)
    assert result.nan_steps == 1 and [r["skipped_step"] for r in rows] == [False, True, False]
    assert rows[1]["nan_steps"] == 1 and "loss" in rows[0]
    w = {
        s: load_file(str(run / "checkpoints" / f"step-{s:08d}" / "trainable.safetensors")) for s in (1, 2, 3)
    }
    assert all(torch.equal(w[1][k], w[2][k]) for k in w[1])  # the NaN step changed nothing
    assert not all(torch.equal(w[2][k], w[3][k]) for k in w[2])  # the next one trains again
    opt = {
        s: torch.load(run / "checkpoints" / f"step-{s:08d}" / "optimizer.pt", weights_only=True)
        for s in (1, 2)
    }
    assert opt[1]["state"][0]["step"] == opt[2]["state"][0]["step"] == 1
    assert torch.equal(opt[1]["state"][0]["exp_avg"], opt[2]["state"][0]["exp_avg"])
    NAN_CALLS.clear()


def test_repeated_nans_stop_the_run_with_one_line_and_the_checkpoint_intact(tmp_path, videos, capsys):
    NAN_CALLS.clear()
    NAN_CALLS.update({3, 4, 5, 6})
    CALLS[0] = 0
    cfg = tiny(
        tmp_path,
        videos,
        rewards=[{"name": "test-nan", "frames": 2}],
        checkpoint__every=1,
        checkpoint__limit=3,
        train__max_steps=10,
        train__max_nan_steps=2,
    )
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert cli.main(["distill", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("error: stopped at step 4: 2 consecutive steps had a non-finite loss")
        and "\n" not in err
    )
    run = tmp_path / "run"
    # step 3 was the first non-finite one: its checkpoint holds the weights of step 2, the last good ones
    assert err.endswith(f"last good checkpoint: {run / 'checkpoints' / 'step-00000003'}")
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == [
        "step-00000001",
        "step-00000002",
        "step-00000003",
    ]  # the run stopped before saving step 4
    w2 = load_file(str(run / "checkpoints" / "step-00000002" / "trainable.safetensors"))
    w3 = load_file(str(run / "checkpoints" / "step-00000003" / "trainable.safetensors"))
    assert all(torch.equal(w2[k], w3[k]) for k in w2)  # step 3 was skipped: the last good weights
    with pytest.raises(TrainingStopped):
        NAN_CALLS.add("all")
        train(cfg | {"output_dir": str(tmp_path / "run2")})
    NAN_CALLS.clear()


def test_placement_is_validated_and_reweighting_is_explicit():
    from t2v_turbo.rewards.base import build_rewards
    from t2v_turbo.training.placement import CD, resolve_placement

    specs = [{"name": "test-red", "weight": 1.0}, {"name": "test-motion", "weight": 2.0}]
    terms = build_rewards(specs)
    cfg = load_config(None, {"data.path": "clips.csv", "rewards": specs, "train.placement": "released"})
    p = resolve_placement(cfg, terms, 8)
    assert p.ranks == {CD: [0, 1, 2, 3, 4, 5], "test-red": [0, 1, 2, 3, 4, 5], "test-motion": [6, 7]}
    assert p.effective_weights({CD: 1.0, "test-red": 1.0, "test-motion": 2.0}) == {
        CD: 0.75,
        "test-red": 0.75,
        "test-motion": 0.5,
    }
    assert "test-motion      weight 2 on ranks [6, 7] -> effective 0.5" in p.describe(
        {CD: 1.0, "test-red": 1.0, "test-motion": 2.0}
    )
    with pytest.raises(ConfigError, match="needs >= 2 processes"):
        resolve_placement(cfg, terms, 1)
    default = resolve_placement(load_config(None, {"data.path": "clips.csv", "rewards": specs}), terms, 3)
    assert all(r == [0, 1, 2] for r in default.ranks.values())
    custom = load_config(
        None,
        {
            "data.path": "clips.csv",
            "rewards": [specs[0] | {"ranks": [3]}, specs[1]],
            "train.placement": "custom",
        },
    )
    with pytest.raises(ConfigError, match=r"names rank\(s\) \[3\], but this run has 2 process"):
        resolve_placement(custom, terms, 2)
    nobody = load_config(
        None, {"data.path": "clips.csv", "rewards": specs, "train.placement": "custom", "train.cd_ranks": []}
    )
    with pytest.raises(ConfigError, match="puts 'consistency' on no rank"):
        resolve_placement(nobody, terms, 2)
    idle = load_config(
        None,
        {
            "data.path": "clips.csv",
            "rewards": [s | {"ranks": [0]} for s in specs],
            "train.placement": "custom",
            "train.cd_ranks": [0],
        },
    )
    with pytest.raises(ConfigError, match=r"gives rank\(s\) \[1\] no loss term"):
        resolve_placement(idle, terms, 2)


def test_full_finetune_with_accumulation_checkpointing_and_prompt_source(tmp_path, videos):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red square\na blue sky\n")
    cfg = tiny(
        tmp_path,
        videos,
        lora={"rank": 0},
        train__max_steps=2,
        train__grad_accum=2,
        train__batch_size=2,
        model__gradient_checkpointing=True,
        model__w_embedding_dim=32,
        checkpoint__export=True,
        data={
            "source": "prompts",
            "path": str(prompts),
            "num_frames": 4,
            "height": 16,
            "width": 16,
            "teacher_steps": 2,
        },
    )
    result = train(cfg)
    rows = steps_of(tmp_path / "run")
    assert len(rows) == 2 and all(r["loss_cd"] > 0 for r in rows)
    assert result.lora_path is None and (result.student_dir / "unet" / "config.json").exists()
    state = json.loads((tmp_path / "run" / "checkpoints" / "step-00000002" / "state.json").read_text())
    assert state["positions"] == [8]  # 2 steps x 2 micro-steps x 2 prompts
    trained = load_file(str(tmp_path / "run" / "checkpoints" / "step-00000002" / "trainable.safetensors"))
    assert "time_embedding.cond_proj.weight" in trained and "conv_in.weight" in trained  # every UNet weight


def test_train_from_a_precomputed_latent_cache(tmp_path, videos):
    from t2v_turbo.data.cache import LatentCache
    from t2v_turbo.data.videos import list_videos, load_clip
    from t2v_turbo.training.roles import load_teacher

    cfg = tiny(tmp_path, videos)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert (
        cli.main(
            [
                "precompute",
                str(path),
                "--out",
                str(tmp_path / "cache"),
                "--batch-size",
                "1",
                "--shard-size",
                "4",
            ]
        )
        == 0
    )
    cache = LatentCache(tmp_path / "cache")
    assert len(cache) == 6 and cache.index["shards"] == [
        {"file": "shard-00000.safetensors", "count": 4},
        {"file": "shard-00001.safetensors", "count": 2},
    ]
    item = cache[(0, 0)]
    teacher = load_teacher(load_config(cfg))
    path0, caption0 = list_videos(videos)[0]
    import numpy as np

    clip = load_clip(path0, caption0, 4, 16, 16, 8, "crop", np.random.default_rng([0, 0, 0]))
    z = teacher.encode_video(clip["video"][None], generator=torch.Generator().manual_seed(0))
    assert item["prompt"] == caption0 and torch.equal(item["latents"], z[0])
    assert torch.equal(item["cond"], teacher.encode_prompt([caption0])[0])
    cache_data = {"source": "cache", "path": str(tmp_path / "cache")}
    from_cache = tiny(tmp_path, videos, data=cache_data, train__max_steps=2)
    result = train(from_cache)
    assert result.step == 2 and len(steps_of(tmp_path / "run")) == 2
    eight = from_cache["data"] | {"num_frames": 8}  # a tiny teacher for 8-frame clips
    other = from_cache | {"data": eight, "output_dir": str(tmp_path / "run8")}
    with pytest.raises(
        T2VTurboError, match=r"latents of shape \[4, 4, 8, 8\], the model needs \[4, 8, 8, 8\]"
    ):
        train(other)


def test_broken_videos_never_stop_a_run(tmp_path, videos):
    root = tmp_path / "mixed"
    root.mkdir()
    for f in videos.iterdir():
        (root / f.name).write_bytes(f.read_bytes())
    (root / "zero.mp4").write_bytes(b"")
    (root / "text.mp4").write_text("not a video")
    (root / "random.mp4").write_bytes(os.urandom(2048))
    (root / "trunc.mp4").write_bytes((videos / "clip0.mp4").read_bytes()[:300])
    write_video(root / "short.mp4", torch.zeros(3, 2, 16, 16), fps=8)
    broken = ["zero", "text", "random", "trunc", "short", "missing"]
    rows = [f"{b}.mp4,a caption" for b in broken] + ["clip1.mp4,"]  # the last: an empty caption
    rows += [f"clip{i}.mp4,clip {i}" for i in range(6)]
    (root / "list.csv").write_text("path,caption\n" + "\n".join(rows) + "\n")
    # CSV order (no shuffle): the 7 broken rows come first, then 6 good clips; 6 steps consume all 13 once
    result = train(tiny(tmp_path, root / "list.csv", train__max_steps=6, data__shuffle=False))
    assert result.step == 6
    assert result.skipped == {
        "empty file": 1,
        "undecodable": 3,
        "too short": 1,
        "missing file": 1,
        "empty caption": 1,
    }
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["skipped"] == result.skipped


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    return os.environ | {"OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0", "TOKENIZERS_PARALLELISM": "false"}


@pytest.mark.slow  # subprocesses: ~25-30 s on 2 shared cores
def test_kill_and_resume_reproduces_the_uninterrupted_run(tmp_path, videos, capsys):
    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER)
    base = tiny(tmp_path, videos, train__max_steps=9, checkpoint__every=3, checkpoint__limit=10)
    train(base | {"output_dir": str(tmp_path / "full")})  # uninterrupted, in this process
    killed_cfg = tmp_path / "killed.yaml"
    killed_cfg.write_text(yaml.safe_dump(base | {"output_dir": str(tmp_path / "killed")}))
    proc = subprocess.Popen(
        [sys.executable, str(runner), "distill", str(killed_cfg)],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    first = tmp_path / "killed" / "checkpoints" / "step-00000003" / "state.json"
    deadline = time.time() + 120
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = sorted(p.name for p in (tmp_path / "killed" / "checkpoints").glob("step-*"))
    assert done and "step-00000009" not in done  # killed mid-run, after at least one checkpoint
    resumed_at = int(done[-1].split("-")[1])
    capsys.readouterr()
    assert cli.main(["distill", str(killed_cfg), "train.resume=latest"]) == 0
    out = capsys.readouterr().out
    assert f"resumed from {tmp_path / 'killed' / 'checkpoints' / done[-1]} at step {resumed_at}" in out
    full, killed = steps_of(tmp_path / "full"), steps_of(tmp_path / "killed")
    assert [r["step"] for r in killed] == list(range(1, 10))  # lines after the checkpoint were rewritten once
    keys = ["loss", "loss_cd", "reward/test-red", "w", "t"]
    assert [[r[k] for k in keys] for r in killed] == [
        [r[k] for k in keys] for r in full
    ]  # before and after the kill
    a = load_file(str(tmp_path / "full" / "checkpoints" / "step-00000009" / "trainable.safetensors"))
    b = load_file(str(tmp_path / "killed" / "checkpoints" / "step-00000009" / "trainable.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow  # subprocesses: ~25-30 s on 2 shared cores
def test_two_processes_through_accelerate_launch(tmp_path, videos):
    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER)
    cfg = tiny(
        tmp_path,
        videos,
        train__max_steps=4,
        checkpoint__every=2,
        checkpoint__limit=5,
        train__placement="released",
        rewards=[
            {"name": "test-red", "weight": 1.0, "frames": 2},
            {"name": "test-motion", "weight": 2.0, "frames": 2},
        ],
    )
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),
        str(runner),
        "distill",
        str(path),
    ]
    out = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "consistency      weight 1 on ranks [0] -> effective 0.5" in out.stdout
    assert "test-motion      weight 2 on ranks [1] -> effective 1" in out.stdout
    assert "global batch 2 (1 x 1 accumulation x 2 process(es))" in out.stdout
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and len(set(summary["rank_weights_sha256"])) == 1
    assert len(summary["rank_weights_sha256"]) == 2
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000002", "step-00000004"]
    state = json.loads((run / "checkpoints" / "step-00000004" / "state.json").read_text())
    assert state["written_by_rank"] == 0 and state["positions"] == [4, 4] and len(state["skipped"]) == 2
    rows = steps_of(run)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]  # one writer: each step logged once
    assert all("loss_cd" in r and "reward/test-motion" in r and "reward/test-red" in r for r in rows)


def test_chain_mode_trains_only_through_the_reward(tmp_path, videos):
    """The DRaFT-K baseline as a trainer mode: no consistency term, the reward moves the LoRA."""
    cfg = tiny(
        tmp_path,
        videos,
        train__mode="chain",
        train__chain_steps=2,
        train__chain_backprop=1,
        train__max_steps=2,
    )
    result = train(cfg)
    rows = steps_of(result.run_dir)
    assert len(rows) == 2 and all("loss_cd" not in r for r in rows)
    assert all(r["loss"] == pytest.approx(-r["reward/test-red"], rel=1e-5) for r in rows)
    with pytest.raises(ConfigError, match="chain_backprop"):
        train(
            tiny(tmp_path / "b", videos, train__mode="chain", train__chain_backprop=3, train__chain_steps=2)
        )


def test_resume_latest_without_a_checkpoint_says_so_and_starts_afresh(tmp_path, videos, capsys):
    result = train(tiny(tmp_path, videos, train__max_steps=1, train__resume="latest"))
    out = capsys.readouterr().out
    root = tmp_path / "run" / "checkpoints"
    assert f"train.resume=latest: no checkpoint in {root} yet; starting a new run" in out
    assert result.step == 1 and [r["step"] for r in steps_of(tmp_path / "run")] == [1]


def test_unreadable_data_fails_in_one_line_before_the_run_folder_exists(tmp_path, videos):
    with pytest.raises(DataError, match="data.path not found: .*missing.csv") as e:
        train(tiny(tmp_path, tmp_path / "missing.csv"))
    assert "\n" not in str(e.value)
    assert not (tmp_path / "run").exists()  # no config.yaml / metrics.jsonl of a run that never started


def test_one_process_trains_again_with_another_precision(tmp_path, videos):
    """accelerate keeps its first precision per process; a second run with another one still works."""
    a = train(tiny(tmp_path, videos, train__max_steps=1))
    b = train(
        tiny(
            tmp_path,
            videos,
            train__max_steps=1,
            train__mixed_precision="bf16",
            output_dir=str(tmp_path / "b"),
        )
    )
    assert (a.step, b.step) == (1, 1) and yaml.safe_load((tmp_path / "b" / "config.yaml").read_text())[
        "train"
    ]["mixed_precision"] == "bf16"
