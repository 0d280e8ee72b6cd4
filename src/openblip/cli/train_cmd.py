"""``openblip train``: the training entry point (:mod:`openblip.train.main`) as a CLI command.

The options are those of ``python -m openblip.train.main``; torch is imported only when the command runs. For
several processes launch the module with ``torchrun`` instead (``torchrun --nproc_per_node=8 -m
openblip.train.main ...``); ``openblip train`` under ``torchrun`` works too.
"""

from __future__ import annotations

import sys

import click

from openblip.cli import main

RECIPES = ("pretrain", "caption_coco", "retrieval_coco", "retrieval_flickr", "vqa", "nlvr")

# (option, value type or "flag", help)
_OPTIONS: list[tuple[str, object, str]] = [
    ("--variant", str, "'large' (ViT-L) or 'smoke' (tiny model on a generated synthetic world)."),
    ("--data-root", str, "Image root (smoke: the synthetic world, generated if absent)."),
    ("--ann-root", str, "Annotation folder (default: <data-root>/annotation)."),
    ("--init", str, "BLIP checkpoint to start from (registry name or path); 'none' for random init."),
    ("--init-text", str, "BERT weights for the text side (path, URL or Hugging Face repo id)."),
    ("--init-vision", str, "DeiT/timm ViT weights for the image side (path or URL)."),
    ("--out", str, "Run directory (default: runs/<recipe>[-<variant>])."),
    ("--resume", "flag", "Continue exactly from the newest checkpoint in --out."),
    ("--steps", int, "Stop after this many optimizer steps in total."),
    ("--epochs", int, "Number of epochs."),
    ("--batch-size", int, "Samples per process per micro-batch."),
    ("--lr", float, "Peak / initial learning rate."),
    ("--bf16", "flag", "bfloat16 autocast."),
    ("--grad-accum", int, "Micro-batches per optimizer step."),
    ("--grad-ckpt", int, "Gradient checkpointing of the last N ViT blocks."),
    ("--strict", "flag", "A bad image stops the run (default: skip and count)."),
    ("--seed", int, "Seed (default 42)."),
    ("--eval-every", int, "Evaluate every N steps (besides epoch ends)."),
    ("--save-every", int, "Checkpoint every N steps (besides epoch ends)."),
    ("--keep-last", int, "Checkpoints to keep."),
    ("--deterministic", "flag", "Deterministic algorithms only (bit-exact resume)."),
    ("--num-workers", int, "DataLoader workers per process."),
    ("--device", str, "auto (default), cpu or cuda."),
    ("--tensorboard", "flag", "Also log to <out>/tensorboard (needs the tensorboard package)."),
    ("--print-config", "flag", "Print the resolved configuration and exit."),
]


def _with_options(f):
    for name, kind, help_text in reversed(_OPTIONS):
        if kind == "flag":
            f = click.option(name, is_flag=True, default=False, help=help_text)(f)
        else:
            f = click.option(name, type=kind, default=None, help=help_text)(f)
    f = click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Set any config key (JSON value).")(f)
    f = click.option("--recipe", required=True, type=click.Choice(RECIPES), help="Which recipe.")(f)
    return f


@main.command("train")
@_with_options
def train(recipe: str, sets: tuple[str, ...], **options: object) -> None:
    """Train or fine-tune BLIP with one of the original recipes (see `python -m openblip.train.main --help`)."""
    argv = ["--recipe", recipe]
    for name, kind, _ in _OPTIONS:
        key = name[2:].replace("-", "_")
        value = options.get(key)
        if kind == "flag":
            if value:
                argv.append(name)
        elif value is not None:
            argv += [name, str(value)]
    for item in sets:
        argv += ["--set", item]
    from openblip.train.main import main as train_main

    sys.exit(train_main(argv))
