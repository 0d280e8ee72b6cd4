"""Evaluation metrics with the semantics of BLIP's evaluation (captioning, retrieval, VQA, NLVR2).

Every metric is reported in **percent** (0-100, :data:`SCALE`), as the BLIP paper's tables print them
(CIDEr 133.3, BLEU-4 39.7, TR@1 81.2, VQA 78.25, NLVR2 82.15).

* :func:`caption_metrics`: BLEU-1..4, METEOR, ROUGE-L, CIDEr and SPICE through pycocoevalcap (needs the
  ``pycocoevalcap`` package and Java; imported only when called); :func:`caption_accuracy` (exact match).
* :func:`retrieval_metrics`: TR/IR@1/5/10 and their means, as ``train_retrieval.itm_eval``.
* :func:`vqa_accuracy`: the official VQA v2 accuracy with its answer normalisation.
* :func:`nlvr_accuracy`: NLVR2 accuracy.
"""

from __future__ import annotations

from openblip.eval.caption import (
    CAPTION_METRICS,
    SCALE,
    caption_accuracy,
    caption_metrics,
    close_java_scorers,
    normalize_caption,
    ptb_tokenize,
    spice_available,
    spice_models_dir,
)
from openblip.eval.nlvr import nlvr_accuracy
from openblip.eval.retrieval import ground_truth_ranks, recall_at_k, retrieval_metrics
from openblip.eval.vqa import normalize_answer, process_digit_article, process_punctuation, vqa_accuracy

__all__ = [
    "SCALE",
    "CAPTION_METRICS",
    "caption_metrics",
    "caption_accuracy",
    "normalize_caption",
    "ptb_tokenize",
    "spice_available",
    "spice_models_dir",
    "close_java_scorers",
    "retrieval_metrics",
    "recall_at_k",
    "ground_truth_ranks",
    "vqa_accuracy",
    "normalize_answer",
    "process_punctuation",
    "process_digit_article",
    "nlvr_accuracy",
]
