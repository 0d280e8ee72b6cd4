"""Zero-shot tagging: score images against a label vocabulary with ITC, re-rank the best with ITM.

Each label is put into a text template (default ``"a picture of {}"``); ITC gives a softmax over all labels
(cosine / learned temperature), and the ``top_k`` labels by ITC are re-scored with the ITM head (``[ENC]`` first),
whose match probability decides the final order. Labels come inline or from a file (one per line, or JSON list).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from openblip.tasks._common import as_list, json_string_list, read_text_file
from openblip.tasks.retrieval import Retriever


def load_labels(source: str | Path | list[str]) -> list[str]:
    """Labels from a list, a ``.json`` list of strings or a UTF-8 text file (one label per line; blank lines and
    ``#`` ignored); stripped, duplicates dropped.

    Raises:
        FileNotFoundError, IsADirectoryError: the file does not exist, or is a folder.
        ValueError: naming the file: not UTF-8, invalid JSON, JSON that is not a list of strings; or no labels.
    """
    where = ""
    if isinstance(source, (list, tuple)):
        labels = [str(x).strip() for x in source]
    else:
        text = read_text_file(source, "label file")
        where = f" in label file {source}"
        if Path(source).suffix.lower() == ".json":
            labels = [x.strip() for x in json_string_list(text, source, "label file")]
        else:
            labels = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    labels = [lb for lb in labels if lb]
    if not labels:
        raise ValueError(f"the label list is empty{where}")
    return list(dict.fromkeys(labels))


def check_template(template: str) -> str:
    """``template`` when ``template.format(label)`` puts a label into it; a clear :class:`ValueError` otherwise."""
    if not isinstance(template, str):
        raise TypeError(f"template must be a string, got {type(template).__name__}")
    try:
        texts = template.format("x"), template.format("y")
    except (KeyError, IndexError, ValueError, AttributeError, TypeError) as e:
        raise ValueError(
            f"invalid template {template!r}: put {{}} where the label goes (str.format: {type(e).__name__}: {e})"
        ) from e
    if texts[0] == texts[1]:
        raise ValueError(f"template {template!r} has no {{}} where the label goes")
    return template


class Tagger(Retriever):
    """Zero-shot image tagging with a retrieval/ITM model."""

    @torch.inference_mode()
    def tag(
        self,
        images: Any,
        labels: str | Path | list[str],
        *,
        top_k: int = 10,
        template: str = "a picture of {}",
        threshold: float = 0.0,
    ) -> list[list[dict]]:
        """For each image, up to ``top_k`` labels sorted by ITM match probability (``[]`` for no images).

        Each entry: ``{"label", "itm_prob", "itc_prob", "itc_cosine"}``; entries below ``threshold`` (ITM
        probability) are left out. ``template.format(label)`` is cleaned with ``pre_caption`` (as
        :meth:`Retriever.rank` cleans texts) and the same text goes to ITC and ITM.

        Raises:
            ValueError: an invalid ``template`` (see :func:`check_template`) or label list (:func:`load_labels`).
        """
        check_template(template)
        labels = load_labels(labels)
        images = as_list(images)
        if not images:
            return []
        texts = self._texts([template.format(lb) for lb in labels], clean=True)
        embeds = self.image_embeds(images)
        txt_feat = self.text_features(texts, clean=False)
        ids, mask = self.tokenize(texts, self.max_text_length)
        img_feat = self.model.image_features(embeds).float()
        cos = img_feat @ txt_feat.T
        itc_prob = self.similarity(img_feat, txt_feat, scaled=True).softmax(dim=-1)
        k = min(top_k, len(labels))
        out = []
        for i in range(embeds.shape[0]):
            _, idx = cos[i].topk(k)
            logits = self.itm_logits_for_image(embeds[i], (ids[idx], mask[idx]))
            p = logits.softmax(dim=-1)[:, 1]
            rows = [
                {
                    "label": labels[j],
                    "itm_prob": float(pp),
                    "itc_prob": float(itc_prob[i, j]),
                    "itc_cosine": float(cos[i, j]),
                }
                for j, pp in zip(idx.tolist(), p)
                if float(pp) >= threshold
            ]
            out.append(sorted(rows, key=lambda r: -r["itm_prob"]))
        return out
