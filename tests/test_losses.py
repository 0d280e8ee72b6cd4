"""The pure loss functions against values computed by hand (plain ``math``), and hard-negative sampling."""

from __future__ import annotations

import math

import pytest
import torch

from openblip.losses import (
    build_itm_batch,
    hard_negative_weights,
    itc_loss,
    itc_targets,
    itm_loss,
    lm_loss,
    momentum_alpha,
    nlvr_loss,
    sample_hard_negatives,
    vqa_loss,
)


def _log_softmax_row(row: list[float]) -> list[float]:
    lse = math.log(sum(math.exp(v) for v in row))
    return [v - lse for v in row]


def _softmax_row(row: list[float]) -> list[float]:
    z = sum(math.exp(v) for v in row)
    return [math.exp(v) / z for v in row]


def _ce(row: list[float], target: int) -> float:
    return -_log_softmax_row(row)[target]


SIM_I2T = [[2.0, 0.5, -1.0, 0.0], [0.3, 1.5, 0.2, -0.4]]
SIM_T2I = [[1.0, 0.0, 0.5, -0.5], [0.1, 0.9, -0.3, 0.4]]


# ----------------------------------------------------------------------------------------------------------------
# ITC


def test_itc_loss_hand_computed():
    t_i2t = [[0.7, 0.1, 0.1, 0.1], [0.05, 0.8, 0.1, 0.05]]
    t_t2i = [[0.6, 0.2, 0.2, 0.0], [0.0, 1.0, 0.0, 0.0]]

    def soft_ce(sims, targets):
        rows = [-sum(t * l for t, l in zip(tr, _log_softmax_row(sr))) for sr, tr in zip(sims, targets)]
        return sum(rows) / len(rows)

    expected = (soft_ce(SIM_I2T, t_i2t) + soft_ce(SIM_T2I, t_t2i)) / 2
    got = itc_loss(torch.tensor(SIM_I2T), torch.tensor(SIM_T2I), torch.tensor(t_i2t), torch.tensor(t_t2i))
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_itc_targets_pretraining_diagonal():
    alpha = 0.4
    ti2t, tt2i = itc_targets(torch.tensor(SIM_I2T), torch.tensor(SIM_T2I), None, alpha)
    for r in range(2):
        p_i2t, p_t2i = _softmax_row(SIM_I2T[r]), _softmax_row(SIM_T2I[r])
        for j in range(4):
            hard = 1.0 if j == r else 0.0
            assert ti2t[r, j].item() == pytest.approx(alpha * p_i2t[j] + (1 - alpha) * hard, abs=1e-7)
            assert tt2i[r, j].item() == pytest.approx(alpha * p_t2i[j] + (1 - alpha) * hard, abs=1e-7)
    torch.testing.assert_close(ti2t.sum(1), torch.ones(2))


def test_itc_targets_idx_aware():
    # row 0 has two positives (a second caption of its image in the queue), row 1 one
    pos = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 0]], dtype=torch.bool)
    alpha = 0.25
    ti2t, tt2i = itc_targets(torch.tensor(SIM_I2T), torch.tensor(SIM_T2I), pos, alpha)
    hard = [[0.5, 0.0, 0.5, 0.0], [0.0, 1.0, 0.0, 0.0]]
    for r in range(2):
        p = _softmax_row(SIM_I2T[r])
        q = _softmax_row(SIM_T2I[r])
        for j in range(4):
            assert ti2t[r, j].item() == pytest.approx(alpha * p[j] + (1 - alpha) * hard[r][j], abs=1e-7)
            assert tt2i[r, j].item() == pytest.approx(alpha * q[j] + (1 - alpha) * hard[r][j], abs=1e-7)
    # alpha = 0: the hard targets exactly
    ti2t0, _ = itc_targets(torch.tensor(SIM_I2T), torch.tensor(SIM_T2I), pos, 0.0)
    torch.testing.assert_close(ti2t0, torch.tensor(hard))
    with pytest.raises(ValueError, match="at least one positive"):
        itc_targets(torch.tensor(SIM_I2T), torch.tensor(SIM_T2I), torch.zeros(2, 4, dtype=torch.bool), 0.4)


def test_itc_loss_gradient_reaches_online_sims_only():
    s = torch.tensor(SIM_I2T, requires_grad=True)
    sm = torch.tensor(SIM_T2I, requires_grad=True)
    ti2t, tt2i = itc_targets(sm, sm, None, 0.4)
    itc_loss(s, s, ti2t, tt2i).backward()
    assert s.grad is not None and sm.grad is None


# ----------------------------------------------------------------------------------------------------------------
# ITM, VQA, NLVR, LM


def test_itm_loss_hand_computed():
    logits = [[0.2, 1.3], [1.0, -0.5], [0.0, 0.7], [2.0, 0.1], [-0.3, 0.3], [0.4, 0.4]]
    labels = [1, 1, 0, 0, 0, 0]
    expected = sum(_ce(r, t) for r, t in zip(logits, labels)) / len(labels)
    assert itm_loss(torch.tensor(logits), torch.tensor(labels)).item() == pytest.approx(expected, rel=1e-6)


def test_nlvr_loss_hand_computed():
    logits = [[0.5, -0.5], [0.1, 0.9], [1.2, 1.0]]
    targets = [0, 1, 1]
    expected = sum(_ce(r, t) for r, t in zip(logits, targets)) / 3
    assert nlvr_loss(torch.tensor(logits), torch.tensor(targets)).item() == pytest.approx(expected, rel=1e-6)


def test_vqa_loss_hand_computed():
    per_answer = torch.tensor([1.0, 2.0, 3.0])  # question 0 has 2 answers, question 1 has 1
    weights = torch.tensor([0.5, 0.5, 1.0])
    assert vqa_loss(per_answer, weights, batch_size=2).item() == pytest.approx((0.5 * 1 + 0.5 * 2 + 1.0 * 3) / 2)
    with pytest.raises(ValueError):
        vqa_loss(per_answer, weights[:2], batch_size=2)


def test_lm_loss_hand_computed_with_label_smoothing():
    eps, k = 0.1, 3
    logits = [[[0.1, 0.2, 0.3], [1.0, 0.0, -1.0], [0.5, 0.5, 2.0], [0.0, 0.0, 0.0]]]
    labels = [[-100, 2, 0, -100]]  # position t predicts labels[t + 1]; the last target is unsupervised

    def smoothed(row, y):
        logp = _log_softmax_row(row)
        return (1 - eps) * -logp[y] + eps / k * sum(-v for v in logp)

    per_token = [smoothed(logits[0][0], 2), smoothed(logits[0][1], 0)]
    got_mean = lm_loss(torch.tensor(logits), torch.tensor(labels), eps)
    got_sum = lm_loss(torch.tensor(logits), torch.tensor(labels), eps, reduction="none")
    assert got_mean.item() == pytest.approx(sum(per_token) / 2, rel=1e-6)
    assert got_sum.shape == (1,) and got_sum.item() == pytest.approx(sum(per_token), rel=1e-6)


def test_build_itm_batch_order_and_labels():
    b = 3
    image_embeds = torch.arange(b, dtype=torch.float).view(b, 1, 1).expand(b, 2, 4)
    ids = torch.arange(b).view(b, 1).expand(b, 5) + 100
    mask = torch.ones(b, 5, dtype=torch.long)
    mask[1, 3:] = 0
    neg_image, neg_text = torch.tensor([2, 0, 1]), torch.tensor([1, 2, 0])
    images, ids_all, mask_all, labels = build_itm_batch(image_embeds, ids, mask, neg_image, neg_text)
    assert images[:, 0, 0].tolist() == [0, 1, 2, 2, 0, 1, 0, 1, 2]
    assert ids_all[:, 0].tolist() == [100, 101, 102, 100, 101, 102, 101, 102, 100]
    torch.testing.assert_close(mask_all[6], mask[1])
    torch.testing.assert_close(mask_all[4], mask[1])
    assert labels.tolist() == [1] * 3 + [0] * 6
    # pools from "all ranks"
    pool = torch.full((6, 2, 4), 7.0)
    images, *_ = build_itm_batch(image_embeds, ids, mask, torch.tensor([5, 4, 3]), neg_text, image_pool=pool)
    assert images[3:6, 0, 0].tolist() == [7.0, 7.0, 7.0]


# ----------------------------------------------------------------------------------------------------------------
# hard negatives


def _assert_follows(counts: torch.Tensor, probs: list[list[float]], draws: int) -> None:
    for r, row in enumerate(probs):
        for j, p in enumerate(row):
            sd = math.sqrt(p * (1 - p) / draws)
            assert abs(counts[r, j].item() / draws - p) <= 4 * sd + 1e-9, (r, j, counts[r, j].item() / draws, p)


def test_hard_negative_weights_hand_computed():
    sims = [[2.0, 0.5, -1.0, 0.3, 9.0], [0.3, 1.5, 0.2, -0.4, 9.0], [0.0, 0.1, 0.2, 0.3, 9.0]]
    got = hard_negative_weights(torch.tensor(sims), "pretrain")  # queue column (9.0) ignored
    assert got.shape == (3, 3)
    for r in range(3):
        p = _softmax_row(sims[r][:3])
        for j in range(3):
            assert got[r, j].item() == pytest.approx(0.0 if j == r else p[j] + 1e-4, abs=1e-7)
    idx, cand = torch.tensor([4, 7, 4]), torch.tensor([4, 7, 4, 5, 7])
    got = hard_negative_weights(torch.tensor(sims), "retrieval", idx, cand)
    for r in range(3):
        p = _softmax_row(sims[r])  # no +1e-4 in retrieval mode
        for j in range(5):
            assert got[r, j].item() == pytest.approx(0.0 if cand[j] == idx[r] else p[j], abs=1e-7)


def test_pretrain_hard_negatives_never_diagonal_and_follow_weights():
    torch.manual_seed(1)
    b = 4
    sim_i2t = torch.randn(b, b + 3) * 2  # extra queue columns are ignored in pre-training mode
    sim_t2i = torch.randn(b, b + 3) * 2
    g = torch.Generator().manual_seed(123)
    draws = 1500
    pairs = [sample_hard_negatives(sim_i2t, sim_t2i, "pretrain", generator=g) for _ in range(draws)]
    neg_images, neg_texts = torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])  # [draws, B]
    assert (neg_images != torch.arange(b)).all() and (neg_texts != torch.arange(b)).all()
    assert int(neg_images.max()) < b and int(neg_texts.max()) < b
    for negs, sims in ((neg_images, sim_t2i), (neg_texts, sim_i2t)):
        counts = torch.stack([torch.bincount(negs[:, r], minlength=b) for r in range(b)]).float()
        probs = []
        for r in range(b):
            w = [p + 1e-4 for p in _softmax_row(sims[r, :b].tolist())]
            w[r] = 0.0
            probs.append([v / sum(w) for v in w])
        _assert_follows(counts, probs, draws)


def test_pretrain_hard_negatives_reproducible_with_generator():
    sims = torch.randn(5, 5)
    a = sample_hard_negatives(sims, sims.t(), "pretrain", generator=torch.Generator().manual_seed(7))
    b = sample_hard_negatives(sims, sims.t(), "pretrain", generator=torch.Generator().manual_seed(7))
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_retrieval_hard_negatives_never_same_idx_and_follow_weights():
    torch.manual_seed(2)
    idx = torch.tensor([0, 0, 1, 1, 2])
    b = idx.numel()
    sim_i2t, sim_t2i = torch.randn(b, b), torch.randn(b, b)
    draws = 5000
    # one call: `draws` copies of every row against the same 5 candidates
    neg_image, neg_text = sample_hard_negatives(
        sim_i2t.repeat(draws, 1),
        sim_t2i.repeat(draws, 1),
        "retrieval",
        idx=idx.repeat(draws),
        generator=torch.Generator().manual_seed(5),
        candidate_idx=idx,
    )
    neg_image, neg_text = neg_image.view(draws, b), neg_text.view(draws, b)
    assert (idx[neg_image] != idx).all() and (idx[neg_text] != idx).all()
    for negs, sims in ((neg_image, sim_t2i), (neg_text, sim_i2t)):
        counts = torch.stack([torch.bincount(negs[:, r], minlength=b) for r in range(b)]).float()
        probs = []
        for r in range(b):
            w = _softmax_row(sims[r].tolist())
            w = [0.0 if idx[j] == idx[r] else w[j] for j in range(b)]
            probs.append([v / sum(w) for v in w])
        _assert_follows(counts, probs, draws)
    # in-batch call (candidates = rows) never picks a same-idx pair either
    g = torch.Generator().manual_seed(6)
    for _ in range(50):
        ni, nt = sample_hard_negatives(torch.randn(b, b), torch.randn(b, b), "retrieval", idx=idx, generator=g)
        assert (idx[ni] != idx).all() and (idx[nt] != idx).all()


def test_retrieval_hard_negatives_over_all_ranks_candidates():
    idx = torch.tensor([3, 4])  # this rank's rows
    world = torch.tensor([3, 4, 3, 9, 4, 8])  # ids of the gathered candidates (this rank first)
    rows = 2000
    ni, nt = sample_hard_negatives(
        torch.randn(2 * rows, 6),
        torch.randn(2 * rows, 6),
        "retrieval",
        idx=idx.repeat(rows),
        generator=torch.Generator().manual_seed(0),
        candidate_idx=world,
    )
    assert (world[ni] != idx.repeat(rows)).all() and (world[nt] != idx.repeat(rows)).all()
    # rows of image 3 draw among the candidates of images 4, 9, 4, 8; rows of image 4 among 3, 3, 9, 8
    assert set(ni[0::2].tolist()) == {1, 3, 4, 5} and set(ni[1::2].tolist()) == {0, 2, 3, 5}


def test_hard_negatives_without_candidates_raise():
    with pytest.raises(ValueError, match="no hard-negative candidate"):
        sample_hard_negatives(torch.randn(3, 3), torch.randn(3, 3), "retrieval", idx=torch.tensor([1, 1, 1]))
    with pytest.raises(ValueError, match="no hard-negative candidate"):
        sample_hard_negatives(torch.randn(1, 5), torch.randn(1, 5), "pretrain")
    with pytest.raises(ValueError, match="needs `idx`"):
        sample_hard_negatives(torch.randn(3, 3), torch.randn(3, 3), "retrieval")
    with pytest.raises(ValueError, match="mode"):
        sample_hard_negatives(torch.randn(3, 3), torch.randn(3, 3), "other")


# ----------------------------------------------------------------------------------------------------------------
# alpha ramp


def test_momentum_alpha_pretraining_ramp_two_epochs():
    spe = 100
    assert momentum_alpha(0.4, 0, 0, spe, 2) == 0.0
    assert momentum_alpha(0.4, 0, 50, spe, 2) == pytest.approx(0.1)
    assert momentum_alpha(0.4, 1, 0, spe, 2) == pytest.approx(0.2)
    assert momentum_alpha(0.4, 1, 50, spe, 2) == pytest.approx(0.3)
    assert momentum_alpha(0.4, 2, 0, spe, 2) == pytest.approx(0.4)
    assert momentum_alpha(0.4, 7, 99, spe, 2) == pytest.approx(0.4)
    for epoch in range(4):  # pretrain.py, verbatim
        for i in (0, 13, 99):
            assert momentum_alpha(0.4, epoch, i, spe, 2) == pytest.approx(0.4 * min(1, (epoch * spe + i) / (2 * spe)))


def test_momentum_alpha_retrieval_ramp_one_epoch():
    spe = 40
    for epoch in range(3):
        for i in (0, 10, 39):
            original = 0.4 if epoch > 0 else 0.4 * min(1, i / spe)  # train_retrieval.py
            assert momentum_alpha(0.4, epoch, i, spe, 1) == pytest.approx(original)
    assert momentum_alpha(0.4, 0, 0, spe, 0) == 0.4
    with pytest.raises(ValueError):
        momentum_alpha(0.4, 0, 0, 0, 1)
