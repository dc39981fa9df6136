"""video_io.decode_video: the one PyAV decode path (reasons, one-line errors, scaling while decoding)."""

import pickle
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from t2v_turbo.data.videos import decode_clip, load_clip, resize_clip
from t2v_turbo.errors import DataError, T2VTurboError
from t2v_turbo.video_io import ClipTooShort, VideoDecodeError, decode_video, read_video, write_video


def ramp_clip(path, frames: int, h: int, w: int, fps: int = 8, crf: int = 18) -> None:
    """A smooth color gradient whose blue channel steps 16 levels per frame (H.264, ultrafast)."""
    yy, xx = np.mgrid[0:h, 0:w]
    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=Fraction(fps))
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"preset": "ultrafast", "crf": str(crf)}
        for t in range(frames):
            img = np.stack([xx * 255 // w, yy * 255 // h, np.full_like(xx, 16 * t + 8)], -1).astype(np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def test_decode_errors_have_a_reason_and_one_line(tmp_path):
    cases = {
        "missing.mp4": None,
        "empty.mp4": b"",
        "random.mp4": np.random.default_rng(0).bytes(4096),
        "text.mp4": b"line one\nline two\n" * 30,
    }
    for name, data in cases.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
    (tmp_path / "folder.mp4").mkdir()
    (tmp_path / "loop.mp4").symlink_to(tmp_path / "loop.mp4")
    (tmp_path / "dangling.mp4").symlink_to(tmp_path / "nowhere.mp4")
    expected = {
        "missing.mp4": "missing file",
        "empty.mp4": "empty file",
        "random.mp4": "undecodable",
        "text.mp4": "undecodable",
        "folder.mp4": "not a file",
        "loop.mp4": "symlink loop",
        "dangling.mp4": "missing file",
    }
    got = {}
    for name in expected:
        with pytest.raises(VideoDecodeError) as info:
            decode_video(tmp_path / name)
        e = info.value
        assert "\n" not in str(e) and str(e).startswith(str(tmp_path / name))
        got[name] = e.reason
    assert got == expected
    with pytest.raises(VideoDecodeError, match="no decodable frames|cannot decode"):
        decode_video(b"\x00" * 100)
    # user-fixable data problems: the commands print them as one line (exit 2)
    assert issubclass(VideoDecodeError, DataError) and issubclass(VideoDecodeError, T2VTurboError)
    # the reason survives pickling (DataLoader worker processes)
    e = pickle.loads(pickle.dumps(VideoDecodeError("x.mp4: too big", "too large")))
    assert (str(e), e.reason) == ("x.mp4: too big", "too large")
    short = pickle.loads(pickle.dumps(ClipTooShort("x.mp4: 2 frames")))
    assert type(short) is ClipTooShort and short.reason == "too short"


def test_read_video_is_decode_video_at_full_size(tmp_path):
    video = torch.linspace(-1, 1, 3 * 5 * 16 * 24).view(3, 5, 16, 24)
    p = write_video(tmp_path / "v.mp4", video, fps=8)
    frames, fps = read_video(p)
    same, fps2 = decode_video(p)
    assert frames.shape == (5, 16, 24, 3) and fps == fps2 == pytest.approx(8)
    assert np.array_equal(frames, same)
    assert read_video(p, max_frames=2)[0].shape == (2, 16, 24, 3)
    # picked frames, in the picked order (repeats allowed)
    picked, _ = decode_video(p, pick=lambda total, src_fps: [4, 0, 0])
    assert np.array_equal(picked, frames[[4, 0, 0]])
    # a pure upscale is left to the caller; a shrink happens in the decoder
    assert decode_video(p, size=(32, 48))[0].shape == (5, 16, 24, 3)
    assert decode_video(p, size=(8, 12))[0].shape == (5, 8, 12, 3)
    assert decode_video(p, size=lambda h, w: (h // 2, w // 4))[0].shape == (5, 8, 6, 3)


def test_scaling_while_decoding_matches_the_torch_resize(tmp_path):
    """The decoder's area filter gives what decoding at full size + antialiased bilinear gave."""
    ramp_clip(tmp_path / "r.mp4", frames=6, h=240, w=320, fps=8)
    for mode in ("crop", "stretch"):
        rng = np.random.default_rng(0)
        new = load_clip(tmp_path / "r.mp4", "x", 4, 60, 60, 8, mode, rng)["video"]
        full = decode_clip(tmp_path / "r.mp4", 4, 8, np.random.default_rng(0))  # no size: full 240x320
        assert full.shape == (4, 240, 320, 3)
        old = resize_clip(full, 60, 60, mode)
        assert new.shape == old.shape == (3, 4, 60, 60)
        diff = (new - old) * 127.5  # in uint8 levels; measured: mean |diff| 0.96 (crop) / 1.11 (stretch),
        # max 4.2 / 4.8, bias -0.22 / -0.29 (rounding in the two conversions, no shift or blur)
        assert diff.abs().mean().item() < 1.5 and diff.abs().max().item() < 8, (mode, diff.abs().mean())
        assert abs(diff.mean().item()) < 0.5


def test_max_pixels_refuses_before_decoding(tmp_path):
    ramp_clip(tmp_path / "big.mp4", frames=3, h=240, w=320)
    with pytest.raises(VideoDecodeError) as info:
        decode_video(tmp_path / "big.mp4", max_pixels=320 * 240 - 1)
    assert info.value.reason == "too large" and "320x240" in str(info.value)
    assert decode_video(tmp_path / "big.mp4", max_pixels=320 * 240)[0].shape == (3, 240, 320, 3)
