"""``openblip eval``: evaluate a model (or score a result file) on an annotation file of the original formats.

Each subcommand prints one JSON object of metrics on stdout, in percent as :mod:`openblip.eval` reports them.
The model paths run the training loop's evaluation hooks (:mod:`openblip.train.hooks`: ``CaptionMetricsEval``,
``RetrievalEval``, ``VQARankEval``, ``NLVREval``); ``eval caption`` and ``eval vqa`` without ``--model`` score an
existing result file (COCO caption results ``[{"image_id", "caption"}]``, VQA results ``[{"question_id",
"answer"}]``) against the annotation file's ground truth, matched by id.

Exit codes: 0 success; 2 bad input, found before any model loads (missing or malformed files, mismatched ids,
options of the other mode); 1 a failure while running (the model does not load, an image is unreadable, Java is
missing for the caption metrics). torch is imported only when a command runs.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from openblip.cli import EXIT_FAIL, EXIT_OK, EXIT_USAGE, fail, main, model_options

#: ids shown in a mismatch message before "..."
_SHOWN_IDS = 10


# --------------------------------------------------------------------------------------------------------------
# input checks (all exit 2 with one line)
# --------------------------------------------------------------------------------------------------------------


def _check_file(path: str, opt: str) -> None:
    p = Path(path)
    if p.is_dir():
        fail(f"{opt} {path} is a folder, not a file", EXIT_USAGE)
    if not p.is_file():
        fail(f"{opt} {path} does not exist", EXIT_USAGE)


def _check_image_root(image_root: str | None) -> None:
    if image_root is not None and not Path(image_root).is_dir():
        fail(f"--image-root {image_root} is not a folder", EXIT_USAGE)


def _check_output(path: str | None, opt: str = "--results") -> None:
    if path is not None and Path(path).is_dir():
        fail(f"{opt} {path} is a folder; give a file name to write the results to", EXIT_USAGE)


def _read_json(path: str, opt: str) -> Any:
    from openblip.tasks._common import read_text_file

    try:
        text = read_text_file(path, opt)  # names a missing file, a folder, non-UTF-8 text
    except (FileNotFoundError, IsADirectoryError, ValueError) as e:
        fail(str(e), EXIT_USAGE)
    except OSError as e:
        fail(f"cannot read {opt} {path}: {e.strerror or e}", EXIT_USAGE)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        fail(f"{opt} {path}: invalid JSON: {e}", EXIT_USAGE)


def _kind(value: Any) -> str:
    from openblip.tasks._common import json_kind

    return json_kind(value)


def _load_records(path: str, max_items: int | None) -> list[dict]:
    """The annotation records of ``path`` (a JSON list, or ``.jsonl``), the first ``max_items`` of them."""
    from openblip.data.datasets import load_annotations

    _check_file(path, "--annotations")
    try:
        records = load_annotations(path)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        fail(f"--annotations {path}: invalid JSON: {e}", EXIT_USAGE)
    except (OSError, ValueError, TypeError) as e:
        fail(f"--annotations {path}: {getattr(e, 'strerror', None) or e}", EXIT_USAGE)
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            fail(f"--annotations {path}: record {i} is {_kind(r)}, not an object", EXIT_USAGE)
    if max_items is not None:
        records = records[:max_items]
    if not records:
        fail(f"--annotations {path} has no records", EXIT_USAGE)
    return records


def _need(records: Sequence[dict], path: str, checks: dict[str, tuple[Callable[[Any], bool], str]]) -> None:
    """Every record has every key of ``checks`` with a value passing its test (else: 'record i: KEY must be ...')."""
    for i, r in enumerate(records):
        for key, (ok, what) in checks.items():
            if key not in r:
                fail(f"--annotations {path}: record {i} has no {key!r}", EXIT_USAGE)
            if not ok(r[key]):
                fail(f"--annotations {path}: record {i}: {key!r} must be {what}, got {_kind(r[key])}", EXIT_USAGE)


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _is_captions(v: Any) -> bool:
    return isinstance(v, str) or (isinstance(v, list) and len(v) > 0 and all(isinstance(c, str) for c in v))


_CAPTION_RECORD = {
    "image": (_is_str, "a path string"),
    "caption": (_is_captions, "a caption or a non-empty list of captions"),
}


def _check_caption_ids(records: Sequence[dict], path: str) -> None:
    """An explicit image id (``img_id``, else ``image_id``, as CaptionEvalDataset reads it) must be an integer."""
    for i, r in enumerate(records):
        key = "img_id" if "img_id" in r else "image_id"
        value = r.get(key)
        if value is None:
            continue
        try:
            int(value)
        except (TypeError, ValueError):
            fail(
                f"--annotations {path}: record {i}: {key!r} must be an integer, got {value!r} (an evaluation file "
                "has one record per image with a list of captions, as COCO-Karpathy val/test)",
                EXIT_USAGE,
            )


def _model_only(ctx: click.Context, names: Sequence[str]) -> None:
    """Without --model, the options that only drive the model must not be given."""
    flags = {p.name: p.opts[0] for p in ctx.command.params}
    for name in names:
        if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT:
            opt = flags[name]
            fail(f"{opt} only applies with --model (without it the --results file is scored)", EXIT_USAGE)


def _norm_id(value: Any) -> int | str | None:
    """An image/question id as compared: integers (and integer strings such as ``"42"``) as ``int``, other strings
    as they are; ``None`` for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        s = value.strip()
        return int(s) if s.isdigit() else s
    return None


def _id_list(ids: Sequence[Any]) -> str:
    shown = ", ".join(str(i) for i in list(ids)[:_SHOWN_IDS])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > _SHOWN_IDS else "")


def _results_by_id(rows: Any, path: str, id_key: str, value_key: str, what: str) -> dict[Any, str]:
    """``{id: value}`` from a result file ``[{id_key, value_key}]``; exit 2 on a wrong shape or a repeated id."""
    if not isinstance(rows, list):
        fail(
            f"--results {path} must hold a JSON list of {{{id_key!r}, {value_key!r}}} objects, not {_kind(rows)}",
            EXIT_USAGE,
        )
    out: dict[Any, str] = {}
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or id_key not in row or value_key not in row:
            fail(f"--results {path}: item {i} is not an object with {id_key!r} and {value_key!r}", EXIT_USAGE)
        key = _norm_id(row[id_key])
        if key is None:
            fail(f"--results {path}: item {i}: {id_key!r} must be an integer or a string", EXIT_USAGE)
        if not isinstance(row[value_key], str):
            fail(f"--results {path}: item {i}: {value_key!r} must be {what} string", EXIT_USAGE)
        if key in out:
            fail(f"--results {path}: {id_key} {key} appears more than once", EXIT_USAGE)
        out[key] = row[value_key]
    return out


def _match_ids(expected: Sequence[Any], got: dict, ann: str, results: str, id_key: str) -> None:
    """The result file must cover exactly the annotation file's ids (exit 2 naming the missing and extra ones)."""
    want = set(expected)
    missing = [k for k in expected if k not in got]
    extra = [k for k in got if k not in want]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} {id_key}(s) of {ann} have no result: {_id_list(missing)}")
        if extra:
            parts.append(f"{len(extra)} {id_key}(s) of {results} are not in {ann}: {_id_list(extra)}")
        fail(f"--results does not match --annotations: {'; '.join(parts)}", EXIT_USAGE)


# --------------------------------------------------------------------------------------------------------------
# running (exit 1 with one line)
# --------------------------------------------------------------------------------------------------------------


def _run(fn: Callable[[], Any]) -> Any:
    """``fn()``; an unreadable image or a failing scorer is one line on stderr and exit 1."""
    from openblip.image import ImageLoadError

    try:
        return fn()
    except ImageLoadError as e:
        fail(str(e), EXIT_FAIL)
    except (RuntimeError, ImportError, OSError, ValueError, TypeError) as e:
        message = " ".join(str(e).split()) or type(e).__name__
        fail(f"evaluation failed: {message}", EXIT_FAIL)


def _run_hook(hook: Any, model: Any) -> dict[str, float]:
    """A hook as the training loop runs it (eval mode, no gradients): :func:`openblip.train.hooks.run_hook`."""
    from openblip.train.hooks import run_hook

    return _run(lambda: run_hook(hook, model, step=0, epoch=0))


def _emit(metrics: dict) -> None:
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        return v

    click.echo(json.dumps(clean(metrics)))
    sys.exit(EXIT_OK)


def _load(cls_path: str, model: str, device: str, dtype: str, batch_size: int) -> Any:
    from openblip.cli.commands import _load_task

    return _load_task(cls_path, model, device, dtype, batch_size)


def _require_model(model: str | None, command: str) -> None:
    if not model:
        fail(f"eval {command} needs --model (a registry name or a local checkpoint)", EXIT_USAGE)


def _hook(factory: Callable[[], Any], ann: str) -> Any:
    """Build an evaluation hook (it reads the annotation file); its errors are usage errors naming the file."""
    try:
        return factory()
    except (OSError, ValueError, TypeError, KeyError) as e:
        detail = f"missing field {e}" if isinstance(e, KeyError) else (getattr(e, "strerror", None) or str(e))
        fail(f"--annotations {ann}: {detail}", EXIT_USAGE)


# --------------------------------------------------------------------------------------------------------------
# the commands
# --------------------------------------------------------------------------------------------------------------


def _common(f):
    f = click.option(
        "--max-items", default=None, type=click.IntRange(min=1), help="Evaluate only the first N annotation records."
    )(f)
    f = model_options(default=None)(f)
    f = click.option(
        "--image-root",
        default=None,
        type=click.Path(),
        help="Folder the annotation file's image paths are relative to (a generated world: the world folder).",
    )(f)
    f = click.option(
        "--annotations",
        "ann",
        required=True,
        type=click.Path(),
        help="Annotation file in the original format (JSON list of records, or .jsonl).",
    )(f)
    return f


@main.group("eval", context_settings={"help_option_names": ["-h", "--help"]})
def eval_group() -> None:
    """Evaluate a model (or score a result file) on an annotation file; one JSON object of metrics, in percent.

    \b
    Examples:
      openblip eval caption --annotations coco_karpathy_test.json --image-root coco/ --model blip-base-caption-coco
      openblip eval caption --annotations coco_karpathy_test.json --results captions.json
      openblip eval retrieval --annotations coco_karpathy_test.json --image-root coco/ --model M --k 256
      openblip eval vqa --annotations vqa_val.json --image-root coco/ --model M --answers answer_list.json
      openblip eval vqa --annotations vqa_val.json --results answers.json
      openblip eval nlvr --annotations nlvr_dev.json --image-root nlvr2/ --model blip-base-nlvr
    """


# ---- caption ---------------------------------------------------------------------------------------------------


def _caption_refs(hook: Any, ann: str) -> dict[Any, list[str]]:
    """``{image_id: references}`` of a CaptionMetricsEval, every record with its own image id."""
    refs: dict[Any, list[str]] = {}
    for i, (iid, r, image) in enumerate(zip(hook.image_ids, hook.references, hook.images)):
        if iid is None:
            fail(
                f"--annotations {ann}: record {i} ({image}) has no image id: give it an 'image_id' or a file name "
                "ending in digits",
                EXIT_USAGE,
            )
        if iid in refs:
            fail(f"--annotations {ann}: image id {iid} appears in several records", EXIT_USAGE)
        refs[iid] = r
    return refs


@eval_group.command("caption")
@_common
@click.option(
    "--results",
    default=None,
    type=click.Path(),
    help="With --model: write the generated captions here ([{image_id, caption}]). Without: score this file.",
)
@click.option("--num-beams", default=3, show_default=True, type=click.IntRange(min=1))
@click.option("--max-length", default=20, show_default=True, type=click.IntRange(min=1), help="Counts the prompt.")
@click.option("--min-length", default=5, show_default=True, type=click.IntRange(min=0), help="Counts the prompt.")
@click.option("--prompt", default=None, help="Caption prefix (default: the model's, 'a picture of ').")
@click.pass_context
def caption(ctx, ann, image_root, model, device, dtype, batch_size, max_items, results, **gen):
    """COCO caption metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr; SPICE when installed): beam-search captions of
    --model scored against the annotation file's references, or a --results file scored without a model.

    \b
    Annotation records: {"image", "caption": [references], "image_id"?} (COCO-Karpathy val/test); the image id
    is "image_id"/"img_id" or the number at the end of the file name. Result file (COCO results):
    [{"image_id", "caption"}], exactly one per annotation image. Needs Java (pycocoevalcap).
    """
    from openblip.train.hooks import CaptionMetricsEval

    records = _load_records(ann, max_items)
    _need(records, ann, _CAPTION_RECORD)
    _check_caption_ids(records, ann)
    if model is None:
        if results is None:
            fail("eval caption needs --model (generate and score captions) or --results (score a file)", EXIT_USAGE)
        _model_only(
            ctx, ["image_root", "device", "dtype", "batch_size", "num_beams", "max_length", "min_length", "prompt"]
        )
        hook = _hook(lambda: CaptionMetricsEval(records, None), ann)
        refs = _caption_refs(hook, ann)
        preds = _results_by_id(_read_json(results, "--results"), results, "image_id", "caption", "a caption")
        _match_ids(list(refs), preds, ann, results, "image_id")
        from openblip.eval import caption_metrics

        metrics = _run(lambda: caption_metrics(preds, refs))
        _emit({**metrics, "n_images": len(refs)})

    from openblip.config import BlipConfig
    from openblip.tasks.caption import check_caption_args

    _check_image_root(image_root)
    _check_output(results)
    prompt = gen["prompt"]
    settings = dict(num_beams=gen["num_beams"], max_length=gen["max_length"])
    try:
        check_caption_args(BlipConfig.prompt if prompt is None else prompt, **settings)
    except ValueError as e:
        fail(str(e), EXIT_USAGE)
    hook = _hook(
        lambda: CaptionMetricsEval(
            records,
            image_root,
            num_beams=gen["num_beams"],
            max_length=gen["max_length"],
            min_length=gen["min_length"],
            prompt=BlipConfig.prompt if prompt is None else prompt,
            batch_size=batch_size,
            result_file=results,
        ),
        ann,
    )
    if results is not None:
        _caption_refs(hook, ann)  # the result file needs one image id per record
    task = _load("openblip.tasks.caption.Captioner", model, device, dtype, batch_size)
    if prompt is None:
        hook.prompt = task.model.config.prompt
    try:
        check_caption_args(
            hook.prompt,
            tokenizer=task.tokenizer,
            max_positions=task.model.config.text.max_position_embeddings,
            **settings,
        )
    except ValueError as e:
        fail(str(e), EXIT_USAGE)
    metrics = _run_hook(hook, task.model)
    _emit({**metrics, "n_images": len(hook.images)})


# ---- retrieval -------------------------------------------------------------------------------------------------


@eval_group.command("retrieval")
@_common
@click.option(
    "--k",
    "k_test",
    default=256,
    show_default=True,
    type=click.IntRange(min=1),
    help="ITM re-ranking depth (k_test: 256 for COCO, 128 for Flickr30k in the original).",
)
def retrieval(ann, image_root, model, device, dtype, batch_size, max_items, k_test):
    """Image-text retrieval TR/IR@1/5/10 and their means, as the original evaluation: ITC top-k, then ITM
    re-ranking (score = ITM logit + cosine). The same ranking before re-ranking gives the itc_* keys.

    \b
    Annotation records: {"image", "caption": [captions]} (COCO-Karpathy / Flickr30k val/test).
    """
    from openblip.train.hooks import RetrievalEval

    records = _load_records(ann, max_items)
    _need(records, ann, _CAPTION_RECORD)
    _require_model(model, "retrieval")
    _check_image_root(image_root)
    hook = _hook(lambda: RetrievalEval(records, image_root, k_test=k_test, batch_size=batch_size, itc=True), ann)
    task = _load("openblip.tasks.retrieval.Retriever", model, device, dtype, batch_size)
    metrics = _run_hook(hook, task.model)
    _emit({**metrics, "n_images": len(hook.images), "n_texts": len(hook.texts), "k": k_test})


# ---- vqa -------------------------------------------------------------------------------------------------------


def _vqa_metrics(predictions: list[str], records: list[dict]) -> dict:
    """:func:`openblip.eval.vqa_accuracy` of predictions aligned with ``records``, with the per-type breakdowns
    when every record has a ``question_type`` / ``answer_type``."""
    from openblip.eval import vqa_accuracy

    answers = [[r["answer"]] if isinstance(r["answer"], str) else r["answer"] for r in records]
    types = {
        key: [r[key] for r in records] if all(isinstance(r.get(key), str) for r in records) else None
        for key in ("question_type", "answer_type")
    }
    res = vqa_accuracy(predictions, answers, question_types=types["question_type"], answer_types=types["answer_type"])
    out: dict[str, Any] = {"acc": res["overall"], "n_questions": len(predictions)}
    for key in ("per_question_type", "per_answer_type"):
        if key in res:
            out[key] = dict(sorted(res[key].items()))
    return out


def _is_answers(v: Any) -> bool:
    return isinstance(v, str) or (isinstance(v, list) and len(v) > 0 and all(isinstance(a, str) for a in v))


_ANSWERS = (_is_answers, "an answer or a non-empty list of answers")


@eval_group.command("vqa")
@_common
@click.option(
    "--answers",
    "answer_list",
    default=None,
    type=click.Path(),
    help="Answer list of rank inference: a JSON list of strings (.json) or a text file, one answer per line.",
)
@click.option(
    "--k",
    "k_test",
    default=128,
    show_default=True,
    type=click.IntRange(min=1),
    help="Candidates re-scored by the answer decoder (k_test, 128 in the original).",
)
@click.option(
    "--results",
    default=None,
    type=click.Path(),
    help="With --model: write the answers here ([{question_id, answer}]). Without: score this file.",
)
@click.pass_context
def vqa(ctx, ann, image_root, model, device, dtype, batch_size, max_items, answer_list, k_test, results):
    """VQA accuracy (official answer normalisation, min(#humans/3, 1) averaged leave-one-out) of rank inference
    over --answers with --model, or of a --results file without a model.

    \b
    Annotation records: {"question_id", "image", "question", "answer": [human answers]} (VQA v2 as BLIP's
    vqa_val.json; "question_type"/"answer_type", when every record has them, give per-type accuracies).
    Without answers (test-dev) only --results is written. Result file: [{"question_id", "answer"}], exactly one
    per annotation question.
    """
    records = _load_records(ann, max_items)
    if model is None:
        if results is None:
            fail("eval vqa needs --model and --answers (answer questions) or --results (score a file)", EXIT_USAGE)
        _model_only(ctx, ["image_root", "device", "dtype", "batch_size", "answer_list", "k_test"])
        _need(records, ann, {"answer": _ANSWERS})
        qids = [_norm_id(r.get("question_id", i)) for i, r in enumerate(records)]
        for i, q in enumerate(qids):
            if q is None:
                fail(f"--annotations {ann}: record {i}: 'question_id' must be an integer or a string", EXIT_USAGE)
        if len(set(qids)) != len(qids):
            seen: set = set()
            dup = next(q for q in qids if q in seen or seen.add(q))
            fail(f"--annotations {ann}: question_id {dup} appears in several records", EXIT_USAGE)
        preds = _results_by_id(_read_json(results, "--results"), results, "question_id", "answer", "an answer")
        _match_ids(qids, preds, ann, results, "question_id")
        _emit(_run(lambda: _vqa_metrics([preds[q] for q in qids], records)))

    from openblip.tasks.vqa import load_answer_list
    from openblip.train.hooks import VQARankEval

    _need(records, ann, {"image": (_is_str, "a path string"), "question": (_is_str, "a question string")})
    without = [i for i, r in enumerate(records) if "answer" not in r]
    has_answers = not without
    if has_answers:
        _need(records, ann, {"answer": _ANSWERS})
    elif results is None:
        fail(
            f"--annotations {ann} has no ground-truth answers (record {without[0]} has no 'answer'; e.g. VQA "
            "test-dev): give --results FILE to write the answers",
            EXIT_USAGE,
        )
    if answer_list is None:
        fail("eval vqa with --model needs --answers (the answer list of rank inference)", EXIT_USAGE)
    try:
        candidates = load_answer_list(answer_list)
    except (OSError, ValueError) as e:
        fail(str(e), EXIT_USAGE)
    _check_image_root(image_root)
    _check_output(results)
    hook = _hook(
        lambda: VQARankEval(records, image_root, candidates, k_test=k_test, batch_size=batch_size, result_file=results),
        ann,
    )
    task = _load("openblip.tasks.vqa.VQA", model, device, dtype, batch_size)
    _run_hook(hook, task.model)
    if not has_answers:
        click.echo(f"no ground-truth answers in {ann}: wrote the answers to {results}", err=True)
        _emit({"n_questions": len(records)})
    # the hook's accuracy, with the per-type breakdowns of the same answers
    _emit(_run(lambda: _vqa_metrics(hook.predictions, records)))


# ---- nlvr ------------------------------------------------------------------------------------------------------


def _is_pair(v: Any) -> bool:
    return isinstance(v, list) and len(v) == 2 and all(isinstance(p, str) for p in v)


def _is_label(v: Any) -> bool:
    from openblip.eval.nlvr import as_bool_label

    try:
        as_bool_label(v)
    except ValueError:
        return False
    return True


@eval_group.command("nlvr")
@_common
def nlvr(ann, image_root, model, device, dtype, batch_size, max_items):
    """NLVR2 accuracy of an NLVR model (argmax of its classifier) on an annotation file.

    \b
    Annotation records: {"images": [left, right], "sentence", "label": "True" | "False"} (BLIP's nlvr_dev.json).
    """
    from openblip.train.hooks import NLVREval

    records = _load_records(ann, max_items)
    _need(
        records,
        ann,
        {
            "images": (_is_pair, "a list of two image paths"),
            "sentence": (_is_str, "a string"),
            "label": (_is_label, "'True' or 'False'"),
        },
    )
    _require_model(model, "nlvr")
    _check_image_root(image_root)
    hook = _hook(lambda: NLVREval(records, image_root, batch_size=batch_size), ann)
    task = _load("openblip.tasks.nlvr.NLVR", model, device, dtype, batch_size)
    metrics = _run_hook(hook, task.model)
    _emit({**metrics, "n_pairs": len(hook.labels)})
