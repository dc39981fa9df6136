"""Reward preprocessing: geometry, constants, PIL parity of the bicubic resize, crops, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from t2v_turbo.rewards.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    center_crop,
    crop_offsets,
    longest_side_size,
    normalize,
    random_crop,
    resize,
    resize_longest_and_pad,
    resize_shortest,
    short_side_crop_video,
    shortest_side_size,
    to_unit,
)


def test_constants():
    assert OPENAI_CLIP_MEAN == (0.48145466, 0.4578275, 0.40821073)
    assert OPENAI_CLIP_STD == (0.26862954, 0.26130258, 0.27577711)
    assert IMAGENET_MEAN == (0.485, 0.456, 0.406) and IMAGENET_STD == (0.229, 0.224, 0.225)
    x = torch.ones(1, 3, 2, 2) * 0.5
    y = normalize(x, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
    assert y[0, 2, 0, 0].item() == pytest.approx((0.5 - 0.40821073) / 0.27577711, abs=1e-6)


def test_hps_longest_side_resize_and_zero_padding():
    # a 320 x 512 frame -> 140 x 224 plus 42 rows of padding top and bottom
    assert longest_side_size(320, 512, 224) == (140, 224)
    x = torch.full((2, 3, 320, 512), 0.5)
    y = resize_longest_and_pad(x, 224)
    assert y.shape == (2, 3, 224, 224)
    assert torch.all(y[..., :42, :] == 0) and torch.all(y[..., 182:, :] == 0)
    torch.testing.assert_close(y[..., 42:182, :], torch.full((2, 3, 140, 224), 0.5))
    # portrait and odd paddings: (d // 2 before, rest after)
    y = resize_longest_and_pad(torch.ones(1, 3, 100, 61), 224)
    nh, nw = longest_side_size(100, 61, 224)
    assert (nh, nw) == (224, 137) and torch.all(y[..., :, :43] == 0) and torch.all(y[..., :, 43 + 137 :] == 0)
    assert torch.all(y[..., :, 43 : 43 + 137] > 0.99)


def test_bicubic_antialias_matches_pil():
    from PIL import Image

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    img = np.clip(img.astype(float) * 0.3 + np.linspace(0, 170, 96)[None, :, None], 0, 255).astype(np.uint8)
    ref = np.asarray(Image.fromarray(img).resize((56, 37), Image.BICUBIC)).astype(np.float32) / 255
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    ours = resize(x, (37, 56))[0].permute(1, 2, 0).clamp(0, 1).numpy()
    # PIL rounds to uint8: agree to about one grey level
    assert np.abs(ours - ref).max() < 2.0 / 255
    assert np.abs(ours - ref).mean() < 0.3 / 255


def test_shortest_side_resize_and_center_crop():
    assert shortest_side_size(320, 512, 224) == (224, 358)  # int(224 * 512 / 320) = int(358.4)
    assert shortest_side_size(512, 300, 224) == (382, 224)
    assert crop_offsets(358, 224, 224) == (67, 0)
    assert crop_offsets(225, 227, 224, "round") == (0, 2)  # torchvision: round(0.5) = 0, round(1.5) = 2
    assert crop_offsets(225, 227, 224, "floor") == (0, 1)  # transformers: floor
    x = torch.arange(10 * 12, dtype=torch.float32).view(1, 1, 10, 12)
    assert torch.equal(center_crop(x, 4, "floor"), x[..., 3:7, 4:8])
    y = resize_shortest(torch.rand(1, 3, 320, 512), 224)
    assert y.shape[-2:] == (224, 358)


@pytest.mark.parametrize(
    "h, w, rounded, truncated",
    [
        (232, 246, (224, 238), (224, 237)),  # 246 * 224 / 232 = 237.517...
        (246, 232, (238, 224), (237, 224)),
        (300, 512, (224, 382), (224, 382)),  # 382.29...
        (250, 333, (224, 298), (224, 298)),  # 298.37...
        (250, 331, (224, 297), (224, 296)),  # 296.576
        (224, 400, (224, 400), (224, 400)),
    ],
)
def test_short_side_resize_rounding(h, w, rounded, truncated):
    # T2V-Turbo's ResizeCropMinSize rounds every side of (h, w) * 224 / min(h, w); torchvision
    # Resize(224) and the CLIP processor truncate the long side
    assert shortest_side_size(h, w, 224, "round") == rounded
    assert shortest_side_size(h, w, 224) == shortest_side_size(h, w, 224, "int") == truncated
    long = max(h, w) * 224 / min(h, w)
    assert max(rounded) == int(long + 0.5) and max(truncated) == int(long)
    video = torch.rand(1, 3, 2, h, w)
    out = short_side_crop_video(video, 224, "center")
    frames = resize(video[:, :, 0], rounded)
    top, left = crop_offsets(*rounded, 224)
    torch.testing.assert_close(out[:, :, 0], frames[..., top : top + 224, left : left + 224])
    with pytest.raises(ValueError):
        shortest_side_size(h, w, 224, "floor")


def test_video_crop_shared_across_frames_and_seeded():
    b, t = 3, 4
    video = torch.rand(b, 3, 1, 40, 60).expand(b, 3, t, 40, 60)  # identical frames within a video
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a = short_side_crop_video(video, 20, "random", g1)
    c = short_side_crop_video(video, 20, "random", g2)
    assert a.shape == (b, 3, t, 20, 20) and torch.equal(a, c)
    assert torch.equal(a[:, :, :1].expand_as(a), a)  # the same crop for every frame of a video
    centre = short_side_crop_video(video, 20, "center")
    resized = resize_shortest(video[:, :, 0], 20)  # (b, 3, 20, 30)
    torch.testing.assert_close(centre[:, :, 0], resized[..., :, 5:25])
    with pytest.raises(ValueError):
        short_side_crop_video(video, 20, "left")
    g = torch.Generator().manual_seed(0)
    crops = {tuple(random_crop(torch.arange(100.0).view(10, 10), 3, g)[0, :1].tolist()) for _ in range(30)}
    assert len(crops) > 5  # offsets vary


def test_preprocessing_is_differentiable():
    x = torch.empty(1, 3, 320, 512).uniform_(-0.9, 0.9).requires_grad_()
    y = normalize(resize_longest_and_pad(to_unit(x), 224), OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
    y.sum().backward()
    assert x.grad.abs().sum() > 0
    # the [-1, 1] -> [0, 1] map: slope 1/2 inside, clamped outside
    z = torch.tensor([-2.0, 0.0, 0.5, 2.0], requires_grad=True)
    to_unit(z).sum().backward()
    assert z.grad.tolist() == [0.0, 0.5, 0.5, 0.0]
