import json

import av
import numpy as np
import pytest
import torch

from t2v_turbo.cli import main
from t2v_turbo.pipeline import generate, load_backbone, safe_filename
from t2v_turbo.video_io import VideoDecodeError, read_video, to_uint8_frames, write_video


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory, tiny_teacher):
    d = tmp_path_factory.mktemp("student")
    tiny_teacher.make_student(256, init="normal").save_pretrained(d)
    tiny_teacher.save_pretrained(tmp_path_factory.mktemp("teacher") / "t")
    return d


def test_mp4_is_h264_yuv420p_and_round_trips(tmp_path):
    video = torch.linspace(-1, 1, 3 * 4 * 8 * 8).view(3, 4, 8, 8)
    p = write_video(tmp_path / "v.mp4", video, fps=8, upscale=4)
    with av.open(str(p)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264" and s.codec_context.pix_fmt == "yuv420p"
        assert (s.codec_context.width, s.codec_context.height) == (32, 32)
    frames, fps = read_video(p)
    assert frames.shape == (4, 32, 32, 3) and fps == pytest.approx(8)
    ref = to_uint8_frames(video, 4).astype(np.float32)
    assert np.abs(frames.astype(np.float32) - ref).mean() < 6  # lossy but close
    g = write_video(tmp_path / "v.gif", video, fps=8)
    assert read_video(g)[0].shape[0] == 4


def test_odd_sizes_padded_and_bad_files(tmp_path):
    p = write_video(tmp_path / "odd.mp4", torch.zeros(3, 2, 7, 5))
    assert read_video(p)[0].shape[1:3] == (8, 6)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(VideoDecodeError, match="bad.mp4"):
        read_video(bad)
    with pytest.raises(VideoDecodeError, match="not found"):
        read_video(tmp_path / "missing.mp4")
    with pytest.raises(ValueError, match="valid"):
        write_video(tmp_path / "x.avi", torch.zeros(3, 2, 4, 4))


def test_generate_reproducible_and_counts(student_dir):
    model = load_backbone(student_dir)
    a = generate(model, ["a red digit 1 moving up", "b"], num_steps=4, seed=3)
    b = generate(model, ["a red digit 1 moving up", "b"], num_steps=4, seed=3)
    c = generate(model, ["a red digit 1 moving up", "b"], num_steps=4, seed=4)
    assert torch.equal(a.videos, b.videos) and not torch.equal(a.videos, c.videos)
    assert a.unet_evals == 4 and a.timesteps == [999, 759, 519, 279]
    assert a.videos.shape == (2, 3, 4, 16, 16) and a.videos.abs().max() <= 1


def test_teacher_generate_uses_ddim_cfg(tiny_teacher):
    out = generate(tiny_teacher, ["x"], num_steps=5, cfg_scale=7.5, seed=0)
    assert out.unet_evals == 10 and out.settings["sampler"] == "ddim-cfg"


def test_cli_generate_writes_vbench_names(tmp_path, student_dir, capsys):
    rc = main(
        [
            "generate",
            "a red digit 7 moving left",
            "--model",
            str(student_dir),
            "--out-dir",
            str(tmp_path),
            "--num-per-prompt",
            "2",
            "--steps",
            "2",
            "--upscale",
            "2",
        ]
    )
    assert rc == 0
    files = sorted(p.name for p in tmp_path.glob("*.mp4"))
    assert files == ["a red digit 7 moving left-0.mp4", "a red digit 7 moving left-1.mp4"]
    assert read_video(tmp_path / files[0])[0].shape == (4, 32, 32, 3)
    meta = json.loads((tmp_path / "generation.json").read_text())
    assert meta["timesteps"] == [999, 499] and meta["num_per_prompt"] == 2


def test_cli_errors_exit_2(tmp_path, capsys):
    assert main(["generate", "x", "--model", str(tmp_path / "nope")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["generate", "  ", "--model", "turbo"]) == 2
    assert main(["frobnicate"]) == 2
    assert main(["--help"]) == 0
    assert safe_filename("a/b\\c") == "a b c"


def test_cli_generate_videocrafter2_folder(tmp_path):
    from t2v_turbo.models.videocrafter2 import VC2Config, VideoCrafter2

    teacher = VideoCrafter2(VC2Config.tiny())
    student = teacher.make_student(256, init="normal")
    student.save_pretrained(tmp_path / "vc2turbo")
    rc = main(
        [
            "generate",
            "a cat",
            "--model",
            str(tmp_path / "vc2turbo"),
            "--out-dir",
            str(tmp_path / "o"),
            "--steps",
            "4",
        ]
    )
    assert rc == 0
    frames, fps = read_video(tmp_path / "o" / "a cat-0.mp4")
    assert frames.shape[0] == VC2Config.tiny().resolution[0] and fps == pytest.approx(16)
