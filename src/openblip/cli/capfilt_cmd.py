"""``openblip capfilt``: bootstrap a pre-training corpus (captioner + filter), the whole pipeline or one stage.

Settings are merged in this order: :class:`openblip.capfilt.CapFiltConfig` defaults, then the settings an earlier
run saved in ``OUT/capfilt_config.json`` (so a stage run alone reuses them), then the options given to
``openblip capfilt``, then those given to the stage. torch and the model code are imported only when a command runs.
"""

from __future__ import annotations

import json
import os
import sys

import click

from openblip.cli import DTYPE_CHOICES, EXIT_FAIL, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, fail, main

# (option, CapFiltConfig field, type, help); flags are given as "--x/--no-x"
_OPTIONS: list[tuple[str, str, object, str]] = [
    ("--web", "web", str, "Web annotations: JSON list (or .jsonl) of {image, caption}."),
    ("--clean", "clean", str, "Clean, human-annotated set in the same format (fine-tunes captioner and filter)."),
    ("--init", "init", str, "Pre-trained model to fine-tune from (registry name or checkpoint)."),
    ("--out", "out", click.Path(), "Work directory (shards, models, corpus.json, summary.json)."),
    ("--image-root", "image_root", str, "Folder relative web image paths are under."),
    (
        "--clean-image-root",
        "clean_image_root",
        str,
        "Folder relative clean image paths are under (default: --image-root).",
    ),
    ("--captioner", "captioner", str, "Use this fine-tuned captioner instead of fine-tuning one."),
    ("--filter-model", "filter_model", str, "Use this fine-tuned retrieval/ITM model as the filter."),
    ("--threshold", "threshold", click.FloatRange(0, 1), "Keep a caption iff its ITM match probability >= this [0.5]."),
    ("--captions-per-image", "captions_per_image", click.IntRange(min=0), "Synthetic captions per web image [1]."),
    ("--top-p", "top_p", click.FloatRange(0, 1, min_open=True), "Nucleus sampling mass [0.9]."),
    ("--top-k", "top_k", click.IntRange(min=0), "Top-k of the sampling [50]."),
    ("--max-length", "max_length", click.IntRange(min=2), "Maximum caption length, prompt tokens included [30]."),
    ("--min-length", "min_length", click.IntRange(min=0), "Minimum caption length, prompt tokens included [5]."),
    ("--prompt", "prompt", str, "Captioning prompt ['a picture of ']."),
    ("--seed", "seed", int, "Seed of sampling and fine-tuning [0]."),
    ("--shard-size", "shard_size", click.IntRange(min=1), "Web images per shard (the unit of resumption) [1000]."),
    ("--batch-size", "batch_size", click.IntRange(min=1), "Images per forward pass when captioning/filtering [32]."),
    ("--device", "device", str, "torch device [cpu]."),
    ("--dtype", "dtype", click.Choice(DTYPE_CHOICES), "Inference dtype [float32]."),
    ("--threads", "threads", click.IntRange(min=1), "torch threads (default: torch's)."),
    ("--captioner-steps", "captioner_steps", click.IntRange(min=0), "Captioner fine-tuning steps [1000]."),
    ("--captioner-lr", "captioner_lr", float, "Captioner learning rate [1e-5]."),
    ("--filter-steps", "filter_steps", click.IntRange(min=0), "Filter fine-tuning steps [1000]."),
    ("--filter-lr", "filter_lr", float, "Filter learning rate [1e-5]."),
    ("--train-batch-size", "train_batch_size", click.IntRange(min=1), "Fine-tuning batch size [32]."),
    ("--queue-size", "queue_size", click.IntRange(min=1), "Filter ITC queue (multiple of the batch) [57600]."),
    ("--min-scale", "min_scale", click.FloatRange(0, 1, min_open=True), "Train crop min scale [0.5]."),
    ("--randaug/--no-randaug", "randaug", "flag", "RandomAugment while fine-tuning [on]."),
    ("--flip/--no-flip", "flip", "flag", "Horizontal flip (left/right swapped in the text) while fine-tuning [on]."),
    ("--save-every", "save_every", click.IntRange(min=0), "Save a resumable training state every N steps [200]."),
    (
        "--itm-warmup-steps",
        "itm_warmup_steps",
        click.IntRange(min=0),
        "Filter: first N steps draw ITM negatives uniformly (not in the original; for a from-scratch init) [0].",
    ),
    ("--num-workers", "num_workers", click.IntRange(min=0), "DataLoader workers while fine-tuning [0]."),
    ("--filter-web/--no-filter-web", "filter_web", "flag", "Filter the web captions [on]."),
    ("--filter-synthetic/--no-filter-synthetic", "filter_synthetic", "flag", "Filter the synthetic captions [on]."),
    ("--dedup/--no-dedup", "dedup", "flag", "Drop a caption equal to one already kept for the image [on]."),
]


def _pipeline_options(f):
    for opt, field, kind, help_text in reversed(_OPTIONS):
        if kind == "flag":
            f = click.option(opt, field, default=None, help=help_text)(f)
        else:
            f = click.option(opt, field, type=kind, default=None, help=help_text)(f)
    return f


def _config(ctx: click.Context, options: dict) -> object:
    """CapFiltConfig from the defaults, ``OUT/capfilt_config.json``, the group's and the stage's options."""
    from openblip.capfilt.config import CapFiltConfig
    from openblip.capfilt.pipeline import load_saved_config

    given = dict((ctx.obj or {}).get("options") or {})
    given.update({k: v for k, v in options.items() if v is not None})
    given = {k: v for k, v in given.items() if v is not None}
    if not given.get("out"):
        fail("--out is required (the work directory)", EXIT_USAGE)
    values = load_saved_config(given["out"])
    values.update(given)
    try:
        return CapFiltConfig.from_dict(values)
    except ValueError as e:
        fail(str(e), EXIT_USAGE)


def _check_usage(cfg, stages) -> None:
    """Usage errors (exit 2) before any work: the options ``stages`` need, and readable, well-formed annotations.

    caption, filter and build need --web (build takes --clean if given); a fine-tuning stage needs --init and
    --clean unless its ready-made model (--captioner / --filter-model) is given. The annotation files are read
    here once so that a missing file or a malformed record is a usage error naming it, not a failure mid-run.
    """
    from openblip.capfilt.pipeline import load_clean, load_web

    needs_web = bool({"caption", "filter", "build"} & set(stages))
    needs_clean = False
    for stage, name, ready, ready_opt in (
        ("finetune-captioner", "captioner", cfg.captioner, "--captioner"),
        ("finetune-filter", "filter", cfg.filter_model, "--filter-model"),
    ):
        if stage not in stages or ready:
            continue
        for value, opt, what in ((cfg.init, "--init", "a pre-trained model"), (cfg.clean, "--clean", "the clean set")):
            if not value:
                fail(
                    f"fine-tuning the {name} needs {what} ({opt}), or give a fine-tuned {name} with {ready_opt}",
                    EXIT_USAGE,
                )
        needs_clean = True
    if needs_web and not cfg.web:
        fail("no web annotations given (--web)", EXIT_USAGE)
    checks = []
    if needs_web:
        checks.append(("--web", cfg.web, load_web))
    if needs_clean or ("build" in stages and cfg.clean):
        checks.append(("--clean", cfg.clean, load_clean))
    for opt, path, load in checks:
        try:
            load(cfg)
        except OSError as e:
            fail(f"cannot read {opt} {path}: {e.strerror or e}", EXIT_USAGE)
        except (ValueError, TypeError, KeyError) as e:
            message = str(e)
            fail(message if str(path) in message else f"{opt} {path}: malformed annotations: {message}", EXIT_USAGE)


def _exit(failed: int, images: int, where: str, other_failures: bool = False) -> None:
    """Exit 1 when every web image failed to load, 3 when some did (or ``other_failures``), else 0; a line on
    stderr says how many failed and where their reasons are."""
    if images and failed == images:
        fail(f"every web image failed to load ({failed} of {images}); reasons in {where}", EXIT_FAIL)
    if failed:
        click.echo(f"{failed} of {images} web images failed to load; reasons in {where}", err=True)
    sys.exit(EXIT_PARTIAL if failed or other_failures else EXIT_OK)


def _run_stage(ctx: click.Context, stage: str, options: dict) -> None:
    from openblip.capfilt.pipeline import run_stage, summary_table
    from openblip.capfilt.store import StageMismatchError

    cfg = _config(ctx, options)
    _check_usage(cfg, [stage])
    try:
        result = run_stage(stage, cfg)
    except (FileNotFoundError, ValueError, StageMismatchError, RuntimeError, OSError) as e:
        fail(str(e))
    if stage == "build":
        click.echo(summary_table(result))
        _summary_exit(result, cfg)
    click.echo(json.dumps({"stage": stage, **{k: v for k, v in result.items() if k != "failures"}}, default=str))
    if stage in ("caption", "filter"):
        folder = cfg.out / ("captions" if stage == "caption" else "filter_scores")
        _exit(result["failed"], result["images"], f"the error rows of {folder}{os.sep}shard_*.jsonl")
    sys.exit(EXIT_OK)


def _summary_exit(summary: dict, cfg) -> None:
    """The exit of ``build`` and of the whole run: 1 if every web image was unreadable, 3 if some web or clean
    images were, else 0."""
    im = summary["images"]
    _exit(im["web_unreadable"], im["web_in"], str(cfg.out / "summary.json"), bool(summary["failures"]))


@main.group("capfilt", invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@_pipeline_options
@click.option(
    "--demo",
    is_flag=True,
    help="Run the synthetic CapFilt experiment end to end on CPU, about 19 min with --threads 2 on 2 idle cores "
    "(writes OUT/capfilt_metrics.json; "
    "OUT defaults to capfilt_demo). Takes --out, --seed, --threads.",
)
@click.option(
    "--quick", is_flag=True, help="With --demo: about 8 min; the pipeline end to end, too short for the bars."
)
@click.pass_context
def capfilt(ctx: click.Context, demo: bool, quick: bool, **options: object) -> None:
    """CapFilt: caption and filter a noisy web corpus with BLIP, then pre-train on the result.

    Without a stage, runs every stage in order: finetune-captioner, finetune-filter, caption, filter, build. Each
    stage is resumable: rerun the same command after an interruption and finished work is skipped.

    \b
    Examples:
      openblip capfilt --web web.json --clean coco_karpathy_train.json --init blip-base-pretrain \\
          --image-root /data --out capfilt_out
      openblip capfilt --web web.json --captioner blip-base-caption-coco \\
          --filter-model blip-base-retrieval-coco --image-root /data --out capfilt_out
      openblip capfilt caption --out capfilt_out --captions-per-image 3
      openblip capfilt --demo --out capfilt_demo
    """
    ctx.ensure_object(dict)
    ctx.obj["options"] = options
    if ctx.invoked_subcommand is not None:
        if demo:
            fail("--demo runs everything; do not combine it with a stage", EXIT_USAGE)
        return
    if demo:
        _demo(options, quick)
        return
    if quick:
        fail("--quick goes with --demo", EXIT_USAGE)
    from openblip.capfilt.pipeline import STAGES, run, summary_table
    from openblip.capfilt.store import StageMismatchError

    cfg = _config(ctx, options)
    if not cfg.web or not (cfg.clean or (cfg.captioner and cfg.filter_model)):
        fail("give --web and --clean with --init (or --captioner and --filter-model); see --help", EXIT_USAGE)
    _check_usage(cfg, STAGES)
    try:
        summary = run(cfg)
    except (FileNotFoundError, ValueError, StageMismatchError, RuntimeError, OSError) as e:
        fail(str(e))
    click.echo(summary_table(summary))
    _summary_exit(summary, cfg)


def _demo(options: dict, quick: bool) -> None:
    from openblip.capfilt.demo import metrics_table, preset, run_demo

    unsupported = sorted(k for k, v in options.items() if v is not None and k not in ("out", "seed", "threads"))
    if unsupported:
        fail(f"--demo takes only --out, --seed, --threads and --quick (got {', '.join(unsupported)})", EXIT_USAGE)
    cfg = preset(
        "quick" if quick else "default",
        out=options.get("out") or "capfilt_demo",
        seed=options.get("seed"),
        threads=options.get("threads"),
    )
    result = run_demo(cfg)
    click.echo(metrics_table(result))
    click.echo(f"\nwrote {cfg.out / 'capfilt_metrics.json'}")
    sys.exit(EXIT_OK)


def _stage_command(stage: str, doc: str) -> None:
    @capfilt.command(stage, help=doc)
    @_pipeline_options
    @click.pass_context
    def command(ctx: click.Context, **options: object) -> None:
        _run_stage(ctx, stage, options)

    command.__name__ = stage.replace("-", "_")


_stage_command(
    "finetune-captioner",
    "Fine-tune the captioner (LM, prompt 'a picture of ') from --init on --clean; writes OUT/captioner/model.",
)
_stage_command(
    "finetune-filter",
    "Fine-tune the filter (ITC + ITM) from --init on --clean; writes OUT/filter/model.",
)
_stage_command(
    "caption",
    "Nucleus-sample synthetic captions for every web image, shard by shard; writes OUT/captions/.",
)
_stage_command(
    "filter",
    "Score every web and synthetic caption with the filter's ITM head; writes OUT/filter_scores/.",
)
_stage_command(
    "build",
    "Apply the threshold and write OUT/corpus.json (pre-training format + provenance) and OUT/summary.json.",
)
