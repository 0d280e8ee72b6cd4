"""Zero-shot tagging: score images against a label vocabulary with ITC, re-rank the best with ITM.

Each label is put into a text template (default ``"a picture of {}"``); ITC gives a softmax over all labels
(cosine / learned temperature), and the ``top_k`` labels by ITC are re-scored with the ITM head (``[ENC]`` first),
whose match probability decides the final order. Labels come inline or from a file (one per line, or JSON list).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from openblip.tasks._common import as_list
from openblip.tasks.retrieval import Retriever


def load_labels(source: str | Path | list[str]) -> list[str]:
    """Labels from a list, a ``.json`` list or a text file (one label per line; blank lines and ``#`` ignored)."""
    if isinstance(source, (list, tuple)):
        labels = [str(x).strip() for x in source]
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"label file {path} does not exist")
        text = path.read_text()
        if path.suffix == ".json":
            import json

            labels = [str(x).strip() for x in json.loads(text)]
        else:
            labels = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    labels = [lb for lb in labels if lb]
    if not labels:
        raise ValueError("the label list is empty")
    return list(dict.fromkeys(labels))


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
        """For each image, up to ``top_k`` labels sorted by ITM match probability.

        Each entry: ``{"label", "itm_prob", "itc_prob", "itc_cosine"}``; entries below ``threshold`` (ITM
        probability) are left out.
        """
        labels = load_labels(labels)
        texts = [template.format(lb) for lb in labels]
        embeds = self.image_embeds(as_list(images))
        txt_feat = self.text_features(texts)
        ids, mask = self.tokenize([t.lower() for t in texts], self.max_text_length)
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
