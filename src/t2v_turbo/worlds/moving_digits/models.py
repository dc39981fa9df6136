"""The MovingDigits world's model sizes, built in code (seeded), and loaders for the shipped weights.

Every model is one of the real classes at a tiny size: diffusers `AutoencoderKL` and
`UNetMotionModel`, transformers `CLIPTextModel` / `CLIPModel`, a word-level `CLIPTokenizer`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ...tokenizers import bytes_to_unicode

ASSETS_DIR = Path(__file__).resolve().parents[2] / "assets" / "moving_digits"

VAE_CHANNELS = (32, 64, 64)  # 3 levels -> 4x downsampling: 32x32 frames -> 4x8x8 latents


def build_vae(seed: int = 0, channels: tuple[int, ...] = VAE_CHANNELS):
    """A fresh (seeded) AutoencoderKL for 32x32 RGB frames with 4 latent channels (downsampling
    2^(levels-1)), in train mode."""
    from diffusers import AutoencoderKL

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            down_block_types=("DownEncoderBlock2D",) * len(channels),
            up_block_types=("UpDecoderBlock2D",) * len(channels),
            block_out_channels=channels,
            layers_per_block=1,
            norm_num_groups=16,
            sample_size=32,
        )
    return vae.train()


def load_vae(path: str | Path | None = None):
    """The shipped (or given) world VAE, float32, eval mode."""
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(Path(path or ASSETS_DIR) / "vae", torch_dtype=torch.float32).eval()


# ------------------------------------------------------------------------------------------ tokenizer
TEXT_MAX_LENGTH = 16
TEXT_HIDDEN = 64


def word_merges(words: list[str]) -> list[tuple[str, str]]:
    """Deterministic BPE merges that turn each of `words` into a single `word</w>` token.

    Greedy BPE learning in pure Python with ties broken lexicographically (no hash order, so every
    process gets the same merges); applying the merges in rank order reproduces the learned
    segmentation, so every caption word is exactly one token.
    """
    seqs = [tuple(w[:-1]) + (w[-1] + "</w>",) for w in sorted(set(words))]
    merges: list[tuple[str, str]] = []
    while True:
        counts: dict[tuple[str, str], int] = {}
        for s in seqs:
            for pair in zip(s[:-1], s[1:]):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            return merges
        best = min(counts, key=lambda p: (-counts[p], p))
        merges.append(best)
        merged = []
        for s in seqs:
            out, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and (s[i], s[i + 1]) == best:
                    out.append(s[i] + s[i + 1])
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            merged.append(tuple(out))
        seqs = merged


def build_tokenizer(max_length: int = TEXT_MAX_LENGTH):
    """The world's CLIPTokenizer: CLIP's byte alphabet (any text tokenizes) plus hand-built merges
    making every caption word one token. Built without training; always saved with the weights."""
    from transformers import CLIPTokenizer

    from .dataset import caption_words

    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars]
    merges = word_merges(caption_words())
    for a, b in merges:
        if a + b not in tokens:
            tokens.append(a + b)
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)


def text_config(tokenizer, hidden: int = TEXT_HIDDEN, layers: int = 2, max_length: int = TEXT_MAX_LENGTH):
    """CLIPTextConfig of the world's text towers (special-token ids taken from `tokenizer`)."""
    from transformers import CLIPTextConfig

    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        max_position_embeddings=max_length,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|startoftext|>"),
        eos_token_id=eos,
        pad_token_id=eos,
        projection_dim=hidden,
    )


# ------------------------------------------------------------------------------------------ text encoder
def load_tokenizer(path: str | Path | None = None):
    """The shipped (or given world folder's) tokenizer."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(Path(path or ASSETS_DIR) / "tokenizer")


def load_text_encoder(path: str | Path | None = None):
    """The shipped (or given world folder's) frozen CLIPTextModel."""
    from transformers import CLIPTextModel

    return CLIPTextModel.from_pretrained(
        Path(path or ASSETS_DIR) / "text_encoder", torch_dtype=torch.float32
    ).eval()


# ------------------------------------------------------------------------------------------ teacher UNet
UNET_CHANNELS = (32, 64, 64)
POOLED_FPS_DIM = 8  # sinusoidal width of the fps entry of a pooled-text UNet's added embedding


def build_unet(
    seed: int = 0,
    channels: tuple[int, ...] = UNET_CHANNELS,
    cross_attention_dim: int = TEXT_HIDDEN,
    time_cond_proj_dim: int | None = None,
    num_frames: int = 8,
    position_channels: bool = False,
    pooled_text: bool = False,
):
    """A fresh AnimateDiff-style `UNetMotionModel` for 4x8x8x8 latents.

    Spatial self/cross-attention on the two finer levels, a motion module (temporal self-attention
    with sinusoidal frame positions) after every ResNet at every level and in the mid block.
    `position_channels`: 4 + 12 input channels, for `build_backbone(position_channels=True)`. The
    latent part of `conv_in` is the plain model's (same seed, same scale) and the position part a
    default-initialised Conv2d(12, C, 3) of its own (diffusers' recipe for widening `conv_in`, with
    `register_to_config(in_channels=...)`), so adding positions does not shrink the latent weights.
    `pooled_text`: SDXL's `addition_embed_type="text_time"`: the pooled prompt (and the fps) embedded
    and added to the timestep embedding, which scales and shifts every ResNet
    (`DiffusersVideoBackbone.added_cond_kwargs` feeds it).
    """
    pooled = (
        {
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": POOLED_FPS_DIM,
            "projection_class_embeddings_input_dim": cross_attention_dim + POOLED_FPS_DIM,
        }
        if pooled_text
        else {}
    )
    from diffusers import UNetMotionModel

    from .backbone import NUM_POSITION_CHANNELS

    n = len(channels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNetMotionModel(
            sample_size=8,
            in_channels=4,
            out_channels=4,
            down_block_types=("CrossAttnDownBlockMotion",) * (n - 1) + ("DownBlockMotion",),
            up_block_types=("UpBlockMotion",) + ("CrossAttnUpBlockMotion",) * (n - 1),
            block_out_channels=channels,
            layers_per_block=1,
            norm_num_groups=8,
            cross_attention_dim=cross_attention_dim,
            num_attention_heads=4,
            motion_num_attention_heads=4,
            motion_max_seq_length=max(num_frames, 8),
            use_motion_mid_block=True,
            time_cond_proj_dim=time_cond_proj_dim,
            **pooled,
        )
    if position_channels:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            extra = torch.nn.Conv2d(NUM_POSITION_CHANNELS, channels[0], 3, padding=1, bias=False)
        conv = torch.nn.Conv2d(4 + NUM_POSITION_CHANNELS, channels[0], 3, padding=1)
        with torch.no_grad():
            conv.weight.copy_(torch.cat([unet.conv_in.weight, extra.weight], dim=1))
            conv.bias.copy_(unet.conv_in.bias)
        unet.conv_in = conv
        unet.register_to_config(in_channels=4 + NUM_POSITION_CHANNELS)
    return unet


def build_backbone(
    unet, vae, text_encoder, tokenizer, schedule=None, frame_tokens: bool = False, position_channels: bool = False
):
    """Wrap the world's models in a `MovingDigitsBackbone` for 8x32x32 videos at 8 fps (default
    schedule: scaled-linear, epsilon).

    `frame_tokens` appends a frame-index token to each frame's text, `position_channels` feeds the
    UNet fixed (frame, row, column) channels with the latents (see `backbone.py`).
    """
    from ...schedule import NoiseSchedule
    from .backbone import MovingDigitsBackbone

    return MovingDigitsBackbone(
        unet,
        vae,
        text_encoder,
        tokenizer,
        schedule or NoiseSchedule.make(),
        native_fps=8,
        resolution=(8, 32, 32),
        frame_tokens=frame_tokens,
        position_channels=position_channels,
    )


def load_teacher(path: str | Path | None = None, name: str = "teacher"):
    """The shipped (or given world folder's) teacher (or another UNet folder `name`) as a backbone."""
    from .backbone import MovingDigitsBackbone

    root = Path(path or ASSETS_DIR)
    return MovingDigitsBackbone.from_pretrained(root / name, base=root).eval()
