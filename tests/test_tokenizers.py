"""Offline tokenizers from the vendored vocabularies reproduce the real CLIP and BERT ids."""

from __future__ import annotations

from t2v_turbo.rewards.tokenizers import (
    bert_tokenize,
    bert_tokenizer,
    bytes_to_unicode,
    clip_bpe_vocab,
    clip_tokenize,
)


def test_clip_bpe_vocabulary_as_clip_builds_it():
    vocab, merges = clip_bpe_vocab()
    assert len(vocab) == 49408 and len(merges) == 48894
    assert vocab["!"] == 0 and vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
    assert vocab["!</w>"] == 256 and vocab["".join(merges[0])] == 512
    b2u = bytes_to_unicode()
    assert len(set(b2u.values())) == 256 and b2u[ord("a")] == "a" and b2u[ord(" ")] == "Ġ"


def test_clip_ids_match_openai():
    ids = clip_tokenize(["a photo of a cat", "A  photo of a CAT"])
    assert ids.shape == (2, 77)
    assert ids[0, :7].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert ids[0, 7:].eq(0).all()  # open_clip pads with 0
    assert ids[1].tolist() == ids[0].tolist()  # lower-cased, whitespace collapsed
    long = clip_tokenize(["cat " * 100], context_length=32)[0]
    assert long.shape == (32,) and long[0] == 49406 and long[-1] == 49407 and long[1:-1].eq(2368).all()


def test_bert_uncased_ids_and_blip_special_tokens():
    ids, mask = bert_tokenize(["A photo of a cat"], 10)
    assert ids[0].tolist() == [101, 1037, 6302, 1997, 1037, 4937, 102, 0, 0, 0]
    assert mask[0].tolist() == [1] * 7 + [0] * 3
    tok = bert_tokenizer(("[DEC]", "[ENC]"))
    assert tok.convert_tokens_to_ids(["[DEC]", "[ENC]"]) == [30522, 30523] and len(tok) == 30524
    ids, _ = bert_tokenize(["word " * 50], 35, ("[DEC]", "[ENC]"))
    assert ids.shape == (1, 35) and ids[0, 0] == 101 and ids[0, -1] == 102
