"""Image-text retrieval and matching: ITC features, ITM scores, ITC top-k + ITM re-ranking.

Reproduces ``train_retrieval.evaluation`` (salesforce/BLIP): unimodal features give the cosine matrix (no
temperature); for each image the top-``k`` texts (and for each text the top-``k`` images) are re-scored with
the ITM head using ``[ENC]`` first, and the final score is **ITM logit[:, 1] + cosine**; every other entry is
-100. Image embeddings are computed once and reused for every text (no ViT re-run per pair), and the ITM
cross-attention keys/values of an image are computed once for all ``k`` texts scored against it.

No images or no texts give empty results of the usual shapes (``[0, ...]`` tensors, ``[]`` lists).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from openblip.models.blip import BlipRetrieval
from openblip.tasks._common import TaskBase, as_list, chunks
from openblip.text import pre_caption


@dataclass
class RankResult:
    """Score matrices ``[n_images, n_texts]`` and ``[n_texts, n_images]`` plus the ITC cosine matrix.

    ``i2t[i, j]`` is ITM logit + cosine for the top-``k`` texts of image ``i`` and -100 elsewhere;
    ``t2i`` likewise for texts. ``i2t_ranking[i]`` lists text indices best first (``t2i_ranking`` likewise).
    """

    cosine: torch.Tensor
    i2t: torch.Tensor
    t2i: torch.Tensor

    @property
    def i2t_ranking(self) -> list[list[int]]:
        return self.i2t.argsort(dim=1, descending=True).tolist()

    @property
    def t2i_ranking(self) -> list[list[int]]:
        return self.t2i.argsort(dim=1, descending=True).tolist()


class Retriever(TaskBase):
    """ITC features, ITM matching and re-ranked retrieval with a BLIP retrieval/ITM (or pretrain) model.

    Example:
        >>> r = Retriever("blip-base-retrieval-coco")          # doctest: +SKIP
        >>> r.match("dog.jpg", ["a dog on a beach", "a cat"])  # doctest: +SKIP
    """

    task = "retrieval"
    model_types = (BlipRetrieval,)

    def __init__(self, model: Any, *, max_text_length: int = 35, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        if not isinstance(self.model, self.model_types):
            raise TypeError(f"retrieval needs a retrieval/ITM (or pretrain) model, got {type(self.model).__name__}")
        self.max_text_length = max_text_length

    # ---------------------------------------------------------------- embeddings
    @torch.inference_mode()
    def image_embeds(self, images: Any, batch_size: int | None = None) -> torch.Tensor:
        """ViT tokens ``[N, 1 + P, D]`` (the cache to reuse for ITM); ``N = 0`` for no images."""
        batches = [
            self.model.encode_image(self.pixels(b)) for b in chunks(as_list(images), batch_size or self.batch_size)
        ]
        return torch.cat(batches) if batches else self.empty_image_tokens()

    @torch.inference_mode()
    def image_features(self, images: Any = None, *, image_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """L2-normalised 256-d ITC image features ``[N, 256]``."""
        if image_embeds is None:
            image_embeds = self.image_embeds(images)
        return self.model.image_features(image_embeds).float()

    def _texts(self, texts: Any, clean: bool) -> list[str]:
        texts = as_list(texts)
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise TypeError(f"texts must be strings; item {bad[0]} is {type(texts[bad[0]]).__name__}")
        return [pre_caption(t, 30) if clean else t for t in texts]

    @torch.inference_mode()
    def text_features(self, texts: Any, *, clean: bool = True, batch_size: int = 64) -> torch.Tensor:
        """L2-normalised 256-d ITC text features ``[M, 256]`` (``[CLS]`` first, unimodal encoder); ``M`` may be 0."""
        texts = self._texts(texts, clean)
        if not texts:
            return torch.empty(0, self.model.config.embed_dim, device=self.device)
        feats = []
        for b in chunks(texts, batch_size):
            ids, mask = self.tokenize(b, self.max_text_length)
            feats.append(self.model.text_features(ids, mask).float())
        return torch.cat(feats)

    def similarity(self, image_features: torch.Tensor, text_features: torch.Tensor, scaled: bool = False):
        """Cosine similarity ``[N, M]``; with ``scaled`` divided by the learned temperature (ITC logits)."""
        sim = image_features @ text_features.T
        return sim / self.model.temp.detach().float().clamp(0.001, 0.5) if scaled else sim

    # ---------------------------------------------------------------- matching
    @torch.inference_mode()
    def itm_logits_for_image(
        self,
        image_embed: torch.Tensor,
        texts: list[str] | tuple[torch.Tensor, torch.Tensor],
        first_token: str = "enc",
        batch_size: int = 64,
    ) -> torch.Tensor:
        """ITM logits ``[M, 2]`` of many texts against one image's cached ViT tokens ``[1 + P, D]``.

        The image's cross-attention keys/values are computed once and shared by all texts.
        """
        if isinstance(texts, tuple):
            ids_all, mask_all = texts
        else:
            ids_all, mask_all = self.tokenize(list(texts), self.max_text_length)
        cross_kv = self.model.text_encoder.cross_kv(image_embed[None])
        out = []
        for s in range(0, ids_all.shape[0], batch_size):
            ids, mask = ids_all[s : s + batch_size], mask_all[s : s + batch_size]
            out.append(self.model.itm_logits(None, ids, mask, first_token=first_token, cross_kv=cross_kv).float())
        return torch.cat(out)

    @torch.inference_mode()
    def itm(self, images: Any, texts: Any, *, clean: bool = True, first_token: str = "enc") -> torch.Tensor:
        """ITM logits ``[N, 2]`` for aligned pairs (``images[i]`` with ``texts[i]``); ``[0, 2]`` for no pairs."""
        texts = self._texts(texts, clean)
        embeds = self.image_embeds(images)
        if embeds.shape[0] != len(texts):
            raise ValueError(
                f"itm pairs images with texts one to one: got {embeds.shape[0]} images, {len(texts)} texts"
            )
        if not texts:
            return torch.empty(0, 2, device=self.device)
        ids, mask = self.tokenize(texts, self.max_text_length)
        return self.model.itm_logits(embeds, ids, mask, first_token=first_token).float()

    @torch.inference_mode()
    def match(self, image: Any, texts: Any, *, clean: bool = True, first_token: str = "enc") -> list[dict]:
        """Score texts against one image: ITM match probability and logit, ITC cosine, best first.

        ``first_token="cls"`` reproduces the original ``BLIP_ITM`` demo class and transformers (spec §1.6).
        No texts give ``[]``.
        """
        texts_in = as_list(texts)
        texts_clean = self._texts(texts_in, clean)
        if not texts_clean:
            return []
        embed = self.image_embeds([image] if not isinstance(image, list) else image[:1])
        logits = self.itm_logits_for_image(embed[0], texts_clean, first_token=first_token)
        cos = self.similarity(self.model.image_features(embed).float(), self.text_features(texts_clean, clean=False))[0]
        probs = logits.softmax(dim=-1)[:, 1]
        rows = [
            {"text": t, "itm_prob": float(p), "itm_logit": float(lg[1]), "itc_cosine": float(c)}
            for t, p, lg, c in zip(texts_in, probs, logits, cos)
        ]
        return sorted(rows, key=lambda r: -r["itm_prob"])

    # ---------------------------------------------------------------- retrieval
    @torch.inference_mode()
    def rank(
        self,
        images: Any = None,
        texts: Any = None,
        *,
        k: int = 128,
        image_embeds: torch.Tensor | None = None,
        clean: bool = True,
        itm: bool = True,
    ) -> RankResult:
        """Bidirectional retrieval as the original evaluation: ITC top-``k`` then ITM re-rank.

        Args:
            images: images, or pass ``image_embeds`` (cached :meth:`image_embeds`) instead.
            texts: candidate texts (cleaned with ``pre_caption(., 30)`` unless ``clean=False``).
            k: re-ranking depth (``k_test``: 256 for COCO, 128 for Flickr in the original); clamped to the pool.
            itm: ``False`` returns the ITC cosine matrix in both score fields (no re-ranking).

        No images or no texts give empty ``[n_images, 0]`` / ``[0, n_texts]`` matrices.
        """
        if image_embeds is None:
            image_embeds = self.image_embeds(images)
        texts = self._texts(texts, clean)
        img_feat = self.model.image_features(image_embeds).float()
        txt_feat = self.text_features(texts, clean=False)
        cosine = img_feat @ txt_feat.T
        if not itm or not cosine.numel():
            return RankResult(cosine, cosine.clone(), cosine.T.clone())
        n_img, n_txt = cosine.shape
        ids, mask = self.tokenize(texts, self.max_text_length)
        i2t = torch.full_like(cosine, -100.0)
        kt = min(k, n_txt)
        for i in range(n_img):
            top_sim, top_idx = cosine[i].topk(kt)
            logits = self.itm_logits_for_image(image_embeds[i], (ids[top_idx], mask[top_idx]))
            i2t[i, top_idx] = logits[:, 1] + top_sim
        t2i = torch.full_like(cosine.T, -100.0)
        ki = min(k, n_img)
        for j in range(n_txt):
            top_sim, top_idx = cosine[:, j].topk(ki)
            logits = self.model.itm_logits(
                image_embeds[top_idx], ids[j : j + 1].expand(ki, -1), mask[j : j + 1].expand(ki, -1)
            ).float()
            t2i[j, top_idx] = logits[:, 1] + top_sim
        return RankResult(cosine, i2t, t2i)
