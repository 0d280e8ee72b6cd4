"""Feature extraction: image tokens, text tokens, multimodal tokens and projected (ITC) embeddings.

Works with the feature-extractor model (``BLIP_Base``: unprojected 768/1024-d tokens) and with retrieval/ITM
or pre-training models, which also give the 256-d projected, L2-normalised embeddings that align images and
texts (the feature extractor's raw tokens are not aligned: spec §1.9, BLIP issue #4).

Empty inputs give empty results of the usual shapes (``[0, ...]`` tensors), as the other tasks return ``[]``.
"""

from __future__ import annotations

from typing import Any

import torch

from openblip.models.blip import BlipFeatureExtractor, BlipRetrieval
from openblip.tasks._common import TaskBase, as_list, chunks
from openblip.text import pre_caption


class FeatureExtractor(TaskBase):
    task = ""
    model_types = (BlipFeatureExtractor, BlipRetrieval)

    def __init__(self, model: Any, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        if not isinstance(self.model, self.model_types):
            raise TypeError(f"feature extraction needs a feature/retrieval model, got {type(self.model).__name__}")

    @torch.inference_mode()
    def image_tokens(self, images: Any) -> torch.Tensor:
        """ViT tokens ``[N, 1 + P, D]``; ``[:, 0]`` is the global feature (``N = 0`` for no images)."""
        batches = [self.model.encode_image(self.pixels(b)) for b in chunks(as_list(images), self.batch_size)]
        return torch.cat(batches) if batches else self.empty_image_tokens()

    @torch.inference_mode()
    def text_tokens(self, texts: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Unimodal text-encoder tokens ``[M, L, 768]`` (``[CLS]`` first) and the attention mask ``[M, L]``
        (``M = L = 0`` for no texts)."""
        ids, mask = self.tokenize([pre_caption(t, 30) for t in as_list(texts)])
        if not ids.shape[0]:
            return self._empty_text_tokens(mask)
        return self.model.text_embeds(ids, mask), mask

    @torch.inference_mode()
    def multimodal_tokens(self, images: Any, texts: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Image-grounded text tokens (``[ENC]`` first) for aligned (image, text) pairs, and the mask (empty for
        no pairs)."""
        embeds = self.image_tokens(images)
        ids, mask = self.tokenize([pre_caption(t, 30) for t in as_list(texts)])
        if not ids.shape[0] and not embeds.shape[0]:
            return self._empty_text_tokens(mask)
        return self.model.multimodal_embeds(embeds, ids, mask), mask

    @torch.inference_mode()
    def image_embeddings(self, images: Any) -> torch.Tensor:
        """Projected, L2-normalised 256-d image embeddings (retrieval/pretrain models only)."""
        self._need_projections()
        return self.model.image_features(self.image_tokens(images)).float()

    @torch.inference_mode()
    def text_embeddings(self, texts: Any) -> torch.Tensor:
        """Projected, L2-normalised 256-d text embeddings (retrieval/pretrain models only)."""
        self._need_projections()
        ids, mask = self.tokenize([pre_caption(t, 30) for t in as_list(texts)])
        if not ids.shape[0]:
            return torch.empty(0, self.model.config.embed_dim, device=self.device)
        return self.model.text_features(ids, mask).float()

    def _empty_text_tokens(self, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        width = self.model.config.text.hidden_size
        return torch.empty(0, 0, width, dtype=self.model.text_dtype, device=self.device), mask

    def _need_projections(self) -> None:
        if not isinstance(self.model, BlipRetrieval):
            raise TypeError(
                "projected embeddings need a retrieval/ITM model (the feature extractor has no projections)"
            )
