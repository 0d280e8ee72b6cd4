"""Checkpoint layouts (official .pth, transformers directory, openblip directory): round trips, detection,
official-layout specifics, strict loading, refusal of code-running pickles, position-embedding resizing and
corrupt files. Everything uses tiny models; the base/large shapes are built on the meta device."""

from __future__ import annotations

import builtins
import dataclasses
import json
import os
import shlex

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from openblip.checkpoint import (
    CheckpointError,
    convert_checkpoint,
    detect_config,
    detect_task,
    load_model,
    read_checkpoint,
    save_hf,
    save_official,
    save_pretrained,
)
from openblip.config import BlipConfig, get_arch_config
from openblip.models.blip import DEC_ID, MODEL_CLASSES, SEP_ID, BlipBase, BlipCaption, BlipPretrain, create_model

TASKS = ["caption", "retrieval", "vqa", "nlvr", "feature", "pretrain"]
HF_TASKS = ["caption", "retrieval", "vqa"]
IMAGE = 32
TRAINING_KEYS_RETRIEVAL = ("image_queue", "text_queue", "idx_queue", "ptr_queue")


def tiny_config(task: str, **overrides) -> BlipConfig:
    """blip-tiny with head size 64 on both towers, like every released model.

    An official .pth carries no config and the loader assumes head size 64 when it detects one from shapes (head
    counts are not visible in tensor shapes), so with head size 64 a detected model computes exactly what the
    saved one did.
    """
    overrides.setdefault("nlvr_merge_from_layer", 1)
    cfg = get_arch_config("blip-tiny", task, **overrides)
    return cfg.replace(
        vision=dataclasses.replace(cfg.vision, width=64, num_heads=1),
        text=dataclasses.replace(cfg.text, hidden_size=64, num_heads=1, intermediate_size=96),
    )


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Seeded non-trivial weights (LayerNorm scale ~ 1 +- 0.2, everything else ~ N(0, 0.05), biases included)."""
    g = torch.Generator().manual_seed(seed)
    ln_scales = {id(m.weight) for m in model.modules() if isinstance(m, nn.LayerNorm)}
    with torch.no_grad():
        for p in model.parameters():
            noise = torch.randn(p.shape, generator=g)
            p.copy_(1.0 + 0.2 * noise if id(p) in ln_scales else 0.05 * noise)
    return model


def tiny(task: str, seed: int = 0, **overrides) -> BlipBase:
    return randomize_(create_model(tiny_config(task, **overrides)), seed).eval()


def assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    bad = [k for k in sa if sa[k].dtype != sb[k].dtype or not torch.equal(sa[k], sb[k])]
    assert not bad, bad


def inputs(size: int = IMAGE):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, size, size, generator=g)
    ids = torch.randint(1000, 30000, (2, 6), generator=g)
    ids[:, 0], ids[0, -1], ids[1, 3] = DEC_ID, SEP_ID, SEP_ID
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    return x, ids, mask


def run(model: BlipBase, size: int = IMAGE) -> list[torch.Tensor]:
    """Every task model's outputs on fixed inputs (padded texts)."""
    x, ids, mask = inputs(size)
    with torch.no_grad():
        task = model.config.task
        if task == "caption":
            return [model(x, ids, mask)]
        if task == "retrieval":
            return list(model(x, ids, mask))
        if task == "vqa":
            return [model(x, ids, mask, ids[:, :4], mask[:, :4])]
        if task == "nlvr":
            return [model(torch.cat([x, x.flip(-1)]), ids, mask)]
        if task == "feature":
            return [model(x, ids, mask), model.text_embeds(ids, mask)]
        image_embeds = model.encode_image(x)
        return [*model(x, ids, mask), model.decoder_logits(image_embeds, ids, mask)]


def assert_same_outputs(a: BlipBase, b: BlipBase) -> None:
    for u, v in zip(run(a), run(b), strict=True):
        assert torch.equal(u, v)


def official_state(path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


# ----------------------------------------------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize("task", HF_TASKS)
def test_official_to_openblip_to_hf_to_openblip_is_bit_identical(tmp_path, task):
    ref = tiny(task)
    save_official(ref, tmp_path / "model.pth")
    a = load_model(tmp_path / "model.pth")
    save_pretrained(a, tmp_path / "openblip")
    b = load_model(tmp_path / "openblip")
    save_hf(b, tmp_path / "hf")
    c = load_model(tmp_path / "hf")
    save_pretrained(c, tmp_path / "openblip2")
    d = load_model(tmp_path / "openblip2")
    for m in (a, b, c, d):
        assert type(m) is type(ref)
        assert_same_state(ref, m)
    if task == "retrieval":
        assert torch.equal(d.temp, ref.temp)


@pytest.mark.parametrize("task", TASKS)
def test_save_pretrained_from_pretrained_bit_identical(tmp_path, task):
    ref = tiny(task)
    ref.save_pretrained(str(tmp_path))
    cls = MODEL_CLASSES[task]
    loaded = cls.from_pretrained(str(tmp_path))
    assert type(loaded) is cls
    assert loaded.config == ref.config
    assert_same_state(ref, loaded)
    assert_same_outputs(ref, loaded)
    assert type(BlipBase.from_pretrained(str(tmp_path))) is cls
    if task == "pretrain":  # sharing survives the round trip
        assert loaded.text_decoder.bert.embeddings is loaded.text_encoder.embeddings
        assert loaded.text_decoder.cls.predictions.decoder.weight is (
            loaded.text_encoder.embeddings.word_embeddings.weight
        )
    if task != "caption":
        with pytest.raises(TypeError, match="not a BlipCaption"):
            BlipCaption.from_pretrained(str(tmp_path))


@pytest.mark.parametrize("task", TASKS)
def test_every_layout_loads_back_with_identical_outputs(tmp_path, task):
    ref = tiny(task)
    paths = [save_official(ref, tmp_path / "model.pth"), save_pretrained(ref, tmp_path / "openblip")]
    if task in HF_TASKS:
        paths.append(save_hf(ref, tmp_path / "hf"))
    else:
        with pytest.raises(CheckpointError, match="transformers has no BLIP class"):
            save_hf(ref, tmp_path / "hf")
    for path in paths:
        model, report = load_model(path, return_report=True)
        assert report.ok and not report.resized and not report.filled, (path, report)
        assert type(model) is type(ref) and model.config.task == task
        assert_same_state(ref, model)
        assert_same_outputs(ref, model)


def test_named_architecture_supplies_head_counts(tmp_path):
    """Shapes of a named architecture (here blip-tiny, 2 heads of 16) give its head counts and its name."""
    cfg = get_arch_config("blip-tiny", "caption")
    ref = randomize_(create_model(cfg)).eval()
    save_official(ref, tmp_path / "model.pth")
    detected = load_model(tmp_path / "model.pth")
    assert detected.config.arch == "blip-tiny"
    assert detected.config.vision.num_heads == 2 and detected.config.text.num_heads == 2
    assert_same_outputs(ref, detected)


def test_head_count_from_config_when_not_head_size_64(tmp_path):
    """Head counts are invisible in shapes: for an unnamed shape detection assumes head size 64; config= fixes it."""
    base = get_arch_config("blip-tiny", "caption")
    cfg = base.replace(arch="custom", text=dataclasses.replace(base.text, intermediate_size=96))  # heads of 16
    ref = randomize_(create_model(cfg)).eval()
    save_official(ref, tmp_path / "model.pth")
    detected = load_model(tmp_path / "model.pth")
    assert detected.config.arch == "custom"
    assert detected.config.vision.num_heads == 1 and detected.config.text.num_heads == 1
    assert_same_state(ref, detected)
    assert not torch.equal(run(ref)[0], run(detected)[0])
    given = load_model(tmp_path / "model.pth", config=cfg)
    assert_same_outputs(ref, given)
    cfg.to_json(tmp_path / "cfg.json")
    assert_same_outputs(ref, load_model(tmp_path / "model.pth", config=tmp_path / "cfg.json"))


@pytest.mark.parametrize("task", HF_TASKS)
def test_convert_checkpoint_every_direction(tmp_path, task):
    ref = tiny(task)
    if task == "retrieval":
        with torch.no_grad():
            ref.temp.fill_(0.0421)
    sources = {
        "official": save_official(ref, tmp_path / "src.pth"),
        "openblip": save_pretrained(ref, tmp_path / "src_openblip"),
        "hf": save_hf(ref, tmp_path / "src_hf"),
    }
    for src_layout, src in sources.items():
        for to in ("official", "openblip", "hf"):
            dst = tmp_path / f"{src_layout}_to_{to}" / ("model.pth" if to == "official" else "")
            out = convert_checkpoint(src, dst, to=to)
            raw = read_checkpoint(out)
            assert raw.layout == to
            model = load_model(out)
            assert_same_state(ref, model)
            assert_same_outputs(ref, model)
    with pytest.raises(ValueError, match="unknown target layout"):
        convert_checkpoint(sources["openblip"], tmp_path / "x", to="onnx")


def test_convert_checkpoint_without_hf_class_refuses(tmp_path):
    src = save_pretrained(tiny("nlvr"), tmp_path / "nlvr")
    with pytest.raises(CheckpointError, match="nlvr"):
        convert_checkpoint(src, tmp_path / "hf", to="hf")
    out = convert_checkpoint(src, tmp_path / "nlvr.pth", to="official")
    assert_same_state(tiny("nlvr"), load_model(out))


def test_temp_preserved_through_hf_and_filled_when_absent(tmp_path):
    ref = tiny("retrieval")
    with torch.no_grad():
        ref.temp.fill_(0.0531)
    save_hf(ref, tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["architectures"] == ["BlipForImageTextRetrieval"]
    assert data["itc_temp"] == pytest.approx(0.0531)
    model, report = load_model(tmp_path, return_report=True)
    assert torch.equal(model.temp, ref.temp) and not report.filled

    del data["itc_temp"]  # a transformers-made directory: no temperature anywhere
    (tmp_path / "config.json").write_text(json.dumps(data))
    model, report = load_model(tmp_path, return_report=True)
    assert model.temp.item() == pytest.approx(0.07)
    assert len(report.filled) == 1 and report.filled[0].startswith("temp")
    assert report.ok


def test_hf_safetensors_file_without_config_is_detected(tmp_path):
    ref = tiny("vqa")
    save_hf(ref, tmp_path / "hf")
    model = load_model(tmp_path / "hf" / "model.safetensors")
    assert model.config.task == "vqa"
    assert_same_state(ref, model)


# ----------------------------------------------------------------------------------------------------------------
# detection


@pytest.mark.parametrize("task", TASKS)
def test_detect_task(task):
    state = tiny(task).state_dict()
    assert detect_task(state) == task
    # training-only tensors do not change the answer
    extra = {f"visual_encoder_m.{k[len('visual_encoder.') :]}": v for k, v in state.items() if "visual_encoder." in k}
    assert detect_task({**state, **extra, "image_queue": torch.zeros(4, 8)}) == task


def test_detect_task_rejects_non_blip():
    with pytest.raises(CheckpointError, match="visual_encoder"):
        detect_task({"encoder.weight": torch.zeros(2)})


@pytest.mark.parametrize("task", TASKS)
def test_detect_config_recovers_architecture(task):
    merge = {"nlvr_merge_from_layer": 1} if task == "nlvr" else {}  # other tasks keep the default
    base = get_arch_config("blip-tiny", task, embed_dim=24, **merge)
    cfg = base.replace(
        arch="custom",
        vision=dataclasses.replace(base.vision, width=128, num_heads=2, depth=3, patch_size=8, image_size=48),
        text=dataclasses.replace(
            base.text, hidden_size=64, num_heads=1, num_layers=3, intermediate_size=96, max_position_embeddings=40
        ),
    )
    state = create_model(cfg).state_dict()
    detected = detect_config(state)
    assert detected.vision.image_size == 48  # from pos_embed: 1 + (48/8)^2 rows
    assert (detected.vision.width, detected.vision.depth, detected.vision.patch_size) == (128, 3, 8)
    assert (detected.text.hidden_size, detected.text.num_layers, detected.text.intermediate_size) == (64, 3, 96)
    if task == "nlvr":
        assert detected.nlvr_merge_from_layer == 1
    if task in ("retrieval", "pretrain"):
        assert detected.embed_dim == 24
    if task in ("caption", "vqa", "feature", "nlvr"):
        detected = detected.replace(embed_dim=24)  # no projection in these models: nothing to detect it from
    # the original's stochastic depth for the task: VQA and NLVR build their ViT-B with 0.1
    assert detected.vision.drop_path_rate == (0.1 if task in ("vqa", "nlvr") else 0.0)
    assert detected == cfg.replace(
        vision=dataclasses.replace(cfg.vision, drop_path_rate=detected.vision.drop_path_rate)
    )


def test_detect_config_nlvr_without_merge_layers():
    cfg = tiny_config("nlvr", nlvr_merge_from_layer=2)  # 2 layers: none merges
    assert detect_config(create_model(cfg).state_dict()).nlvr_merge_from_layer == 2


@pytest.mark.parametrize(
    ("arch", "task", "image_size", "heads"),
    [("blip-base", "caption", 384, 12), ("blip-base", "vqa", 480, 12), ("blip-large", "retrieval", 384, 16)],
)
def test_detect_released_architectures(arch, task, image_size, heads):
    cfg = get_arch_config(arch, task, image_size=image_size)
    with torch.device("meta"):  # shapes only: nothing to allocate or initialise
        state = create_model(cfg).state_dict()
    assert detect_task(state) == task
    detected = detect_config(state)
    assert detected.arch == arch
    assert detected.vision.num_heads == heads and detected.text.num_heads == 12
    assert detected.vision.image_size == image_size
    # the original's stochastic depth (training only): ViT-L always 0.1, ViT-B 0.1 in VQA and NLVR
    assert detected.vision.drop_path_rate == (0.1 if arch == "blip-large" or task == "vqa" else 0.0)
    assert detected.vision == dataclasses.replace(cfg.vision, drop_path_rate=detected.vision.drop_path_rate)
    assert detected.text == cfg.text


# ----------------------------------------------------------------------------------------------------------------
# official layout specifics


def test_official_wrapped_and_bare_state_dicts_load(tmp_path):
    ref = tiny("caption")
    save_official(ref, tmp_path / "wrapped.pth")
    state = official_state(tmp_path / "wrapped.pth")
    torch.save(state, tmp_path / "bare.pth")
    # what the training scripts write: {'model', 'optimizer', 'config', 'epoch'}
    optimizer = {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 1e-5, "params": [0]}]}
    torch.save(
        {"model": state, "optimizer": optimizer, "config": {"vit": "base", "image_size": 384}, "epoch": 4},
        tmp_path / "training.pth",
    )
    for name in ("wrapped.pth", "bare.pth", "training.pth"):
        assert_same_state(ref, load_model(tmp_path / name))


def test_official_position_ids_saved_checked_and_dropped(tmp_path):
    ref = tiny("pretrain")
    save_official(ref, tmp_path / "model.pth")
    state = official_state(tmp_path / "model.pth")
    pos_keys = sorted(k for k in state if k.endswith("embeddings.position_ids"))
    assert pos_keys == ["text_decoder.bert.embeddings.position_ids", "text_encoder.embeddings.position_ids"]
    assert torch.equal(state[pos_keys[0]], torch.arange(512)[None])  # persistent buffers in the original med.py
    model, report = load_model(tmp_path / "model.pth", return_report=True)
    assert report.ok
    assert not any(k.endswith("position_ids") for k in model.state_dict())

    bad = dict(state)
    bad["text_encoder.embeddings.position_ids"] = torch.arange(512)[None].flip(-1)
    torch.save({"model": bad}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="text_encoder.embeddings.position_ids"):
        load_model(tmp_path / "bad.pth")


@pytest.mark.parametrize("task", ["retrieval", "pretrain"])
def test_training_only_keys(tmp_path, task):
    ref = tiny(task)
    save_official(ref, tmp_path / "plain.pth")
    state = official_state(tmp_path / "plain.pth")
    training = {}
    for k, v in state.items():
        for module in ("visual_encoder", "text_encoder", "vision_proj", "text_proj"):
            if k.startswith(module + "."):
                training[f"{module}_m.{k[len(module) + 1 :]}"] = v.clone() + 1
    g = torch.Generator().manual_seed(0)
    training["image_queue"] = torch.randn(24, 8, generator=g)
    training["text_queue"] = torch.randn(24, 8, generator=g)
    if task == "retrieval":
        training["idx_queue"] = torch.full((1, 8), -100)
        training["ptr_queue"] = torch.zeros(1, dtype=torch.long)
    else:
        training["queue_ptr"] = torch.zeros(1, dtype=torch.long)
    torch.save({"model": {**state, **training}}, tmp_path / "full.pth")

    model, report = load_model(tmp_path / "full.pth", return_report=True)
    assert report.ok
    assert sorted(report.training_keys) == sorted(training)
    assert report.training_state == {}
    assert_same_state(ref, model)
    assert not any(name.split(".")[0].endswith("_m") for name in model.state_dict())

    _, report = load_model(tmp_path / "full.pth", for_training=True, return_report=True)
    assert sorted(report.training_state) == sorted(training)
    assert all(torch.equal(report.training_state[k], v) for k, v in training.items())


def test_pretrain_shared_tensors_under_both_prefixes(tmp_path):
    ref = tiny("pretrain")
    save_official(ref, tmp_path / "model.pth")
    state = official_state(tmp_path / "model.pth")
    shared = [
        "embeddings.word_embeddings.weight",
        "encoder.layer.0.crossattention.self.query.weight",
        "encoder.layer.1.intermediate.dense.bias",
        "encoder.layer.1.output.LayerNorm.weight",
    ]
    for name in shared:  # the official pretrain file stores the shared tensors twice
        assert torch.equal(state[f"text_encoder.{name}"], state[f"text_decoder.bert.{name}"])
    model = load_model(tmp_path / "model.pth")
    assert isinstance(model, BlipPretrain)
    assert_same_state(ref, model)
    assert model.text_decoder.bert.encoder.layer[0].crossattention is model.text_encoder.encoder.layer[0].crossattention

    # one stored copy is enough
    one_copy = {
        k: v
        for k, v in state.items()
        if not (k.startswith("text_decoder.bert.") and f"text_encoder.{k[len('text_decoder.bert.') :]}" in state)
        or ".attention." in k
    }
    one_copy.pop("text_decoder.cls.predictions.decoder.weight")
    assert len(one_copy) < len(state)
    torch.save({"model": one_copy}, tmp_path / "one_copy.pth")
    assert_same_state(ref, load_model(tmp_path / "one_copy.pth"))

    # copies that differ are an error, not a silent pick
    differ = dict(state)
    key = "text_decoder.bert.encoder.layer.0.crossattention.self.query.weight"
    differ[key] = differ[key] + 1e-3
    torch.save({"model": differ}, tmp_path / "differ.pth")
    with pytest.raises(CheckpointError, match="tied") as err:
        load_model(tmp_path / "differ.pth")
    assert key in str(err.value)


def test_tied_lm_head_copy_that_differs_raises(tmp_path):
    save_official(tiny("caption"), tmp_path / "model.pth")
    state = official_state(tmp_path / "model.pth")
    state["text_decoder.cls.predictions.decoder.weight"] = state["text_decoder.cls.predictions.decoder.weight"] * 2
    torch.save({"model": state}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="text_decoder.cls.predictions.decoder.weight"):
        load_model(tmp_path / "bad.pth")


# ----------------------------------------------------------------------------------------------------------------
# strict loading


MISSING = "visual_encoder.norm.weight"
EXTRA = "extra_head.weight"
WRONG = "text_decoder.cls.predictions.transform.dense.weight"


def _broken_checkpoints(tmp_path):
    ref = tiny("caption")
    save_official(ref, tmp_path / "model.pth")
    state = official_state(tmp_path / "model.pth")
    missing = {k: v for k, v in state.items() if k != MISSING}
    extra = {**state, EXTRA: torch.zeros(3)}
    wrong = {**state, WRONG: state[WRONG][:, :16].clone()}
    paths = {}
    for name, sd in (("missing", missing), ("extra", extra), ("wrong", wrong)):
        paths[name] = tmp_path / f"{name}.pth"
        torch.save({"model": sd}, paths[name])
    return ref, state, paths


def test_strict_loading_names_the_keys(tmp_path):
    _, _, paths = _broken_checkpoints(tmp_path)
    for name, key in (("missing", MISSING), ("extra", EXTRA), ("wrong", WRONG)):
        with pytest.raises(CheckpointError) as err:
            load_model(paths[name])
        assert key in str(err.value) and str(paths[name]) in str(err.value)
    with pytest.raises(CheckpointError, match=r"checkpoint \[64, 16\] vs model \[64, 64\]"):
        load_model(paths["wrong"])


def test_non_strict_loading_reports_and_loads_the_rest(tmp_path):
    ref, state, paths = _broken_checkpoints(tmp_path)

    model, report = load_model(paths["missing"], strict=False, return_report=True)
    assert report.missing == [MISSING] and not report.unexpected and not report.mismatched and not report.ok
    sd = model.state_dict()
    assert all(torch.equal(sd[k], state[k]) for k in sd if k != MISSING)

    model, report = load_model(paths["extra"], strict=False, return_report=True)
    assert report.unexpected == [EXTRA] and not report.missing
    assert_same_state(ref, model)

    model, report = load_model(paths["wrong"], strict=False, return_report=True)
    assert report.mismatched == [(WRONG, (64, 16), (64, 64))]
    sd = model.state_dict()
    assert not torch.equal(sd[WRONG], state[WRONG][:, :16]) and sd[WRONG].shape == (64, 64)  # left at init
    assert all(torch.equal(sd[k], state[k]) for k in sd if k != WRONG)


# ----------------------------------------------------------------------------------------------------------------
# refusing pickles that run code


class _RunsShell:
    def __init__(self, sentinel):
        self.sentinel = sentinel

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.sentinel))}",))


class _OpensFile:
    def __init__(self, sentinel):
        self.sentinel = sentinel

    def __reduce__(self):
        return (builtins.open, (str(self.sentinel), "w"))


@pytest.mark.parametrize("payload", [_RunsShell, _OpensFile])
@pytest.mark.parametrize("where", ["pth", "hf_bin"])
def test_malicious_pickle_is_refused(tmp_path, payload, where):
    sentinel = tmp_path / "SENTINEL"
    state = {"visual_encoder.cls_token": torch.zeros(1, 1, 8), "evil": payload(sentinel)}
    if where == "pth":
        path = tmp_path / "model.pth"
        torch.save({"model": state}, path)
    else:  # a transformers directory with a pickled pytorch_model.bin
        path = tmp_path / "hf"
        path.mkdir()
        (path / "config.json").write_text(
            json.dumps({"model_type": "blip", "architectures": ["BlipForConditionalGeneration"]})
        )
        torch.save(state, path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="refused") as err:
        load_model(path)
    assert "nothing in it was executed" in str(err.value)
    assert not sentinel.exists()

    # the file really is malicious: an unrestricted unpickler would have run it
    bin_path = path if where == "pth" else path / "pytorch_model.bin"
    torch.load(bin_path, weights_only=False)
    assert sentinel.exists()


# ----------------------------------------------------------------------------------------------------------------
# position-embedding interpolation


@pytest.mark.parametrize("layout", ["official", "openblip", "hf"])
def test_load_at_another_image_size_resizes_pos_embed(tmp_path, layout):
    ref = tiny("caption")
    path = {"official": save_official, "openblip": save_pretrained, "hf": save_hf}[layout](
        ref, tmp_path / ("model.pth" if layout == "official" else layout)
    )
    model, report = load_model(path, image_size=48, return_report=True)
    assert report.ok and len(report.resized) == 1 and "visual_encoder.pos_embed" in report.resized[0]
    assert model.config.vision.image_size == 48

    old = ref.visual_encoder.pos_embed.detach()  # [1, 1 + 4*4, D]
    new = model.visual_encoder.pos_embed.detach()
    assert new.shape == (1, 1 + 6 * 6, 64)
    assert torch.equal(new[:, 0], old[:, 0])  # the CLS row is kept as it is
    grid = old[:, 1:].reshape(1, 4, 4, 64).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(6, 6), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
    torch.testing.assert_close(new[:, 1:], expected.reshape(1, 36, 64), rtol=0, atol=1e-7)
    # every other tensor is loaded unchanged
    sd, ref_sd = model.state_dict(), ref.state_dict()
    assert all(torch.equal(sd[k], ref_sd[k]) for k in sd if k != "visual_encoder.pos_embed")

    logits = run(model, size=48)[0]
    assert logits.shape == (2, 6, 30524) and torch.isfinite(logits).all()
    with pytest.raises(ValueError, match="does not match"):
        run(model, size=IMAGE)


# ----------------------------------------------------------------------------------------------------------------
# corrupt and incomplete files


def test_corrupt_files_raise_checkpoint_error_naming_the_path(tmp_path):
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    empty_st = tmp_path / "empty.safetensors"
    empty_st.write_bytes(b"")

    save_pretrained(tiny("caption"), tmp_path / "truncated")
    weights = tmp_path / "truncated" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])

    save_official(tiny("caption"), tmp_path / "full.pth")
    cut = tmp_path / "cut.pth"
    cut.write_bytes((tmp_path / "full.pth").read_bytes()[:5000])

    no_config = tmp_path / "no_config"
    no_config.mkdir()
    save_file({"x": torch.zeros(1)}, str(no_config / "model.safetensors"))

    bad_json = tmp_path / "bad_json"
    bad_json.mkdir()
    (bad_json / "config.json").write_text("{not json")

    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text(json.dumps({"model_type": "blip", "architectures": ["BlipModel"]}))

    not_a_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], not_a_dict)

    cases = {
        empty: str(empty),
        empty_st: str(empty_st),
        tmp_path / "truncated": str(weights),
        cut: str(cut),
        no_config: str(no_config),
        bad_json: str(bad_json / "config.json"),
        no_weights: str(no_weights / "config.json"),
        not_a_dict: str(not_a_dict),
        tmp_path / "nowhere.pth": str(tmp_path / "nowhere.pth"),
    }
    for path, named in cases.items():
        with pytest.raises(CheckpointError) as err:
            load_model(path)
        assert named in str(err.value), (path, str(err.value))

    assert "config.json" in str(pytest.raises(CheckpointError, load_model, no_config).value)


def test_unsupported_hf_architecture_is_named(tmp_path):
    ref = tiny("caption")
    save_hf(ref, tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    data["architectures"] = ["BlipModel"]
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="BlipModel"):
        load_model(tmp_path)
    # an explicit task still reads it
    assert_same_state(ref, load_model(tmp_path, task="caption"))


@pytest.mark.parametrize(
    ("width", "arch", "expected"),
    [
        (768, "BlipForConditionalGeneration", 0.0),
        (768, "BlipForQuestionAnswering", 0.1),
        (1024, "BlipForImageTextRetrieval", 0.1),
    ],
)
def test_hf_configs_get_the_original_stochastic_depth(width, arch, expected):
    from openblip.convert.hf import from_hf_config

    vision = {"hidden_size": width, "intermediate_size": 4 * width, "num_attention_heads": width // 64}
    config, _ = from_hf_config({"architectures": [arch], "vision_config": vision})
    assert config.vision.drop_path_rate == expected
