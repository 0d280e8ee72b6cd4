"""Tests for :mod:`openblip.tokenizer` and :mod:`openblip.text`."""

from __future__ import annotations

import random
import subprocess
import sys
from importlib import resources

import pytest
import torch

from openblip.text import pre_caption, pre_question
from openblip.tokenizer import BatchEncoding, BlipTokenizer, clean_up_tokenization, get_tokenizer

N_STRINGS = 3000

# ---------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tok() -> BlipTokenizer:
    return get_tokenizer()


@pytest.fixture(scope="module")
def vocab_lines() -> list[str]:
    text = resources.files("openblip").joinpath("resources", "bert-base-uncased-vocab.txt").read_text("utf-8")
    return text.splitlines()


@pytest.fixture(scope="module")
def hf_tok(vocab_lines):
    """transformers' BertTokenizer from the same vocabulary, with BLIP's two added special tokens."""
    transformers = pytest.importorskip("transformers")
    from transformers import BertTokenizer

    if int(transformers.__version__.split(".")[0]) >= 5:
        # transformers 5 ignores ``vocab_file``; it takes the vocabulary mapping directly.
        t = BertTokenizer(vocab={w: i for i, w in enumerate(vocab_lines)})
    else:
        path = resources.files("openblip").joinpath("resources", "bert-base-uncased-vocab.txt")
        with resources.as_file(path) as p:
            t = BertTokenizer(vocab_file=str(p))
    assert len(t) == 30522
    t.add_special_tokens({"bos_token": "[DEC]"})
    t.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    assert len(t) == 30524
    return t


_WORDS = (
    "a man riding a horse on the beach dog cat sitting bench table two people playing frisbee in park "
    "kitchen with white cabinets and stainless steel appliances giraffe standing next to tree pizza "
    "unbelievable antidisestablishmentarianism tokenization xylophone"
).split()
_PIECES = [
    "café",
    "naïve",
    "Ñandú",
    "résumé",
    "Straße",
    "ÉCOLE",
    "façade",
    "日本語",
    "中文字符",
    "한국어",
    "ひらがな",
    "😀",
    "🐶🐱",
    "👍🏽",
    "it's",
    "don't",
    "I'm",
    "we've",
    "they're",
    "'quoted'",
    "rock 'n' roll",
    "o'clock",
    "well-known",
    "state-of-the-art",
    "-",
    "--",
    "3.14",
    "1,000",
    "42",
    "2024-01-01",
    "#1",
    "$5",
    "100%",
    "A&B",
    "e.g.",
    "U.S.A.",
    "Hello",
    "WORLD",
    "MiXeD",
    "CamelCase",
    ".",
    ",",
    "?",
    "!",
    "...",
    ";",
    ":",
    '"',
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    "~",
    "*",
    "/",
    "\\",
    "@",
    "^",
    "_",
    "|",
    "<",
    ">",
    "=",
    "+",
    "`",
    "«",
    "»",
    "—",
    "…",
    "¿",
    "¡",
    "\u00a0",
    "\u200b",
    "e\u0301",
    "\ufffd",
    "\x00",
    "\x07",
    "Ω≈ç√∫",
    "αβγ",
    "Привет",
    "مرحبا",
    "שלום",
    "x" * 120,
    "aaaa" * 30,
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "[DEC]",
    "[ENC]",
    "[unk]",
]
_SEPARATORS = [" ", " ", " ", " ", "", "  ", "   ", "\t", "\n", " \n ", "\r\n", " \t\t "]


def _random_string(rng: random.Random) -> str:
    n = rng.choice([0, 1, 2, 3, 5, 8, 12, 20, 40])
    parts = []
    for _ in range(n):
        r = rng.random()
        if r < 0.55:
            w = rng.choice(_WORDS)
            if rng.random() < 0.15:
                w = w.upper() if rng.random() < 0.5 else w.capitalize()
            parts.append(w)
        else:
            parts.append(rng.choice(_PIECES))
        parts.append(rng.choice(_SEPARATORS))
    s = "".join(parts)
    if rng.random() < 0.1:
        s = rng.choice(_SEPARATORS) + s
    return s


def _long_string(rng: random.Random) -> str:
    return " ".join(rng.choice(_WORDS + _PIECES[:40]) for _ in range(rng.randint(300, 700)))


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    rng = random.Random(1234)
    texts = [_random_string(rng) for _ in range(N_STRINGS)]
    texts += [_long_string(rng) for _ in range(30)]
    texts += ["", " ", "\n", "a", "A.", "a man , riding . a horse !"]
    return texts


# ---------------------------------------------------------------------------------------------------- special tokens


def test_special_token_ids(tok):
    assert len(tok) == tok.vocab_size == 30524
    assert (tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id) == (
        0,
        100,
        101,
        102,
        103,
    )
    assert tok.eos_token_id == tok.sep_token_id == 102
    assert tok.bos_token_id == tok.dec_token_id == 30522
    assert tok.enc_token_id == 30523
    assert tok.bos_token == "[DEC]" and tok.enc_token == "[ENC]"
    assert tok.additional_special_tokens_ids == [30523]
    assert tok.convert_ids_to_tokens([0, 100, 101, 102, 103, 30522, 30523]) == [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        "[DEC]",
        "[ENC]",
    ]
    assert tok.convert_tokens_to_ids(["[DEC]", "[ENC]", "dog", "not-a-token"]) == [30522, 30523, 3899, 100]
    assert tok.convert_tokens_to_ids("[CLS]") == 101
    assert sorted(tok.all_special_ids) == [0, 100, 101, 102, 103, 30522, 30523]
    assert get_tokenizer() is tok


def test_special_ids_match_transformers(tok, hf_tok):
    assert hf_tok.bos_token_id == tok.bos_token_id
    assert hf_tok.convert_tokens_to_ids("[ENC]") == tok.enc_token_id
    assert sorted(hf_tok.all_special_ids) == sorted(tok.all_special_ids)


def test_first_token_convention(tok):
    enc = tok(["a dog", "a cat on a mat"], padding="longest", return_tensors="pt")
    ids = enc["input_ids"]
    # The tokenizer always starts with [CLS]; the models swap it for [ENC] / [DEC].
    assert (ids[:, 0] == tok.cls_token_id).all()
    assert ids[0].tolist() == [101, 1037, 3899, 102, 0, 0, 0]
    enc_ids = ids.clone()
    enc_ids[:, 0] = tok.enc_token_id
    dec_ids = ids.clone()
    dec_ids[:, 0] = tok.bos_token_id
    assert tok.convert_ids_to_tokens(int(enc_ids[0, 0])) == "[ENC]"
    assert tok.convert_ids_to_tokens(int(dec_ids[0, 0])) == "[DEC]"
    # Decoding drops the start tokens either way.
    assert tok.batch_decode(dec_ids) == ["a dog", "a cat on a mat"]
    assert tok.batch_decode(enc_ids) == ["a dog", "a cat on a mat"]


def test_package_does_not_import_transformers():
    code = "import sys, openblip.tokenizer, openblip.text; assert 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------------------------- encoding


def test_call_outputs(tok):
    enc = tok("a dog")
    assert isinstance(enc, dict) and isinstance(enc, BatchEncoding)
    assert set(enc) == {"input_ids", "attention_mask"}
    assert enc.input_ids is enc["input_ids"]
    assert enc["input_ids"].dtype == torch.long and enc["attention_mask"].dtype == torch.long
    assert enc["input_ids"].tolist() == [[101, 1037, 3899, 102]]
    assert enc["attention_mask"].tolist() == [[1, 1, 1, 1]]

    lists = tok(["a dog", "a"], padding=False, return_tensors=None)
    assert lists["input_ids"] == [[101, 1037, 3899, 102], [101, 1037, 102]]
    assert lists["attention_mask"] == [[1, 1, 1, 1], [1, 1, 1]]

    padded = tok(["a dog", "a"], padding="max_length", max_length=6)
    assert padded["input_ids"].tolist() == [[101, 1037, 3899, 102, 0, 0], [101, 1037, 102, 0, 0, 0]]
    assert padded["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0]]

    trunc = tok("a man riding a horse", truncation=True, max_length=4)
    assert trunc["input_ids"].tolist() == [[101, 1037, 2158, 102]]
    no_special = tok("a man riding a horse", truncation=True, max_length=3, add_special_tokens=False)
    assert no_special["input_ids"].tolist() == [[1037, 2158, 5559]]

    assert tok.encode("A Dog!") == [101, 1037, 3899, 999, 102]
    assert tok.encode("A Dog!", add_special_tokens=False) == [1037, 3899, 999]
    assert tok.tokenize("unaffable café") == ["una", "##ffa", "##ble", "cafe"]

    with pytest.raises(ValueError, match="max_length"):
        tok(["a"], padding="max_length")
    with pytest.raises(ValueError, match="different lengths"):
        tok(["a dog", "a"], padding=False)
    with pytest.raises(TypeError):
        tok(["a", 3])
    with pytest.raises(ValueError):
        tok("a", truncation=True, max_length=1)

    empty = tok([])
    assert empty["input_ids"].shape == (0, 0)


def _hf_lists(hf_tok, texts, **kwargs):
    out = hf_tok(texts, return_token_type_ids=False, **kwargs)
    return out["input_ids"], out["attention_mask"]


def _ours_lists(tok, texts, **kwargs):
    out = tok(texts, return_tensors=None, **kwargs)
    return out["input_ids"], out["attention_mask"]


def test_parity_unpadded(tok, hf_tok, corpus):
    assert _ours_lists(tok, corpus, padding=False) == _hf_lists(hf_tok, corpus, padding=False)
    assert _ours_lists(tok, corpus, padding=False, add_special_tokens=False) == _hf_lists(
        hf_tok, corpus, padding=False, add_special_tokens=False
    )


@pytest.mark.parametrize("max_length", [35, 40])
def test_parity_truncation(tok, hf_tok, corpus, max_length):
    ours = _ours_lists(tok, corpus, padding=False, truncation=True, max_length=max_length)
    assert ours == _hf_lists(hf_tok, corpus, padding=False, truncation=True, max_length=max_length)
    assert max(len(x) for x in ours[0]) == max_length
    assert all(x[-1] == tok.sep_token_id and x[0] == tok.cls_token_id for x in ours[0])


def test_parity_padding_longest(tok, hf_tok, corpus):
    for start in range(0, len(corpus), 64):
        batch = corpus[start : start + 64]
        ours = tok(batch, padding="longest", truncation=True, max_length=35, return_tensors="pt")
        theirs = hf_tok(batch, padding="longest", truncation=True, max_length=35, return_tensors="pt")
        assert torch.equal(ours["input_ids"], theirs["input_ids"])
        assert torch.equal(ours["attention_mask"], theirs["attention_mask"])
    short = corpus[:256]
    assert _ours_lists(tok, short, padding=True) == _hf_lists(hf_tok, short, padding=True)


def test_parity_padding_max_length(tok, hf_tok, corpus):
    ours = tok(corpus, padding="max_length", truncation=True, max_length=30, return_tensors="pt")
    theirs = hf_tok(corpus, padding="max_length", truncation=True, max_length=30, return_tensors="pt")
    assert ours["input_ids"].shape == (len(corpus), 30)
    assert torch.equal(ours["input_ids"], theirs["input_ids"])
    assert torch.equal(ours["attention_mask"], theirs["attention_mask"])


def test_long_strings_exceed_512_tokens(tok, corpus):
    lengths = [len(ids) for ids in tok(corpus[-36:-6], padding=False, return_tensors=None)["input_ids"]]
    assert max(lengths) > 512


def test_default_truncation_length(tok, corpus):
    ids = tok(corpus[-36:-6], truncation=True, return_tensors="pt")["input_ids"]
    assert ids.shape[1] == 512


# ---------------------------------------------------------------------------------------------------- decoding

_REF_SPECIAL_IDS = {0, 100, 101, 102, 103, 30522, 30523}
_REF_CLEANUP = [" .", ".", " ?", "?", " !", "!", " ,", ",", " ' ", "'", " n't", "n't"]
_REF_CLEANUP += [" 'm", "'m", " 's", "'s", " 've", "'ve", " 're", "'re"]


def _reference_decode(ids: list[int], vocab: list[str], skip: bool = True, cleanup: bool = True) -> str:
    """Plain restatement of transformers 4.15's slow BertTokenizer.decode for the BLIP tokenizer."""
    full_vocab = vocab + ["[DEC]", "[ENC]"]
    chunks: list[list[str] | str] = []
    for i in ids:
        if skip and i in _REF_SPECIAL_IDS:
            continue
        token = full_vocab[i] if 0 <= i < len(full_vocab) else "[UNK]"
        if token in ("[DEC]", "[ENC]"):
            chunks.append(token)  # added tokens are their own sub-text
        elif chunks and isinstance(chunks[-1], list):
            chunks[-1].append(token)
        else:
            chunks.append([token])
    pieces = [c if isinstance(c, str) else " ".join(c).replace(" ##", "").strip() for c in chunks]
    text = " ".join(pieces)
    if cleanup:
        for k in range(0, len(_REF_CLEANUP), 2):
            text = text.replace(_REF_CLEANUP[k], _REF_CLEANUP[k + 1])
    return text


def test_decode_examples(tok):
    ids = tok.encode("It's a dog's toy, isn't it? I'm sure we've seen they're here. Wow!")
    assert tok.decode(ids) == "it's a dog's toy, isn't it? i'm sure we've seen they're here. wow!"
    assert tok.decode(ids, clean_up_tokenization_spaces=False) == (
        "it ' s a dog ' s toy , isn ' t it ? i ' m sure we ' ve seen they ' re here . wow !"
    )
    assert clean_up_tokenization("the dog 's bone") == "the dog's bone"
    assert clean_up_tokenization("a , b") == "a, b"
    assert clean_up_tokenization("x ' y") == "x'y"
    assert tok.decode(tok.encode("a man, riding a horse.")) == "a man, riding a horse."
    # Special tokens: dropped when skipping, otherwise emitted ([DEC]/[ENC] as separate space-joined sub-texts).
    ids = [30522, 2023, 30523, 3899, 2015, 101, 100, 102, 0]
    assert tok.decode(ids) == "this dogs"
    assert tok.decode(ids, skip_special_tokens=False) == "[DEC] this [ENC] dogs [CLS] [UNK] [SEP] [PAD]"
    assert tok.decode([2023, 30523, 2015]) == "thiss"  # the skipped [ENC] no longer splits the sub-text
    assert tok.decode([2023, 30523, 2015], skip_special_tokens=False) == "this [ENC] ##s"
    # Tensors, ints and out-of-range ids (-> "[UNK]", never skipped, as in 4.15).
    assert tok.decode(torch.tensor([101, 3899, 102])) == "dog"
    assert tok.decode(3899) == "dog"
    assert tok.decode([3899, 99999]) == "dog [UNK]"
    assert tok.batch_decode(torch.tensor([[101, 3899, 102, 0], [101, 4937, 102, 0]])) == ["dog", "cat"]
    assert tok.batch_decode([[101, 3899, 102], [30522, 4937]]) == ["dog", "cat"]
    assert tok.decode([]) == ""
    with pytest.raises(ValueError):
        tok.decode([[1, 2]])


def test_decode_matches_reference(tok, vocab_lines, corpus):
    rng = random.Random(99)
    all_ids = tok(corpus, padding=False, truncation=True, max_length=60, return_tensors=None)["input_ids"]
    for ids in all_ids:
        # Sprinkle in the added tokens and out-of-range ids to exercise the sub-text logic.
        ids = list(ids)
        if rng.random() < 0.3:
            for _ in range(rng.randint(1, 3)):
                ids.insert(rng.randrange(len(ids) + 1), rng.choice([30522, 30523, 0, 100, 103, 40000]))
        for skip in (True, False):
            for cleanup in (True, False):
                expected = _reference_decode(ids, vocab_lines, skip=skip, cleanup=cleanup)
                assert tok.decode(ids, skip_special_tokens=skip, clean_up_tokenization_spaces=cleanup) == expected


def test_decode_matches_transformers_with_cleanup(tok, hf_tok, corpus):
    # With explicit clean-up and skipped special tokens, transformers (4.x slow or 5.x) agrees with 4.15's rules,
    # apostrophes included. (transformers 5's default, clean_up_tokenization_spaces=False, gives "it ' s".)
    texts = [t for t in corpus if "'" not in t]
    assert len(texts) > 1000
    texts += [t for t in corpus if "'" in t]
    all_ids = tok(texts, padding=False, truncation=True, max_length=60, return_tensors=None)["input_ids"]
    ours = tok.batch_decode(all_ids)
    theirs = hf_tok.batch_decode(all_ids, skip_special_tokens=True, clean_up_tokenization_spaces=True)
    assert ours == theirs


@pytest.mark.parametrize(
    "caption",
    [
        "A man riding a horse on the beach.",
        "two dogs   playing in the snow!",
        "A kitchen with white cabinets and a stainless steel refrigerator",
        "(a cat) sitting on a laptop keyboard; looking at the camera",
        "  a giraffe standing next to a tree  \n",
    ],
)
def test_round_trip_captions(tok, caption):
    text = pre_caption(caption)
    assert tok.decode(tok.encode(text)) == text
    assert tok.batch_decode(tok([text, "a"])["input_ids"]) == [text, "a"]


def test_unassigned_code_points_are_dropped_as_the_slow_bert_tokenizer_does(tok):
    # BertTokenizer's _clean_text (what the original ran) drops every "C*" character; the Rust normalizer kept
    # unassigned ones (Cn) and made the whole word [UNK]
    transformers = pytest.importorskip("transformers")
    path = resources.files("openblip").joinpath("resources", "bert-base-uncased-vocab.txt")
    with resources.as_file(path) as p:
        slow = transformers.BertTokenizerLegacy(vocab_file=str(p))
    for text in ["a\u2065b dog", "x\u0378y on a mat", "a cat\U0002fffe sits"]:
        ours = tok.convert_ids_to_tokens(tok(text)["input_ids"][0].tolist())[1:-1]
        assert ours == slow.tokenize(text) and "[UNK]" not in ours


# ---------------------------------------------------------------------------------------------------- text


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("A Man Riding A Horse.", "a man riding a horse"),
        ("a dog.  a cat!!", "a dog a cat"),
        ('He said "hi" (loudly) *twice* #tag: ok; ~fine~', "he said hi loudly twice tag ok fine"),
        ("  leading and trailing  ", "leading and trailing"),
        ("line one\nline two", "line one\nline two"),  # a single newline is kept
        ("line one\n\nline two\n", "line one line two"),
        ("ends with newline\n", "ends with newline"),
        ("tabs\t\there", "tabs here"),
        ("keeps, commas? and it's well-known - yes", "keeps, commas? and it's well-known - yes"),
        ("...", ""),
        ("", ""),
        ("CAFÉ Naïve", "café naïve"),
    ],
)
def test_pre_caption(raw, expected):
    assert pre_caption(raw) == expected


def test_pre_caption_truncation():
    words = [f"w{i}" for i in range(60)]
    assert pre_caption(" ".join(words)) == " ".join(words[:50])
    assert pre_caption(" ".join(words), max_words=5) == "w0 w1 w2 w3 w4"
    assert pre_caption("a.b.c.d.e.f", max_words=3) == "a b c"
    assert pre_caption("short one", max_words=5) == "short one"
    assert pre_caption("a b c", max_words=0) == ""


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("What is the man holding?", "what is the man holding?"),
        ("Is this a dog.", "is this a dog"),
        ('What does the sign say: "STOP"!', "what does the sign say stop"),
        ("  what  color  ", "  what  color"),  # no collapsing, only trailing spaces are stripped
        ("how many (people)?  ", "how many people?"),
        ("what's on the plate, left-side?", "what's on the plate, left-side?"),
        ("what is this\n", "what is this\n"),
        ("a.b", "ab"),
        ("", ""),
    ],
)
def test_pre_question(raw, expected):
    assert pre_question(raw) == expected


def test_pre_question_truncation():
    words = [f"q{i}" for i in range(60)]
    assert pre_question(" ".join(words)) == " ".join(words[:50])
    assert pre_question("one two three four", max_words=2) == "one two"
    # Empty strings between consecutive spaces count as words, as in BLIP.
    assert pre_question("a  b c", max_words=2) == "a "


def test_text_type_errors():
    with pytest.raises(TypeError, match="caption"):
        pre_caption(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="question"):
        pre_question(b"what")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        pre_caption("a", max_words=-1)
