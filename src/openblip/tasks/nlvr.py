"""NLVR2: is a sentence true of a pair of images? (``BLIP_NLVR``, salesforce/BLIP ``blip_nlvr.py``).

Sentences are cleaned with ``pre_caption(., 40)`` and tokenized with ``[ENC]`` first (longest padding; truncated
only at the text model's 512 positions, which 40 ordinary words never reach); both images of every pair go through
the ViT as one batch, as in the original.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from openblip.models.blip import BlipNLVR
from openblip.tasks._common import TaskBase, as_list, chunks
from openblip.text import pre_caption


@dataclass
class NLVRPrediction:
    label: bool
    probability: float  # probability of the predicted label


class NLVR(TaskBase):
    """Predict true/false for (image pair, sentence) examples."""

    task = "nlvr"
    model_types = (BlipNLVR,)

    def __init__(self, model: Any, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        if not isinstance(self.model, self.model_types):
            raise TypeError(f"NLVR2 needs an NLVR model, got {type(self.model).__name__}")

    @torch.inference_mode()
    def predict(self, image_pairs: Any, sentences: Any, batch_size: int | None = None) -> list[NLVRPrediction]:
        """One prediction per ``(image0, image1)`` pair and sentence (``[]`` for none)."""
        pairs = list(image_pairs)
        if pairs and not isinstance(pairs[0], (list, tuple)):
            pairs = [tuple(pairs)]
        sents = as_list(sentences)
        if len(pairs) != len(sents):
            raise ValueError(f"got {len(pairs)} image pairs but {len(sents)} sentences")
        for i, p in enumerate(pairs):
            if len(p) != 2:
                raise ValueError(f"image pair {i} has {len(p)} images; NLVR2 needs exactly 2")
        out: list[NLVRPrediction] = []
        limit = self.model.config.text.max_position_embeddings
        for batch in chunks(list(zip(pairs, sents)), batch_size or self.batch_size):
            pixels = self.pixels([p[0][0] for p in batch] + [p[0][1] for p in batch])
            enc = self.tokenizer(
                [pre_caption(p[1], 40) for p in batch], padding="longest", truncation=True, max_length=limit
            )
            logits = self.model(pixels, enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device))
            probs = logits.float().softmax(dim=-1)
            for row in probs:
                label = bool(row[1] > row[0])
                out.append(NLVRPrediction(label, float(row[int(label)])))
        return out
