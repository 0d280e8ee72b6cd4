"""VQA v2 accuracy with the answer normalisation of the official VQA evaluation (``vqaEval.py``).

Scale: percent (0-100), like every metric in :mod:`openblip.eval` and the BLIP paper's tables.

Answer normalisation (:func:`normalize_answer`) is the official two-step pipeline:

1. *punctuation* (:func:`process_punctuation`): each of ``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !`` is deleted
   when it is next to a space in the input (or when the input contains a digit-comma-digit group such as
   ``1,000``), otherwise replaced by a space; then every period not followed by a digit is deleted (at most 32 of
   them: the official script passes ``re.UNICODE`` where ``re.sub`` expects the replacement count);
2. *digits and articles* (:func:`process_digit_article`): lower-case, split on whitespace, map the number words
   ``none, zero, ..., ten`` to ``0, 0, ..., 10``, drop the articles ``a, an, the``, expand missing-apostrophe
   contractions (``dont`` -> ``don't``) and join with single spaces.

Accuracy (:func:`vqa_accuracy`) follows the official script: the prediction has ``\\n``/``\\t`` replaced by
spaces, is stripped and goes through both steps; the ground-truth answers of a question go through the
punctuation step only, and only when they are not all identical (the VQA v2 annotations are already normalised;
pass ``gt_processing="full"`` to apply both steps to every ground-truth answer, e.g. for raw custom data). A
question's accuracy is the mean, over the leave-one-out subsets of its ``n`` (normally 10) human answers, of
``min(#matches among the other n-1 answers / 3, 1)``: with 10 answers, 1 match gives 30%, 2 give 60%, 3 give
90% and 4 or more give 100%.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

__all__ = [
    "CONTRACTIONS",
    "NUMBER_WORDS",
    "ARTICLES",
    "PUNCTUATION",
    "process_punctuation",
    "process_digit_article",
    "normalize_answer",
    "question_accuracy",
    "vqa_accuracy",
]

# Missing-apostrophe spellings and their canonical forms, as listed by the official evaluation (including its
# oddities: the capitalised keys can never match because the text is lower-cased first, "somebody'd" maps to
# "somebodyd", and a few keys map to themselves).
CONTRACTIONS: dict[str, str] = {
    "aint": "ain't",
    "arent": "aren't",
    "cant": "can't",
    "couldve": "could've",
    "couldnt": "couldn't",
    "couldn'tve": "couldn't've",
    "couldnt've": "couldn't've",
    "didnt": "didn't",
    "doesnt": "doesn't",
    "dont": "don't",
    "hadnt": "hadn't",
    "hadnt've": "hadn't've",
    "hadn'tve": "hadn't've",
    "hasnt": "hasn't",
    "havent": "haven't",
    "hed": "he'd",
    "hed've": "he'd've",
    "he'dve": "he'd've",
    "hes": "he's",
    "howd": "how'd",
    "howll": "how'll",
    "hows": "how's",
    "Id've": "I'd've",
    "I'dve": "I'd've",
    "Im": "I'm",
    "Ive": "I've",
    "isnt": "isn't",
    "itd": "it'd",
    "itd've": "it'd've",
    "it'dve": "it'd've",
    "itll": "it'll",
    "let's": "let's",
    "maam": "ma'am",
    "mightnt": "mightn't",
    "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've",
    "mightve": "might've",
    "mustnt": "mustn't",
    "mustve": "must've",
    "neednt": "needn't",
    "notve": "not've",
    "oclock": "o'clock",
    "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at",
    "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at",
    "shant": "shan't",
    "shed've": "she'd've",
    "she'dve": "she'd've",
    "she's": "she's",
    "shouldve": "should've",
    "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll",
    "somebodys": "somebody's",
    "someoned": "someone'd",
    "someoned've": "someone'd've",
    "someone'dve": "someone'd've",
    "someonell": "someone'll",
    "someones": "someone's",
    "somethingd": "something'd",
    "somethingd've": "something'd've",
    "something'dve": "something'd've",
    "somethingll": "something'll",
    "thats": "that's",
    "thered": "there'd",
    "thered've": "there'd've",
    "there'dve": "there'd've",
    "therere": "there're",
    "theres": "there's",
    "theyd": "they'd",
    "theyd've": "they'd've",
    "they'dve": "they'd've",
    "theyll": "they'll",
    "theyre": "they're",
    "theyve": "they've",
    "twas": "'twas",
    "wasnt": "wasn't",
    "wed've": "we'd've",
    "we'dve": "we'd've",
    "weve": "we've",
    "werent": "weren't",
    "whatll": "what'll",
    "whatre": "what're",
    "whats": "what's",
    "whatve": "what've",
    "whens": "when's",
    "whered": "where'd",
    "wheres": "where's",
    "whereve": "where've",
    "whod": "who'd",
    "whod've": "who'd've",
    "who'dve": "who'd've",
    "wholl": "who'll",
    "whos": "who's",
    "whove": "who've",
    "whyll": "why'll",
    "whyre": "why're",
    "whys": "why's",
    "wont": "won't",
    "wouldve": "would've",
    "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've",
    "yall": "y'all",
    "yall'll": "y'all'll",
    "y'allll": "y'all'll",
    "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've",
    "youd": "you'd",
    "youd've": "you'd've",
    "you'dve": "you'd've",
    "youll": "you'll",
    "youre": "you're",
    "youve": "you've",
}

NUMBER_WORDS: dict[str, str] = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}

ARTICLES: frozenset[str] = frozenset({"a", "an", "the"})

# In the official order (the order matters: each character is tested against the *original* text but replaced
# in the progressively edited one).
PUNCTUATION: tuple[str, ...] = (
    ";",
    "/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
)

# The official pattern, kept verbatim: "(?!<=\d)" is a (no-op) negative *lookahead* for the text "<=digit", so
# in effect a period is removed unless a digit follows it ("2.5" keeps its period, "dog." loses it).
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
# re.UNICODE (= 32) lands in the ``count`` argument of the official ``periodStrip.sub(...)`` call.
_PERIOD_STRIP_COUNT = int(re.UNICODE)


def process_punctuation(text: str) -> str:
    """The official ``processPunctuation`` step (see the module docstring)."""
    if not isinstance(text, str):
        raise TypeError(f"answer must be a str, got {type(text).__name__}")
    has_number_comma = _COMMA_STRIP.search(text) is not None
    out = text
    for p in PUNCTUATION:
        if has_number_comma or (p + " ") in text or (" " + p) in text:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out, count=_PERIOD_STRIP_COUNT)


def process_digit_article(text: str) -> str:
    """The official ``processDigitArticle`` step (see the module docstring)."""
    if not isinstance(text, str):
        raise TypeError(f"answer must be a str, got {type(text).__name__}")
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in ARTICLES]
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def normalize_answer(answer: str) -> str:
    """Normalise a predicted answer like the official VQA evaluation.

    ``\\n`` and ``\\t`` become spaces, the text is stripped, then :func:`process_punctuation` and
    :func:`process_digit_article` are applied: ``"Two"`` -> ``"2"``, ``"the dog."`` -> ``"dog"``,
    ``"dont"`` -> ``"don't"``, ``"yes!"`` -> ``"yes"``.
    """
    if not isinstance(answer, str):
        raise TypeError(f"answer must be a str, got {type(answer).__name__}")
    answer = answer.replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(answer))


def _normalize_gt(answers: Sequence[str], gt_processing: str) -> list[str]:
    if isinstance(answers, str) or not isinstance(answers, Sequence):
        raise TypeError(f"each ground-truth entry must be a list of answer strings, got {type(answers).__name__}")
    for a in answers:
        if not isinstance(a, str):
            raise TypeError(f"ground-truth answers must be str, got {type(a).__name__}")
    if gt_processing == "official":
        # The official script edits the ground truth only when the humans disagree, and only for punctuation.
        if len(set(answers)) > 1:
            return [process_punctuation(a) for a in answers]
        return list(answers)
    if gt_processing == "full":
        return [normalize_answer(a) for a in answers]
    raise ValueError(f"gt_processing must be 'official' or 'full', got {gt_processing!r}")


def _leave_one_out(prediction: str, gt: list[str]) -> float:
    n = len(gt)
    if n == 0:
        raise ValueError("every question needs at least one ground-truth answer")
    matches = sum(a == prediction for a in gt)
    total = 0.0
    for a in gt:
        others = matches - (a == prediction)
        total += min(1.0, others / 3.0)
    return total / n


def question_accuracy(
    prediction: str, answers: Sequence[str], *, gt_processing: Literal["official", "full"] = "official"
) -> float:
    """Accuracy of one prediction against its human answers, in percent (official leave-one-out definition)."""
    return 100.0 * _leave_one_out(normalize_answer(prediction), _normalize_gt(answers, gt_processing))


def vqa_accuracy(
    predictions: Sequence[str],
    answers: Sequence[Sequence[str]],
    *,
    question_types: Sequence[str] | None = None,
    answer_types: Sequence[str] | None = None,
    gt_processing: Literal["official", "full"] = "official",
) -> dict:
    """VQA accuracy of ``predictions`` against the human ``answers`` (one list, normally of 10, per question).

    Args:
        predictions: One predicted answer per question (raw model output; it is normalised here).
        answers: The human answers of each question, in the dataset's order (duplicates count).
        question_types: Optional question type per question (e.g. ``"what color is the"``) for a breakdown.
        answer_types: Optional answer type per question (``"yes/no"``, ``"number"``, ``"other"``) for a breakdown.
        gt_processing: ``"official"`` (default) processes ground-truth answers exactly like the official script;
            ``"full"`` applies the complete normalisation to every ground-truth answer.

    Returns:
        ``{"overall": float, "per_question": list[float]}`` plus ``"per_question_type"`` and/or
        ``"per_answer_type"`` (``dict[str, float]``) when the types are given. All values in percent, unrounded
        (the official script rounds to 2 decimals for display).

    Raises:
        ValueError: On empty input, mismatched lengths or a question without ground-truth answers.
        TypeError: On non-string answers.
    """
    if isinstance(predictions, str) or isinstance(answers, str):
        raise TypeError("predictions and answers must be sequences (one entry per question), not a str")
    predictions = list(predictions)
    answers = list(answers)
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions but {len(answers)} ground-truth answer lists")
    if not predictions:
        raise ValueError("no predictions to evaluate")
    for name, types in (("question_types", question_types), ("answer_types", answer_types)):
        if types is not None and len(types) != len(predictions):
            raise ValueError(f"{name} has {len(types)} entries for {len(predictions)} questions")

    per_question = [
        question_accuracy(p, a, gt_processing=gt_processing) for p, a in zip(predictions, answers, strict=True)
    ]
    result: dict = {"overall": sum(per_question) / len(per_question), "per_question": per_question}
    for key, types in (("per_question_type", question_types), ("per_answer_type", answer_types)):
        if types is None:
            continue
        groups: dict[str, list[float]] = {}
        for t, acc in zip(types, per_question, strict=True):
            groups.setdefault(t, []).append(acc)
        result[key] = {t: sum(v) / len(v) for t, v in groups.items()}
    return result
