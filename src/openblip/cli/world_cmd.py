"""``openblip world``: generate the synthetic world (:mod:`openblip.data.synthetic`) and show its summary.

The world is written in BLIP's real formats (COCO-Karpathy captions, VQA v2, NLVR2), so the files it prints can be
given straight to ``openblip eval ...`` (``--image-root`` is the world's folder) and ``openblip train``.
numpy and Pillow are imported only when a command runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from openblip.cli import EXIT_FAIL, EXIT_OK, EXIT_USAGE, fail, main

#: ``config`` entries of world.json shown in the summary (the rest -- palette, templates -- are constants).
_CONFIG_KEYS = ("captions_per_image", "vqa_per_scene", "count_probs")


def world_summary(info) -> dict:
    """The JSON summary of a :class:`openblip.data.synthetic.WorldInfo`: where the files are (absolute paths),
    how many of everything, and the chance / question-only baselines computed on the generated splits."""
    root = Path(info.root).resolve()
    return {
        "root": str(root),
        "seed": info.seed,
        "image_size": info.image_size,
        "splits": info.splits,
        "config": {k: info.config[k] for k in _CONFIG_KEYS if k in info.config},
        "files": {name: str(root / rel) for name, rel in info.files.items()},
        "counts": info.counts,
        "baselines": info.baselines,
    }


@main.group("world", context_settings={"help_option_names": ["-h", "--help"]})
def world() -> None:
    """The synthetic world: scenes of coloured shapes with captions, VQA questions and NLVR2 pairs.

    \b
    Examples:
      openblip world generate world/ --n-train 2000 --n-test 200
      openblip world info world/
      openblip eval caption --annotations world/annotations/caption_test.json --image-root world/ --model M
    """


@world.command("generate")
@click.argument("out", type=click.Path())
@click.option("--n-train", default=5000, show_default=True, type=int, help="Train scenes (>= 2).")
@click.option("--n-val", default=500, show_default=True, type=int, help="Validation scenes (>= 0).")
@click.option("--n-test", default=500, show_default=True, type=int, help="Test scenes (>= 0).")
@click.option("--image-size", default=64, show_default=True, type=int, help="Image side in pixels (48-512).")
@click.option("--seed", default=0, show_default=True, type=int, help="The only source of randomness (>= 0).")
@click.option(
    "--n-nlvr",
    default=None,
    type=int,
    help="NLVR2 pairs of the train split (val/test get proportionally fewer); default: one pair per scene.",
)
@click.option(
    "--captions-per-image",
    default=2,
    show_default=True,
    type=click.Choice(["1", "2"]),
    help="1: the canonical caption; 2: canonical + paraphrase.",
)
@click.option("--vqa-per-scene", default=4, show_default=True, type=int, help="VQA questions per scene (>= 0).")
def generate(out, n_train, n_val, n_test, image_size, seed, n_nlvr, captions_per_image, vqa_per_scene):
    """Generate a world into OUT and print its summary (files, counts, baselines) as one JSON object.

    Writes OUT/images/{train,val,test}/scene_*.png, OUT/annotations/*.json (caption_{split}, vqa_{split},
    nlvr_{split}, hard_negatives_{split}, scenes_{split}, pretrain, answer_list, caption_{val,test}_gt) and
    OUT/world.json (written last: a folder with a world.json holds a complete world). The same seed gives the
    same files. OUT is the image root of every annotation file.
    """
    path = Path(out)
    if path.exists() and not path.is_dir():
        fail(f"{out}: exists and is not a directory", EXIT_USAGE)
    for value, name in ((seed, "--seed"), (n_nlvr, "--n-nlvr")):
        if value is not None and value < 0:
            fail(f"{name} must be >= 0, got {value}", EXIT_USAGE)

    from openblip.data.synthetic import generate_world

    try:
        info = generate_world(
            path,
            n_train=n_train,
            n_val=n_val,
            n_test=n_test,
            image_size=image_size,
            seed=seed,
            n_nlvr=n_nlvr,
            captions_per_image=int(captions_per_image),
            vqa_per_scene=vqa_per_scene,
        )
    except ValueError as e:  # the sizes, checked before anything is written
        fail(str(e), EXIT_USAGE)
    except OSError as e:
        fail(f"cannot write the world into {out}: {e.strerror or e}", EXIT_FAIL)
    click.echo(json.dumps(world_summary(info), indent=2))
    sys.exit(EXIT_OK)


@world.command("info")
@click.argument("out", type=click.Path())
def info(out):
    """Print the summary of the world in OUT (from its world.json) as one JSON object."""
    from openblip.data.synthetic import load_world

    path = Path(out)
    if path.is_file() and path.name == "world.json":
        path = path.parent
    if not path.is_dir():
        fail(f"{out}: no such directory", EXIT_USAGE)
    if not (path / "world.json").is_file():
        fail(f"{out}: no world.json (not a generated world, or its generation did not finish)", EXIT_USAGE)
    try:
        world_info = load_world(path)
    except (OSError, ValueError, KeyError, TypeError) as e:
        detail = f"missing field {e}" if isinstance(e, KeyError) else str(e)
        fail(f"{path / 'world.json'}: unreadable: {detail}", EXIT_USAGE)
    click.echo(json.dumps(world_summary(world_info), indent=2))
    sys.exit(EXIT_OK)
