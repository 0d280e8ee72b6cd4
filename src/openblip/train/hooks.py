"""Periodic evaluation hooks for the training loop.

A hook is any callable ``hook(model, step=..., epoch=...) -> dict[str, float]`` with the attributes ``name``,
``every_steps`` (run every N optimizer steps, or ``None``) and ``at_epoch_end`` (run when an epoch ends). The loop
runs hooks on rank 0 only, with the plain task model (not the DDP wrapper) in eval mode, under
``torch.no_grad``, and with every RNG state saved and restored around the call -- so evaluating never changes
what training does next, and a resumed run stays bit-identical to an uninterrupted one. The returned numbers are
logged to ``metrics.jsonl`` as ``{"event": "eval", "step", "epoch", "<name>/<key>": value, ...}``.

Ready-made hooks (each evaluates one annotation file of the original formats, optionally only its first
``max_items`` entries):

* :class:`RetrievalEval` -- ``train_retrieval.evaluation``: ITC top-``k_test`` then ITM re-ranking
  (:meth:`openblip.tasks.retrieval.Retriever.rank`) and :func:`openblip.eval.retrieval_metrics`
  (``txt_r1 ... r_mean``).
* :class:`VQARankEval` -- rank inference over the answer list (``k_test``) and
  :func:`openblip.eval.vqa_accuracy`; without ground-truth answers (VQA test-dev) it writes the result file only.
* :class:`NLVREval` -- accuracy of ``argmax(cls_head)`` (:func:`openblip.eval.nlvr_accuracy`).
* :class:`CaptionLossEval` -- the captioning LM loss on an eval split (cheap; no generation).
* :class:`CaptionMetricsEval` -- beam-search captions and COCO metrics (BLEU, METEOR, ROUGE-L, CIDEr, SPICE) as
  ``train_caption.py``; needs :mod:`openblip.generation` and Java for pycocoevalcap, imported when run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from openblip.data.datasets import load_annotations


def _join(root: str | os.PathLike | None, path: str) -> str:
    return os.path.join(os.fspath(root), path) if root else path


class EvalHook:
    """Base class: holds ``name``, ``every_steps`` and ``at_epoch_end``."""

    name = "eval"

    def __init__(self, name: str | None = None, every_steps: int | None = None, at_epoch_end: bool = True) -> None:
        if name:
            self.name = name
        self.every_steps = int(every_steps) if every_steps else None
        self.at_epoch_end = bool(at_epoch_end)

    def __call__(self, model: Any, *, step: int, epoch: int) -> dict[str, float]:
        raise NotImplementedError

    def __repr__(self) -> str:
        cls = type(self).__name__
        return f"{cls}(name={self.name!r}, every_steps={self.every_steps}, at_epoch_end={self.at_epoch_end})"


class RetrievalEval(EvalHook):
    """Image-text retrieval R@1/5/10 on a ``{"image", "caption": [...]}`` split (COCO/Flickr val/test format).

    ``itc=True`` also returns the metrics of the same ranking before ITM re-ranking (ITC cosine), as ``itc_*``.
    """

    name = "retrieval"

    def __init__(
        self,
        ann_file: str | os.PathLike,
        image_root: str | os.PathLike | None,
        *,
        k_test: int = 256,
        max_items: int | None = None,
        batch_size: int = 64,
        itc: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        from openblip.data.datasets import CaptionEvalDataset

        self.itc = bool(itc)
        ds = CaptionEvalDataset(ann_file, image_root, transform=None)
        n_img = len(ds) if max_items is None else min(len(ds), int(max_items))
        self.images = [_join(image_root, p) for p in ds.image[:n_img]]
        keep = [t for i in range(n_img) for t in ds.img2txt[i]]
        remap = {old: new for new, old in enumerate(keep)}
        self.texts = [ds.text[t] for t in keep]
        self.img2txt = {i: [remap[t] for t in ds.img2txt[i]] for i in range(n_img)}
        self.txt2img = {remap[t]: ds.txt2img[t] for t in keep}
        self.k_test = int(k_test)
        self.batch_size = batch_size

    def __call__(self, model: Any, *, step: int, epoch: int) -> dict[str, float]:
        from openblip.eval import retrieval_metrics
        from openblip.tasks.retrieval import Retriever

        retriever = Retriever(model, batch_size=self.batch_size)
        result = retriever.rank(self.images, self.texts, k=self.k_test, clean=False)
        metrics = retrieval_metrics(result.i2t, result.t2i, self.txt2img, self.img2txt)
        if self.itc:
            itc = retrieval_metrics(result.cosine, result.cosine.T, self.txt2img, self.img2txt)
            metrics.update({f"itc_{k}": v for k, v in itc.items()})
        return metrics


class VQARankEval(EvalHook):
    """VQA rank-inference accuracy (``inference: rank``, ``k_test`` candidates from ``answer_list``)."""

    name = "vqa"

    def __init__(
        self,
        ann_file: str | os.PathLike,
        image_root: str | os.PathLike | Mapping[str, str] | None,
        answer_list: str | os.PathLike | Sequence[str],
        *,
        k_test: int = 128,
        max_items: int | None = None,
        batch_size: int = 32,
        result_file: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        from openblip.tasks.vqa import load_answer_list

        anns = load_annotations(ann_file)
        if max_items is not None:
            anns = anns[: int(max_items)]
        roots = dict(image_root) if isinstance(image_root, Mapping) else None

        def path_of(a: Mapping[str, Any]) -> str:
            if roots is not None:
                src = a.get("dataset", "vqa")
                return _join(roots.get(src, roots.get(f"{src}_root")), a["image"])
            return _join(image_root, a["image"])

        self.images = [path_of(a) for a in anns]
        self.questions = [a["question"] for a in anns]
        self.question_ids = [a.get("question_id", i) for i, a in enumerate(anns)]
        answers = [a.get("answer") for a in anns]
        self.answers = None if any(a is None for a in answers) else [[a] if isinstance(a, str) else a for a in answers]
        self.answer_list = load_answer_list(
            list(answer_list) if not isinstance(answer_list, (str, os.PathLike)) else answer_list
        )
        self.k_test = int(k_test)
        self.batch_size = batch_size
        self.result_file = result_file

    def __call__(self, model: Any, *, step: int, epoch: int) -> dict[str, float]:
        from openblip.eval import vqa_accuracy
        from openblip.tasks.vqa import VQA

        vqa = VQA(model, batch_size=self.batch_size)
        preds = vqa.answer(self.images, self.questions, method="rank", answer_list=self.answer_list, k_test=self.k_test)
        self.predictions = preds  # the last call's answers, aligned with question_ids
        if self.result_file is not None:
            Path(self.result_file).parent.mkdir(parents=True, exist_ok=True)
            rows = [{"question_id": q, "answer": a} for q, a in zip(self.question_ids, preds)]
            Path(self.result_file).write_text(json.dumps(rows) + "\n")
        if self.answers is None:
            return {"n": float(len(preds))}
        return {"acc": float(vqa_accuracy(preds, self.answers)["overall"])}


class NLVREval(EvalHook):
    """NLVR2 accuracy on a ``{"images": [p0, p1], "sentence", "label"}`` split."""

    name = "nlvr"

    def __init__(
        self,
        ann_file: str | os.PathLike,
        image_root: str | os.PathLike | None,
        *,
        max_items: int | None = None,
        batch_size: int = 64,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        anns = load_annotations(ann_file)
        if max_items is not None:
            anns = anns[: int(max_items)]
        self.pairs = [(_join(image_root, a["images"][0]), _join(image_root, a["images"][1])) for a in anns]
        self.sentences = [a["sentence"] for a in anns]
        self.labels = [a["label"] for a in anns]
        self.batch_size = batch_size

    def __call__(self, model: Any, *, step: int, epoch: int) -> dict[str, float]:
        from openblip.eval import nlvr_accuracy
        from openblip.tasks.nlvr import NLVR

        preds = NLVR(model, batch_size=self.batch_size).predict(self.pairs, self.sentences)
        return {"acc": float(nlvr_accuracy([p.label for p in preds], self.labels))}


class CaptionLossEval(EvalHook):
    """Mean captioning LM loss (prompt and pads unsupervised, label smoothing 0.1) over every (image, caption)
    pair of an eval split; a cheap progress signal that needs no generation."""

    name = "caption"

    def __init__(
        self,
        ann_file: str | os.PathLike,
        image_root: str | os.PathLike | None,
        *,
        prompt: str = "a picture of ",
        max_items: int | None = None,
        batch_size: int = 32,
        max_length: int = 40,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        from openblip.data.datasets import CaptionEvalDataset

        ds = CaptionEvalDataset(ann_file, image_root, transform=None)
        n_img = len(ds) if max_items is None else min(len(ds), int(max_items))
        self.pairs = [
            (_join(image_root, ds.image[i]), prompt + ds.text[t]) for i in range(n_img) for t in ds.img2txt[i]
        ]
        self.prompt = prompt
        self.batch_size = batch_size
        self.max_length = max_length

    def __call__(self, model: Any, *, step: int, epoch: int) -> dict[str, float]:
        from openblip.losses import lm_loss
        from openblip.tokenizer import get_tokenizer
        from openblip.transforms import preprocess

        tok = get_tokenizer()
        prompt_length = len(tok(self.prompt)["input_ids"][0]) - 1
        total, count = 0.0, 0
        for s in range(0, len(self.pairs), self.batch_size):
            chunk = self.pairs[s : s + self.batch_size]
            pixels = preprocess([p for p, _ in chunk], model.image_size, device=model.device, dtype=model.dtype)
            enc = tok([t for _, t in chunk], padding="longest", truncation=True, max_length=self.max_length)
            ids, mask = enc["input_ids"].to(model.device), enc["attention_mask"].to(model.device)
            labels = ids.masked_fill(mask == 0, -100)
            labels[:, :prompt_length] = -100
            per_seq = lm_loss(model(pixels, ids, mask), labels, reduction="none")
            total += float(per_seq.sum())
            count += int((labels[:, 1:] != -100).sum())
        return {"loss": total / max(count, 1)}


class CaptionMetricsEval(EvalHook):
    """COCO caption metrics of beam-search captions (``num_beams=3, max_length=20, min_length=5``).

    Needs :class:`openblip.tasks.caption.Captioner` and :func:`openblip.eval.caption_metrics` (Java), imported
    when the hook runs.
    """

    name = "caption"

    def __init__(
        self,
        ann_file: str | os.PathLike,
        image_root: str | os.PathLike | None,
        *,
        num_beams: int = 3,
        max_length: int = 20,
        min_length: int = 5,
        prompt: str = "a picture of ",
        max_items: int | None = None,
        batch_size: int = 32,
        result_file: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        from openblip.data.datasets import CaptionEvalDataset

        ds = CaptionEvalDataset(ann_file, image_root, transform=None)
        n_img = len(ds) if max_items is None else min(len(ds), int(max_items))
        self.images = [_join(image_root, ds.image[i]) for i in range(n_img)]
        # raw reference captions, as the COCO ground-truth files hold them (PTB-tokenised by the scorer)
        raw = [a.get("caption", []) for a in ds.annotation[:n_img]]
        self.references = [[c] if isinstance(c, str) else list(c) for c in raw]
        self.image_ids = ds.image_ids[:n_img]
        self.gen = {"num_beams": num_beams, "max_length": max_length, "min_length": min_length}
        self.prompt = prompt
        self.batch_size = batch_size
        self.result_file = result_file

    def __call__(self, model: Any, *, step: int, epoch: int) -> dict[str, float]:
        from openblip.eval import caption_metrics
        from openblip.tasks.caption import Captioner

        captioner = Captioner(model, batch_size=self.batch_size)
        out = captioner.caption(self.images, prompt=self.prompt, **self.gen)
        captions = [c if isinstance(c, str) else getattr(c, "text", str(c)) for c in out]
        if self.result_file is not None:
            Path(self.result_file).parent.mkdir(parents=True, exist_ok=True)
            rows = [{"image_id": i, "caption": c} for i, c in zip(self.image_ids, captions)]
            Path(self.result_file).write_text(json.dumps(rows) + "\n")
        scores = caption_metrics(captions, self.references)
        return {k: float(v) for k, v in scores.items() if isinstance(v, (int, float))}


def run_hook(hook: Any, model: torch.nn.Module, *, step: int, epoch: int) -> dict[str, float]:
    """Run one hook in eval mode without gradients; the caller restores train mode and RNG state."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            result = hook(model, step=step, epoch=epoch)
    finally:
        model.train(was_training)
    return {str(k): float(v) for k, v in (result or {}).items()}
