"""Image-text rewards: HPSv2 / HPSv2.1, PickScore, CLIP score (ViT-H-14, ViT-L/14), ImageReward.

All CLIP-family models run in transformers' `CLIPModel`; official open_clip-format files are
converted with `t2v_turbo.open_clip_convert`. Scores are computed per frame on (N, C, H, W)
images in [-1, 1]; the base class picks `num_frames` random frames and averages.
Factories import transformers lazily and never download: `path=` is a local file or folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError
from ..weights import checkpoint_forward, load_strict, read_state_dict
from .base import RewardModel, register_reward
from .common import TextCache, freeze, require_path
from .preprocess import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    center_crop,
    normalize,
    resize_longest_and_pad,
    resize_shortest,
    squash,
    to_unit,
)

_HF = "https://huggingface.co"
PUBLISHED = {
    "hpsv2": f"{_HF}/xswu/HPSv2 (HPS_v2_compressed.pt)",
    "hpsv2.1": f"{_HF}/xswu/HPSv2 (HPS_v2.1_compressed.pt)",
    "pickscore": f"{_HF}/yuvalkirstain/PickScore_v1 (a transformers folder)",
    "clip-vit-h-14": f"{_HF}/laion/CLIP-ViT-H-14-laion2B-s32B-b79K (open_clip_pytorch_model.bin)",
    "clip-vit-l-14": "https://openaipublic.azureedge.net/clip/models/b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt "
    f"(or the transformers folder {_HF}/openai/clip-vit-large-patch14)",
    "image-reward": f"{_HF}/THUDM/ImageReward (ImageReward.pt)",
}


def _pooled(out) -> Tensor:
    """transformers 5 returns BaseModelOutputWithPooling from get_*_features, 4.x a tensor."""
    return out if isinstance(out, Tensor) else out.pooler_output


class CLIPReward(RewardModel):
    """cosine(image, text) of a transformers `CLIPModel`, times `scale`.

    Args:
        model: the CLIPModel (frozen here).
        geometry: "longest_pad" (HPS: longest side -> 224, zero pad), "short_center" (CLIP processor:
            short side -> 224, centre crop), or "squash" (resize to 224 x 224).
        scale: a float, or "logit_scale" for exp(logit_scale) (PickScore's reference score).
        text_clean: the text cleaning of the official tokenizer (`t2v_turbo.tokenizers`): "open_clip"
            (ftfy + html unescape; HPS, OpenCLIP models) or "transformers" (NFC only; PickScore's
            processor, transformers CLIP folders). Ids are zero padded (causal text tower, EOT pooling).
        num_frames: frames scored per video.
        dtype: torch.float32 or torch.bfloat16 for the towers (scores are float32).
        gradient_checkpointing: recompute vision-tower activations in backward.
    """

    kind = "image"

    def __init__(
        self,
        model,
        geometry: str = "squash",
        scale: float | str = 1.0,
        num_frames: int = 5,
        dtype: torch.dtype = torch.float32,
        gradient_checkpointing: bool = False,
        text_clean: str = "open_clip",
    ):
        super().__init__()
        self.text_clean = text_clean
        if geometry not in ("longest_pad", "short_center", "squash"):
            raise ValueError(
                f"unknown geometry {geometry!r}; valid: ['longest_pad', 'short_center', 'squash']"
            )
        self.model = freeze(model, dtype)
        self.geometry, self.scale, self.num_frames, self.dtype = geometry, scale, num_frames, dtype
        self.image_size = model.config.vision_config.image_size
        self.context_length = model.config.text_config.max_position_embeddings
        self.text_features = TextCache(self._encode_text)
        if gradient_checkpointing:
            checkpoint_forward(list(model.vision_model.encoder.layers))  # each layer, not the ModuleList

    def preprocess(self, images: Tensor) -> Tensor:
        """(N, C, H, W) in [-1, 1] -> normalised (N, C, 224, 224) pixel values."""
        x = to_unit(images.float())
        if self.geometry == "longest_pad":
            x = resize_longest_and_pad(x, self.image_size)
        elif self.geometry == "short_center":
            x = center_crop(resize_shortest(x, self.image_size), self.image_size, rounding="floor")
        else:
            x = squash(x, self.image_size)
        return normalize(x, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)

    def _encode_text(self, prompts: list[str]) -> Tensor:
        from ..tokenizers import clip_tokenize

        ids = clip_tokenize(prompts, self.context_length, clean=self.text_clean).to(self.model.device)
        return F.normalize(_pooled(self.model.get_text_features(input_ids=ids)).float(), dim=-1)

    def image_features(self, images: Tensor) -> Tensor:
        """(N, C, H, W) in [-1, 1] -> unit-norm image embeddings (N, E), float32."""
        x = self.preprocess(images).to(self.dtype)
        return F.normalize(_pooled(self.model.get_image_features(pixel_values=x)).float(), dim=-1)

    def score_images(self, images: Tensor, prompts: Sequence[str]) -> Tensor:
        img = self.image_features(images)
        txt = self.text_features(prompts, img.device)
        scale = self.model.logit_scale.exp().float() if self.scale == "logit_scale" else float(self.scale)
        return (img * txt).sum(-1) * scale


def clip_config(config=None, default: str = "ViT-H-14"):
    """None / preset name / {'name', 'text', 'vision'} dict / CLIPConfig -> transformers CLIPConfig."""
    from transformers import CLIPConfig

    from ..open_clip_convert import open_clip_config

    if isinstance(config, CLIPConfig):
        return config
    if config is None or isinstance(config, str):
        return open_clip_config(config or default)
    cfg = dict(config)
    return open_clip_config(
        cfg.pop("name", default), text=cfg.pop("text", None), vision=cfg.pop("vision", None)
    )


def load_clip(
    name: str, path, config=None, default: str = "ViT-H-14", key: str | None = None, strict: bool = True
):
    """A transformers CLIPModel from a transformers folder, or an open_clip-format file converted strictly."""
    from transformers import CLIPModel

    from ..open_clip_convert import state_dict_from_open_clip

    expected = "a transformers CLIP folder" if name == "pickscore" else "an open_clip-format state dict file"
    path = require_path(path, name, expected, PUBLISHED[name])
    if path.is_dir():
        return CLIPModel.from_pretrained(str(path), local_files_only=True)
    if name == "pickscore":
        raise FileNotFoundError(f"pickscore: expected a transformers folder, got the file {path}")
    model = CLIPModel(clip_config(config, default))
    sd = read_state_dict(path, unwrap=(key,) if key else (), torchscript=True)
    load_strict(model, state_dict_from_open_clip(sd), what=name, allow_unexpected=not strict)
    return model


def _clip_reward(name, path, config, geometry, scale, default="ViT-H-14", key=None, strict=True, **kw):
    model = load_clip(name, path, config, default=default, key=key, strict=strict)
    kw.setdefault("text_clean", "transformers" if name in ("pickscore", "clip-vit-l-14") else "open_clip")
    return CLIPReward(model, geometry=geometry, scale=scale, **kw)


@register_reward("hpsv2.1")
def hpsv2_1(path: str | Path | None = None, config=None, **kw) -> CLIPReward:
    """HPSv2.1 (OpenCLIP ViT-H-14; checkpoint {'state_dict': open_clip keys}); cosine, no logit scale."""
    return _clip_reward("hpsv2.1", path, config, "longest_pad", 1.0, key="state_dict", **kw)


@register_reward("hpsv2")
def hpsv2(path: str | Path | None = None, config=None, **kw) -> CLIPReward:
    """HPSv2 (same architecture and layout as HPSv2.1)."""
    return _clip_reward("hpsv2", path, config, "longest_pad", 1.0, key="state_dict", **kw)


PICKSCORE_FORMS = {
    # T2V-Turbo's reward_fn.get_pick_score_fn: Resize((224, 224)) then CenterCrop(224) (a no-op), cosine
    "t2v-turbo": ("squash", 1.0),
    # the PickScore paper / model card: CLIP processor (short side 224, centre crop), exp(logit_scale) * cosine
    "pickscore": ("short_center", "logit_scale"),
}


@register_reward("pickscore")
def pickscore(
    path: str | Path | None = None, config=None, form: str = "t2v-turbo", scale: float | str | None = None, **kw
) -> CLIPReward:
    """PickScore_v1 (transformers CLIPModel folder), text as PickScore's processor (no ftfy).

    form "t2v-turbo" (default, the authors' training reward): each frame squashed to 224 x 224,
    plain cosine. form "pickscore": the PickScore paper's geometry (short side 224, centre crop) and
    score exp(logit_scale) * cosine (~100x larger with the real weights). `scale` overrides the form's.
    """
    if form not in PICKSCORE_FORMS:
        raise ConfigError(f"unknown pickscore form {form!r}; valid: {list(PICKSCORE_FORMS)}")
    geometry, form_scale = PICKSCORE_FORMS[form]
    return _clip_reward("pickscore", path, config, geometry, form_scale if scale is None else scale, **kw)


@register_reward("clip-vit-h-14")
def clip_vit_h_14(path: str | Path | None = None, config=None, scale: float = 1.0, **kw) -> CLIPReward:
    """CLIP score with OpenCLIP ViT-H-14 laion2B-s32B-b79K (T2V-Turbo-v2's CLIP reward): images squashed
    to 224 x 224, open_clip tokenizer (ftfy cleaning), cosine."""
    return _clip_reward("clip-vit-h-14", path, config, "squash", scale, **kw)


@register_reward("clip-vit-l-14")
def clip_vit_l_14(path: str | Path | None = None, config=None, scale: float = 1.0, **kw) -> CLIPReward:
    """CLIP score with OpenAI ViT-L/14 (QuickGELU): squashed to 224 x 224, transformers CLIP tokenizer
    (no ftfy; pass text_clean="open_clip" for OpenAI's own tokenizer), cosine."""
    return _clip_reward("clip-vit-l-14", path, config, "squash", scale, default="ViT-L-14", **kw)


@register_reward("image-reward")
def image_reward(path: str | Path | None = None, config: dict | None = None, strict: bool = True, **kw):
    """ImageReward v1.0 (BLIP ViT-L/16 + BERT cross-attention + MLP head); see image_reward.py."""
    from .image_reward import ImageReward

    path = require_path(
        path,
        "image-reward",
        "ImageReward.pt (a state dict with blip.* and mlp.* keys)",
        PUBLISHED["image-reward"],
    )
    model = ImageReward(config, **kw)
    model.load_official(read_state_dict(path, unwrap=()), strict=strict)
    return model
