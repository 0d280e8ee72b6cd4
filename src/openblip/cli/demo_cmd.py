"""``openblip demo``: pre-train a small BLIP from scratch on a synthetic world (CPU), evaluate it, show it."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from openblip.cli import EXIT_OK, EXIT_USAGE, fail, main


@main.command()
@click.option("--out", default="demo_out", show_default=True, type=click.Path(), help="Output folder.")
@click.option("--quick", is_flag=True, help="300 pre-training + 250 VQA steps (about 4 minutes of training).")
@click.option(
    "--long",
    "long_",
    is_flag=True,
    help="3000 + 1200 steps, enough for ITM re-ranking to beat ITC (about 40-60 minutes).",
)
@click.option(
    "--steps", default=None, type=click.IntRange(min=1), help="Pre-training steps (overrides the preset's budget)."
)
@click.option("--vqa-steps", default=None, type=click.IntRange(min=0), help="VQA fine-tuning steps.")
@click.option(
    "--vit-steps",
    default=None,
    type=click.IntRange(min=0),
    help="Steps of the supervised ViT stage before pre-training (default preset 600, --quick 0).",
)
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=click.IntRange(min=0, max=2**63 - 1),
    help="Seed of the world and of training.",
)
@click.option(
    "--threads", default=2, show_default=True, type=click.IntRange(min=0), help="torch threads (0: torch's default)."
)
@click.option("--no-coco-metrics", is_flag=True, help="Skip BLEU/CIDEr (they need Java).")
@click.option("--json", "as_json", is_flag=True, help="Print metrics.json instead of the table.")
def demo(out, quick, long_, steps, vqa_steps, vit_steps, seed, threads, no_coco_metrics, as_json):
    """Pre-train a small BLIP (ITC + ITM + LM) from scratch on CPU, fine-tune VQA, evaluate on held-out scenes.

    \b
    Writes into OUT: world/ (the generated data), model/ (the pre-trained captioner; try
    `openblip caption --model OUT/model OUT/world/images/test/`), retrieval_model/ (`openblip match`,
    `openblip rank`), vqa_model/ (`openblip vqa --method rank --answers OUT/world/annotations/answer_list.json`),
    pretrain_model/ (every pre-trained tensor), metrics.json, gallery.png and gallery.html.
    Progress goes to stderr, the metrics table to stdout. Budgets (2 CPU cores): default 600 supervised ViT
    steps + 800 pre-training steps + 1500 VQA steps (about 11 minutes of training); --quick 300 + 250 (about 3);
    --long 3000 + 1200.
    """
    if quick and long_:
        fail("--quick and --long cannot be combined; give at most one", EXIT_USAGE)
    _check_out(out)

    from openblip.demo import preset_config, run_demo
    from openblip.demo.data import WorldDataError
    from openblip.demo.report import metrics_table

    try:
        cfg = preset_config(
            "quick" if quick else "long" if long_ else "default",
            out=out,
            steps=steps,
            vqa_steps=vqa_steps,
            vit_steps=vit_steps,
            seed=seed,
            threads=threads or None,
            coco_metrics=not no_coco_metrics,
        )
    except ValueError as e:
        fail(str(e))
    try:
        result = run_demo(cfg)
    except WorldDataError as e:
        fail(str(e))
    if as_json:
        click.echo(json.dumps({k: v for k, v in result.items() if k != "config"}, indent=2))
    else:
        click.echo(metrics_table(result))
        click.echo(f"\nwrote {cfg.out}/metrics.json, {cfg.out}/gallery.png, {cfg.out}/gallery.html, {cfg.out}/model")
    sys.exit(EXIT_OK)


def _check_out(out: str) -> None:
    """``--out`` must be a folder (or a path where one can be created) that the demo can write into."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        fail(f"--out {out}: exists and is not a directory", EXIT_USAGE)
    world = path / "world"
    if world.exists() and not world.is_dir():
        fail(f"--out {out}: {world} exists and is not a directory (the demo writes its world there)", EXIT_USAGE)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        fail(f"--out {out}: cannot create the folder: {e.strerror or e}", EXIT_USAGE)
    if not os.access(path, os.W_OK | os.X_OK):
        fail(f"--out {out}: the folder is not writable", EXIT_USAGE)
