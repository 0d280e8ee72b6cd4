"""The ``openblip`` command line.

Every command imports torch and the model code lazily, inside the command, so ``openblip --help`` is instant.
Exit codes: 0 success, 1 total failure, 2 usage error, 3 partial failure (some inputs failed).
"""

from __future__ import annotations

import sys

import click

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3


def fail(message: str, code: int = EXIT_FAIL) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


#: ``--dtype`` values of every command that loads a model (``openblip.checkpoint.set_precision`` reads them).
DTYPE_CHOICES = ["float32", "bfloat16", "float16", "bfloat16-vision", "float16-vision"]


def model_options(default: str | None):
    """``--model``, ``--device``, ``--dtype``, ``--batch-size`` shared by every inference command."""

    def wrap(f):
        f = click.option(
            "--batch-size", default=8, show_default=True, type=click.IntRange(min=1), help="Images per forward pass."
        )(f)
        f = click.option(
            "--dtype",
            default="float32",
            show_default=True,
            type=click.Choice(DTYPE_CHOICES),
            help="Weights/activations dtype (float32 on CPU by default). 'bfloat16-vision': the image encoder in "
            "bfloat16, the text side in float32 (most of bfloat16's speed, float32's captions).",
        )(f)
        f = click.option("--device", default="cpu", show_default=True, help="torch device, e.g. cpu, cuda, cuda:1.")(f)
        f = click.option(
            "--model",
            "model",
            default=default,
            show_default=True,
            help="A registry name (see `openblip models`) or a local checkpoint (official .pth, HF or openblip dir).",
        )(f)
        return f

    return wrap


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="openblip")
def main() -> None:
    """openblip: BLIP captioning, retrieval, VQA and image-text matching."""


from openblip.cli import capfilt_cmd, commands, demo_cmd, eval_cmd, train_cmd, world_cmd  # noqa: E402,F401  (registers the commands)
