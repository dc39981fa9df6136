"""The reward registry: names, clear missing-file errors, config mixtures, full-size sizes on the meta device."""

from __future__ import annotations

import pytest
import torch

from t2v_turbo.errors import CheckpointError
from t2v_turbo.rewards import REWARDS, build_reward, build_rewards
from test_open_clip_convert import open_clip_state_dict
from test_rewards_image import OC
from test_rewards_video import viclip_checkpoint

NAMES = [
    "hpsv2",
    "hpsv2.1",
    "pickscore",
    "clip-vit-h-14",
    "clip-vit-l-14",
    "image-reward",
    "viclip",
    "internvideo2",
]
FILES = {
    "hpsv2": "HPS_v2_compressed.pt",
    "hpsv2.1": "HPS_v2.1_compressed.pt",
    "pickscore": "PickScore_v1",
    "clip-vit-h-14": "CLIP-ViT-H-14-laion2B",
    "clip-vit-l-14": "ViT-L-14.pt",
    "image-reward": "ImageReward.pt",
    "viclip": "ViClip-InternVid-10M-FLT.pth",
    "internvideo2": "InternVideo2-stage2_1b-224p-f4.pt",
}


def test_all_names_registered_and_unknown_names_listed():
    build_reward  # noqa: B018  (registration happens on first build)
    with pytest.raises(ValueError, match="valid:"):
        build_reward("no-such-reward")
    assert set(NAMES) <= set(REWARDS)


@pytest.mark.parametrize("name", NAMES)
def test_missing_checkpoint_names_file_and_source(name, tmp_path):
    with pytest.raises(CheckpointError) as e:
        build_reward(name, path=tmp_path / "absent.pt")
    msg = str(e.value)
    assert FILES[name] in msg and "https://" in msg and "absent.pt" in msg
    with pytest.raises(CheckpointError):
        build_reward(name)  # no path at all


def test_mixture_from_config_trains_pixels_only(tmp_path):
    torch.save({"state_dict": open_clip_state_dict(OC)}, tmp_path / "hps.pt")
    torch.save(viclip_checkpoint(), tmp_path / "viclip.pth")
    specs = [
        {"name": "hpsv2.1", "weight": 2.0, "frames": 2, "path": tmp_path / "hps.pt", "config": "tiny"},
        {
            "name": "viclip",
            "weight": 3.0,
            "path": tmp_path / "viclip.pth",
            "config": "tiny",
            "crop": "center",
        },
        lambda video, prompts: video.mean(dim=(1, 2, 3, 4)),
    ]
    terms = build_rewards(specs)
    assert [t.name for t in terms] == ["hpsv2.1", "viclip", "reward2"]
    assert [t.weight for t in terms] == [2.0, 3.0, 1.0]
    assert terms[0].model.num_frames == 2 and terms[1].model.num_frames == 8
    video = (torch.rand(2, 3, 16, 32, 48) * 2 - 1).requires_grad_()
    g = torch.Generator().manual_seed(0)
    loss, values = 0.0, []
    for term in terms:  # as the trainer does: the reward picks its frames, the loss subtracts weight * mean
        idx = term.model.select_frames(video.shape[2], g)
        r = term.model(video[:, :, idx], ["a cat", "a dog"])
        values.append(r)
        loss = loss - term.weight * r.mean()
    loss.backward()
    assert all(v.shape == (2,) for v in values)
    assert video.grad.abs().sum() > 0
    for term in terms[:2]:
        assert not term.model.training and all(
            p.grad is None and not p.requires_grad for p in term.model.parameters()
        )


def test_full_size_parameter_counts_on_meta():
    from transformers import CLIPModel

    from t2v_turbo.open_clip_convert import open_clip_config
    from t2v_turbo.rewards.image_reward import ImageReward
    from t2v_turbo.rewards.internvideo2 import InternVideo2
    from t2v_turbo.rewards.viclip import ViCLIP

    def count(m):
        return sum(p.numel() for p in m.parameters())

    with torch.device("meta"):
        h14, l14 = CLIPModel(open_clip_config("ViT-H-14")), CLIPModel(open_clip_config("ViT-L-14"))
        ir, vc, iv = ImageReward(), ViCLIP(), InternVideo2()
    assert count(h14) == 986_109_441  # open_clip ViT-H-14 (HPSv2, PickScore, CLIP score)
    assert count(l14) == 427_616_513  # OpenAI CLIP ViT-L/14
    assert count(ir.blip.visual_encoder) == 303_301_632  # ViT-L/16 at 224
    assert 0.44e9 < count(ir) < 0.45e9
    assert count(vc.vision_encoder) == 303_974_400 and count(vc.text_encoder) == 123_615_744
    assert 1.0e9 < count(iv.vision_encoder) < 1.03e9  # "1B"


@pytest.mark.parametrize("t, n, starts", [(10, 4, {0, 1}), (16, 8, {0, 1}), (16, 4, {0, 1, 2, 3}), (17, 8, {0, 1}), (9, 4, {0, 1})])
def test_video_frames_start_in_the_authors_range(t, n, starts):
    # T2V-Turbo: skip = T // N, start = randint(0, skip), idx = arange(start, T, skip)[:N]
    from t2v_turbo.rewards.base import select_frames

    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(200):
        idx = select_frames(t, n, "video", g)
        skip = t // n
        assert idx == list(range(idx[0], t, skip))[:n] and len(idx) == n
        seen.add(idx[0])
    assert seen == starts
    # the draw is torch.randint(0, skip): the same generator state gives the authors' start
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert select_frames(t, n, "video", g1)[0] == int(torch.randint(0, t // n, (1,), generator=g2))
    assert select_frames(4, 4, "video") == [0, 1, 2, 3] and select_frames(3, 6, "video") == [0, 0, 1, 1, 2, 2]
