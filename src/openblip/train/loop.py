"""The training loop: one :class:`Trainer` runs any recipe, on one process or under ``torchrun``.

What a run does (``Trainer(config, out_dir).run()``):

1. **Processes.** Under ``torchrun`` (``WORLD_SIZE > 1`` in the environment) it joins the process group from the
   ``env://`` variables -- NCCL on GPUs, gloo on CPUs -- and wraps the objective in
   :class:`~torch.nn.parallel.DistributedDataParallel` (``broadcast_buffers=False``: every rank updates the
   momentum encoders and the all-gathered queues identically). Without ``torchrun`` the same code runs in one
   process with no process group.
2. **Model.** Built from the recipe's architecture (``arch``, ``image_size``, ``drop_path_rate``,
   ``text_dropout``), then initialised from a BLIP checkpoint (``init``: fine-tuning) and/or from BERT and ViT
   checkpoints (``init_text``, ``init_vision``: pre-training from scratch); see :mod:`openblip.train.init_weights`.
   Every rank builds it under the same seed (identical weights and queues), then reseeds with ``seed + rank`` as
   the original scripts do. ``grad_ckpt_layers`` turns on gradient checkpointing of the last ViT blocks.
3. **Objective, optimizer, schedule.** :mod:`openblip.train.objectives` for the task; AdamW with weight decay on
   every parameter; the recipe's schedule (:mod:`openblip.train.optim`), set before every optimizer step.
4. **Data.** The recipe's dataset with BLIP's train transform, :class:`~openblip.train.data.GlobalBatchSampler`
   (a seeded permutation per epoch cut into global batches; each rank takes its contiguous slice) and
   :class:`~openblip.train.data.PerSampleSeeded` augmentation, so the samples of a step do not depend on the
   number of processes or loader workers. Bad images are skipped, counted (``failures`` in ``metrics.jsonl``)
   and listed in ``bad_images.rank<r>.jsonl``; ``strict`` makes the first one fatal (the error names the path).
5. **Steps.** ``grad_accum`` micro-batches per optimizer step (DDP ``no_sync`` on all but the last), optional
   bfloat16 autocast (``bf16``), optional gradient clipping (``clip_grad_norm``; the original has none). The loss
   components of every micro-batch are averaged over ranks; a non-finite value (or gradient norm) stops the run
   with :class:`NonFiniteLossError` naming the step and the components, before the optimizer touches the weights,
   and no checkpoint is written after it -- the last good checkpoint stays the newest.
6. **Logging.** ``metrics.jsonl`` (rank 0): one record per optimizer step (``step``, ``epoch``, ``lr``, ``loss``
   and each component, ``alpha`` where used, ``grad_norm``, ``images_per_s``, ``failures``), evaluation records
   (``event: eval``), and ``resume`` events. A tqdm bar on stderr when it is a terminal; TensorBoard scalars in
   ``tensorboard/`` when ``tensorboard: true`` and the package is installed (one line otherwise).
7. **Evaluation hooks** (:mod:`openblip.train.hooks`) every ``eval_every`` steps and at each epoch end, on
   rank 0, with all RNG states restored afterwards. ``best_metric`` (e.g. ``"val/r_mean"``, or a sum
   ``"val/cider+val/bleu4"``) keeps the best model in ``model_best/``, as the original keeps ``checkpoint_best``.
8. **Checkpoints** (:mod:`openblip.train.checkpointing`) every ``save_every`` steps, at every epoch end and at the
   end, keeping the newest ``keep_last``; then the final model in ``model/`` (``openblip.load(out / "model")``).
9. **Resume.** ``resume=True`` continues from the newest checkpoint in ``out_dir/checkpoints``: same epoch and
   position in it, same data order, same RNG states (python, numpy, torch, CUDA, the hard-negative generator) on
   every rank, same optimizer, schedule, momentum encoders and queues. With deterministic algorithms
   (``deterministic: true``) the resumed run is bit-identical to one that never stopped.

Fault injection for tests (environment variables, read at every step): ``OPENBLIP_TRAIN_NAN_AT_STEP=N`` makes
the images of step ``N`` NaN; ``OPENBLIP_TRAIN_CRASH_AFTER_STEP=N`` ends the process with ``os._exit(86)`` right
after step ``N`` (and its checkpoint, if one is due), as a hard kill would.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import inspect
import json
import math
import os
import random
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from openblip.config import get_arch_config
from openblip.models.blip import BlipBase, create_model
from openblip.train import hooks as hooks_mod
from openblip.train import steps
from openblip.train.checkpointing import (
    capture_rng_state,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from openblip.train.data import GlobalBatchSampler, PerSampleSeeded, _mix
from openblip.train.distributed import is_dist
from openblip.train.objectives import MomentumQueues
from openblip.train.optim import Schedule, build_optimizer
from openblip.train.recipes import EVAL_KINDS, TRAIN_TASKS

CRASH_EXIT_CODE = 86

#: config keys whose change on resume breaks bit-exact continuation (a warning is printed).
EXACTNESS_KEYS = (
    "task",
    "arch",
    "image_size",
    "batch_size",
    "grad_accum",
    "seed",
    "lr",
    "min_lr",
    "schedule",
    "warmup_steps",
    "warmup_lr",
    "lr_decay_rate",
    "weight_decay",
    "epochs",
    "queue_size",
    "alpha",
    "momentum",
    "min_scale",
    "randaug",
    "train_files",
    "bf16",
)


class TrainingError(RuntimeError):
    """The run cannot start or continue (bad configuration, too little data, ...)."""


class NonFiniteLossError(TrainingError):
    """A loss component or the gradient norm became NaN/inf; nothing was written after the last good step."""

    def __init__(
        self,
        step: int,
        epoch: int,
        batch: int,
        values: Mapping[str, float],
        last_checkpoint: str | None,
        what: str = "loss",
    ) -> None:
        self.step, self.epoch, self.batch = step, epoch, batch
        self.values = dict(values)
        self.last_checkpoint = last_checkpoint
        shown = ", ".join(f"{k}={v:.6g}" for k, v in values.items())
        where = f"step {step} (epoch {epoch}, batch {batch} of the epoch)"
        keep = f"last good checkpoint: {last_checkpoint}" if last_checkpoint else "no checkpoint had been written yet"
        super().__init__(f"non-finite {what} at {where}{': ' + shown if shown else ''}; training stopped, {keep}")


@dataclass
class TrainResult:
    """What :meth:`Trainer.run` did."""

    out_dir: Path
    global_step: int
    epoch: int
    last_checkpoint: Path | None
    final_model: Path | None
    evals: list[dict[str, Any]] = field(default_factory=list)
    last_record: dict[str, Any] | None = None


# ------------------------------------------------------------------------------------------------------------
# process setup


def init_distributed(device_type: str = "cpu", timeout_min: float = 120.0) -> tuple[int, int, int, bool]:
    """Join the ``torchrun`` process group if ``WORLD_SIZE > 1``; returns ``(rank, world, local_rank, created)``.

    The collective timeout is long (``timeout_min``, default 2 h) because evaluation runs on rank 0 while the
    other ranks wait at a barrier."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if is_dist():
        return dist.get_rank(), dist.get_world_size(), local_rank, False
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0, False
    backend = "nccl" if device_type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, init_method="env://", timeout=datetime.timedelta(minutes=timeout_min))
    return dist.get_rank(), dist.get_world_size(), local_rank, True


def resolve_device(spec: str | None, local_rank: int = 0) -> torch.device:
    spec = spec or "auto"
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cuda":
        return torch.device("cuda", local_rank)
    return torch.device(spec)


def enable_determinism() -> None:
    """Deterministic algorithms everywhere (CPU and CUDA); errors on ops without a deterministic kernel."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def seed_all(seed: int) -> None:
    """Seed python ``random``, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


# ------------------------------------------------------------------------------------------------------------
# model and objective


def model_config(config: Mapping[str, Any]):
    """The :class:`~openblip.config.BlipConfig` a recipe config describes."""
    cfg = get_arch_config(
        config["arch"],
        config["task"],
        image_size=config.get("image_size"),
        drop_path_rate=config.get("drop_path_rate"),
    )
    vision = dataclasses.replace(cfg.vision, grad_ckpt_layers=int(config.get("grad_ckpt_layers") or 0))
    text = cfg.text
    if config.get("text_dropout") is not None:
        p = float(config["text_dropout"])
        text = dataclasses.replace(text, hidden_dropout=p, attention_dropout=p)
    extra = {"prompt": config["prompt"]} if config.get("prompt") else {}
    return cfg.replace(vision=vision, text=text, **extra)


def build_model(
    config: Mapping[str, Any], log: Callable[[str], None] = print
) -> tuple[BlipBase, dict[str, torch.Tensor]]:
    """Build the task model and apply the initial weights; returns ``(model, training_state)``."""
    from openblip.train.init_weights import describe_load, init_from_blip, load_bert_weights, load_vit_weights

    model = create_model(model_config(config))
    training_state: dict[str, torch.Tensor] = {}
    if config.get("init"):
        report = init_from_blip(model, config["init"])
        log(f"init from {config['init']}: {describe_load(report)}")
        training_state = dict(report.training_state)
    if config.get("init_vision"):
        log("init vision: " + load_vit_weights(model.visual_encoder, config["init_vision"]).summary())
    if config.get("init_text"):
        log("init text: " + load_bert_weights(model, config["init_text"]).summary())
    return model, training_state


def build_objective(config: Mapping[str, Any], model: BlipBase) -> nn.Module:
    from openblip.train import objectives as O

    task = config["task"]
    if task == "pretrain":
        return O.PretrainObjective(
            model, queue_size=config["queue_size"], momentum=config.get("momentum", 0.995), alpha=config["alpha"]
        )
    if task == "retrieval":
        return O.RetrievalObjective(
            model,
            queue_size=config["queue_size"],
            momentum=config.get("momentum", 0.995),
            alpha=config["alpha"],
            negative_all_rank=bool(config.get("negative_all_rank", False)),
        )
    if task == "caption":
        return O.CaptionObjective(model, prompt_length=int(config.get("prompt_length", 4)))
    if task == "vqa":
        return O.VQAObjective(model)
    if task == "nlvr":
        return O.NLVRObjective(model)
    raise TrainingError(f"no objective for task {task!r}; known: {', '.join(TRAIN_TASKS)}")


def objective_state(objective: nn.Module) -> dict[str, torch.Tensor]:
    """What a checkpoint keeps of the objective: its own tensors (momentum encoders, queues, pointers), not the
    wrapped ``model.*`` ones, which the checkpoint's ``"model"`` already holds (``{}`` for caption, VQA, NLVR)."""
    return {k: v.detach().cpu() for k, v in objective.state_dict().items() if not k.startswith("model.")}


def load_objective_state(objective: nn.Module, state: Mapping[str, torch.Tensor], source: Any = None) -> None:
    """Load :func:`objective_state` (or an older checkpoint's full objective state) strictly on the objective's own
    tensors."""
    missing, unexpected = objective.load_state_dict(dict(state), strict=False)
    missing = [k for k in missing if not k.startswith("model.")]
    if missing or unexpected:
        raise TrainingError(
            f"{source or 'checkpoint'}: the objective state does not fit {type(objective).__name__}: "
            f"missing {missing[:5]}, unexpected {list(unexpected)[:5]}"
        )


def build_eval_hooks(config: Mapping[str, Any], split: str = "val", out_dir: Path | None = None) -> list[Any]:
    """The recipe's evaluation hook for ``split`` (``"val"`` during training, ``"test"`` at the end)."""
    kind = config.get("eval_kind")
    ann = config.get(f"{split}_file")
    if not kind or not ann:
        return []
    max_items = config.get("eval_max_items")
    common: dict[str, Any] = {
        "name": split,
        "every_steps": config.get("eval_every"),
        "at_epoch_end": bool(config.get("eval_at_epoch_end", True)),
    }
    root = config.get("image_root")
    bs = int(config.get("batch_size_test") or 32)
    if kind == "retrieval":
        return [
            hooks_mod.RetrievalEval(
                ann, root, k_test=int(config.get("k_test", 256)), max_items=max_items, batch_size=bs, **common
            )
        ]
    if kind == "vqa":
        roots = {"vqa": config.get("vqa_root") or root, "vg": config.get("vg_root") or root}
        result = out_dir / f"vqa_result_{split}.json" if out_dir else None
        return [
            hooks_mod.VQARankEval(
                ann,
                roots,
                config["answer_list"],
                k_test=int(config.get("k_test", 128)),
                max_items=max_items,
                batch_size=bs,
                result_file=result,
                **common,
            )
        ]
    if kind == "nlvr":
        return [hooks_mod.NLVREval(ann, root, max_items=max_items, batch_size=bs, **common)]
    if kind == "caption_loss":
        return [
            hooks_mod.CaptionLossEval(
                ann, root, prompt=config.get("prompt", ""), max_items=max_items, batch_size=bs, **common
            )
        ]
    if kind == "caption":
        gen = config.get("generation") or {}
        result = out_dir / f"caption_result_{split}.json" if out_dir else None
        return [
            hooks_mod.CaptionMetricsEval(
                ann,
                root,
                prompt=config.get("prompt", "a picture of "),
                max_items=max_items,
                batch_size=bs,
                result_file=result,
                **gen,
                **common,
            )
        ]
    raise TrainingError(f"unknown eval_kind {kind!r}; known: {', '.join(EVAL_KINDS)}")


def _metric_value(record: Mapping[str, float], spec: str) -> float | None:
    total = 0.0
    for key in spec.split("+"):
        if key.strip() not in record:
            return None
        total += float(record[key.strip()])
    return total


def state_fingerprint(model: nn.Module, objective: nn.Module) -> dict[str, str]:
    """sha256 of the model's tensors and of the objective's training state (momentum encoders, queues): equal on
    every rank of a healthy data-parallel run."""
    out = {}
    for name, state in (("model", model.state_dict()), ("objective", objective.state_dict())):
        h = hashlib.sha256()
        for key in sorted(state):
            t = state[key].detach().cpu().contiguous()
            h.update(key.encode())
            h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        out[name] = h.hexdigest()
    return out


def _params_finite(module: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in module.parameters())


class _JsonlWriter:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._f = open(path, "a", encoding="utf-8") if path is not None else None  # noqa: SIM115

    def write(self, record: Mapping[str, Any]) -> None:
        if self._f is not None:
            self._f.write(json.dumps(record) + "\n")
            self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop records logged after ``step`` (they came after the checkpoint we resume from)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if int(rec.get("step", 0)) <= step:
            kept.append(line)
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(k + "\n" for k in kept), encoding="utf-8")
    os.replace(tmp, path)


def check_counts(config: Mapping[str, Any]) -> None:
    """:class:`TrainingError` unless ``batch_size``, ``epochs``, ``grad_accum`` and ``max_steps`` (when set) are
    positive integers and ``num_workers`` is not negative (0 steps, or a negative budget, would otherwise train
    nothing -- or everything -- and report success)."""
    rules = (("batch_size", 1, False), ("epochs", 1, False), ("grad_accum", 1, True), ("max_steps", 1, True))
    for key, minimum, optional in (*rules, ("num_workers", 0, True)):
        value = config.get(key)
        if value is None and optional:
            continue
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or float(value) != int(value) or int(value) < minimum:
            kind = "a positive integer" if minimum == 1 else "an integer >= 0"
            raise TrainingError(f"config {key} must be {kind}{' (or None)' if optional else ''}, got {value!r}")


def _read_checkpoint(path: Path) -> dict[str, Any]:
    """:func:`load_checkpoint`, with a one-line :class:`TrainingError` naming the file when it cannot be read (torch's
    warnings about a damaged file are dropped with it; those of a good file are shown)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            state = load_checkpoint(path)
        except Exception as e:  # truncated / corrupt / not a checkpoint: torch raises many kinds
            first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), "")
            reason = f"{type(e).__name__}: {first.split('. ')[0].rstrip('.')}" if first else type(e).__name__
            older = [p.name for p in list_checkpoints(path.parent) if p != path]
            hint = f"; move it away to resume from {older[-1]}" if older else ""
            raise TrainingError(
                f"cannot read checkpoint {path} ({reason[:300]}): the file is damaged or not an openblip training "
                f"checkpoint{hint}"
            ) from e
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return state


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else None


# ------------------------------------------------------------------------------------------------------------
# the trainer


class Trainer:
    """Run a training recipe (a config dictionary from :mod:`openblip.train.recipes`).

    Args:
        config: the resolved recipe (data paths absolute or relative to the working directory).
        out_dir: run directory: ``metrics.jsonl``, ``config.json``, ``checkpoints/``, ``model/``.
        resume: continue from the newest checkpoint in ``out_dir/checkpoints`` (a fresh start if there is none).
            The checkpoint's config is used, updated with ``resume_overrides``.
        resume_overrides: config keys to change when resuming (e.g. ``{"max_steps": 2000}``); keys that break
            exact continuation (:data:`EXACTNESS_KEYS`) are applied with a warning.
        hooks: extra evaluation hooks (see :mod:`openblip.train.hooks`), besides the recipe's own.
        log: where progress messages go (rank 0 only); default: stderr.
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        out_dir: str | os.PathLike | None = None,
        *,
        resume: bool = False,
        resume_overrides: Mapping[str, Any] | None = None,
        hooks: Sequence[Any] = (),
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.config = dict(config)
        self.out_dir = Path(out_dir or self.config.get("out") or f"runs/{self.config.get('recipe', 'train')}")
        self.resume = resume
        self.resume_overrides = dict(resume_overrides or {})
        self.extra_hooks = list(hooks)
        self._log = log
        self.rank = 0

    def log(self, message: str) -> None:
        if self.rank != 0:
            return
        if self._log is not None:
            self._log(message)
        else:
            print(f"[openblip.train] {message}", file=sys.stderr, flush=True)

    # --------------------------------------------------------------------------------------------------------

    def run(self) -> TrainResult:
        device_type = resolve_device(self.config.get("device")).type
        rank, world, local_rank, created = init_distributed(
            device_type, float(self.config.get("dist_timeout_min", 120))
        )
        self.rank = rank
        try:
            return self._run(rank, world, local_rank)
        finally:
            if created and is_dist():
                dist.destroy_process_group()

    def _resolve_config(self, ckpt: Mapping[str, Any] | None) -> dict[str, Any]:
        if ckpt is None:
            return dict(self.config)
        config = dict(ckpt["config"])
        for key, value in self.resume_overrides.items():
            if key in EXACTNESS_KEYS and config.get(key) != value:
                self.log(
                    f"warning: resuming with {key}={value!r} instead of {config.get(key)!r}: not an exact continuation"
                )
            config[key] = value
        return config

    def _run(self, rank: int, world: int, local_rank: int) -> TrainResult:  # noqa: C901 - the loop, in order
        out = self.out_dir
        ckpt_dir = out / "checkpoints"
        is_main = rank == 0
        ckpt = None
        if self.resume:
            path = latest_checkpoint(ckpt_dir)
            if path is None:
                self.log(f"--resume: no checkpoint in {ckpt_dir}; starting from the beginning")
            else:
                ckpt = _read_checkpoint(path)
                self.log(f"resuming from {path} (step {ckpt['global_step']}, epoch {ckpt['epoch']})")
        cfg = self._resolve_config(ckpt)
        check_counts(cfg)
        device = resolve_device(cfg.get("device"), local_rank)
        if is_main:
            out.mkdir(parents=True, exist_ok=True)
            (out / "config.json").write_text(json.dumps(cfg, indent=2, default=str) + "\n")
        if cfg.get("deterministic"):
            enable_determinism()
        if cfg.get("num_threads"):
            torch.set_num_threads(int(cfg["num_threads"]))
        seed = int(cfg.get("seed", 42))
        task = cfg["task"]

        # ---- model, objective, optimizer (same seed on every rank: identical initial weights and queues)
        seed_all(seed)
        from openblip.tokenizer import get_tokenizer

        tokenizer = get_tokenizer()
        if task == "caption":
            cfg["prompt_length"] = len(tokenizer(cfg.get("prompt", ""))["input_ids"][0]) - 1
        model, training_state = build_model(cfg, self.log)
        objective = build_objective(cfg, model)
        if training_state and hasattr(objective, "load_training_state"):
            rep = objective.load_training_state(training_state, strict=False)
            if rep.ok:
                self.log("training state (momentum encoders, queues) loaded from the init checkpoint")
            else:
                self.log(f"training state from the init checkpoint loaded where it fits: {rep.problems()}")
        objective.to(device)
        objective.train()
        params = [p for p in objective.parameters() if p.requires_grad]
        optimizer = build_optimizer(params, lr=float(cfg["lr"]), weight_decay=float(cfg.get("weight_decay", 0.05)))

        # ---- data
        from openblip.data.augment import train_transform

        transform = train_transform(
            int(cfg["image_size"]), float(cfg.get("min_scale", 0.5)), bool(cfg.get("randaug", True))
        )
        failure_log = out / f"bad_images.rank{rank}.jsonl"
        dataset = steps.build_dataset(cfg, transform, strict=bool(cfg.get("strict")), failure_log=failure_log)
        local_bs = int(cfg["batch_size"])
        accum = max(1, int(cfg.get("grad_accum") or 1))
        global_micro = local_bs * world
        micro_per_epoch = len(dataset) // global_micro
        steps_per_epoch = micro_per_epoch // accum
        if steps_per_epoch < 1:
            raise TrainingError(
                f"the training set has {len(dataset)} samples: fewer than one optimizer step of "
                f"{global_micro * accum} (batch {local_bs} x {world} processes x {accum} accumulation)"
            )
        micro_per_epoch = steps_per_epoch * accum
        epochs = int(cfg["epochs"])
        max_steps = cfg.get("max_steps")
        if max_steps is not None:  # a step budget beyond the recipe's epochs extends the run by whole epochs
            epochs = max(epochs, math.ceil(int(max_steps) / steps_per_epoch))
        total_steps = epochs * steps_per_epoch if max_steps is None else int(max_steps)
        schedule = Schedule.from_config(cfg, epochs, total_steps)

        # ---- state
        epoch, global_step, batches_done = 0, 0, 0
        failures_base = 0
        evals: list[dict[str, Any]] = []
        best_value: float | None = None
        last_record: dict[str, Any] | None = None
        last_ckpt_path: Path | None = None
        if ckpt is not None:
            from openblip.checkpoint import fit_state_dict

            fit_state_dict(model, ckpt["model"], strict=True, source=ckpt["path"])
            if ckpt.get("objective"):
                load_objective_state(objective, ckpt["objective"], ckpt["path"])
            optimizer.load_state_dict(ckpt["optimizer"])
            diffs = schedule.differences(ckpt["schedule"])
            if diffs:
                self.log("warning: the schedule differs from the checkpoint's: " + "; ".join(diffs))
            epoch, global_step, batches_done = int(ckpt["epoch"]), int(ckpt["global_step"]), int(ckpt["batches_done"])
            failures_base = int(ckpt.get("failures", 0))
            metrics = ckpt.get("metrics") or {}
            evals = list(metrics.get("eval", []))
            best_value = metrics.get("best")
            last_record = metrics.get("last")
            last_ckpt_path = Path(ckpt["path"])
            if batches_done % accum:
                raise TrainingError(f"checkpoint position {batches_done} is not a multiple of grad_accum={accum}")
        # ---- DDP, per-rank randomness
        ddp: nn.Module | None = None
        if world > 1:
            # buffers (queues, position ids) are updated identically on every rank: no per-forward broadcast
            params_ddp = inspect.signature(nn.parallel.DistributedDataParallel).parameters
            no_sync_buffers = (
                {"forward_sync_buffers": False}
                if "forward_sync_buffers" in params_ddp
                else {"broadcast_buffers": False}
            )
            ddp = nn.parallel.DistributedDataParallel(
                objective, device_ids=[device.index] if device.type == "cuda" else None, **no_sync_buffers
            )
        runner: nn.Module = ddp if ddp is not None else objective
        neg_gen = torch.Generator(device=device)
        generators = {"negatives": neg_gen}
        rng_states = ckpt.get("rng") if ckpt is not None else None
        if rng_states is not None and len(rng_states) == world:
            restore_rng_state(rng_states[rank], generators)
        else:
            if rng_states is not None:
                self.log(
                    f"warning: the checkpoint was written by {len(rng_states)} process(es), not {world}: reseeding"
                )
            seed_all(seed + rank)
            neg_gen.manual_seed(_mix("openblip.train.negatives", seed, rank))

        # ---- hooks, logging
        hooks = build_eval_hooks(cfg, "val", out) + self.extra_hooks if is_main else []
        if is_main and ckpt is not None:
            _truncate_metrics(out / "metrics.jsonl", global_step)
        writer = _JsonlWriter(out / "metrics.jsonl" if is_main else None)
        if ckpt is not None:
            writer.write({"event": "resume", "step": global_step, "epoch": epoch, "checkpoint": str(last_ckpt_path)})
        tb = self._tensorboard(cfg, out) if is_main else None
        bar = None
        if is_main and sys.stderr.isatty() and cfg.get("progress", True):
            from tqdm import tqdm

            bar = tqdm(total=total_steps, initial=global_step, file=sys.stderr, unit="step", dynamic_ncols=True)
        self.log(
            f"{cfg.get('recipe', task)}: {len(dataset)} samples, {world} process(es) x batch {local_bs} x accum {accum}"
            f" = {global_micro * accum} per step, {steps_per_epoch} steps/epoch, {total_steps} steps, device {device}"
        )

        use_alpha = task in ("pretrain", "retrieval")
        alpha_warmup = float(cfg.get("alpha_warmup_epochs", 2 if task == "pretrain" else 1))
        autocast = (
            torch.autocast(device_type=device.type, dtype=torch.bfloat16)
            if cfg.get("bf16")
            else contextlib.nullcontext()
        )
        clip = cfg.get("clip_grad_norm")
        save_every = int(cfg.get("save_every") or 0)
        keep_last = cfg.get("keep_last", 3)
        nan_step = _env_int("OPENBLIP_TRAIN_NAN_AT_STEP")
        crash_step = _env_int("OPENBLIP_TRAIN_CRASH_AFTER_STEP")
        samples_per_step = global_micro * accum
        last_saved_step = global_step if last_ckpt_path is not None else -1

        def run_hooks(due: list[Any], step: int, ep: int) -> dict[str, float]:
            record: dict[str, float] = {}
            if is_main and due:
                saved = capture_rng_state(generators)
                try:
                    for hook in due:
                        t0 = time.time()
                        result = hooks_mod.run_hook(hook, model, step=step, epoch=ep)
                        record.update({f"{hook.name}/{k}": v for k, v in result.items()})
                        self.log(
                            f"eval {hook.name} at step {step}: "
                            + ", ".join(f"{k}={v:.4g}" for k, v in result.items())
                            + f" ({time.time() - t0:.1f}s)"
                        )
                finally:
                    restore_rng_state(saved, generators)
                    objective.train()
                if record:
                    entry = {"event": "eval", "step": step, "epoch": ep, **record}
                    evals.append(entry)
                    writer.write(entry)
                    if tb is not None:
                        for k, v in record.items():
                            tb.add_scalar(k, v, step)
            if is_dist():
                dist.barrier()
            return record

        def save(ep: int, done: int) -> Path | None:
            nonlocal last_ckpt_path, last_saved_step
            if not _params_finite(objective):
                raise NonFiniteLossError(
                    global_step, ep, done, {}, str(last_ckpt_path) if last_ckpt_path else None, what="weights"
                )
            rng_all = capture_rng_state(generators)
            local = {"rng": rng_all, "fingerprint": state_fingerprint(model, objective)}
            if is_dist():
                gathered: list[Any] = [None] * world
                dist.all_gather_object(gathered, local)
            else:
                gathered = [local]
            prints = [g["fingerprint"] for g in gathered]
            if any(p != prints[0] for p in prints[1:]):
                self.log(f"warning: the ranks' model/objective states differ at step {global_step}: {prints}")
            path = None
            if is_main:
                from openblip.checkpoint import _unique_state

                state = {
                    "model": _unique_state(model),
                    "objective": objective_state(objective),
                    "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(),
                    "epoch": ep,
                    "global_step": global_step,
                    "batches_done": done,
                    "rng": [g["rng"] for g in gathered],
                    "rank_fingerprints": prints,
                    "config": json.loads(json.dumps(cfg, default=str)),
                    "metrics": {"eval": evals, "last": last_record, "best": best_value},
                    "failures": failures_total,
                    "world_size": world,
                    "torch_version": str(torch.__version__),
                }
                path = save_checkpoint(out / "checkpoints", state, keep_last=keep_last)
                last_ckpt_path = path
            if is_dist():
                dist.barrier()
            last_saved_step = global_step
            return path

        failures_total = failures_base
        try:
            while epoch < epochs and global_step < total_steps:
                if hasattr(dataset, "reload_laion"):
                    dataset.reload_laion(epoch)
                sampler = GlobalBatchSampler(
                    len(dataset),
                    local_bs,
                    world,
                    rank,
                    seed,
                    epoch,
                    num_batches=micro_per_epoch,
                    start_batch=batches_done,
                )
                loader = DataLoader(
                    PerSampleSeeded(dataset, seed),
                    batch_sampler=sampler,
                    num_workers=int(cfg.get("num_workers", 0)),
                    collate_fn=steps.collate_fn(task),
                    pin_memory=device.type == "cuda",
                    generator=torch.Generator().manual_seed(_mix("openblip.train.loader", seed, epoch, rank)),
                )
                batches = iter(loader)
                step_in_epoch = batches_done // accum
                while step_in_epoch < steps_per_epoch and global_step < total_steps:
                    t_start = time.time()
                    lr = schedule.apply(optimizer, epoch, step_in_epoch, global_step)
                    sums: torch.Tensor | None = None
                    keys: list[str] = []
                    alpha = None
                    for micro in range(accum):
                        batch = next(batches)
                        i = step_in_epoch * accum + micro
                        if use_alpha:
                            from openblip.losses import momentum_alpha

                            alpha = momentum_alpha(float(cfg["alpha"]), epoch, i, micro_per_epoch, alpha_warmup)
                        if nan_step == global_step + 1 and micro == 0:
                            batch = steps.poison(task, batch)
                        if isinstance(objective, MomentumQueues):  # one EMA step per optimizer step
                            objective.update_momentum = micro == 0
                        ctx = steps.StepContext(tokenizer, device, cfg, alpha, neg_gen)
                        sync = ddp is None or micro == accum - 1
                        with contextlib.nullcontext() if sync else ddp.no_sync():
                            try:
                                with autocast:
                                    losses = steps.forward(runner, task, batch, ctx)
                            except (ValueError, RuntimeError, FloatingPointError) as e:
                                # NaN similarities make hard-negative sampling fail before any loss exists
                                what = "input images" if not steps.images_finite(task, batch) else None
                                if what is None and not _params_finite(objective):
                                    what = "weights"
                                if what is None and isinstance(e, FloatingPointError):
                                    what = "ITC similarities (activations overflowed)"
                                if what is None:
                                    raise
                                raise NonFiniteLossError(
                                    global_step + 1,
                                    epoch,
                                    i,
                                    {},
                                    str(last_ckpt_path) if last_ckpt_path else None,
                                    what=what,
                                ) from e
                            keys = ["loss"] + sorted(k for k in losses if k != "loss")
                            values = torch.stack([losses[k].detach().float() for k in keys])
                            fails = torch.tensor([float(getattr(dataset, "failure_count", 0))], device=values.device)
                            packed = torch.cat([values, fails])
                            if is_dist():
                                dist.all_reduce(packed)
                                packed[:-1] /= world
                            if not bool(torch.isfinite(packed[:-1]).all()):
                                raise NonFiniteLossError(
                                    global_step + 1,
                                    epoch,
                                    i,
                                    dict(zip(keys, packed[:-1].tolist())),
                                    str(last_ckpt_path) if last_ckpt_path else None,
                                )
                            sums = packed[:-1] if sums is None else sums + packed[:-1]
                            failures_total = failures_base + int(packed[-1].item())
                            (losses["loss"] / accum).backward()
                    grad_norm = torch.nn.utils.clip_grad_norm_(params, float(clip) if clip else float("inf"))
                    if not bool(torch.isfinite(grad_norm)):
                        raise NonFiniteLossError(
                            global_step + 1,
                            epoch,
                            step_in_epoch * accum,
                            {"grad_norm": float(grad_norm)},
                            str(last_ckpt_path) if last_ckpt_path else None,
                            what="gradient",
                        )
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    global_step += 1
                    step_in_epoch += 1
                    batches_done = step_in_epoch * accum
                    dt = max(time.time() - t_start, 1e-9)
                    means = (sums / accum).tolist()
                    record = {"step": global_step, "epoch": epoch, "lr": lr, **dict(zip(keys, means))}
                    if alpha is not None:
                        record["alpha"] = alpha
                    record.update(
                        {
                            "grad_norm": float(grad_norm),
                            "images_per_s": samples_per_step / dt,
                            "failures": failures_total,
                        }
                    )
                    last_record = record
                    writer.write(record)
                    if tb is not None:
                        for k in [*keys, "lr", "grad_norm", "images_per_s"]:
                            tb.add_scalar(f"train/{k}", record[k], global_step)
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{record['loss']:.4f}", img_s=f"{record['images_per_s']:.1f}", ep=epoch)

                    epoch_end = step_in_epoch == steps_per_epoch
                    due = [h for h in hooks if h.every_steps and global_step % h.every_steps == 0]
                    if epoch_end:
                        due += [h for h in hooks if h.at_epoch_end and h not in due]
                    if ddp is not None:
                        due_flag = torch.tensor([1.0 if due else 0.0], device=device)
                        dist.broadcast(due_flag, 0)
                        has_hooks = bool(due_flag.item())
                    else:
                        has_hooks = bool(due)
                    if has_hooks:
                        record_eval = run_hooks(due, global_step, epoch)
                        spec = cfg.get("best_metric")
                        if is_main and spec and epoch_end:
                            value = _metric_value(record_eval, spec)
                            if value is not None and (best_value is None or value > best_value):
                                best_value = value
                                model.save_pretrained(out / "model_best")
                                self.log(f"new best {spec} = {value:.4f}: saved {out / 'model_best'}")
                    ckpt_epoch, ckpt_done = (epoch + 1, 0) if epoch_end else (epoch, batches_done)
                    last = global_step >= total_steps
                    if (
                        (save_every and global_step % save_every == 0)
                        or (epoch_end and cfg.get("save_at_epoch_end", True))
                        or last
                    ):
                        path = save(ckpt_epoch, ckpt_done)
                        if path is not None:
                            self.log(f"checkpoint {path}")
                    if crash_step is not None and global_step == crash_step:
                        sys.stdout.flush()
                        sys.stderr.flush()
                        os._exit(CRASH_EXIT_CODE)
                if step_in_epoch == steps_per_epoch:
                    epoch += 1
                    batches_done = 0
        finally:
            writer.close()
            if bar is not None:
                bar.close()
            if tb is not None:
                tb.close()

        if last_saved_step != global_step:
            save(epoch, batches_done)
        final = None
        if is_main:
            final = model.save_pretrained(out / "model")
            self.log(f"final model: {final}")
        test_hooks = build_eval_hooks(cfg, "test", out) if cfg.get("test_at_end") and is_main else []
        if test_hooks or is_dist():
            writer = _JsonlWriter(out / "metrics.jsonl" if is_main else None)
            try:
                run_hooks(test_hooks, global_step, epoch)
            finally:
                writer.close()
        return TrainResult(out, global_step, epoch, last_ckpt_path, final, evals, last_record)

    def _tensorboard(self, cfg: Mapping[str, Any], out: Path) -> Any:
        if not cfg.get("tensorboard"):
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self.log("tensorboard is not installed (pip install tensorboard): TensorBoard logging skipped")
            return None
        return SummaryWriter(str(out / "tensorboard"))
