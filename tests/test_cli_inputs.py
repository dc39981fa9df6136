"""Every bad command-line input is one clear line on stderr and exit code 2, never a traceback, and
leaves no files behind (issue: reliability). Each case names what the message must mention."""

from __future__ import annotations

import os
import pickle

import pytest

from t2v_turbo.cli import main

MARKER = "payload-ran"


class Malicious:
    """A pickle whose loading would run code (writes a marker file): must never be unpickled."""

    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


@pytest.fixture()
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corrupt.safetensors").write_bytes(b"\xff" * 64)  # header length far beyond the file
    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"state_dict": Malicious()}))
    (tmp_path / "binary.txt").write_bytes(b"\x00\xff\xfe\x01binary")
    (tmp_path / "a-file").write_text("not a folder")
    (tmp_path / "not-torchscript.pt").write_bytes(b"plain bytes, not a zip")
    return tmp_path


P = "a red digit 7 moving left"
CASES = {
    # generate
    "corrupt safetensors model": (["generate", P, "--model", "corrupt.safetensors"], "corrupt.safetensors"),
    "malicious pickle model": (["generate", P, "--model", "evil.pt"], "not a weights-only checkpoint"),
    "missing model": (["generate", P, "--model", "nope/none"], "nope/none"),
    "student steps beyond the origin grid": (["generate", P, "--steps", "1000"], "1000"),
    "student steps 100": (["generate", P, "--steps", "100"], "100"),
    "steps 0": (["generate", P, "--steps", "0"], "--steps"),
    "binary prompt file": (["generate", "--prompt-file", "binary.txt"], "binary.txt"),
    "missing prompt file": (["generate", "--prompt-file", "none.txt"], "none.txt"),
    "no prompt": (["generate"], "prompt"),
    "out dir under a file": (["generate", P, "--out-dir", "a-file/out"], "a-file"),
    "negative fps": (["generate", P, "--fps", "-3"], "-3"),
    "zero fps": (["generate", P, "--fps", "0"], "--fps"),
    "huge seed": (["generate", P, "--seed", str(2**70)], str(2**70)),
    "zero videos per prompt": (["generate", P, "--num-per-prompt", "0"], "--num-per-prompt"),
    "negative videos per prompt": (["generate", P, "--num-per-prompt", "-1"], "-1"),
    "unknown device": (["generate", P, "--device", "nonsense"], "nonsense"),
    "cuda without a GPU": (["generate", P, "--device", "cuda"], "cuda"),
    "w nan": (["generate", P, "--w", "nan"], "nan"),
    "w inf": (["generate", P, "--w", "inf"], "inf"),
    "negative w": (["generate", P, "--w", "-2"], "-2"),
    "cfg nan": (["generate", P, "--model", "teacher", "--cfg-scale", "nan"], "nan"),
    "upscale 0": (["generate", P, "--upscale", "0"], "--upscale"),
    "upscale -2": (["generate", P, "--upscale", "-2"], "-2"),
    "threads 0": (["generate", P, "--threads", "0"], "--threads"),
    # eval
    "eval corrupt model": (["eval", P, "--model", "corrupt.safetensors", "--out-dir", "ev"], "corrupt.safetensors"),
    "eval malicious model": (["eval", P, "--model", "evil.pt", "--out-dir", "ev"], "not a weights-only checkpoint"),
    "eval binary prompt file": (["eval", "--prompt-file", "binary.txt", "--out-dir", "ev"], "binary.txt"),
    "eval i3d not torchscript": (
        ["eval", P, "--model", "turbo", "--i3d", "not-torchscript.pt", "--out-dir", "ev"],
        "not-torchscript.pt",
    ),
    "eval negative prompt count": (["eval", "--prompt-set", "moving-digits", "--num-prompts", "-5"], "-5"),
    "eval unknown prompt set": (["eval", "--prompt-set", "nope"], "nope"),
    "eval batch size 0": (["eval", P, "--batch-size", "0"], "--batch-size"),
    "eval unknown reward": (["eval", P, "--model", "turbo", "--reward", "no-such", "--out-dir", "ev"], "no-such"),
    # distill
    "distill corrupt teacher": (
        ["distill", "moving-digits", "model.teacher=corrupt.safetensors", "output_dir=run"],
        "corrupt.safetensors",
    ),
    "distill malicious teacher": (
        ["distill", "moving-digits", "model.teacher=evil.pt", "output_dir=run"],
        "not a weights-only checkpoint",
    ),
    "distill unknown preset": (["distill", "no-such-preset"], "no-such-preset"),
    "distill unknown key": (["distill", "moving-digits", "optim.nope=1"], "optim.nope"),
    "distill unknown source": (["distill", "moving-digits", "data.source=ftp", "output_dir=run"], "ftp"),
    # others
    "precompute batch size 0": (["precompute", "moving-digits", "--out", "cache", "--batch-size", "0"], "--batch-size"),
    "unknown command": (["frobnicate"], "frobnicate"),
}


@pytest.mark.parametrize("argv, needle", list(CASES.values()), ids=list(CASES))
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(workdir, capsys, argv, needle):
    before = sorted(p.relative_to(workdir) for p in workdir.rglob("*"))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error:")]
    assert len(errors) == 1, err
    assert needle in errors[0], errors[0]
    assert "Traceback" not in "\n".join(err)
    after = sorted(p.relative_to(workdir) for p in workdir.rglob("*"))
    assert after == before, f"files left behind: {set(after) - set(before)}"
    assert not (workdir / MARKER).exists()


def test_version_and_help(capsys):
    from t2v_turbo import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"t2v-turbo {__version__}"
    with pytest.raises(SystemExit) as e:
        main(["generate", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "(default: 7.5)" in out and "(default: outputs)" in out


def test_unknown_words_are_named(workdir, capsys):
    assert main(["generate", "a cat surfing", "--out-dir", "o"]) == 0
    err = capsys.readouterr().err
    assert "unknown: cat, surfing" in err
