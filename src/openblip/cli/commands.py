"""Command implementations. Heavy imports happen inside each command."""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import click

from openblip.cli import EXIT_FAIL, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, fail, main, model_options

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
#: ``tag --labels`` values ending in one of these are file names (inline labels otherwise, unless a path separator)
LABEL_FILE_SUFFIXES = {".txt", ".json", ".csv", ".tsv"}


def expand_paths(paths: tuple[str, ...]) -> list[Path]:
    """Files as given; folders walked recursively for image files, in sorted order."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES))
        else:
            out.append(p)
    return out


def _progress(total: int, label: str):
    """A progress bar on stderr, shown only when stderr is a terminal (never on stdout)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=label, file=sys.stderr, disable=not sys.stderr.isatty(), unit="img")


class RowWriter:
    """Writes result rows to stdout as jsonl, csv or text."""

    def __init__(self, fmt: str, fields: list[str]) -> None:
        self.fmt, self.fields = fmt, fields
        self._csv = None
        if fmt == "csv":
            self._csv = csv.DictWriter(sys.stdout, fieldnames=fields, extrasaction="ignore")
            self._csv.writeheader()

    def write(self, row: dict) -> None:
        if self.fmt == "jsonl":
            click.echo(json.dumps(row, ensure_ascii=False))
        elif self.fmt == "csv":
            self._csv.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in self.fields})
            sys.stdout.flush()
        else:
            value = row.get("error")
            text = f"ERROR {value}" if value else row.get(self.fields[1], "")
            click.echo(f"{row.get(self.fields[0])}\t{text}")


def _is_label_file(value: str) -> bool:
    """``tag --labels``: an existing path, or a value that looks like one (a path separator, a list-file suffix)."""
    path = Path(value)
    return path.exists() or "/" in value or os.sep in value or path.suffix.lower() in LABEL_FILE_SUFFIXES


def _load_task(cls_path: str, model: str, device: str, dtype: str, batch_size: int):
    import importlib

    module, name = cls_path.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    try:
        return cls(model, device=device, dtype=dtype, batch_size=batch_size)
    except Exception as e:  # noqa: BLE001 - one clear line for any load failure
        fail(f"cannot load model {model!r}: {e}")


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@model_options(default="blip-base-caption-coco")
@click.option("--format", "fmt", default="jsonl", show_default=True, type=click.Choice(["jsonl", "csv", "text"]))
@click.option("--num-beams", default=3, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--max-length",
    default=20,
    show_default=True,
    type=click.IntRange(min=1),
    help="Counts the prompt tokens; at most the model's text positions (512).",
)
@click.option(
    "--min-length", default=5, show_default=True, type=click.IntRange(min=0), help="Counts the prompt tokens."
)
@click.option("--max-new-tokens", default=None, type=click.IntRange(min=1), help="Overrides --max-length.")
@click.option("--sample", is_flag=True, help="Nucleus sampling instead of beam search.")
@click.option("--top-p", default=0.9, show_default=True, type=float)
@click.option("--top-k", default=50, show_default=True, type=int)
@click.option("--repetition-penalty", default=None, type=float, help="Default 1.0 (beam) / 1.1 (sampling).")
@click.option("--prompt", default=None, help='Caption prefix (default "a picture of ").')
@click.option("--num-captions", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=None, type=int, help="Seed for sampling.")
def caption(
    paths,
    model,
    device,
    dtype,
    batch_size,
    fmt,
    num_beams,
    max_length,
    min_length,
    max_new_tokens,
    sample,
    top_p,
    top_k,
    repetition_penalty,
    prompt,
    num_captions,
    seed,
):
    """Caption images (files or folders, recursive); one result row per image on stdout.

    \b
    Examples:
      openblip caption photo.jpg
      openblip caption photos/ --format csv --num-beams 5
      openblip caption photo.jpg --sample --num-captions 3 --seed 0
    """
    from openblip.config import BlipConfig
    from openblip.image import ImageLoadError, load_image
    from openblip.tasks.caption import check_caption_args

    settings = dict(
        num_beams=num_beams,
        max_length=max_length,
        max_new_tokens=max_new_tokens,
        repetition_penalty=repetition_penalty,
        sample=sample,
        num_captions=num_captions,
    )
    try:  # the usage errors caught before the model loads (the prompt is the default one unless given)
        check_caption_args(BlipConfig.prompt if prompt is None else prompt, **settings)
    except ValueError as e:
        fail(str(e), EXIT_USAGE)
    files = expand_paths(paths)
    if not files:
        fail("no image files found in the given paths")
    task = _load_task("openblip.tasks.caption.Captioner", model, device, dtype, batch_size)
    try:  # the model's own prompt and position limit, before any row is written
        check_caption_args(
            task.model.config.prompt if prompt is None else prompt,
            tokenizer=task.tokenizer,
            max_positions=task.model.config.text.max_position_embeddings,
            **settings,
        )
    except ValueError as e:
        fail(str(e), EXIT_USAGE)
    writer = RowWriter(
        fmt, ["path", "caption", "captions", "error"] if num_captions > 1 else ["path", "caption", "error"]
    )
    failed = 0
    with _progress(len(files), "captioning") as bar:
        for start in range(0, len(files), batch_size):
            group = files[start : start + batch_size]
            rows: list[dict | None] = [None] * len(group)  # written in input order once the batch is done
            good, images = [], []
            for i, f in enumerate(group):
                try:
                    images.append(load_image(f))
                    good.append(i)
                except ImageLoadError as e:
                    failed += 1
                    rows[i] = {"path": str(f), "caption": None, "error": e.reason}
            if images:
                try:
                    results = task.caption(
                        images,
                        num_beams=num_beams,
                        max_length=max_length,
                        min_length=min_length,
                        max_new_tokens=max_new_tokens,
                        sample=sample,
                        top_p=top_p,
                        top_k=top_k,
                        repetition_penalty=repetition_penalty,
                        prompt=prompt,
                        num_captions=num_captions,
                        seed=seed,
                    )
                except ValueError as e:
                    fail(str(e))
                for i, res in zip(good, results):
                    row = {"path": str(group[i]), "caption": res if num_captions == 1 else res[0], "error": None}
                    if num_captions > 1:
                        row["captions"] = res if fmt == "jsonl" else " | ".join(res)
                    rows[i] = row
            for row in rows:
                writer.write(row)
            bar.update(len(group))
    if failed == len(files):
        sys.exit(EXIT_FAIL)
    sys.exit(EXIT_PARTIAL if failed else EXIT_OK)


@main.command()
@click.option("--task", default=None, help="Only checkpoints for this task.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def models(task, as_json):
    """List architectures and released checkpoints, and whether each is in the local cache."""
    from openblip.config import list_architectures
    from openblip.pretrained import PRETRAINED, is_cached

    rows = [
        {
            "name": e.name,
            "task": e.task,
            "arch": e.arch,
            "image_size": e.image_size,
            "source": e.source,
            "cached": is_cached(e.name),
            "description": e.description,
        }
        for e in PRETRAINED.values()
        if task is None or e.task == task
    ]
    if as_json:
        click.echo(json.dumps({"architectures": list_architectures(), "checkpoints": rows}, indent=2))
        return
    click.echo("architectures: " + ", ".join(list_architectures()))
    click.echo(f"{'name':42} {'task':10} {'arch':11} {'size':>4} {'source':8} cached")
    for r in rows:
        click.echo(
            f"{r['name']:42} {r['task']:10} {r['arch']:11} {r['image_size']:>4} {r['source']:8} "
            f"{'yes' if r['cached'] else 'no'}"
        )


@main.command()
@click.argument("names", nargs=-1, required=True)
def download(names):
    """Download released checkpoints into the Hugging Face cache (hash-checked where known)."""
    from openblip.pretrained import DownloadError, UnknownModelError
    from openblip.pretrained import download as _download

    code = EXIT_OK
    for name in names:
        try:
            click.echo(f"{name}\t{_download(name)}")
        except (DownloadError, UnknownModelError) as e:
            click.echo(f"error: {e}", err=True)
            code = EXIT_FAIL
    sys.exit(code)


@main.command()
@click.argument("src", type=click.Path(exists=True))
@click.argument("dst", type=click.Path())
@click.option("--to", "to", required=True, type=click.Choice(["openblip", "hf", "official"]), help="Target layout.")
@click.option("--task", default=None, help="Task model to build (detected when omitted).")
@click.option(
    "--no-strict",
    "loose",
    is_flag=True,
    help="Convert the --task part of a larger checkpoint (e.g. --task caption of a pre-training file); what is "
    "left out is listed on stderr. Missing or misshapen tensors are still an error.",
)
def convert(src, dst, to, task, loose):
    """Convert a checkpoint between the official .pth, Hugging Face and openblip layouts.

    Only the task model is written; momentum encoders and queues (training state of retrieval and pre-training
    files) are left out, with a note on stderr.

    \b
    Examples:
      openblip convert model_base_caption_capfilt_large.pth out/ --to openblip
      openblip convert out/ hf_dir/ --to hf
      openblip convert hf_dir/ model.pth --to official
      openblip convert model_base_capfilt_large.pth cap/ --to hf --task caption --no-strict
    """
    from openblip.checkpoint import CheckpointError, convert_checkpoint

    try:
        out, report = convert_checkpoint(src, dst, to=to, task=task, strict=not loose, return_report=True)
    except (CheckpointError, ValueError) as e:
        fail(str(e))
    if report.training_keys:
        click.echo(
            f"note: left out {len(report.training_keys)} training-state tensors (momentum encoders, queues)", err=True
        )
    if report.unexpected:
        modules = sorted({k.split(".")[0] for k in report.unexpected})
        click.echo(f"note: left out {len(report.unexpected)} tensors of {', '.join(modules)} (--no-strict)", err=True)
    click.echo(str(out))


@main.command()
@click.option("--out", default=None, type=click.Path(), help="Where to save the tiny model (default: a temp dir).")
@click.option("--seed", default=0, show_default=True, type=int)
def smoke(out, seed):
    """Offline smoke test: build a tiny random BLIP, save/load it, caption a sample photo.

    Needs no download; shows the whole inference path works on this machine.
    """
    import tempfile

    import numpy as np
    import torch

    from openblip.api import create_model
    from openblip.tasks.caption import Captioner

    torch.manual_seed(seed)
    out = Path(out or tempfile.mkdtemp(prefix="openblip-smoke-"))
    model = create_model("blip-tiny", "caption")
    model.save_pretrained(str(out))
    cap = Captioner(str(out))
    rng = np.random.default_rng(seed)
    image = (rng.random((64, 64, 3)) * 255).astype("uint8")
    text = cap.caption(image, max_length=12, min_length=5)[0]
    click.echo(json.dumps({"model": str(out), "caption": text, "note": "random weights: the words are arbitrary"}))


def _load_or_fail(path):
    from openblip.image import ImageLoadError, load_image

    try:
        return load_image(path)
    except ImageLoadError as e:
        fail(str(e))


@main.command()
@click.argument("image", type=click.Path())
@click.argument("questions", nargs=-1, required=True)
@model_options(default="blip-base-vqa-capfilt-l")
@click.option("--method", default="generate", show_default=True, type=click.Choice(["generate", "rank"]))
@click.option(
    "--answers",
    "answer_list",
    default=None,
    type=click.Path(exists=True),
    help="Answer list for --method rank: a JSON list of strings (.json) or a text file with one answer per line.",
)
@click.option("--k-test", default=128, show_default=True, type=click.IntRange(min=1))
def vqa(image, questions, model, device, dtype, batch_size, method, answer_list, k_test):
    """Answer questions about an image; one JSON object per question.

    \b
    Example:
      openblip vqa photo.jpg "how many dogs are there?" "what colour is the ball?"
    """
    from openblip.tasks.vqa import load_answer_list

    if method == "rank" and not answer_list:
        fail("--method rank needs --answers FILE", EXIT_USAGE)
    candidates = None
    if method == "rank":
        try:
            candidates = load_answer_list(answer_list)
        except (ValueError, OSError) as e:
            fail(str(e), EXIT_USAGE)
    img = _load_or_fail(image)
    task = _load_task("openblip.tasks.vqa.VQA", model, device, dtype, batch_size)
    answers = task.answer([img] * len(questions), list(questions), method=method, answer_list=candidates, k_test=k_test)
    for q, a in zip(questions, answers):
        click.echo(json.dumps({"image": image, "question": q, "answer": a}, ensure_ascii=False))


@main.command()
@click.argument("image", type=click.Path())
@click.argument("texts", nargs=-1, required=True)
@model_options(default="blip-base-retrieval-coco")
@click.option(
    "--first-token",
    default="enc",
    show_default=True,
    type=click.Choice(["enc", "cls"]),
    help="[ENC] as in training; 'cls' reproduces the original demo class and transformers.",
)
def match(image, texts, model, device, dtype, batch_size, first_token):
    """Image-text matching: ITM probability and ITC cosine of each text, best first."""
    img = _load_or_fail(image)
    task = _load_task("openblip.tasks.retrieval.Retriever", model, device, dtype, batch_size)
    for row in task.match(img, list(texts), first_token=first_token):
        click.echo(json.dumps({"image": image, **row}, ensure_ascii=False))


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@model_options(default="blip-base-retrieval-coco")
@click.option(
    "--labels",
    required=True,
    help="A label file (one per line, or a .json list of strings) or comma-separated labels. A value with a path "
    f"separator or ending in {', '.join(sorted(LABEL_FILE_SUFFIXES))} is a file name and must exist.",
)
@click.option("--top-k", default=5, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--template", default="a picture of {}", show_default=True, help="Text for each label; {} stands for the label."
)
@click.option("--threshold", default=0.0, show_default=True, type=float, help="Minimum ITM probability.")
def tag(paths, model, device, dtype, batch_size, labels, top_k, template, threshold):
    """Zero-shot tagging: ITC over the label list, ITM re-rank of the top labels; one JSON row per image."""
    from openblip.image import ImageLoadError, load_image
    from openblip.tasks.tagging import check_template, load_labels

    try:
        check_template(template)
        label_list = load_labels(labels if _is_label_file(labels) else labels.split(","))
    except (ValueError, OSError) as e:
        fail(str(e), EXIT_USAGE)
    files = expand_paths(paths)
    if not files:
        fail("no image files found in the given paths")
    task = _load_task("openblip.tasks.tagging.Tagger", model, device, dtype, batch_size)
    failed = 0
    with _progress(len(files), "tagging") as bar:
        for f in files:
            try:
                img = load_image(f)
            except ImageLoadError as e:
                failed += 1
                click.echo(json.dumps({"path": str(f), "tags": None, "error": e.reason}))
                bar.update(1)
                continue
            tags = task.tag([img], label_list, top_k=top_k, template=template, threshold=threshold)[0]
            click.echo(json.dumps({"path": str(f), "tags": tags, "error": None}, ensure_ascii=False))
            bar.update(1)
    if failed == len(files):
        sys.exit(EXIT_FAIL)
    sys.exit(EXIT_PARTIAL if failed else EXIT_OK)


@main.command()
@click.option("--images", "image_dir", required=True, type=click.Path(exists=True), help="Image file or folder.")
@click.option("--texts", "text_file", required=True, type=click.Path(exists=True), help="One text per line.")
@model_options(default="blip-base-retrieval-coco")
@click.option("--k", "k", default=10, show_default=True, type=click.IntRange(min=1), help="Results per query.")
@click.option("--k-test", default=128, show_default=True, type=click.IntRange(min=1), help="ITM re-ranking depth.")
@click.option("--direction", default="t2i", show_default=True, type=click.Choice(["t2i", "i2t", "both"]))
@click.option("--no-itm", is_flag=True, help="ITC only (no ITM re-ranking).")
def rank(image_dir, text_file, model, device, dtype, batch_size, k, k_test, direction, no_itm):
    """Retrieval: ITC top-k then ITM re-rank (score = ITM logit + cosine), as the original evaluation."""
    from openblip.image import ImageLoadError, load_image
    from openblip.tasks._common import read_text_file

    try:
        texts = [ln.strip() for ln in read_text_file(text_file, "--texts file").splitlines() if ln.strip()]
    except (ValueError, OSError) as e:
        fail(str(e), EXIT_USAGE)
    if not texts:
        fail(f"{text_file} has no texts", EXIT_USAGE)
    files, images, failed = expand_paths((image_dir,)), [], 0
    good = []
    for f in files:
        try:
            images.append(load_image(f))
            good.append(f)
        except ImageLoadError as e:
            failed += 1
            click.echo(json.dumps({"path": str(f), "error": e.reason}))
    if not images:
        fail("no readable images")
    task = _load_task("openblip.tasks.retrieval.Retriever", model, device, dtype, batch_size)
    res = task.rank(images, texts, k=k_test, itm=not no_itm)
    if direction in ("t2i", "both"):
        for j, order in enumerate(res.t2i_ranking):
            hits = [{"path": str(good[i]), "score": float(res.t2i[j, i])} for i in order[:k]]
            click.echo(json.dumps({"query": texts[j], "results": hits}, ensure_ascii=False))
    if direction in ("i2t", "both"):
        for i, order in enumerate(res.i2t_ranking):
            hits = [{"text": texts[j], "score": float(res.i2t[i, j])} for j in order[:k]]
            click.echo(json.dumps({"image": str(good[i]), "results": hits}, ensure_ascii=False))
    sys.exit(EXIT_PARTIAL if failed else EXIT_OK)
