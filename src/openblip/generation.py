"""Text generation for BLIP's decoders: greedy search, beam search and nucleus sampling.

Our own decoding loop (transformers' ``generate`` is never used). It gives the tokens that
salesforce/BLIP got from **transformers 4.15** ``generate`` (the version BLIP pinned; spec §1.5, §7):

* ``max_length`` and ``min_length`` count the prompt tokens (``[DEC] a picture of`` = 4 of them).
  ``max_new_tokens`` is a friendlier spelling: ``max_length = prompt length + max_new_tokens``.
* Min-length: the EOS logit is set to ``-inf`` while the current length (prompt included) is below
  ``min_length``.
* Repetition penalty (4.15 ``RepetitionPenaltyLogitsProcessor``): for every token id already in the sequence,
  prompt included, ``score < 0 ? score * p : score / p``. Greedy search and sampling apply it to the raw
  logits; beam search applies it to the **log-softmax** scores, because 4.15's beam search takes the log-softmax
  first and runs the logits processors afterwards. Processor order: repetition penalty, then min-length.
* Greedy search: argmax per step; rows that finished (emitted EOS) are padded with ``pad_token_id``.
* Sampling (4.15 ``sample``): processors, then the warpers in 4.15 order: temperature (if != 1), top-k
  (if > 0), top-p (if < 1, always keeping the most probable token), then ``torch.multinomial(softmax, 1)``.
  Finished rows are padded with ``pad_token_id``.
* Beam search (4.15 ``beam_search`` + ``BeamSearchScorer``, ``length_penalty=1.0``, ``early_stopping=False``):
  per step log-softmax, processors, add the running beam scores (initially 0 for beam 0 and -1e9 for the
  others), take the top ``2 * num_beams`` over ``num_beams * vocab``. Walking those candidates in order, an EOS
  candidate of rank < ``num_beams`` becomes a finished hypothesis (an EOS of rank >= ``num_beams`` is skipped);
  any other candidate becomes a running beam until ``num_beams`` are chosen. A finished hypothesis scores
  ``sum_logprobs / len(hyp) ** length_penalty`` where ``hyp`` is the running sequence **before** the EOS is
  appended, prompt included (4.15 ``BeamHypotheses.add(input_ids[beam].clone(), score)`` with
  ``hyp.shape[-1]``). Each input keeps its best ``num_beams`` hypotheses. An input is done when it has
  ``num_beams`` hypotheses and ``worst kept score >= best candidate sum / cur_len ** length_penalty`` (the best
  of the ``2 * num_beams`` candidate sums, EOS candidates included; ``cur_len`` = length before this step's token).
  At ``max_length`` the open beams of unfinished inputs are added as hypotheses (score = beam sum /
  ``max_length``, no EOS appended). The output holds the best ``num_return_sequences`` hypotheses per input,
  best first, each followed by EOS if shorter than ``max_length``, padded to
  ``min(longest hypothesis + 1, max_length)`` columns with ``pad_token_id``.

Differences from current transformers (5.x; ``tests/test_generation.py`` checks the agreements and shows
the differences):

* greedy search and sampling agree token for token (same processors, warpers and ``multinomial`` draws);
* beam search divides a finished hypothesis by the number of *generated* tokens including the EOS
  (``cur_len + 1 - prompt_len``) instead of the whole sequence without the EOS, so with a prompt the two rank
  hypotheses differently; its stop heuristic divides the best *running* beam (not the best candidate, EOS
  candidates included) by the generated length; at ``max_length`` it ranks the final step's top candidates
  instead of finalising the running beams; and it fills beam outputs with EOS when ``pad_token_id`` is 0.
  When no EOS reaches the top candidates both return the same sequences (scores differ by the normaliser);
* its top-p warper sorts ascending and removes the tokens whose cumulative mass is ``<= 1 - top_p``
  (the same set up to rounding).

Scores are computed in float32 whatever the model's dtype (4.15 took the log-softmax in the model's dtype).

Speed (results unchanged): a self-attention KV cache; the cross-attention keys/values are computed once per
image (:meth:`~openblip.models.text.BertModel.cross_kv`) and shared by all beams / return sequences of that image
through the decoder's ``r`` query rows per key/value row (the ``repeat_interleave`` layout), never copied per beam;
a beam reorder only ``index_select``-s the self-attention cache; inputs whose search is over leave the compute
batch (greedy/sampling: when all the input's rows have emitted EOS; beam search: when the input is done): their
rows are dropped from the cache and the cross-attention keys/values are sliced by image once per such event.
Sampling still draws its random numbers for every row, as 4.15 did for finished rows, so the samples do not
depend on which rows have left the batch. Everything runs under :func:`torch.inference_mode`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from openblip.models.text import BertLMHeadModel

#: 4.15's defaults as BLIP used them.
LENGTH_PENALTY = 1.0  # BeamSearchScorer(length_penalty=1.0); early_stopping=False


@dataclass
class GenerationOutput:
    """Result of :func:`generate`.

    Attributes:
        sequences: ``[B * num_return_sequences, L]`` token ids, prompt included, padded with ``pad_token_id``
            (rows of one input are consecutive).
        scores: beam search: the final length-normalised beam scores ``[B * num_return_sequences]`` (always
            returned). Greedy/sampling: with ``output_scores``, the sum of the model's log-probabilities
            (log-softmax of the raw logits, before any processor or warper) of the generated tokens up to and
            including the EOS, ``[B * num_return_sequences]``; otherwise ``None``.
    """

    sequences: torch.Tensor
    scores: torch.Tensor | None = None


# --------------------------------------------------------------------------------------------------------------
# helpers


def _index_rows(obj: Any, idx: torch.Tensor) -> Any:
    """``index_select(0, idx)`` on every tensor of a nested list/tuple (a cache or per-layer cross K/V)."""
    if isinstance(obj, torch.Tensor):
        return obj.index_select(0, idx)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_index_rows(o, idx) for o in obj)
    raise TypeError(f"cannot index {type(obj).__name__}")


def _first_tensor(obj: Any) -> torch.Tensor:
    while not isinstance(obj, torch.Tensor):
        obj = obj[0]
    return obj


def _repetition_penalty_(scores: torch.Tensor, tokens: torch.Tensor, penalty: float) -> torch.Tensor:
    """4.15 ``RepetitionPenaltyLogitsProcessor``, in place on ``scores [N, V]`` for the ids in ``tokens [N, L]``."""
    s = scores.gather(1, tokens)
    s = torch.where(s < 0, s * penalty, s / penalty)
    return scores.scatter_(1, tokens, s)


def _process_(
    scores: torch.Tensor,
    tokens: torch.Tensor | None,
    cur_len: int,
    min_length: int,
    repetition_penalty: float,
    eos_token_id: int | None,
) -> torch.Tensor:
    """4.15 logits processors in 4.15 order: repetition penalty, then min-length (EOS banned below it).

    ``tokens`` (the sequences so far, prompt included) is only read when ``repetition_penalty != 1``.
    """
    if repetition_penalty != 1.0:
        _repetition_penalty_(scores, tokens, repetition_penalty)
    if eos_token_id is not None and cur_len < min_length:
        scores[:, eos_token_id] = -float("inf")
    return scores


def _top_k(scores: torch.Tensor, top_k: int, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """4.15 ``TopKLogitsWarper``: everything below the k-th largest score becomes ``-inf``."""
    k = min(max(top_k, min_tokens_to_keep), scores.shape[-1])
    kth = torch.topk(scores, k)[0][..., -1, None]
    return scores.masked_fill(scores < kth, -float("inf"))


def _top_p(scores: torch.Tensor, top_p: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """4.15 ``TopPLogitsWarper``: keep the smallest prefix (by descending probability) whose mass exceeds top_p."""
    sorted_logits, sorted_indices = torch.sort(scores, descending=True)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove = cumulative > top_p
    if min_tokens_to_keep > 1:
        remove[..., : min_tokens_to_keep - 1] = False
    # shift right so that the first token above the threshold is kept too
    remove[..., 1:] = remove[..., :-1].clone()
    remove[..., 0] = False
    remove = remove.scatter(1, sorted_indices, remove)
    return scores.masked_fill(remove, -float("inf"))


def _warp(scores: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """4.15 logits warpers in 4.15 order: temperature, top-k, top-p (``min_tokens_to_keep=1``: one beam)."""
    if temperature is not None and temperature != 1.0:
        scores = scores / temperature
    if top_k is not None and top_k != 0:
        scores = _top_k(scores, top_k)
    if top_p is not None and top_p < 1.0:
        scores = _top_p(scores, top_p)
    return scores


class _BeamHypotheses:
    """4.15 ``BeamHypotheses``: the best ``num_beams`` finished sequences of one input."""

    def __init__(self, num_beams: int, length_penalty: float = LENGTH_PENALTY) -> None:
        self.num_beams = num_beams
        self.length_penalty = length_penalty
        self.beams: list[tuple[float, torch.Tensor]] = []
        self.worst_score = 1e9

    def __len__(self) -> int:
        return len(self.beams)

    def add(self, hyp: torch.Tensor, sum_logprobs: float) -> None:
        # 4.15 divides by hyp.shape[-1]: the whole sequence, prompt included, *without* the EOS just chosen
        # (the caller passes input_ids[beam] before appending). transformers >= 4.3x divide by the generated
        # length instead (5.x: generated tokens including the EOS, prompt excluded).
        score = sum_logprobs / (hyp.shape[-1] ** self.length_penalty)
        if len(self) < self.num_beams or score > self.worst_score:
            self.beams.append((score, hyp))
            if len(self) > self.num_beams:
                ranked = sorted((s, i) for i, (s, _) in enumerate(self.beams))
                del self.beams[ranked[0][1]]
                self.worst_score = ranked[1][0]
            else:
                self.worst_score = min(score, self.worst_score)

    def is_done(self, best_sum_logprobs: float, cur_len: int) -> bool:
        # early_stopping=False: stop when the best candidate, normalised by the current length, cannot beat
        # the worst kept hypothesis.
        if len(self) < self.num_beams:
            return False
        return self.worst_score >= best_sum_logprobs / cur_len**self.length_penalty


# --------------------------------------------------------------------------------------------------------------
# the public entry point


def check_generation_args(
    prompt_length: int,
    *,
    num_beams: int = 3,
    max_length: int = 20,
    max_new_tokens: int | None = None,
    sample: bool = False,
    temperature: float = 1.0,
    repetition_penalty: float = 1.0,
    num_return_sequences: int = 1,
    max_positions: int | None = None,
) -> int:
    """Check :func:`generate`'s settings without running a model; returns the effective ``max_length``.

    ``max_positions`` is the decoder's position-embedding count (``max_position_embeddings``, 512 for BLIP): a
    ``max_length`` beyond it cannot be generated. Raises :class:`ValueError` naming the offending setting.
    """
    if prompt_length < 1:
        raise ValueError("prompt_ids must hold at least the [DEC] token")
    if max_new_tokens is not None:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        max_length = prompt_length + max_new_tokens
    if max_length <= prompt_length:
        raise ValueError(
            f"max_length ({max_length}) must exceed the prompt length ({prompt_length} tokens, [DEC] included)"
        )
    if max_positions is not None and max_length > max_positions:
        given = "prompt included" if max_new_tokens is None else f"{prompt_length} prompt + {max_new_tokens} new tokens"
        raise ValueError(f"max_length ({max_length}: {given}) exceeds the text model's {max_positions} positions")
    if num_return_sequences < 1:
        raise ValueError("num_return_sequences must be >= 1")
    if not sample:
        if num_beams < 1:
            raise ValueError("num_beams must be >= 1")
        if num_beams == 1 and num_return_sequences != 1:
            raise ValueError("greedy search returns one sequence per input (num_return_sequences must be 1)")
        if num_return_sequences > num_beams:
            raise ValueError(f"num_return_sequences ({num_return_sequences}) must be <= num_beams ({num_beams})")
    if repetition_penalty <= 0:
        raise ValueError("repetition_penalty must be > 0")
    if sample and temperature <= 0:
        raise ValueError("temperature must be > 0")
    return max_length


def _max_positions(decoder: Any) -> int | None:
    """The decoder's ``max_position_embeddings`` when it has a text config (``None`` for stand-ins)."""
    cfg = getattr(getattr(decoder, "bert", None), "cfg", None)
    return getattr(cfg, "max_position_embeddings", None)


def generate(
    decoder: BertLMHeadModel,
    prompt_ids: torch.Tensor,
    encoder_states: torch.Tensor | None = None,
    encoder_mask: torch.Tensor | None = None,
    *,
    cross_kv: list | None = None,
    num_beams: int = 3,
    max_length: int = 20,
    min_length: int = 5,
    max_new_tokens: int | None = None,
    sample: bool = False,
    top_p: float = 0.9,
    top_k: int = 50,
    temperature: float = 1.0,
    repetition_penalty: float = 1.0,
    num_return_sequences: int = 1,
    eos_token_id: int | None = 102,
    pad_token_id: int = 0,
    generator: torch.Generator | None = None,
    output_scores: bool = False,
) -> GenerationOutput:
    """Generate text with a BLIP decoder, token for token as transformers 4.15 ``generate`` (see module doc).

    Args:
        decoder: a :class:`~openblip.models.text.BertLMHeadModel` (or anything with its call signature and a
            ``bert.cross_kv`` method). It is used as it is: call ``eval()`` first for deterministic output.
        prompt_ids: ``[B, P]`` prompt ids, the same prompt for every row, starting with ``[DEC]`` and without the
            trailing ``[SEP]`` (e.g. ``[DEC] a picture of``; VQA uses ``[DEC]`` alone).
        encoder_states: ``[B, Lk, D]`` states the cross-attention reads (image tokens, or VQA question states),
            one row per prompt row, **not** repeated per beam. Not needed when ``cross_kv`` is given.
        encoder_mask: ``[B, Lk]`` cross-attention mask (1 = attend) or ``None`` for all ones. The original
            VQA ``generate`` replaced the question mask by all ones; that choice belongs to the caller.
        cross_kv: precomputed ``decoder.bert.cross_kv(encoder_states)`` for the ``B`` inputs; computed here
            (once) when omitted.
        num_beams: beam width; 1 means greedy search. Ignored when ``sample`` is true: the original
            ``BLIP_Decoder.generate`` never passes it when sampling, so 4.15 sampled with one beam.
        max_length: maximum total length, **prompt included** (4.15 semantics); at most the decoder's
            ``max_position_embeddings`` (512), else :class:`ValueError`.
        min_length: minimum total length, **prompt included**: EOS is banned while the length is below it.
        max_new_tokens: if given, overrides ``max_length`` as ``P + max_new_tokens``.
        sample: multinomial sampling (nucleus sampling with the defaults) instead of search.
        top_p: nucleus mass for sampling; ``>= 1`` disables it.
        top_k: top-k for sampling (4.15's config default 50 applied to BLIP); ``0`` or ``None`` disables it.
        temperature: sampling temperature (applied before top-k/top-p).
        repetition_penalty: 4.15 repetition penalty; 1.0 disables it. The original sampling path hard-coded
            1.1; callers pass that explicitly.
        num_return_sequences: sequences returned per input: the best ones of the beam search
            (``<= num_beams``), or independent samples. Greedy search allows only 1 (as 4.15).
        eos_token_id: end-of-sequence id (``[SEP]`` = 102 for BLIP); ``None`` generates to ``max_length``.
        pad_token_id: id written after a sequence has ended.
        generator: random generator for sampling (``None`` = torch's global one).
        output_scores: for greedy search and sampling, also return the sum of log-probabilities of each
            sequence. Beam search always returns its final beam scores.

    Returns:
        :class:`GenerationOutput` with ``sequences [B * num_return_sequences, L]`` (prompt included, rows of one
        input consecutive) and ``scores``.
    """
    if prompt_ids.dim() != 2:
        raise ValueError(f"prompt_ids must be [B, P], got shape {tuple(prompt_ids.shape)}")
    n_img, plen = prompt_ids.shape
    max_length = check_generation_args(
        plen,
        num_beams=num_beams,
        max_length=max_length,
        max_new_tokens=max_new_tokens,
        sample=sample,
        temperature=temperature,
        repetition_penalty=repetition_penalty,
        num_return_sequences=num_return_sequences,
        max_positions=_max_positions(decoder),
    )

    head = getattr(getattr(decoder, "cls", None), "predictions", None)
    if hasattr(head, "reset_float32_cache"):  # weights may have changed since the last call, even through .data
        head.reset_float32_cache()
    with torch.inference_mode():
        if cross_kv is None:
            if encoder_states is None:
                raise ValueError("give encoder_states or cross_kv")
            if encoder_states.shape[0] != n_img:
                raise ValueError(f"encoder_states has {encoder_states.shape[0]} rows for {n_img} prompts")
            cross_kv = decoder.bert.cross_kv(encoder_states)
        elif _first_tensor(cross_kv).shape[0] != n_img:
            raise ValueError(f"cross_kv has {_first_tensor(cross_kv).shape[0]} rows for {n_img} prompts")
        if encoder_mask is not None and encoder_mask.shape[0] != n_img:
            raise ValueError(f"encoder_mask has {encoder_mask.shape[0]} rows for {n_img} prompts")
        common = dict(
            decoder=decoder,
            prompt_ids=prompt_ids,
            cross_kv=cross_kv,
            encoder_mask=encoder_mask,
            max_length=max_length,
            min_length=min_length,
            repetition_penalty=repetition_penalty,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
        )
        if sample:
            return _greedy_or_sample(
                **common,
                num_return_sequences=num_return_sequences,
                sample=True,
                temperature=temperature,
                top_k=top_k,
                top_p=top_p,
                generator=generator,
                output_scores=output_scores,
            )
        if num_beams == 1:
            return _greedy_or_sample(**common, output_scores=output_scores)
        return _beam_search(**common, num_beams=num_beams, num_return_sequences=num_return_sequences)


def _step(
    decoder: torch.nn.Module,
    ids: torch.Tensor,
    cross_kv: list,
    encoder_mask: torch.Tensor | None,
    past: list | None,
) -> tuple[torch.Tensor, list]:
    """One cached decoder call: float32 logits ``[N, V]`` of the last position and the new cache."""
    logits, past = decoder(
        ids,
        encoder_attention_mask=encoder_mask,
        past_key_values=past,
        use_cache=True,
        cross_kv=cross_kv,
        last_only=True,
        float32_logits=True,
    )
    return logits[:, -1].float(), past


# --------------------------------------------------------------------------------------------------------------
# greedy search and sampling


def _greedy_or_sample(
    decoder: torch.nn.Module,
    prompt_ids: torch.Tensor,
    cross_kv: list,
    encoder_mask: torch.Tensor | None,
    max_length: int,
    min_length: int,
    repetition_penalty: float,
    eos_token_id: int | None,
    pad_token_id: int,
    num_return_sequences: int = 1,
    sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    output_scores: bool = False,
) -> GenerationOutput:
    """4.15 ``greedy_search`` / ``sample``; rows of finished inputs leave the compute batch.

    Rows are image-major (``r = num_return_sequences`` consecutive rows per input, all sharing the input's
    cross-attention K/V). An input leaves the batch when all its rows have ended; a finished row of an input
    still running is fed ``pad_token_id`` as in 4.15 (its output is ignored).
    """
    device = prompt_ids.device
    n_img, plen = prompt_ids.shape
    r = num_return_sequences
    n = n_img * r
    seqs = torch.full((n, max_length), pad_token_id, dtype=torch.long, device=device)
    seqs[:, :plen] = prompt_ids.repeat_interleave(r, dim=0) if r > 1 else prompt_ids
    finished = torch.zeros(n, dtype=torch.bool, device=device)
    totals = torch.zeros(n, dtype=torch.float32, device=device) if output_scores else None
    rows = torch.arange(n, device=device)  # the rows still in the compute batch (original indices)
    n_active_img = n_img

    # The prompt is the same for the r rows of an input: run it once per input and copy the (short) cache.
    logits, past = _step(decoder, prompt_ids, cross_kv, encoder_mask, None)
    if r > 1:
        expand = torch.arange(n_img, device=device).repeat_interleave(r)
        logits = logits.index_select(0, expand)
        past = _index_rows(past, expand)
    cur_len = plen
    while True:
        model_logprobs = F.log_softmax(logits, dim=-1) if output_scores else None
        hist = seqs[rows, :cur_len] if repetition_penalty != 1.0 else None
        scores = _process_(logits, hist, cur_len, min_length, repetition_penalty, eos_token_id)
        done_rows = finished.index_select(0, rows)
        if sample:
            probs = F.softmax(_warp(scores, temperature, top_k, top_p), dim=-1)
            if rows.shape[0] < n:
                # Draw for all n rows as 4.15 does (it keeps sampling finished rows and discards the result), so
                # that the random stream, hence every sample, does not depend on which rows left the batch.
                full = torch.zeros(n, probs.shape[1], dtype=probs.dtype, device=device)
                full[:, pad_token_id] = 1.0
                full[rows] = probs
                probs = full
            nxt = torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)
            if rows.shape[0] < n:
                nxt = nxt.index_select(0, rows)
        else:
            nxt = scores.argmax(dim=-1)
        nxt = nxt.masked_fill(done_rows, pad_token_id)
        if totals is not None:
            lp = model_logprobs.gather(1, nxt[:, None]).squeeze(1)
            totals[rows] += lp.masked_fill(done_rows, 0.0)
        seqs[rows, cur_len] = nxt
        if eos_token_id is not None:
            finished[rows] = done_rows | (nxt == eos_token_id)
        cur_len += 1
        if cur_len >= max_length or bool(finished.all()):
            break

        # drop the inputs whose rows have all ended
        img_done = finished.index_select(0, rows).view(n_active_img, r).all(dim=1)
        if bool(img_done.any()):
            keep_img = (~img_done).nonzero().squeeze(1)
            keep_rows = (keep_img[:, None] * r + torch.arange(r, device=device)).flatten()
            cross_kv = _index_rows(cross_kv, keep_img)
            encoder_mask = None if encoder_mask is None else encoder_mask.index_select(0, keep_img)
            past = _index_rows(past, keep_rows)
            rows = rows.index_select(0, keep_rows)
            nxt = nxt.index_select(0, keep_rows)
            n_active_img = keep_img.shape[0]
        logits, past = _step(decoder, nxt[:, None], cross_kv, encoder_mask, past)

    return GenerationOutput(seqs[:, :cur_len].contiguous(), totals)


# --------------------------------------------------------------------------------------------------------------
# beam search


def _beam_search(
    decoder: torch.nn.Module,
    prompt_ids: torch.Tensor,
    cross_kv: list,
    encoder_mask: torch.Tensor | None,
    max_length: int,
    min_length: int,
    repetition_penalty: float,
    eos_token_id: int | None,
    pad_token_id: int,
    num_beams: int,
    num_return_sequences: int = 1,
) -> GenerationOutput:
    """4.15 ``beam_search`` with ``BeamSearchScorer`` (see the module doc); done inputs leave the batch.

    Works for ``num_beams == 1`` too (4.15 dispatches that to greedy search; :func:`generate` does the same).
    """
    device = prompt_ids.device
    n_img, plen = prompt_ids.shape
    k = num_beams
    hyps = [_BeamHypotheses(k) for _ in range(n_img)]
    active = list(range(n_img))  # original indices of the inputs still searching, in row order

    # All beams of an input start identical: run the prompt once per input; the first reorder maps a beam row
    # to its input's cache row (row // k).
    logits, past = _step(decoder, prompt_ids, cross_kv, encoder_mask, None)
    logits = logits.repeat_interleave(k, dim=0)
    past_is_per_input = True
    seqs = prompt_ids.repeat_interleave(k, dim=0)
    beam_scores = torch.zeros(n_img, k, dtype=torch.float32, device=device)
    beam_scores[:, 1:] = -1e9
    beam_scores = beam_scores.view(-1)
    cur_len = plen
    while True:
        scores = F.log_softmax(logits, dim=-1)
        scores = _process_(scores, seqs, cur_len, min_length, repetition_penalty, eos_token_id)
        vocab = scores.shape[-1]
        scores = (scores + beam_scores[:, None]).view(len(active), k * vocab)
        top_scores, top_ids = torch.topk(scores, 2 * k, dim=1, largest=True, sorted=True)
        cand_scores = top_scores.tolist()
        cand_beams = torch.div(top_ids, vocab, rounding_mode="floor").tolist()
        cand_tokens = (top_ids % vocab).tolist()

        kept: list[int] = []  # positions (in ``active``) of inputs that go on
        next_rows: list[int] = []
        next_tokens: list[int] = []
        next_scores: list[float] = []
        for a, img in enumerate(active):
            hyp = hyps[img]
            rows_a, tokens_a, scores_a = [], [], []
            for rank, (sc, beam, tok) in enumerate(zip(cand_scores[a], cand_beams[a], cand_tokens[a])):
                row = a * k + beam
                if eos_token_id is not None and tok == eos_token_id:
                    if rank >= k:  # an EOS outside the top num_beams candidates is not a hypothesis
                        continue
                    hyp.add(seqs[row].clone(), sc)  # without the EOS: length cur_len (see _BeamHypotheses.add)
                else:
                    rows_a.append(row)
                    tokens_a.append(tok)
                    scores_a.append(sc)
                if len(rows_a) == k:
                    break
            if len(rows_a) < k:  # cannot happen: at most one EOS per beam among the 2k candidates
                raise RuntimeError("beam search found fewer continuations than beams")
            if not hyp.is_done(max(cand_scores[a]), cur_len):
                kept.append(a)
                next_rows += rows_a
                next_tokens += tokens_a
                next_scores += scores_a
        cur_len += 1
        if not kept:
            break
        beam_idx = torch.tensor(next_rows, dtype=torch.long, device=device)
        tokens = torch.tensor(next_tokens, dtype=torch.long, device=device)
        seqs = torch.cat([seqs.index_select(0, beam_idx), tokens[:, None]], dim=1)
        beam_scores = torch.tensor(next_scores, dtype=torch.float32, device=device)
        if len(kept) < len(active):
            active = [active[a] for a in kept]
        if cur_len >= max_length:
            # 4.15 finalize: the open beams of the inputs not done become hypotheses (full length, no EOS)
            final = beam_scores.tolist()
            for a, img in enumerate(active):
                for j in range(k):
                    hyps[img].add(seqs[a * k + j], final[a * k + j])
            break
        past = _index_rows(past, beam_idx // k if past_is_per_input else beam_idx)
        past_is_per_input = False
        if len(kept) < _first_tensor(cross_kv).shape[0]:
            keep_img = torch.tensor(kept, dtype=torch.long, device=device)
            cross_kv = _index_rows(cross_kv, keep_img)
            encoder_mask = None if encoder_mask is None else encoder_mask.index_select(0, keep_img)
        logits, past = _step(decoder, tokens[:, None], cross_kv, encoder_mask, past)

    # 4.15 finalize: best num_return_sequences per input, then EOS (if it fits) and padding
    best: list[torch.Tensor] = []
    best_scores: list[float] = []
    for hyp in hyps:
        ranked = sorted(hyp.beams, key=lambda x: x[0])
        for _ in range(num_return_sequences):
            score, tokens_h = ranked.pop()
            best.append(tokens_h)
            best_scores.append(score)
    lengths = [h.shape[-1] for h in best]
    width = min(max(lengths) + 1, max_length)
    out = torch.full((len(best), width), pad_token_id, dtype=torch.long, device=device)
    for i, h in enumerate(best):
        out[i, : lengths[i]] = h
        if lengths[i] < max_length and eos_token_id is not None:
            out[i, lengths[i]] = eos_token_id
    return GenerationOutput(out, torch.tensor(best_scores, dtype=torch.float32, device=device))
