"""BLIP text tokenizer: ``bert-base-uncased`` WordPiece plus BLIP's two extra special tokens.

BLIP (``models/blip.py::init_tokenizer``) builds its tokenizer as::

    tokenizer = BertTokenizer.from_pretrained("bert-base-uncased")
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})

:class:`BlipTokenizer` reproduces that tokenizer on top of the Rust ``tokenizers`` library (``transformers`` is never
imported), using the bundled ``bert-base-uncased`` vocabulary (30522 entries) plus the two added tokens, for a total
vocabulary of 30524 ids.

Special tokens and ids:

=========  =====  ==========================================================
token      id     role
=========  =====  ==========================================================
``[PAD]``  0      padding (``pad_token_id``)
``[UNK]``  100    unknown word piece (``unk_token_id``)
``[CLS]``  101    first token of every encoded sequence (``cls_token_id``)
``[SEP]``  102    last token of every encoded sequence; also ``eos_token_id``
``[MASK]`` 103    masked-language-modelling mask (``mask_token_id``)
``[DEC]``  30522  ``bos_token_id`` / ``dec_token_id``: decoder start token
``[ENC]``  30523  ``enc_token_id``: image-grounded encoder start token
=========  =====  ==========================================================

First-token convention: the tokenizer always emits ``[CLS] ... [SEP]``; BLIP's models then overwrite position 0
depending on the mode of the text transformer:

* unimodal text encoder (ITC, retrieval features): keep ``[CLS]``;
* image-grounded text encoder (ITM, VQA question encoder, NLVR): replace it with ``[ENC]`` (``enc_token_id``);
* image-grounded text decoder (captioning LM, VQA answer decoder): replace it with ``[DEC]`` (``bos_token_id``);
  generation stops at ``[SEP]`` (``eos_token_id``) and padding uses ``[PAD]`` (``pad_token_id``).

Encoding matches ``transformers.BertTokenizer`` (``input_ids`` and ``attention_mask``; truncation keeps ``[SEP]`` as
the last token, padding is on the right with ``[PAD]``).

Decoding follows the *slow* ``BertTokenizer`` of transformers 4.15 (the version BLIP was released with): special
tokens are optionally skipped (including ``[UNK]``), word pieces are joined with spaces and ``" ##"`` is removed,
added tokens (``[DEC]``/``[ENC]``) that are not skipped are emitted as separate space-joined chunks, and finally
4.15's ``clean_up_tokenization`` is applied. transformers 5 differs: its ``BertTokenizer`` is backed by ``tokenizers``
and defaults to ``clean_up_tokenization_spaces=False``, so ``decode`` gives e.g. ``"it ' s"`` / ``"rock ' n ' roll"``
instead of 4.15's ``"it's"`` / ``"rock'n'roll"`` (``" ,"``/``" ."`` are still merged by the Rust WordPiece decoder,
which cleans up each token separately). With an explicit ``clean_up_tokenization_spaces=True`` and
``skip_special_tokens=True`` it agrees with 4.15 on ordinary text; non-skipped ``[DEC]``/``[ENC]`` are also rendered
differently (4.15: ``"this [ENC] ##s"``, transformers 5: ``"this [ENC]s"``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Sequence
from importlib import resources
from typing import Any, Literal

import torch
from tokenizers import AddedToken, Regex, Tokenizer
from tokenizers.decoders import WordPiece as WordPieceDecoder
from tokenizers.models import WordPiece
from tokenizers.normalizers import BertNormalizer, Replace
from tokenizers.normalizers import Sequence as NormalizerSequence
from tokenizers.pre_tokenizers import BertPreTokenizer
from tokenizers.processors import TemplateProcessing

__all__ = ["BlipTokenizer", "BatchEncoding", "clean_up_tokenization", "get_tokenizer", "DEFAULT_MODEL_MAX_LENGTH"]

VOCAB_RESOURCE = "bert-base-uncased-vocab.txt"

#: ``model_max_length`` of ``bert-base-uncased``; used when ``truncation=True`` but no ``max_length`` is given.
DEFAULT_MODEL_MAX_LENGTH = 512

PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
CLS_TOKEN = "[CLS]"
SEP_TOKEN = "[SEP]"
MASK_TOKEN = "[MASK]"
DEC_TOKEN = "[DEC]"
ENC_TOKEN = "[ENC]"

_BASE_VOCAB_SIZE = 30522

# Order of transformers' SPECIAL_TOKENS_ATTRIBUTES (bos, eos, unk, sep, pad, cls, mask, additional); BERT has no eos.
_SPECIAL_TOKENS = (DEC_TOKEN, UNK_TOKEN, SEP_TOKEN, PAD_TOKEN, CLS_TOKEN, MASK_TOKEN, ENC_TOKEN)
# Tokens added on top of the vocabulary file (``added_tokens_encoder`` in transformers 4.15).
_ADDED_TOKENS = (DEC_TOKEN, ENC_TOKEN)

# transformers 4.15 ``PreTrainedTokenizerBase.clean_up_tokenization``: (old, new), applied in this order.
_CLEAN_UP_REPLACEMENTS = (
    (" .", "."),
    (" ?", "?"),
    (" !", "!"),
    (" ,", ","),
    (" ' ", "'"),
    (" n't", "n't"),
    (" 'm", "'m"),
    (" 's", "'s"),
    (" 've", "'ve"),
    (" 're", "'re"),
)

PaddingArg = bool | Literal["longest", "max_length", "do_not_pad"]


def clean_up_tokenization(text: str) -> str:
    """Apply transformers 4.15's ``clean_up_tokenization`` to a decoded string.

    Args:
        text: Space-joined decoded text.

    Returns:
        The text with spaces before ``. ? ! ,`` and common English contractions removed.
    """
    for old, new in _CLEAN_UP_REPLACEMENTS:
        text = text.replace(old, new)
    return text


def _load_vocab_lines(vocab_file: str | os.PathLike[str] | None) -> list[str]:
    if vocab_file is None:
        text = resources.files("openblip").joinpath("resources", VOCAB_RESOURCE).read_text(encoding="utf-8")
    else:
        with open(vocab_file, encoding="utf-8") as f:
            text = f.read()
    # Same as BERT's ``load_vocab``: one token per line, only the trailing newline is stripped.
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _to_id_list(ids: Any) -> list[int]:
    """Convert an int, a sequence of ints, a 1-d tensor or a 1-d numpy array to a list of Python ints."""
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    if isinstance(ids, int):
        return [ids]
    out = []
    for i in ids:
        if isinstance(i, (list, tuple)):
            raise ValueError("decode expects a 1-d sequence of token ids; use batch_decode for batches")
        out.append(int(i))
    return out


class BatchEncoding(dict):
    """Result of :meth:`BlipTokenizer.__call__`: a plain ``dict`` that also allows attribute access.

    ``enc["input_ids"]`` and ``enc.input_ids`` are equivalent (BLIP's code uses the latter).
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as e:
            raise AttributeError(name) from e

    def to(self, device: torch.device | str) -> BatchEncoding:
        """Move every tensor value to ``device`` (in place) and return ``self``.

        Args:
            device: Target device.

        Returns:
            This encoding.
        """
        for k, v in self.items():
            if isinstance(v, torch.Tensor):
                self[k] = v.to(device)
        return self


class BlipTokenizer:
    """The BLIP tokenizer (``bert-base-uncased`` + ``[DEC]`` + ``[ENC]``), backed by ``tokenizers``.

    Args:
        vocab_file: Optional path to a BERT WordPiece vocabulary (one token per line). Defaults to the bundled
            ``bert-base-uncased`` vocabulary.
        model_max_length: Length used when ``truncation=True`` and no ``max_length`` is given.
    """

    pad_token = PAD_TOKEN
    unk_token = UNK_TOKEN
    cls_token = CLS_TOKEN
    sep_token = SEP_TOKEN
    eos_token = SEP_TOKEN
    mask_token = MASK_TOKEN
    bos_token = DEC_TOKEN
    dec_token = DEC_TOKEN
    enc_token = ENC_TOKEN

    def __init__(
        self, vocab_file: str | os.PathLike[str] | None = None, model_max_length: int = DEFAULT_MODEL_MAX_LENGTH
    ) -> None:
        tokens = _load_vocab_lines(vocab_file)
        vocab: dict[str, int] = {}
        for index, token in enumerate(tokens):
            vocab[token] = index  # a duplicated token keeps its last index, as in BERT's load_vocab
        for tok in (PAD_TOKEN, UNK_TOKEN, CLS_TOKEN, SEP_TOKEN, MASK_TOKEN):
            if tok not in vocab:
                raise ValueError(f"vocabulary is missing the special token {tok}")
        for tok in _ADDED_TOKENS:
            if tok in vocab:
                raise ValueError(f"vocabulary already contains {tok}; BLIP adds it after the vocabulary")

        tk = Tokenizer(WordPiece(vocab, unk_token=UNK_TOKEN, max_input_chars_per_word=100))
        # The original (BertTokenizer's _clean_text) drops every character of a "C*" category; the Rust
        # BertNormalizer keeps unassigned code points (Cn), which then turn the whole word into [UNK].
        tk.normalizer = NormalizerSequence(
            [
                Replace(Regex(r"\p{Cn}"), ""),
                BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True),
            ]
        )
        tk.pre_tokenizer = BertPreTokenizer()
        cls_id, sep_id = vocab[CLS_TOKEN], vocab[SEP_TOKEN]
        tk.post_processor = TemplateProcessing(
            single=f"{CLS_TOKEN}:0 $A:0 {SEP_TOKEN}:0",
            pair=f"{CLS_TOKEN}:0 $A:0 {SEP_TOKEN}:0 $B:1 {SEP_TOKEN}:1",
            special_tokens=[(CLS_TOKEN, cls_id), (SEP_TOKEN, sep_id)],
        )
        tk.decoder = WordPieceDecoder(prefix="##")
        # Existing special tokens keep their vocabulary ids; [DEC] then [ENC] are appended (30522, 30523).
        tk.add_special_tokens(
            [
                AddedToken(t, special=True, normalized=False, lstrip=False, rstrip=False, single_word=False)
                for t in (PAD_TOKEN, UNK_TOKEN, CLS_TOKEN, SEP_TOKEN, MASK_TOKEN, DEC_TOKEN, ENC_TOKEN)
            ]
        )
        self._tokenizer = tk
        self.model_max_length = int(model_max_length)

        self._id_to_token: list[str] = [""] * len(tokens)
        for token, index in vocab.items():
            self._id_to_token[index] = token
        self._token_to_id: dict[str, int] = dict(vocab)
        for tok in _ADDED_TOKENS:
            index = tk.token_to_id(tok)
            if index != len(self._id_to_token):
                raise RuntimeError(f"unexpected id {index} for added token {tok}")
            self._id_to_token.append(tok)
            self._token_to_id[tok] = index

        self.pad_token_id: int = vocab[PAD_TOKEN]
        self.unk_token_id: int = vocab[UNK_TOKEN]
        self.cls_token_id: int = cls_id
        self.sep_token_id: int = sep_id
        self.eos_token_id: int = sep_id
        self.mask_token_id: int = vocab[MASK_TOKEN]
        self.bos_token_id: int = self._token_to_id[DEC_TOKEN]
        self.dec_token_id: int = self.bos_token_id
        self.enc_token_id: int = self._token_to_id[ENC_TOKEN]
        self.additional_special_tokens: list[str] = [ENC_TOKEN]
        self.additional_special_tokens_ids: list[int] = [self.enc_token_id]
        self._special_ids = frozenset(self._token_to_id[t] for t in _SPECIAL_TOKENS)
        self._added_tokens = frozenset(_ADDED_TOKENS)

    # ------------------------------------------------------------------ properties
    @property
    def vocab_size(self) -> int:
        """Total number of ids, including the added ``[DEC]`` and ``[ENC]`` (30524 for BLIP)."""
        return len(self._id_to_token)

    def __len__(self) -> int:
        return len(self._id_to_token)

    @property
    def backend_tokenizer(self) -> Tokenizer:
        """The underlying :class:`tokenizers.Tokenizer` (do not mutate its truncation/padding state)."""
        return self._tokenizer

    @property
    def all_special_tokens(self) -> list[str]:
        """Special token strings, in transformers' attribute order (bos, unk, sep, pad, cls, mask, additional)."""
        return list(_SPECIAL_TOKENS)

    @property
    def all_special_ids(self) -> list[int]:
        """Ids of :attr:`all_special_tokens`."""
        return [self._token_to_id[t] for t in _SPECIAL_TOKENS]

    def get_vocab(self) -> dict[str, int]:
        """Return a copy of the token -> id mapping (including ``[DEC]`` and ``[ENC]``)."""
        return dict(self._token_to_id)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size}, model_max_length={self.model_max_length})"

    # ------------------------------------------------------------------ encoding
    def tokenize(self, text: str) -> list[str]:
        """Split ``text`` into word pieces (no special tokens added).

        Args:
            text: Input string.

        Returns:
            The word-piece strings.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return self._tokenizer.encode(text, add_special_tokens=False).tokens

    def encode(
        self,
        text: str,
        add_special_tokens: bool = True,
        truncation: bool = False,
        max_length: int | None = None,
    ) -> list[int]:
        """Encode a single string to token ids (no padding).

        Args:
            text: Input string.
            add_special_tokens: Wrap the ids in ``[CLS] ... [SEP]``.
            truncation: Truncate to ``max_length`` (keeping ``[SEP]`` last).
            max_length: Maximum length used with ``truncation``.

        Returns:
            The list of token ids.
        """
        out = self(
            text,
            padding=False,
            truncation=truncation,
            max_length=max_length,
            return_tensors=None,
            add_special_tokens=add_special_tokens,
        )
        return out["input_ids"][0]

    def __call__(
        self,
        texts: str | Sequence[str],
        padding: PaddingArg = "longest",
        truncation: bool = False,
        max_length: int | None = None,
        return_tensors: Literal["pt"] | None = "pt",
        add_special_tokens: bool = True,
    ) -> BatchEncoding:
        """Tokenize one string or a batch of strings.

        Args:
            texts: A string or a sequence of strings (a single string is treated as a batch of one).
            padding: ``"longest"``/``True`` pads to the longest sequence of the batch, ``"max_length"`` pads to
                ``max_length`` (required), ``False``/``"do_not_pad"`` does not pad. Padding is on the right with
                ``[PAD]`` (id 0) and attention mask 0.
            truncation: If true, sequences longer than ``max_length`` (default :attr:`model_max_length`) are cut,
                keeping ``[SEP]`` as the last token when special tokens are added.
            max_length: Target length for truncation and ``"max_length"`` padding.
            return_tensors: ``"pt"`` for ``torch.long`` tensors of shape ``(batch, length)``, ``None`` for lists.
            add_special_tokens: Add ``[CLS]`` in front and ``[SEP]`` at the end.

        Returns:
            A :class:`BatchEncoding` (a ``dict``) with ``input_ids`` and ``attention_mask``.

        Raises:
            TypeError: If an input is not a string.
            ValueError: On inconsistent padding/truncation arguments, or when ``return_tensors="pt"`` is requested
                for sequences of different lengths without padding.
        """
        if isinstance(texts, str):
            batch = [texts]
        elif isinstance(texts, Iterable):
            batch = list(texts)
        else:
            raise TypeError(f"texts must be a str or a sequence of str, got {type(texts).__name__}")
        for i, t in enumerate(batch):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] must be a str, got {type(t).__name__}")

        if padding is True or padding == "longest":
            pad_mode = "longest"
        elif padding is False or padding == "do_not_pad":
            pad_mode = None
        elif padding == "max_length":
            pad_mode = "max_length"
            if max_length is None:
                raise ValueError('padding="max_length" requires max_length')
        else:
            raise ValueError(f"unsupported padding {padding!r}; use 'longest', 'max_length' or a bool")
        if return_tensors not in ("pt", None):
            raise ValueError(f"unsupported return_tensors {return_tensors!r}; use 'pt' or None")
        if max_length is not None and (isinstance(max_length, bool) or int(max_length) != max_length):
            raise TypeError(f"max_length must be an int, got {max_length!r}")

        num_special = 2 if add_special_tokens else 0
        limit: int | None = None
        if truncation:
            limit = self.model_max_length if max_length is None else int(max_length)
            if limit < num_special:
                raise ValueError(f"max_length={limit} is too small to hold the {num_special} special tokens")

        encodings = self._tokenizer.encode_batch(batch, add_special_tokens=add_special_tokens)
        ids_list: list[list[int]] = []
        for enc in encodings:
            ids = enc.ids
            if limit is not None and len(ids) > limit:
                # longest_first truncation of a single sequence: drop content from the right, keep [SEP] last.
                ids = ids[: limit - 1] + [ids[-1]] if add_special_tokens else ids[:limit]
            ids_list.append(ids)

        if pad_mode == "longest":
            target = max((len(ids) for ids in ids_list), default=0)
        elif pad_mode == "max_length":
            target = int(max_length)  # type: ignore[arg-type]
        else:
            target = 0
        input_ids: list[list[int]] = []
        attention_mask: list[list[int]] = []
        for ids in ids_list:
            n_pad = max(target - len(ids), 0)
            input_ids.append(ids + [self.pad_token_id] * n_pad)
            attention_mask.append([1] * len(ids) + [0] * n_pad)

        if return_tensors == "pt":
            lengths = {len(ids) for ids in input_ids}
            if len(lengths) > 1:
                raise ValueError(
                    "sequences have different lengths; use padding='longest' or 'max_length' with return_tensors='pt'"
                )
            if not input_ids:
                empty = torch.zeros((0, 0), dtype=torch.long)
                return BatchEncoding(input_ids=empty, attention_mask=empty.clone())
            return BatchEncoding(
                input_ids=torch.tensor(input_ids, dtype=torch.long),
                attention_mask=torch.tensor(attention_mask, dtype=torch.long),
            )
        return BatchEncoding(input_ids=input_ids, attention_mask=attention_mask)

    # ------------------------------------------------------------------ conversions
    def _id_to_token_str(self, index: int) -> str:
        # transformers 4.15: unknown ids map to the unk token string.
        if 0 <= index < len(self._id_to_token):
            return self._id_to_token[index]
        return UNK_TOKEN

    def convert_ids_to_tokens(
        self, ids: int | Sequence[int] | Any, skip_special_tokens: bool = False
    ) -> str | list[str]:
        """Map ids to token strings (ids outside the vocabulary map to ``[UNK]``).

        Args:
            ids: One id (returns a string) or a sequence / 1-d tensor of ids (returns a list).
            skip_special_tokens: Drop the ids of special tokens.

        Returns:
            The token string or list of token strings.
        """
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        if isinstance(ids, int):
            return self._id_to_token_str(ids)
        out = []
        for index in ids:
            index = int(index)
            if skip_special_tokens and index in self._special_ids:
                continue
            out.append(self._id_to_token_str(index))
        return out

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int]:
        """Map token strings to ids (unknown tokens map to ``unk_token_id``).

        Args:
            tokens: One token (returns an int) or a sequence of tokens (returns a list).

        Returns:
            The id or list of ids.
        """
        if isinstance(tokens, str):
            return self._token_to_id.get(tokens, self.unk_token_id)
        return [self._token_to_id.get(t, self.unk_token_id) for t in tokens]

    # ------------------------------------------------------------------ decoding
    @staticmethod
    def convert_tokens_to_string(tokens: Sequence[str]) -> str:
        """Join word pieces like BERT: ``" ".join(tokens).replace(" ##", "").strip()``.

        Args:
            tokens: Word-piece strings.

        Returns:
            The joined string.
        """
        return " ".join(tokens).replace(" ##", "").strip()

    def decode(
        self,
        ids: Sequence[int] | Any,
        skip_special_tokens: bool = True,
        clean_up_tokenization_spaces: bool = True,
    ) -> str:
        """Decode token ids to text exactly like transformers 4.15's slow ``BertTokenizer.decode``.

        Nothing is trimmed at ``[SEP]``/``[PAD]`` other than by ``skip_special_tokens``; callers cut sequences
        themselves.

        Args:
            ids: A sequence of ints, a 1-d tensor / array, or a single int.
            skip_special_tokens: Drop ``[PAD] [UNK] [CLS] [SEP] [MASK] [DEC] [ENC]``.
            clean_up_tokenization_spaces: Apply 4.15's :func:`clean_up_tokenization`.

        Returns:
            The decoded string.
        """
        tokens = self.convert_ids_to_tokens(_to_id_list(ids), skip_special_tokens=skip_special_tokens)
        sub_texts: list[str] = []
        current: list[str] = []
        for token in tokens:
            if token in self._added_tokens:
                if current:
                    sub_texts.append(self.convert_tokens_to_string(current))
                    current = []
                sub_texts.append(token)
            else:
                current.append(token)
        if current:
            sub_texts.append(self.convert_tokens_to_string(current))
        text = " ".join(sub_texts)
        if clean_up_tokenization_spaces:
            text = clean_up_tokenization(text)
        return text

    def batch_decode(
        self,
        sequences: Sequence[Sequence[int]] | Any,
        skip_special_tokens: bool = True,
        clean_up_tokenization_spaces: bool = True,
    ) -> list[str]:
        """Decode a batch of id sequences (list of lists or a 2-d tensor); see :meth:`decode`.

        Args:
            sequences: The id sequences.
            skip_special_tokens: Drop special tokens.
            clean_up_tokenization_spaces: Apply 4.15's :func:`clean_up_tokenization`.

        Returns:
            One string per sequence.
        """
        if hasattr(sequences, "tolist"):
            sequences = sequences.tolist()
        return [
            self.decode(
                seq, skip_special_tokens=skip_special_tokens, clean_up_tokenization_spaces=clean_up_tokenization_spaces
            )
            for seq in sequences
        ]


@functools.cache
def get_tokenizer() -> BlipTokenizer:
    """Return a process-wide cached :class:`BlipTokenizer` using the bundled vocabulary.

    Returns:
        The shared tokenizer instance.
    """
    return BlipTokenizer()
