"""Training recipes (original hyper-parameters), their smoke runs, and initial-weight loading (BLIP/BERT/ViT)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import openblip
from openblip.config import get_arch_config
from openblip.models.blip import create_model
from openblip.train import recipes
from openblip.train.init_weights import (
    InitError,
    bert_state_from_hf,
    init_from_blip,
    load_bert_weights,
    load_vit_weights,
    vit_state_from_npz,
)
from openblip.train.recipes._common import SMOKE_WORLD


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    from openblip.data.synthetic import generate_world

    root = tmp_path_factory.mktemp("world")
    generate_world(root, **SMOKE_WORLD)
    return root


# ------------------------------------------------------------------------------------------------------------
# the original hyper-parameters (configs/*.yaml, spec §4)

ORIGINAL = {
    # recipe: (image, batch, test batch, lr, epochs, min_scale, schedule, init)
    "pretrain": (224, 75, 64, 3e-4, 20, 0.2, "pretrain", None),
    "caption_coco": (384, 32, 32, 1e-5, 5, 0.5, "cosine_epoch", "blip-base-pretrain-capfilt-l"),
    "retrieval_coco": (384, 32, 64, 1e-5, 6, 0.5, "cosine_epoch", "blip-base-pretrain"),
    "retrieval_flickr": (384, 32, 64, 1e-5, 6, 0.5, "cosine_epoch", "blip-base-pretrain"),
    "vqa": (480, 16, 32, 2e-5, 10, 0.5, "cosine_epoch", "blip-base-pretrain-capfilt-l"),
    "nlvr": (384, 16, 64, 3e-5, 15, 0.5, "cosine_epoch", "blip-base-pretrain"),
}


@pytest.mark.parametrize("name", recipes.RECIPES)
def test_base_recipes_hold_the_original_settings(name):
    cfg = recipes.get_config(name)
    image, bs, bs_test, lr, epochs, min_scale, schedule, init = ORIGINAL[name]
    assert (cfg["image_size"], cfg["batch_size"], cfg["batch_size_test"]) == (image, bs, bs_test)
    assert (cfg["lr"], cfg["epochs"], cfg["min_scale"], cfg["schedule"], cfg["init"]) == (
        lr,
        epochs,
        min_scale,
        schedule,
        init,
    )
    assert cfg["weight_decay"] == 0.05 and cfg["arch"] == "blip-base" and cfg["seed"] == 42
    assert cfg["bf16"] is False and cfg["grad_accum"] == 1 and cfg["task"] == recipes.get_recipe(name).TASK
    doc = recipes.get_recipe(name).__doc__
    assert "torchrun --n" in doc and f"--recipe {name}" in doc and "Expected" in doc


def test_recipe_specifics():
    pre = recipes.get_config("pretrain")
    assert (pre["warmup_steps"], pre["warmup_lr"], pre["min_lr"], pre["lr_decay_rate"]) == (3000, 1e-6, 1e-6, 0.9)
    assert (pre["queue_size"], pre["alpha"], pre["alpha_warmup_epochs"], pre["max_text_length"]) == (57600, 0.4, 2, 30)
    assert pre["init_text"] == "bert-base-uncased" and pre["init_vision"].endswith("deit_base_patch16_224-b5f2ef4d.pth")
    cap = recipes.get_config("caption_coco")
    assert cap["prompt"] == "a picture of " and cap["max_text_length"] == 40
    assert cap["generation"] == {"num_beams": 3, "max_length": 20, "min_length": 5}
    assert cap["best_metric"] == "val/cider+val/bleu4" and cap["expected"] == {"test/bleu4": 39.7, "test/cider": 133.3}
    coco, flickr = recipes.get_config("retrieval_coco"), recipes.get_config("retrieval_flickr")
    assert (coco["k_test"], coco["negative_all_rank"], coco["grad_ckpt_layers"]) == (256, True, 4)
    assert (flickr["k_test"], flickr["negative_all_rank"], flickr["grad_ckpt_layers"]) == (128, False, 4)
    assert coco["queue_size"] == flickr["queue_size"] == 57600 and coco["alpha_warmup_epochs"] == 1
    assert coco["max_text_length"] == 35 and coco["best_metric"] == "val/r_mean"
    vqa = recipes.get_config("vqa")
    assert vqa["train_files"] == ["vqa_train.json", "vqa_val.json", "vg_qa.json"] and vqa["drop_path_rate"] == 0.1
    assert (vqa["k_test"], vqa["eval_kind"], vqa["val_file"]) == (128, "vqa", None)
    nlvr = recipes.get_config("nlvr")
    assert (nlvr["drop_path_rate"], nlvr["max_words"], nlvr["best_metric"]) == (0.1, 40, "val/acc")
    # ViT-L variants (README / commented-out yaml blocks)
    large = {n: recipes.get_config(n, "large") for n in ("caption_coco", "retrieval_coco", "retrieval_flickr")}
    assert (
        large["caption_coco"]["batch_size"],
        large["caption_coco"]["lr"],
        large["caption_coco"]["grad_ckpt_layers"],
    ) == (16, 2e-6, 5)
    assert (
        large["retrieval_coco"]["batch_size"],
        large["retrieval_coco"]["batch_size_test"],
        large["retrieval_coco"]["lr"],
        large["retrieval_coco"]["grad_ckpt_layers"],
    ) == (16, 32, 5e-6, 12)
    assert large["retrieval_flickr"]["grad_ckpt_layers"] == 10
    assert all(c["arch"] == "blip-large" for c in large.values())
    assert recipes.get_config("pretrain", "large")["lr"] == 2e-4
    for name in ("vqa", "nlvr"):  # the paper has no ViT-L model for these
        with pytest.raises(ValueError):
            recipes.get_config(name, "large")
    with pytest.raises(ValueError):
        recipes.get_recipe("imagenet")


def test_resolve_paths(tmp_path):
    cfg = recipes.resolve_paths(recipes.get_config("vqa"), "/data/coco")
    assert cfg["train_files"][0] == "/data/coco/annotation/vqa_train.json"
    assert cfg["test_file"] == "/data/coco/annotation/vqa_test.json"
    assert cfg["answer_list"] == "/data/coco/annotation/answer_list.json"
    assert cfg["image_root"] == "/data/coco"
    cfg = recipes.resolve_paths(recipes.get_config("nlvr"), "/data/nlvr2", ann_root="/ann")
    assert cfg["train_files"] == ["/ann/nlvr_train.json"] and cfg["val_file"] == "/ann/nlvr_dev.json"
    both = recipes.get_config("caption_coco")
    both["train_files"] = ["/abs/train.json"]
    assert recipes.resolve_paths(both, "/d")["train_files"] == ["/abs/train.json"]


# ------------------------------------------------------------------------------------------------------------
# smoke variants, end to end


SMOKE_TASK = {
    "pretrain": ("pretrain", "BlipPretrain", None),
    "caption_coco": ("caption", "BlipCaption", "val/loss"),
    "retrieval_coco": ("retrieval", "BlipRetrieval", "val/r_mean"),
    "retrieval_flickr": ("retrieval", "BlipRetrieval", "val/r_mean"),
    "vqa": ("vqa", "BlipVQA", "val/acc"),
    "nlvr": ("nlvr", "BlipNLVR", "val/acc"),
}


@pytest.mark.parametrize("name", recipes.RECIPES)
def test_smoke_variant_runs_end_to_end(name, world, tmp_path):
    from openblip.train.main import main

    cfg = recipes.get_config(name, "smoke")
    assert cfg["arch"] == "blip-tiny" and cfg["image_size"] == 32 and cfg["init"] is None
    out = tmp_path / name
    assert main(["--recipe", name, "--variant", "smoke", "--data-root", str(world), "--out", str(out)]) == 0
    task, cls, eval_key = SMOKE_TASK[name]
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "event" not in r]
    assert steps and all(np.isfinite(r["loss"]) for r in steps)
    assert {"step", "epoch", "lr", "loss", "grad_norm", "images_per_s", "failures"} <= set(steps[0])
    assert steps[-1]["epoch"] == 1  # two epochs
    if eval_key:
        evals = [r for r in records if r.get("event") == "eval"]
        assert len(evals) == 2 and all(eval_key in r for r in evals)
    ckpts = sorted((out / "checkpoints").glob("checkpoint_*.pt"))
    assert ckpts and ckpts[-1].name == f"checkpoint_{steps[-1]['step']:08d}.pt"
    assert json.loads((out / "config.json").read_text())["recipe"] == name
    model = openblip.load(out / "model")
    assert type(model).__name__ == cls and model.config.task == task


def test_smoke_generates_its_world_when_missing(tmp_path):
    from openblip.train.main import main

    out = tmp_path / "run"
    assert main(["--recipe", "nlvr", "--variant", "smoke", "--out", str(out), "--steps", "2"]) == 0
    assert (out / "synthetic_world" / "world.json").is_file()
    assert (out / "model" / "config.json").is_file()


def test_missing_training_data_is_a_clear_error(tmp_path, capsys):
    from openblip.train.main import main

    assert main(["--recipe", "caption_coco", "--data-root", str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "coco_karpathy_train.json" in err and "not found" in err


# ------------------------------------------------------------------------------------------------------------
# initial weights


def test_bert_weights_reproduce_hf_bert_and_resize_the_vocabulary():
    transformers = pytest.importorskip("transformers")
    cfg = get_arch_config("blip-tiny", "pretrain", image_size=32)
    t = cfg.text
    hf_cfg = transformers.BertConfig(
        vocab_size=30522,
        hidden_size=t.hidden_size,
        num_hidden_layers=t.num_layers,
        num_attention_heads=t.num_heads,
        intermediate_size=t.intermediate_size,
        max_position_embeddings=t.max_position_embeddings,
    )
    torch.manual_seed(0)
    hf = transformers.BertForMaskedLM(hf_cfg).eval()
    with torch.no_grad():  # MED has no token-type embeddings: compare against BERT with them zeroed
        hf.bert.embeddings.token_type_embeddings.weight.zero_()
        for name, p in hf.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    state = hf.state_dict()
    # old TF-converted files name LayerNorm parameters gamma/beta
    state = {
        k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
        for k, v in state.items()
    }
    model = create_model(cfg).eval()
    cross_before = model.text_encoder.encoder.layer[0].crossattention.self.query.weight.clone()
    report = load_bert_weights(model, state)
    assert any("30522 -> 30524" in n for n in report.notes)
    assert "bert.embeddings.token_type_embeddings.weight" in report.ignored
    assert any(k.startswith("text_encoder.encoder.layer.0.crossattention.") for k in report.random)
    assert torch.equal(model.text_encoder.encoder.layer[0].crossattention.self.query.weight, cross_before)
    emb = model.text_encoder.embeddings.word_embeddings.weight
    assert emb.shape[0] == 30524 and torch.equal(emb[:30522], state["bert.embeddings.word_embeddings.weight"])
    # the decoder got its LM head from cls.predictions, bias padded with zeros, decoder weight tied
    pred = model.text_decoder.cls.predictions
    assert torch.equal(pred.bias[:30522], state["cls.predictions.bias"]) and not pred.bias[30522:].any()
    assert pred.decoder.weight is model.text_decoder.bert.embeddings.word_embeddings.weight
    # same hidden states as HF BERT (unimodal text mode), and same MLM logits from the decoder's head (non-causal)
    ids = torch.randint(1000, 5000, (2, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    with torch.no_grad():
        ours = model.text_encoder(ids, attention_mask=mask, mode="text").last_hidden_state
        ref = hf.bert(input_ids=ids, attention_mask=mask).last_hidden_state
        torch.testing.assert_close(ours[mask.bool()], ref[mask.bool()], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(pred(ours)[..., :30522], hf.cls(ref), rtol=1e-4, atol=1e-4)


def test_bert_mapping_errors():
    with pytest.raises(InitError):
        bert_state_from_hf({"classifier.weight": torch.zeros(2)})
    model = create_model(get_arch_config("blip-tiny", "caption", image_size=32))
    bad = {"bert.encoder.layer.0.attention.self.query.weight": torch.zeros(5, 5)}
    with pytest.raises(InitError, match="do not fit"):
        load_bert_weights(model, bad)


def _timm_like_state(vit: torch.nn.Module) -> dict[str, torch.Tensor]:
    state = {k: v.clone() + 0.01 for k, v in vit.state_dict().items()}
    state["head.weight"] = torch.zeros(10, vit.pos_embed.shape[-1])
    state["head.bias"] = torch.zeros(10)
    return state


def test_vit_weights_deit_style_with_classifier_and_distillation_token():
    model = create_model(get_arch_config("blip-tiny", "pretrain", image_size=32))
    src = _timm_like_state(model.visual_encoder)
    report = load_vit_weights(model.visual_encoder, {"model": src})
    assert "head.weight" in report.ignored and not report.random
    for k, v in model.visual_encoder.state_dict().items():
        assert torch.equal(v, src[k]), k
    # a distilled DeiT has [CLS, DIST, patches] position rows; the DIST row is dropped
    dist = dict(src)
    dist["dist_token"] = torch.zeros(1, 1, src["cls_token"].shape[-1])
    dist["pos_embed"] = torch.cat(
        [src["pos_embed"][:, :1], torch.full_like(src["pos_embed"][:, :1], 9.0), src["pos_embed"][:, 1:]], dim=1
    )
    load_vit_weights(model.visual_encoder, dist)
    assert torch.equal(model.visual_encoder.pos_embed, src["pos_embed"])
    # another image size: the position grid is resized bicubically
    big = create_model(get_arch_config("blip-tiny", "pretrain", image_size=48))
    load_vit_weights(big.visual_encoder, src)
    assert big.visual_encoder.pos_embed.shape[1] == 1 + 36
    assert torch.equal(big.visual_encoder.pos_embed[:, 0], src["pos_embed"][:, 0])


def test_vit_weights_from_a_jax_npz(tmp_path):
    """Write a tiny ViT in Google's .npz layout (the inverse of timm's ``_load_weights``) and read it back."""
    model = create_model(get_arch_config("blip-tiny", "pretrain", image_size=32))
    vit = model.visual_encoder
    s = {k: v.detach().numpy() for k, v in _timm_like_state(vit).items()}
    d = vit.pos_embed.shape[-1]
    heads = vit.cfg.num_heads
    w = {
        "embedding/kernel": s["patch_embed.proj.weight"].transpose(2, 3, 1, 0),
        "embedding/bias": s["patch_embed.proj.bias"],
        "cls": s["cls_token"],
        "Transformer/posembed_input/pos_embedding": s["pos_embed"],
        "Transformer/encoder_norm/scale": s["norm.weight"],
        "Transformer/encoder_norm/bias": s["norm.bias"],
    }
    for i in range(len(vit.blocks)):
        b, bp = f"blocks.{i}.", f"Transformer/encoderblock_{i}/"
        mha = bp + "MultiHeadDotProductAttention_1/"
        w[bp + "LayerNorm_0/scale"], w[bp + "LayerNorm_0/bias"] = s[b + "norm1.weight"], s[b + "norm1.bias"]
        w[bp + "LayerNorm_2/scale"], w[bp + "LayerNorm_2/bias"] = s[b + "norm2.weight"], s[b + "norm2.bias"]
        qkv_w, qkv_b = s[b + "attn.qkv.weight"], s[b + "attn.qkv.bias"]
        for j, n in enumerate(("query", "key", "value")):
            w[f"{mha}{n}/kernel"] = qkv_w[j * d : (j + 1) * d].T.reshape(d, heads, d // heads)
            w[f"{mha}{n}/bias"] = qkv_b[j * d : (j + 1) * d].reshape(heads, d // heads)
        w[mha + "out/kernel"] = s[b + "attn.proj.weight"].T.reshape(heads, d // heads, d)
        w[mha + "out/bias"] = s[b + "attn.proj.bias"]
        for r in range(2):
            w[f"{bp}MlpBlock_3/Dense_{r}/kernel"] = s[f"{b}mlp.fc{r + 1}.weight"].T
            w[f"{bp}MlpBlock_3/Dense_{r}/bias"] = s[f"{b}mlp.fc{r + 1}.bias"]
    path = tmp_path / "vit.npz"
    np.savez(path, **w)
    state = vit_state_from_npz(path)
    assert set(state) == set(vit.state_dict())
    for k, v in state.items():
        np.testing.assert_array_equal(v.numpy(), s[k], err_msg=k)
    report = load_vit_weights(vit, str(path))
    assert not report.random


def test_fine_tuning_init_from_a_pretrain_checkpoint(tmp_path):
    """NLVR2 gets the single cross-attention copied into both of its own; retrieval keeps the pre-training queues."""
    from openblip.checkpoint import save_official
    from openblip.train.objectives import PretrainObjective, RetrievalObjective

    torch.manual_seed(0)
    pre = create_model(get_arch_config("blip-tiny", "pretrain", image_size=32))
    obj = PretrainObjective(pre, queue_size=8)
    with torch.no_grad():
        obj.image_queue.normal_()
    path = tmp_path / "pre.pth"
    save_official(pre, path)
    raw = torch.load(path, weights_only=True)
    raw["model"].update({k: v for k, v in obj.state_dict().items()})
    torch.save(raw, path)

    nlvr = create_model(get_arch_config("blip-tiny", "nlvr", image_size=32, nlvr_merge_from_layer=1))
    report = init_from_blip(nlvr, path)
    src = pre.text_encoder.encoder.layer[0].crossattention
    dst = nlvr.text_encoder.encoder.layer[0].crossattention
    for twin in (dst.self0, dst.self1):
        assert torch.equal(twin.query.weight, src.self.query.weight) and torch.equal(
            twin.value.bias, src.self.value.bias
        )
    assert torch.equal(dst.output.dense0.weight, src.output.dense.weight)
    assert torch.equal(dst.output.dense1.weight, src.output.dense.weight)
    assert torch.equal(dst.output.LayerNorm.weight, src.output.LayerNorm.weight)
    assert any(k.startswith("cls_head.") for k in report.missing)
    assert any("merge_layer" in k for k in report.missing)

    ret = create_model(get_arch_config("blip-tiny", "retrieval", image_size=32))
    report = init_from_blip(ret, path)
    assert torch.equal(ret.visual_encoder.pos_embed, pre.visual_encoder.pos_embed)
    robj = RetrievalObjective(ret, queue_size=8)
    rep = robj.load_training_state(report.training_state, strict=False)
    assert "idx_queue" in rep.missing and torch.equal(robj.image_queue, obj.image_queue)

    wrong = create_model(get_arch_config("blip-tiny", "retrieval", image_size=32, embed_dim=8))
    with pytest.raises(InitError, match="do not fit"):
        init_from_blip(wrong, path)


def test_sincos_pos_embed_is_the_2d_table_and_stays_a_parameter():
    """``sincos_pos_embed_``: [CLS] row zero; patch (row r, column c) in PatchEmbed's row-major order holds
    ``sin(c w), cos(c w), sin(r w), cos(r w)`` with ``w_k = 10000^(-k / (D/4))``; it stays a learned parameter; the
    demo's model starts from it (and ``pos_init="timm"`` keeps the original's random start)."""
    from openblip.config import VisionConfig
    from openblip.demo.settings import preset_config
    from openblip.demo.train import build_pretrain_model
    from openblip.models.vision import VisionTransformer
    from openblip.train.init_weights import sincos_pos_embed_

    vit = sincos_pos_embed_(
        VisionTransformer(VisionConfig(image_size=32, patch_size=8, width=16, depth=1, num_heads=2))
    )
    pos = vit.pos_embed[0].detach().double()
    assert pos.shape == (17, 16) and vit.pos_embed.requires_grad
    assert torch.equal(pos[0], torch.zeros(16))
    w = 10000.0 ** (-torch.arange(4, dtype=torch.float64) / 4)
    for r, c in [(0, 0), (0, 3), (2, 1), (3, 3)]:
        want = torch.cat([(c * w).sin(), (c * w).cos(), (r * w).sin(), (r * w).cos()])
        torch.testing.assert_close(pos[1 + 4 * r + c], want, rtol=0, atol=1e-6)
    assert len({tuple(row.tolist()) for row in pos[1:]}) == 16  # every patch position distinct
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_pos_embed_(VisionTransformer(VisionConfig(image_size=16, patch_size=8, width=6, depth=1, num_heads=2)))
    small = {"vision_width": 16, "text_width": 16, "num_heads": 2, "embed_dim": 8, "vision_depth": 1}
    cfg = preset_config("default", **small)
    assert cfg.pos_init == "sincos" and preset_config("long").pos_init == "sincos"
    demo = build_pretrain_model(cfg).visual_encoder.pos_embed[0].detach()
    torch.testing.assert_close(
        demo[1:].double(),
        sincos_pos_embed_(VisionTransformer(cfg.blip_config().vision)).pos_embed[0, 1:].detach().double(),
    )
    quick = preset_config("quick", **small)  # --quick keeps timm's N(0, 0.02) start (measured better at 300 steps)
    assert quick.pos_init == "timm"
    timm = build_pretrain_model(quick).visual_encoder.pos_embed.detach()
    assert 0.015 < float(timm.std()) < 0.025  # trunc_normal(std=0.02)
    with pytest.raises(ValueError, match="pos_init"):
        build_pretrain_model(cfg.replace(pos_init="learned"))
