"""Training objectives on tiny models: momentum math, queues, state loading, sharing, gradients, distributed."""

from __future__ import annotations

import copy
import os
from datetime import timedelta

import pytest
import torch
import torch.multiprocessing as mp

from openblip.checkpoint import load_model, save_official
from openblip.config import get_arch_config
from openblip.losses import itc_targets, lm_loss, sample_hard_negatives
from openblip.models.blip import create_model
from openblip.train import distributed as D
from openblip.train.objectives import (
    CaptionObjective,
    NLVRObjective,
    PretrainObjective,
    RetrievalObjective,
    TrainingStateError,
    VQAObjective,
)

CLS, SEP, DEC, ENC = 101, 102, 30522, 30523


def tiny(task: str, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    if task == "nlvr":
        overrides.setdefault("nlvr_merge_from_layer", 1)
    return create_model(get_arch_config("blip-tiny", task, **overrides))


def batch(b: int = 4, length: int = 9, seed: int = 0, size: int = 32):
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randn(b, 3, size, size, generator=g)
    ids = torch.randint(1000, 3000, (b, length), generator=g)
    ids[:, 0] = CLS
    mask = torch.ones_like(ids)
    for i in range(b):  # different lengths, [SEP] then [PAD]s
        n = length - (i % 3)
        ids[i, n - 1] = SEP
        ids[i, n:] = 0
        mask[i, n:] = 0
    return pixels, ids, mask


# ----------------------------------------------------------------------------------------------------------------
# momentum encoders


def test_momentum_copies_are_independent_frozen_and_named_officially():
    model = tiny("pretrain")
    obj = PretrainObjective(model, queue_size=8)
    for name in ("visual_encoder_m", "vision_proj_m", "text_encoder_m", "text_proj_m"):
        online = getattr(model, name[:-2])
        mom = getattr(obj, name)
        for (n1, p), (n2, pm) in zip(online.named_parameters(), mom.named_parameters()):
            assert n1 == n2 and torch.equal(p, pm)
            assert not pm.requires_grad and pm.data_ptr() != p.data_ptr()
    keys = set(obj.state_dict())
    assert {"image_queue", "text_queue", "queue_ptr"} <= keys
    assert "visual_encoder_m.pos_embed" in keys and "text_proj_m.weight" in keys
    assert not any(k.startswith(("model.", "visual_encoder.", "text_decoder")) for k in keys)  # model saved apart
    assert obj.image_queue.shape == (16, 8)
    torch.testing.assert_close(obj.image_queue.norm(dim=0), torch.ones(8))
    torch.testing.assert_close(obj.text_queue.norm(dim=0), torch.ones(8))
    # the model's parameters are reachable for the optimizer, momentum ones are frozen
    trainable = {id(p) for p in obj.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in model.parameters()}


def test_momentum_update_math_and_copy_params():
    model = tiny("retrieval")
    obj = RetrievalObjective(model, queue_size=8, momentum=0.9)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    online = {n: p.detach().clone() for n, p in model.text_encoder.named_parameters()}
    before = {n: p.detach().clone() for n, p in obj.text_encoder_m.named_parameters()}
    before_proj = obj.vision_proj_m.weight.detach().clone()
    obj.momentum_update()
    for n, pm in obj.text_encoder_m.named_parameters():
        torch.testing.assert_close(pm, before[n] * 0.9 + online[n] * 0.1, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(obj.vision_proj_m.weight, before_proj * 0.9 + model.vision_proj.weight.detach() * 0.1)
    obj.copy_params()
    for (_, p), (_, pm) in zip(model.visual_encoder.named_parameters(), obj.visual_encoder_m.named_parameters()):
        assert torch.equal(p, pm)


# ----------------------------------------------------------------------------------------------------------------
# queues


def test_queue_pointer_wraps_and_keeps_the_last_batches():
    obj = RetrievalObjective(tiny("retrieval"), queue_size=8)
    feats = [torch.nn.functional.normalize(torch.randn(2, 16), dim=-1) for _ in range(5)]
    for k, f in enumerate(feats):
        obj.dequeue_and_enqueue(f, -f, idx=torch.tensor([10 * k, 10 * k + 1]))
    assert obj.ptr == 2 and int(obj.ptr_queue) == 2
    # columns [0,2) hold batch 5 (it wrapped around), [2,4) batch 2, [4,6) batch 3, [6,8) batch 4
    for cols, k in (((0, 2), 4), ((2, 4), 1), ((4, 6), 2), ((6, 8), 3)):
        torch.testing.assert_close(obj.image_queue[:, cols[0] : cols[1]], feats[k].T)
        torch.testing.assert_close(obj.text_queue[:, cols[0] : cols[1]], -feats[k].T)
        assert obj.idx_queue[0, cols[0] : cols[1]].tolist() == [10 * k, 10 * k + 1]

    pre = PretrainObjective(tiny("pretrain"), queue_size=8)
    for f in feats:
        pre.dequeue_and_enqueue(f, f)
    assert int(pre.queue_ptr) == 2
    torch.testing.assert_close(pre.image_queue[:, 0:2], feats[4].T)


def test_queue_size_must_be_a_multiple_of_the_global_batch():
    obj = PretrainObjective(tiny("pretrain"), queue_size=8)
    with pytest.raises(ValueError, match=r"queue_size 8 is not a multiple of the global batch 3"):
        obj.dequeue_and_enqueue(torch.randn(3, 16), torch.randn(3, 16))
    pixels, ids, mask = batch(3)
    with pytest.raises(ValueError, match=r"global batch 3 \(= batch 3 per process x 1 processes\)"):
        obj(pixels, ids, mask)
    assert int(obj.queue_ptr) == 0  # nothing was written


# ----------------------------------------------------------------------------------------------------------------
# pre-training


def test_pretrain_forward_and_training_reduces_loss():
    model = tiny("pretrain")
    obj = PretrainObjective(model, queue_size=8).train()
    pixels, ids, mask = batch(4)
    opt = torch.optim.AdamW([p for p in obj.parameters() if p.requires_grad], lr=2e-3, weight_decay=0.05)
    g = torch.Generator().manual_seed(0)
    losses = []
    for step in range(6):
        out = obj(pixels, ids, mask, alpha=0.4, generator=g)
        assert set(out) == {"loss_ita", "loss_itm", "loss_lm", "loss"}
        torch.testing.assert_close(out["loss"], out["loss_ita"] + out["loss_itm"] + out["loss_lm"])
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
        assert obj.ptr == (4 * (step + 1)) % 8
    assert sum(losses[-2:]) / 2 < losses[0] - 0.5, losses
    # momentum copies moved towards the trained weights, and received no gradient
    assert all(p.grad is None for p in obj.text_encoder_m.parameters())
    assert not torch.equal(obj.vision_proj_m.weight, model.vision_proj.weight)


def test_pretrain_components_match_manual_computation():
    """Recompute the three losses from the model's public methods with the same draws."""
    model = tiny("pretrain").eval()  # no dropout: deterministic
    obj = PretrainObjective(model, queue_size=8, momentum=0.5).eval()
    pixels, ids, mask = batch(4)
    queue_i, queue_t = obj.image_queue.clone(), obj.text_queue.clone()
    out = obj(pixels, ids, mask, alpha=0.3, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        emb = model.encode_image(pixels)
        img, txt = model.image_features(emb), model.text_features(ids, mask)
        # momentum params equal the model's (copied, EMA of equal tensors), so momentum feats = online feats
        t = model.temp
        i_all, t_all = torch.cat([img.t(), queue_i], 1), torch.cat([txt.t(), queue_t], 1)
        s_i2t, s_t2i = img @ t_all / t, txt @ i_all / t
        targets = itc_targets(s_i2t, s_t2i, None, 0.3)
        log_i2t, log_t2i = s_i2t.log_softmax(1), s_t2i.log_softmax(1)
        ita = (-(log_i2t * targets[0]).sum(1).mean() - (log_t2i * targets[1]).sum(1).mean()) / 2
        labels = ids.masked_fill(ids == 0, -100)
        lm = lm_loss(model.decoder_logits(emb, ids, mask), labels, 0.1)
        neg_img, neg_txt = sample_hard_negatives(s_i2t, s_t2i, "pretrain", generator=torch.Generator().manual_seed(3))
        rows = [(i, i, 1) for i in range(4)] + [(i, int(neg_img[i]), 0) for i in range(4)]
        rows += [(int(neg_txt[i]), i, 0) for i in range(4)]
        logits = torch.cat([model.itm_logits(emb[j : j + 1], ids[i : i + 1], mask[i : i + 1]) for i, j, _ in rows])
        itm = torch.nn.functional.cross_entropy(logits, torch.tensor([y for *_, y in rows]))
    torch.testing.assert_close(out["loss_ita"], ita, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["loss_lm"], lm, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["loss_itm"], itm, rtol=1e-5, atol=1e-6)
    # the queue now starts with this batch's momentum features
    torch.testing.assert_close(obj.image_queue[:, :4], img.T, rtol=1e-5, atol=1e-6)


def test_encoder_decoder_sharing_survives_a_training_step():
    model = tiny("pretrain")
    obj = PretrainObjective(model, queue_size=8).train()
    opt = torch.optim.AdamW([p for p in obj.parameters() if p.requires_grad], lr=1e-2)
    out = obj(*batch(4))
    opt.zero_grad()
    out["loss"].backward()
    opt.step()
    enc, dec = model.text_encoder, model.text_decoder.bert
    assert dec.embeddings is enc.embeddings
    assert model.text_decoder.cls.predictions.decoder.weight is enc.embeddings.word_embeddings.weight
    for le, ld in zip(enc.encoder.layer, dec.encoder.layer):
        assert ld.crossattention is le.crossattention
        assert ld.intermediate is le.intermediate and ld.output is le.output
        assert ld.attention is not le.attention  # self-attention is not shared
        assert not torch.equal(ld.attention.self.query.weight, le.attention.self.query.weight)
    state = model.state_dict()
    for key, value in state.items():
        if key.startswith("text_encoder.") and "attention." not in key.replace("crossattention.", ""):
            twin = "text_decoder.bert." + key[len("text_encoder.") :]
            assert torch.equal(state[twin], value), key
    # the momentum encoder is a separate copy, not tied to the decoder
    assert obj.text_encoder_m.embeddings is not enc.embeddings


def test_temp_is_clamped_in_place_and_gets_gradients():
    model = tiny("pretrain")
    obj = PretrainObjective(model, queue_size=8)
    with torch.no_grad():
        model.temp.fill_(1.0)
    out = obj(*batch(4))
    assert model.temp.item() == pytest.approx(0.5)
    out["loss"].backward()
    assert model.temp.grad is not None and model.temp.grad.abs().item() > 0
    with torch.no_grad():
        model.temp.fill_(1e-6)
    obj(*batch(4))
    assert model.temp.item() == pytest.approx(0.001)


# ----------------------------------------------------------------------------------------------------------------
# retrieval


def test_retrieval_idx_aware_positives():
    obj = RetrievalObjective(tiny("retrieval"), queue_size=8)
    obj.idx_queue[0, :3] = torch.tensor([3, 7, 5])
    idx = torch.tensor([3, 3, 5])  # two captions of image 3 in the batch, one more in the queue
    pos = obj.itc_positive_mask(idx)
    assert pos.shape == (3, 11)
    assert pos[0].nonzero().flatten().tolist() == [0, 1, 3]
    assert pos[1].nonzero().flatten().tolist() == [0, 1, 3]
    assert pos[2].nonzero().flatten().tolist() == [2, 5]
    hard, _ = itc_targets(torch.zeros(3, 11), torch.zeros(3, 11), pos, alpha=0.0)
    torch.testing.assert_close(hard[0, [0, 1, 3]], torch.full((3,), 1 / 3))
    torch.testing.assert_close(hard[2, [2, 5]], torch.full((2,), 1 / 2))


def test_retrieval_forward_with_repeated_images():
    model = tiny("retrieval")
    obj = RetrievalObjective(model, queue_size=8).train()
    pixels, ids, mask = batch(4)
    pixels[1] = pixels[0]
    idx = torch.tensor([5, 5, 6, 7])
    out = obj(pixels, ids, mask, idx, alpha=0.4, generator=torch.Generator().manual_seed(0))
    assert set(out) == {"loss_ita", "loss_itm", "loss"}
    out["loss"].backward()
    assert model.itm_head.weight.grad is not None and model.temp.grad is not None
    assert obj.idx_queue[0, :4].tolist() == [5, 5, 6, 7] and obj.ptr == 4
    with pytest.raises(ValueError, match="no hard-negative candidate"):
        obj(pixels, ids, mask, torch.tensor([1, 1, 1, 1]))


def test_negative_all_rank_single_process_equals_in_batch():
    pixels, ids, mask = batch(4)
    idx = torch.tensor([0, 1, 1, 2])
    outs = []
    for all_rank in (False, True):
        torch.manual_seed(11)
        model = tiny("retrieval").eval()
        torch.manual_seed(12)
        obj = RetrievalObjective(model, queue_size=8, negative_all_rank=all_rank).eval()
        outs.append(obj(pixels, ids, mask, idx, generator=torch.Generator().manual_seed(4)))
    for k in ("loss_ita", "loss_itm"):
        torch.testing.assert_close(outs[0][k], outs[1][k])


# ----------------------------------------------------------------------------------------------------------------
# training state


def _official_file_with_training_state(tmp_path, model, obj):
    path = save_official(model, tmp_path / "model.pth")
    ckpt = torch.load(path, weights_only=True)
    ckpt["model"].update({k: v.clone() for k, v in obj.state_dict().items()})
    ckpt["model"]["text_encoder_m.embeddings.position_ids"] = torch.arange(512)[None]  # official files have it
    torch.save(ckpt, path)
    return path


def test_official_training_state_loads_and_wrong_keys_raise(tmp_path):
    model = tiny("retrieval")
    obj = RetrievalObjective(model, queue_size=8)
    obj(*batch(4), torch.tensor([0, 1, 2, 3]))  # non-trivial queues, ids and momentum weights
    path = _official_file_with_training_state(tmp_path, model, obj)

    model2, report = load_model(path, for_training=True, return_report=True)
    state = report.training_state
    assert {"image_queue", "text_queue", "idx_queue", "ptr_queue", "visual_encoder_m.pos_embed"} <= set(state)
    obj2 = RetrievalObjective(model2, queue_size=8)
    rep = obj2.load_training_state(state)
    assert rep.ok
    for k, v in obj.state_dict().items():
        assert torch.equal(obj2.state_dict()[k], v), k
    assert obj2.ptr == 4
    obj3 = RetrievalObjective.from_training_state(model2, state)
    assert obj3.queue_size == 8 and torch.equal(obj3.idx_queue, obj.idx_queue)
    # torch's load_state_dict spelling works too
    RetrievalObjective(model2, queue_size=8).load_state_dict(obj.state_dict())

    with pytest.raises(TrainingStateError, match=r"unexpected keys \(1\): text_encoder_m\.bogus\.weight"):
        obj2.load_training_state({**state, "text_encoder_m.bogus.weight": torch.zeros(1)})
    with pytest.raises(TrainingStateError, match=r"missing keys \(1\): idx_queue"):
        obj2.load_training_state({k: v for k, v in state.items() if k != "idx_queue"})
    with pytest.raises(TrainingStateError, match=r"image_queue: given \[16, 8\] vs expected \[16, 16\]"):
        RetrievalObjective(model2, queue_size=16).load_training_state(state)
    with pytest.raises(TrainingStateError, match="position ids were modified"):
        obj2.load_training_state({**state, "text_encoder_m.embeddings.position_ids": torch.zeros(1, 512)})


def test_pretrain_lm_gradients_equal_the_full_logits_loss_and_phase_switches():
    """The LM head runs at supervised positions only: the same gradients as ``lm_loss`` over all positions. With
    ``use_queue=False`` ITC is in-batch; with ``use_itm=False`` ``loss_itm`` is 0 and the ITM head gets no gradient."""
    model = tiny("pretrain").eval()
    obj = PretrainObjective(model, queue_size=8, momentum=0.5).eval()
    pixels, ids, mask = batch(4)
    out = obj(pixels, ids, mask, alpha=0.3, generator=torch.Generator().manual_seed(3))
    got = torch.autograd.grad(out["loss_lm"], list(model.text_decoder.parameters()), allow_unused=True)
    emb = model.encode_image(pixels)
    ref_loss = lm_loss(model.decoder_logits(emb, ids, mask), ids.masked_fill(ids == 0, -100), 0.1)
    ref = torch.autograd.grad(ref_loss, list(model.text_decoder.parameters()), allow_unused=True)
    for g, r in zip(got, ref):
        assert (g is None) == (r is None)
        if g is not None:
            torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)

    obj.use_queue, obj.use_itm = False, False
    out = obj(pixels, ids, mask, alpha=0.0)
    with torch.no_grad():
        img, txt = model.image_features(emb), model.text_features(ids, mask)
        s = img @ txt.t() / model.temp
        ita = (
            torch.nn.functional.cross_entropy(s, torch.arange(4))
            + torch.nn.functional.cross_entropy(s.t(), torch.arange(4))
        ) / 2
    torch.testing.assert_close(out["loss_ita"], ita, rtol=1e-5, atol=1e-6)
    assert float(out["loss_itm"]) == 0.0
    out["loss"].backward()
    assert all(p.grad is None for p in model.itm_head.parameters())


def test_pretrain_state_into_retrieval_non_strict_with_resized_pos_embed():
    pre = PretrainObjective(tiny("pretrain"), queue_size=8)
    obj = RetrievalObjective(tiny("retrieval", image_size=48), queue_size=8)
    with pytest.raises(TrainingStateError):
        obj.load_training_state(pre.state_dict())
    rep = obj.load_training_state(pre.state_dict(), strict=False)
    assert rep.missing == ["idx_queue", "ptr_queue"] and rep.unexpected == ["queue_ptr"]
    assert rep.resized and "visual_encoder_m.pos_embed" in rep.resized[0]
    assert torch.equal(obj.image_queue, pre.image_queue)
    assert obj.visual_encoder_m.pos_embed.shape == (1, 37, 32)
    assert (obj.idx_queue == -100).all()


# ----------------------------------------------------------------------------------------------------------------
# caption, VQA, NLVR


def test_caption_objective_masks_prompt_and_pads():
    model = tiny("caption").eval()
    obj = CaptionObjective(model, prompt_length=4)
    pixels, ids, mask = batch(3)
    out = obj(pixels, ids, mask)
    labels = ids.clone()
    labels[mask == 0] = -100
    labels[:, :4] = -100
    expected = lm_loss(model(pixels, ids, mask), labels, 0.1)
    torch.testing.assert_close(out["loss"], expected)
    out["loss"].backward()


def test_vqa_objective_matches_per_question_loop():
    model = tiny("vqa").eval()
    obj = VQAObjective(model)
    pixels, q_ids, q_mask = batch(2, length=7)
    _, a_ids, a_mask = batch(3, length=5, seed=1)
    a_ids[:, 0] = CLS
    n, weights = [2, 1], torch.tensor([0.6, 0.4, 1.0])
    out = obj(pixels, q_ids, q_mask, a_ids, a_mask, n, weights)
    # brute force: one question, one answer at a time
    total = 0.0
    owner = [0, 0, 1]
    for a in range(3):
        qb = owner[a]
        states = model.encode_question(model.encode_image(pixels[qb : qb + 1]), q_ids[qb : qb + 1], q_mask[qb : qb + 1])
        logits = model.answer_logits(states, q_mask[qb : qb + 1], a_ids[a : a + 1], a_mask[a : a + 1])
        labels = a_ids[a : a + 1].masked_fill(a_ids[a : a + 1] == 0, -100)
        total = total + weights[a] * lm_loss(logits, labels, 0.1, reduction="none")[0]
    torch.testing.assert_close(out["loss"], total / 2, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="sum"):
        obj(pixels, q_ids, q_mask, a_ids, a_mask, [1, 1], weights)
    # several questions about one image: image_index picks each question's image, the ViT runs once per image
    one = obj(pixels[:1], q_ids, q_mask, a_ids, a_mask, n, weights, image_index=torch.tensor([0, 0]))
    same = obj(pixels[:1].expand(2, -1, -1, -1), q_ids, q_mask, a_ids, a_mask, n, weights)
    torch.testing.assert_close(one["loss"], same["loss"], rtol=1e-6, atol=1e-6)
    swapped = obj(pixels.flip(0), q_ids, q_mask, a_ids, a_mask, n, weights, image_index=torch.tensor([1, 0]))
    torch.testing.assert_close(swapped["loss"], out["loss"], rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="image_index"):
        obj(pixels[:1], q_ids, q_mask, a_ids, a_mask, n, weights)


def test_nlvr_objective_cross_entropy():
    model = tiny("nlvr").eval()
    obj = NLVRObjective(model)
    pixels, ids, mask = batch(2)
    pixels = torch.cat([pixels, pixels.flip(0)])
    targets = torch.tensor([1, 0])
    out = obj(pixels, ids, mask, targets)
    torch.testing.assert_close(out["loss"], torch.nn.functional.cross_entropy(out["logits"], targets))


def test_objectives_reject_wrong_models():
    with pytest.raises(TypeError):
        PretrainObjective(tiny("retrieval"))
    with pytest.raises(TypeError):
        RetrievalObjective(tiny("caption"))
    with pytest.raises(ValueError, match="embed_dim"):
        RetrievalObjective(tiny("retrieval"), queue_size=8, embed_dim=256)


# ----------------------------------------------------------------------------------------------------------------
# distributed helpers


def test_distributed_helpers_single_process():
    assert not D.is_dist() and D.rank() == 0 and D.world_size() == 1
    x = torch.randn(3, 2, requires_grad=True)
    y = D.concat_all_gather(x)
    assert torch.equal(y, x) and not y.requires_grad
    z = D.all_gather_with_grad(x)
    z.sum().backward()
    assert torch.equal(x.grad, torch.ones(3, 2))


def _dist_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world, timeout=timedelta(seconds=60)
    )
    try:
        torch.set_num_threads(1)
        result = {}
        result["gather"] = D.concat_all_gather(torch.tensor([[rank]]))
        x = torch.tensor([float(rank + 1)], requires_grad=True)
        g = D.all_gather_with_grad(x)  # [1, 2]
        ((rank + 1) * (g * torch.tensor([1.0, 2.0])).sum()).backward()
        result["grad"] = x.grad.clone()
        # retrieval with negatives from both ranks; the ranks pad their texts to different lengths
        torch.manual_seed(0)
        model = tiny("retrieval").train()
        obj = RetrievalObjective(model, queue_size=8, negative_all_rank=True)
        pixels, ids, mask = batch(2, length=8 + 2 * rank, seed=rank)
        idx = torch.tensor([0, 1]) + 2 * rank
        out = obj(pixels, ids, mask, idx, generator=torch.Generator().manual_seed(rank))
        out["loss"].backward()
        result["loss"] = out["loss"].detach()
        result["idx_queue"] = obj.idx_queue.clone()
        result["ptr"] = obj.ptr
        result["vit_grad"] = model.visual_encoder.pos_embed.grad is not None
        with pytest.raises(ValueError, match=r"x 2 processes"):
            obj(*batch(3), torch.arange(3))
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_distributed_two_processes_gloo(tmp_path):
    mp.spawn(_dist_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2))
    assert r0["gather"].flatten().tolist() == [0, 1] and r1["gather"].flatten().tolist() == [0, 1]
    # d/dx_r of sum over ranks r' of (r'+1) * w . gathered = (1 + 2) * w_r
    assert r0["grad"].item() == pytest.approx(3.0) and r1["grad"].item() == pytest.approx(6.0)
    for r in (r0, r1):
        assert r["idx_queue"][0, :4].tolist() == [0, 1, 2, 3] and r["ptr"] == 4
        assert torch.isfinite(r["loss"]) and r["vit_grad"]


def test_objective_state_dict_nested_in_a_parent_module():
    obj = PretrainObjective(tiny("pretrain"), queue_size=8)
    parent = torch.nn.ModuleDict({"obj": obj})
    keys = set(parent.state_dict())
    assert "obj.image_queue" in keys and not any(k.startswith("obj.model.") for k in keys)
    clone = copy.deepcopy(obj)
    assert torch.equal(clone.state_dict()["image_queue"], obj.image_queue)
