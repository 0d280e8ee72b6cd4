"""Caption metrics with the COCO caption evaluation pipeline (``pycocoevalcap``), as BLIP's ``coco_caption_eval``.

Scale: **percent** (:data:`SCALE`). Every metric is multiplied by 100, the way the BLIP paper's tables print them:
BLEU-4 39.7 (pycocoevalcap: 0.397), CIDEr 133.3 (pycocoevalcap: 1.333), SPICE 23.8 (0.238). The same holds for
every metric in :mod:`openblip.eval`.

Pipeline (the one BLIP ran through ``COCOEvalCap``):

1. references and predictions are tokenised with the Stanford PTB tokenizer bundled with pycocoevalcap
   (``-preserveLines -lowerCase``; pycocoevalcap's punctuation tokens are then dropped). Both go through one JVM
   run (lines are tokenised independently, so this equals pycocoevalcap's two runs); line-break characters
   inside a caption become spaces, so one caption can never shift the others (pycocoevalcap would misalign them);
2. ``Bleu(4)`` (``bleu1``..``bleu4``), ``Meteor`` (``meteor``), ``Rouge`` (``rouge_l``), ``Cider`` (CIDEr-D,
   ``cider``) and, when available, SPICE (``spice``) score the tokenised captions.

Requirements: ``pycocoevalcap`` (imported lazily, only here) and a Java runtime on ``PATH`` (the tokenizer,
METEOR and SPICE are Java programs). The METEOR JVM (about 8 s to load its paraphrase table) is started once per
process and reused; :func:`close_java_scorers` stops it (it is also stopped at exit).

SPICE additionally needs the Stanford CoreNLP 3.6.0 jars, which pycocoevalcap downloads (about 400 MB) on first
use. With ``spice=None`` (default) SPICE is computed when those jars are present and skipped with one line on
stderr otherwise (or if SPICE fails); ``spice=True`` downloads the jars if needed and raises on failure;
``spice=False`` never computes it. SPICE 1.0 predates the Java module system, so on Java 9+ the JVM is started
with the ``--add-opens`` flags its serialisation library needs (through ``JDK_JAVA_OPTIONS``, which Java 8
ignores).
"""

from __future__ import annotations

import atexit
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "SCALE",
    "CAPTION_METRICS",
    "caption_metrics",
    "caption_accuracy",
    "normalize_caption",
    "ptb_tokenize",
    "spice_available",
    "spice_models_dir",
    "close_java_scorers",
]

SCALE = "percent"
"""Scale of every metric returned by :mod:`openblip.eval`: percentages (0-100; CIDEr can exceed 100)."""

CAPTION_METRICS = ("bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l", "cider", "spice")
"""Keys :func:`caption_metrics` can return, in order (``spice`` only when it was computed)."""

_CORENLP_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")
_SPICE_JAR = "spice-1.0.jar"
# Opened for SPICE's FST serialisation (its cache) on Java >= 9; Java 8 does not read JDK_JAVA_OPTIONS.
_SPICE_ADD_OPENS = " ".join(
    f"--add-opens=java.base/{pkg}=ALL-UNNAMED"
    for pkg in (
        "java.lang",
        "java.lang.reflect",
        "java.math",
        "java.util",
        "java.util.concurrent",
        "java.net",
        "java.text",
        "java.io",
        "java.nio",
    )
)
# Characters the JVM tokenizer (or Python's str.splitlines) may treat as a line break.
_LINE_BREAKS = re.compile("[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
_WS = re.compile(r"\s+")


# --------------------------------------------------------------------------------------------------------------
# environment
# --------------------------------------------------------------------------------------------------------------


def _pycocoevalcap_dir() -> Path:
    try:
        from pycocoevalcap.tokenizer import ptbtokenizer  # pycocoevalcap is a namespace package (no __init__)
    except ImportError as e:
        raise ImportError(
            "caption metrics need the 'pycocoevalcap' package (the COCO caption evaluation BLIP used): "
            "pip install 'pycocoevalcap>=1.2'"
        ) from e
    return Path(ptbtokenizer.__file__).resolve().parent.parent


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise RuntimeError(
            "caption metrics need Java: the PTB tokenizer, METEOR and SPICE of pycocoevalcap are Java programs, "
            "and no 'java' executable was found on PATH. Install a Java runtime (e.g. 'apt-get install "
            "default-jre-headless', 'conda install openjdk' or https://adoptium.net) and make sure 'java' is on PATH."
        )
    return java


def spice_models_dir() -> Path:
    """Folder where SPICE expects the Stanford CoreNLP 3.6.0 jars (inside the installed pycocoevalcap)."""
    return _pycocoevalcap_dir() / "spice" / "lib"


def spice_available() -> bool:
    """Whether SPICE can run without a download (its jar and the CoreNLP 3.6.0 jars are in place)."""
    try:
        lib = spice_models_dir()
    except ImportError:
        return False
    return (lib.parent / _SPICE_JAR).is_file() and all((lib / jar).is_file() for jar in _CORENLP_JARS)


def _spice_hint() -> str:
    try:
        where = str(spice_models_dir())
    except ImportError:
        where = "<pycocoevalcap>/spice/lib"
    return (
        f"to enable it, run caption_metrics(..., spice=True) once with network access (pycocoevalcap downloads "
        f"Stanford CoreNLP 3.6.0, ~400 MB) or place {' and '.join(_CORENLP_JARS)} "
        f"(from stanford-corenlp-full-2015-12-09.zip) in {where}"
    )


def _warn(message: str) -> None:
    print(f"openblip.eval: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------------------
# PTB tokenizer
# --------------------------------------------------------------------------------------------------------------


def ptb_tokenize(captions: Sequence[str]) -> list[str]:
    """Tokenise captions with pycocoevalcap's Stanford PTB tokenizer, exactly as ``PTBTokenizer.tokenize``.

    Each caption is lower-cased and PTB-tokenised on its own line, then pycocoevalcap's punctuation tokens
    (``'' ' `` ` -LRB- -RRB- -LCB- -RCB- . ? ! , : - -- ... ;``) are removed. Line-break characters inside a
    caption are turned into spaces first.

    Raises:
        RuntimeError: If Java is missing or the tokenizer fails.
    """
    pkg = _pycocoevalcap_dir()
    from pycocoevalcap.tokenizer import ptbtokenizer

    captions = list(captions)
    if not captions:
        return []
    for c in captions:
        if not isinstance(c, str):
            raise TypeError(f"captions must be str, got {type(c).__name__}")
    jar = pkg / "tokenizer" / ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR
    punctuation = set(ptbtokenizer.PUNCTUATIONS)
    java = _java()
    text = "\n".join(_LINE_BREAKS.sub(" ", c) for c in captions)
    fd, path = tempfile.mkstemp(prefix="openblip-ptb-", suffix=".txt")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8"))
        cmd = [java, "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase", path]
        proc = subprocess.run(cmd, capture_output=True, stdin=subprocess.DEVNULL)
    finally:
        os.remove(path)
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-5:]
        raise RuntimeError(f"the PTB tokenizer (java) failed with exit status {proc.returncode}: {' | '.join(err)}")
    lines = proc.stdout.decode("utf-8").split("\n")
    if len(lines) < len(captions) or any(line.strip() for line in lines[len(captions) :]):
        raise RuntimeError(f"the PTB tokenizer returned {len(lines)} lines for {len(captions)} captions")
    return [" ".join(w for w in line.rstrip().split(" ") if w not in punctuation) for line in lines[: len(captions)]]


# --------------------------------------------------------------------------------------------------------------
# METEOR (one JVM per process, reused)
# --------------------------------------------------------------------------------------------------------------

_meteor_lock = threading.Lock()
_meteor: Any = None
_atexit_registered = False


def _stop_meteor(m: Any) -> None:
    proc = getattr(m, "meteor_p", None)
    lock = getattr(m, "lock", None)
    if lock is not None and lock.locked():
        lock.release()  # pycocoevalcap leaves it held when a score fails; its __del__ would then hang
    if proc is not None:
        try:
            if proc.stdin:
                proc.stdin.close()
        except OSError:
            pass
        proc.kill()
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()


def close_java_scorers() -> None:
    """Stop the METEOR JVM kept alive between :func:`caption_metrics` calls (no-op when none is running)."""
    global _meteor
    with _meteor_lock:
        if _meteor is not None:
            _stop_meteor(_meteor)
            _meteor = None


def _meteor_score(gts: dict, res: dict) -> float:
    global _meteor, _atexit_registered
    _java()
    from pycocoevalcap.meteor.meteor import Meteor

    with _meteor_lock:
        if _meteor is not None and _meteor.meteor_p.poll() is not None:
            _stop_meteor(_meteor)
            _meteor = None
        if _meteor is None:
            _meteor = Meteor()
            if not _atexit_registered:
                atexit.register(close_java_scorers)
                _atexit_registered = True
        meteor = _meteor
        try:
            score, _ = meteor.compute_score(gts, res)
        except Exception as e:
            err = ""
            if meteor.meteor_p.poll() is not None and meteor.meteor_p.stderr:
                err = meteor.meteor_p.stderr.read().decode("utf-8", "replace").strip()[-500:]
            _stop_meteor(meteor)
            _meteor = None
            raise RuntimeError(f"METEOR (java) failed: {e!r} {err}".strip()) from e
    return float(score)


# --------------------------------------------------------------------------------------------------------------
# SPICE
# --------------------------------------------------------------------------------------------------------------


def _float_or_nan(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _spice_from_results(results: list[dict]) -> float:
    """Mean of the per-image SPICE F-scores (``scores.All.f``), NaN propagating, as pycocoevalcap's ``Spice``."""
    values = [_float_or_nan(item["scores"]["All"]["f"]) for item in results]
    return sum(values) / len(values) if values else math.nan


def _download_spice_models() -> None:
    _pycocoevalcap_dir()
    from pycocoevalcap.spice.get_stanford_models import get_stanford_models

    try:
        get_stanford_models()
    except Exception as e:
        raise RuntimeError(f"could not download the Stanford CoreNLP jars SPICE needs ({e!r}); {_spice_hint()}") from e
    if not spice_available():
        raise RuntimeError(f"the Stanford CoreNLP jars SPICE needs are still missing; {_spice_hint()}")


def _spice_score(gts: dict, res: dict) -> float:
    """SPICE over tokenised captions, running pycocoevalcap's ``spice-1.0.jar`` as its ``Spice`` scorer does."""
    java = _java()
    spice_dir = spice_models_dir().parent
    ids = sorted(gts)
    data = [{"image_id": i, "test": res[i][0], "refs": gts[i]} for i in ids]
    cache_dir = spice_dir / "cache"
    try:
        cache_dir.mkdir(exist_ok=True)
        use_cache = os.access(cache_dir, os.W_OK)
    except OSError:
        use_cache = False
    env = dict(os.environ)
    env["JDK_JAVA_OPTIONS"] = (env.get("JDK_JAVA_OPTIONS", "") + " " + _SPICE_ADD_OPENS).strip()
    with tempfile.TemporaryDirectory(prefix="openblip-spice-") as tmp:
        in_file, out_file = Path(tmp) / "in.json", Path(tmp) / "out.json"
        in_file.write_text(json.dumps(data), encoding="utf-8")
        cmd = [java, "-jar", "-Xmx8G", _SPICE_JAR, str(in_file)]
        if use_cache:
            cmd += ["-cache", str(cache_dir)]
        cmd += ["-out", str(out_file), "-subset", "-silent"]
        proc = subprocess.run(cmd, cwd=spice_dir, env=env, capture_output=True, stdin=subprocess.DEVNULL)
        if proc.returncode != 0 or not out_file.is_file():
            err = [
                line
                for line in proc.stderr.decode("utf-8", "replace").splitlines()
                if line.strip() and not line.startswith("NOTE: Picked up")
            ]
            raise RuntimeError(f"SPICE (java) failed with exit status {proc.returncode}: {' | '.join(err[:3])}")
        results = json.loads(out_file.read_text(encoding="utf-8"))
    return _spice_from_results(results)


# --------------------------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------------------------


def _check_refs(refs: Any, key: Any) -> list[str]:
    if isinstance(refs, str) or not isinstance(refs, Sequence):
        raise TypeError(f"references[{key!r}] must be a list of caption strings, got {type(refs).__name__}")
    if len(refs) == 0:
        raise ValueError(f"references[{key!r}] is empty: every image needs at least one reference caption")
    for r in refs:
        if not isinstance(r, str):
            raise TypeError(f"reference captions must be str, got {type(r).__name__} for {key!r}")
    return list(refs)


def _align(predictions: Any, references: Any) -> tuple[list[str], list[list[str]]]:
    """Predictions and references as two aligned lists (one prediction, >= 1 reference per image)."""
    if isinstance(references, Mapping):
        if isinstance(predictions, Mapping):
            pred_map: dict[Hashable, Any] = dict(predictions)
        elif isinstance(predictions, Sequence) and not isinstance(predictions, str):
            pred_map = {}
            for item in predictions:
                if not (isinstance(item, Mapping) and "image_id" in item and "caption" in item):
                    raise TypeError(
                        "with references given as a dict, predictions must be a dict {image_id: caption} or a "
                        "list of {'image_id': ..., 'caption': ...} records (BLIP's result-file format)"
                    )
                if item["image_id"] in pred_map:
                    raise ValueError(f"several predictions for image {item['image_id']!r}")
                pred_map[item["image_id"]] = item["caption"]
        else:
            raise TypeError(f"predictions must be a dict or a list, got {type(predictions).__name__}")
        missing = [k for k in references if k not in pred_map]
        extra = [k for k in pred_map if k not in references]
        if missing or extra:
            raise ValueError(
                "predictions and references must cover the same images: "
                f"{len(missing)} without prediction (e.g. {missing[:3]}), "
                f"{len(extra)} without references (e.g. {extra[:3]})"
            )
        keys = list(references)
        preds, refs = [pred_map[k] for k in keys], [_check_refs(references[k], k) for k in keys]
    elif isinstance(references, Sequence) and not isinstance(references, str):
        if isinstance(predictions, str) or not isinstance(predictions, Sequence) or isinstance(predictions, Mapping):
            raise TypeError("with references given as a list, predictions must be a list of captions in the same order")
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions but {len(references)} reference lists")
        preds, refs = list(predictions), [_check_refs(r, i) for i, r in enumerate(references)]
    else:
        raise TypeError(
            f"references must be a dict {{image_id: [captions]}} or a list, got {type(references).__name__}"
        )
    for p in preds:
        if not isinstance(p, str):
            raise TypeError(f"each prediction must be one caption string, got {type(p).__name__}")
    if not preds:
        raise ValueError("no predictions to evaluate")
    return preds, refs


# --------------------------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------------------------


def caption_metrics(
    predictions: Mapping[Hashable, str] | Sequence[Any],
    references: Mapping[Hashable, Sequence[str]] | Sequence[Sequence[str]],
    *,
    spice: bool | None = None,
) -> dict[str, float]:
    """BLEU-1..4, METEOR, ROUGE-L, CIDEr (and SPICE) of ``predictions`` against ``references``, in percent.

    Args:
        predictions: ``{image_id: caption}``, or BLIP's result-file list ``[{"image_id": ..., "caption": ...}]``,
            or (with ``references`` given as a list) a list of captions in the same order.
        references: ``{image_id: [reference captions]}`` (the same image ids as ``predictions``), or a list of
            reference lists. Raw captions: they are PTB-tokenised and lower-cased here, as COCO's evaluation does.
        spice: ``None`` computes SPICE when its jars are installed, otherwise skips it with one line on stderr;
            ``True`` requires it (downloading the jars if needed); ``False`` skips it.

    Returns:
        ``{"bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l", "cider"[, "spice"]}``, floats in percent
        (:data:`SCALE`): pycocoevalcap's values times 100, e.g. CIDEr 133.3, BLEU-4 39.7.

    Raises:
        RuntimeError: If Java is missing or a Java scorer fails (SPICE only when ``spice=True``).
        ImportError: If pycocoevalcap is not installed.
        ValueError, TypeError: On malformed or mismatched inputs.
    """
    if spice is not None and not isinstance(spice, bool):
        raise TypeError(f"spice must be None, True or False, got {spice!r}")
    preds, refs = _align(predictions, references)
    _java()
    _pycocoevalcap_dir()
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    # One tokenizer run for references and predictions (images are re-keyed 0..n-1 for the scorers).
    flat_refs = [r for rs in refs for r in rs]
    tokens = ptb_tokenize(flat_refs + preds)
    gts: dict[int, list[str]] = {}
    pos = 0
    for i, rs in enumerate(refs):
        gts[i] = tokens[pos : pos + len(rs)]
        pos += len(rs)
    res = {i: [tokens[len(flat_refs) + i]] for i in range(len(preds))}

    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    out = {f"bleu{n + 1}": 100.0 * float(b) for n, b in enumerate(bleu)}
    out["meteor"] = 100.0 * _meteor_score(gts, res)
    out["rouge_l"] = 100.0 * float(Rouge().compute_score(gts, res)[0])
    out["cider"] = 100.0 * float(Cider().compute_score(gts, res)[0])

    if spice is True:
        if not spice_available():
            _download_spice_models()
        out["spice"] = 100.0 * _spice_score(gts, res)
    elif spice is None:
        if not spice_available():
            _warn(f"SPICE skipped: the Stanford CoreNLP 3.6.0 jars are not installed; {_spice_hint()}.")
        else:
            try:
                out["spice"] = 100.0 * _spice_score(gts, res)
            except Exception as e:  # "if available": never let SPICE break the other metrics
                _warn(f"SPICE skipped: {e} (pass spice=True to raise instead; SPICE 1.0 is known to run on Java 8/11).")
    return out


def normalize_caption(caption: str) -> str:
    """Lower-case, collapse whitespace, strip, and drop trailing periods (for :func:`caption_accuracy`)."""
    if not isinstance(caption, str):
        raise TypeError(f"caption must be a str, got {type(caption).__name__}")
    return _WS.sub(" ", caption.lower()).strip().rstrip(".").rstrip()


def caption_accuracy(
    predictions: Mapping[Hashable, str] | Sequence[Any],
    references: Mapping[Hashable, Sequence[str]] | Sequence[Sequence[str]],
) -> dict[str, float]:
    """Exact-match rate: the percentage of predictions equal to one of their references after
    :func:`normalize_caption` (lower-case, collapsed whitespace, no trailing period). Pure Python, no Java.

    Accepts the same input forms as :func:`caption_metrics`. Returns ``{"exact": percent}``.
    """
    preds, refs = _align(predictions, references)
    hits = sum(normalize_caption(p) in {normalize_caption(r) for r in rs} for p, rs in zip(preds, refs, strict=True))
    return {"exact": 100.0 * hits / len(preds)}
