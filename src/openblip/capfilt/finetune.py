"""Fine-tuning the captioner (LM) and the filter (ITC + ITM) on the clean set, resumably.

A compact loop over the project's own pieces, so both models train exactly as the original recipes train them:

* data: :class:`openblip.data.datasets.CaptionTrainDataset` with BLIP's train transform
  (:func:`openblip.data.augment.train_transform`: random resized crop, flip with "left"/"right" swapped in the text,
  RandomAugment), bad images skipped and counted; samples drawn by :class:`openblip.train.data.GlobalBatchSampler`
  and augmented under per-sample seeds (:class:`openblip.train.data.PerSampleSeeded`), as the trainer does;
* forward: :func:`openblip.train.steps.forward` with :class:`openblip.train.objectives.CaptionObjective` (the
  captioning recipe: prompt ``"a picture of "``, prompt positions unsupervised, label smoothing 0.1) or
  :class:`openblip.train.objectives.RetrievalObjective` (the retrieval recipe: idx-aware ITC with momentum
  distillation and a queue, alpha ramped over the first epoch, ITM with hard negatives; in-batch negatives as
  ``retrieval_flickr``);
* optimizer: :func:`openblip.train.optim.build_optimizer` (AdamW, weight decay on every parameter).

Why not :class:`openblip.train.loop.Trainer`: it builds models from the named architectures only, while CapFilt
starts from whatever checkpoint ``--init`` names (its architecture comes from the checkpoint); and the step budget
here is a few hundred/thousand steps on a small set, for which the loop uses a per-step cosine
(:func:`openblip.train.optim.cosine_step_lr`, no warm-up) instead of the recipes' per-epoch cosine.

Resuming: every ``save_every`` steps the model, the objective's training state (momentum encoders, queues), the
optimizer and the step are saved atomically to ``<dir>/train_state.pt``. Batches, augmentation, dropout and the
hard-negative draws are functions of ``(seed, step)``, so a resumed run continues with the same data. When the
budget is spent the model is saved to ``<dir>/model`` and ``<dir>/done.json`` marks the stage complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from openblip.capfilt.store import atomic_write_bytes, atomic_write_json

Log = Callable[[str], None]


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from ``parts`` (SHA-256; stable across runs and platforms)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def check_params(folder: Path, params: Mapping[str, Any], stage: str) -> None:
    """Write ``folder/params.json``, or refuse if it holds other settings (see :class:`~.store.ShardStore`)."""
    from openblip.capfilt.store import ShardStore

    ShardStore(folder, params, stage)


def load_for_task(name_or_path: str, task: str, device: str = "cpu", dtype: str | None = None, log: Log = print):
    """Load a checkpoint as a ``task`` model; modules the task does not use (a pre-training checkpoint's decoder for
    the filter, its encoders and heads for the captioner) are reported and left out, missing ones are an error.

    Returns ``(model, report)``.
    """
    from openblip.api import load
    from openblip.models.blip import BlipPretrain, create_model

    model, report = load(name_or_path, strict=False, for_training=True, return_report=True, device=device, dtype=dtype)
    if isinstance(model, BlipPretrain) and task != "pretrain":
        # A pre-training checkpoint: copy every tensor the task model has, under the same name (the encoder/decoder
        # shared tensors are under both prefixes in the model's state dict, whatever the file deduplicated).
        target = create_model(model.config.replace(task=task))
        src, own = model.state_dict(), target.state_dict()
        missing = [k for k in own if k not in src]
        if missing:
            raise RuntimeError(f"{name_or_path}: the pre-trained model lacks {task} tensors: {missing[:5]}")
        target.load_state_dict({k: src[k] for k in own}, strict=True)
        left_out = sorted({k.split(".")[0] for k in src if k not in own})
        log(f"{name_or_path}: pre-trained model -> {task} model (left out: {', '.join(left_out)})")
        return target.to(device=model.device, dtype=model.dtype), report
    if model.task != task and not (task == "retrieval" and model.task == "itm"):
        model, report = load(
            name_or_path, task=task, strict=False, for_training=True, return_report=True, device=device, dtype=dtype
        )
    if report.missing or report.mismatched:
        raise RuntimeError(f"{name_or_path} does not hold a complete {task} model: {report.problems()}")
    if report.unexpected:
        log(f"{name_or_path} -> {task} model; {len(report.unexpected)} tensors of other modules left out")
    return model, report


@contextlib.contextmanager
def uniform_itm_negatives():
    """Within the block, :class:`~openblip.train.objectives.RetrievalObjective` draws its ITM negatives uniformly
    among the in-batch pairs of other images instead of in proportion to their ITC similarity (the draw is
    :func:`openblip.losses.sample_hard_negatives` given all-zero similarities; same-image pairs stay excluded).

    Not in the original: for filters whose ITM head starts at chance (a model pre-trained for a few hundred steps
    from scratch). Measured on the synthetic world (batch 64, 1-3 objects per scene): with the hardest in-batch
    negatives from the first step the ITM loss stays at the label prior (0.636) for 300+ steps; with uniform
    negatives it drops at once (0.55 after 25 steps, 0.23 after 150) and the head rejects most captions of other
    scenes -- but switching to the hardest negatives after 100 such steps collapsed it back to the prior (keeping no
    true caption at 0.5) for the next 300 steps. Uniform negatives teach the coarse match; the fine distinctions
    (one attribute, two objects swapped) need the hard negatives and far more steps than the demo's budget.
    """
    from openblip.train import objectives as O

    real = O.sample_hard_negatives

    def uniform(sim_i2t: torch.Tensor, sim_t2i: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        return real(torch.zeros_like(sim_i2t), torch.zeros_like(sim_t2i), *args, **kwargs)

    O.sample_hard_negatives = uniform
    try:
        yield
    finally:
        O.sample_hard_negatives = real


class _Bar:
    """A tqdm bar on stderr, shown when stderr is a terminal (``show`` overrides); the stages log lines anyway."""

    def __init__(self, total: int, desc: str, log: Log, unit: str, initial: int = 0, show: bool | None = None) -> None:
        self.total, self.desc, self.log = total, desc, log
        show = sys.stderr.isatty() if show is None else show
        self.bar = None
        if show:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True)

    def update(self, n: int = 1, **postfix: Any) -> None:
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def finetune(
    task: str,
    init: str,
    records: Sequence[Mapping[str, Any]],
    image_root: str | None,
    out_dir: str | Path,
    *,
    steps: int,
    lr: float,
    batch_size: int,
    seed: int = 0,
    prompt: str = "a picture of ",
    weight_decay: float = 0.05,
    queue_size: int = 57600,
    momentum: float = 0.995,
    alpha: float = 0.4,
    min_scale: float = 0.5,
    randaug: bool = True,
    flip: bool = True,
    save_every: int = 200,
    num_workers: int = 0,
    itm_warmup_steps: int = 0,
    device: str = "cpu",
    log: Log = print,
    progress: bool | None = None,
    log_every: int = 50,
) -> dict[str, Any]:
    """Fine-tune ``init`` as a ``task`` model (``"caption"``: the captioner, ``"retrieval"``: the filter) on
    ``records`` (``{"image", "caption": str, "image_id"}``, one per caption) for ``steps`` optimizer steps.

    Writes ``out_dir/model`` (the fine-tuned model), ``out_dir/done.json`` (statistics; the stage marker) and, while
    running, ``out_dir/train_state.pt``. A finished stage is not redone: its ``done.json`` is returned.
    """
    from torch.utils.data import DataLoader

    from openblip.data.augment import TrainTransform
    from openblip.data.datasets import CaptionTrainDataset
    from openblip.losses import momentum_alpha
    from openblip.tokenizer import get_tokenizer
    from openblip.train import objectives as O
    from openblip.train import steps as S
    from openblip.train.data import GlobalBatchSampler, PerSampleSeeded, default_collate_list
    from openblip.train.optim import build_optimizer, cosine_step_lr

    if task not in ("caption", "retrieval"):
        raise ValueError(f"task must be 'caption' or 'retrieval', got {task!r}")
    name = "captioner" if task == "caption" else "filter"
    out_dir = Path(out_dir)
    done_path = out_dir / "done.json"
    if done_path.is_file() and (out_dir / "model" / "config.json").is_file():
        stats = json.loads(done_path.read_text(encoding="utf-8"))
        log(f"[{name}] already fine-tuned ({stats.get('steps')} steps): {out_dir / 'model'}")
        return stats
    out_dir.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    torch.manual_seed(derive_seed("capfilt.finetune.init", seed, task))  # the queues start as seeded random features
    model, report = load_for_task(init, task, device=device, log=log)
    tokenizer = get_tokenizer()
    if task == "caption":
        model.config = model.config.replace(prompt=prompt)
        prompt_length = len(tokenizer(prompt)["input_ids"][0]) - 1
        objective = O.CaptionObjective(model, prompt_length=prompt_length)
        step_config = {"prompt_length": prompt_length, "max_text_length": 40}
    else:
        prompt_length = 0
        objective = O.RetrievalObjective(model, queue_size=queue_size, momentum=momentum, alpha=alpha)
        if report.training_state:
            rep = objective.load_training_state(report.training_state, strict=False)
            log(f"[{name}] training state from {init}: {'loaded' if rep.ok else rep.problems()}")
        step_config = {"max_text_length": 35}
    objective.to(device).train()

    transform = TrainTransform(model.image_size, min_scale, randaug, flip_p=0.5 if flip else 0.0)
    dataset = CaptionTrainDataset(
        list(records),
        image_root,
        transform,
        30,
        prompt if task == "caption" else "",
        failure_log=out_dir / "bad_images.jsonl",
    )
    steps_per_epoch = len(dataset) // batch_size
    if steps_per_epoch < 1:
        raise ValueError(
            f"the clean set has {len(dataset)} captions, fewer than one batch of {batch_size}; lower the batch size"
        )
    optimizer = build_optimizer(objective, lr=lr, weight_decay=weight_decay)

    step = 0
    state_path = out_dir / "train_state.pt"
    if state_path.is_file():
        state = torch.load(state_path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        if "objective" in state:
            objective.load_state_dict(state["objective"])
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])
        log(f"[{name}] resuming at step {step} from {state_path}")

    log(
        f"[{name}] fine-tuning {init} ({task}) on {len(dataset)} clean captions: {steps} steps of {batch_size}, "
        f"lr {lr:g}, per-step cosine"
    )
    seeded = PerSampleSeeded(dataset, seed)
    bar = _Bar(steps, name, log, "step", initial=step, show=progress)
    window: dict[str, list[float]] = {}
    last: dict[str, float] = {}
    t_loop = time.perf_counter()
    first_step = step
    try:
        while step < steps:
            epoch, batch_in_epoch = divmod(step, steps_per_epoch)
            sampler = GlobalBatchSampler(
                len(dataset),
                batch_size,
                seed=seed,
                epoch=epoch,
                num_batches=steps_per_epoch,
                start_batch=batch_in_epoch,
            )
            loader = DataLoader(seeded, batch_sampler=sampler, num_workers=num_workers, collate_fn=default_collate_list)
            for batch in loader:
                if step >= steps:
                    break
                torch.manual_seed(derive_seed("capfilt.finetune.dropout", seed, task, step))
                gen = torch.Generator(device="cpu").manual_seed(derive_seed("capfilt.finetune.neg", seed, step))
                step_lr = cosine_step_lr(step, steps, lr)
                for group in optimizer.param_groups:
                    group["lr"] = step_lr
                alpha_now = (
                    momentum_alpha(alpha, epoch, batch_in_epoch, steps_per_epoch, 1) if task != "caption" else None
                )
                ctx = S.StepContext(tokenizer, torch.device(device), step_config, alpha=alpha_now, generator=gen)
                warm = task == "retrieval" and step < itm_warmup_steps
                with uniform_itm_negatives() if warm else contextlib.nullcontext():
                    out = S.forward(objective, task, tuple(batch), ctx)
                optimizer.zero_grad(set_to_none=True)
                out["loss"].backward()
                optimizer.step()
                step += 1
                batch_in_epoch += 1
                values = {k: float(v.detach()) for k, v in out.items() if k.startswith("loss")}
                for k, v in values.items():
                    window.setdefault(k, []).append(v)
                bar.update(1, loss=f"{values['loss']:.3f}")
                if step % max(1, log_every) == 0 or step == steps:
                    last = {k: sum(v) / len(v) for k, v in window.items()}
                    rate = (step - first_step) / max(time.perf_counter() - t_loop, 1e-9)
                    shown = " ".join(f"{k} {v:.3f}" for k, v in last.items())
                    log(f"[{name}] step {step}/{steps}  {shown}  lr {step_lr:.2e}  {rate:.2f} steps/s")
                    window = {}
                if save_every and step % save_every == 0 and step < steps:
                    _save_state(state_path, model, objective, optimizer, step)
    finally:
        bar.close()

    model.eval()
    model.save_pretrained(out_dir / "model")
    failures = [{"image": f.path, "reason": f.reason} for f in dataset.failures]
    stats = {
        "task": task,
        "init": str(init),
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "clean_captions": len(dataset),
        "seconds": time.perf_counter() - t0,
        "final_losses": last,
        "bad_images": len(failures),
        "failures": failures[:100],
        "model": str(out_dir / "model"),
    }
    atomic_write_json(done_path, stats)
    state_path.unlink(missing_ok=True)
    log(f"[{name}] done in {stats['seconds']:.0f}s: {out_dir / 'model'}")
    return stats


def _save_state(path: Path, model: torch.nn.Module, objective: torch.nn.Module, optimizer: Any, step: int) -> None:
    state: dict[str, Any] = {"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict()}
    if hasattr(objective, "load_training_state"):  # momentum encoders and queues (the model is saved above)
        state["objective"] = objective.state_dict()
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())
