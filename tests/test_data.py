"""Data sources: decoding, fps sampling, resizing, broken files skipped and counted, resumable streams."""

import csv
import io
import tarfile

import numpy as np
import pytest
import torch

from t2v_turbo.config import load_config
from t2v_turbo.data import build_dataset
from t2v_turbo.data.loader import KeyStream, Loader, SkipCounter, Skipped
from t2v_turbo.data.prompts import PromptList, read_prompt_file
from t2v_turbo.data.videos import (
    ClipTooShort,
    VideoClips,
    decode_clip,
    list_csv,
    list_videos,
    resize_clip,
    sample_indices,
)
from t2v_turbo.errors import ConfigError, DataError, UserError
from t2v_turbo.video_io import write_video


def gray_video(frames: int, h: int = 24, w: int = 32, step: int = 12) -> torch.Tensor:
    """(3, T, H, W) in [-1, 1]; frame k is uniform gray level 16 + step * k (uint8 scale)."""
    levels = torch.tensor([16 + step * k for k in range(frames)], dtype=torch.float32)
    return (levels / 127.5 - 1).view(1, frames, 1, 1).expand(3, frames, h, w).clone()


BROKEN = {  # file stem -> expected skip reason
    "a_zero": "empty file",
    "b_truncated": "undecodable",
    "c_random": "undecodable",
    "d_text": "undecodable",
    "e_short": "too short",
    "f_nocaption": "empty caption",
    "g_blankcaption": "empty caption",
}


@pytest.fixture(scope="module")
def broken_folder(tmp_path_factory):
    """3 good clips (z_good*) + 7 broken ones, captions in .txt sidecars."""
    root = tmp_path_factory.mktemp("videos")
    for i in range(3):
        write_video(root / f"z_good{i}.mp4", gray_video(12), fps=8)
        (root / f"z_good{i}.txt").write_text(f"gray clip {i}\n")
    (root / "a_zero.mp4").write_bytes(b"")
    good = (root / "z_good0.mp4").read_bytes()
    (root / "b_truncated.mp4").write_bytes(good[: len(good) // 3])
    (root / "c_random.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    (root / "d_text.mp4").write_text("this is not a video\n" * 20)
    write_video(root / "e_short.mp4", gray_video(2), fps=8)
    write_video(root / "f_nocaption.mp4", gray_video(12), fps=8)  # no .txt at all
    write_video(root / "g_blankcaption.mp4", gray_video(12), fps=8)
    (root / "g_blankcaption.txt").write_text("   \n")
    for stem in BROKEN:
        if stem not in ("f_nocaption", "g_blankcaption"):
            (root / f"{stem}.txt").write_text("a caption\n")
    return root


def test_sample_indices_follow_the_target_fps():
    rng = np.random.default_rng(0)
    idx = sample_indices(total=40, src_fps=24.0, num_frames=4, fps=8.0, rng=rng)
    assert np.diff(idx).tolist() == [3, 3, 3] and 0 <= idx[0] and idx[-1] < 40
    # a source slower than the target repeats frames instead of failing
    slow = sample_indices(10, 4.0, 4, 8.0, np.random.default_rng(0))
    assert set(np.diff(slow).tolist()) <= {0, 1} and slow[-1] - slow[0] in (1, 2)
    with pytest.raises(ClipTooShort):
        sample_indices(total=9, src_fps=24.0, num_frames=4, fps=8.0, rng=rng)  # needs 10 frames


def test_decode_clip_samples_every_other_frame_at_half_fps(tmp_path):
    write_video(tmp_path / "ramp.mp4", gray_video(16, step=12), fps=16)
    frames = decode_clip(tmp_path / "ramp.mp4", num_frames=4, fps=8, rng=np.random.default_rng(3))
    assert frames.shape == (4, 24, 32, 3)
    levels = frames.reshape(4, -1).mean(axis=1)
    # source frames two apart differ by 2 x 12 gray levels (lossy codec: a few levels of slack)
    assert np.allclose(np.diff(levels), 24, atol=3)


def test_resize_crop_preserves_aspect_and_stretch_does_not():
    frames = np.zeros((2, 24, 32, 3), dtype=np.uint8)
    frames[:, :, :4] = 255  # a white band in the 4 leftmost columns
    crop = resize_clip(frames, 16, 16, "crop")
    stretch = resize_clip(frames, 16, 16, "stretch")
    assert crop.shape == stretch.shape == (3, 2, 16, 16)
    # crop: 24x32 -> 16x22, 3 columns cut per side: the band (2.7 px after scaling) is gone
    assert crop[:, :, :, 0].max().item() < -0.99
    # stretch: 32 -> 16 columns, the band becomes the 2 leftmost columns
    assert stretch[:, :, :, 0].min().item() > 0.99


def test_broken_files_are_skipped_and_counted(broken_folder):
    rows = list_videos(broken_folder)
    assert len(rows) == 10
    ds = VideoClips(rows, num_frames=4, height=16, width=16, fps=8)
    messages = []
    loader = Loader(
        ds, batch_size=1, shuffle=False, skips=SkipCounter(max_warnings=3, printer=messages.append)
    )
    batches = [next(loader) for _ in range(3)]  # sorted order: all 7 broken files come before the 3 good ones
    assert [b["prompts"] for b in batches] == [["gray clip 0"], ["gray clip 1"], ["gray clip 2"]]
    assert batches[0]["video"].shape == (1, 3, 4, 16, 16)
    expected = {}
    for reason in BROKEN.values():
        expected[reason] = expected.get(reason, 0) + 1
    assert dict(loader.skips.counts) == expected
    assert loader.skips.total == 7 and loader.position == 10
    assert len(messages) == 4 and "further skipped files" in messages[-1]  # 3 warnings, then one notice
    assert messages[0] == f"warning: skipped {broken_folder / 'a_zero.mp4'}: empty file"
    assert loader.skips.summary() == {"empty caption": 2, "empty file": 1, "too short": 1, "undecodable": 3}
    assert loader.skips.describe() == "skipped 7 file(s): 2 empty caption, 1 empty file, 1 too short, 3 undecodable"


def test_csv_with_missing_files_and_webvid_columns(broken_folder, tmp_path):
    webvid = tmp_path / "webvid.csv"
    (tmp_path / "videos" / "000001_000050").mkdir(parents=True)
    (tmp_path / "videos" / "000001_000050" / "1066.mp4").write_bytes(
        (broken_folder / "z_good0.mp4").read_bytes()
    )
    with webvid.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["videoid", "contentUrl", "duration", "page_dir", "name"])
        w.writerow(["1066", "https://x/1066.mp4?a=1", "PT00H00M10S", "000001_000050", "a gray clip"])
        w.writerow(["1067", "https://x/1067.mp4", "PT00H00M10S", "000001_000050", "gone"])
    rows = list_csv(webvid, root=tmp_path / "videos")
    assert rows[0] == (tmp_path / "videos" / "000001_000050" / "1066.mp4", "a gray clip")
    loader = Loader(VideoClips(rows, 4, 16, 16, 8), batch_size=2, shuffle=False)
    batch = next(loader)
    assert batch["prompts"] == ["a gray clip", "a gray clip"]  # the missing row is skipped, the stream wraps
    assert loader.skips.counts["missing file"] >= 1
    plain = tmp_path / "plain.csv"
    plain.write_text("path,caption\nz_good1.mp4,hello\n")
    assert list_csv(plain, root=broken_folder) == [(broken_folder / "z_good1.mp4", "hello")]
    bad = tmp_path / "bad.csv"
    bad.write_text("foo,bar\n1,2\n")
    with pytest.raises(DataError, match="cannot find the video and caption columns"):
        list_csv(bad)


def test_all_broken_stops_with_a_clear_error(broken_folder):
    rows = [r for r in list_videos(broken_folder) if not r[0].name.startswith("z_")]
    loader = Loader(VideoClips(rows, 4, 16, 16, 8), batch_size=1, max_consecutive_skips=20)
    with pytest.raises(DataError, match="no usable training items: 20 in a row"):
        next(loader)


def test_key_stream_splits_ranks_and_resumes_exactly():
    a = KeyStream(10, seed=1, rank=0, world=2)
    b = KeyStream(10, seed=1, rank=1, world=2)
    ka = [a.key(p) for p in range(5)]
    kb = [b.key(p) for p in range(5)]
    assert sorted(i for _, i in ka + kb) == list(range(10))  # one epoch, disjoint, complete
    assert a.key(5)[0] == 1  # then the next epoch
    # a loader resumed at position p yields exactly what the original yields from p on
    ds = PromptList([f"p{i}" for i in range(7)])
    first = Loader(ds, batch_size=3, seed=5)
    out = [next(first)["prompts"] for _ in range(4)]
    resumed = Loader(ds, batch_size=3, seed=5, start=6)
    assert [next(resumed)["prompts"] for _ in range(2)] == out[2:]


def test_prompt_file(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("# heldout\na cat\n\n  a dog  \n")
    assert read_prompt_file(f) == ["a cat", "a dog"]
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(UserError, match="holds no prompts"):
        read_prompt_file(tmp_path / "empty.txt")
    with pytest.raises(UserError, match="prompt file not found"):
        read_prompt_file(tmp_path / "nope.txt")


def test_moving_digits_source_renders_the_world():
    cfg = load_config(None, {"data.source": "moving-digits"})
    ds = build_dataset(cfg, (8, 32, 32, 8))
    item = ds[(0, 3)]
    assert item["video"].shape == (3, 8, 32, 32) and item["prompt"].startswith("a ")
    assert torch.equal(item["video"], ds[(0, 3)]["video"])  # deterministic
    with pytest.raises(ConfigError, match="renders 8 frames of 32x32"):
        build_dataset(cfg, (16, 32, 32, 8))


def _tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_webdataset_shards_split_by_rank_skip_and_resume(broken_folder, tmp_path):
    pytest.importorskip("webdataset")
    good = (broken_folder / "z_good0.mp4").read_bytes()
    for s in range(2):
        with tarfile.open(tmp_path / f"shard-{s}.tar", "w") as tar:
            for k in range(3):
                _tar_member(tar, f"s{s}k{k}.mp4", good)
                _tar_member(tar, f"s{s}k{k}.txt", f"shard {s} clip {k}".encode())
            _tar_member(tar, f"s{s}bad.mp4", b"garbage" * 50)
            _tar_member(tar, f"s{s}bad.txt", b"broken")
            _tar_member(tar, f"s{s}nocap.mp4", good)
            _tar_member(tar, f"s{s}nocap.txt", b"")
    cfg = load_config(None, {"data.source": "webdataset", "data.path": str(tmp_path / "shard-{0..1}.tar")})
    streams = [build_dataset(cfg, (4, 16, 16, 8), rank=r, world=2) for r in range(2)]
    prompts = []
    for r, ds in enumerate(streams):
        loader = Loader(ds, batch_size=3)
        batch = next(loader)
        prompts.append(batch["prompts"])
        assert batch["video"].shape == (3, 3, 4, 16, 16)
        assert all(p.startswith(f"shard {r} ") for p in batch["prompts"])  # rank r reads shard r only
        nxt = next(loader)  # crosses the broken samples
        assert dict(loader.skips.counts) == {"undecodable": 1, "empty caption": 1}
        resumed = Loader(build_dataset(cfg, (4, 16, 16, 8), rank=r, world=2), batch_size=3, start=3)
        again = next(resumed)
        assert again["prompts"] == nxt["prompts"] and torch.equal(again["video"], nxt["video"])
    assert prompts[0] != prompts[1]
    with pytest.raises(DataError, match="every process needs at least one"):
        build_dataset(cfg, (4, 16, 16, 8), rank=0, world=3)


def test_skipped_marker_is_plain_data():
    s = Skipped("too short", "x.mp4", "2 frames")
    assert (s.reason, s.where, s.detail) == ("too short", "x.mp4", "2 frames")
