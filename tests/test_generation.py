"""Decoding (:mod:`openblip.generation`): transformers-4.15 semantics, token for token.

* hand-checkable cases on a toy decoder whose next-token distribution is a table lookup on the history;
* a plain brute-force 4.15 reference (no cache, full recompute, states repeated per beam, done inputs kept in
  the batch) against the fast implementation on random tiny MED decoders;
* transformers 5.x ``generate`` on a tiny random ``BlipForConditionalGeneration`` where its semantics coincide
  with 4.15 (greedy, sampling, beam search without EOS), and the documented differences where they do not.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from openblip.config import TextConfig
from openblip.generation import GenerationOutput, generate
from openblip.models.text import BertLMHeadModel


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: thread start-up costs more than it saves (and CI machines are shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------------------------------------------
# toy decoder: logits = table(image, history)

PAD, DEC, EOS = 0, 1, 2
V = 40
NEG = -1e4  # "impossible" logit (finite, so every log-softmax stays finite)


def dist(probs: dict[int, float], rest: tuple[int, int] = (10, V)) -> torch.Tensor:
    """Log-probabilities: ``probs`` on the named tokens, the remaining mass spread over ``range(*rest)``."""
    p = torch.zeros(V, dtype=torch.float64)
    for t, q in probs.items():
        p[t] = q
    left = 1.0 - sum(probs.values())
    if left > 1e-12:
        p[rest[0] : rest[1]] += left / (rest[1] - rest[0])
    return p.log().clamp_min(NEG).float()


class ToyBert:
    def __init__(self) -> None:
        self.cross_kv_calls = 0

    def cross_kv(self, states: torch.Tensor) -> list:
        """``states [B, 1, 1]`` carry the image id; one fake layer of keys/values ``[B, 1, 1, 1]``."""
        self.cross_kv_calls += 1
        kv = states[:, None].float()
        return [(kv, kv.clone())]


class ToyDecoder:
    """Same call signature as :class:`BertLMHeadModel`; the cache holds the token history.

    ``table(image, history)`` returns the next-token logits ``[V]``. Every call is recorded as
    ``(query rows, cross-attention key/value rows, new tokens)``.
    """

    def __init__(self, table) -> None:
        self.table = table
        self.bert = ToyBert()
        self.calls: list[tuple[int, int, int]] = []

    def __call__(
        self,
        input_ids,
        attention_mask=None,
        encoder_hidden_states=None,
        encoder_attention_mask=None,
        past_key_values=None,
        use_cache=False,
        cross_kv=None,
        last_only=False,
        float32_logits=False,
    ):
        if cross_kv is None:
            cross_kv = self.bert.cross_kv(encoder_hidden_states)
        kv = cross_kv[0][0]
        n, nk = input_ids.shape[0], kv.shape[0]
        assert n % nk == 0, "query rows must be a multiple of the key/value rows"
        images = kv[:, 0, 0, 0].long().repeat_interleave(n // nk).tolist()
        self.calls.append((n, nk, input_ids.shape[1]))
        hist = input_ids
        if past_key_values is not None:
            hist = torch.cat([past_key_values[0][0][:, 0, :, 0].long(), input_ids], dim=1)
        first = hist.shape[1] - (1 if last_only else input_ids.shape[1])
        logits = torch.stack(
            [
                torch.stack(
                    [self.table(images[i], tuple(hist[i, : j + 1].tolist())) for j in range(first, hist.shape[1])]
                )
                for i in range(n)
            ]
        )
        past = [(hist.float()[:, None, :, None],) * 2] if use_cache else None
        return logits, past


def gen(*args, **kwargs) -> GenerationOutput:
    kwargs.setdefault("eos_token_id", EOS)
    return generate(*args, **kwargs)


def images(*ids: int) -> torch.Tensor:
    return torch.tensor(ids, dtype=torch.float32)[:, None, None]


def prompts(n: int, *ids: int) -> torch.Tensor:
    return torch.tensor([[DEC, *ids]] * n)


def strip(row: torch.Tensor) -> list[int]:
    """Tokens up to the first EOS after the prompt (or all non-pad tokens)."""
    out = []
    for t in row.tolist():
        out.append(t)
        if t == EOS and len(out) > 1:
            break
    while out and out[-1] == PAD:
        out.pop()
    return out


# --------------------------------------------------------------------------------------------------------------
# greedy, min-length, repetition penalty


def chain_table(image: int, hist: tuple[int, ...]) -> torch.Tensor:
    """Image 0: DEC -> 3 -> 4 -> EOS (second choice 6). Image 1: DEC -> 5 -> EOS. Anything else -> EOS."""
    nexts = {0: {DEC: 3, 3: 4, 4: EOS}, 1: {DEC: 5, 5: EOS}}[image]
    t = nexts.get(hist[-1], EOS)
    logits = torch.full((V,), -5.0)
    logits[t] = 3.0
    if hist[-1] == 4:
        logits[6] = 2.0  # the runner-up when EOS is banned
    return logits


def test_greedy_pads_finished_rows_and_min_length_counts_the_prompt():
    dec = ToyDecoder(chain_table)
    out = gen(dec, prompts(2), images(0, 1), num_beams=1, max_length=10, min_length=1)
    assert isinstance(out, GenerationOutput) and out.scores is None
    assert out.sequences.tolist() == [[DEC, 3, 4, EOS], [DEC, 5, EOS, PAD]]
    # min_length 4 counts the prompt: at length 3 ([DEC] 3 4) EOS is banned and the runner-up 6 is taken
    out = gen(dec, prompts(1), images(0), num_beams=1, max_length=10, min_length=4)
    assert out.sequences.tolist() == [[DEC, 3, 4, 6, EOS]]
    # max_new_tokens overrides max_length = P + max_new_tokens; when the EOS does not fit, none is written
    out = gen(dec, prompts(1, 7), images(0), num_beams=1, max_new_tokens=2, min_length=0)
    assert out.sequences.tolist() == [[DEC, 7, EOS]]
    out = gen(dec, prompts(1), images(0), num_beams=1, max_new_tokens=2, min_length=0)
    assert out.sequences.tolist() == [[DEC, 3, 4]]


def test_greedy_min_length_runner_up():
    def table(image, hist):
        logits = torch.full((V,), -5.0)
        logits[EOS] = 3.0
        logits[8] = 2.0
        return logits

    out = gen(ToyDecoder(table), prompts(1, 7), images(0), num_beams=1, max_length=10, min_length=4)
    # lengths 2 and 3 are below min_length 4 (prompt included): EOS banned twice, allowed at length 4
    assert out.sequences.tolist() == [[DEC, 7, 8, 8, EOS]]


def test_greedy_repetition_penalty_acts_on_logits():
    def table(image, hist):
        logits = torch.full((V,), -5.0)
        if len(hist) == 2:  # positive logits: a repeated token is divided by the penalty
            logits[7], logits[8] = 2.0, 1.9  # 7 is in the prompt: 2.0 / 1.1 = 1.82 < 1.9
        elif len(hist) == 3:  # negative logits: a repeated token is multiplied by the penalty
            logits[:] = -9.0
            logits[DEC], logits[9] = -1.0, -1.05  # DEC is in the prompt: -1.1 < -1.05
        else:
            logits[EOS] = 0.0
        return logits

    dec = ToyDecoder(table)
    plain = gen(dec, prompts(1, 7), images(0), num_beams=1, max_length=10, min_length=0)
    assert plain.sequences.tolist() == [[DEC, 7, 7, DEC, EOS]]
    pen = gen(dec, prompts(1, 7), images(0), num_beams=1, max_length=10, min_length=0, repetition_penalty=1.1)
    assert pen.sequences.tolist() == [[DEC, 7, 8, 9, EOS]]


def test_beam_repetition_penalty_acts_on_log_probs():
    # Step 1 logits: DEC -0.1, A(3) -0.15, the rest -4. The logit of DEC is negative, so greedy multiplies it:
    # -0.13 > -0.15 and DEC stays first. Beam search penalises log-probabilities: lp(DEC) * 1.3 < lp(A).
    # After any word, EOS is (almost) certain.
    def table(image, hist):
        if len(hist) == 1:
            logits = torch.full((V,), -4.0)
            logits[DEC], logits[3] = -0.1, -0.15
            return logits
        return dist({EOS: 1.0 - 1e-6})

    dec = ToyDecoder(table)
    greedy = gen(dec, prompts(1), images(0), num_beams=1, max_length=5, min_length=0, repetition_penalty=1.3)
    assert greedy.sequences.tolist() == [[DEC, DEC, EOS]]
    beam = gen(dec, prompts(1), images(0), num_beams=2, max_length=5, min_length=0, repetition_penalty=1.3)
    assert beam.sequences.tolist() == [[DEC, 3, EOS]]
    lp = F.log_softmax(table(0, (DEC,)).double(), -1)
    lp_eos = math.log(1.0 - 1e-6)  # EOS is not in the history: no penalty
    # 4.15 length normalisation: the hypothesis is [DEC, A] (2 tokens), the EOS is not counted
    assert beam.scores.item() == pytest.approx((lp[3].item() + lp_eos) / 2, abs=1e-5)
    no_pen = gen(dec, prompts(1), images(0), num_beams=2, max_length=5, min_length=0)
    assert no_pen.sequences.tolist() == [[DEC, DEC, EOS]]
    assert no_pen.scores.item() == pytest.approx((lp[DEC].item() + lp_eos) / 2, abs=1e-5)


# --------------------------------------------------------------------------------------------------------------
# beam search: length normalisation over the full length (prompt included, EOS excluded)

X, Y, Z = 3, 4, 5


def two_hypotheses_table(s_long: float):
    """Prompt [DEC 6 7]. Short hypothesis ``X EOS`` with log-prob sum -2.0; long one ``Y Z EOS`` with ``s_long``."""
    p_x, p_y, p_eos_yz = 0.5, 0.45, 0.9
    p_eos_x = math.exp(-2.0) / p_x
    p_z_y = math.exp(s_long) / (p_y * p_eos_yz)

    def table(image, hist):
        gen = hist[3:]
        if gen == ():
            return dist({X: p_x, Y: p_y})
        if gen == (X,):
            return dist({EOS: p_eos_x})
        if gen == (Y,):
            return dist({Z: p_z_y})
        if gen == (Y, Z):
            return dist({EOS: p_eos_yz})
        return dist({})  # uniform: junk continuations only get worse

    return table


@pytest.mark.parametrize(
    "s_long, winner",
    [
        # 4.15: -2.0/4 = -0.5 beats -2.7/5 = -0.54. Dividing by the generated length (transformers 5: EOS
        # included, prompt excluded) would give -2.0/2 = -1.0 < -2.7/3 = -0.9: the long one would win.
        (-2.7, "short"),
        # 4.15: -2.45/5 = -0.49 beats -0.5. Dividing by the length including the EOS would give
        # -2.0/5 = -0.4 > -2.45/6 = -0.408: the short one would win.
        (-2.45, "long"),
    ],
)
def test_beam_length_normalisation_counts_prompt_not_eos(s_long, winner):
    dec = ToyDecoder(two_hypotheses_table(s_long))
    short, long_ = [DEC, 6, 7, X, EOS], [DEC, 6, 7, Y, Z, EOS]
    out = gen(dec, prompts(1, 6, 7), images(0), num_beams=2, max_length=10, min_length=0, num_return_sequences=2)
    first, second = (short, long_) if winner == "short" else (long_, short)
    assert [strip(r) for r in out.sequences] == [first, second]
    assert out.sequences.shape[1] == 6  # min(longest hypothesis (5) + 1, max_length)
    expected = {"short": -2.0 / 4, "long": s_long / 5}
    other = "long" if winner == "short" else "short"
    assert out.scores.tolist() == pytest.approx([expected[winner], expected[other]], abs=1e-5)
    best = gen(dec, prompts(1, 6, 7), images(0), num_beams=2, max_length=10, min_length=0)
    assert best.sequences.tolist() == [first + [PAD] * (len(best.sequences[0]) - len(first))]


def test_beam_min_length_and_max_length_finalisation():
    dec = ToyDecoder(two_hypotheses_table(-2.7))
    # min_length 5: at length 4 ([DEC 6 7 X]) EOS is banned, so the short hypothesis is never formed
    out = gen(dec, prompts(1, 6, 7), images(0), num_beams=2, max_length=10, min_length=5)
    assert strip(out.sequences[0]) == [DEC, 6, 7, Y, Z, EOS]
    # max_length 5: the open beams are finalised at full length (no EOS appended), score = sum / max_length.
    # The beams are Y Z (sum log .45 + log p(Z|Y)) and Y followed by one of the equally likely junk tokens.
    out = gen(dec, prompts(1, 6, 7), images(0), num_beams=2, max_length=5, min_length=5, num_return_sequences=2)
    assert out.sequences.shape == (2, 5)
    assert out.sequences[0].tolist() == [DEC, 6, 7, Y, Z]
    assert out.sequences[1, :4].tolist() == [DEC, 6, 7, Y] and 10 <= out.sequences[1, 4].item() < V
    assert out.scores[0].item() == pytest.approx((-2.7 - math.log(0.9)) / 5, abs=1e-5)
    assert out.scores[1].item() == pytest.approx((math.log(0.45) + math.log((1 - 0.166) / 30)) / 5, abs=2e-3)


def test_beam_eos_outside_top_num_beams_is_ignored():
    # Step 1: A .5, B .4. Step 2 candidates: A EOS .275 (rank 0, a hypothesis), A C .22, B EOS .2 (rank 2 >=
    # num_beams: dropped although it would be the second best hypothesis), B D .18. Afterwards only junk.
    a, b, c, d = 3, 4, 5, 6

    def table(image, hist):
        gen = hist[1:]
        if gen == ():
            return dist({a: 0.5, b: 0.4})
        if gen == (a,):
            return dist({EOS: 0.55, c: 0.44})
        if gen == (b,):
            return dist({EOS: 0.5, d: 0.45})
        return dist({})

    out = gen(ToyDecoder(table), prompts(1), images(0), num_beams=2, max_length=6, min_length=0, num_return_sequences=2)
    assert strip(out.sequences[0]) == [DEC, a, EOS]
    assert out.scores[0].item() == pytest.approx(math.log(0.275) / 2, abs=1e-5)
    assert strip(out.sequences[1]) != [DEC, b, EOS]
    assert out.scores[1].item() < math.log(0.2) / 2 - 1.0


def test_beam_stop_rule_uses_best_candidate_including_eos():
    # Step 2 candidates: A EOS (sum -1.0), B EOS (-1.4), A C (-1.8), B D (-2.0): two hypotheses, worst -1.4/2.
    # 4.15 compares the worst with the best *candidate* (A EOS): -1.0/2 > -0.7, so it goes on, and at step 3
    # A C EOS (-1.8/3 = -0.6) replaces B EOS. Judging by the best running beam (-1.8/2 < -0.7) would stop early.
    a, b, c, d = 3, 4, 5, 6

    def table(image, hist):
        gen_ = hist[1:]
        if gen_ == ():
            return dist({a: 0.54, b: 0.39})
        if gen_ == (a,):
            return dist({EOS: math.exp(-1.0) / 0.54, c: math.exp(-1.8) / 0.54})
        if gen_ == (b,):
            return dist({EOS: math.exp(-1.4) / 0.39, d: math.exp(-2.0) / 0.39})
        if gen_ in ((a, c), (b, d)):
            return dist({EOS: 1 - 1e-6})
        return dist({})

    out = gen(ToyDecoder(table), prompts(1), images(0), num_beams=2, max_length=8, min_length=0, num_return_sequences=2)
    assert [strip(r) for r in out.sequences] == [[DEC, a, EOS], [DEC, a, c, EOS]]
    assert out.scores.tolist() == pytest.approx([-1.0 / 2, -1.8 / 3], abs=1e-5)


# --------------------------------------------------------------------------------------------------------------
# sampling


def fan_table(image, hist):
    """After the prompt: tokens 3..7 with probabilities .4 .3 .15 .1 .05; then EOS."""
    if len(hist) == 1:
        return dist({3: 0.4, 4: 0.3, 5: 0.15, 6: 0.1, 7: 0.05})
    return dist({EOS: 1.0})


def sample_first(n: int, seed: int = 0, **kw) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    out = gen(
        ToyDecoder(fan_table),
        prompts(1),
        images(0),
        sample=True,
        max_new_tokens=1,
        min_length=0,
        num_return_sequences=n,
        generator=g,
        **kw,
    )
    return out.sequences[:, 1]


def test_sampling_top_k_top_p_temperature():
    n = 4000
    # top-k 3 keeps .4 .3 .15 (renormalised .47 .35 .18); top-p .7 removes what lies above .7 cumulatively,
    # shifted by one: .47 (kept), .82 (kept: first above), 1.0 (removed) -> only 3 and 4, as .57/.43
    toks = sample_first(n, top_k=3, top_p=0.7, repetition_penalty=1.0)
    assert set(toks.tolist()) == {3, 4}
    assert (toks == 3).float().mean().item() == pytest.approx(0.4 / 0.7, abs=0.03)
    # top-p below the first probability still keeps the first token
    assert set(sample_first(200, top_k=50, top_p=0.3).tolist()) == {3}
    # top-k only
    toks = sample_first(n, top_k=2, top_p=1.0)
    assert set(toks.tolist()) == {3, 4}
    assert (toks == 3).float().mean().item() == pytest.approx(0.4 / 0.7, abs=0.03)
    # temperature 2 before top-k: p ** 0.5 renormalised
    toks = sample_first(n, top_k=0, top_p=1.0, temperature=2.0)
    p = torch.tensor([0.4, 0.3, 0.15, 0.1, 0.05]).sqrt()
    p = p / p.sum()
    freq = torch.stack([(toks == t).float().mean() for t in range(3, 8)])
    assert torch.allclose(freq, p, atol=0.03)
    # the seeded generator makes it reproducible
    assert torch.equal(sample_first(50, seed=3), sample_first(50, seed=3))
    assert not torch.equal(sample_first(50, seed=3), sample_first(50, seed=4))


def test_sampling_num_beams_is_ignored_and_finished_rows_are_padded():
    g = torch.Generator().manual_seed(0)
    dec = ToyDecoder(chain_table)
    out = gen(dec, prompts(2), images(0, 1), sample=True, num_beams=3, top_k=1, max_length=10, min_length=1)
    assert out.sequences.tolist() == [[DEC, 3, 4, EOS], [DEC, 5, EOS, PAD]]
    out = gen(dec, prompts(2), images(0, 1), sample=True, top_k=1, max_length=10, min_length=1, generator=g)
    assert out.sequences.tolist() == [[DEC, 3, 4, EOS], [DEC, 5, EOS, PAD]]


# --------------------------------------------------------------------------------------------------------------
# speed features: cross K/V once, never expanded; finished inputs leave the batch


def test_cross_kv_once_shared_and_finished_inputs_dropped():
    dec = ToyDecoder(chain_table)
    gen(dec, prompts(2), images(0, 1), num_beams=1, max_length=10, min_length=1)
    assert dec.bert.cross_kv_calls == 1
    # step 1: the prompt for both; step 2: both; image 1 ended -> step 3 runs image 0 alone
    assert dec.calls == [(2, 2, 1), (2, 2, 1), (1, 1, 1)]

    dec = ToyDecoder(chain_table)
    gen(dec, prompts(2), images(0, 1), num_beams=3, max_length=10, min_length=1)
    assert dec.bert.cross_kv_calls == 1
    assert dec.calls[0] == (2, 2, 1)  # the prompt once per image
    assert all(nk in (1, 2) and n == 3 * nk for n, nk, _ in dec.calls[1:])  # 3 beams share one K/V row
    assert any(nk == 1 for _, nk, _ in dec.calls)  # an image left the batch

    dec = ToyDecoder(chain_table)
    gen(dec, prompts(2), images(0, 1), sample=True, num_return_sequences=4, top_k=1, max_length=10, min_length=1)
    assert dec.calls[0] == (2, 2, 1) and all(n == 4 * nk for n, nk, _ in dec.calls[1:])


def test_precomputed_cross_kv_and_argument_checks():
    dec = ToyDecoder(chain_table)
    kv = dec.bert.cross_kv(images(0, 1))
    a = gen(dec, prompts(2), cross_kv=kv, num_beams=2, max_length=8, min_length=1)
    b = gen(dec, prompts(2), images(0, 1), num_beams=2, max_length=8, min_length=1)
    assert torch.equal(a.sequences, b.sequences)
    with pytest.raises(ValueError):
        gen(dec, prompts(2), num_beams=2)
    with pytest.raises(ValueError):
        gen(dec, prompts(2), images(0, 1), num_beams=2, num_return_sequences=3)
    with pytest.raises(ValueError):
        gen(dec, prompts(2), images(0, 1), num_beams=1, num_return_sequences=2)
    with pytest.raises(ValueError):
        gen(dec, prompts(2), images(0, 1), max_length=1)
    with pytest.raises(ValueError):
        gen(dec, prompts(2), images(0))


# --------------------------------------------------------------------------------------------------------------
# brute-force 4.15 reference on random tiny MED decoders


def reference_generate(
    decoder,
    prompt,
    states,
    mask=None,
    num_beams=3,
    max_length=20,
    min_length=5,
    repetition_penalty=1.0,
    num_return_sequences=1,
    eos=102,
    pad=0,
):
    """transformers 4.15 ``greedy_search`` / ``beam_search`` written out plainly.

    No cache: the whole sequence is recomputed every step; image states are repeated per beam; inputs whose
    search is over stay in the batch, fed ``pad`` with beam score 0, exactly as 4.15 does.
    """
    b = prompt.shape[0]
    k = num_beams

    def last_logits(ids, st, mk):
        out, _ = decoder(ids, encoder_hidden_states=st, encoder_attention_mask=mk)
        return out[:, -1].float()

    def process(scores, ids):
        if repetition_penalty != 1.0:
            s = torch.gather(scores, 1, ids)
            s = torch.where(s < 0, s * repetition_penalty, s / repetition_penalty)
            scores.scatter_(1, ids, s)
        if ids.shape[-1] < min_length:
            scores[:, eos] = -float("inf")
        return scores

    with torch.no_grad():
        if k == 1:
            ids = prompt.clone()
            unfinished = torch.ones(b, dtype=torch.long)
            while True:
                nxt = process(last_logits(ids, states, mask), ids).argmax(-1)
                nxt = nxt * unfinished + pad * (1 - unfinished)
                ids = torch.cat([ids, nxt[:, None]], 1)
                unfinished = unfinished * (nxt != eos).long()
                if unfinished.max() == 0 or ids.shape[-1] >= max_length:
                    return ids, None

        ids = prompt.repeat_interleave(k, 0)
        st = states.repeat_interleave(k, 0)
        mk = None if mask is None else mask.repeat_interleave(k, 0)
        beam_scores = torch.zeros(b, k)
        beam_scores[:, 1:] = -1e9
        beam_scores = beam_scores.view(-1)
        hyps: list[list] = [[] for _ in range(b)]
        worst = [1e9] * b
        done = [False] * b

        def add(i, hyp, s):  # BeamHypotheses.add, length_penalty 1.0
            score = s / hyp.shape[-1]
            if len(hyps[i]) < k or score > worst[i]:
                hyps[i].append((score, hyp))
                if len(hyps[i]) > k:
                    ranked = sorted([(x, j) for j, (x, _) in enumerate(hyps[i])])
                    del hyps[i][ranked[0][1]]
                    worst[i] = ranked[1][0]
                else:
                    worst[i] = min(score, worst[i])

        while True:
            cur_len = ids.shape[-1]
            scores = process(F.log_softmax(last_logits(ids, st, mk), -1), ids) + beam_scores[:, None]
            vocab = scores.shape[-1]
            top_s, top_i = torch.topk(scores.view(b, k * vocab), 2 * k, dim=1, largest=True, sorted=True)
            nb_s = torch.zeros(b, k)
            nb_t = torch.zeros(b, k, dtype=torch.long)
            nb_i = torch.zeros(b, k, dtype=torch.long)
            for i in range(b):
                if done[i]:
                    nb_t[i] = pad
                    continue
                j = 0
                for rank in range(2 * k):
                    tok, beam, s = int(top_i[i, rank]) % vocab, int(top_i[i, rank]) // vocab, float(top_s[i, rank])
                    if tok == eos:
                        if rank >= k:
                            continue
                        add(i, ids[i * k + beam].clone(), s)
                    else:
                        nb_s[i, j], nb_t[i, j], nb_i[i, j] = s, tok, i * k + beam
                        j += 1
                    if j == k:
                        break
                if len(hyps[i]) >= k and worst[i] >= float(top_s[i].max()) / cur_len:
                    done[i] = True
            beam_scores = nb_s.view(-1)
            ids = torch.cat([ids[nb_i.view(-1)], nb_t.view(-1, 1)], 1)
            if all(done) or ids.shape[-1] >= max_length:
                break
        for i in range(b):
            if not done[i]:
                for j in range(k):
                    add(i, ids[i * k + j], float(beam_scores[i * k + j]))
        best, best_scores = [], []
        for i in range(b):
            ranked = sorted(hyps[i], key=lambda x: x[0])
            for _ in range(num_return_sequences):
                s, h = ranked.pop()
                best.append(h)
                best_scores.append(s)
        width = min(max(len(h) for h in best) + 1, max_length)
        out = torch.full((len(best), width), pad, dtype=torch.long)
        for i, h in enumerate(best):
            out[i, : len(h)] = h
            if len(h) < max_length:
                out[i, len(h)] = eos
        return out, torch.tensor(best_scores)


R_VOCAB, R_EOS, R_DEC = 48, 3, 1


def random_decoder(seed: int, std: float = 0.5, enc_width: int = 24) -> BertLMHeadModel:
    torch.manual_seed(seed)
    cfg = TextConfig(
        vocab_size=R_VOCAB,
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        initializer_range=std,
    )
    dec = BertLMHeadModel(cfg, encoder_width=enc_width).eval()
    with torch.no_grad():
        dec.cls.predictions.bias[R_EOS] = 4.5  # make EOS common enough to exercise the hypotheses
    return dec


@pytest.mark.parametrize("num_beams", [1, 2, 3, 4])
@pytest.mark.parametrize("repetition_penalty", [1.0, 1.3])
def test_fast_equals_brute_force_reference(num_beams, repetition_penalty):
    ended = []  # per output row: did it end with EOS (else it ran to max_length)
    configs = [(1, 1, 9), (3, 5, 12), (2, 2, 7), (4, 6, 10)]  # prompt length, min_length, max_length
    for seed, (prompt_len, min_length, max_length) in enumerate(configs):
        dec = random_decoder(seed)
        b = 4
        states = torch.randn(b, 5, 24)
        mask = torch.ones(b, 5, dtype=torch.long)
        mask[1, 3:] = 0  # a padded question (VQA-style cross-attention mask)
        prompt = torch.tensor([[R_DEC, 7, 9, 11][:prompt_len]] * b)
        for ret in range(1, num_beams + 1):
            kw = dict(
                num_beams=num_beams,
                max_length=max_length,
                min_length=min_length,
                repetition_penalty=repetition_penalty,
                num_return_sequences=ret,
            )
            ref, ref_scores = reference_generate(dec, prompt, states, mask, eos=R_EOS, **kw)
            out = generate(dec, prompt, states, mask, eos_token_id=R_EOS, **kw)
            assert torch.equal(out.sequences, ref), (seed, ret)
            if ref_scores is not None:
                assert torch.allclose(out.scores, ref_scores, atol=1e-5)
            ended += [R_EOS in r[prompt_len:] for r in out.sequences.tolist()]
            # batched equals one at a time (widths differ: compare the stripped rows)
            for i in range(b):
                one = generate(dec, prompt[i : i + 1], states[i : i + 1], mask[i : i + 1], eos_token_id=R_EOS, **kw)
                rows = out.sequences[i * ret : (i + 1) * ret]
                assert [strip_r(r) for r in one.sequences] == [strip_r(r) for r in rows]
    assert any(ended) and not all(ended)  # both ways of finishing are exercised


def strip_r(row: torch.Tensor) -> list[int]:
    out = []
    for t in row.tolist()[1:]:
        out.append(t)
        if t == R_EOS:
            break
    while out and out[-1] == 0:
        out.pop()
    return out


def reference_sample(
    decoder,
    prompt,
    states,
    *,
    max_length,
    min_length,
    top_k,
    top_p,
    repetition_penalty,
    num_return_sequences,
    generator,
    eos=R_EOS,
    pad=0,
):
    """4.15 ``sample`` written out: no cache, every row computed and sampled until all rows end."""
    ids = prompt.repeat_interleave(num_return_sequences, 0)
    st = states.repeat_interleave(num_return_sequences, 0)
    unfinished = torch.ones(ids.shape[0], dtype=torch.long)
    with torch.no_grad():
        while True:
            scores = decoder(ids, encoder_hidden_states=st)[0][:, -1].float()
            s = torch.gather(scores, 1, ids)
            scores.scatter_(1, ids, torch.where(s < 0, s * repetition_penalty, s / repetition_penalty))
            if ids.shape[1] < min_length:
                scores[:, eos] = -float("inf")
            kth = torch.topk(scores, top_k)[0][:, -1:]
            scores = scores.masked_fill(scores < kth, -float("inf"))
            srt, idx = torch.sort(scores, descending=True)
            remove = srt.softmax(-1).cumsum(-1) > top_p
            remove[:, 1:] = remove[:, :-1].clone()
            remove[:, 0] = False
            scores = scores.masked_fill(remove.scatter(1, idx, remove), -float("inf"))
            nxt = torch.multinomial(scores.softmax(-1), 1, generator=generator)[:, 0]
            nxt = nxt * unfinished + pad * (1 - unfinished)
            ids = torch.cat([ids, nxt[:, None]], 1)
            unfinished = unfinished * (nxt != eos).long()
            if unfinished.max() == 0 or ids.shape[1] >= max_length:
                return ids


def test_sampling_equals_reference_with_rows_leaving_the_batch():
    dec = random_decoder(5)
    states = torch.randn(3, 5, 24)
    prompt = torch.tensor([[R_DEC, 7]] * 3)
    kw = dict(max_length=12, min_length=3, top_k=10, top_p=0.9, repetition_penalty=1.1, num_return_sequences=2)
    for seed in range(3):
        ref = reference_sample(dec, prompt, states, generator=torch.Generator().manual_seed(seed), **kw)
        out = generate(
            dec, prompt, states, sample=True, eos_token_id=R_EOS, generator=torch.Generator().manual_seed(seed), **kw
        )
        assert torch.equal(out.sequences, ref)
    ended = (out.sequences[:, :-1] == R_EOS).any(1)
    assert ended.any()  # some rows ended early (and their images left the batch when both rows had ended)


def test_greedy_scores_are_model_log_probs():
    dec = random_decoder(5)
    states = torch.randn(3, 5, 24)
    prompt = torch.tensor([[R_DEC]] * 3)
    out = generate(
        dec, prompt, states, num_beams=1, max_length=10, min_length=1, eos_token_id=R_EOS, output_scores=True
    )
    with torch.no_grad():
        logits, _ = dec(out.sequences, encoder_hidden_states=states)
        lp = F.log_softmax(logits[:, :-1], -1).gather(2, out.sequences[:, 1:, None])[..., 0]
    alive = torch.ones_like(lp, dtype=torch.bool)
    for i, row in enumerate(out.sequences.tolist()):
        if R_EOS in row[1:]:
            alive[i, row[1:].index(R_EOS) + 1 :] = False
    assert not alive.all()
    assert torch.allclose(out.scores, (lp * alive).sum(1), atol=1e-4)


# --------------------------------------------------------------------------------------------------------------
# transformers 5.x on a tiny random BlipForConditionalGeneration


@pytest.fixture(scope="module")
def hf_pair(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    from openblip.checkpoint import load_model

    torch.manual_seed(0)
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    cfg = transformers.BlipConfig(
        vision_config=dict(image_size=32, patch_size=8, initializer_range=0.3, **small),
        text_config=dict(
            vocab_size=30524, encoder_hidden_size=32, max_position_embeddings=64, initializer_range=0.3, **small
        ),
    )
    hf = transformers.BlipForConditionalGeneration(cfg).eval()
    path = tmp_path_factory.mktemp("hf_blip")
    hf.save_pretrained(path)
    ours = load_model(path)
    pixels = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        embeds = ours.encode_image(pixels)
        assert torch.allclose(embeds, hf.vision_model(pixel_values=pixels)[0], atol=1e-4)
    return hf, ours, embeds


def set_eos_bias(hf, ours, value: float) -> None:
    with torch.no_grad():
        hf.text_decoder.cls.predictions.bias[102] = value
        ours.text_decoder.cls.predictions.bias[102] = value


def hf_generate(hf, prompt, embeds, **kw):
    # un-expanded image states: transformers 5 repeats every tensor kwarg per beam / return sequence itself
    with torch.no_grad():
        return hf.text_decoder.generate(
            input_ids=prompt, encoder_hidden_states=embeds, eos_token_id=102, pad_token_id=0, **kw
        )


CAPTION_PROMPT = [30522, 1037, 3861, 1997]  # [DEC] a picture of


@pytest.mark.parametrize("eos_bias", [0.0, 6.0, 8.0])
def test_greedy_equals_transformers(hf_pair, eos_bias):
    hf, ours, embeds = hf_pair
    set_eos_bias(hf, ours, eos_bias)
    prompt = torch.tensor([CAPTION_PROMPT] * len(embeds))
    for min_length in (1, 6):
        theirs = hf_generate(hf, prompt, embeds, max_length=14, min_length=min_length, num_beams=1, do_sample=False)
        mine = generate(ours.text_decoder, prompt, embeds, num_beams=1, max_length=14, min_length=min_length)
        assert torch.equal(mine.sequences, theirs)
    if eos_bias:
        assert (mine.sequences == 102).any()


def test_sampling_equals_transformers(hf_pair):
    # transformers 5 samples like 4.15 (processors, then temperature/top-k/top-p, then multinomial on all rows,
    # finished ones included); with the same global seed the draws coincide.
    hf, ours, embeds = hf_pair
    set_eos_bias(hf, ours, 7.0)
    prompt = torch.tensor([CAPTION_PROMPT] * len(embeds))
    for seed, ret in [(0, 1), (1, 3)]:
        kw = dict(max_length=16, min_length=5, top_p=0.9, top_k=50, repetition_penalty=1.1)
        torch.manual_seed(seed)
        theirs = hf_generate(hf, prompt, embeds, do_sample=True, num_return_sequences=ret, **kw)
        torch.manual_seed(seed)
        mine = generate(ours.text_decoder, prompt, embeds, sample=True, num_return_sequences=ret, **kw)
        assert torch.equal(mine.sequences, theirs)
        assert (mine.sequences == 102).any()


@pytest.mark.parametrize("num_beams", [2, 3])
def test_beam_search_equals_transformers_without_eos(hf_pair, num_beams):
    # With no EOS in the top candidates every hypothesis reaches max_length and both versions rank the same
    # sequences; only the normaliser differs: 4.15 divides by max_length, transformers 5 by max_length - P.
    hf, ours, embeds = hf_pair
    set_eos_bias(hf, ours, 0.0)
    prompt = torch.tensor([CAPTION_PROMPT] * len(embeds))
    theirs = hf_generate(
        hf,
        prompt,
        embeds,
        max_length=12,
        min_length=5,
        num_beams=num_beams,
        num_return_sequences=num_beams,
        output_scores=True,
        return_dict_in_generate=True,
    )
    mine = generate(
        ours.text_decoder,
        prompt,
        embeds,
        num_beams=num_beams,
        max_length=12,
        min_length=5,
        num_return_sequences=num_beams,
    )
    assert len({tuple(r) for r in mine.sequences.tolist()}) > num_beams  # the images do give different captions
    assert torch.equal(mine.sequences, theirs.sequences)
    assert torch.allclose(mine.scores * 12, theirs.sequences_scores * (12 - len(CAPTION_PROMPT)), atol=1e-4)


def test_beam_search_with_eos_differs_from_transformers_as_documented(hf_pair):
    # When hypotheses end with EOS, transformers 5 normalises by the generated length (EOS included, prompt
    # excluded) while 4.15 used the whole sequence without the EOS: with the 4-token caption prompt the two
    # rank hypotheses differently. We follow 4.15; the brute-force reference confirms our output.
    hf, ours, embeds = hf_pair
    set_eos_bias(hf, ours, 6.0)
    prompt = torch.tensor([CAPTION_PROMPT] * len(embeds))
    kw = dict(num_beams=3, max_length=14, min_length=5)
    theirs = hf_generate(hf, prompt, embeds, **kw)
    mine = generate(ours.text_decoder, prompt, embeds, **kw)
    ref, _ = reference_generate(ours.text_decoder, prompt, embeds, **kw)
    assert torch.equal(mine.sequences, ref)

    def cut(row):  # transformers 5 fills beam outputs with EOS when pad_token_id is 0
        row = row.tolist()
        return row[: row.index(102, len(CAPTION_PROMPT)) + 1] if 102 in row[len(CAPTION_PROMPT) :] else row

    differ = [cut(a) != cut(b) for a, b in zip(mine.sequences, theirs)]
    assert any(differ) and not all(differ)


def test_max_length_beyond_the_position_embeddings_is_refused_up_front():
    """A decoder with 64 positions generates up to 64 tokens; asking for more is a clear ValueError before any
    step, not an IndexError from the position embedding half-way through."""
    dec = random_decoder(0)
    states = torch.randn(1, 5, 24)
    prompt = torch.tensor([[R_DEC, 7]])
    out = generate(dec, prompt, states, num_beams=1, max_length=64, min_length=64, eos_token_id=R_EOS)
    assert out.sequences.shape == (1, 64)
    # 65 would still run (the last token is never fed back) but does not fit; 80 used to fail with an IndexError
    for kw in (dict(max_length=65), dict(max_length=80), dict(max_new_tokens=63)):
        with pytest.raises(ValueError, match="exceeds the text model's 64 positions"):
            generate(dec, prompt, states, num_beams=2, min_length=65, eos_token_id=R_EOS, **kw)
    from openblip.generation import check_generation_args  # the same checks, without a model

    assert check_generation_args(2, max_new_tokens=5, max_positions=64) == 7
    with pytest.raises(ValueError, match="max_new_tokens"):
        check_generation_args(2, max_new_tokens=0)


def test_generate_refreshes_the_float32_head_copy_even_after_data_edits():
    # a bfloat16 model's LM head runs on a cached float32 copy; an edit through .data escapes its version check
    from openblip.tasks.caption import Captioner
    from tests.helpers import random_images, tiny_model

    model = tiny_model("caption").to(torch.bfloat16)
    cap = Captioner(model)
    images = random_images(1)
    cap.caption(images, num_beams=1, max_length=6)
    head = model.text_decoder.cls.predictions
    head.decoder.bias.data.add_(3.0)
    cap.caption(images, num_beams=1, max_length=6)
    (_, copies) = head.__dict__["_float32_cache"]
    assert torch.equal(copies[4], head.decoder.weight.float()) and torch.equal(copies[5], head.bias.float())
