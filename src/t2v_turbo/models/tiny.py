"""Tiny seeded components built in code: the same classes as the real backbones, at toy sizes.

Used by tests, benchmarks and examples; nothing here downloads anything.
"""

from __future__ import annotations

import torch

from ..schedule import NoiseSchedule
from ..tokenizers import bytes_to_unicode, char_clip_tokenizer  # noqa: F401  (re-exported for tests)
from .diffusers_video import DiffusersVideoBackbone


def tiny_text_encoder(
    vocab_size: int = 514, hidden: int = 32, layers: int = 2, max_length: int = 32, seed: int = 0
):
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        max_position_embeddings=max_length,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
        projection_dim=hidden,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CLIPTextModel(cfg).eval()


def tiny_vae(
    seed: int = 0, channels: tuple[int, ...] = (16, 16), norm_num_groups: int = 8, sample_size: int = 16
):
    """A seeded AutoencoderKL (RGB <-> 4 latent channels, downsampling 2^(len(channels) - 1))."""
    from diffusers import AutoencoderKL

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoencoderKL(
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            down_block_types=("DownEncoderBlock2D",) * len(channels),
            up_block_types=("UpDecoderBlock2D",) * len(channels),
            block_out_channels=channels,
            layers_per_block=1,
            norm_num_groups=norm_num_groups,
            sample_size=sample_size,
        ).eval()


def tiny_unet3d(seed: int = 0, cross_attention_dim: int = 32, time_cond_proj_dim: int | None = None):
    from diffusers import UNet3DConditionModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet3DConditionModel(
            sample_size=8,
            in_channels=4,
            out_channels=4,
            down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
            up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
            block_out_channels=(16, 32),
            layers_per_block=1,
            norm_num_groups=8,
            cross_attention_dim=cross_attention_dim,
            attention_head_dim=4,
            # passed only when set, so a teacher's config keeps it among diffusers' defaults
            **({} if time_cond_proj_dim is None else {"time_cond_proj_dim": time_cond_proj_dim}),
        )


def tiny_modelscope(seed: int = 0, frames: int = 4, size: int = 16) -> DiffusersVideoBackbone:
    """A ~0.4M-parameter ModelScope-architecture teacher: UNet3DConditionModel + AutoencoderKL (2x) + CLIP text."""
    tok = char_clip_tokenizer(32)
    return DiffusersVideoBackbone(
        tiny_unet3d(seed),
        tiny_vae(seed + 1),
        tiny_text_encoder(seed=seed + 2),
        tok,
        NoiseSchedule.make(),
        native_fps=8,
        resolution=(frames, size, size),
    )


def tiny_wan_teacher(seed: int = 0, frames: int = 5, height: int = 16, width: int | None = None, shift: float = 3.0):
    """A tiny Wan2.1 teacher (`tiny_wan_components`: 2-layer WanTransformer3DModel, tiny
    AutoencoderKLWan, 2-layer UMT5): `frames` = 4k + 1, height / width multiples of 16 (InputError
    otherwise). 5 frames at 16x16 -> latents (16, 2, 2, 2)."""
    from ..flow import FlowSchedule
    from .wan import WanBackbone

    c = tiny_wan_components(seed)
    return WanBackbone(
        c["transformer"], c["vae"], c["text_encoder"], c["tokenizer"], FlowSchedule(shift=shift),
        resolution=(frames, height, width or height), max_sequence_length=16,
    )  # fmt: skip


# ------------------------------------------------------------------------------------ tiny Wan2.1
def _tiny_tokenizer(max_length: int = 16):
    """A character-level T5-style tokenizer built in code (no hub): <pad> = 0, </s> = 1 appended,
    <unk> = 2, printable ASCII 3..97. A `PreTrainedTokenizerFast`, so it saves and reloads offline."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    chars = [chr(i) for i in range(32, 127)]
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{c: i + 3 for i, c in enumerate(chars)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tk.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tk,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=max_length,
    )


def tiny_wan_components(seed: int = 0, text_dim: int = 32, max_length: int = 16) -> dict:
    """Seeded tiny Wan components in code (diffusers' own Wan test sizes): a 2-layer transformer with
    2 heads x 12 dims, FFN 32, text_dim 32; AutoencoderKLWan base_dim 3, z_dim 16 (8x spatial, 4x
    temporal); a 2-layer UMT5 encoder (d_model 32); a character tokenizer. ~66K parameters in all."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = _tiny_tokenizer(max_length)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = WanTransformer3DModel(
            patch_size=(1, 2, 2),
            num_attention_heads=2,
            attention_head_dim=12,
            in_channels=16,
            out_channels=16,
            text_dim=text_dim,
            freq_dim=256,
            ffn_dim=32,
            num_layers=2,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            rope_max_seq_len=32,
        )
        torch.manual_seed(seed + 1)
        vae = AutoencoderKLWan(
            base_dim=3,
            z_dim=16,
            dim_mult=[1, 1, 1, 1],
            num_res_blocks=1,
            temperal_downsample=[False, True, True],
        )
        torch.manual_seed(seed + 2)
        text_encoder = UMT5EncoderModel(
            UMT5Config(
                vocab_size=len(tokenizer),
                d_model=text_dim,
                d_kv=8,
                d_ff=64,
                num_layers=2,
                num_heads=4,
                relative_attention_num_buckets=8,
                pad_token_id=0,
                eos_token_id=1,
                decoder_start_token_id=0,
            )
        )
    return {
        "transformer": transformer.eval(),
        "vae": vae.eval(),
        "text_encoder": text_encoder.eval(),
        "tokenizer": tokenizer,
    }


def tiny_wan(seed: int = 0, frames: int = 9, size: int = 16, shift: float = 3.0):
    """A tiny Wan teacher (9 frames at 16x16 -> latents (16, 3, 2, 2)), for tests and benchmarks."""
    return tiny_wan_teacher(seed, frames, size, size, shift)
