"""Closed forms of the evaluation metrics (evaluation/metrics.py)."""

import math

import pytest
import torch

from t2v_turbo.evaluation import metrics as M


def moving_dot(direction=(1, 0), speed=2, frames=5, size=16, start=(3, 4), value=1.0):
    """One bright pixel on black moving `speed` px/frame: (1, 3, T, H, W) in [-1, 1]."""
    v = -torch.ones(1, 3, frames, size, size)
    for t in range(frames):
        x, y = start[0] + direction[0] * speed * t, start[1] + direction[1] * speed * t
        v[0, :, t, y, x] = value
    return v


def test_motion_amount_closed_forms():
    still = torch.rand(2, 3, 4, 8, 8) * 2 - 1
    still[:, :, 1:] = still[:, :, :1]
    assert M.motion_amount(still).tolist() == [0.0, 0.0]
    # frames alternate black (-1) / white (+1): |diff| = 2 on the [-1, 1] scale = 1 in [0, 1] units
    flicker = torch.ones(1, 3, 5, 4, 4)
    flicker[:, :, ::2] = -1
    assert M.motion_amount(flicker).item() == pytest.approx(1.0)
    # one pixel of 64 changes by 1.0 (in [-1, 1]) between each pair: 0.5 / 64 in [0, 1] units
    v = torch.zeros(1, 1, 3, 8, 8)
    v[0, 0, 1, 2, 2] = 1.0
    assert M.motion_amount(v).item() == pytest.approx(0.5 / 64)
    assert M.motion_amount(torch.zeros(3, 3, 1, 4, 4)).tolist() == [0.0] * 3


def test_centroid_displacement_of_moving_dot():
    for direction, speed in [((1, 0), 2), ((0, 1), 1), ((-1, 0), 3)]:
        start = (12, 4) if direction[0] < 0 else (2, 3)
        v = moving_dot(direction, speed, start=start)
        assert M.centroid_displacement(v).item() == pytest.approx(speed, abs=1e-9)
        c = M.intensity_centroids(v)[0]
        assert c[0].tolist() == pytest.approx([start[0], start[1]])
    # a diagonal step (3, 4) has length 5
    v = -torch.ones(1, 3, 2, 16, 16)
    v[0, :, 0, 1, 1] = 1
    v[0, :, 1, 5, 4] = 1
    assert M.centroid_displacement(v).item() == pytest.approx(5.0)
    # an empty (black) video has no mass: centroids at the centre, no displacement
    assert M.centroid_displacement(-torch.ones(1, 3, 3, 8, 8)).item() == 0.0


def test_temporal_consistency_closed_forms():
    # with a feature function: frames whose features are orthonormal basis vectors -> 0; equal -> 1
    def feat(frames):  # (N, C, H, W) -> (N, 2): the mean of channel 0 and of channel 1
        return frames[:, :2].mean(dim=(2, 3))

    v = torch.zeros(1, 3, 3, 4, 4)
    v[0, 0, 0], v[0, 1, 1], v[0, 0, 2] = 1, 1, 1  # features e0, e1, e0
    assert M.temporal_consistency(v, feat).item() == pytest.approx(0.0, abs=1e-12)
    v2 = torch.zeros(1, 3, 2, 4, 4)
    v2[0, 0, 0], v2[0, 0, 1], v2[0, 1, 1] = 1, 1, 1  # features e0 then (e0 + e1): cos 45 deg
    assert M.temporal_consistency(v2, feat).item() == pytest.approx(1 / math.sqrt(2))
    # raw pixels: the cosine of mean-centred frames is their Pearson correlation
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(3, 8, 8, generator=g), torch.rand(3, 8, 8, generator=g)
    video = torch.stack([a, 2 * a + 0.3, b], dim=1)[None]  # (1, 3, 3, 8, 8)
    pearson_ab = torch.corrcoef(torch.stack([(2 * a + 0.3).flatten(), b.flatten()]).double())[0, 1]
    assert M.temporal_consistency(video).item() == pytest.approx((1.0 + float(pearson_ab)) / 2, rel=1e-9)
    # a single-frame video scores 1 by definition
    assert M.temporal_consistency(torch.ones(2, 3, 1, 4, 4)).tolist() == [1.0, 1.0]


def test_text_alignment_averages_every_frame():
    seen = []

    def score(images, prompts):  # score = mean pixel + 10 * len(prompt)
        seen.extend(prompts)
        return images.mean(dim=(1, 2, 3)) + 10 * torch.tensor([len(p) for p in prompts], dtype=torch.float)

    v = torch.zeros(2, 3, 4, 2, 2)
    v[0, :, 1] = 1.0  # video 0: frame means 0, 1, 0, 0 -> 0.25
    v[1] = -0.5
    out = M.text_alignment(v, ["ab", "abc"], score, batch_size=3)
    assert out.tolist() == pytest.approx([0.25 + 20, -0.5 + 30])
    assert seen == ["ab"] * 4 + ["abc"] * 4
    with pytest.raises(ValueError, match="prompts"):
        M.text_alignment(v, ["one"], score)


def test_summarize():
    s = M.summarize([1.0, 2.0, 3.0, 4.0])
    assert s["mean"] == 2.5 and s["n"] == 4
    assert s["std"] == pytest.approx(math.sqrt(5 / 3))
    assert s["sem"] == pytest.approx(math.sqrt(5 / 3) / 2)
    assert M.summarize([7.0])["std"] == 0.0
