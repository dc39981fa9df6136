"""Wan through the project's entry points: `pipeline.generate` dispatches on the flow schedule (teacher:
Euler + CFG = WanPipeline; student: the FM consistency sampler = FlowMatchLCMScheduler), `generate` /
`eval` on Wan folders, and bad Wan folders / clip lengths as one line and exit 2."""

from __future__ import annotations

import json
import shutil
import warnings

import pytest
import torch

from t2v_turbo import cli
from t2v_turbo.errors import InputError
from t2v_turbo.models.tiny import tiny_wan_teacher
from t2v_turbo.pipeline import generate, is_student, sampler_name

PROMPT = "a red ball bounces"


@pytest.fixture(scope="module")
def teacher():
    return tiny_wan_teacher(seed=0, frames=5).freeze().eval()


@pytest.fixture(scope="module")
def folder(teacher, tmp_path_factory):
    path = tmp_path_factory.mktemp("wan") / "teacher"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        teacher.save_pretrained(path)
    return path


def test_generate_teacher_equals_wan_pipeline_default_cfg_one_plus_w(teacher):
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    assert not is_student(teacher) and sampler_name(teacher) == "euler-cfg"
    gen = generate(teacher, [PROMPT], num_steps=3, w=4.0, seed=7, decode=False)  # cfg_scale = 1 + w = 5
    assert gen.settings["cfg_scale"] == 5.0 and gen.unet_evals == 6 and gen.settings["sampler"] == "euler-cfg"
    pipe = WanPipeline(tokenizer=teacher.tokenizer, text_encoder=teacher.text_encoder, vae=teacher.vae,
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), transformer=teacher.unet)  # fmt: skip
    ref = pipe(
        prompt=PROMPT, negative_prompt="", height=16, width=16, num_frames=5, num_inference_steps=3,
        guidance_scale=5.0, max_sequence_length=16, generator=torch.Generator().manual_seed(7), output_type="latent",
    ).frames  # fmt: skip
    torch.testing.assert_close(gen.videos, ref, rtol=1e-5, atol=1e-5)
    # the recorded timesteps are diffusers' (t = 1000 s on the shifted grid)
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    sched.set_timesteps(3)
    assert gen.timesteps == pytest.approx(sched.timesteps.tolist(), abs=1e-3)


def test_generate_student_equals_flow_match_lcm_loop(teacher):
    from diffusers import FlowMatchLCMScheduler

    student = teacher.make_student(256, init="normal", seed=3)  # option (a): takes w
    assert is_student(student) and sampler_name(student) == "consistency"
    gen = generate(student, [PROMPT], num_steps=4, w=3.0, seed=5, timestep_rule="diffusers", decode=False)
    # the same loop by hand with diffusers' scheduler: x0 = x - s v, re-noise with the same generator
    g = torch.Generator().manual_seed(5)
    cond = student.encode_prompt([PROMPT])
    w_emb = student.w_embedding(3.0, 1)
    z = torch.randn(student.latent_shape(1), generator=g)
    sched = FlowMatchLCMScheduler(shift=3.0)
    sched.set_timesteps(4)
    for t in sched.timesteps:
        with torch.no_grad():
            v = student.model_output(z, t.expand(1), cond, w_emb)
        z = sched.step(v, t, z, generator=g, return_dict=False)[0]
    torch.testing.assert_close(gen.videos, z, rtol=1e-5, atol=1e-5)
    assert gen.unet_evals == 4 and gen.settings["w"] == 3.0
    plain = teacher.make_student(None, fixed_w=6.0)  # option (b): no CFG, w fixed
    out = generate(plain, [PROMPT], num_steps=2, w=1.0, seed=0, decode=False)
    assert out.settings["w"] == 6.0 and out.settings["sampler"] == "consistency" and out.unet_evals == 2


def test_generate_refuses_clip_lengths_that_are_not_4k_plus_1(teacher):
    with pytest.raises(InputError, match=r"4k \+ 1 frames.*use 5 or 9"):
        generate(teacher, [PROMPT], num_steps=2, num_frames=6)
    assert generate(teacher, [PROMPT], num_steps=1, num_frames=9).videos.shape == (1, 3, 9, 16, 16)


def test_generate_and_eval_commands_on_a_wan_folder(folder, tmp_path, capsys):
    out = tmp_path / "t"
    assert cli.main(["generate", PROMPT, "--model", str(folder), "--steps", "2", "--w", "4", "--out-dir", str(out)]) == 0
    meta = json.loads((out / "generation.json").read_text())
    assert meta["sampler"] == "euler-cfg" and meta["cfg_scale"] == 5.0 and meta["steps"] == 2
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\n")
    assert cli.main(["eval", "--prompt-file", str(prompts), "--model", f"wan={folder}", "--teacher-steps", "2",
                     "--clip", "none", "--judge", "off", "--no-plots", "--timing-repeats", "1",
                     "--out-dir", str(tmp_path / "ev")]) == 0  # fmt: skip
    runs = json.loads((tmp_path / "ev" / "results.json").read_text())["runs"]
    assert {r["sampler"] for r in runs} == {"euler-cfg"} and all(r["cfg_scale"] == 8.5 for r in runs)


def _broken(folder, tmp_path, how: str):
    bad = tmp_path / how
    shutil.copytree(folder, bad)
    if how == "missing-vae":
        shutil.rmtree(bad / "vae")
    elif how == "wrong-class":
        index = json.loads((bad / "model_index.json").read_text())
        index["transformer"] = ["diffusers", "UNet3DConditionModel"]
        (bad / "model_index.json").write_text(json.dumps(index))
    elif how == "shapes":
        cfg = json.loads((bad / "transformer" / "config.json").read_text())
        cfg["ffn_dim"] = 48  # the saved weights have 32
        (bad / "transformer" / "config.json").write_text(json.dumps(cfg))
    return bad


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("missing-vae", r"component 'vae' is missing"),
        ("wrong-class", r"component 'transformer' is diffusers UNet3DConditionModel in model_index.json"),
        ("shapes", r"component 'transformer' (does not match its weights|does not load).*"),
    ],
)
def test_bad_wan_folders_are_one_line_and_exit_2(folder, tmp_path, capsys, how, message):
    bad = _broken(folder, tmp_path, how)
    capsys.readouterr()
    rc = cli.main(["generate", PROMPT, "--model", str(bad), "--out-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert __import__("re").search(message, err[0]), err[0]
    assert not (tmp_path / "out").exists()  # nothing written


def test_demo_compare_view_runs_a_wan_teacher_and_student(teacher, tmp_path):
    from t2v_turbo.demo_app.handlers import DemoHandlers

    student = teacher.make_student(None, fixed_w=4.0)
    h = DemoHandlers({"teacher": teacher, "turbo": student}, out_dir=tmp_path, compare_steps=(3, 2))
    a, b, status = h.compare(PROMPT, 4.0, 0)
    assert (a.sampler, a.steps, a.unet_evals, a.guidance) == ("euler-cfg", 3, 6, 5.0)  # cfg 1 + w
    assert (b.sampler, b.steps, b.unet_evals, b.guidance) == ("consistency", 2, 2, 4.0)
    assert a.path.stat().st_size > 0 and b.path.stat().st_size > 0 and "faster" in status
