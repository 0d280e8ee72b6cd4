"""The training loop: optimizer and schedules, sampling, checkpoints, exact resume, DDP, NaN and bad-data handling.

The end-to-end runs use the recipes' smoke variants (blip-tiny at 32 px on a tiny synthetic world) in a
subprocess, the way users run them (``python -m openblip.train.main`` / ``torchrun``).
"""

from __future__ import annotations

import json
import math
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from openblip.config import get_arch_config
from openblip.models.blip import create_model
from openblip.train.checkpointing import (
    atomic_torch_save,
    capture_rng_state,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from openblip.train.data import GlobalBatchSampler, PerSampleSeeded, sample_seed
from openblip.train.optim import Schedule, build_optimizer, cosine_lr, cosine_step_lr, step_lr, warmup_lr
from openblip.train.recipes._common import SMOKE_WORLD

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------------------
# fixtures and helpers


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    from openblip.data.synthetic import generate_world

    root = tmp_path_factory.mktemp("world")
    generate_world(root, **SMOKE_WORLD)
    return root


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    for key in ("OPENBLIP_TRAIN_NAN_AT_STEP", "OPENBLIP_TRAIN_CRASH_AFTER_STEP", "WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(key, None)
    env.update(extra)
    return env


def train(args: list[str], env: dict[str, str] | None = None, timeout: int = 240) -> subprocess.CompletedProcess:
    """``python -m openblip.train.main ARGS`` in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "openblip.train.main", *args],
        env=env or _env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def torchrun(args: list[str], nproc: int = 2, timeout: int = 300) -> subprocess.CompletedProcess:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc_per_node={nproc}",
            "--master_addr=127.0.0.1",
            f"--master_port={port}",
            "-m",
            "openblip.train.main",
            *args,
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def _ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-6000:]}"
    )


def step_records(out: Path) -> list[dict]:
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in recs if "event" not in r]


def assert_equal_tree(a, b, path: str = "") -> None:
    """``torch.equal`` on every tensor, ``==`` on everything else, recursively."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), f"tensor differs at {path}"
    elif isinstance(a, dict):
        assert set(a) == set(b), f"keys differ at {path}: {set(a) ^ set(b)}"
        for k in a:
            assert_equal_tree(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"length differs at {path}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_equal_tree(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"value differs at {path}: {a!r} != {b!r}"


# ------------------------------------------------------------------------------------------------------------
# optimizer and schedules


def test_weight_decay_applies_to_every_parameter():
    torch.manual_seed(0)
    model = create_model(get_arch_config("blip-tiny", "retrieval", image_size=32))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = build_optimizer(model, lr=1e-2, weight_decay=0.05)
    assert len(opt.param_groups) == 1
    group = opt.param_groups[0]
    assert group["weight_decay"] == 0.05 and group["betas"] == (0.9, 0.999) and group["eps"] == 1e-8
    assert {id(p) for p in group["params"]} == {id(p) for p in params}
    # with zero gradients the only change is the decoupled decay p <- p * (1 - lr * wd), on every parameter
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in params:
        p.grad = torch.zeros_like(p)
    opt.step()
    names = dict(model.named_parameters())
    for name in (
        "temp",
        "visual_encoder.pos_embed",
        "visual_encoder.cls_token",
        "visual_encoder.norm.weight",
        "visual_encoder.blocks.0.attn.qkv.bias",
        "text_encoder.embeddings.LayerNorm.bias",
        "itm_head.bias",
    ):
        assert name in names
    for name, p in names.items():
        torch.testing.assert_close(p.detach(), before[name] * (1 - 1e-2 * 0.05), rtol=0, atol=1e-7, msg=name)


def test_build_optimizer_skips_frozen_parameters():
    lin = torch.nn.Linear(3, 3)
    frozen = torch.nn.Linear(3, 3).requires_grad_(False)
    opt = build_optimizer(torch.nn.ModuleList([lin, frozen]), lr=1.0)
    assert {id(p) for p in opt.param_groups[0]["params"]} == {id(lin.weight), id(lin.bias)}
    with pytest.raises(ValueError):
        build_optimizer(frozen, lr=1.0)


def test_schedule_formulas_match_the_original():
    # cosine_lr_schedule (fine-tuning, per epoch)
    assert cosine_lr(0, 5, 1e-5, 0) == pytest.approx(1e-5)
    assert cosine_lr(5, 5, 1e-5, 0) == pytest.approx(0.0, abs=1e-20)
    assert cosine_lr(2, 6, 1e-5, 0) == pytest.approx(1e-5 * 0.5 * (1 + math.cos(math.pi * 2 / 6)))
    # warmup_lr_schedule (pre-training epoch 0): 1e-6 -> 3e-4 over 3000 steps, then flat
    assert warmup_lr(0, 3000, 1e-6, 3e-4) == pytest.approx(1e-6)
    assert warmup_lr(1500, 3000, 1e-6, 3e-4) == pytest.approx(1e-6 + (3e-4 - 1e-6) / 2)
    assert warmup_lr(3000, 3000, 1e-6, 3e-4) == pytest.approx(3e-4)
    assert warmup_lr(10_000, 3000, 1e-6, 3e-4) == pytest.approx(3e-4)
    # step_lr_schedule (pre-training later epochs): max(min_lr, init * 0.9 ** epoch)
    assert step_lr(1, 3e-4, 1e-6, 0.9) == pytest.approx(2.7e-4)
    assert step_lr(19, 3e-4, 1e-6, 0.9) == pytest.approx(3e-4 * 0.9**19)
    assert step_lr(100, 3e-4, 1e-6, 0.9) == pytest.approx(1e-6)
    # per-step cosine with warm-up
    assert cosine_step_lr(0, 100, 1.0, 0.0, warmup_steps=10, warmup_lr=0.0) == 0.0
    assert cosine_step_lr(5, 100, 1.0, 0.0, warmup_steps=10, warmup_lr=0.0) == pytest.approx(0.5)
    assert cosine_step_lr(10, 100, 1.0, 0.0, warmup_steps=10) == pytest.approx(1.0)
    assert cosine_step_lr(100, 100, 1.0, 0.1, warmup_steps=10) == pytest.approx(0.1)


def test_schedule_object_and_state():
    pre = Schedule("pretrain", init_lr=3e-4, min_lr=1e-6, max_epoch=20, warmup_steps=3000, warmup_lr=1e-6)
    assert pre.lr(0, 0, 0) == pytest.approx(1e-6)
    assert pre.lr(0, 3000, 3000) == pytest.approx(3e-4)
    assert pre.lr(2, 0, 99_999) == pytest.approx(3e-4 * 0.81)
    fine = Schedule("cosine_epoch", init_lr=1e-5, max_epoch=5)
    assert [fine.lr(e, 7, 123) for e in range(2)] == [pytest.approx(1e-5), pytest.approx(cosine_lr(1, 5, 1e-5))]
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1.0)
    assert fine.apply(opt, 1, 0, 0) == opt.param_groups[0]["lr"] == fine.last_lr
    other = Schedule()
    other.load_state_dict(fine.state_dict())
    assert other == fine and other.differences(fine.state_dict()) == []
    assert Schedule("cosine_epoch", init_lr=2e-5).differences(fine.state_dict())
    with pytest.raises(ValueError):
        Schedule("linear")


# ------------------------------------------------------------------------------------------------------------
# sampling


def test_global_batches_do_not_depend_on_the_number_of_processes():
    one = list(GlobalBatchSampler(50, 8, world_size=1, rank=0, seed=3, epoch=2))
    two = [list(GlobalBatchSampler(50, 4, world_size=2, rank=r, seed=3, epoch=2)) for r in range(2)]
    assert len(one) == 50 // 8 == len(two[0]) == len(two[1])
    for step, batch in enumerate(one):
        assert two[0][step] + two[1][step] == batch  # each rank: its contiguous slice of the global batch
        assert all(e == 2 for e, _ in batch)
    assert len({i for b in one for _, i in b}) == 48  # a permutation, last incomplete batch dropped
    # another epoch or seed: another order; resuming skips whole global batches
    assert list(GlobalBatchSampler(50, 8, seed=3, epoch=3))[0] != one[0]
    assert list(GlobalBatchSampler(50, 8, seed=3, epoch=2, start_batch=4)) == one[4:]
    assert len(GlobalBatchSampler(50, 8, seed=3, epoch=2, start_batch=4)) == 2


def test_an_epoch_longer_than_the_data_repeats_the_permutation():
    # pre-training on a LAION shard smaller than the first: the epoch keeps its length, as DistributedSampler pads
    batches = list(GlobalBatchSampler(10, 4, seed=1, epoch=0, num_batches=5))
    flat = [i for b in batches for _, i in b]
    assert len(batches) == 5 and all(len(b) == 4 for b in batches)
    assert sorted(flat[:10]) == list(range(10)) and flat[10:] == flat[:10]
    assert batches[:2] == list(GlobalBatchSampler(10, 4, seed=1, epoch=0))  # the complete batches are unchanged
    with pytest.raises(ValueError, match="empty"):
        list(GlobalBatchSampler(0, 4, num_batches=1))


def test_per_sample_seeding_is_position_independent_and_keeps_the_caller_rng():
    class Noise(torch.utils.data.Dataset):
        def __len__(self):
            return 10

        def __getitem__(self, i):
            return torch.rand(3)

    ds = PerSampleSeeded(Noise(), seed=5)
    torch.manual_seed(123)
    expected_next = torch.rand(2)
    torch.manual_seed(123)
    a = ds[(1, 4)]
    assert torch.equal(torch.rand(2), expected_next)  # the caller's torch stream is untouched
    assert torch.equal(ds[(1, 4)], a)
    assert not torch.equal(ds[(2, 4)], a) and not torch.equal(ds[(1, 5)], a)
    assert sample_seed(5, 1, 4) != sample_seed(6, 1, 4)


# ------------------------------------------------------------------------------------------------------------
# checkpoint files


def test_rng_state_roundtrip():
    gen = torch.Generator().manual_seed(7)
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    state = capture_rng_state({"g": gen})
    first = (random.random(), np.random.rand(), torch.rand(1), torch.rand(1, generator=gen))
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    gen.manual_seed(9)
    restore_rng_state(state, {"g": gen})
    again = (random.random(), np.random.rand(), torch.rand(1), torch.rand(1, generator=gen))
    assert first[:2] == again[:2] and torch.equal(first[2], again[2]) and torch.equal(first[3], again[3])


def test_checkpoints_are_atomic_weights_only_and_pruned(tmp_path):
    d = tmp_path / "checkpoints"
    state = {"model": {"w": torch.ones(2)}, "rng": [capture_rng_state()], "config": {"a": [1, 2]}, "metrics": {}}
    for step in (1, 2, 3, 4):
        save_checkpoint(d, {**state, "global_step": step}, keep_last=2)
    assert [p.name for p in list_checkpoints(d)] == ["checkpoint_00000003.pt", "checkpoint_00000004.pt"]
    assert latest_checkpoint(d).name == "checkpoint_00000004.pt" == latest_checkpoint(tmp_path).name
    loaded = load_checkpoint(d)  # weights_only=True inside
    assert loaded["global_step"] == 4 and torch.equal(loaded["model"]["w"], torch.ones(2))
    assert not [p for p in d.iterdir() if p.name.endswith(".tmp")]
    # a write that fails leaves the previous files untouched and no temporary file behind

    class Boom:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        atomic_torch_save({"x": Boom()}, d / "checkpoint_00000005.pt")
    assert latest_checkpoint(d).name == "checkpoint_00000004.pt"
    assert not [p for p in d.iterdir() if p.name.endswith(".tmp")]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "empty")
    bad = tmp_path / "plain.pt"
    torch.save({"not": "ours"}, bad)
    with pytest.raises(ValueError):
        load_checkpoint(bad)


# ------------------------------------------------------------------------------------------------------------
# end to end


def test_exact_resume_after_a_hard_kill(world, tmp_path):
    """Deterministic CPU pre-training (ITC + ITM + LM with queues): a process killed right after the step-5
    checkpoint (``os._exit``, no cleanup) and resumed for 5 more steps -- across an epoch boundary -- ends with
    bit-identical weights, momentum encoders, queues, optimizer state, RNG states and losses as an uninterrupted
    10-step run."""
    common = [
        "--recipe",
        "pretrain",
        "--variant",
        "smoke",
        "--data-root",
        str(world),
        "--deterministic",
        "--save-every",
        "5",
        "--steps",
        "10",
    ]
    full, part = tmp_path / "full", tmp_path / "part"
    _ok(train([*common, "--out", str(full)]))
    crashed = train([*common, "--out", str(part)], env=_env(OPENBLIP_TRAIN_CRASH_AFTER_STEP="5"))
    assert crashed.returncode == 86, crashed.stderr[-3000:]
    assert [p.name for p in list_checkpoints(part / "checkpoints")] == ["checkpoint_00000005.pt"]
    assert not (part / "model").exists()
    resumed = train(["--recipe", "pretrain", "--variant", "smoke", "--out", str(part), "--resume"])
    _ok(resumed)
    assert "resuming from" in resumed.stderr

    a = load_checkpoint(full / "checkpoints" / "checkpoint_00000010.pt")
    b = load_checkpoint(part / "checkpoints" / "checkpoint_00000010.pt")
    assert a["epoch"] == b["epoch"] == 1 and a["batches_done"] == b["batches_done"] == 2
    for key in ("model", "objective", "optimizer", "schedule", "rng", "global_step", "rank_fingerprints"):
        assert_equal_tree(a[key], b[key], key)
    assert {
        "visual_encoder_m.pos_embed",
        "text_encoder_m.embeddings.word_embeddings.weight",
        "image_queue",
        "text_queue",
        "queue_ptr",
    } <= set(a["objective"])
    assert a["optimizer"]["state"], "optimizer moments must be saved"
    # the final models too, and the logged losses of every step
    from safetensors.torch import load_file

    assert_equal_tree(load_file(full / "model" / "model.safetensors"), load_file(part / "model" / "model.safetensors"))
    fa, fb = step_records(full), step_records(part)
    assert [r["step"] for r in fb] == list(range(1, 11))
    for ra, rb in zip(fa, fb):
        assert {k: ra[k] for k in ("loss", "loss_ita", "loss_itm", "loss_lm", "lr", "alpha")} == {
            k: rb[k] for k in ("loss", "loss_ita", "loss_itm", "loss_lm", "lr", "alpha")
        }


def test_two_process_caption_matches_one_process(world, tmp_path):
    """torchrun with 2 gloo processes x batch 2 follows the 1-process batch-4 loss trajectory within 1e-5.

    Dropout is switched off (``text_dropout=0``): per-rank dropout masks cannot reproduce one process's mask.
    The LM loss is normalised by the global token count across ranks (openblip.train.steps)."""
    common = [
        "--recipe",
        "caption_coco",
        "--variant",
        "smoke",
        "--data-root",
        str(world),
        "--steps",
        "6",
        "--set",
        "text_dropout=0",
        "--set",
        "lr=0.0005",
    ]
    ddp = torchrun([*common, "--batch-size", "2", "--out", str(tmp_path / "ddp")])
    _ok(ddp)
    _ok(train([*common, "--batch-size", "4", "--out", str(tmp_path / "single")]))
    a, b = step_records(tmp_path / "ddp"), step_records(tmp_path / "single")
    assert len(a) == len(b) == 6
    for ra, rb in zip(a, b):
        assert abs(ra["loss"] - rb["loss"]) < 1e-5, (ra, rb)
    assert a[-1]["loss"] < a[0]["loss"]
    ck = load_checkpoint(tmp_path / "ddp" / "checkpoints")
    assert ck["world_size"] == 2 and len(ck["rng"]) == 2
    assert ck["rank_fingerprints"][0] == ck["rank_fingerprints"][1]


def test_two_process_pretrain_keeps_queues_identical(world, tmp_path):
    """Pre-training under torchrun: completes, and every rank holds the same weights, momentum encoders and queues
    (all-gathered enqueue). Its trajectory is *not* compared with one process: ITC uses the local momentum
    features + queue and ITM negatives come from each rank's local batch, as in the original."""
    out = tmp_path / "pre"
    _ok(
        torchrun(
            [
                "--recipe",
                "pretrain",
                "--variant",
                "smoke",
                "--data-root",
                str(world),
                "--batch-size",
                "2",
                "--steps",
                "6",
                "--out",
                str(out),
            ]
        )
    )
    ck = load_checkpoint(out / "checkpoints")
    assert ck["global_step"] == 6 and ck["world_size"] == 2
    prints = ck["rank_fingerprints"]
    assert prints[0]["objective"] == prints[1]["objective"] and prints[0]["model"] == prints[1]["model"]
    assert int(ck["objective"]["queue_ptr"]) == (6 * 4) % 16  # global batch 4 enqueued per step
    import openblip

    assert type(openblip.load(out / "model")).__name__ == "BlipPretrain"


@pytest.mark.parametrize("recipe", ["caption_coco", "pretrain"])
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(world, tmp_path, recipe):
    out = tmp_path / recipe
    proc = train(
        ["--recipe", recipe, "--variant", "smoke", "--data-root", str(world), "--save-every", "2", "--out", str(out)],
        env=_env(OPENBLIP_TRAIN_NAN_AT_STEP="4"),
    )
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "non-finite" in proc.stderr and "at step 4" in proc.stderr
    if recipe == "caption_coco":
        assert "loss=nan" in proc.stderr and "loss_lm=nan" in proc.stderr
    else:  # NaN images break hard-negative sampling before a loss exists: reported as non-finite input
        assert "input images" in proc.stderr
    assert "checkpoint_00000002.pt" in proc.stderr
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["checkpoint_00000002.pt"]
    ck = load_checkpoint(out / "checkpoints")
    assert ck["global_step"] == 2
    assert all(bool(torch.isfinite(t).all()) for t in ck["model"].values() if t.is_floating_point())
    assert [r["step"] for r in step_records(out)] == [1, 2, 3]
    assert not (out / "model").exists()


def test_bad_images_are_skipped_and_counted_or_fatal_with_strict(world, tmp_path):
    anns = json.loads((world / "annotations" / "caption_train.json").read_text())
    anns.insert(3, {"image": "images/train/missing_scene.png", "caption": "a red circle", "image_id": "ghost"})
    bad = tmp_path / "bad_train.json"
    bad.write_text(json.dumps(anns))
    common = [
        "--recipe",
        "caption_coco",
        "--variant",
        "smoke",
        "--data-root",
        str(world),
        "--steps",
        "8",
        "--set",
        f'train_files=["{bad}"]',
    ]
    out = tmp_path / "skip"
    _ok(train([*common, "--out", str(out)]))
    recs = step_records(out)
    assert recs[-1]["failures"] >= 1 and recs[0]["failures"] <= recs[-1]["failures"]
    logged = [json.loads(x) for x in (out / "bad_images.rank0.jsonl").read_text().splitlines()]
    assert logged and logged[0]["path"].endswith("missing_scene.png")
    strict = train([*common, "--strict", "--out", str(tmp_path / "strict")])
    assert strict.returncode == 1
    assert "missing_scene.png" in strict.stderr and "bad image" in strict.stderr


def test_in_process_trainer_api_with_accumulation_bf16_and_grad_ckpt(world, tmp_path):
    """The Python API: grad accumulation consumes micro-batches, bf16 autocast and gradient checkpointing run,
    custom hooks get the model and their numbers land in metrics.jsonl."""
    from openblip.train import recipes
    from openblip.train.loop import Trainer

    calls = []

    class CountingHook:
        name = "probe"
        every_steps = 2
        at_epoch_end = False

        def __call__(self, model, *, step, epoch):
            calls.append((step, model.training))
            return {"steps_seen": step}

    from openblip.layers.linear import Linear

    linear_dtypes = []

    def record(module, args, output):
        if isinstance(module, Linear) and module.training:
            linear_dtypes.append(output.dtype)

    cfg = recipes.resolve_paths(recipes.get_config("caption_coco", "smoke"), world)
    cfg.update(grad_accum=2, bf16=True, grad_ckpt_layers=1, epochs=1, eval_kind=None)
    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        result = Trainer(cfg, tmp_path / "run", hooks=[CountingHook()], log=lambda m: None).run()
    finally:
        handle.remove()
    # bf16 really reaches the linear layers of the training steps (their oneDNN path must defer to autocast)
    assert linear_dtypes and set(linear_dtypes) == {torch.bfloat16}
    assert result.global_step == 32 // (4 * 2)  # 4 optimizer steps of 2 micro-batches
    assert calls == [(2, False), (4, False)]
    recs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["probe/steps_seen"] for r in recs if r.get("event") == "eval"] == [2.0, 4.0]
    assert all(math.isfinite(r["loss"]) for r in recs if "loss" in r)
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()


def _in_process(world, tmp_path, recipe, **overrides):
    from openblip.train import recipes
    from openblip.train.loop import Trainer

    cfg = recipes.resolve_paths(recipes.get_config(recipe, "smoke"), world)
    cfg.update(eval_kind=None, **overrides)
    return Trainer(cfg, tmp_path, log=lambda m: None).run(), cfg


def test_laion_shards_of_other_sizes_keep_the_epoch_length(world, tmp_path):
    """A later LAION shard smaller than the first one (which sets the epoch length) used to end the epoch early
    with a bare StopIteration; now the epoch repeats its permutation, as the original's sampler pads."""
    from openblip.data.datasets import load_annotations
    from openblip.train import recipes

    records = load_annotations(recipes.resolve_paths(recipes.get_config("pretrain", "smoke"), world)["train_files"])
    laion = tmp_path / "laion"
    laion.mkdir()
    (laion / "a.json").write_text(json.dumps(records[:16]))
    (laion / "b.json").write_text(json.dumps(records[:4]))
    result, cfg = _in_process(world, tmp_path / "run", "pretrain", laion_path=str(laion), epochs=2)
    per_epoch = (len(records) + 16) // cfg["batch_size"]
    assert result.global_step == 2 * per_epoch


def test_gradient_accumulation_takes_one_ema_step_per_optimizer_step(world, tmp_path, monkeypatch):
    from openblip.train import objectives as O

    calls = {"ema": 0, "enqueue": 0}
    update, enqueue = O.MomentumQueues.momentum_update, O.MomentumQueues._enqueue

    def counting_update(self):
        calls["ema"] += 1
        return update(self)

    def counting_enqueue(self, *args):
        calls["enqueue"] += 1
        return enqueue(self, *args)

    monkeypatch.setattr(O.MomentumQueues, "momentum_update", counting_update)
    monkeypatch.setattr(O.MomentumQueues, "_enqueue", counting_enqueue)
    result, _ = _in_process(world, tmp_path / "run", "pretrain", grad_accum=2, max_steps=3)
    # the online weights change once per optimizer step; every micro-batch's features still enter the queue
    assert result.global_step == 3 and calls == {"ema": 3, "enqueue": 6}


def test_checkpoints_keep_the_model_once(world, tmp_path):
    _in_process(world, tmp_path / "cap", "caption_coco", max_steps=2, save_every=2)
    _in_process(world, tmp_path / "pre", "pretrain", max_steps=2, save_every=2)
    cap, pre = load_checkpoint(tmp_path / "cap" / "checkpoints"), load_checkpoint(tmp_path / "pre" / "checkpoints")
    assert cap["objective"] == {} and cap["model"]
    assert pre["objective"] and not [k for k in pre["objective"] if k.startswith("model.")]
    assert {"image_queue", "text_queue"} <= set(pre["objective"])
    assert any(k.startswith("visual_encoder_m.") for k in pre["objective"])


def test_missing_answer_list_skips_vqa_evaluation_up_front(world, tmp_path):
    run = train(
        ["--recipe", "vqa", "--variant", "smoke", "--data-root", str(world), "--out", str(tmp_path / "run")]
        + ["--set", "answer_list=nope.json", "--set", "test_at_end=true", "--steps", "1"]
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "nope.json" in run.stderr and "evaluation" in run.stderr
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()


def test_cli_train_command(world, tmp_path):
    from click.testing import CliRunner

    from openblip.cli import main

    runner = CliRunner()
    res = runner.invoke(main, ["train", "--help"])
    assert res.exit_code == 0 and "--recipe" in res.output and "--resume" in res.output
    res = runner.invoke(
        main,
        [
            "train",
            "--recipe",
            "vqa",
            "--variant",
            "smoke",
            "--data-root",
            str(world),
            "--lr",
            "0.001",
            "--set",
            "k_test=3",
            "--print-config",
        ],
    )
    assert res.exit_code == 0, res.output
    cfg = json.loads(res.output)
    assert cfg["lr"] == 0.001 and cfg["k_test"] == 3 and cfg["task"] == "vqa"
    assert cfg["train_files"] == [str(world / "annotations" / "vqa_train.json")]
    res = runner.invoke(main, ["train", "--recipe", "nlvr", "--variant", "bogus", "--out", str(tmp_path)])
    assert res.exit_code == 2


# ------------------------------------------------------------------------------------------------------------
# settings are checked before any work: exit 2 and one line naming the option or key


def _main(argv: list[str], capsys, monkeypatch) -> tuple[int, list[str], str]:
    """``openblip.train.main.main(argv)`` in this process: ``(exit code, stderr lines, stdout)``."""
    from openblip.train.main import main

    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "OPENBLIP_TRAIN_NAN_AT_STEP", "OPENBLIP_TRAIN_CRASH_AFTER_STEP"):
        monkeypatch.delenv(key, raising=False)
    capsys.readouterr()
    code = main(argv)
    captured = capsys.readouterr()
    return code, [ln for ln in captured.err.splitlines() if ln.strip()], captured.out


def _smoke(world: Path, out: Path, *extra: str) -> list[str]:
    return ["--recipe", "caption_coco", "--variant", "smoke", "--data-root", str(world), "--out", str(out), *extra]


def test_unknown_set_keys_are_rejected_with_the_closest_known_key(world, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    # a typo of max_steps used to be accepted and the whole recipe trained (and --print-config listed it)
    for extra in (["--print-config"], []):
        code, err, stdout = _main(_smoke(world, out, "--set", "max_step=1", *extra), capsys, monkeypatch)
        assert code == 2 and stdout == ""
        assert len(err) == 1 and err[0].startswith("error: --set max_step:") and "'max_steps'" in err[0], err
    assert not out.exists()
    code, err, _ = _main(_smoke(world, out, "--set", "zzz_nothing_like_it=1", "--print-config"), capsys, monkeypatch)
    assert code == 2 and len(err) == 1 and "zzz_nothing_like_it" in err[0] and "--print-config" in err[0]
    # keys of another recipe are unknown to this one (queue_size is retrieval/pre-training only)
    code, err, _ = _main(_smoke(world, out, "--set", "queue_size=8", "--print-config"), capsys, monkeypatch)
    assert code == 2 and "queue_size" in err[0]
    # known keys still work: the recipe's, the base config's and the trainer's optional ones; numbers given in a
    # form JSON does not read are converted, a single training file becomes a list
    sets = ["prompt=a photo of ", "max_steps=3", "warmup_steps=2", "lr=.0005", "train_files=x.json"]
    code, err, stdout = _main(
        _smoke(world, out, *[a for s in sets for a in ("--set", s)], "--print-config"), capsys, monkeypatch
    )
    assert code == 0, err
    cfg = json.loads(stdout)
    assert cfg["prompt"] == "a photo of " and cfg["max_steps"] == 3 and cfg["warmup_steps"] == 2
    assert cfg["lr"] == 0.0005 and cfg["train_files"] == [str(world / "annotations" / "x.json")]
    assert "max_step" not in cfg


@pytest.mark.parametrize(
    "extra, named",
    [
        (["--steps", "0"], "--steps"),  # used to train the whole recipe
        (["--steps", "-3"], "--steps"),  # used to save an untrained model and exit 0
        (["--epochs", "0"], "--epochs"),  # used to train nothing and exit 0
        (["--batch-size", "0"], "--batch-size"),  # ZeroDivisionError
        (["--grad-accum", "0"], "--grad-accum"),
        (["--num-workers", "-1"], "--num-workers"),  # DataLoader ValueError
        (["--steps", "two"], "--steps"),
        (["--lr", "-1"], "--lr"),  # ValueError from the optimizer
        (["--lr", "nan"], "--lr"),
        (["--device", "bogus"], "--device"),  # RuntimeError
        (["--set", "lr=abc"], "--set lr"),  # ValueError converting
        (["--set", "task=bogus"], "--set task"),  # ConfigError
        (["--set", "max_steps=0"], "--set max_steps"),
        (["--set", "epochs=-1"], "--set epochs"),
        (["--set", "batch_size=2.5"], "--set batch_size"),
        (["--set", "bf16=maybe"], "--set bf16"),
        (["--set", "schedule=linear"], "--set schedule"),
        (["--set", "arch=blip-huge"], "--set arch"),
        (["--set", "image_size=33"], "--set image_size"),
        (["--set", "min_scale=0"], "--set min_scale"),
    ],
)
def test_bad_settings_are_usage_errors_before_any_work(world, tmp_path, capsys, monkeypatch, extra, named):
    out = tmp_path / "run"
    code, err, stdout = _main(_smoke(world, out, *extra), capsys, monkeypatch)
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("error:") and named in err[0], err
    assert "Traceback" not in err[0] and stdout == ""
    assert not out.exists(), "nothing may be written for a usage error"
    # --print-config refuses the same settings (it used to print them)
    code, err, stdout = _main(_smoke(world, out, *extra, "--print-config"), capsys, monkeypatch)
    assert code == 2 and stdout == "" and len(err) == 1 and named in err[0]


def test_the_trainer_api_rejects_non_positive_counts(world, tmp_path):
    """``max_steps: 0`` used to mean "no budget" (the whole recipe) and a negative one an untrained final model."""
    from openblip.train import recipes
    from openblip.train.loop import Trainer, TrainingError

    base = recipes.resolve_paths(recipes.get_config("caption_coco", "smoke"), world)
    for key, value in (("max_steps", 0), ("max_steps", -3), ("epochs", 0), ("batch_size", 0), ("num_workers", -1)):
        out = tmp_path / f"{key}{value}"
        with pytest.raises(TrainingError, match=key):
            Trainer({**base, key: value}, out, log=lambda m: None).run()
        assert not (out / "model").exists() and not (out / "checkpoints").exists()


def test_resume_from_an_unreadable_checkpoint_is_one_line_naming_it(world, tmp_path, capsys, monkeypatch, recwarn):
    """A damaged newest checkpoint used to end ``--resume`` with an UnpicklingError traceback."""
    out = tmp_path / "run"
    ckpts = out / "checkpoints"
    ckpts.mkdir(parents=True)
    (ckpts / "checkpoint_00000002.pt").write_bytes(b"PK\x03\x04 a checkpoint cut short")
    newest = ckpts / "checkpoint_00000004.pt"
    newest.write_bytes(b"\x80\x04 not a checkpoint at all")
    code, err, _ = _main(_smoke(world, out, "--resume"), capsys, monkeypatch)
    assert code == 1, err
    assert len(err) == 1 and err[0].startswith("error: cannot read checkpoint") and str(newest) in err[0], err
    assert "checkpoint_00000002.pt" in err[0]  # the way out: the next older checkpoint
    assert not [w for w in recwarn if "pickle" in str(w.message)]  # torch's warning about the bad file is dropped
    assert not (out / "model").exists()


def test_every_task_and_eval_kind_the_settings_allow_is_dispatched(monkeypatch):
    """`openblip train` validates `task` / `eval_kind` against recipes.TRAIN_TASKS / EVAL_KINDS; each must reach
    its own objective / hook in the loop (a name added to one list but not the other would pass validation and
    fail after the model was built)."""
    from openblip.train import hooks, loop, objectives
    from openblip.train.recipes import EVAL_KINDS, TRAIN_TASKS

    def recorder(name):
        return type(name, (), {"__init__": lambda self, *a, **k: None})

    objective_names = ["PretrainObjective", "RetrievalObjective", "CaptionObjective", "VQAObjective", "NLVRObjective"]
    for name in objective_names:
        monkeypatch.setattr(objectives, name, recorder(name))
    cfg = {"queue_size": 8, "alpha": 0.4}
    built = [type(loop.build_objective({**cfg, "task": t}, model=None)).__name__ for t in TRAIN_TASKS]
    assert sorted(built) == sorted(objective_names)

    hook_names = ["RetrievalEval", "VQARankEval", "NLVREval", "CaptionLossEval", "CaptionMetricsEval"]
    for name in hook_names:
        monkeypatch.setattr(hooks, name, recorder(name))
    made = [loop.build_eval_hooks({"eval_kind": k, "val_file": "v.json", "answer_list": "a.json"}) for k in EVAL_KINDS]
    assert sorted(type(h[0]).__name__ for h in made) == sorted(hook_names) and all(len(h) == 1 for h in made)
    with pytest.raises(loop.TrainingError, match="unknown eval_kind 'x'; known: retrieval"):
        loop.build_eval_hooks({"eval_kind": "x", "val_file": "v.json"})
