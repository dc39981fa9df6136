"""Offline tokenizers (t2v_turbo.tokenizers) reproduce the official CLIP and BERT ids.

The CLIP ids are checked against an independent plain-python BPE written here from the merges file
the package ships and the official cleaning rules (open_clip / OpenAI SimpleTokenizer; transformers'
fast CLIPTokenizer normalizer), not against the library's own code path (the `tokenizers` BPE).
"""

from __future__ import annotations

import gzip
import html
import unicodedata
from pathlib import Path

import pytest
import regex
import torch

import t2v_turbo
from t2v_turbo.errors import ConfigError
from t2v_turbo.tokenizers import (
    bert_tokenize,
    bert_tokenizer,
    bytes_to_unicode,
    clip_bpe_vocab,
    clip_tokenize,
    clip_tokenizer,
)

BPE_FILE = Path(t2v_turbo.__file__).parent / "assets" / "tokenizers" / "bpe_simple_vocab_16e6.txt.gz"
PAT = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)
PROMPTS = [
    "wow!!",
    "what?!",
    "Tom &amp; Jerry",
    "Tom &amp;amp; Jerry",  # unescaped twice by open_clip
    "\u201ccurly\u201d quotes, \u2018single\u2019 and it\u2019s",
    "  A   photo\tof a CAT\n",
    "Hello!!! ?! !?! ... --- (x)",
    "caf\u00e9 na\u00efve \u00c5ngstr\u00f6m",
    "sch\u00f6n Ã©t\u00e9",  # mojibake that ftfy repairs
    "it's 2024 and 3.14",
]
LONG = "a very long prompt about a cat and a dog, " * 20


class ReferenceBPE:
    """OpenAI CLIP's SimpleTokenizer algorithm, from its description, over the shipped merges."""

    def __init__(self):
        bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
        cs, n = bs[:], 0
        for b in range(256):
            if b not in bs:
                bs.append(b)
                cs.append(256 + n)
                n += 1
        self.byte_encoder = dict(zip(bs, [chr(c) for c in cs]))
        lines = gzip.open(BPE_FILE).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
        merges = [tuple(m.split()) for m in lines]
        vocab = list(self.byte_encoder.values())
        vocab += [v + "</w>" for v in vocab] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
        self.encoder = {v: i for i, v in enumerate(vocab)}
        self.ranks = {m: i for i, m in enumerate(merges)}

    def bpe(self, token: str) -> list[str]:
        if token in ("<|startoftext|>", "<|endoftext|>"):
            return [token]
        word = list(token[:-1]) + [token[-1] + "</w>"]
        while len(word) > 1:
            pairs = [(self.ranks.get((a, b), float("inf")), i) for i, (a, b) in enumerate(zip(word, word[1:]))]
            rank, i = min(pairs)
            if rank == float("inf"):
                break
            first, second = word[i], word[i + 1]
            out, j = [], 0
            while j < len(word):  # merge every occurrence of the best pair, left to right
                if j < len(word) - 1 and word[j] == first and word[j + 1] == second:
                    out.append(first + second)
                    j += 2
                else:
                    out.append(word[j])
                    j += 1
            word = out
        return word

    def encode(self, text: str, clean: str) -> list[int]:
        if clean == "open_clip":
            import ftfy

            text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
            text = " ".join(text.split()).lower()
        else:  # transformers' fast CLIPTokenizer normalizer
            text = regex.sub(r"\s+", " ", unicodedata.normalize("NFC", text)).lower()
        ids = []
        for piece in PAT.findall(text):
            piece = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids += [self.encoder[t] for t in self.bpe(piece)]
        return ids

    def tokenize(self, text: str, clean: str, n: int = 77) -> list[int]:
        ids = [49406, *self.encode(text, clean), 49407]
        if len(ids) > n:
            ids = ids[:n]
            ids[-1] = 49407
        return ids + [0] * (n - len(ids))


@pytest.fixture(scope="module")
def ref():
    return ReferenceBPE()


def test_clip_bpe_vocabulary_as_clip_builds_it(ref):
    vocab, merges = clip_bpe_vocab()
    assert len(vocab) == 49408 and len(merges) == 48894
    assert vocab == ref.encoder
    assert vocab["!"] == 0 and vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
    assert vocab["!</w>"] == 256 and vocab["".join(merges[0])] == 512
    b2u = bytes_to_unicode()
    assert b2u == ref.byte_encoder and list(b2u) == list(ref.byte_encoder)  # same map, same order
    assert len(set(b2u.values())) == 256 and b2u[ord("a")] == "a" and b2u[ord(" ")] == "Ġ"


def test_one_byte_table():
    from t2v_turbo.models import tiny

    assert tiny.bytes_to_unicode is bytes_to_unicode


@pytest.mark.parametrize("clean", ["open_clip", "transformers"])
def test_clip_ids_match_reference_bpe(ref, clean):
    prompts = PROMPTS + [LONG]
    ids = clip_tokenize(prompts, clean=clean)
    assert ids.shape == (len(prompts), 77) and ids.dtype == torch.long
    for row, p in zip(ids.tolist(), prompts):
        assert row == ref.tokenize(p, clean), p
    short = clip_tokenize(prompts, context_length=32, clean=clean)
    assert [r for r in short.tolist()] == [ref.tokenize(p, clean, 32) for p in prompts]


def test_clip_punctuation_is_not_special():
    # "!" is id 0 (the pad id) but never a special token: BPE still merges "!!" (issue 14 item 1)
    tok = clip_tokenizer("open_clip")
    assert tok.encode("wow!!") == [2781, 748]
    assert tok.encode("what?!") == [768, 2835]  # "what" + "?!" (two tokens, none lost)
    ids = clip_tokenize(["wow!!"])[0]
    assert ids[:4].tolist() == [49406, 2781, 748, 49407] and ids[4:].eq(0).all()
    # padding by id: pad_id is configurable, text ids unchanged
    assert clip_tokenize(["wow!!"], pad_id=49407)[0, :4].tolist() == [49406, 2781, 748, 49407]


def test_clip_cleaning_differs_per_implementation():
    oc, hf = clip_tokenizer("open_clip"), clip_tokenizer("transformers")
    # open_clip unescapes html (twice) and ftfy uncurls quotes; transformers' CLIP tokenizer does neither
    assert oc.encode("Tom &amp; Jerry") == oc.encode("Tom & Jerry") == oc.encode("Tom &amp;amp; Jerry")
    assert hf.encode("Tom &amp; Jerry") != hf.encode("Tom & Jerry")
    assert oc.encode("\u201cquoted\u201d") == oc.encode('"quoted"')
    assert hf.encode("\u201cquoted\u201d") != hf.encode('"quoted"')
    assert oc.encode("A  photo\tof a CAT") == hf.encode("a photo of a cat") == [320, 1125, 539, 320, 2368]
    with pytest.raises(ConfigError, match="open_clip"):
        clip_tokenize(["x"], clean="ftfy")


def test_clip_truncation_keeps_eot_and_matches_open_clip():
    ids = clip_tokenize(["a photo of a cat", "A  photo of a CAT"])
    assert ids[0, :7].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert ids[0, 7:].eq(0).all() and ids[1].tolist() == ids[0].tolist()
    long = clip_tokenize(["cat " * 100], context_length=32)[0]
    assert long.shape == (32,) and long[0] == 49406 and long[-1] == 49407 and long[1:-1].eq(2368).all()
    # the transformers-call form used by VideoCrafter2's tokenize: unpadded, EOT kept last
    rows = clip_tokenizer()(["cat " * 100, "wow!!"], truncation=True, max_length=77)["input_ids"]
    assert len(rows[0]) == 77 and rows[0][-1] == 49407 and rows[1] == [49406, 2781, 748, 49407]


def test_bert_uncased_ids_and_blip_special_tokens():
    ids, mask = bert_tokenize(["A photo of a cat"], 10)
    assert ids[0].tolist() == [101, 1037, 6302, 1997, 1037, 4937, 102, 0, 0, 0]
    assert mask[0].tolist() == [1] * 7 + [0] * 3
    tok = bert_tokenizer(("[DEC]", "[ENC]"))
    assert tok.convert_tokens_to_ids(["[DEC]", "[ENC]"]) == [30522, 30523] and len(tok) == 30524
    ids, _ = bert_tokenize(["word " * 50], 35, ("[DEC]", "[ENC]"))
    assert ids.shape == (1, 35) and ids[0, 0] == 101 and ids[0, -1] == 102


def test_bert_without_sep_as_internvideo2():
    # InternVideo2's tokenizer writes "[CLS] text" (no [SEP]); max length 40 keeps 39 text tokens
    words = (Path(t2v_turbo.__file__).parent / "assets/tokenizers/bert_base_uncased_vocab.txt").read_text().splitlines()
    wid = {w: i for i, w in enumerate(words)}
    ids, mask = bert_tokenize(["A cat jumping", "waves on a beach at sunset"], 40, sep=False)
    assert ids[0, :5].tolist() == [101, wid["a"], wid["cat"], wid["jumping"], 0]
    assert ids[1, :8].tolist() == [101] + [wid[w] for w in "waves on a beach at sunset".split()] + [0]
    assert mask.sum(1).tolist() == [4, 7] and not (ids == 102).any()
    ids, mask = bert_tokenize(["word " * 50], 40, sep=False)
    assert ids[0].tolist() == [101] + [wid["word"]] * 39 and mask[0].eq(1).all()
