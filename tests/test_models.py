"""Model internals: attention backends, shared cross-attention K/V, KV-cache decoding, gradient checkpointing,
drop-path, ViT input checks, parameter counts of the released architectures (spec §3.2), pre-training weight
sharing (spec §1.4) and the LM loss (spec §1.2, §1.5)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.utils.checkpoint
from torch import nn

from openblip.config import TextConfig, VisionConfig, get_arch_config
from openblip.layers.attention import attention_backend, get_attention_backend
from openblip.layers.vit_layers import resize_pos_embed
from openblip.losses import lm_loss
from openblip.models.blip import DEC_ID, SEP_ID, BlipCaption, create_model
from openblip.models.text import BertLMHeadModel, BertModel
from openblip.models.vision import VisionTransformer

TOL = 1e-5
TASKS = ["caption", "retrieval", "vqa", "nlvr", "feature", "pretrain"]
BACKENDS = ["sdpa", "math"]


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Seeded non-trivial weights (LayerNorm scale ~ 1 +- 0.2, everything else ~ N(0, 0.05), biases included)."""
    g = torch.Generator().manual_seed(seed)
    ln_scales = {id(m.weight) for m in model.modules() if isinstance(m, nn.LayerNorm)}
    with torch.no_grad():
        for p in model.parameters():
            noise = torch.randn(p.shape, generator=g)
            p.copy_(1.0 + 0.2 * noise if id(p) in ln_scales else 0.05 * noise)
    return model


def text_cfg(**kw) -> TextConfig:
    return TextConfig(**{"hidden_size": 32, "num_layers": 2, "num_heads": 4, "intermediate_size": 64, **kw})


def padded_ids(batch: int, length: int, seed: int = 0, first: int = DEC_ID) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids: row i has ``length - (i % 3)`` real tokens, the last of them [SEP]."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 30000, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    for i in range(batch):
        n = length - (i % 3)
        ids[i, n - 1] = SEP_ID
        ids[i, n:] = 0
        mask[i, n:] = 0
    ids[:, 0] = first
    return ids, mask


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


# ----------------------------------------------------------------------------------------------------------------
# attention backends


def task_outputs(model, x: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    task = model.config.task
    with torch.no_grad():
        if task == "caption":
            return [model(x, ids, mask)]
        if task == "retrieval":
            image_embeds = model.encode_image(x)
            return [*model(x, ids, mask), model.itm_logits(image_embeds, ids, mask, first_token="cls")]
        if task == "vqa":
            q = model.encode_question(model.encode_image(x), ids, mask)
            answers, answer_mask = padded_ids(ids.shape[0], 4, seed=9)
            return [q, model.answer_logits(q, mask, answers, answer_mask)]
        if task == "nlvr":
            return [model(torch.cat([x, x.flip(0)]), ids, mask)]
        if task == "feature":
            return [model(x, ids, mask), model.text_embeds(ids, mask)]
        return [*model(x, ids, mask), model.decoder_logits(model.encode_image(x), ids, mask)]


@pytest.mark.parametrize("task", TASKS)
def test_sdpa_and_math_backends_agree(task):
    model = randomize_(create_model(get_arch_config("blip-tiny", task, nlvr_merge_from_layer=1))).eval()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    ids, mask = padded_ids(3, 7)
    assert (mask == 0).any()
    with attention_backend("sdpa"):
        fused = task_outputs(model, x, ids, mask)
    with attention_backend("math"):
        explicit = task_outputs(model, x, ids, mask)
    assert get_attention_backend() == "sdpa"  # restored
    for a, b in zip(fused, explicit, strict=True):
        assert max_diff(a, b) <= TOL


def test_attention_backend_rejects_unknown_name():
    with pytest.raises(ValueError, match="sdpa"):
        with attention_backend("flash"):
            pass
    assert get_attention_backend() == "sdpa"


# ----------------------------------------------------------------------------------------------------------------
# shared cross-attention keys/values and the KV cache


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("decoder", [False, True])
def test_cross_kv_shared_by_r_rows_equals_repeat_interleave(backend, decoder):
    b, r, n_img, width = 2, 3, 5, 48
    cfg = text_cfg()
    text = BertLMHeadModel(cfg, encoder_width=width) if decoder else BertModel(cfg, encoder_width=width)
    randomize_(text).eval()
    bert = text.bert if decoder else text
    g = torch.Generator().manual_seed(2)
    image = torch.randn(b, n_img, width, generator=g)
    image_mask = torch.ones(b, n_img, dtype=torch.long)
    image_mask[1, 3:] = 0  # padded "image" rows (question states in VQA)
    ids, mask = padded_ids(b * r, 6, first=DEC_ID if decoder else 101)

    def call(**kw):
        if decoder:
            return text(ids, attention_mask=mask, **kw)[0]
        return text(ids, attention_mask=mask, **kw).last_hidden_state

    with torch.no_grad(), attention_backend(backend):
        shared = call(cross_kv=bert.cross_kv(image), encoder_attention_mask=image_mask)
        repeated = call(
            encoder_hidden_states=image.repeat_interleave(r, 0),
            encoder_attention_mask=image_mask.repeat_interleave(r, 0),
        )
        unmasked = call(encoder_hidden_states=image.repeat_interleave(r, 0))
        with pytest.raises(ValueError, match="cannot share"):
            text(ids[:5], attention_mask=mask[:5], cross_kv=bert.cross_kv(image))
    assert max_diff(shared, repeated) <= TOL
    assert max_diff(shared, unmasked) > 1e-3  # the image mask is really applied


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("share", [1, 2])
def test_kv_cache_incremental_decoding_matches_full_forward(backend, share):
    b, length, width = 4, 6, 48
    dec = randomize_(BertLMHeadModel(text_cfg(), encoder_width=width)).eval()
    g = torch.Generator().manual_seed(3)
    image = torch.randn(b // share, 5, width, generator=g)
    ids = torch.randint(1000, 30000, (b, length), generator=g)
    ids[:, 0] = DEC_ID
    mask = torch.ones(b, length, dtype=torch.long)
    mask[1, 0] = 0  # a left-padded row
    with torch.no_grad(), attention_backend(backend):
        full, _ = dec(ids, attention_mask=mask, encoder_hidden_states=image.repeat_interleave(share, 0))
        cross = dec.bert.cross_kv(image)
        past = None
        for t in range(length):
            step, past = dec(
                ids[:, t : t + 1],
                attention_mask=mask[:, : t + 1],
                cross_kv=cross,
                past_key_values=past,
                use_cache=True,
                last_only=True,
            )
            assert step.shape == (b, 1, 30524)
            assert len(past) == 2 and past[0][0].shape[2] == t + 1
            real = mask[:, t].bool()  # a padding position's own output is not used by anything
            assert max_diff(step[real, 0], full[real, t]) <= TOL
        # last_only on a full forward is the last column of the full logits
        last, _ = dec(ids, attention_mask=mask, cross_kv=cross, last_only=True)
    assert max_diff(last[:, 0], full[:, -1]) <= TOL


# ----------------------------------------------------------------------------------------------------------------
# ViT: gradient checkpointing, drop path, input size


def vit_cfg(**kw) -> VisionConfig:
    return VisionConfig(**{"image_size": 32, "patch_size": 8, "width": 32, "depth": 3, "num_heads": 2, **kw})


def test_gradient_checkpointing_same_keys_outputs_and_gradients(monkeypatch):
    plain = randomize_(VisionTransformer(vit_cfg()))
    ckpt = VisionTransformer(vit_cfg(grad_ckpt_layers=2))
    assert list(ckpt.state_dict()) == list(plain.state_dict())  # no wrapper prefixes
    ckpt.load_state_dict(plain.state_dict())
    assert [blk.use_checkpoint for blk in ckpt.blocks] == [False, True, True]

    calls = []
    original = torch.utils.checkpoint.checkpoint

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counting)

    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    weight = torch.randn(2, 17, 32, generator=torch.Generator().manual_seed(5))
    results = []
    for model in (plain, ckpt):
        model.train()
        xi = x.clone().requires_grad_(True)
        out = model(xi)
        (out * weight).sum().backward()
        results.append((out.detach(), xi.grad, {k: p.grad for k, p in model.named_parameters()}))
    assert len(calls) == 4  # attn + mlp of the last 2 blocks, forward only (recomputation is internal)
    (out_a, gx_a, g_a), (out_b, gx_b, g_b) = results
    torch.testing.assert_close(out_b, out_a, rtol=0, atol=1e-7)
    torch.testing.assert_close(gx_b, gx_a, rtol=0, atol=1e-7)
    assert g_a.keys() == g_b.keys()
    for k in g_a:
        torch.testing.assert_close(g_b[k], g_a[k], rtol=0, atol=1e-7)

    calls.clear()
    ckpt.set_grad_checkpointing(3)
    assert [blk.use_checkpoint for blk in ckpt.blocks] == [True, True, True]
    ckpt(x).sum().backward()
    assert len(calls) == 6
    calls.clear()
    with torch.no_grad():  # no recomputation needed without gradients, nor in eval mode
        ckpt(x)
    ckpt.eval()
    ckpt(x)
    ckpt.set_grad_checkpointing(0)
    ckpt.train()
    ckpt(x)
    assert calls == []


def test_grad_checkpointing_keeps_task_model_keys():
    cfg = get_arch_config("blip-tiny", "caption")
    with_ckpt = cfg.replace(vision=dataclasses.replace(cfg.vision, grad_ckpt_layers=2))
    assert list(create_model(with_ckpt).state_dict()) == list(create_model(cfg).state_dict())


def test_drop_path_schedule_is_linear():
    vit = VisionTransformer(vit_cfg(depth=5, drop_path_rate=0.1))
    rates = [blk.drop_path.p for blk in vit.blocks]
    assert rates == pytest.approx(torch.linspace(0, 0.1, 5).tolist())
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.1)
    # stochastic in training, the identity in eval
    x = torch.randn(8, 3, 32, 32)
    vit.eval()
    with torch.no_grad():
        assert torch.equal(vit(x), vit(x))
        vit.train()
        assert not torch.equal(vit(x), vit(x))
    # ViT-L always trains with 0.1 in the original ("0.1 or drop_path_rate")
    assert get_arch_config("blip-large").vision.drop_path_rate == 0.1


def test_vit_input_size_checks_and_interpolation():
    vit = randomize_(VisionTransformer(vit_cfg())).eval()
    with pytest.raises(ValueError, match="40x40 does not match the model's 32x32"):
        vit(torch.randn(1, 3, 40, 40))
    with pytest.raises(ValueError, match="multiple of the patch size"):
        vit(torch.randn(1, 3, 44, 44), interpolate_pos_encoding=True)
    x48 = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        out = vit(x48, interpolate_pos_encoding=True)
        assert out.shape == (2, 1 + 36, 32)
        # the same as a model whose position embedding was resized once (bicubic, CLS row kept)
        resized = VisionTransformer(vit_cfg(image_size=48)).eval()
        state = vit.state_dict()
        state["pos_embed"] = resize_pos_embed(state["pos_embed"], 36)
        resized.load_state_dict(state)
        assert max_diff(out, resized(x48)) <= TOL
        x32 = torch.randn(2, 3, 32, 32)
        assert torch.equal(vit(x32, interpolate_pos_encoding=True), vit(x32))


# ----------------------------------------------------------------------------------------------------------------
# parameter counts of the released architectures (spec §3.2), built on the meta device


def n_params(*modules: nn.Module) -> int:
    return sum(sum(p.numel() for p in m.parameters()) for m in modules)  # parameters() is unique per module


def momentum_params(model) -> int:
    """The momentum copies of BLIP_Retrieval / BLIP_Pretrain (visual_encoder_m, text_encoder_m, *_proj_m)."""
    return n_params(model.visual_encoder, model.text_encoder, model.vision_proj, model.text_proj)


@pytest.mark.parametrize(
    ("arch", "task", "image_size", "millions", "with_momentum"),
    [
        ("blip-base", "caption", 384, 223.97, False),
        ("blip-base", "retrieval", 384, 223.74, False),  # = BLIP_ITM
        ("blip-base", "retrieval", 384, 447.49, True),  # = BLIP_Retrieval
        ("blip-base", "nlvr", 384, 259.37, False),
        ("blip-base", "vqa", 480, 361.48, False),
        ("blip-base", "pretrain", 224, 475.89, True),
        ("blip-large", "caption", 384, 446.29, False),
        ("blip-large", "retrieval", 384, 892.26, True),
        ("blip-large", "vqa", 480, 583.88, False),
        ("blip-large", "pretrain", 224, 920.47, True),
    ],
)
def test_parameter_counts_match_the_original(arch, task, image_size, millions, with_momentum):
    with torch.device("meta"):
        model = create_model(get_arch_config(arch, task, image_size=image_size))
    assert model.visual_encoder.pos_embed.is_meta
    n = n_params(model) + (momentum_params(model) if with_momentum else 0)
    assert abs(n / 1e6 - millions) <= 0.005, n


# ----------------------------------------------------------------------------------------------------------------
# pre-training weight sharing


def test_pretrain_encoder_decoder_sharing():
    model = create_model(get_arch_config("blip-tiny", "pretrain"))
    enc, dec = model.text_encoder, model.text_decoder.bert
    enc_params = dict(enc.named_parameters(remove_duplicate=False))
    dec_params = dict(dec.named_parameters(remove_duplicate=False))
    assert enc_params.keys() == dec_params.keys()
    shared = [k for k in enc_params if enc_params[k] is dec_params[k]]
    separate = [k for k in enc_params if enc_params[k] is not dec_params[k]]
    assert separate and all(".attention." in k for k in separate)  # self-attention only
    assert all(".attention." not in k for k in shared)
    assert {k.split(".")[0] for k in shared} == {"embeddings", "encoder"}
    per_layer = [k for k in shared if k.startswith("encoder.layer.0.")]
    assert len(per_layer) == 16  # cross-attention Q/K/V, dense, LN (10) + FFN (6), as in the official file
    for part in ("crossattention", "intermediate", "output"):
        assert any(f"layer.1.{part}." in k for k in shared)
    assert model.text_decoder.cls.predictions.decoder.weight is enc.embeddings.word_embeddings.weight
    assert model.text_decoder.cls.predictions.decoder.bias is model.text_decoder.cls.predictions.bias
    # a training step through the decoder moves the encoder's shared tensors
    w = enc.encoder.layer[0].intermediate.dense.weight
    before = w.detach().clone()
    x = torch.randn(1, 3, 32, 32)
    ids, mask = padded_ids(1, 5)
    model.train()
    opt = torch.optim.SGD(model.text_decoder.parameters(), lr=1.0)
    lm_loss(model.decoder_logits(model.encode_image(x), ids, mask), ids).backward()
    opt.step()
    assert not torch.equal(w.detach(), before)


# ----------------------------------------------------------------------------------------------------------------
# LM loss


def hand_lm_loss(logits: torch.Tensor, labels: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean over supervised tokens, per-sequence sums) written out token by token."""
    b, length, v = logits.shape
    per_seq = torch.zeros(b, dtype=torch.float64)
    total, count = 0.0, 0
    for i in range(b):
        for t in range(length - 1):
            y = int(labels[i, t + 1])
            if y == -100:
                continue
            logp = torch.log_softmax(logits[i, t].double(), dim=-1)
            loss = -(1 - eps) * logp[y] - eps / v * logp.sum()
            per_seq[i] += loss
            total, count = total + loss, count + 1
    return total / count, per_seq


def test_lm_loss_against_hand_computation():
    g = torch.Generator().manual_seed(6)
    logits = torch.randn(3, 5, 7, generator=g) * 3
    labels = torch.randint(0, 7, (3, 5), generator=g)
    labels[0, 3:] = -100
    labels[1, 1] = -100
    labels[2, 0] = -100  # position 0 is never a target (shifted away)
    mean_ref, sums_ref = hand_lm_loss(logits, labels, 0.1)
    torch.testing.assert_close(lm_loss(logits, labels).double(), mean_ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(lm_loss(logits, labels, reduction="none").double(), sums_ref, rtol=0, atol=1e-5)
    # without smoothing it is plain next-token cross-entropy
    _, plain = hand_lm_loss(logits, labels, 0.0)
    torch.testing.assert_close(lm_loss(logits, labels, 0.0, "none").double(), plain, rtol=0, atol=1e-5)
    assert lm_loss(logits, labels, reduction="none").shape == (3,)
    with pytest.raises(ValueError, match="reduction"):
        lm_loss(logits, labels, reduction="sum")


def test_caption_loss_masks_prompt_and_padding():
    model = randomize_(create_model(get_arch_config("blip-tiny", "caption"))).eval()
    assert isinstance(model, BlipCaption)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    ids, mask = padded_ids(2, 9)  # [DEC] a picture of <caption> [SEP] <pads>
    assert (mask == 0).any()
    with torch.no_grad():
        loss = model.loss(x, ids, mask)
        logits = model(x, ids, mask)
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :4] = -100  # [DEC] + the 3 prompt words are not supervised
    mean_ref, _ = hand_lm_loss(logits, labels, 0.1)
    torch.testing.assert_close(loss.double(), mean_ref, rtol=0, atol=1e-5)
    # what the prompt and pad positions hold as targets does not matter
    changed = ids.clone()
    changed[:, 1:4] = torch.tensor([2000, 2001, 2002])
    with torch.no_grad():
        logits_changed = model(x, changed, mask)
        loss_changed = model.loss(x, changed, mask)
    torch.testing.assert_close(loss_changed.double(), hand_lm_loss(logits_changed, labels, 0.1)[0], rtol=0, atol=1e-5)
    # a longer prompt supervises fewer positions
    labels6 = labels.clone()
    labels6[:, :6] = -100
    with torch.no_grad():
        loss6 = model.loss(x, ids, mask, prompt_length=6)
    torch.testing.assert_close(loss6.double(), hand_lm_loss(logits, labels6, 0.1)[0], rtol=0, atol=1e-5)


def test_low_precision_head_float32_logits_match_an_upcast_head_and_follow_weight_changes():
    """Generation evaluates a bfloat16 model's LM head in float32 (a bf16 logit near 15 is a multiple of 1/16, which
    reorders close beam hypotheses): equal to the head run in float32 on the same (bf16-valued) weights, and the
    cached float32 copy is refreshed after the weights change."""
    dec = randomize_(BertLMHeadModel(text_cfg(vocab_size=50), encoder_width=32), seed=3).eval()
    x = torch.randn(2, 3, 32)
    low = dec.to(torch.bfloat16).cls.predictions
    ref = BertLMHeadModel(text_cfg(vocab_size=50), encoder_width=32)
    ref.load_state_dict({k: v.float() for k, v in dec.state_dict().items()})
    ref_head = ref.eval().cls.predictions
    xb = x.to(torch.bfloat16)
    got = low(xb, float32_logits=True)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref_head(xb.float()), rtol=0, atol=1e-5)
    # the plain bf16 head rounds its output: not the same numbers
    assert low(xb).dtype == torch.bfloat16 and not torch.equal(low(xb).float(), got)
    with torch.no_grad():
        low.transform.dense.bias.add_(1.0)
        ref_head.transform.dense.bias.copy_(low.transform.dense.bias.float())
    torch.testing.assert_close(low(xb, float32_logits=True), ref_head(xb.float()), rtol=0, atol=1e-5)
    # an edit through .data does not bump the version the cache watches: reset_float32_cache (generate calls it)
    low.transform.dense.bias.data.add_(1.0)
    ref_head.transform.dense.bias.data.copy_(low.transform.dense.bias.float())
    low.reset_float32_cache()
    torch.testing.assert_close(low(xb, float32_logits=True), ref_head(xb.float()), rtol=0, atol=1e-5)
    # float32 models are untouched by the flag
    torch.testing.assert_close(ref_head(x, float32_logits=True), ref_head(x), rtol=0, atol=0)
    assert "_float32_cache" not in dict(low.named_buffers()) and all("cache" not in k for k in low.state_dict())
