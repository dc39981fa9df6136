"""The world table's claim checker (issues 17 and 19) on hand-made results, and the contact sheet."""

import numpy as np
import pytest
import torch

from t2v_turbo.errors import InputError
from t2v_turbo.worlds.moving_digits.cli import check_claims, claims_lines, cli
from t2v_turbo.worlds.moving_digits.contact_sheet import video_strip


def _run(model, steps, all_correct, seconds, sampler="consistency", **extra):
    metrics = {"judge/all_correct": {"mean": all_correct}}
    for k in ("digit_correct", "color_correct", "direction_correct"):
        metrics[f"judge/{k}"] = {"mean": extra.get(k, 1.0)}
    return {"model": model, "steps": steps, "sampler": sampler, "seconds_per_video": seconds, "metrics": metrics}


def _results(prefix=""):
    return {
        "runs": [
            _run(f"{prefix}teacher", 50, 0.62, 1.0, sampler="ddim", digit_correct=0.71),
            _run(f"{prefix}vcm", 4, 0.40, 0.05),
            _run(f"{prefix}turbo", 4, 0.64, 0.05),
            _run(f"{prefix}turbo", 1, 0.58, 0.02),
        ]
    }


def test_unet_claims_hold_and_fail_at_the_thresholds():
    claims = check_claims(_results())
    assert [c["holds"] for c in claims] == [True, True, True, True, True]
    assert claims[-1]["measured"].startswith("20.0x")
    r = _results()
    r["runs"][2]["metrics"]["judge/all_correct"]["mean"] = 0.549  # turbo-4 < vcm-4 + 0.15 and < teacher
    r["runs"][0]["metrics"]["judge/digit_correct"]["mean"] = 0.69  # teacher goal missed by 0.01
    holds = [c["holds"] for c in check_claims(r)]
    assert holds == [False, False, False, True, True]


def test_fm_claims_use_the_fm_models_and_three_claims():
    r = _results("fm-")
    assert check_claims(r, family="unet") == []  # no UNet runs in these results
    claims = check_claims(r, family="fm")
    assert [c["claim"].split(" ")[0] for c in claims] == ["FM-T2V-Turbo"] * 3
    assert [c["holds"] for c in claims] == [True, True, True]
    r["runs"][2]["seconds_per_video"] = 1.0 / 14.9  # 14.9x: below 15x
    assert [c["holds"] for c in check_claims(r, family="fm")] == [True, True, False]


def test_claims_lines_group_by_family():
    both = {"runs": _results()["runs"] + _results("fm-")["runs"]}
    both["claims"] = [dict(c, family=f) for f in ("unet", "fm") for c in check_claims(both, family=f)]
    lines = claims_lines(both)
    text = "\n".join(lines)
    assert text.count("- holds:") == 8 and "FAILS" not in text
    assert text.index("issue 17") < text.index("flow-matching family")


def test_video_strip_layout_and_values():
    v = torch.full((3, 8, 32, 32), -1.0)
    v[0, 3, 5, 7] = 1.0  # one red pixel in frame 3
    strip = video_strip(v, scale=2, gap=1)
    assert strip.shape == (64, 8 * 65 - 1, 3) and strip.dtype == np.uint8
    x0 = 3 * 65 + 7 * 2
    assert strip[10:12, x0 : x0 + 2, 0].tolist() == [[255, 255], [255, 255]]
    assert strip[10, x0, 1] == 0 and strip[0, 64, 0] == 40  # black frame, grey gap


def test_table_and_sheet_reject_unknown_families(tmp_path):
    for cmd in (["table"], ["sheet"]):
        with pytest.raises(InputError, match="unknown families"):
            cli(cmd + ["--families", "dit", "--world", str(tmp_path), "--out-dir", str(tmp_path)])
    with pytest.raises(InputError, match="build the world first"):
        cli(["sheet", "--families", "fm", "--world", str(tmp_path), "--out-dir", str(tmp_path)])


def test_merge_keeps_the_other_familys_rows_and_checks_both(tmp_path):
    import json

    from t2v_turbo.worlds.moving_digits.cli import _mergeable, merge_results

    old = {"runs": _results()["runs"] + _results("fm-")["runs"]}
    new = {"runs": _results("fm-")["runs"]}
    unet_only = {"runs": _results()["runs"]}
    assert merge_results(old, unet_only) == ("unet", "fm")  # re-measured UNet rows stay first
    assert [r["model"] for r in unet_only["runs"]][:4] == ["teacher", "vcm", "turbo", "turbo"]
    new["runs"][2]["metrics"]["judge/all_correct"]["mean"] = 0.30  # the re-measured FM-T2V-Turbo is worse
    assert merge_results(old, new) == ("unet", "fm")
    assert [r["model"] for r in new["runs"]][:4] == ["teacher", "vcm", "turbo", "turbo"]
    assert len(new["runs"]) == 8 and "teacher, turbo, vcm kept" in new["merged"]
    assert [c["holds"] for c in check_claims(new, family="fm")] == [False, False, True]
    assert all(c["holds"] for c in check_claims(new, family="unet"))
    # a merge only onto a table of the same prompts and seeds
    with pytest.raises(InputError, match="not found"):
        _mergeable(tmp_path, ["a red digit 7 moving left"], (0,))
    (tmp_path / "results.json").write_text(json.dumps({"settings": {"prompts": ["p"], "seeds": [0]}, "runs": []}))
    assert _mergeable(tmp_path, ["p"], (0,))["runs"] == []
    with pytest.raises(InputError, match="other prompts or seeds"):
        _mergeable(tmp_path, ["q"], (0,))
    with pytest.raises(InputError, match="needs --families"):
        cli(["table", "--merge", "--out-dir", str(tmp_path)])
