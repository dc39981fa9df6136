"""The world's build stages and reward models: options, recipes, caches, and a quick end-to-end build."""

import pytest
import torch

from t2v_turbo.errors import CheckpointError, ConfigError, InputError
from t2v_turbo.worlds.moving_digits import models as mdm


@pytest.mark.parametrize("name", ["md-image", "md-video"])
def test_reward_factories_reject_unknown_options(name, tmp_path):
    from t2v_turbo.rewards.base import build_reward

    with pytest.raises(ConfigError, match=r"\['bogus', 'weight_decay'\].*valid: \['num_frames', 'path'\]"):
        build_reward(name, bogus=1, weight_decay=0.1)
    with pytest.raises(CheckpointError, match="no reward_config.json"):
        build_reward(name, path=str(tmp_path))


def test_reward_text_features_use_the_shared_cache():
    from t2v_turbo.rewards.common import TextCache
    from t2v_turbo.worlds.moving_digits.rewards import build_video_reward

    reward = build_video_reward(seed=0).eval()
    assert isinstance(reward._cache, TextCache)
    prompts = ["a red digit 7 moving left", "a cyan digit 0 moving up", "a red digit 7 moving left"]
    with torch.no_grad():
        fresh = reward.text_features(prompts, train=True)
    cached = reward.text_features(prompts)
    torch.testing.assert_close(cached, fresh, rtol=0, atol=0)
    torch.testing.assert_close(cached.norm(dim=-1), torch.ones(3))
    assert sorted(reward._cache.store) == sorted(set(prompts)) and not cached.requires_grad
    with torch.no_grad():  # the cache holds what it computed first until it is cleared
        reward.text_encoder.text_projection.weight.mul_(-1)
    torch.testing.assert_close(reward.text_features(prompts[:1]), fresh[:1], rtol=0, atol=0)
    reward.clear_text_cache()
    torch.testing.assert_close(reward.text_features(prompts[:1]), -fresh[:1], rtol=0, atol=1e-6)


def test_student_recipes_come_from_the_preset():
    from t2v_turbo.config import find_preset, read_yaml
    from t2v_turbo.worlds.moving_digits.students import student_recipe

    preset = read_yaml(find_preset("moving-digits"))["rewards"]
    assert student_recipe("turbo") == {"rewards": preset}
    assert [(r["name"], r["weight"]) for r in preset] == [("md-image", 4.0), ("md-video", 1.0)]
    assert student_recipe("vcm") == {"rewards": []}
    with pytest.raises(InputError, match="valid: \\['turbo', 'vcm'\\]"):
        student_recipe("chain")


def test_stages_refuse_bad_arguments_before_writing(tmp_path):
    from t2v_turbo.worlds.moving_digits.build import build_world
    from t2v_turbo.worlds.moving_digits.stage_text import train_text_and_rewards

    with pytest.raises(ConfigError, match="valid: \\['random', 'video-reward'\\]"):
        train_text_and_rewards(tmp_path, text_encoder="clip")
    with pytest.raises(ConfigError, match="needs the video reward"):
        train_text_and_rewards(tmp_path, text_encoder="video-reward", kinds=("image",))
    with pytest.raises(InputError, match="unknown stages \\['unet'\\]"):
        build_world(tmp_path, stages=("vae", "unet"))
    with pytest.raises(InputError, match="explicit out_dir"):
        build_world(None, quick=True)
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_quick_build_writes_a_loadable_world(tmp_path):
    from t2v_turbo.models.base import read_metadata
    from t2v_turbo.models.registry import load_backbone
    from t2v_turbo.rewards.base import build_reward
    from t2v_turbo.worlds.moving_digits.backbone import MovingDigitsBackbone
    from t2v_turbo.worlds.moving_digits.build import build_world

    report = build_world(tmp_path, quick=True, progress=False)
    assert set(report) >= {"vae", "text_and_rewards", "teacher", "seconds"}
    assert report["teacher"]["steps"] == 10
    for name in ("vae.json", "text_and_rewards.json", "teacher.json", "build.json"):
        assert (tmp_path / "logs" / name).is_file()
    assert read_metadata(tmp_path / "teacher")["family"] == "moving-digits"
    teacher = load_backbone(tmp_path / "teacher")
    assert type(teacher) is MovingDigitsBackbone and teacher.position_channels
    assert teacher.encode_prompt(["a red digit 7 moving left"]).shape == (1, mdm.TEXT_MAX_LENGTH, mdm.TEXT_HIDDEN)
    reward = build_reward("md-video", path=str(tmp_path / "reward_video"))
    assert reward(torch.zeros(1, 3, 8, 32, 32), ["a red digit 7 moving left"]).shape == (1,)
