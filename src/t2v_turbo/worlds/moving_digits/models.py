"""The MovingDigits world's model sizes, built in code (seeded), and loaders for the shipped weights.

Every model is one of the real classes at a tiny size: diffusers `AutoencoderKL` and
`UNetMotionModel`, transformers `CLIPTextModel` / `CLIPModel`, a word-level `CLIPTokenizer`.
"""

from __future__ import annotations

from pathlib import Path

import torch

ASSETS_DIR = Path(__file__).resolve().parents[2] / "assets" / "moving_digits"

VAE_CHANNELS = (32, 64, 64)  # 3 levels -> 4x downsampling: 32x32 frames -> 4x8x8 latents


def build_vae(seed: int = 0, channels: tuple[int, ...] = VAE_CHANNELS):
    """A fresh AutoencoderKL for 32x32 RGB frames with 4 latent channels (downsampling 2^(levels-1))."""
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
            norm_num_groups=16,
            sample_size=32,
        )


def load_vae(path: str | Path | None = None):
    """The shipped (or given) world VAE, float32, eval mode."""
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(Path(path or ASSETS_DIR) / "vae", torch_dtype=torch.float32).eval()


# ------------------------------------------------------------------------------------------ tokenizer
TEXT_MAX_LENGTH = 16
TEXT_HIDDEN = 64


def _bytes_to_unicode() -> dict[int, str]:
    """The CLIP/GPT-2 byte -> printable unicode alphabet (256 symbols)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


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

    chars = list(_bytes_to_unicode().values())
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
