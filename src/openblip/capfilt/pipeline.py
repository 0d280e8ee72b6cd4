"""CapFilt: bootstrap a pre-training corpus with a captioner and a filter (BLIP paper §3.3).

The original authors released the bootstrapped datasets but not the code that made them (spec §5.2). Stages:

1. :func:`finetune_captioner` / :func:`finetune_filter`: from a pre-trained model, fine-tune a captioner (LM) and a
   filter (ITC + ITM) on the clean, human-annotated set (:mod:`openblip.capfilt.finetune`).
2. :func:`caption`: the captioner writes ``captions_per_image`` synthetic captions for every web image by nucleus
   sampling (top-p 0.9).
3. :func:`filter_captions`: the filter scores the web caption(s) and every synthetic caption of each web image with
   its ITM head (``[ENC]`` first, as training); the match probability is stored.
4. :func:`build`: a caption survives iff its match probability is ``>= threshold`` (0.5); the corpus is the clean
   set plus every web image with its surviving captions, in the pre-training format.

Work directory (``OUT``)::

    capfilt_config.json            the settings of the last run
    captioner/model/ done.json     the fine-tuned captioner (stage marker: done.json); train_state.pt while running
    filter/model/ done.json        the fine-tuned filter
    captions/shard_00000.jsonl     per web image: {"web_id", "image", "captions": [...], "seed", "row"}
    captions/shard_00000.done      marker: row count + SHA-256 of the shard file (see openblip.capfilt.store)
    filter_scores/shard_00000.jsonl  per web image: {"web_id", "image", "scores": [{"caption", "source", "itm_prob"}]}
    corpus.json                    [{"image", "caption", "source": clean|web|synthetic, "itm_prob", "web_id"}, ...]
    summary.json                   input counts, kept/dropped per source and reason, failures with reasons

Unreadable web images become ``{"web_id", "image", "error"}`` rows (in both shard kinds), are listed in the
summary's ``failures`` with their reason and are left out of the corpus; every caption is counted exactly once as
kept or dropped (with the reason), and :func:`build` checks that the counts add up to the input.

Shards are fixed slices of ``shard_size`` web images (web id = position of the image in the web list, records of the
same image grouped). A rerun skips complete shards, redoes incomplete ones and refuses to mix shards made with
other settings. Sampling is batched: each slice of ``batch_size`` web images of a shard samples with the seed
``derive_seed("capfilt.caption", seed, first web id of the slice)`` (recorded per image, with the image's ``row``
in that batch), so a rerun writes the same captions; ``Captioner.generate(<the slice's readable images>,
sample=True, seed=seed, ...)`` reproduces them.

Corpus ``"image"`` paths are joined with their image root, as the original pre-training lists hold full paths.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openblip.capfilt.config import CapFiltConfig
from openblip.capfilt.finetune import _Bar, derive_seed, finetune, load_for_task
from openblip.capfilt.store import ShardStore, atomic_write_json, file_sha256

Log = Callable[[str], None]

STAGES = ("finetune-captioner", "finetune-filter", "caption", "filter", "build")
SOURCES = ("clean", "web", "synthetic")


def log_to_stderr(message: str) -> None:
    print(f"[capfilt] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------------
# inputs


@dataclass
class WebItem:
    """One web image: its position in the web list (``web_id``), path as annotated, full path, web captions."""

    web_id: int
    image: str
    path: str
    captions: list[str]
    image_id: Any = None


def _join(root: str | None, path: str) -> str:
    return os.path.join(root, path) if root else path


def _captions_of(record: Mapping[str, Any], where: str) -> list[str]:
    if "image" not in record or "caption" not in record:
        raise ValueError(f"{where}: every record needs 'image' and 'caption', got keys {sorted(record)}")
    caps = record["caption"]
    caps = [caps] if isinstance(caps, str) else caps
    if not isinstance(caps, (list, tuple)) or not all(isinstance(c, str) for c in caps):
        raise ValueError(f"{where}: 'caption' must be a string or a list of strings, got {caps!r:.80}")
    return caps


def _annotation_files(spec: Any) -> list[str] | None:
    """The files an annotation spec names (a path or a list of paths), or None for in-memory records."""
    if isinstance(spec, (str, os.PathLike)):
        spec = [spec]
    if isinstance(spec, (list, tuple)) and spec and all(isinstance(p, (str, os.PathLike)) for p in spec):
        return [os.fspath(p) for p in spec]
    return None


def _stat_key(files: Sequence[str]) -> tuple[tuple[str, int, int], ...] | None:
    """``(absolute path, size, mtime_ns)`` of each file (None if one cannot be stat-ed): what the memos below key
    on, so an edited annotation file is read and hashed again."""
    try:
        return tuple((os.path.abspath(f), st.st_size, st.st_mtime_ns) for f in files for st in [os.stat(f)])
    except OSError:
        return None


@functools.lru_cache(maxsize=1)  # one web corpus per run; a second spec evicts the first (memory)
def _parsed_web(key: tuple[tuple[str, int, int], ...], image_root: str | None, where: str) -> tuple[tuple, ...]:
    """The web list of the files in ``key``, as immutable rows (memoised: one parse per process, not one per
    stage; a web corpus of millions of records takes minutes to parse)."""
    return _parse_web([k[0] for k in key], image_root, where)


def _parse_web(spec: Any, image_root: str | None, where: str) -> tuple[tuple, ...]:
    from openblip.data.datasets import load_annotations

    rows: list[tuple[str, str, list[str], Any]] = []
    index: dict[str, int] = {}
    for i, rec in enumerate(load_annotations(spec)):
        caps = _captions_of(rec, f"{where} record {i}")
        image = str(rec["image"])
        path = _join(image_root, image)
        key = os.path.normpath(os.path.abspath(path))
        if key not in index:
            index[key] = len(rows)
            rows.append((image, path, [], rec.get("image_id")))
        rows[index[key]][2].extend(caps)
    return tuple((image, path, tuple(caps), image_id) for image, path, caps, image_id in rows)


def load_web(cfg: CapFiltConfig) -> list[WebItem]:
    """The web images in annotation order, records of the same image file merged (their captions in order; one
    file is one image however its path is spelled: ``a.png``, ``./a.png``, ``ROOT/a.png``). Annotation files are
    parsed once per process while they are unchanged (size and modification time)."""
    if not cfg.web:
        raise ValueError("no web annotations given (--web)")
    files = _annotation_files(cfg.web)
    key = _stat_key(files) if files else None
    if key is not None:
        rows = _parsed_web(key, cfg.image_root, str(cfg.web))
    else:
        rows = _parse_web(cfg.web, cfg.image_root, str(cfg.web))
    return [WebItem(i, image, path, list(caps), image_id) for i, (image, path, caps, image_id) in enumerate(rows)]


def load_clean(cfg: CapFiltConfig) -> list[dict[str, Any]]:
    """The clean set as ``{"image", "caption": str, "image_id"}`` records, one per caption (``image_id`` defaults
    to the image path, so the captions of one image are positives of each other in the filter's ITC)."""
    from openblip.data.datasets import load_annotations

    if not cfg.clean:
        raise ValueError("no clean annotations given (--clean)")
    out = []
    for i, rec in enumerate(load_annotations(cfg.clean)):
        for c in _captions_of(rec, f"{cfg.clean} record {i}"):
            out.append({"image": str(rec["image"]), "caption": c, "image_id": rec.get("image_id", str(rec["image"]))})
    return out


def _clean_root(cfg: CapFiltConfig) -> str | None:
    return cfg.clean_image_root if cfg.clean_image_root is not None else cfg.image_root


@functools.lru_cache(maxsize=16)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


def _annotation_digest(spec: Any) -> Any:
    """What identifies an annotation spec in the shard settings: the SHA-256 of its file (a list of them for a
    list of files; memoised per process while a file is unchanged), or its text when it names no files."""
    files = _annotation_files(spec)
    key = _stat_key(files) if files else None
    if key is None:
        return str(spec)
    digests = [_file_digest(*k) for k in key]
    return digests[0] if isinstance(spec, (str, os.PathLike)) else digests


def _model_identity(path: str) -> dict[str, Any]:
    """What identifies a model for the shard settings: its path and its weight files' sizes and mtimes."""
    p = Path(path)
    files = sorted(p.glob("*.safetensors")) + sorted(p.glob("*.pth")) + sorted(p.glob("*.bin")) if p.is_dir() else [p]
    return {
        "model": str(path),
        "files": [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files if f.is_file()],
    }


def n_shards(cfg: CapFiltConfig, n_web: int) -> int:
    return (n_web + cfg.shard_size - 1) // cfg.shard_size


# ---------------------------------------------------------------------------------------------------------------
# stage 1: fine-tuning


def captioner_path(cfg: CapFiltConfig) -> str:
    """The captioner the caption stage uses: ``cfg.captioner``, else the fine-tuned ``OUT/captioner/model``."""
    if cfg.captioner:
        return cfg.captioner
    path = cfg.out / "captioner" / "model"
    if not (cfg.out / "captioner" / "done.json").is_file():
        raise FileNotFoundError(f"no fine-tuned captioner in {path}: run `finetune-captioner` (or pass --captioner)")
    return str(path)


def filter_path(cfg: CapFiltConfig) -> str:
    """The filter the filter stage uses: ``cfg.filter_model``, else the fine-tuned ``OUT/filter/model``."""
    if cfg.filter_model:
        return cfg.filter_model
    path = cfg.out / "filter" / "model"
    if not (cfg.out / "filter" / "done.json").is_file():
        raise FileNotFoundError(f"no fine-tuned filter in {path}: run `finetune-filter` (or pass --filter-model)")
    return str(path)


def _finetune(cfg: CapFiltConfig, task: str, log: Log, progress: bool | None) -> dict[str, Any]:
    name = "captioner" if task == "caption" else "filter"
    if not cfg.init:
        raise ValueError(f"fine-tuning the {name} needs a pre-trained model (--init)")
    folder = cfg.out / name
    steps = cfg.captioner_steps if task == "caption" else cfg.filter_steps
    lr = cfg.captioner_lr if task == "caption" else cfg.filter_lr
    records = load_clean(cfg)
    params = {
        "init": str(cfg.init),
        "clean": _annotation_digest(cfg.clean),
        "image_root": _clean_root(cfg),
        "weight_decay": cfg.weight_decay,
        "momentum": cfg.momentum if task == "retrieval" else None,
        "alpha": cfg.alpha if task == "retrieval" else None,
        "steps": steps,
        "lr": lr,
        "batch_size": cfg.train_batch_size,
        "seed": cfg.seed,
        "prompt": cfg.prompt if task == "caption" else None,
        "queue_size": cfg.queue_size if task == "retrieval" else None,
        "itm_warmup_steps": cfg.itm_warmup_steps if task == "retrieval" else None,
        "augment": [cfg.min_scale, cfg.randaug, cfg.flip],
    }
    from openblip.capfilt.finetune import check_params

    check_params(folder, params, f"{name} fine-tuning")
    return finetune(
        task,
        cfg.init,
        records,
        _clean_root(cfg),
        folder,
        steps=steps,
        lr=lr,
        batch_size=cfg.train_batch_size,
        seed=cfg.seed,
        prompt=cfg.prompt,
        weight_decay=cfg.weight_decay,
        queue_size=cfg.queue_size,
        momentum=cfg.momentum,
        alpha=cfg.alpha,
        min_scale=cfg.min_scale,
        randaug=cfg.randaug,
        flip=cfg.flip,
        save_every=cfg.save_every,
        num_workers=cfg.num_workers,
        itm_warmup_steps=cfg.itm_warmup_steps,
        device=cfg.device,
        log=log,
        progress=progress,
    )


def finetune_captioner(cfg: CapFiltConfig, log: Log = log_to_stderr, progress: bool | None = None) -> dict[str, Any]:
    """Stage 1a: fine-tune the captioner (LM, prompt ``"a picture of "``) from ``cfg.init`` on the clean set."""
    if cfg.captioner:
        log(f"[captioner] using {cfg.captioner} (no fine-tuning)")
        return {"model": cfg.captioner, "steps": 0}
    return _finetune(cfg, "caption", log, progress)


def finetune_filter(cfg: CapFiltConfig, log: Log = log_to_stderr, progress: bool | None = None) -> dict[str, Any]:
    """Stage 1b: fine-tune the filter (ITC + ITM) from ``cfg.init`` on the clean set."""
    if cfg.filter_model:
        log(f"[filter] using {cfg.filter_model} (no fine-tuning)")
        return {"model": cfg.filter_model, "steps": 0}
    return _finetune(cfg, "retrieval", log, progress)


# ---------------------------------------------------------------------------------------------------------------
# stage 2: captioning


def _caption_params(cfg: CapFiltConfig, web_digest: Any, model: str) -> dict[str, Any]:
    return {
        "web": web_digest,
        "image_root": cfg.image_root,
        **_model_identity(model),
        "captions_per_image": cfg.captions_per_image,
        "top_p": cfg.top_p,
        "top_k": cfg.top_k,
        "repetition_penalty": cfg.repetition_penalty,
        "max_length": cfg.max_length,
        "min_length": cfg.min_length,
        "prompt": cfg.prompt,
        "seed": cfg.seed,
        "shard_size": cfg.shard_size,
        "batch_size": cfg.batch_size,
        "dtype": cfg.dtype,
    }


def _load_images(items: Sequence[WebItem]) -> tuple[list[Any], list[WebItem], list[dict[str, Any]]]:
    """``(images, their items, error rows)`` for the items whose image loads."""
    from openblip.image import ImageLoadError, load_image

    images, ok, errors = [], [], []
    for it in items:
        try:
            images.append(load_image(it.path))
            ok.append(it)
        except ImageLoadError as e:
            errors.append({"web_id": it.web_id, "image": it.image, "error": str(e.reason)})
    return images, ok, errors


def _stage_stats(store: ShardStore, total: int, todo: Sequence[int], n_web: int) -> dict[str, Any]:
    """The counts a scoring stage returns, before its work: ``shards``, ``skipped`` (done already), ``done`` (written
    by this run; :func:`_write_shards` adds them), ``images`` (web images) and ``failed``: web images whose row is an
    error row (unreadable image), over every shard of the stage; the skipped shards are read back here and the
    shards written by this run are added as they are written, so a rerun reports the same count."""
    pending = set(todo)
    failed = sum("error" in r for s in range(total) if s not in pending for r in store.read(s))
    return {"shards": total, "skipped": total - len(todo), "done": 0, "images": n_web, "failed": failed}


def _write_shards(
    stage: str,
    store: ShardStore,
    todo: Sequence[int],
    stats: dict[str, Any],
    shard_size: int,
    shard_rows: Callable[[int, _Bar], list[dict[str, Any]]],
    log: Log,
    progress: bool | None,
) -> None:
    """The shard loop both scoring stages share: for each shard of ``todo`` (logging a stale marker), its rows from
    ``shard_rows(shard, bar)`` sorted by ``web_id`` and written atomically with their marker; ``stats["done"]``
    counts them and ``stats["failed"]`` their error rows. The progress bar counts images (``shard_size`` per shard,
    fewer in the last one)."""
    n_images = stats["images"]
    total_images = sum(max(0, min(shard_size, n_images - s * shard_size)) for s in todo)
    bar = _Bar(total_images, stage, log, "img", show=progress)
    t0 = time.perf_counter()
    try:
        for s in todo:
            if store.has_stale_marker(s):
                log(f"[{stage}] shard {s} does not match its marker; redoing it")
            rows = shard_rows(s, bar)
            rows.sort(key=lambda r: r["web_id"])
            store.write(s, rows)
            stats["done"] += 1
            stats["failed"] += sum("error" in r for r in rows)
    finally:
        bar.close()
    log(f"[{stage}] {stats['done']} shard(s) written in {time.perf_counter() - t0:.0f}s -> {store.folder}")


def caption(cfg: CapFiltConfig, log: Log = log_to_stderr, progress: bool | None = None) -> dict[str, Any]:
    """Stage 2: synthetic captions for every web image, shard by shard (resumable).

    Returns counts: ``shards``, ``skipped`` (done already), ``done`` (written now), ``images`` (web images) and
    ``failed`` (web images whose image could not be read: their rows are error rows), the latter over every shard
    of the stage, the skipped ones included."""
    import torch

    from openblip.tasks.caption import Captioner

    web = load_web(cfg)
    model_path = captioner_path(cfg)
    store = ShardStore(cfg.out / "captions", _caption_params(cfg, _annotation_digest(cfg.web), model_path), "caption")
    total = n_shards(cfg, len(web))
    todo = [s for s in range(total) if not store.is_done(s)]
    stats = _stage_stats(store, total, todo, len(web))
    if not todo:
        log(f"[caption] all {total} shards already done")
        return stats
    model, _ = load_for_task(model_path, "caption", device=cfg.device, dtype=cfg.dtype, log=log)
    captioner = Captioner(model, batch_size=cfg.batch_size)
    log(
        f"[caption] {len(web)} web images in {total} shards ({total - len(todo)} done already): "
        f"{cfg.captions_per_image} caption(s) per image, nucleus sampling top-p {cfg.top_p}, top-k {cfg.top_k}"
    )

    def shard_rows(s: int, bar: _Bar) -> list[dict[str, Any]]:
        items = web[s * cfg.shard_size : (s + 1) * cfg.shard_size]
        rows: list[dict[str, Any]] = []
        for b in range(0, len(items), cfg.batch_size):
            chunk = items[b : b + cfg.batch_size]
            images, ok, errors = _load_images(chunk)
            rows += errors
            seed = derive_seed("capfilt.caption", cfg.seed, chunk[0].web_id)
            if ok and cfg.captions_per_image > 0:
                with torch.inference_mode():
                    out = captioner.generate(
                        images,
                        sample=True,
                        top_p=cfg.top_p,
                        top_k=cfg.top_k,
                        repetition_penalty=cfg.repetition_penalty,
                        max_length=cfg.max_length,
                        min_length=cfg.min_length,
                        prompt=cfg.prompt,
                        num_captions=cfg.captions_per_image,
                        seed=seed,
                        batch_size=len(images),
                    )
            else:
                out = [[] for _ in ok]
            for row, (it, caps) in enumerate(zip(ok, out)):
                rows.append(
                    {
                        "web_id": it.web_id,
                        "image": it.image,
                        "captions": [c.text.strip() for c in caps],
                        "seed": seed,
                        "row": row,
                    }
                )
            bar.update(len(chunk))
        return rows

    _write_shards("caption", store, todo, stats, cfg.shard_size, shard_rows, log, progress)
    return stats


# ---------------------------------------------------------------------------------------------------------------
# stage 3: filtering


def _filter_params(cfg: CapFiltConfig, web_digest: Any, model: str, caption_params: Mapping[str, Any]) -> dict:
    return {
        "web": web_digest,
        "image_root": cfg.image_root,
        **_model_identity(model),
        "captions": dict(caption_params),
        "shard_size": cfg.shard_size,
        "dtype": cfg.dtype,
    }


def itm_match_probs(
    model: Any, images: list[Any], texts: list[list[str]], max_text_length: int = 35
) -> list[list[float]]:
    """ITM match probabilities of ``texts[i]`` (any number) against ``images[i]``, batched.

    Images are encoded once; the texts of images with the same number of texts go through the image-grounded
    encoder together, each image's tokens serving all its texts (``image_embeds`` with ``B / r`` rows), the batched
    form of :meth:`openblip.tasks.retrieval.Retriever.itm_logits_for_image`. Texts are ``pre_caption``-ed (30
    words) as the pre-training loader will see them.
    """
    import torch

    from openblip.text import pre_caption
    from openblip.tokenizer import get_tokenizer
    from openblip.transforms import preprocess

    tok = get_tokenizer()
    out: list[list[float]] = [[] for _ in images]
    if not images:
        return out
    with torch.inference_mode():
        pixels = preprocess(images, model.image_size, device=model.device, dtype=model.dtype)
        embeds = model.encode_image(pixels)
        groups: dict[int, list[int]] = {}
        for i, t in enumerate(texts):
            if t:
                groups.setdefault(len(t), []).append(i)
        for r, idx in groups.items():
            flat = [pre_caption(t, 30) for i in idx for t in texts[i]]
            enc = tok(flat, padding="longest", truncation=True, max_length=max_text_length)
            ids, mask = enc["input_ids"].to(model.device), enc["attention_mask"].to(model.device)
            logits = model.itm_logits(embeds[idx], ids, mask, first_token="enc").float()
            probs = logits.softmax(-1)[:, 1].view(len(idx), r).tolist()
            for i, p in zip(idx, probs):
                out[i] = p
    return out


def filter_captions(cfg: CapFiltConfig, log: Log = log_to_stderr, progress: bool | None = None) -> dict[str, Any]:
    """Stage 3: ITM match probability of every web and synthetic caption, shard by shard (resumable).

    Returns the same counts as :func:`caption`; ``failed`` counts the error rows of the filter shards (images that
    failed at the caption stage, or could not be read again here)."""
    web = load_web(cfg)
    digest = _annotation_digest(cfg.web)
    cap_params = _caption_params(cfg, digest, captioner_path(cfg))
    captions = ShardStore(cfg.out / "captions", cap_params, "caption")
    model_path = filter_path(cfg)
    store = ShardStore(cfg.out / "filter_scores", _filter_params(cfg, digest, model_path, cap_params), "filter")
    total = n_shards(cfg, len(web))
    missing = [s for s in range(total) if not captions.is_done(s)]
    if missing:
        raise FileNotFoundError(
            f"caption shards {missing[:5]}{'...' if len(missing) > 5 else ''} are not done: run the caption stage"
        )
    todo = [s for s in range(total) if not store.is_done(s)]
    stats = _stage_stats(store, total, todo, len(web))
    if not todo:
        log(f"[filter] all {total} shards already done")
        return stats
    model, _ = load_for_task(model_path, "retrieval", device=cfg.device, dtype=cfg.dtype, log=log)
    model.eval()
    log(
        f"[filter] scoring {len(web)} web images in {total} shards ({total - len(todo)} done already) with {model_path}"
    )

    def shard_rows(s: int, bar: _Bar) -> list[dict[str, Any]]:
        cap_rows = captions.read(s)
        rows: list[dict[str, Any]] = []
        for b in range(0, len(cap_rows), cfg.batch_size):
            chunk = cap_rows[b : b + cfg.batch_size]
            rows += [dict(r) for r in chunk if "error" in r]
            live = [r for r in chunk if "error" not in r]
            images, ok, errors = _load_images([web[r["web_id"]] for r in live])
            rows += errors
            ok_ids = {it.web_id for it in ok}
            live = [r for r in live if r["web_id"] in ok_ids]
            texts = [web[r["web_id"]].captions + list(r["captions"]) for r in live]
            probs = itm_match_probs(model, images, texts)
            for r, ts, ps in zip(live, texts, probs):
                n_web = len(web[r["web_id"]].captions)
                scores = [
                    {"caption": t, "source": "web" if j < n_web else "synthetic", "itm_prob": float(p)}
                    for j, (t, p) in enumerate(zip(ts, ps))
                ]
                rows.append({"web_id": r["web_id"], "image": r["image"], "scores": scores})
            bar.update(len(chunk))
        return rows

    _write_shards("filter", store, todo, stats, cfg.shard_size, shard_rows, log, progress)
    return stats


# ---------------------------------------------------------------------------------------------------------------
# stage 4: the corpus


def _empty_counts(source: str) -> dict[str, int]:
    keys = ["in", "kept", "dropped_filter", "dropped_duplicate", "dropped_empty", "dropped_unreadable"]
    if source == "clean":
        keys = ["in", "kept", "dropped_unreadable"]
    return dict.fromkeys(keys, 0)


def keep_caption(itm_prob: float, threshold: float) -> bool:
    """The filter's decision: kept iff the match probability is not below the threshold."""
    return itm_prob >= threshold


def build(cfg: CapFiltConfig, log: Log = log_to_stderr, progress: bool | None = None) -> dict[str, Any]:
    """Stage 4: apply the threshold, write ``corpus.json`` and ``summary.json``; returns the summary."""
    from openblip.image import ImageLoadError, load_image
    from openblip.text import pre_caption

    t0 = time.perf_counter()
    web = load_web(cfg)
    digest = _annotation_digest(cfg.web)
    cap_params = _caption_params(cfg, digest, captioner_path(cfg))
    store = ShardStore(cfg.out / "filter_scores", _filter_params(cfg, digest, filter_path(cfg), cap_params), "filter")
    total = n_shards(cfg, len(web))
    missing = [s for s in range(total) if not store.is_done(s)]
    if missing:
        raise FileNotFoundError(
            f"filter shards {missing[:5]}{'...' if len(missing) > 5 else ''} are not done: run the filter stage"
        )
    counts = {s: _empty_counts(s) for s in SOURCES}
    failures: list[dict[str, Any]] = []
    corpus: list[dict[str, Any]] = []

    # the clean set: copied unfiltered; unreadable images are recorded and left out (none with ready-made models)
    clean = load_clean(cfg) if cfg.clean else []
    root = _clean_root(cfg)
    bad_clean: dict[str, str] = {}
    if cfg.check_clean_images:
        for image in dict.fromkeys(r["image"] for r in clean):
            try:
                load_image(_join(root, image))
            except ImageLoadError as e:
                bad_clean[image] = str(e.reason)
                failures.append({"source": "clean", "image": image, "reason": str(e.reason)})
    for r in clean:
        counts["clean"]["in"] += 1
        if r["image"] in bad_clean:
            counts["clean"]["dropped_unreadable"] += 1
            continue
        counts["clean"]["kept"] += 1
        corpus.append(
            {
                "image": _join(root, r["image"]),
                "caption": r["caption"],
                "source": "clean",
                "itm_prob": None,
                "web_id": None,
                "image_id": r["image_id"],
            }
        )

    # the web images: every caption kept or dropped with a reason
    images = {"web_in": len(web), "web_unreadable": 0, "web_with_kept_caption": 0, "web_all_dropped": 0}
    seen: set[int] = set()
    for s in range(total):
        for row in store.read(s):
            item = web[row["web_id"]]
            seen.add(item.web_id)
            if "error" in row:
                images["web_unreadable"] += 1
                counts["web"]["in"] += len(item.captions)
                counts["web"]["dropped_unreadable"] += len(item.captions)
                failures.append({"source": "web", "web_id": item.web_id, "image": item.image, "reason": row["error"]})
                continue
            kept_texts: set[str] = set()
            n_kept = 0
            for sc in row["scores"]:
                src, text, p = sc["source"], sc["caption"], float(sc["itm_prob"])
                c = counts[src]
                c["in"] += 1
                norm = pre_caption(text, 30)
                filtered = cfg.filter_web if src == "web" else cfg.filter_synthetic
                if not norm:  # empty, or nothing left after pre_caption (web and synthetic alike)
                    c["dropped_empty"] += 1
                elif filtered and not keep_caption(p, cfg.threshold):
                    c["dropped_filter"] += 1
                elif cfg.dedup and norm in kept_texts:
                    c["dropped_duplicate"] += 1
                else:
                    c["kept"] += 1
                    n_kept += 1
                    kept_texts.add(norm)
                    entry = {
                        "image": item.path,
                        "caption": text,
                        "source": src,
                        "itm_prob": p,
                        "web_id": item.web_id,
                    }
                    if item.image_id is not None:
                        entry["image_id"] = item.image_id
                    corpus.append(entry)
            images["web_with_kept_caption" if n_kept else "web_all_dropped"] += 1
    if seen != set(range(len(web))):
        raise RuntimeError(f"the filter shards cover {len(seen)} of {len(web)} web images; redo the filter stage")

    # the counts must add up to the input
    n_web_captions = sum(len(it.captions) for it in web)
    problems = []
    for src, c in counts.items():
        if sum(v for k, v in c.items() if k != "in") != c["in"]:
            problems.append(f"{src}: {c}")
    if counts["web"]["in"] != n_web_captions:
        problems.append(f"web captions counted {counts['web']['in']} != {n_web_captions} in the input")
    if counts["clean"]["in"] != len(clean):
        problems.append(f"clean captions counted {counts['clean']['in']} != {len(clean)}")
    if sum(images[k] for k in ("web_unreadable", "web_with_kept_caption", "web_all_dropped")) != len(web):
        problems.append(f"web images do not add up: {images}")
    if len(corpus) != sum(c["kept"] for c in counts.values()):
        problems.append("corpus size differs from the kept counts")
    if problems:  # pragma: no cover - a bug, never an input problem
        raise RuntimeError("CapFilt counts do not add up: " + "; ".join(problems))

    corpus_path = cfg.out / "corpus.json"
    atomic_write_json(corpus_path, corpus, indent=None)
    readable = len(web) - images["web_unreadable"]
    summary = {
        "threshold": cfg.threshold,
        "captions_per_image": cfg.captions_per_image,
        "inputs": {
            "clean_captions": len(clean),
            "clean_images": len({r["image"] for r in clean}),
            "web_images": len(web),
            "web_captions": n_web_captions,
            "synthetic_captions": counts["synthetic"]["in"],
            "synthetic_expected": readable * cfg.captions_per_image,
        },
        "per_source": counts,
        "images": {**images, "clean_unreadable": len(bad_clean)},
        "corpus": {
            "path": str(corpus_path),
            "entries": len(corpus),
            "images": len({e["image"] for e in corpus}),
            "by_source": {s: counts[s]["kept"] for s in SOURCES},
        },
        "failures": failures,
        "counts_add_up": True,
        "seconds": time.perf_counter() - t0,
    }
    atomic_write_json(cfg.out / "summary.json", summary)
    log(f"[build] {len(corpus)} corpus entries ({summary['corpus']['images']} images) -> {corpus_path}")
    return summary


# ---------------------------------------------------------------------------------------------------------------
# everything


def save_config(cfg: CapFiltConfig) -> None:
    cfg.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(cfg.out / "capfilt_config.json", cfg.to_dict())


def run_stage(stage: str, cfg: CapFiltConfig, log: Log = log_to_stderr, progress: bool | None = None) -> Any:
    """Run one stage by its CLI name (:data:`STAGES`)."""
    fns = {
        "finetune-captioner": finetune_captioner,
        "finetune-filter": finetune_filter,
        "caption": caption,
        "filter": filter_captions,
        "build": build,
    }
    if stage not in fns:
        raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    if cfg.threads:
        import torch

        torch.set_num_threads(int(cfg.threads))
    # The settings are saved once the stage has accepted them (a stage refused for changed settings must not
    # rewrite them); the first stage of a work directory saves them up front, so an interrupted run can resume.
    if not (cfg.out / "capfilt_config.json").is_file():
        save_config(cfg)
    result = fns[stage](cfg, log=log, progress=progress)
    save_config(cfg)
    return result


def run(cfg: CapFiltConfig, log: Log = log_to_stderr, progress: bool | None = None) -> dict[str, Any]:
    """The whole pipeline (every stage resumable); returns the summary (also in ``OUT/summary.json``)."""
    summary = None
    for stage in STAGES:
        summary = run_stage(stage, cfg, log=log, progress=progress)
    assert isinstance(summary, dict)
    return summary


def summary_table(summary: Mapping[str, Any]) -> str:
    """The kept/dropped counts per source as a fixed-width table."""
    cols = ["in", "kept", "dropped_filter", "dropped_duplicate", "dropped_empty", "dropped_unreadable"]
    heads = ["source", "in", "kept", "filtered", "duplicate", "empty", "unreadable"]
    lines = ["  ".join(f"{h:>10}" for h in heads)]
    for src in SOURCES:
        c = summary["per_source"][src]
        lines.append("  ".join([f"{src:>10}"] + [f"{c[k]:>10}" if k in c else f"{'-':>10}" for k in cols]))
    im = summary["images"]
    lines.append(
        f"threshold {summary['threshold']}; web images: {im['web_in']} in, {im['web_with_kept_caption']} with a kept "
        f"caption, {im['web_all_dropped']} with none, {im['web_unreadable']} unreadable; "
        f"clean images unreadable: {im['clean_unreadable']}"
    )
    lines.append(
        f"corpus: {summary['corpus']['entries']} entries, {summary['corpus']['images']} images "
        f"-> {summary['corpus']['path']}"
    )
    for f in summary["failures"][:10]:
        lines.append(f"failed: {f['source']} {f['image']}: {f['reason']}")
    if len(summary["failures"]) > 10:
        lines.append(f"... {len(summary['failures']) - 10} more failures in summary.json")
    return "\n".join(lines)


def load_saved_config(out: str | Path) -> dict[str, Any]:
    """The settings saved in ``OUT/capfilt_config.json`` by an earlier run (``{}`` if none)."""
    path = Path(out) / "capfilt_config.json"
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))
