"""A tiny `wan-lora` run through the project's trainer and command line: the Euler solver follows the
teacher's flow schedule, reward frames are pixel frames, checkpoint, exact resume, export (the merged
WanPipeline folder + the LoRA in diffusers' format), then `t2v-turbo generate --model RUN/student`."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from t2v_turbo import cli
from t2v_turbo.config import load_config, validate
from t2v_turbo.errors import ConfigError
from t2v_turbo.flow import EulerSolver, FlowSchedule, teacher_solver
from t2v_turbo.losses import reward_terms
from t2v_turbo.rewards.base import REWARDS, CallableReward, RewardModel, RewardTerm, register_reward
from t2v_turbo.schedule import NoiseSchedule
from t2v_turbo.solvers import DDIMSolver


class RedReward(RewardModel):
    """Mean of the red channel over the selected frames (image kind)."""

    kind = "image"

    def __init__(self, num_frames: int = 2):
        super().__init__()
        self.num_frames = num_frames

    def score(self, video, prompts):
        return video[:, 0].flatten(1).mean(1)


if "wan-test-red" not in REWARDS:
    register_reward("wan-test-red")(lambda **kw: RedReward(**kw))


def overrides(tmp_path: Path, out: str, *extra: str) -> list[str]:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red ball\na blue sky\n")
    return [
        "model.teacher=tiny-wan", "model.w_embedding_dim=null", "model.fixed_w=4.0",
        "model.gradient_checkpointing=false", f"output_dir={tmp_path / out}", "data.source=prompts",
        f"data.path={prompts}", "data.num_frames=5", "data.height=16", "data.width=16", "data.teacher_steps=2",
        "rewards=[{name: wan-test-red, weight: 1.0, frames: 2}]", "train.mixed_precision=no",
        "train.max_steps=3", "train.progress=false", "checkpoint.every=2", "lora.rank=4", "lora.dropout=0.0",
        "validation.prompts=[a cat]", "validation.steps=[2]", "distill.num_ddim_timesteps=10", "optim.lr=1e-2", *extra,
    ]  # fmt: skip


def test_solver_follows_the_teacher_schedule():
    s = teacher_solver(FlowSchedule(shift=3.0), 10)
    assert isinstance(s, EulerSolver) and s.num_points == 10
    # the grid: shift(i / N), i = 1..N (closed form)
    u = torch.arange(1, 11, dtype=torch.float64) / 10
    torch.testing.assert_close(s.sigmas.double(), 3 * u / (1 + 2 * u), rtol=0, atol=1e-7)
    assert isinstance(teacher_solver(NoiseSchedule.make(), 50), DDIMSolver)


def test_fixed_w_config_is_consistent():
    base = ["model.teacher=tiny-wan", "data.source=prompts", "data.path=x.txt"]
    validate(load_config("wan-lora", [*base, "model.w_embedding_dim=null", "model.fixed_w=6.0"]))
    with pytest.raises(ConfigError, match="needs model.fixed_w"):
        validate(load_config("wan-lora", [*base, "model.w_embedding_dim=null"]))
    with pytest.raises(ConfigError, match="needs model.w_embedding_dim: null"):
        validate(load_config("wan-lora", [*base, "model.fixed_w=6.0"]))
    with pytest.raises(ConfigError, match="fixed_w must be >= 0"):
        validate(load_config("wan-lora", [*base, "model.w_embedding_dim=null", "model.fixed_w=-1"]))


def test_fixed_w_needs_a_backbone_with_plain_students_and_tiny_wan_needs_4k_plus_1(tmp_path):
    from t2v_turbo.training.roles import build_student, load_teacher

    cfg = load_config("moving-digits", ["model.teacher=tiny", "model.w_embedding_dim=null", "model.fixed_w=3.0"])
    with pytest.raises(ConfigError, match="no plain fixed-w student"):
        build_student(cfg, load_teacher(cfg))
    cfg = load_config("wan-lora", ["model.teacher=tiny-wan", "data.num_frames=6", "data.height=16", "data.width=16"])
    with pytest.raises(ConfigError, match=r"tiny-wan: Wan clips have 4k \+ 1 frames.*use 5 or 9"):
        load_teacher(cfg)
    cfg = load_config("wan-lora", ["model.teacher=tiny-wan", "data.num_frames=9", "data.height=16", "data.width=32"])
    t = load_teacher(cfg)
    assert t.family == "wan" and t.resolution == (9, 16, 32) and t.latent_shape(1) == (1, 16, 3, 2, 4)


def test_reward_frames_are_pixel_frames():
    lat = torch.randn(1, 4, 3, 2, 2)  # 3 latent frames -> 9 pixel frames on a 4x causal VAE
    seen = []

    def decode(z, frames):
        seen.append(list(frames))
        return torch.zeros(1, 3, len(frames), 2, 2)

    r = CallableReward(lambda v, p: v.mean(dim=(1, 2, 3, 4)), kind="image", num_frames=20)
    reward_terms(lat, ["a"], [RewardTerm("r", r, 1.0)], decode, num_video_frames=lambda n: 1 + 4 * (n - 1))
    reward_terms(lat, ["a"], [RewardTerm("r", r, 1.0)], decode)  # per-frame VAE: latent = pixel frames
    assert seen == [list(range(9)), list(range(3))]


def test_wan_lora_run_end_to_end_resume_export_generate(tmp_path, capsys):
    from diffusers import WanPipeline

    from t2v_turbo.models.registry import load_backbone
    from t2v_turbo.models.tiny import tiny_wan_teacher

    assert cli.main(["distill", "wan-lora", *overrides(tmp_path, "run")]) == 0
    run = tmp_path / "run"
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"skipped_step"' in x]
    assert [r["step"] for r in rows] == [1, 2, 3]
    # fixed w: every sampled w is 4.0; the loss is L_CD - R over pixel frames of the 5-frame clip
    assert all(r["w"] == 4.0 and r["loss_cd"] > 0 for r in rows)
    # the trainer's solver is the teacher's Euler grid: t = 1000 shift(i / 10) (DDIM's would be 99, 199, ...)
    grid = EulerSolver(FlowSchedule(shift=3.0), 10).timesteps.tolist()
    assert all(min(abs(r["t"] - x) for x in grid) < 1e-3 for r in rows)
    assert all(r["loss"] == pytest.approx(r["loss_cd"] - r["reward/wan-test-red"], abs=1e-6) for r in rows)
    assert (run / "validation" / "step-00000003" / "2-step" / "a cat-0.mp4").stat().st_size > 0
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000002", "step-00000003"]

    # resume from step 2 gives the uninterrupted run's step-3 weights bit for bit
    shutil.copytree(run / "checkpoints", tmp_path / "run2" / "checkpoints")
    shutil.rmtree(tmp_path / "run2" / "checkpoints" / "step-00000003")
    assert cli.main(["distill", "wan-lora", *overrides(tmp_path, "run2", "train.resume=latest",
                                                        "checkpoint.export=false", "validation.prompts=[]")]) == 0  # fmt: skip
    a = load_file(str(run / "checkpoints" / "step-00000003" / "trainable.safetensors"))
    b = load_file(str(tmp_path / "run2" / "checkpoints" / "step-00000003" / "trainable.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    # export: the merged student folder and the LoRA in diffusers' format give the same transformer
    student = load_backbone(run / "student")
    assert student.family == "wan" and student.fixed_w == 4.0 and student.w_embedding_dim is None
    teacher = tiny_wan_teacher(frames=5)
    z = torch.randn(student.latent_shape(1), generator=torch.Generator().manual_seed(1))
    cond = student.encode_prompt(["a red ball"])
    with torch.no_grad():
        base = teacher.model_output(z, torch.tensor([640.0]), cond)  # before the LoRA goes into its transformer
    pipe = WanPipeline(tokenizer=teacher.tokenizer, text_encoder=teacher.text_encoder, vae=teacher.vae,
                       scheduler=teacher.diffusers_scheduler(), transformer=teacher.unet)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe.load_lora_weights(run / "lora_diffusers", weight_name="pytorch_lora_weights.safetensors")
    with torch.no_grad():
        ours = student.model_output(z, torch.tensor([640.0]), cond)
        theirs = pipe.transformer(z, torch.tensor([640.0]), cond, return_dict=False)[0]
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)
    assert (ours - base).abs().max() > 1e-3  # three steps of training moved it

    # generate from the exported student: 4 FM consistency steps, w fixed at 4.0
    capsys.readouterr()
    out = tmp_path / "videos"
    assert cli.main(["generate", "a cat", "--model", str(run / "student"), "--out-dir", str(out)]) == 0
    meta = json.loads((out / "generation.json").read_text())
    assert meta["sampler"] == "consistency" and meta["steps"] == 4 and meta["w"] == 4.0 and meta["fixed_w"] == 4.0
    assert (out / "a cat-0.mp4").stat().st_size > 0


def test_wan_option_a_run_exports_the_merged_student_with_its_guidance_embedding(tmp_path):
    from t2v_turbo.models.registry import load_backbone
    from t2v_turbo.pipeline import generate

    extra = ["model.w_embedding_dim=32", "model.fixed_w=null", "train.max_steps=1", "checkpoint.every=0",
             "validation.prompts=[]", "rewards=[]"]  # fmt: skip
    assert cli.main(["distill", "wan-lora", *overrides(tmp_path, "run", *extra)]) == 0
    run = tmp_path / "run"
    assert not (run / "lora_diffusers").exists()  # a guidance embedding is no LoRA: the merged folder is the export
    student = load_backbone(run / "student")
    assert student.w_embedding_dim == 32 and (run / "student" / "guidance_proj.safetensors").exists()
    trained = load_file(str(run / "checkpoints" / "step-00000001" / "trainable.safetensors"))
    proj = trained["condition_embedder.time_embedder.guidance_proj.weight"]
    torch.testing.assert_close(student.unet.condition_embedder.time_embedder.guidance_proj.weight, proj)
    a = generate(student, ["a cat"], 2, w=2.0, decode=False).videos
    b = generate(student, ["a cat"], 2, w=6.0, decode=False).videos
    assert (a - b).abs().max() > 0  # the trained embedding makes w matter
