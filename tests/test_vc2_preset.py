"""The paper's VideoCrafter2 recipe end to end on a synthetic `model.ckpt` in the official layout."""

import json

import pytest
import torch

from t2v_turbo.cli import main
from t2v_turbo.models.videocrafter2 import VC2Config, VideoCrafter2
from t2v_turbo.video_io import write_video


@pytest.fixture()
def synthetic_release(tmp_path):
    torch.manual_seed(0)
    cfg = VC2Config.tiny()
    teacher = VideoCrafter2(cfg)
    ckpt_dir = tmp_path / "VideoCrafter2"
    ckpt_dir.mkdir()
    # a Lightning checkpoint: {"state_dict": {model.diffusion_model.*, first_stage_model.*, cond_stage_model.*, ...}}
    torch.save({"state_dict": teacher.official_state_dict(), "epoch": 0}, ckpt_dir / "model.ckpt")
    (ckpt_dir / "config.json").write_text(json.dumps(cfg.to_dict()))
    clips = tmp_path / "clips"
    g = torch.Generator().manual_seed(0)
    for i in range(3):
        write_video(clips / f"c{i}.mp4", torch.rand(3, 8, 16, 24, generator=g) * 2 - 1, fps=16)
        (clips / f"c{i}.txt").write_text(f"a synthetic clip number {i}")
    return teacher, ckpt_dir / "model.ckpt", clips


def test_vc2_lora_preset_distills_and_generates(tmp_path, synthetic_release, capsys):
    teacher, ckpt, clips = synthetic_release
    t, h, w = teacher.resolution
    run = tmp_path / "run"
    rc = main(
        [
            "distill",
            "vc2-lora",
            f"model.teacher={ckpt}",
            "model.gradient_checkpointing=true",
            "data.source=videos",
            f"data.path={clips}",
            f"data.num_frames={t}",
            f"data.height={h}",
            f"data.width={w}",
            "data.num_workers=0",
            "rewards=[]",
            "lora.rank=4",
            "train.max_steps=2",
            "train.mixed_precision=no",
            "train.progress=false",
            "checkpoint.every=1",
            "validation.every=0",
            f"output_dir={run}",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    student_dir = next(run.rglob("t2v_turbo.json")).parent
    meta = json.loads((student_dir / "t2v_turbo.json").read_text())
    assert meta["family"] == "videocrafter2" and meta["w_embedding_dim"] == 256
    student = VideoCrafter2.from_pretrained(student_dir)
    # the merged export differs from the teacher only where LoRA trained (and in the new projection)
    sd_t, sd_s = teacher.official_state_dict(), student.official_state_dict()
    assert set(sd_s) - set(sd_t) == {"model.diffusion_model.time_cond_proj.weight"}
    assert all(torch.equal(sd_t[k], sd_s[k]) for k in sd_t if not k.startswith("model.diffusion_model."))
    rc = main(
        ["generate", "a cat", "--model", str(student_dir), "--out-dir", str(tmp_path / "out"), "--steps", "4"]
    )
    assert rc == 0 and (tmp_path / "out" / "a cat-0.mp4").exists()


def test_vc2_lora_preset_bad_teacher_path_is_one_line(tmp_path, capsys):
    rc = main(
        [
            "distill",
            "vc2-lora",
            f"model.teacher={tmp_path / 'missing.ckpt'}",
            "train.max_steps=1",
            f"output_dir={tmp_path / 'r'}",
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.ckpt" in err[0]
