"""``openblip demo``: pre-train a small BLIP from scratch on a synthetic world (CPU), evaluate it, show it."""

from __future__ import annotations

import json
import sys

import click

from openblip.cli import EXIT_OK, fail, main


@main.command()
@click.option("--out", default="demo_out", show_default=True, type=click.Path(), help="Output folder.")
@click.option(
    "--quick", "budget", flag_value="quick", help="300 pre-training + 250 VQA steps (about 4 minutes of training)."
)
@click.option(
    "--long",
    "budget",
    flag_value="long",
    help="3000 + 1200 steps, enough for ITM re-ranking to beat ITC (about 40-60 minutes).",
)
@click.option(
    "--steps", default=None, type=click.IntRange(min=1), help="Pre-training steps (overrides the preset's budget)."
)
@click.option("--vqa-steps", default=None, type=click.IntRange(min=0), help="VQA fine-tuning steps.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the world and of training.")
@click.option(
    "--threads", default=2, show_default=True, type=click.IntRange(min=0), help="torch threads (0: torch's default)."
)
@click.option("--no-coco-metrics", is_flag=True, help="Skip BLEU/CIDEr (they need Java).")
@click.option("--json", "as_json", is_flag=True, help="Print metrics.json instead of the table.")
def demo(out, budget, steps, vqa_steps, seed, threads, no_coco_metrics, as_json):
    """Pre-train a small BLIP (ITC + ITM + LM) from scratch on CPU, fine-tune VQA, evaluate on held-out scenes.

    \b
    Writes into OUT: world/ (the generated data), model/ (the pre-trained captioner; try
    `openblip caption --model OUT/model OUT/world/images/test/`), retrieval_model/ (`openblip match`,
    `openblip rank`), vqa_model/ (`openblip vqa --method rank --answers OUT/world/annotations/answer_list.json`),
    pretrain_model/ (every pre-trained tensor), metrics.json, gallery.png and gallery.html.
    Progress goes to stderr, the metrics table to stdout. Budgets (2 CPU cores): default 800 pre-training steps
    + 900 VQA steps (about 9.5 minutes of training); --quick 300 + 250 (about 3); --long 3000 + 1200.
    """
    from openblip.demo import preset_config, run_demo
    from openblip.demo.report import metrics_table

    try:
        cfg = preset_config(
            budget or "default",
            out=out,
            steps=steps,
            vqa_steps=vqa_steps,
            seed=seed,
            threads=threads or None,
            coco_metrics=not no_coco_metrics,
        )
    except ValueError as e:
        fail(str(e))
    result = run_demo(cfg)
    if as_json:
        click.echo(json.dumps({k: v for k, v in result.items() if k != "config"}, indent=2))
    else:
        click.echo(metrics_table(result))
        click.echo(f"\nwrote {cfg.out}/metrics.json, {cfg.out}/gallery.png, {cfg.out}/gallery.html, {cfg.out}/model")
    sys.exit(EXIT_OK)
