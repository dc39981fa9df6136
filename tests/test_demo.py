"""The web demo's Python side (no browser, no Gradio needed except where marked): validation,
generation to upscaled mp4, the compare view, per-model locking, and `t2v-turbo demo` start-up errors."""

import threading
import time

import pytest
import torch

from t2v_turbo.cli import main
from t2v_turbo.demo_app import handlers as handlers_mod
from t2v_turbo.demo_app.handlers import MAX_PROMPT_CHARS, DemoHandlers, display_upscale
from t2v_turbo.errors import CheckpointError, UserError
from t2v_turbo.pipeline import Generation
from t2v_turbo.video_io import read_video

PROMPT = "a red digit 3 moving left"


@pytest.fixture(scope="module")
def tiny_models(tiny_teacher):
    return {"turbo": tiny_teacher.make_student().freeze().eval(), "teacher": tiny_teacher}


@pytest.fixture
def demo(tiny_models, tmp_path):
    # the compare view runs teacher 2 steps vs student 1 step here (50 vs 4 in the app) to stay fast
    return DemoHandlers(tiny_models, out_dir=tmp_path, compare_steps=(2, 1))


def test_display_upscale_is_an_integer_factor_to_about_256():
    assert display_upscale(32, 32) == 8  # the MovingDigits 32x32 frames -> 256x256
    assert display_upscale(16, 16) == 16
    assert display_upscale(24, 40) == 6
    assert display_upscale(512, 512) == 1


@pytest.mark.parametrize(
    "prompt, match",
    [("", "empty"), ("   \n ", "empty"), (None, "empty"), ("x" * (MAX_PROMPT_CHARS + 1), "too long")],
)
def test_bad_prompts_are_user_errors(demo, prompt, match):
    with pytest.raises(UserError, match=match):
        demo.generate(prompt, 4, 7.5, 0, "turbo")
    with pytest.raises(UserError, match=match):
        demo.compare(prompt, 7.5, 0)


@pytest.mark.parametrize(
    "steps, guidance, seed, model, match",
    [
        (0, 7.5, 0, "turbo", "steps"),
        (9, 7.5, 0, "turbo", "steps"),
        (2.5, 7.5, 0, "turbo", "whole number"),
        (4, float("nan"), 0, "turbo", "guidance"),
        (4, 7.5, -1, "turbo", "seed"),
        (4, 7.5, "abc", "turbo", "seed"),
        (4, 7.5, 0, "nope", "unknown model"),
    ],
)
def test_bad_settings_are_user_errors(demo, steps, guidance, seed, model, match):
    with pytest.raises(UserError, match=match):
        demo.generate(PROMPT, steps, guidance, seed, model)


def test_generate_writes_an_upscaled_mp4(demo, tiny_models):
    res, status = demo.generate(PROMPT + "  ", 2, 7.5, 3, "turbo")
    frames, fps = read_video(res.path)
    t, h, w = tiny_models["turbo"].resolution  # (4, 16, 16)
    assert frames.shape == (t, 16 * h, 16 * w, 3)  # nearest-neighbour x16 -> 256x256
    assert fps == pytest.approx(8)
    assert res.path.suffix == ".mp4" and res.path.is_relative_to(demo.out_dir)
    assert (res.steps, res.unet_evals, res.sampler, res.guidance) == (2, 2, "consistency", 7.5)
    assert res.seconds > 0 and "turbo" in status and "seed 3" in status
    # nearest neighbour: each 16x16 block is one colour (up to H.264 error)
    block = frames[0, :16, :16].astype(int)
    assert (block.max(axis=(0, 1)) - block.min(axis=(0, 1))).max() <= 24


def test_generate_is_reproducible_and_the_teacher_gets_cfg_one_plus_w(demo):
    a, _ = demo.generate(PROMPT, 1, 2.0, 5, "teacher")
    b, _ = demo.generate(PROMPT, 1, 2.0, 5, "teacher")
    assert a.path != b.path  # never overwrite a file a user may still be downloading
    assert (read_video(a.path)[0] == read_video(b.path)[0]).all()
    assert (a.sampler, a.guidance, a.unet_evals) == ("ddim-cfg", 3.0, 2)


def test_compare_returns_two_videos_and_two_timings(demo):
    teacher, turbo, status = demo.compare(PROMPT, 7.5, 0)
    assert (teacher.model, teacher.steps, turbo.model, turbo.steps) == ("teacher", 2, "turbo", 1)
    for res in (teacher, turbo):
        frames, _ = read_video(res.path)
        assert frames.shape[1:] == (256, 256, 3)
        assert res.seconds > 0
        assert f"{res.seconds:.2f} s" in status
    assert "faster" in status


def test_compare_needs_both_models(tiny_models, tmp_path):
    demo = DemoHandlers({"turbo": tiny_models["turbo"]}, out_dir=tmp_path)
    assert not demo.can_compare
    with pytest.raises(UserError, match="teacher"):
        demo.compare(PROMPT, 7.5, 0)


def test_models_load_once_from_loaders(tiny_models, tmp_path):
    calls = []

    def loader():
        calls.append(1)
        return tiny_models["turbo"]

    demo = DemoHandlers({"lazy": loader}, out_dir=tmp_path)
    assert demo.model("lazy") is demo.model("lazy") and calls == [1]


def test_one_request_per_model_at_a_time(tiny_models, tmp_path, monkeypatch):
    active: dict = {}
    peak: dict = {}
    guard = threading.Lock()

    def fake_generate(model, prompts, num_steps, w, seed):
        with guard:
            active[id(model)] = active.get(id(model), 0) + 1
            peak[id(model)] = max(peak.get(id(model), 0), active[id(model)])
            peak["all"] = max(peak.get("all", 0), sum(active.values()))
        time.sleep(0.05)
        with guard:
            active[id(model)] -= 1
        video = torch.zeros(1, 3, 2, 4, 4)
        return Generation(video, list(prompts), 0.05, num_steps, settings={"sampler": "consistency", "w": w})

    monkeypatch.setattr(handlers_mod, "generate", fake_generate)
    demo = DemoHandlers(tiny_models, out_dir=tmp_path)
    jobs = [
        threading.Thread(target=demo.generate, args=(PROMPT, 1, 1.0, i, m))
        for i in range(3)
        for m in ("turbo", "teacher")
    ]
    for j in jobs:
        j.start()
    for j in jobs:
        j.join(timeout=30)
    assert peak[id(tiny_models["turbo"])] == 1 and peak[id(tiny_models["teacher"])] == 1
    assert len(list(tmp_path.rglob("*.mp4"))) == 6


def test_demo_command_fails_fast_on_a_missing_model_path(tmp_path, capsys):
    assert main(["demo", "--model-path", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "does not exist" in err and "missing" in err


def test_model_path_checkpoints_load_and_broken_ones_are_one_line_errors(tiny_models, tmp_path):
    from t2v_turbo.demo_app.server import load_models

    tiny_models["turbo"].save_pretrained(tmp_path / "ckpt")
    models = load_models([str(tmp_path / "ckpt")], "cpu", shipped=False)
    assert list(models) == [str(tmp_path / "ckpt")] and models[str(tmp_path / "ckpt")].w_embedding_dim
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="empty: the UNet config is missing") as e:
        load_models([str(tmp_path / "empty")], "cpu", shipped=False)
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="no models"):
        load_models([], "cpu", shipped=False)


def test_page_builds_without_launching(demo):
    pytest.importorskip("gradio", reason="the [demo] extra (gradio) is not installed")
    from t2v_turbo.demo_app.ui import build_ui

    page = build_ui(demo)
    names = {d.api_name for d in page.fns.values()}
    assert {"generate", "compare"} <= names
