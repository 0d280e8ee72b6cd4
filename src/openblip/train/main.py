"""Command-line entry point: ``python -m openblip.train.main --recipe NAME [options]`` (also ``openblip train``).

Runs in one process, or under ``torchrun`` (``torchrun --nproc_per_node=8 -m openblip.train.main ...``), where every
process joins the process group from the ``env://`` variables. Examples::

    # seconds on a CPU: the tiny model on a generated synthetic world
    python -m openblip.train.main --recipe caption_coco --variant smoke --out runs/smoke_caption

    # the original COCO captioning fine-tune on 8 GPUs
    torchrun --nproc_per_node=8 -m openblip.train.main --recipe caption_coco --data-root /data/coco \\
        --init blip-base-pretrain-capfilt-l --out runs/caption

    # continue exactly where a run stopped
    python -m openblip.train.main --recipe caption_coco --out runs/caption --resume

Options override the recipe (:mod:`openblip.train.recipes`); ``--set KEY=VALUE`` sets any config key (VALUE is
parsed as JSON when it can be, e.g. ``--set queue_size=32 --set 'train_files=["a.json","b.json"]'``).
``--print-config`` shows the resolved configuration and exits. Settings are checked before any work (exit 2, one
line naming the option or key): ``--set`` accepts only keys the recipe knows (its config, the base config and the
trainer's optional keys; a typo gets the closest one suggested), counts must be positive integers (``--steps``,
``--epochs``, ``--batch-size``, ``--grad-accum``; ``--num-workers`` may be 0), rates and sizes must be in range,
switches true or false, ``--device`` one this machine has. With ``--resume`` the run continues with the
configuration stored in its newest checkpoint; only the options given on the command line change it.

Exit codes: 0 done; 1 training failed (bad image with ``--strict``, missing data, an unreadable checkpoint to resume
from, ...); 2 usage error (bad option or setting);
3 non-finite loss (the message names the step and the loss components; the last good checkpoint is kept).
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openblip.train.recipes import EVAL_KINDS, PATH_KEYS, TRAIN_TASKS

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_NONFINITE = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    """argparse with the project's one-line ``error: ...`` (exit 2) instead of the usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        _err(f"{message} (see --help)")
        raise SystemExit(EXIT_USAGE)


def _count(minimum: int) -> Any:
    """An argparse type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {value}")
        return value

    parse.__name__ = "positive integer" if minimum == 1 else f"integer >= {minimum}"
    return parse


positive_int, non_negative_int = _count(1), _count(0)


def build_parser() -> argparse.ArgumentParser:
    from openblip.train.recipes import RECIPES

    p = _Parser(
        prog="python -m openblip.train.main",
        description="Train BLIP with the original recipes (one process or under torchrun).",
    )
    p.add_argument("--recipe", required=True, choices=RECIPES, help="Which recipe (see openblip.train.recipes).")
    p.add_argument("--variant", default=None, help="'large' (ViT-L) or 'smoke' (tiny model, synthetic data).")
    p.add_argument("--data-root", default=None, help="Image root (smoke: the synthetic world, generated if absent).")
    p.add_argument("--ann-root", default=None, help="Annotation folder (default: <data-root>/annotation).")
    p.add_argument(
        "--init", default=None, help="BLIP checkpoint to start from (registry name or path); 'none' for random."
    )
    p.add_argument("--init-text", default=None, help="BERT weights for the text side (path, URL or HF repo id).")
    p.add_argument("--init-vision", default=None, help="DeiT/timm ViT weights for the image side (path or URL).")
    p.add_argument("--out", default=None, help="Run directory (default: runs/<recipe>[-<variant>]).")
    p.add_argument("--resume", action="store_true", help="Continue from the newest checkpoint in --out.")
    p.add_argument("--steps", type=positive_int, default=None, help="Stop after this many optimizer steps in total.")
    p.add_argument("--epochs", type=positive_int, default=None, help="Number of epochs (the schedule's length).")
    p.add_argument("--batch-size", type=positive_int, default=None, help="Samples per process per micro-batch.")
    p.add_argument("--lr", type=float, default=None, help="Peak / initial learning rate.")
    p.add_argument("--bf16", action="store_true", default=None, help="bfloat16 autocast.")
    p.add_argument("--grad-accum", type=positive_int, default=None, help="Micro-batches per optimizer step.")
    p.add_argument(
        "--grad-ckpt", type=non_negative_int, default=None, help="Gradient checkpointing of the last N ViT blocks."
    )
    p.add_argument("--strict", action="store_true", default=None, help="A bad image stops the run.")
    p.add_argument("--seed", type=int, default=None, help="Seed (default 42).")
    p.add_argument(
        "--eval-every", type=non_negative_int, default=None, help="Evaluate every N steps (besides epoch ends)."
    )
    p.add_argument(
        "--save-every", type=non_negative_int, default=None, help="Checkpoint every N steps (besides epoch ends)."
    )
    p.add_argument("--keep-last", type=non_negative_int, default=None, help="Checkpoints to keep.")
    p.add_argument("--deterministic", action="store_true", default=None, help="Deterministic algorithms only.")
    p.add_argument("--num-workers", type=non_negative_int, default=None, help="DataLoader workers per process.")
    p.add_argument("--device", default=None, help="auto (default), cpu or cuda.")
    p.add_argument("--tensorboard", action="store_true", default=None, help="Also log to <out>/tensorboard.")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="Set any config key.")
    p.add_argument("--print-config", action="store_true", help="Print the resolved config and exit.")
    return p


_OPTION_KEYS = {
    "steps": "max_steps",
    "epochs": "epochs",
    "batch_size": "batch_size",
    "lr": "lr",
    "bf16": "bf16",
    "grad_accum": "grad_accum",
    "grad_ckpt": "grad_ckpt_layers",
    "strict": "strict",
    "seed": "seed",
    "eval_every": "eval_every",
    "save_every": "save_every",
    "keep_last": "keep_last",
    "deterministic": "deterministic",
    "num_workers": "num_workers",
    "device": "device",
    "tensorboard": "tensorboard",
    "init": "init",
    "init_text": "init_text",
    "init_vision": "init_vision",
}


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The config keys the command line sets explicitly."""
    out: dict[str, Any] = {}
    for opt, key in _OPTION_KEYS.items():
        value = getattr(args, opt)
        if value is not None:
            out[key] = value
    for key in ("init", "init_text", "init_vision"):
        if isinstance(out.get(key), str) and out[key].lower() in ("none", "random", "scratch"):
            out[key] = None
    for item in args.sets:
        if "=" not in item:
            raise ValueError(f"--set needs KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = _parse_value(value)
    return out


@dataclass(frozen=True)
class _Rule:
    """What a config value must be: ``kind`` (int, float, bool, str, list, dict), bounds, choices, ``None`` allowed."""

    kind: str
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    none: bool = False
    choices: tuple[str, ...] | None = None


def _ints(ge: int, none: bool = False) -> _Rule:
    return _Rule("int", ge=ge, none=none)


_RULES: dict[str, _Rule] = {
    # counts
    "batch_size": _ints(1),
    "batch_size_test": _ints(1),
    "grad_accum": _ints(1),
    "epochs": _ints(1),
    "max_steps": _ints(1, none=True),
    "image_size": _ints(1),
    "max_words": _ints(1),
    "max_text_length": _ints(1, none=True),
    "k_test": _ints(1),
    "queue_size": _ints(1),
    "eval_max_items": _ints(1, none=True),
    "num_threads": _ints(1, none=True),
    "num_workers": _ints(0),
    "grad_ckpt_layers": _ints(0, none=True),
    "warmup_steps": _ints(0, none=True),
    "eval_every": _ints(0, none=True),  # 0 / None: only at epoch ends
    "save_every": _ints(0, none=True),
    "keep_last": _ints(0, none=True),  # 0 / None: keep every checkpoint
    "seed": _Rule("int"),
    # rates
    "lr": _Rule("float", gt=0),
    "min_lr": _Rule("float", ge=0),
    "warmup_lr": _Rule("float", ge=0),
    "weight_decay": _Rule("float", ge=0),
    "lr_decay_rate": _Rule("float", gt=0),
    "clip_grad_norm": _Rule("float", gt=0, none=True),
    "min_scale": _Rule("float", gt=0, le=1),
    "alpha": _Rule("float", ge=0, le=1),
    "momentum": _Rule("float", ge=0, le=1),
    "alpha_warmup_epochs": _Rule("float", ge=0),
    "drop_path_rate": _Rule("float", ge=0, lt=1, none=True),
    "text_dropout": _Rule("float", ge=0, lt=1, none=True),
    "dist_timeout_min": _Rule("float", gt=0),
    # switches
    **{
        k: _Rule("bool")
        for k in (
            "bf16",
            "strict",
            "deterministic",
            "tensorboard",
            "randaug",
            "progress",
            "eval_at_epoch_end",
            "test_at_end",
            "save_at_epoch_end",
            "negative_all_rank",
        )
    },
    # names and paths
    "task": _Rule("str", choices=TRAIN_TASKS),
    "arch": _Rule("str"),
    "eval_kind": _Rule("str", none=True, choices=EVAL_KINDS),
    "caption_loss_reduction": _Rule("str", choices=("global_tokens", "rank_mean")),
    "device": _Rule("str", none=True),
    "prompt": _Rule("str"),
    "best_metric": _Rule("str", none=True),
    **{
        k: _Rule("str", none=True)
        for k in ("init", "init_text", "init_vision", "out", *(k for k in PATH_KEYS if k != "train_files"))
    },
    "train_files": _Rule("list"),
    "generation": _Rule("dict", none=True),
    "smoke_world": _Rule("dict", none=True),
}


def _describe(rule: _Rule) -> str:
    what = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}.get(rule.kind, "")
    what = what or {"list": "a list of file names", "dict": "a JSON object"}[rule.kind]
    bounds = [
        f"{op} {v:g}" for op, v in ((">=", rule.ge), (">", rule.gt), ("<=", rule.le), ("<", rule.lt)) if v is not None
    ]
    if rule.choices:
        what = "one of " + ", ".join(rule.choices)
    text = what + (" " + " and ".join(bounds) if bounds else "")
    return text + (" (or null)" if rule.none else "")


def _coerce(value: Any, rule: _Rule) -> Any:
    """``value`` as ``rule`` wants it (numbers given as strings are converted); ``ValueError`` when it does not fit."""
    if value is None:
        if rule.none:
            return None
        raise ValueError
    if rule.kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off", "1", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise ValueError
    if rule.kind in ("int", "float"):
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, str):
            value = float(value.strip())  # ValueError when it is no number
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError
        if rule.kind == "int":
            if float(value) != int(value):
                raise ValueError
            value = int(value)
        else:
            value = float(value)
        if (
            (rule.ge is not None and value < rule.ge)
            or (rule.gt is not None and value <= rule.gt)
            or (rule.le is not None and value > rule.le)
            or (rule.lt is not None and value >= rule.lt)
        ):
            raise ValueError
        return value
    if rule.kind == "str":
        if not isinstance(value, str) or (rule.choices and value not in rule.choices):
            raise ValueError
        return value
    if rule.kind == "list":
        if isinstance(value, str):  # --set train_files=a.json
            return [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError
        return value
    if not isinstance(value, dict):
        raise ValueError
    return value


def _check_device(spec: str | None) -> str | None:
    """The problem with ``--device`` (``None`` when the machine has it)."""
    if spec in (None, "auto", "cpu"):
        return None
    import torch

    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError, ValueError):
        return f"unknown device {spec!r} (use auto, cpu, cuda or cuda:N)"
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return f"CUDA is not available on this machine (got {spec!r}; use auto or cpu)"
        if device.index is not None and device.index >= torch.cuda.device_count():
            return f"this machine has {torch.cuda.device_count()} CUDA device(s) (got {spec!r})"
    elif device.type != "cpu":
        backend = getattr(torch, device.type, None) or getattr(torch.backends, device.type, None)
        available = getattr(backend, "is_available", None)
        if available is None or not available():
            return f"this torch has no usable {device.type} device (got {spec!r}; use auto, cpu or cuda)"
    return None


def validate_config(config: dict[str, Any], sources: dict[str, str] | None = None) -> dict[str, Any]:
    """``config`` with its values checked and normalised (numbers given as strings converted, a single
    ``train_files`` name made a list); ``ValueError`` naming the option or key otherwise.

    ``sources`` maps keys to where they came from (``"--lr"``, ``"--set lr"``) for the message."""
    sources = sources or {}
    out = dict(config)

    def where(key: str) -> str:
        return sources.get(key) or f"config key {key!r}"

    for key, rule in _RULES.items():
        if key not in out:
            continue
        try:
            out[key] = _coerce(out[key], rule)
        except (ValueError, TypeError):
            raise ValueError(f"{where(key)}: must be {_describe(rule)}, got {out[key]!r}") from None
    problem = _check_device(out.get("device"))
    if problem:
        raise ValueError(f"{where('device')}: {problem}")
    from openblip.train.optim import SCHEDULES

    if out.get("schedule", "cosine_epoch") not in SCHEDULES:
        raise ValueError(f"{where('schedule')}: must be one of {', '.join(SCHEDULES)}, got {out.get('schedule')!r}")
    if "arch" in out and "task" in out:
        from openblip.config import ConfigError, get_arch_config

        try:
            get_arch_config(
                out["arch"], out["task"], image_size=out.get("image_size"), drop_path_rate=out.get("drop_path_rate")
            )
        except ConfigError as e:
            keys = [k for k in ("arch", "image_size", "task") if k in sources] or ["arch"]
            raise ValueError(f"{' / '.join(where(k) for k in keys)}: {e}") from None
    return out


def check_keys(recipe: str, keys: Sequence[str]) -> None:
    """``ValueError`` for a ``--set`` key the recipe does not know, suggesting the closest known one."""
    from openblip.train.recipes import known_keys

    known = known_keys(recipe)
    for key in keys:
        if key in known:
            continue
        close = difflib.get_close_matches(key, sorted(known), n=1)
        hint = f"did you mean {close[0]!r}?" if close else "--print-config lists the known keys"
        raise ValueError(f"--set {key}: unknown config key for recipe {recipe} ({hint})")


def _err(message: str) -> None:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    prefix = f"[rank {os.environ.get('RANK', '0')}] " if world > 1 else ""
    print(f"{prefix}error: {message}", file=sys.stderr, flush=True)


def _wait_for(path: Path, timeout: float = 600.0) -> None:
    t0 = time.time()
    while not path.is_file():
        if time.time() - t0 > timeout:
            raise TimeoutError(f"waited {timeout:.0f}s for {path} (written by rank 0)")
        time.sleep(0.2)


def prepare_config(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """``(resolved config, explicit overrides, out dir)`` for the parsed arguments; generates the smoke world."""
    from openblip.train import recipes

    config = recipes.get_config(args.recipe, args.variant)
    overrides = overrides_from_args(args)
    sources = {key: "--" + opt.replace("_", "-") for opt, key in _OPTION_KEYS.items() if getattr(args, opt) is not None}
    set_keys = [item.split("=", 1)[0].strip() for item in args.sets]
    sources.update({key: f"--set {key}" for key in set_keys})
    check_keys(args.recipe, set_keys)
    config.update(overrides)
    config = validate_config(config, sources)
    default_out = f"runs/{args.recipe}" + (f"-{args.variant}" if args.variant else "")
    out = Path(args.out or config.get("out") or default_out)
    data_root = args.data_root or config.get("data_root")
    if config.get("variant") == "smoke":
        if data_root is None:
            data_root = str(out / "synthetic_world")
        if getattr(args, "print_config", False):
            pass
        elif int(os.environ.get("RANK", "0")) == 0:
            recipes.ensure_smoke_world(config, data_root)
        else:
            _wait_for(Path(data_root) / "world.json")
    resolved = recipes.resolve_paths(config, data_root, args.ann_root)
    explicit = {k: resolved[k] for k in overrides if k in resolved}
    if args.data_root is not None or args.ann_root is not None:
        for key in PATH_KEYS:
            if key in resolved:
                explicit[key] = resolved[key]
    return resolved, explicit, out


def main(argv: Sequence[str] | None = None) -> int:
    """Run training; returns the exit code (see the module docstring)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0) if e.code in (0, None) else EXIT_USAGE
    try:
        config, explicit, out = prepare_config(args)
    except ValueError as e:
        _err(str(e))
        return EXIT_USAGE
    if args.print_config:
        print(json.dumps(config, indent=2, default=str))
        return EXIT_OK

    from openblip.config import ConfigError
    from openblip.image import ImageLoadError
    from openblip.train import recipes
    from openblip.train.checkpointing import latest_checkpoint
    from openblip.train.loop import NonFiniteLossError, Trainer, TrainingError

    resuming = args.resume and latest_checkpoint(out / "checkpoints") is not None
    if not resuming:
        missing = [f for f in config.get("train_files") or [] if not os.path.exists(f)]
        if missing:
            _err(f"training annotation file(s) not found: {', '.join(missing)} (check --data-root / --ann-root)")
            return EXIT_FAIL
        for f in recipes.check_paths(config):
            # the VQA evaluation ranks the answer list: without it neither split can be evaluated
            answers_missing = f == config.get("answer_list")
            keys = [k for k in ("val_file", "test_file") if config.get(k) and (answers_missing or config[k] == f)]
            what = f" (no {' / '.join(keys)} evaluation)" if keys else ""
            print(f"warning: evaluation file not found, skipped: {f}{what}", file=sys.stderr)
            for key in keys:
                config[key] = None
    trainer = Trainer(config, out, resume=args.resume, resume_overrides=explicit)
    try:
        trainer.run()
    except NonFiniteLossError as e:
        _err(str(e))
        return EXIT_NONFINITE
    except ImageLoadError as e:
        _err(f"bad image (--strict): {e.source}: {e.reason}")
        return EXIT_FAIL
    except (TrainingError, FileNotFoundError) as e:  # incl. an unreadable checkpoint to resume from
        _err(str(e))
        return EXIT_FAIL
    except ConfigError as e:  # e.g. a resumed checkpoint's configuration this openblip cannot build
        _err(f"configuration: {e}")
        return EXIT_USAGE
    except RuntimeError as e:  # e.g. an ImageLoadError re-raised from a DataLoader worker
        text = str(e)
        if "cannot load image" in text:
            line = next((ln for ln in text.splitlines() if "cannot load image" in ln), text)
            _err(f"bad image (--strict): {line.strip()}")
            return EXIT_FAIL
        raise
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
