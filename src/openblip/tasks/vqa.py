"""Visual question answering with the two inference methods of ``BLIP_VQA`` (salesforce/BLIP ``blip_vqa.py``).

* ``"generate"``: beam search (3 beams, ``max_length`` 10, ``min_length`` 1, so an empty answer is possible)
  from ``[DEC]``; the answer decoder cross-attends to the question states with the question mask **replaced
  by all ones** (padded question tokens are attended) — a quirk kept for parity.
* ``"rank"``: the answer list is tokenized (longest padding, ``[DEC]`` first, no truncation as the original, except
  at the decoder's 512 positions); one decoder step gives the first-token probability of every candidate; the
  top-``k_test`` candidates are scored by the negative **label-smoothed** (0.1) LM loss summed over the answer,
  and the best one wins. The first-token probability is not added to the final score, and label smoothing
  favours short answers — both as the original.

Questions are cleaned with ``pre_question`` and tokenized with ``[ENC]`` first (max 35 tokens).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from openblip.losses import lm_loss
from openblip.models.blip import DEC_ID, BlipVQA
from openblip.tasks._common import TaskBase, as_list, chunks, json_string_list, read_text_file
from openblip.text import pre_question


def load_answer_list(source: str | Path | list[str]) -> list[str]:
    """An answer list from a list, a JSON file (``answer_list.json``: a list of strings) or a UTF-8 text file (one
    answer per line, blank lines ignored).

    Raises:
        FileNotFoundError, IsADirectoryError: the file does not exist, or is a folder.
        ValueError: naming the file: not UTF-8, invalid JSON, not a list of strings, or no answers at all.
    """
    if isinstance(source, (list, tuple)):
        answers = list(source)
        bad = [i for i, a in enumerate(answers) if not isinstance(a, str)]
        if bad:
            raise ValueError(f"the answer list must hold strings; item {bad[0]} is a {type(answers[bad[0]]).__name__}")
        if not answers:
            raise ValueError("the answer list is empty")
        return answers
    text = read_text_file(source, "answer list")
    if Path(source).suffix.lower() == ".json":
        answers = json_string_list(text, source, "answer list")
    else:
        answers = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not answers:
        raise ValueError(f"answer list {source} is empty")
    return answers


class VQA(TaskBase):
    """Answer questions about images.

    Example:
        >>> vqa = VQA("blip-base-vqa-capfilt-l")                           # doctest: +SKIP
        >>> vqa.answer("dog.jpg", "how many dogs are in this image?")     # doctest: +SKIP
        ['1']
    """

    task = "vqa"
    model_types = (BlipVQA,)

    def __init__(self, model: Any, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        if not isinstance(self.model, self.model_types):
            raise TypeError(f"VQA needs a VQA model, got {type(self.model).__name__}")

    def _questions(self, questions: Any, n: int) -> list[str]:
        qs = as_list(questions)
        if len(qs) == 1 and n > 1:
            qs = qs * n
        if len(qs) != n:
            raise ValueError(f"got {n} images but {len(qs)} questions; pass one question per image (or one for all)")
        bad = [i for i, q in enumerate(qs) if not isinstance(q, str)]
        if bad:
            raise TypeError(f"questions must be strings; item {bad[0]} is {type(qs[bad[0]]).__name__}")
        return [pre_question(q) for q in qs]

    @torch.inference_mode()
    def answer(
        self,
        images: Any,
        questions: Any,
        *,
        method: str = "generate",
        answer_list: str | Path | list[str] | None = None,
        k_test: int = 128,
        num_beams: int = 3,
        max_length: int = 10,
        min_length: int = 1,
        batch_size: int | None = None,
    ) -> list[str]:
        """One answer per (image, question) pair.

        Args:
            images: one image per question (or a single image for all questions).
            questions: one question per image (or a single question for all images).
            method: ``"generate"`` (beam search) or ``"rank"`` (choose from ``answer_list``).
            answer_list: candidates for ``"rank"``: a list, ``answer_list.json`` or a text file.
            k_test: candidates re-scored in ``"rank"`` (128 in the original; clamped to the list size); >= 1.
            num_beams, max_length, min_length: ``"generate"`` settings (lengths count the ``[DEC]`` token).

        Returns:
            One answer string per pair (``[]`` for no images and questions).

        Raises:
            ValueError: an unknown ``method``, ``"rank"`` without a valid ``answer_list`` (see
                :func:`load_answer_list`), ``k_test < 1``, or image and question counts that do not pair up.
        """
        imgs = as_list(images)
        qs = as_list(questions)
        if len(imgs) == 1 and len(qs) > 1:
            imgs = imgs * len(qs)
        qs = self._questions(qs, len(imgs))
        if method not in ("generate", "rank"):
            raise ValueError(f"method must be 'generate' or 'rank', got {method!r}")
        if method == "rank" and answer_list is None:
            raise ValueError("method='rank' needs an answer_list")
        if method == "rank" and k_test < 1:
            raise ValueError(f"k_test must be >= 1, got {k_test}")
        answers = load_answer_list(answer_list) if method == "rank" else None
        out: list[str] = []
        pairs = list(zip(imgs, qs))
        for batch in chunks(pairs, batch_size or self.batch_size):
            image_embeds = self.model.encode_image(self.pixels([p[0] for p in batch]))
            q_ids, q_mask = self.tokenize([p[1] for p in batch], max_length=35)
            q_states = self.model.encode_question(image_embeds, q_ids, q_mask)
            if method == "generate":
                out.extend(self._generate(q_states, num_beams, max_length, min_length))
            else:
                out.extend(self._rank(q_states, q_mask, answers, k_test))
        return out

    def _generate(self, q_states: torch.Tensor, num_beams: int, max_length: int, min_length: int) -> list[str]:
        bos = torch.full((q_states.shape[0], 1), DEC_ID, dtype=torch.long, device=q_states.device)
        from openblip.generation import generate

        res = generate(
            self.model.text_decoder,
            bos,
            q_states,
            None,  # the original replaces the question mask by all ones
            num_beams=num_beams,
            max_length=max_length,
            min_length=min_length,
        )
        return [self.tokenizer.decode(s, skip_special_tokens=True) for s in res.sequences.tolist()]

    def _rank(self, q_states: torch.Tensor, q_mask: torch.Tensor, answers: list[str], k_test: int) -> list[str]:
        scores, idx = rank_answers(self.model, q_states, q_mask, self._answer_tokens(answers), k_test)
        return [answers[i] for i in idx.tolist()]

    def _answer_tokens(self, answers: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        key = tuple(answers)
        cached = getattr(self, "_answer_cache", None)
        if cached is None or cached[0] != key:
            # an answer longer than the decoder's positions is cut (keeping its [SEP]); real answers are short
            limit = self.model.config.text.max_position_embeddings
            enc = self.tokenizer(answers, padding="longest", truncation=True, max_length=limit)
            ids = enc["input_ids"].to(self.device)
            ids[:, 0] = DEC_ID
            self._answer_cache = (key, (ids, enc["attention_mask"].to(self.device)))
        return self._answer_cache[1]


def rank_answers(
    model: BlipVQA,
    question_states: torch.Tensor,
    question_mask: torch.Tensor,
    answer_tokens: tuple[torch.Tensor, torch.Tensor],
    k: int = 128,
    chunk: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The original ``rank_answer``: returns (best scores ``[B]``, best answer indices ``[B]``).

    The decoder's cross-attention keys/values over each question are computed once and shared by its ``k``
    candidates (the original tiles the question states ``k`` times).
    """
    answer_ids, answer_mask = answer_tokens
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    b = question_states.shape[0]
    k = min(k, answer_ids.shape[0])
    decoder = model.text_decoder
    cross_kv = decoder.bert.cross_kv(question_states)
    start = torch.full((b, 1), DEC_ID, dtype=torch.long, device=question_states.device)
    logits, _ = decoder(start, encoder_attention_mask=question_mask, cross_kv=cross_kv)
    first_prob = logits[:, 0].float().softmax(dim=-1).index_select(1, answer_ids[:, 1])  # [B, n_answers]
    _, topk = first_prob.topk(k, dim=1)  # [B, k]
    ids = answer_ids[topk.reshape(-1)]  # [B*k, La]
    mask = answer_mask[topk.reshape(-1)]
    labels = ids.masked_fill(ids == 0, -100)
    # all k candidates of a question in one batch, sharing that question's cross K/V
    log_prob_sum = torch.empty(b * k, device=question_states.device)
    per = max(1, chunk // k) if k < chunk else 1
    for s in range(0, b, per):
        e = min(b, s + per)
        sub_kv = [(kk[s:e], vv[s:e]) for kk, vv in cross_kv]
        rows = slice(s * k, e * k)
        lg, _ = decoder(
            ids[rows], attention_mask=mask[rows], encoder_attention_mask=question_mask[s:e], cross_kv=sub_kv
        )
        log_prob_sum[rows] = -lm_loss(lg, labels[rows], label_smoothing=0.1, reduction="none")
    log_prob_sum = log_prob_sum.view(b, k)
    best = log_prob_sum.argmax(dim=1)
    return log_prob_sum.gather(1, best[:, None])[:, 0], topk.gather(1, best[:, None])[:, 0]
