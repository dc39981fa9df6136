"""VBench export: names VBench maps back to the prompt (its two matching rules, vbench 0.1.5), the
shipped standard suite, the folder layout, and per-dimension evaluation through a fake `vbench`."""

import hashlib
import importlib.machinery
import json
import math
import os
import sys
import types
from pathlib import Path, PurePosixPath

import numpy as np
import pytest

from t2v_turbo.cli import main
from t2v_turbo.errors import DataError, InputError
from t2v_turbo.evaluation import vbench as vb
from t2v_turbo.evaluation import vbench_run as vr
from t2v_turbo.evaluation import vbench_suite as vs

FIXTURES = Path(__file__).parent / "fixtures"
CJK = "\u732b"  # 3 bytes in UTF-8


def custom_input_prompt(filename: str) -> str:
    """VBench custom_input's rule, restated from its documentation ("prompt-0.suffix -> prompt"):
    the pathlib stem, minus one trailing '-<number>'."""
    stem = PurePosixPath(filename).stem
    cut = stem.rfind("-")
    return stem[:cut] if cut >= 0 and stem[cut + 1 :].isdigit() else stem


def standard_files(folder: Path, prompt: str, listing: list[str] | None = None) -> list[str]:
    """VBench vbench_standard's rule: extension of the first listed file; `{prompt}-{i}{ext}`, i < 5."""
    listing = os.listdir(folder) if listing is None else listing
    ext, names = Path(listing[0]).suffix, listing if isinstance(listing, set) else set(listing)
    return [f"{prompt}-{i}{ext}" for i in range(5) if f"{prompt}-{i}{ext}" in names]


# --------------------------------------------------------------------------------------------------
# the suite and its names


def test_shipped_suite_is_vbench_0_1_5_unmodified():
    assert hashlib.sha256(vs.SUITE_FILE.read_bytes()).hexdigest() == vs.SUITE_SHA256
    assert (vs.SUITE_DIR / "LICENSE").read_text().lstrip().startswith("Apache License")
    entries = vb.load_suite()
    assert len(entries) == 946 and len({e["prompt_en"] for e in entries}) == 944
    per_dim = vb.suite_dimension_prompts(entries)
    assert set(per_dim) == set(vb.DIMENSIONS)
    assert {d: len(p) for d, p in per_dim.items()} == {
        "subject_consistency": 72, "background_consistency": 86, "temporal_flickering": 75,
        "motion_smoothness": 72, "dynamic_degree": 72, "aesthetic_quality": 93, "imaging_quality": 93,
        "object_class": 79, "multiple_objects": 82, "human_action": 100, "color": 85,
        "spatial_relationship": 84, "scene": 86, "temporal_style": 100, "appearance_style": 90,
        "overall_consistency": 93,
    }  # fmt: skip
    prompts, counts = vb.suite_prompts(list(vb.DIMENSIONS), entries)
    assert len(prompts) == 944 and counts.count(25) == 75 and counts.count(5) == 869 and sum(counts) == 6220
    tf_prompts, tf_counts = vb.suite_prompts(["temporal_flickering"], entries)
    assert tf_prompts == per_dim["temporal_flickering"] and set(tf_counts) == {25}
    # a temporal_flickering prompt gets 5 samples when that dimension is not selected: none is shared
    assert set(vb.suite_prompts(["color", "scene"], entries)[1]) == {5}


def test_every_standard_prompt_round_trips_under_both_vbench_rules(tmp_path):
    prompts, counts = vb.suite_prompts(list(vb.DIMENSIONS))
    plan = vb.plan_export(prompts, counts, "mp4")
    assert plan.inexact() == [] and len(plan.files()) == 6220
    longest = max(prompts, key=len)
    assert len(longest) == 210 and len(plan.names[prompts.index(longest)].file(4).encode()) == 216
    assert sum(len(p) > 180 for p in prompts) == 13
    # on disk (empty files: the rules look at names only), the first and the last name of each prompt:
    # the file system takes them and lists them unchanged
    disk = [n.file(i) for n, c in zip(plan.names, plan.counts) for i in sorted({0, c - 1})]
    for name in disk:
        (tmp_path / name).touch()
    listed = os.listdir(tmp_path)
    assert sorted(listed) == sorted(disk) and len(listed) == 2 * 944
    assert {custom_input_prompt(n) for n in listed} == set(prompts)
    # every name under both rules
    files = plan.files()
    assert len(set(files)) == 6220 and {custom_input_prompt(n) for n in files} == set(prompts)
    assert all(vb.vbench_prompt_from_name(n) == custom_input_prompt(n) for n in files)
    for p, c in zip(prompts, counts):
        assert standard_files(tmp_path, p, files) == [f"{p}-{i}.mp4" for i in range(5)]
        assert len(f"{p}-{c - 1}.mp4".encode()) <= 255


@pytest.mark.parametrize(
    "prompt",
    [
        "A corgi's head depicted as an explosion of a nebula",
        "A tranquil tableau of at the edge of the Arabian Desert, the ancient city of Petra beckoned with its "
        "enigmatic rock-carved fa\u00e7ades",
        "Route-66",
        "a dog-7",
        "\u0661\u0662-\u0663",  # Arabic-Indic digits: VBench's \d matches them
        ".hidden start",
        "100% pure: a cat?",
        "tab\tseparated",
        "trailing dot.",
        "emoji \U0001f431 and \u00e9",
        CJK * 80,  # 240 bytes + '-0.mp4' = 246: fits
    ],
)
def test_fixture_prompts_round_trip(prompt, tmp_path):
    name = vb.video_name(prompt, 5, "mp4")
    assert name.exact and name.stem == prompt and name.reason == ""
    for i in range(5):
        (tmp_path / name.file(i)).touch()
        assert custom_input_prompt(name.file(i)) == prompt
    assert standard_files(tmp_path, prompt) == [f"{prompt}-{i}.mp4" for i in range(5)]


def test_byte_length_truncation_cjk(tmp_path):
    # 100 CJK characters: 300 bytes, 306 with '-0.mp4' -> cut to 249 bytes = 83 characters
    name = vb.video_name(CJK * 100, 5, "mp4")
    assert not name.exact and name.stem == CJK * 83
    assert len(name.file(4).encode()) == 255 and "cut to a 255-byte file name (the full name needs 306 bytes)" in name.reason
    (tmp_path / name.file(4)).touch()  # the file system accepts it
    # the boundary is in bytes, for the largest index: 25 samples need '-24.mp4' (7 bytes)
    assert vb.video_name("a" * 249, 5).exact and not vb.video_name("a" * 250, 5).exact
    assert vb.video_name("a" * 248, 25).exact and not vb.video_name("a" * 249, 25).exact
    # a cut inside a multi-byte character drops the whole character; trailing spaces go
    cut = vb.video_name("a" + CJK * 90, 5)
    assert cut.stem == "a" + CJK * 82 and len(cut.stem.encode()) == 247
    assert vb.video_name("x" * 248 + " yz", 5).stem == "x" * 248


def test_slash_tab_and_collisions():
    slash = vb.video_name("a cat/dog", 5)
    assert slash.stem == "a cat\u2215dog" and not slash.exact and "'/'" in slash.reason
    assert vb.video_name("a cat\tdog", 5).exact  # a tab is a legal file-name character: kept
    with pytest.raises(InputError) as e:
        vb.plan_export(["a cat/dog", "a cat\u2215dog"])
    msg = str(e.value)
    assert "'a cat/dog'" in msg and "'a cat\u2215dog'" in msg and "'/' cannot be in a file name" in msg
    assert "\n" not in msg
    with pytest.raises(InputError) as e:
        vb.plan_export([CJK * 90 + "A", CJK * 90 + "B"])
    assert "cut to a 255-byte file name" in str(e.value) and f"{CJK * 90}A" in str(e.value)
    with pytest.raises(InputError, match="letter case"):
        vb.plan_export(["a fantasy landscape", "A fantasy landscape"], case_insensitive=True)
    plan = vb.plan_export(["a fantasy landscape", "A fantasy landscape", "a fantasy landscape", " "], [5, 5, 25, 5])
    assert plan.prompts == ["a fantasy landscape", "A fantasy landscape"] and plan.counts == [25, 5]


def test_dimensions():
    assert vb.resolve_dimensions(None) == ["temporal_flickering"] == list(vb.WEIGHT_FREE_DIMENSIONS)
    assert len(vb.resolve_dimensions(["all"], "vbench_standard")) == 16
    assert len(vb.resolve_dimensions(["all"], "custom_input")) == 10
    with pytest.raises(InputError, match="unknown VBench dimension 'flicker'"):
        vb.resolve_dimensions(["flicker"])
    with pytest.raises(InputError, match="color needs VBench's standard prompt suite"):
        vb.resolve_dimensions(["color"], "custom_input")
    assert all(info.weights for d, info in vb.DIMENSIONS.items() if d != "temporal_flickering")


def test_dimension_result_nan_and_empty_are_errors(tmp_path):
    f = tmp_path / "r.json"
    f.write_text(json.dumps({"temporal_flickering": [0.97, [{"video_path": "a-0.mp4", "video_results": 0.97}]]}))
    assert vr.dimension_result(f, "temporal_flickering") == (0.97, 1)
    f.write_text('{"temporal_flickering": [NaN, []]}')  # what VBench wrote when it matched no video
    with pytest.raises(DataError, match="found no usable video"):
        vr.dimension_result(f, "temporal_flickering")
    f.write_text(json.dumps({"temporal_flickering": [0.5, []]}))
    with pytest.raises(DataError, match="on no video"):
        vr.dimension_result(f, "temporal_flickering")
    with pytest.raises(DataError, match="no subject_consistency entry"):
        vr.dimension_result(f, "subject_consistency")
    with pytest.raises(DataError, match="wrote no result file"):
        vr.dimension_result(tmp_path / "missing.json", "temporal_flickering")


@pytest.mark.skipif(sys.platform != "linux", reason="probes a Linux file system")
def test_filesystem_quirks_probe_leaves_nothing(tmp_path):
    assert vb.filesystem_quirks(tmp_path) == {"case_insensitive": False, "normalizes_names": False}
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------------------------------
# export and evaluation end to end (tiny model, fake vbench)


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory, tiny_teacher):
    root = tmp_path_factory.mktemp("vbench_models")
    tiny_teacher.make_student(256, init="normal").save_pretrained(root / "student")
    return root / "student"


def flicker(path: str) -> float:
    """VBench's temporal-flickering score of one video: (255 - mean |frame_t+1 - frame_t|) / 255."""
    from t2v_turbo.video_io import read_video

    frames, _ = read_video(path)
    f = np.asarray(frames, dtype=np.float32)
    return float((255.0 - np.abs(f[1:] - f[:-1]).mean()) / 255.0)


class FakeVBench:
    """Stands in for `vbench.VBench`: finds videos the way vbench 0.1.5 documents (custom_input: every
    video in the folder, prompt from the name or `prompt_list`; vbench_standard: `{prompt}-{i}{ext}`,
    i < 5, ext from the first listed file) and scores each dimension with `SCORERS`."""

    calls: list = []

    def __init__(self, device, full_info_dir, output_path):
        self.full_info, self.out = full_info_dir, Path(output_path)
        self.out.mkdir(parents=True, exist_ok=True)

    def evaluate(self, videos_path, name, prompt_list=(), dimension_list=None, local=False, mode="vbench_standard", **kw):
        (dim,) = dimension_list
        names = os.listdir(videos_path)
        if mode == "custom_input":
            items = [
                (prompt_list.get(n, custom_input_prompt(n)) if prompt_list else custom_input_prompt(n), n)
                for n in sorted(names)
                if Path(n).suffix in (".mp4", ".gif")
            ]
        else:
            ext = Path(names[0]).suffix
            items = [
                (e["prompt_en"], f"{e['prompt_en']}-{i}{ext}")
                for e in json.loads(Path(self.full_info).read_text())
                if dim in e["dimension"]
                for i in range(5)
                if f"{e['prompt_en']}-{i}{ext}" in names
            ]
        FakeVBench.calls.append((dim, mode, items))
        per_video = [{"video_path": os.path.join(videos_path, n), "video_results": SCORERS[dim](os.path.join(videos_path, n), p)} for p, n in items]
        score = float(np.mean([v["video_results"] for v in per_video])) if per_video else float("nan")
        (self.out / f"{name}_eval_results.json").write_text(json.dumps({dim: [score, per_video]}))


def _fail(path, prompt):
    raise RuntimeError("cannot download the weights")


SCORERS = {
    "temporal_flickering": lambda path, prompt: flicker(path),
    "temporal_style": lambda path, prompt: float(len(prompt)),
    "overall_consistency": lambda path, prompt: float(len(prompt)),
    "aesthetic_quality": _fail,
}


@pytest.fixture
def fake_vbench(monkeypatch):
    FakeVBench.calls = []
    pkg = types.ModuleType("vbench")
    pkg.__spec__ = importlib.machinery.ModuleSpec("vbench", None, is_package=True)
    pkg.__path__ = []
    pkg.VBench = FakeVBench
    monkeypatch.setitem(sys.modules, "vbench", pkg)
    for dim in SCORERS:
        mod = types.ModuleType(f"vbench.{dim}")
        mod.__spec__ = importlib.machinery.ModuleSpec(f"vbench.{dim}", None)
        monkeypatch.setitem(sys.modules, f"vbench.{dim}", mod)
    return FakeVBench


PROMPTS = ["a red digit 1 moving left", "a cat/dog", CJK * 100]


def test_export_custom_prompts_layout_seeds_and_fake_vbench(student_dir, tmp_path, fake_vbench, capsys):
    from t2v_turbo.pipeline import generate, load_backbone
    from t2v_turbo.video_io import frames_to_tensor, read_video

    out = tmp_path / "vb"
    argv = ["export-vbench", *PROMPTS, "--model", str(student_dir), "--steps", "2", "--seed", "10"]
    argv += ["--num-per-prompt", "2", "--batch-size", "2", "--out-dir", str(out), "--run-vbench"]
    argv += ["--dimensions", "temporal_flickering", "overall_consistency", "aesthetic_quality"]
    assert main(argv) == 1  # one dimension failed, the others ran
    captured = capsys.readouterr()
    stems = ["a red digit 1 moving left", "a cat\u2215dog", CJK * 83]
    expected = sorted(f"{s}-{i}.mp4" for s in stems for i in range(2))
    assert sorted(os.listdir(out / "videos")) == expected  # videos only
    assert sorted(os.listdir(out)) == ["vbench_export.json", "vbench_prompts.json", "vbench_results", "videos"]
    meta = json.loads((out / "vbench_export.json").read_text())
    assert meta["seeds"] == [10, 11] and meta["num_files"] == 6 and meta["prompts"] == PROMPTS
    assert (meta["w"], meta["cfg_scale"], meta["sampler"], meta["steps"], meta["batch_size"]) == (7.5, None, "consistency", 2, 2)
    assert (meta["num_frames"], meta["resolution"], meta["fps"], meta["timesteps"]) == (4, [16, 16], 8, [999, 499])
    assert meta["hardware"]["cpu_cores"] >= 1 and meta["videos_dir"] == "videos" and meta["suite"] is None
    assert [i["prompt"] for i in meta["inexact_names"]] == ["a cat/dog", CJK * 100]
    assert "warning: VBench cannot read the prompt back" in captured.err
    prompt_map = json.loads((out / "vbench_prompts.json").read_text())
    assert prompt_map[f"{CJK * 83}-1.mp4"] == CJK * 100 and len(prompt_map) == 6
    # per-dimension results: exact prompts reach VBench through the prompt map
    res = meta["vbench"]["dimensions"]
    assert meta["vbench"]["mode"] == "custom_input"
    tf_items = next(items for d, _, items in fake_vbench.calls if d == "temporal_flickering")
    assert sorted(p for p, _ in tf_items) == sorted(PROMPTS * 2)
    files = [out / "videos" / n for n in expected]
    assert res["temporal_flickering"]["score"] == pytest.approx(np.mean([flicker(str(f)) for f in files]), abs=1e-12)
    assert res["temporal_flickering"]["num_videos"] == 6
    assert res["overall_consistency"]["score"] == pytest.approx(np.mean([len(p) for p in PROMPTS]))
    assert res["aesthetic_quality"]["error"] == "RuntimeError: cannot download the weights"
    assert (out / "vbench_results" / "aesthetic_quality" / "error.txt").read_text().startswith("Traceback")
    assert "aesthetic_quality: error: RuntimeError: cannot download the weights" in captured.err
    assert f"temporal_flickering: {res['temporal_flickering']['score']:.4f} (6 videos" in captured.out
    # file {prompt}-{i} is the video of seed 10 + i (H.264 keeps random-weight noise only roughly)
    frames, _ = read_video(out / "videos" / "a cat\u2215dog-1.mp4")
    model = load_backbone(student_dir)
    err = [
        float((frames_to_tensor(frames) - generate(model, PROMPTS, 2, w=7.5, seed=s, batch_size=2).videos[1]).abs().mean())
        for s in (10, 11, 12)
    ]
    assert err[1] < 0.2 and err[1] < 0.6 * min(err[0], err[2]), err
    # evaluate again without generating: the same score
    assert main(["export-vbench", "--evaluate-only", "--out-dir", str(out)]) == 0
    again = json.loads((out / "vbench_export.json").read_text())["vbench"]["dimensions"]
    assert list(again) == ["temporal_flickering"]
    assert again["temporal_flickering"]["score"] == res["temporal_flickering"]["score"]


def test_suite_export_standard_mode(student_dir, tmp_path, fake_vbench, monkeypatch, capsys):
    monkeypatch.setattr(vs, "SUITE_FILE", FIXTURES / "vbench_suite_small.json")
    entries = json.loads((FIXTURES / "vbench_suite_small.json").read_text())
    out = tmp_path / "suite"
    argv = ["export-vbench", "--suite", "vbench", "--model", str(student_dir), "--steps", "1", "--out-dir", str(out)]
    argv += ["--run-vbench", "--dimensions", "temporal_flickering", "temporal_style", "aesthetic_quality"]
    assert main(argv) == 1
    tf = [e["prompt_en"] for e in entries if "temporal_flickering" in e["dimension"]]
    five = [e["prompt_en"] for e in entries if {"temporal_style", "aesthetic_quality"} & set(e["dimension"])]
    assert len(tf) == 2 and len(five) == 2
    names = sorted(os.listdir(out / "videos"))
    assert names == sorted([f"{p}-{i}.mp4" for p in tf for i in range(25)] + [f"{p}-{i}.mp4" for p in five for i in range(5)])
    meta = json.loads((out / "vbench_export.json").read_text())
    assert meta["suite"]["dimensions"] == ["temporal_flickering", "temporal_style", "aesthetic_quality"]
    assert meta["suite"]["num_per_prompt"] == {"default": 5, "temporal_flickering": 25}
    assert meta["suite"]["prompts_per_dimension"] == {"temporal_flickering": 2, "temporal_style": 1, "aesthetic_quality": 1}
    assert dict(zip(meta["prompts"], meta["samples_per_prompt"])) == {**{p: 25 for p in tf}, **{p: 5 for p in five}}
    assert meta["seeds"] == list(range(25)) and meta["inexact_names"] == []
    res = meta["vbench"]["dimensions"]
    assert meta["vbench"]["mode"] == "vbench_standard"
    # standard mode scores files -0..-4 of each of the dimension's prompts
    assert res["temporal_flickering"]["num_videos"] == 10
    assert res["temporal_flickering"]["score"] == pytest.approx(
        np.mean([flicker(str(out / "videos" / f"{p}-{i}.mp4")) for p in tf for i in range(5)]), abs=1e-12
    )
    long_prompt = max(five, key=len)
    assert len(long_prompt) == 210
    assert (res["temporal_style"]["score"], res["temporal_style"]["num_videos"]) == (210.0, 5)
    assert "error" in res["aesthetic_quality"]


def test_standard_mode_with_metadata_in_the_video_folder_is_an_error(student_dir, tmp_path, fake_vbench, monkeypatch):
    """The original bug: a non-video file listed first makes VBench look for `{prompt}-0.json`."""
    monkeypatch.setattr(vs, "SUITE_FILE", FIXTURES / "vbench_suite_small.json")
    out = tmp_path / "suite"
    argv = ["export-vbench", "--suite", "vbench", "--model", str(student_dir), "--steps", "1", "--out-dir", str(out)]
    assert main(argv + ["--dimensions", "temporal_style"]) == 0
    monkeypatch.setattr(os, "listdir", lambda p, _real=os.listdir: sorted(_real(p) + (["!meta.json"] if str(p).endswith("videos") else [])))
    summary = vr.run_vbench(out, ["temporal_style"])
    assert "found no usable video" in summary["dimensions"]["temporal_style"]["error"]


def test_videos_folder_must_hold_only_our_videos(student_dir, tmp_path, capsys):
    out = tmp_path / "vb"
    (out / "videos").mkdir(parents=True)
    (out / "videos" / "notes.json").write_text("{}")
    assert main(["export-vbench", "a cat", "--model", str(student_dir), "--out-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already holds 1 other file(s) (e.g. 'notes.json')" in err


def test_collision_fails_before_loading_the_model(tmp_path, capsys):
    out = tmp_path / "vb"
    assert main(["export-vbench", "a cat/dog", "a cat\u2215dog", "--model", str(tmp_path / "nope"), "--out-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'a cat/dog' and 'a cat\u2215dog' would share the file name" in err
    assert not out.exists()


def test_case_insensitive_file_system_collision(student_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(vb, "filesystem_quirks", lambda folder: {"case_insensitive": True, "normalizes_names": False})
    argv = ["export-vbench", "a fantasy landscape", "A fantasy landscape", "--model", str(student_dir)]
    assert main(argv + ["--out-dir", str(tmp_path / "vb")]) == 2
    assert "differ only in letter case and this file system ignores case" in capsys.readouterr().err
    assert not (tmp_path / "vb").exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
        (["--num-per-prompt", "0"], "--num-per-prompt must be >= 1, got 0"),
        (["--dimensions", "flicker"], "unknown VBench dimension 'flicker'"),
        (["--run-vbench", "--dimensions", "color"], "color needs VBench's standard prompt suite"),
        (["--run-vbench", "--vbench-mode", "vbench_standard"], "needs an export of VBench's own prompts"),
        (["--suite", "vbench"], "give no other prompts with it"),
        (["--prompt-set", "nope"], "unknown evaluation world 'nope'"),
        (["--steps", "1000"], "1000"),  # the shipped student: beyond its origin grid
        (["--w", "nan"], "nan"),
    ],
)
def test_bad_arguments_one_line_nothing_left(flags, message, tmp_path, capsys):
    assert main(["export-vbench", "a red digit 7 moving left", "--out-dir", str(tmp_path / "vb"), *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert os.listdir(tmp_path) == []


def test_vbench_not_importable_exit_2_before_generating(tmp_path, monkeypatch, capsys):
    """vbench installed but `import vbench` fails (it imports torchvision at the top)."""
    pkg = tmp_path / "site" / "vbench"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'torchvision'\", name='torchvision')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "vbench", raising=False)
    out = tmp_path / "vb"
    argv = ["export-vbench", "a cat", "--model", str(tmp_path / "no-model"), "--out-dir", str(out), "--run-vbench"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "`import vbench` fails" in err and "install torchvision built for this torch" in err
    assert not out.exists()  # nothing generated


def test_vbench_not_installed_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(vr.importlib.util, "find_spec", lambda name: None)
    assert main(["export-vbench", "a cat", "--out-dir", str(tmp_path / "vb"), "--run-vbench"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "vbench is not installed; pip install vbench" in err


def test_nan_free_metadata(student_dir, tmp_path):
    from t2v_turbo.pipeline import load_backbone

    meta = vb.export_vbench(load_backbone(student_dir), ["a cat"], tmp_path / "x", steps=1, num_per_prompt=1)
    text = (tmp_path / "x" / "vbench_export.json").read_text()
    assert "NaN" not in text and meta["num_files"] == 1 and math.isfinite(meta["seconds_per_video"])
    with pytest.raises(InputError, match="--batch-size must be >= 1"):
        vb.export_vbench(load_backbone(student_dir), ["a cat"], tmp_path / "y", batch_size=0)


def _real_vbench():
    try:
        import vbench
        import vbench.utils
    except Exception as e:  # not installed, or its imports (torchvision, decord) fail
        pytest.skip(f"the real vbench is not importable here ({type(e).__name__})")
    if getattr(vbench, "VBench", FakeVBench) is FakeVBench:
        pytest.skip("vbench is the fake")
    return vbench


def test_real_vbench_finds_every_standard_video(tmp_path):
    """Where the real vbench imports: its own code maps every suite name back (both modes)."""
    vbench = _real_vbench()
    prompts, counts = vb.suite_prompts(list(vb.DIMENSIONS))
    plan = vb.plan_export(prompts, counts)
    videos = tmp_path / "videos"
    videos.mkdir()
    for n, c in zip(plan.names, plan.counts):
        for i in range(min(c, 5)):
            (videos / n.file(i)).touch()
    assert all(vbench.utils.get_prompt_from_filename(n) == p for n, p in plan.prompt_map().items())
    bench = vbench.VBench("cpu", str(vs.SUITE_FILE), str(tmp_path / "out"))
    info = json.loads(Path(bench.build_full_info_json(str(videos), "s", list(vb.DIMENSIONS), mode="vbench_standard")).read_text())
    assert len(info) == 946 and all(len(e["video_list"]) == 5 for e in info)
    info = json.loads(Path(bench.build_full_info_json(str(videos), "c", ["temporal_flickering"], mode="custom_input")).read_text())
    assert len(info) == 944 * 5 and {e["prompt_en"] for e in info} == set(prompts)
