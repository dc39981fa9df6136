"""MovingDigits data: determinism and conformance to the fixed spec (MOVING_DIGITS.md)."""

import numpy as np
import pytest
import torch

from t2v_turbo.worlds.moving_digits import dataset as md


def test_determinism():
    a, b = md.MovingDigits(20, seed=3), md.MovingDigits(20, seed=3)
    for i in (0, 7, 19):
        x, y = a[i], b[i]
        assert torch.equal(x["video"], y["video"]) and x["caption"] == y["caption"]
    c = md.MovingDigits(20, seed=4)
    assert any(not torch.equal(a[i]["video"], c[i]["video"]) for i in range(5))
    s1, s2 = iter(md.MovingDigitsStream(seed=1)), iter(md.MovingDigitsStream(seed=1))
    for _ in range(3):
        assert torch.equal(next(s1)["video"], next(s2)["video"])
    v1, c1, _ = md.sample_batch(np.random.default_rng(0), 4)
    v2, c2, _ = md.sample_batch(np.random.default_rng(0), 4)
    assert torch.equal(v1, v2) and c1 == c2


def test_video_format_and_colors():
    item = md.MovingDigits(5, seed=0)[0]
    v = item["video"]
    assert v.shape == (3, 8, 32, 32) and v.dtype == torch.float32
    assert v.min() == -1.0 and v.max() <= 1.0
    for color, rgb in md.COLORS.items():
        video = md.render(0, color, "right", 0, (0, 0))  # glyph 0 is a 0
        bright = (video + 1) / 2
        peak = bright.amax(dim=(1, 2, 3))  # per channel
        assert torch.allclose(peak / peak.max(), torch.tensor(rgb), atol=1e-6), color
        assert peak.max() > 0.8
    # pixel values: glyph resized to 12x12 (bilinear), /16, times the color
    glyph = md.resize_glyphs(md.load_glyphs()[0][:1])[0]
    video = md.render(0, "white", "down", 0, (5, 3))
    assert torch.allclose((video[0, 0, 3:15, 5:17] + 1) / 2, glyph, atol=1e-6)
    assert (video[:, 0, :3] == -1).all() and (video[:, 0, 15:] == -1).all()


@pytest.mark.parametrize("direction", list(md.DIRECTIONS))
def test_motion_two_pixels_per_frame(direction):
    dx, dy = md.DIRECTIONS[direction]
    (x0, x1), (y0, y1) = md.start_range(direction)
    for start in ((x0, y0), (x1, y1)):  # both extreme starts stay inside
        v = md.render(3, "green", direction, 3, start)
        for k in range(1, 8):
            shifted = torch.roll(v[:, 0], shifts=(2 * k * dy, 2 * k * dx), dims=(1, 2))
            assert torch.equal(v[:, k], shifted)
        # the glyph is fully inside in every frame: total brightness is constant
        mass = (v + 1).sum(dim=(0, 2, 3))
        assert torch.allclose(mass, mass[0].expand(8))
    with pytest.raises(ValueError):
        md.render(3, "green", direction, 3, (x1 + 1 if dx > 0 else x0 - 1, y1 + 1 if dy > 0 else y0 - 1))


def test_start_positions_cover_valid_range():
    rng = np.random.default_rng(0)
    starts = {m: set() for m in md.DIRECTIONS}
    for _ in range(3000):
        s = md.sample_spec(rng)
        starts[s.direction].add(s.start)
    for m, seen in starts.items():
        (x0, x1), (y0, y1) = md.start_range(m)
        assert {x for x, _ in seen} == set(range(x0, x1 + 1)) and {y for _, y in seen} == set(
            range(y0, y1 + 1)
        )
    assert md.start_range("right") == ((0, 6), (0, 20)) and md.start_range("up") == ((0, 20), (14, 20))


def test_heldout_glyphs():
    train, held = md.glyph_indices("train"), md.glyph_indices("heldout")
    assert len(train) + len(held) == 1797 and (held % 5 == 0).all() and (train % 5 != 0).all()
    rng = np.random.default_rng(0)
    assert all(md.sample_spec(rng).glyph_index % 5 != 0 for _ in range(500))
    assert all(md.sample_spec(rng, "heldout").glyph_index % 5 == 0 for _ in range(200))
    assert all(md.MovingDigits(50, split="train")[i]["glyph_index"] % 5 != 0 for i in range(50))
    with pytest.raises(ValueError):
        md.render(1, "red", "left", 0, (14, 0))  # glyph 0 shows a 0, not a 1


def test_captions():
    prompts = md.canonical_prompts()
    assert len(prompts) == 280 == len(set(prompts))
    assert "a red digit 7 moving left" in prompts
    for p in prompts[::17]:
        c, d, m = md.parse_caption(p)
        assert md.canonical_caption(c, d, m) == p
        assert all(md.parse_caption(q) == (c, d, m) for q in md.all_captions(c, d, m))
    assert md.all_captions("red", 7, "left")[0] == "a red digit 7 moving left"
    assert md.prompt_subset(10, seed=1) == md.prompt_subset(10, seed=1) and len(md.prompt_subset(10)) == 10
    ds = md.MovingDigits(200, seed=0, paraphrase_prob=0.5)
    caps = [ds.spec(i)[1] for i in range(200)]
    canon = sum(c in prompts for c in caps)
    assert 60 < canon < 140
    assert prompts[0] == "a red digit 0 moving left"
