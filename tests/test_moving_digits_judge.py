"""The MovingDigits judge: near-perfect on rendered ground truth, near chance on noise."""

import pytest
import torch

from t2v_turbo.worlds.moving_digits.dataset import (
    COLORS,
    DIRECTIONS,
    canonical_caption,
    canonical_prompts,
    parse_caption,
    prompt_videos,
)
from t2v_turbo.worlds.moving_digits.judge import get_judge


@pytest.fixture(scope="module")
def judge():
    return get_judge()


@pytest.fixture(scope="module")
def truth():
    prompts = canonical_prompts()
    videos, _ = prompt_videos(prompts, seed=0, split="heldout")
    return videos, prompts


def test_classifier_validates_on_heldout_glyphs(judge):
    assert judge.validation_accuracy > 0.95


def test_ground_truth_scores_near_perfect(judge, truth):
    videos, prompts = truth
    s = judge.evaluate(videos, prompts)
    assert s["num_videos"] == 280
    assert s["digit_acc"] >= 0.95  # held-out glyphs: the classifier never saw them
    assert s["color_acc"] == 1.0 and s["direction_acc"] == 1.0
    assert s["all_acc"] >= 0.95
    assert s["consistency"] > 0.99
    assert s["speed"] == pytest.approx(2.0, abs=1e-4)


def test_wrong_captions_score_zero(judge, truth):
    videos, prompts = truth
    colors, directions = list(COLORS), list(DIRECTIONS)
    wrong = []
    for p in prompts[:40]:
        c, d, m = parse_caption(p)  # every attribute replaced by the next one
        wrong.append(
            canonical_caption(
                colors[(colors.index(c) + 1) % 7], (d + 1) % 10, directions[(directions.index(m) + 1) % 4]
            )
        )
    s = judge.score(videos[:40], wrong)
    assert (
        s["color_correct"].sum() == 0
        and s["digit_correct"].mean() < 0.1
        and s["direction_correct"].sum() == 0
    )


def test_noise_scores_near_chance(judge, truth):
    _, prompts = truth
    g = torch.Generator().manual_seed(0)
    noise = torch.rand(280, 3, 8, 32, 32, generator=g) * 2 - 1
    s = judge.evaluate(noise, prompts)
    assert s["digit_acc"] <= 0.2  # chance 0.1
    assert s["color_acc"] <= 0.25  # chance 1/7
    assert s["direction_acc"] <= 0.35  # chance 0.25; no motion at all scores 0
    assert s["all_acc"] <= 0.02
    assert s["consistency"] < 0.2


def test_static_glyph_is_not_moving(judge, truth):
    videos, prompts = truth
    static = videos[:28].clone()
    static[:, :, 1:] = static[:, :, :1]
    s = judge.score(static, prompts[:28])
    assert s["direction_correct"].sum() == 0 and s["color_correct"].mean() == 1.0
    assert s["consistency"].min() > 0.99
