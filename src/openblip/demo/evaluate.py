"""The demo's evaluation on held-out (test) scenes, with the library's task pipelines and metrics.

* Captioning (:class:`openblip.tasks.caption.Captioner`): beam search (3 beams, max 20 / min 5 tokens counting
  ``[DEC]``, the COCO settings) from ``[DEC]`` alone (no prompt: BLIP pre-trains its LM without one).
  ``caption_exact``: the caption equals one of the scene's two references after
  :func:`openblip.eval.normalize_caption`; ``bleu4``/``cider``: :func:`openblip.eval.caption_metrics`;
  ``caption_token_acc``: teacher-forced next-token accuracy over both references (words and ``[SEP]``; the
  ``[DEC]`` input and padding are not scored).
* Retrieval (:class:`openblip.tasks.retrieval.Retriever`) on ``n_retrieval`` test scenes whose canonical captions
  are all different, with those captions as the texts (one per scene), so R@K is defined without ties: ITC cosine
  recall, and the original's ITC top-``k`` + ITM re-ranking (``ITM logit + cosine``) recall.
* ``itm_hardneg_acc``: fraction of test scenes whose true canonical caption gets a higher ITM match probability
  than its hard negative (one object's colour, shape or size changed, or two objects swapped).
* VQA (:class:`openblip.tasks.vqa.VQA`): ``method="rank"`` over the world's ``answer_list`` (all candidates), the
  original's VQA evaluation; accuracy with :func:`openblip.eval.vqa_accuracy`, overall and for ``color``.

Every value returned is a fraction in [0, 1]; BLEU-4 and CIDEr are on pycocoevalcap's own scale (CIDEr may exceed
1), i.e. :mod:`openblip.eval`'s percentages divided by 100.
"""

from __future__ import annotations

import sys
from collections import Counter, defaultdict
from typing import Any

import torch

from openblip.demo.data import TestData
from openblip.demo.settings import DemoConfig
from openblip.eval import caption_accuracy, recall_at_k, vqa_accuracy
from openblip.models.blip import BlipPretrain, BlipVQA
from openblip.tasks.caption import Captioner
from openblip.tasks.retrieval import Retriever
from openblip.tasks.vqa import VQA
from openblip.tokenizer import get_tokenizer


@torch.inference_mode()
def image_embeds(model: BlipPretrain | BlipVQA, pixels: torch.Tensor, chunk: int = 128) -> torch.Tensor:
    return torch.cat([model.encode_image(pixels[i : i + chunk]) for i in range(0, pixels.shape[0], chunk)])


def _coco(predictions: list[str], references: list[list[str]], log: Any) -> dict[str, float | None]:
    try:
        from openblip.eval import caption_metrics

        m = caption_metrics(predictions, references, spice=False)
        return {"bleu4": m["bleu4"] / 100.0, "cider": m["cider"] / 100.0}
    except (ImportError, RuntimeError, OSError) as e:  # no Java or no pycocoevalcap: report, don't fail
        log(f"BLEU/CIDEr not computed: {e}")
        return {"bleu4": None, "cider": None}


@torch.inference_mode()
def token_accuracy(model: BlipPretrain, embeds: torch.Tensor, references: list[list[str]], chunk: int = 128) -> float:
    """Teacher-forced next-token accuracy of the LM over every reference caption (``[SEP]`` included)."""
    tok = get_tokenizer()
    rows = [(i, r) for i, refs in enumerate(references) for r in refs]
    hits = total = 0
    for s in range(0, len(rows), chunk):
        part = rows[s : s + chunk]
        enc = tok([r for _, r in part], padding="longest", truncation=True, max_length=40)
        ids, mask = enc["input_ids"], enc["attention_mask"]
        logits = model.decoder_logits(embeds[[i for i, _ in part]], ids, mask)
        pred = logits[:, :-1].argmax(-1)
        target = ids[:, 1:]
        valid = mask[:, 1:].bool()
        hits += int(((pred == target) & valid).sum())
        total += int(valid.sum())
    return hits / max(total, 1)


def bigram_token_accuracy(train_captions: list[list[str]], references: list[list[str]]) -> float:
    """A text-only baseline for ``caption_token_acc``: predict the most frequent next token after the current one
    (bigram counts over the train captions, ``[DEC]`` and ``[SEP]`` included)."""
    tok = get_tokenizer()

    def seqs(texts: list[str]) -> list[list[int]]:
        enc = tok(texts, padding="longest")
        return [ids[m.bool()].tolist() for ids, m in zip(enc["input_ids"], enc["attention_mask"])]

    counts: dict[int, Counter] = defaultdict(Counter)
    for ids in seqs([c for caps in train_captions for c in caps]):
        for a, b in zip(ids[:-1], ids[1:]):
            counts[a][b] += 1
    best = {a: c.most_common(1)[0][0] for a, c in counts.items()}
    hits = total = 0
    for ids in seqs([r for refs in references for r in refs]):
        for a, b in zip(ids[:-1], ids[1:]):
            hits += best.get(a) == b
            total += 1
    return hits / max(total, 1)


def evaluate_captions(
    model: BlipPretrain, test: TestData, cfg: DemoConfig, embeds: torch.Tensor, log: Any
) -> tuple[dict[str, Any], list[str]]:
    cap = Captioner(model, batch_size=64)
    generated = [
        c[0].text
        for c in cap.generate(
            test.pixels, num_beams=cfg.num_beams, max_length=cfg.max_length, min_length=cfg.min_length
        )
    ]
    out: dict[str, Any] = {
        "caption_exact": caption_accuracy(generated, test.references)["exact"] / 100.0,
        "caption_token_acc": token_accuracy(model, embeds, test.references),
    }
    if cfg.coco_metrics:
        out.update(_coco(generated, test.references, log))
    else:
        out.update({"bleu4": None, "cider": None})
    return out, generated


@torch.inference_mode()
def evaluate_retrieval(
    model: BlipPretrain, test: TestData, cfg: DemoConfig, embeds: torch.Tensor
) -> tuple[dict[str, float], dict[str, Any]]:
    sub = test.retrieval_index
    texts = [test.canonical[i] for i in sub]
    retriever = Retriever(model, batch_size=64)
    result = retriever.rank(texts=texts, image_embeds=embeds[sub], k=cfg.itm_k)
    gt = list(range(len(sub)))
    itc_i2t = recall_at_k(result.cosine, gt, (1, 5))
    itc_t2i = recall_at_k(result.cosine.T, gt, (1, 5))
    itm_i2t = recall_at_k(result.i2t, gt, (1, 5))
    itm_t2i = recall_at_k(result.t2i, gt, (1, 5))
    metrics = {
        "itc_i2t_r1": itc_i2t[1] / 100.0,
        "itc_t2i_r1": itc_t2i[1] / 100.0,
        "itc_i2t_r5": itc_i2t[5] / 100.0,
        "itc_t2i_r5": itc_t2i[5] / 100.0,
        "itm_i2t_r1": itm_i2t[1] / 100.0,
        "itm_t2i_r1": itm_t2i[1] / 100.0,
        "itm_i2t_r5": itm_i2t[5] / 100.0,
        "itm_t2i_r5": itm_t2i[5] / 100.0,
    }
    return metrics, {"texts": texts, "t2i": result.t2i, "cosine": result.cosine, "subset": sub}


@torch.inference_mode()
def itm_match_prob(model: BlipPretrain, embeds: torch.Tensor, texts: list[str], chunk: int = 128) -> torch.Tensor:
    """ITM match probability of ``texts[i]`` for image ``i`` (``[ENC]`` first, as training)."""
    tok = get_tokenizer()
    probs = []
    for s in range(0, len(texts), chunk):
        enc = tok(texts[s : s + chunk], padding="longest", truncation=True, max_length=35)
        logits = model.itm_logits(embeds[s : s + chunk], enc["input_ids"], enc["attention_mask"], first_token="enc")
        probs.append(logits.float().softmax(-1)[:, 1])
    return torch.cat(probs)


def evaluate_hard_negatives(model: BlipPretrain, test: TestData, embeds: torch.Tensor) -> dict[str, Any]:
    pos = itm_match_prob(model, embeds, test.canonical)
    neg = itm_match_prob(model, embeds, test.negatives)
    wins = (pos > neg).float()
    by_kind: dict[str, list[float]] = defaultdict(list)
    for kind, w in zip(test.negative_kinds, wins.tolist()):
        by_kind[kind].append(w)
    return {
        "itm_hardneg_acc": float(wins.mean()),
        "itm_hardneg_by_kind": {k: sum(v) / len(v) for k, v in sorted(by_kind.items())},
        "itm_pos_prob": pos,
        "itm_neg_prob": neg,
    }


def evaluate_vqa(vqa_model: BlipVQA, test: TestData) -> tuple[dict[str, Any], list[str]]:
    task = VQA(vqa_model, batch_size=64)
    pixels = test.pixels[test.vqa_image]
    preds = task.answer(
        pixels, test.vqa_question, method="rank", answer_list=test.answer_list, k_test=len(test.answer_list)
    )
    acc = vqa_accuracy(preds, test.vqa_answers, question_types=test.vqa_type)
    per_type = {t: v / 100.0 for t, v in sorted(acc["per_question_type"].items())}
    return {"vqa_acc": acc["overall"] / 100.0, "vqa_color_acc": per_type.get("color"), "vqa_by_type": per_type}, preds


def log_to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
