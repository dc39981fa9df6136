"""Broken data never stops a run: every broken item is skipped with a reason and counted once per file
(issue 15: non-UTF-8 CSV captions, folders / symlink loops / unreadable files named like videos,
huge clips decoded at full size, counts per draw instead of per file)."""

import io
import json
import os
import pathlib
import subprocess
import sys
import textwrap
from fractions import Fraction

import av
import numpy as np
import pytest

from t2v_turbo.config import load_config
from t2v_turbo.data import build_dataset
from t2v_turbo.data.loader import KeyStream, Loader, SkipCounter, Skipped, printable
from t2v_turbo.data.videos import MAX_VIDEO_PIXELS, VideoClips, list_csv, list_folder, list_videos
from t2v_turbo.errors import DataError
from t2v_turbo.video_io import write_video
from test_data import gray_video
from test_video_io import ramp_clip


@pytest.fixture(scope="module")
def good_clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "good.mp4"
    write_video(path, gray_video(12), fps=8)
    return path.read_bytes()


def drain(loader: Loader, draws: int) -> list[str]:
    """Consume at least `draws` keys (whole batches); the prompts of the good items."""
    prompts = []
    while loader.position < draws:
        prompts += next(loader)["prompts"]
    return prompts


# ------------------------------------------------------------------------------------------ CSV
def test_csv_rows_with_bad_utf8_captions_are_skipped_and_counted(tmp_path, good_clip):
    for i in range(3):
        (tmp_path / f"v{i}.mp4").write_bytes(good_clip)
    weird = os.fsdecode(b"caf\xe9.mp4")  # a Latin-1 file name: a POSIX path need not be UTF-8
    (tmp_path / weird).write_bytes(good_clip)
    lines = [
        b"path,caption,note\n",
        b"v0.mp4,a gray clip,ok\n",
        b"v1.mp4,caf\xe9 latte,latin-1 caption\n",  # invalid UTF-8 -> skipped
        b'v2.mp4,"two\nlines",ok\n',  # a quoted newline stays one row
        b"v0.mp4,\xff\xfe broken,\n",  # invalid UTF-8 -> skipped
        b"v1.mp4,half \xc3(,\n",  # a broken 2-byte sequence -> skipped
        b"caf\xe9.mp4,latin-1 file name,\xe9 note\n",  # bad bytes elsewhere in the row are fine
        b"gone.mp4,missing video,\n",
    ]
    table = tmp_path / "table.csv"
    table.write_bytes(b"".join(lines))
    rows = list_csv(table)
    assert len(rows) == 7
    bad = [c for _, c in rows if isinstance(c, Skipped)]
    assert [(s.reason, s.where) for s in bad] == [
        ("bad utf-8 caption", f"{table}:3"),
        ("bad utf-8 caption", f"{table}:6"),
        ("bad utf-8 caption", f"{table}:7"),
    ]
    assert "caf\\udce9 latte" in bad[0].detail and printable(bad[0].detail) == bad[0].detail
    assert rows[5] == (tmp_path / weird, "latin-1 file name")
    messages = []
    loader = Loader(
        VideoClips(rows, 4, 16, 16, 8), batch_size=1, shuffle=False, skips=SkipCounter(printer=messages.append)
    )
    prompts = drain(loader, 3 * len(rows))  # three epochs (and one more item: whole batches)
    assert prompts[:9] == ["a gray clip", "two\nlines", "latin-1 file name"] * 3
    assert loader.skips.summary() == {"bad utf-8 caption": 3, "missing file": 1}
    assert loader.skips.total == 4 and loader.skips.events == 12  # per file, not per draw
    assert len(messages) == 4 and all(m.encode("utf-8") for m in messages)  # printable, no UnicodeEncodeError
    # through the registry (what `distill data.path=table.csv` builds)
    cfg = load_config(None, {"data.source": "videos", "data.path": str(table)})
    assert len(build_dataset(cfg, (4, 16, 16, 8))) == 7


def test_csv_that_cannot_be_used_is_one_data_error(tmp_path):
    header = tmp_path / "header.csv"
    header.write_bytes(b"path,capt\xefon\nv0.mp4,hello\n")
    with pytest.raises(DataError, match=r"cannot find the video and caption columns .* not valid UTF-8") as e:
        list_csv(header)
    assert "\n" not in str(e.value) and str(e.value).encode("utf-8")
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"path,caption\nv0.mp4,caf\xe9\nv1.mp4,cr\xe8me\n")
    with pytest.raises(DataError, match=r"no usable rows in .*latin.csv: all 2 are broken \(2 bad utf-8 caption\)"):
        list_videos(latin)
    with pytest.raises(DataError, match="data.path not found"):
        list_videos(tmp_path / "nope.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no videos listed"):
        list_videos(tmp_path / "empty")
    tsv = tmp_path / "t.tsv"
    tsv.write_text("path\tcaption\nv0.mp4\ta, b\n")
    assert list_csv(tsv) == [(tmp_path / "v0.mp4", "a, b")]


# ------------------------------------------------------------------------------------------ folders
def test_folder_entries_that_are_not_videos_are_counted_never_dropped(tmp_path, good_clip, monkeypatch):
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    for name in ("a_good.mp4", "sub/b_good.mp4"):
        (root / name).write_bytes(good_clip)
        (root / name).with_suffix(".txt").write_text(f"caption of {name}")
    (root / "c_dir.mp4").mkdir()  # a folder named like a video...
    (root / "c_dir.txt").write_text("a caption")
    (root / "c_dir.mp4" / "inner.mp4").write_bytes(good_clip)  # ...whose contents still count
    (root / "c_dir.mp4" / "inner.txt").write_text("inner clip")
    (root / "d_loop.mp4").symlink_to(root / "d_loop.mp4")  # a symlink loop
    (root / "d_loop.txt").write_text("a caption")
    (root / "sub" / "back").symlink_to(root)  # a folder link back to a parent
    (root / "e_dangling.mp4").symlink_to(root / "nowhere.mp4")
    (root / "e_dangling.txt").write_text("a caption")
    (root / "f_locked.mp4").write_bytes(good_clip)
    (root / "f_locked.txt").write_text("a caption")
    (root / "g_fifo.mp4").parent.mkdir(exist_ok=True)
    os.mkfifo(root / "g_fifo.mp4")  # opening it would block forever
    (root / "g_fifo.txt").write_text("a caption")
    (root / "h_private").mkdir()
    (root / "h_private" / "x.mp4").write_bytes(good_clip)
    (root / "i_badcap.mp4").write_bytes(good_clip)
    (root / "i_badcap.txt").write_bytes(b"caf\xe9 in a folder is fine")  # the issue: sidecars were fine

    # permissions do not bind root (the test machine): refuse reads of these two paths explicitly
    real_open, real_scandir = pathlib.Path.open, os.scandir
    locked, private = root / "f_locked.mp4", root / "h_private"

    def guarded_open(self, *a, **k):
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *a, **k)

    def guarded_scandir(path="."):
        if pathlib.Path(path) == private:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(pathlib.Path, "open", guarded_open)
    monkeypatch.setattr(os, "scandir", guarded_scandir)
    if os.geteuid() != 0:  # and where they do, for real as well
        os.chmod(locked, 0)

    rows = list_folder(root)
    names = [str(p.relative_to(root)) for p, _ in rows]
    assert names == [
        "a_good.mp4", "c_dir.mp4", "c_dir.mp4/inner.mp4", "d_loop.mp4", "e_dangling.mp4", "f_locked.mp4",
        "g_fifo.mp4", "h_private", "i_badcap.mp4", "sub/b_good.mp4", "sub/back",
    ]  # fmt: skip
    loader = Loader(VideoClips(rows, 4, 16, 16, 8), batch_size=2, shuffle=False)
    prompts = drain(loader, 4 * len(rows))  # four epochs
    assert set(prompts) == {"caption of a_good.mp4", "inner clip", "caption of sub/b_good.mp4",
                            "caf\ufffd in a folder is fine"}  # fmt: skip
    assert loader.skips.summary() == {"missing file": 1, "not a file": 2, "symlink loop": 2, "unreadable": 2}
    assert loader.skips.files == {
        str(root / "c_dir.mp4"): "not a file",
        str(root / "d_loop.mp4"): "symlink loop",
        str(root / "e_dangling.mp4"): "missing file",
        str(root / "f_locked.mp4"): "unreadable",
        str(root / "g_fifo.mp4"): "not a file",
        str(root / "h_private"): "unreadable",
        str(root / "sub" / "back"): "symlink loop",
    }
    broken = set(loader.skips.files)
    assert loader.skips.events == sum(str(rows[p % len(rows)][0]) in broken for p in range(loader.position))
    assert loader.position >= 4 * len(rows) and loader.skips.events >= 4 * 7


# ------------------------------------------------------------------------------------------ counting
def test_skips_count_files_not_draws_and_survive_resume_and_ranks(tmp_path, good_clip):
    """17 files, 6 of them broken, drawn over 4 epochs: 6 skipped files (24 skipped draws)."""
    kinds = {"empty": b"", "noise": np.random.default_rng(1).bytes(2048), "text": b"no video\n" * 9}
    rows = []
    for i in range(11):
        (tmp_path / f"g{i}.mp4").write_bytes(good_clip)
        rows.append((tmp_path / f"g{i}.mp4", f"good {i}"))
    for i, data in enumerate(list(kinds.values()) * 2):
        (tmp_path / f"b{i}.mp4").write_bytes(data)
        rows.append((tmp_path / f"b{i}.mp4", "broken"))
    ds = VideoClips(rows, 4, 16, 16, 8)
    expected = {"empty file": 2, "undecodable": 4}
    loader = Loader(ds, batch_size=3, seed=3)
    drain(loader, 4 * 17)
    assert loader.skips.summary() == expected and loader.skips.total == 6
    keys = KeyStream(len(ds), seed=3)
    broken = {i for i, (path, _) in enumerate(rows) if str(path) in loader.skips.files}
    assert loader.skips.events == sum(keys.key(p)[1] in broken for p in range(loader.position))
    assert loader.skips.events >= 24  # 6 files x 4 epochs (the last batch may draw a little more)
    # resume: the state in a checkpoint (JSON) carries the files, so none is counted twice
    state = json.loads(json.dumps(loader.skips.state_dict()))
    resumed = Loader(ds, batch_size=3, seed=3, start=loader.position)
    resumed.skips.load_state_dict(state)
    drain(resumed, loader.position + 2 * 17)
    assert resumed.skips.summary() == expected and resumed.skips.total == 6
    # an older checkpoint's plain {reason: n} still loads (as counts)
    old = SkipCounter()
    old.load_state_dict({"undecodable": 4})
    assert old.summary() == {"undecodable": 4} and old.total == 4
    # two ranks draw overlapping files over epochs: merged, every file counts once
    ranks = [Loader(ds, batch_size=3, seed=3, rank=r, world=2) for r in range(2)]
    for r in ranks:
        drain(r, 2 * 17)
    assert all(r.skips.total == 6 for r in ranks)  # each rank met all six over two of its epochs
    assert SkipCounter.merged(r.skips.state_dict() for r in ranks) == expected
    assert SkipCounter().describe() == "skipped 0 files"
    assert loader.skips.describe() == "skipped 6 file(s): 2 empty file, 4 undecodable"


# ------------------------------------------------------------------------------------------ huge clips
MEMORY_PROBE = textwrap.dedent(
    """
    import json, re, sys
    import numpy as np
    from t2v_turbo.data.videos import load_clip
    from t2v_turbo.video_io import read_video

    def status(key):
        with open("/proc/self/status") as f:
            return int(re.search(key + r":\\s+(\\d+)", f.read()).group(1)) / 1024  # MiB

    def peak_of(fn):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets this process's peak RSS (VmHWM) to its current RSS
        before = status("VmRSS")
        result = fn()
        return result, status("VmHWM") - before

    def clip(path, max_pixels):
        item = load_clip(path, "x", 8, 64, 64, 8, "crop", np.random.default_rng(0), max_pixels=max_pixels)
        return item.reason if not isinstance(item, dict) else list(item["video"].shape)

    big, small, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
    clip(small, None)  # warm-up: codec libraries loaded
    out = {}
    out["refused"], out["refused_mb"] = peak_of(lambda: clip(big, limit - 1))
    out["scaled"], out["scaled_mb"] = peak_of(lambda: clip(big, None))
    out["at_limit"], _ = peak_of(lambda: clip(big, limit))
    out["full"], out["full_mb"] = peak_of(lambda: list(read_video(big)[0].shape))  # the probe's sensitivity
    print(json.dumps(out))
    """
)


def huge_clip(path, side: int, frames: int) -> None:
    """A diagonal luma ramp, brighter each frame (written as yuv420p directly: fast at any size)."""
    ramp = np.add.outer(np.arange(side), np.arange(side)) * 200 // (2 * side)
    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=Fraction(8))
        s.width, s.height, s.pix_fmt = side, side, "yuv420p"
        s.options = {"preset": "ultrafast", "crf": "40"}
        for t in range(frames):
            luma = (ramp + 6 * t).astype(np.uint8)
            yuv = np.concatenate([luma, np.full((side // 2, side), 128, np.uint8)])
            for p in s.encode(av.VideoFrame.from_ndarray(yuv, format="yuv420p")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def test_huge_clip_is_scaled_while_decoding_and_skipped_above_the_limit(tmp_path):
    side, frames = 2000, 8
    huge_clip(tmp_path / "huge.mp4", side, frames)
    ramp_clip(tmp_path / "small.mp4", 4, 32, 32)
    cmd = [sys.executable, "-c", MEMORY_PROBE, str(tmp_path / "huge.mp4"), str(tmp_path / "small.mp4"),
           str(side * side)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    yuv_frame_mb = side * side * 1.5 / 2**20  # 5.7 MiB: one decoded frame
    # refused before decoding (opening the container probes one frame: +9 MiB measured)
    assert out["refused"] == "too large" and out["refused_mb"] < 3 * yuv_frame_mb, out
    assert out["scaled"] == out["at_limit"] == [3, 8, 64, 64], out  # the limit is inclusive
    # the probe sees a full-size decode: 8 RGB frames of 2000x2000 are 91.6 MiB
    full_rgb_mb = frames * side * side * 3 / 2**20
    assert out["full"] == [frames, side, side, 3] and out["full_mb"] > full_rgb_mb, out
    # measured: +23 MiB (the decoder's own frame buffers) vs +184 MiB for read_video at full size; the
    # old load_clip (full-size decode, then torch resize) peaked at +853 MiB on this clip. On a
    # 4000x4000 x 16 clip: +75 MiB scaled while decoding, +1465 MiB read_video, +6.7 GB the old path.
    assert out["scaled_mb"] < full_rgb_mb / 2, out


def test_pixel_limit_comes_from_the_config(tmp_path, good_clip):
    (tmp_path / "v.mp4").write_bytes(good_clip)  # 24x32 frames
    (tmp_path / "v.txt").write_text("a clip")
    (tmp_path / "w.mp4").write_bytes(good_clip)
    (tmp_path / "w.txt").write_text("another clip")
    assert load_config(None, {"data.path": str(tmp_path)}).data.max_video_pixels == MAX_VIDEO_PIXELS == 4096**2
    cfg = load_config(None, {"data.path": str(tmp_path), "data.max_video_pixels": 24 * 32 - 1})
    ds = build_dataset(cfg, (4, 16, 16, 8))
    assert ds.max_pixels == 24 * 32 - 1
    skipped = ds[(0, 0)]
    assert (skipped.reason, skipped.where) == ("too large", str(tmp_path / "v.mp4"))
    assert "32x24 frames (768 pixels) exceed the limit of 767 pixels" in skipped.detail
    unlimited = build_dataset(load_config(None, {"data.path": str(tmp_path), "data.max_video_pixels": 0}),
                              (4, 16, 16, 8))  # fmt: skip
    assert unlimited[(0, 0)]["video"].shape == (3, 4, 16, 16)


def test_webdataset_samples_use_the_same_decoder(tmp_path, good_clip):
    pytest.importorskip("webdataset")
    import tarfile

    def member(tar, name, data):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(tmp_path / "s.tar", "w") as tar:
        member(tar, "k0.mp4", good_clip)
        member(tar, "k0.txt", b"fine")
        member(tar, "k1.mp4", good_clip)
        member(tar, "k1.txt", b"too big for the limit")
        member(tar, "k2.mp4", b"")
        member(tar, "k2.txt", b"empty")
    cfg = load_config(None, {"data.source": "webdataset", "data.path": str(tmp_path / "s.tar")})
    reasons = [getattr(it, "reason", "ok") for it in build_dataset(cfg, (4, 16, 16, 8), epochs=1)]
    assert reasons == ["ok", "ok", "empty file"]
    cfg = load_config(None, {"data.source": "webdataset", "data.path": str(tmp_path / "s.tar"),
                             "data.max_video_pixels": 100})  # fmt: skip
    reasons = [getattr(it, "reason", "ok") for it in build_dataset(cfg, (4, 16, 16, 8), epochs=1)]
    assert reasons == ["too large", "too large", "empty file"]
