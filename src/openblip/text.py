"""Caption and question normalisation, with the semantics of BLIP's ``data/utils.py``.

In BLIP, ``pre_caption`` is applied to captions (pre-training, captioning, retrieval and NLVR datasets) and
``pre_question`` to VQA questions before tokenization.
"""

from __future__ import annotations

import re

__all__ = ["pre_caption", "pre_question"]

# The characters BLIP removes from captions and questions: . ! " ( ) * # : ; ~
_STRIPPED_CHARS = re.compile(r'[.!"()*#:;~]')
# Runs of two or more (Unicode) whitespace characters.
_WHITESPACE_RUN = re.compile(r"\s{2,}")


def _truncate_words(text: str, max_words: int) -> str:
    words = text.split(" ")
    if len(words) > max_words:
        return " ".join(words[:max_words])
    return text


def _check_args(value: object, name: str, max_words: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if isinstance(max_words, bool) or not isinstance(max_words, int):
        raise TypeError(f"max_words must be an int, got {type(max_words).__name__}")
    if max_words < 0:
        raise ValueError(f"max_words must be non-negative, got {max_words}")


def pre_caption(caption: str, max_words: int = 50) -> str:
    """Normalise a caption like BLIP's ``pre_caption``.

    Steps: lower-case; replace each of ``. ! " ( ) * # : ; ~`` with a space; collapse every run of two or more
    whitespace characters into one space; strip trailing newlines, then leading/trailing spaces; keep the first
    ``max_words`` space-separated words. Other characters (e.g. ``, ? ' -``, a single tab or newline inside the
    text) are kept as they are.

    Args:
        caption: Raw caption.
        max_words: Maximum number of space-separated words to keep.

    Returns:
        The normalised caption.

    Raises:
        TypeError: If ``caption`` is not a string or ``max_words`` not an int.
        ValueError: If ``max_words`` is negative.
    """
    _check_args(caption, "caption", max_words)
    text = _STRIPPED_CHARS.sub(" ", caption.lower())
    text = _WHITESPACE_RUN.sub(" ", text)
    text = text.rstrip("\n").strip(" ")
    return _truncate_words(text, max_words)


def pre_question(question: str, max_words: int = 50) -> str:
    """Normalise a VQA question like BLIP's ``pre_question``.

    Steps: lower-case; delete each of ``. ! " ( ) * # : ; ~`` (no space is inserted); strip trailing spaces (no
    whitespace collapsing, leading spaces are kept); keep the first ``max_words`` space-separated words (empty
    strings between consecutive spaces count as words).

    Args:
        question: Raw question.
        max_words: Maximum number of space-separated words to keep.

    Returns:
        The normalised question.

    Raises:
        TypeError: If ``question`` is not a string or ``max_words`` not an int.
        ValueError: If ``max_words`` is negative.
    """
    _check_args(question, "question", max_words)
    text = _STRIPPED_CHARS.sub("", question.lower())
    text = text.rstrip(" ")
    return _truncate_words(text, max_words)
