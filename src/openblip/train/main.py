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
``--print-config`` shows the resolved configuration and exits. With ``--resume`` the run continues with the
configuration stored in its newest checkpoint; only the options given on the command line change it.

Exit codes: 0 done; 1 training failed (bad image with ``--strict``, missing data, ...); 2 usage error;
3 non-finite loss (the message names the step and the loss components; the last good checkpoint is kept).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_NONFINITE = 0, 1, 2, 3


def build_parser() -> argparse.ArgumentParser:
    from openblip.train.recipes import RECIPES

    p = argparse.ArgumentParser(
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
    p.add_argument("--steps", type=int, default=None, help="Stop after this many optimizer steps in total.")
    p.add_argument("--epochs", type=int, default=None, help="Number of epochs (the schedule's length).")
    p.add_argument("--batch-size", type=int, default=None, help="Samples per process per micro-batch.")
    p.add_argument("--lr", type=float, default=None, help="Peak / initial learning rate.")
    p.add_argument("--bf16", action="store_true", default=None, help="bfloat16 autocast.")
    p.add_argument("--grad-accum", type=int, default=None, help="Micro-batches per optimizer step.")
    p.add_argument("--grad-ckpt", type=int, default=None, help="Gradient checkpointing of the last N ViT blocks.")
    p.add_argument("--strict", action="store_true", default=None, help="A bad image stops the run.")
    p.add_argument("--seed", type=int, default=None, help="Seed (default 42).")
    p.add_argument("--eval-every", type=int, default=None, help="Evaluate every N steps (besides epoch ends).")
    p.add_argument("--save-every", type=int, default=None, help="Checkpoint every N steps (besides epoch ends).")
    p.add_argument("--keep-last", type=int, default=None, help="Checkpoints to keep.")
    p.add_argument("--deterministic", action="store_true", default=None, help="Deterministic algorithms only.")
    p.add_argument("--num-workers", type=int, default=None, help="DataLoader workers per process.")
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
    config.update(overrides)
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
        for key in (
            "data_root",
            "ann_root",
            "image_root",
            "train_files",
            "val_file",
            "test_file",
            "answer_list",
            "vqa_root",
            "vg_root",
            "laion_path",
        ):
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
    except (TrainingError, FileNotFoundError) as e:
        _err(str(e))
        return EXIT_FAIL
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
