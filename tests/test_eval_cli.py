"""`t2v-turbo eval` and `t2v-turbo export-vbench` end to end on tiny models."""

import json

import pytest
import torch

from t2v_turbo.cli import main
from t2v_turbo.evaluation import metrics as M
from t2v_turbo.pipeline import generate, load_backbone
from t2v_turbo.rewards.base import RewardModel, register_reward

PROMPTS = ["a red digit 1 moving left", "a cat/dog"]


class Brightness(RewardModel):
    """A video reward: mean brightness times the prompt length (so prompts matter)."""

    kind, num_frames = "video", 2

    def score(self, video, prompts):
        return video.mean(dim=(1, 2, 3, 4)) * torch.tensor([float(len(p)) for p in prompts])


class ChannelClip(RewardModel):
    """A CLIP-like image model: features = per-channel means; text feature = one-hot by prompt length."""

    kind, num_frames = "image", 5

    def image_features(self, images):
        return torch.nn.functional.normalize(images.mean(dim=(2, 3)) + 1.5, dim=-1)

    def score_images(self, images, prompts):
        txt = torch.eye(3)[[len(p) % 3 for p in prompts]]
        return (self.image_features(images) * txt).sum(-1)


class MeanI3D(torch.nn.Module):
    """A stand-in I3D with the StyleGAN-V call: features = per-channel means and a few pooled moments."""

    def forward(
        self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False
    ):
        assert x.shape[1] == 3 and x.shape[3] == 224 and x.shape[4] == 224 and return_features
        return torch.cat(
            [
                x.mean(dim=(2, 3, 4)),
                (x**2).mean(dim=(2, 3, 4)),
                x[:, :, 1:].sub(x[:, :, :-1]).abs().mean(dim=(2, 3, 4)),
            ],
            1,
        )


register_reward("test-brightness")(lambda **kw: Brightness())
register_reward("test-clip")(lambda **kw: ChannelClip())


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory, tiny_teacher):
    root = tmp_path_factory.mktemp("models")
    tiny_teacher.save_pretrained(root / "teacher")
    tiny_teacher.make_student(256, init="normal").save_pretrained(root / "student")
    return root


def test_eval_end_to_end(model_dirs, tmp_path, capsys):
    from t2v_turbo.evaluation.fvd import frechet_distance_from_features, i3d_features
    from t2v_turbo.video_io import frames_to_tensor, read_video, write_video

    out = tmp_path / "eval"
    i3d = tmp_path / "i3d.pt"
    torch.jit.script(MeanI3D()).save(str(i3d))
    real_dir = tmp_path / "real"
    g = torch.Generator().manual_seed(0)
    for i in range(5):
        write_video(real_dir / f"r{i}.mp4", torch.rand(3, 4, 16, 16, generator=g) * 2 - 1)
    argv = [
        "eval",
        *PROMPTS,
        "--model",
        f"s={model_dirs / 'student'}",
        "--model",
        f"t={model_dirs / 'teacher'}",
        "--steps",
        "1",
        "2",
        "--teacher-steps",
        "2",
        "--seeds",
        "0",
        "3",
        "--reward",
        "test-brightness",
        "--clip",
        "test-clip",
        "--judge",
        "off",
        "--i3d",
        str(i3d),
        "--real",
        str(real_dir),
        "--out-dir",
        str(out),
    ]
    assert main(argv) == 0
    assert "| s | 2 | consistency | w=7.5 | 2 |" in capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())
    md = (out / "results.md").read_text()
    assert (out / "score_vs_steps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| t | 2 | ddim-cfg | cfg=8.5 | 4 |" in md and "text alignment" in md and "reward/test-brightness" in md
    assert res["settings"]["seeds"] == [0, 3] and res["settings"]["resolution"] == [4, 16, 16]
    assert res["machine"]["torch"] == torch.__version__
    assert [(r["model"], r["steps"]) for r in res["runs"]] == [("s", 1), ("s", 2), ("t", 2)]

    clip, bright = ChannelClip(), Brightness()
    models = {"s": load_backbone(model_dirs / "student"), "t": load_backbone(model_dirs / "teacher")}
    for run in res["runs"]:
        # the teacher's default CFG scale is 1 + w (the student's guidance strength)
        expect = (7.5, None) if run["model"] == "s" else (None, 8.5)
        assert (run["w"], run["cfg_scale"]) == expect
        videos = torch.cat([generate(models[run["model"]], PROMPTS, run["steps"], w=7.5, seed=s).videos for s in (0, 3)])
        prompts = PROMPTS * 2
        expected = {
            "temporal_consistency": M.temporal_consistency(videos, clip.image_features),
            "motion_amount": M.motion_amount(videos),
            "centroid_displacement": M.centroid_displacement(videos, 0.1),
            "text_alignment": M.text_alignment(videos, prompts, clip.score_images),
            # video rewards see N strided frames from frame 0 at evaluation: frames 0 and 2 of 4
            "reward/test-brightness": bright(videos[:, :, [0, 2]], prompts),
        }
        assert set(run["per_video"]) == set(expected)
        assert "fvd4_4f_16x16" in md
        for name, values in expected.items():
            assert run["per_video"][name] == pytest.approx(values.tolist(), rel=1e-6, abs=1e-9), name
            assert run["metrics"][name]["mean"] == pytest.approx(float(values.mean()), rel=1e-6, abs=1e-9)
            assert run["metrics"][name]["n"] == 4
        # FVD against the real folder, protocol in the name: 4 videos, 4 frames, 16 x 16
        real = torch.stack([frames_to_tensor(read_video(real_dir / f"r{i}.mp4")[0]) for i in range(5)])
        det = torch.jit.load(str(i3d))
        fvd = frechet_distance_from_features(i3d_features(det, real), i3d_features(det, videos))
        assert run["fvd"]["name"] == "fvd4_4f_16x16" and run["fvd"]["protocol"]["num_real_videos"] == 5
        assert run["fvd"]["value"] == pytest.approx(fvd, rel=1e-6)
        assert run["metrics"]["fvd4_4f_16x16"]["mean"] == run["fvd"]["value"]
        assert run["unet_evals_per_video"] == (run["steps"] if run["model"] == "s" else 2 * run["steps"])
        # speed: the median of 3 interleaved timing rounds, with their range
        lo, hi = run["seconds_per_video_range"]
        assert run["timing_rounds"] == 3 and 0 < lo <= run["seconds_per_video"] <= hi


def test_eval_user_errors(model_dirs, tmp_path, capsys):
    assert main(["eval", "a cat", "--model", str(tmp_path / "nope"), "--out-dir", str(tmp_path)]) == 2
    assert "not found" in capsys.readouterr().err
    argv = [
        "eval",
        "a cat",
        "--model",
        str(model_dirs / "student"),
        "--reward",
        "no-such-reward",
        "--clip",
        "none",
    ]
    assert main(argv + ["--out-dir", str(tmp_path)]) == 2
    assert "valid" in capsys.readouterr().err


def test_export_vbench_naming_and_metadata(model_dirs, tmp_path, capsys):
    from t2v_turbo.video_io import frames_to_tensor, read_video

    out = tmp_path / "vb"
    argv = [
        "export-vbench",
        *PROMPTS,
        "--model",
        str(model_dirs / "student"),
        "--steps",
        "2",
        "--seed",
        "10",
        "--out-dir",
        str(out),
    ]
    assert main(argv) == 0
    names = sorted(p.name for p in (out / "videos").glob("*.mp4"))
    assert names == sorted(
        f"{p}-{i}.mp4" for p in ["a red digit 1 moving left", "a cat\u2215dog"] for i in range(5)
    )
    meta = json.loads((out / "vbench_export.json").read_text())
    assert meta["seeds"] == [10, 11, 12, 13, 14] and meta["num_per_prompt"] == 5 and meta["num_files"] == 10
    assert (meta["steps"], meta["w"], meta["sampler"]) == (2, 7.5, "consistency")
    assert (meta["num_frames"], meta["resolution"], meta["fps"]) == (4, [16, 16], 8)
    assert meta["timesteps"] == [999, 499] and meta["hardware"]["cpu_cores"] >= 1
    assert meta["prompts"] == PROMPTS
    # file {prompt}-{i} is the video generated with seed 10 + i
    frames, fps = read_video(out / "videos" / "a cat\u2215dog-3.mp4")
    assert frames.shape == (4, 16, 16, 3) and fps == pytest.approx(8.0)
    model = load_backbone(model_dirs / "student")
    # random-weight videos are noise, which H.264 (yuv420p) keeps only roughly: the file must be far
    # closer to seed 13's video than to any other seed's
    err = [
        float((frames_to_tensor(frames) - generate(model, PROMPTS, 2, w=7.5, seed=s).videos[1]).abs().mean())
        for s in range(10, 15)
    ]
    assert err[3] < 0.2 and all(err[3] < 0.6 * e for i, e in enumerate(err) if i != 3), err
