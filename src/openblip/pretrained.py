"""The released BLIP checkpoints and the code that downloads them.

Two kinds of weights exist (spec §3.1 and §9):

* ``official``: the 13 ``.pth`` files Salesforce published next to the paper, under
  ``https://storage.googleapis.com/sfr-vision-language-research/BLIP/models/``. They are fetched with ``urllib`` into
  the Hugging Face cache tree, under ``openblip/official/`` (or into ``$OPENBLIP_CACHE``).
* ``hf``: the ``Salesforce/blip-*`` repositories on the Hugging Face Hub, converted by ``transformers``. They are
  fetched with ``huggingface_hub.snapshot_download`` and live in the ordinary hub cache.

Every entry carries a ``sha256`` field. None is filled in yet (the files could not be hashed where this table was
written); whenever one is, the download is verified against it.

Example:
    >>> from openblip.pretrained import download, get_pretrained
    >>> get_pretrained("model_base_caption_capfilt_large.pth").name
    'blip-base-caption-coco'
    >>> path = download("blip-base-caption-coco")  # doctest: +SKIP
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import IO

from tqdm import tqdm

__all__ = [
    "ARCHS",
    "DEFAULT_MODELS",
    "OFFICIAL_BASE_URL",
    "PRETRAINED",
    "TASKS",
    "DownloadError",
    "PretrainedEntry",
    "UnknownModelError",
    "cache_dir",
    "cache_path",
    "download",
    "get_pretrained",
    "is_cached",
    "list_pretrained",
]

logger = logging.getLogger(__name__)

OFFICIAL_BASE_URL = "https://storage.googleapis.com/sfr-vision-language-research/BLIP/models/"
TASKS = ("caption", "retrieval", "vqa", "nlvr", "pretrain")
ARCHS = ("blip-base", "blip-large")
SOURCES = ("official", "hf")

# What snapshot_download fetches from a hub repo: the config and the weights, not the TF/Flax copies or the tokenizer.
# The safetensors weights first; the PyTorch pickle only for a repo without them (several Salesforce repos hold both,
# and the loader reads only the safetensors: fetching both doubled the download).
HF_ALLOW_PATTERNS = ["config.json", "*.safetensors", "*.safetensors.index.json"]
HF_FALLBACK_PATTERNS = ["config.json", "pytorch_model.bin"]
HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")

_CHUNK = 1 << 20  # bytes read per network call
_TIMEOUT = 60  # seconds without data before urllib gives up
_TRUE_VALUES = {"1", "ON", "YES", "TRUE"}  # huggingface_hub.constants.ENV_VARS_TRUE_VALUES


class UnknownModelError(KeyError):
    """No pretrained entry has this name, official filename or historical filename."""

    def __init__(self, name: str, suggestions: list[str]) -> None:
        self.name = name
        self.suggestions = suggestions
        hint = f"; did you mean {', '.join(repr(s) for s in suggestions)}?" if suggestions else ""
        super().__init__(f"unknown pretrained model {name!r}{hint} (`openblip models` lists them all)")

    def __str__(self) -> str:
        # KeyError.__str__ would repr() the message and wrap it in quotes.
        return str(self.args[0])


class DownloadError(RuntimeError):
    """A checkpoint is neither cached nor downloadable (offline, network failure, or a hash mismatch)."""


@dataclass(frozen=True)
class PretrainedEntry:
    """One released checkpoint.

    Attributes:
        name: Our name: ``blip-<arch>-<task>[-<data>]`` for official files, the repo id for hub repos.
        task: What the weights were trained for, one of :data:`TASKS`.
        arch: ``"blip-base"`` (ViT-B/16) or ``"blip-large"`` (ViT-L/16); names a JSON in ``model_configs/``.
        image_size: The input resolution the weights run at (the ``pos_embed`` grid they were saved with).
        source: ``"official"`` (a ``.pth`` at :data:`OFFICIAL_BASE_URL`) or ``"hf"`` (a Hugging Face Hub repo).
        url: Download URL of an official file, ``None`` for hub repos.
        hf_repo: Hub repo id of an ``hf`` entry, ``None`` for official files.
        filename: File name of an official checkpoint, ``None`` for hub repos.
        sha256: Hex digest of the official file, checked on download whenever it is known.
        description: One line for ``openblip models``: what the checkpoint is and any trap it hides.
    """

    name: str
    task: str
    arch: str
    image_size: int
    source: str
    url: str | None = None
    hf_repo: str | None = None
    filename: str | None = None
    sha256: str | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"{self.name}: task {self.task!r} is not one of {TASKS}")
        if self.arch not in ARCHS:
            raise ValueError(f"{self.name}: arch {self.arch!r} is not one of {ARCHS}")
        if self.source == "official":
            if not (self.url and self.filename) or self.hf_repo:
                raise ValueError(f"{self.name}: an official entry needs url and filename and no hf_repo")
        elif self.source == "hf":
            if not self.hf_repo or self.url or self.filename:
                raise ValueError(f"{self.name}: an hf entry needs hf_repo and no url/filename")
        else:
            raise ValueError(f"{self.name}: source {self.source!r} is not one of {SOURCES}")

    @property
    def location(self) -> str:
        """Where the weights come from: the URL of an official file or the hub repo id."""
        return self.url if self.source == "official" else self.hf_repo  # type: ignore[return-value]


def _official(name: str, filename: str, task: str, arch: str, image_size: int, description: str) -> PretrainedEntry:
    return PretrainedEntry(
        name=name,
        task=task,
        arch=arch,
        image_size=image_size,
        source="official",
        url=OFFICIAL_BASE_URL + filename,
        filename=filename,
        description=description,
    )


def _hf(repo: str, task: str, arch: str, image_size: int, description: str) -> PretrainedEntry:
    return PretrainedEntry(
        name=repo, task=task, arch=arch, image_size=image_size, source="hf", hf_repo=repo, description=description
    )


# Image sizes (spec §1.1, §3.2): pre-training 224, caption / retrieval / NLVR 384, VQA fine-tunes 480.
_ENTRIES = [
    # Pre-trained (ITC + ITM + LM heads).
    _official(
        "blip-base-pretrain-14m", "model_base_14M.pth", "pretrain", "blip-base", 224, "ViT-B, pre-trained on 14M images"
    ),
    _official(
        "blip-base-pretrain",
        "model_base.pth",
        "pretrain",
        "blip-base",
        224,
        "ViT-B, pre-trained on 129M images; the README's start point for retrieval and NLVR fine-tuning",
    ),
    _official(
        "blip-base-pretrain-capfilt-l",
        "model_base_capfilt_large.pth",
        "pretrain",
        "blip-base",
        224,
        "ViT-B, pre-trained on 129M images bootstrapped by the ViT-L CapFilt; the start point for caption/VQA "
        "fine-tuning, and the model demo.ipynb's 'captioning' cell loads",
    ),
    _official(
        "blip-large-pretrain", "model_large.pth", "pretrain", "blip-large", 224, "ViT-L, pre-trained on 129M images"
    ),
    # Retrieval (ITC + ITM), fine-tuned at 384.
    _official(
        "blip-base-retrieval-coco",
        "model_base_retrieval_coco.pth",
        "retrieval",
        "blip-base",
        384,
        "ViT-B, image-text retrieval fine-tuned on COCO",
    ),
    _official(
        "blip-large-retrieval-coco",
        "model_large_retrieval_coco.pth",
        "retrieval",
        "blip-large",
        384,
        "ViT-L, image-text retrieval fine-tuned on COCO",
    ),
    _official(
        "blip-base-retrieval-flickr",
        "model_base_retrieval_flickr.pth",
        "retrieval",
        "blip-base",
        384,
        "ViT-B, image-text retrieval fine-tuned on Flickr30k",
    ),
    _official(
        "blip-large-retrieval-flickr",
        "model_large_retrieval_flickr.pth",
        "retrieval",
        "blip-large",
        384,
        "ViT-L, image-text retrieval fine-tuned on Flickr30k",
    ),
    # Captioning (LM decoder), fine-tuned on COCO at 384.
    _official(
        "blip-base-caption-coco",
        "model_base_caption_capfilt_large.pth",
        "caption",
        "blip-base",
        384,
        "ViT-B CapFilt-L, COCO captioning (the paper's 133.3 CIDEr model); the default captioner",
    ),
    _official(
        "blip-large-caption-coco",
        "model_large_caption.pth",
        "caption",
        "blip-large",
        384,
        "ViT-L, COCO captioning",
    ),
    # VQA (encoder + answer decoder), fine-tuned at 480.
    _official("blip-base-vqa", "model_vqa.pth", "vqa", "blip-base", 480, "ViT-B, VQAv2 (+VG QA) fine-tune, 480 px"),
    _official(
        "blip-base-vqa-capfilt-l",
        "model_base_vqa_capfilt_large.pth",
        "vqa",
        "blip-base",
        480,
        "ViT-B CapFilt-L, VQAv2 (+VG QA) fine-tune, 480 px; the default VQA model",
    ),
    # NLVR2 (two-image encoder).
    _official(
        "blip-base-nlvr", "model_base_nlvr.pth", "nlvr", "blip-base", 384, "ViT-B, NLVR2 fine-tune (no HF equivalent)"
    ),
    # Hugging Face conversions (spec §9). The hub configs are 384 px throughout.
    _hf(
        "Salesforce/blip-image-captioning-base",
        "caption",
        "blip-base",
        384,
        "ViT-B captioner converted from the *pre-trained* model_base_capfilt_large.pth (its LM decoder), "
        "not from the COCO-finetuned captioner blip-base-caption-coco",
    ),
    _hf("Salesforce/blip-image-captioning-large", "caption", "blip-large", 384, "ViT-L captioner (HF conversion)"),
    _hf(
        "Salesforce/blip-itm-base-coco",
        "retrieval",
        "blip-base",
        384,
        "ViT-B ITM/ITC heads converted from model_base_retrieval_coco.pth (no momentum encoders or queues)",
    ),
    _hf("Salesforce/blip-itm-large-coco", "retrieval", "blip-large", 384, "ViT-L ITM/ITC, COCO (HF conversion)"),
    _hf("Salesforce/blip-itm-base-flickr", "retrieval", "blip-base", 384, "ViT-B ITM/ITC, Flickr30k (HF conversion)"),
    _hf("Salesforce/blip-itm-large-flickr", "retrieval", "blip-large", 384, "ViT-L ITM/ITC, Flickr30k (HF conversion)"),
    _hf(
        "Salesforce/blip-vqa-base",
        "vqa",
        "blip-base",
        384,
        "ViT-B VQA converted from model_base_vqa_capfilt_large.pth; runs at 384 px with position embeddings "
        "interpolated from the 480 px fine-tune",
    ),
    _hf(
        "Salesforce/blip-vqa-capfilt-large",
        "vqa",
        "blip-base",
        384,
        "ViT-B CapFilt-L VQA (HF conversion); the spec does not record its source file or resolution: its config.json "
        "sets no image_size, so transformers runs it at its default 384 px",
    ),
]

PRETRAINED: dict[str, PretrainedEntry] = {e.name: e for e in _ENTRIES}

DEFAULT_MODELS: dict[str, str] = {
    "caption": "blip-base-caption-coco",
    "retrieval": "blip-base-retrieval-coco",
    "vqa": "blip-base-vqa-capfilt-l",
    "nlvr": "blip-base-nlvr",
    "pretrain": "blip-base-pretrain-capfilt-l",
}

# Official filenames, plus the three names that carried a literal '*' until 2022-03-02 (predict.py still uses them):
# the '*' marked the CapFilt-L column, and the README commit 17dcdd9 of salesforce/BLIP renamed them to
# model_base_caption_capfilt_large.pth, model_base_capfilt_large.pth and model_base_vqa_capfilt_large.pth (the old
# table listed model_vqa.pth and model*_vqa.pth side by side: different files).
_BY_FILENAME: dict[str, str] = {e.filename: e.name for e in _ENTRIES if e.filename}
_BY_FILENAME.update(
    {
        "model*_base_caption.pth": "blip-base-caption-coco",
        "model*_base.pth": "blip-base-pretrain-capfilt-l",
        "model*_vqa.pth": "blip-base-vqa-capfilt-l",
    }
)


def list_pretrained(task: str | None = None) -> list[str]:
    """Names of the released checkpoints, in table order.

    Args:
        task: Keep only the checkpoints trained for this task (one of :data:`TASKS`); ``None`` keeps all.

    Returns:
        The entry names, official files first, then the hub repos.

    Raises:
        ValueError: ``task`` is not a known task.
    """
    if task is not None and task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    return [name for name, entry in PRETRAINED.items() if task is None or entry.task == task]


def get_pretrained(name: str) -> PretrainedEntry:
    """Looks up a released checkpoint.

    Args:
        name: An entry name (``"blip-base-caption-coco"``, ``"Salesforce/blip-vqa-base"``; case does not matter, as
            on the hub), an official filename (``"model_base_caption_capfilt_large.pth"``) or its full URL, or
            one of the historical names with a literal ``*`` (``"model*_base_caption.pth"``).

    Returns:
        The table entry.

    Raises:
        UnknownModelError: Nothing matches; the message suggests the closest names.
    """
    if name in PRETRAINED:
        return PRETRAINED[name]
    key = name.removeprefix(OFFICIAL_BASE_URL)
    if key in _BY_FILENAME:
        return PRETRAINED[_BY_FILENAME[key]]
    folded = {n.lower(): n for n in PRETRAINED}
    if name.lower() in folded:
        return PRETRAINED[folded[name.lower()]]
    raise UnknownModelError(name, _close_matches(name))


def _close_matches(name: str) -> list[str]:
    candidates = {n.lower(): n for n in PRETRAINED} | {f.lower(): n for f, n in _BY_FILENAME.items()}
    matches = difflib.get_close_matches(name.lower(), list(candidates), n=6, cutoff=0.6)
    return list(dict.fromkeys(candidates[m] for m in matches))[:3]


def _env_true(var: str) -> bool:
    return os.environ.get(var, "").upper() in _TRUE_VALUES


def _offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) as set now, or as huggingface_hub read it at import."""
    from huggingface_hub import constants

    return _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE") or bool(constants.HF_HUB_OFFLINE)


def _hf_hub_cache() -> Path:
    """The Hugging Face hub cache, honouring ``HF_HUB_CACHE`` / ``HF_HOME`` even when set after import."""
    from huggingface_hub import constants

    # huggingface_hub resolves these once at import; re-read them so a later change (a test, a notebook) applies.
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.path.expandvars(os.environ[var])).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.path.expandvars(os.environ["HF_HOME"])).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE)


def cache_dir() -> Path:
    """The folder that holds downloaded official ``.pth`` files.

    Returns:
        ``$OPENBLIP_CACHE`` if set, else ``<hub cache>/openblip/official`` where the hub cache is
        ``huggingface_hub.constants.HF_HUB_CACHE`` (``$HF_HUB_CACHE``, or ``$HF_HOME/hub``, or
        ``~/.cache/huggingface/hub``). Not created here.
    """
    override = os.environ.get("OPENBLIP_CACHE")
    if override:
        return Path(os.path.expandvars(override)).expanduser()
    return _hf_hub_cache() / "openblip" / "official"


def cache_path(name: str) -> Path:
    """Where an official checkpoint is (or will be) cached.

    Args:
        name: Anything :func:`get_pretrained` accepts, naming an official entry.

    Returns:
        ``cache_dir() / filename``.

    Raises:
        ValueError: The entry is a hub repo, which lives in the hub's own cache layout.
    """
    entry = get_pretrained(name)
    if entry.source != "official":
        raise ValueError(f"{entry.name} is a Hugging Face repo; it is cached by huggingface_hub, not as one file")
    return cache_dir() / entry.filename  # type: ignore[operator]


def is_cached(name: str) -> bool:
    """Whether a checkpoint can be used without the network.

    Args:
        name: Anything :func:`get_pretrained` accepts.

    Returns:
        For an official file, whether it is in :func:`cache_dir`; for a hub repo, whether its ``config.json`` and a
        weights file are in the hub cache.
    """
    entry = get_pretrained(name)
    if entry.source == "official":
        return cache_path(entry.name).is_file()
    import huggingface_hub

    def cached(filename: str) -> bool:
        found = huggingface_hub.try_to_load_from_cache(entry.hf_repo, filename, cache_dir=_hf_hub_cache())
        return isinstance(found, str)

    return cached("config.json") and any(cached(f) for f in HF_WEIGHT_FILES)


def download(name: str, *, progress: bool = True, force: bool = False) -> Path:
    """Returns a local copy of a released checkpoint, downloading it if needed.

    Args:
        name: Anything :func:`get_pretrained` accepts.
        progress: Show a tqdm progress bar on stderr while downloading an official file.
        force: For an official file, do not trust the cache blindly: re-check the cached file against the entry's
            sha256 and download it again when it does not match or when there is no hash to check against. For a
            hub repo, passed to ``snapshot_download`` as ``force_download``.

    Returns:
        The ``.pth`` file of an official entry, or the snapshot directory of a hub repo (holding ``config.json`` and
        the weights).

    Raises:
        UnknownModelError: ``name`` is not in the table.
        DownloadError: The checkpoint is not cached and cannot be fetched (offline mode, network failure, hub
            error), or the downloaded bytes do not match the known sha256. The message says what to fetch, where to
            put it, and that a local path can be passed instead.
    """
    entry = get_pretrained(name)
    if entry.source == "hf":
        return _download_hf(entry, force=force)
    return _download_official(entry, progress=progress, force=force)


def _local_path_hint(example: str) -> str:
    return f"or pass a local path instead: openblip.load({example!r}) in Python, --model PATH on the command line"


def _official_error(entry: PretrainedEntry, final: Path, reason: str) -> DownloadError:
    return DownloadError(
        f"cannot get {entry.filename} ({entry.name}): {reason}.\n"
        f"Download {entry.url}\n"
        f"and put it at {final}\n" + _local_path_hint(f"/path/to/{entry.filename}") + "."
    )


def _download_official(entry: PretrainedEntry, *, progress: bool, force: bool) -> Path:
    final = cache_path(entry.name)
    if final.is_file():
        if not force:
            return final
        if entry.sha256 and _sha256_file(final) == entry.sha256.lower():
            return final
        logger.info("re-downloading %s (force=True, cached copy %s)", entry.filename, final)
    if _offline():
        raise _official_error(entry, final, "HF_HUB_OFFLINE is set and the file is not in the cache")
    final.parent.mkdir(parents=True, exist_ok=True)
    # One download per file at a time (torchrun starts every rank on the same model; they all wrote one .part
    # file, and all but the first failed): the others wait on the lock (kept in .locks/) and then find the file.
    import filelock

    locks = final.parent / ".locks"
    locks.mkdir(exist_ok=True)
    with filelock.FileLock(str(locks / (final.name + ".lock"))):
        if final.is_file() and not force:
            return final
        return _download_official_locked(entry, final, progress=progress)


def _download_official_locked(entry: PretrainedEntry, final: Path, *, progress: bool) -> Path:
    part = final.with_name(final.name + ".part")
    try:
        actual = _fetch(entry.url, part, desc=entry.filename, progress=progress)  # type: ignore[arg-type]
        if entry.sha256 and actual != entry.sha256.lower():
            raise DownloadError(
                f"sha256 mismatch for {entry.filename} from {entry.url}: expected {entry.sha256.lower()}, "
                f"got {actual}; the partial download was deleted. Retry, or check the file you are given."
            )
        os.replace(part, final)  # atomic: readers never see a half-written checkpoint
    except DownloadError:
        part.unlink(missing_ok=True)
        raise
    except (OSError, HTTPException) as exc:  # URLError and HTTPError are OSErrors
        part.unlink(missing_ok=True)
        raise _official_error(entry, final, f"the download failed ({type(exc).__name__}: {exc})") from exc
    except BaseException:  # KeyboardInterrupt: leave no partial file behind either
        part.unlink(missing_ok=True)
        raise
    return final


def _fetch(url: str, dest: Path, *, desc: str, progress: bool) -> str:
    """Streams ``url`` into ``dest``; returns the sha256 of what was written."""
    request = urllib.request.Request(url, headers={"User-Agent": "openblip"})
    digest = hashlib.sha256()
    with urllib.request.urlopen(request, timeout=_TIMEOUT) as response:
        length = response.headers.get("Content-Length") if response.headers is not None else None
        total = int(length) if length else None
        written = 0
        with (
            open(dest, "wb") as out,
            tqdm(
                total=total,
                desc=desc,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                file=sys.stderr,
                disable=not progress,
            ) as bar,
        ):
            for chunk in _chunks(response):
                out.write(chunk)
                digest.update(chunk)
                written += len(chunk)
                bar.update(len(chunk))
    if total is not None and written != total:
        raise urllib.error.URLError(f"connection closed after {written} of {total} bytes")
    return digest.hexdigest()


def _chunks(stream: IO[bytes]) -> Iterator[bytes]:
    while chunk := stream.read(_CHUNK):
        yield chunk


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in _chunks(f):
            digest.update(chunk)
    return digest.hexdigest()


def _hub_errors() -> tuple[type[BaseException], ...]:
    """What a failed ``snapshot_download`` raises: hub errors, OSError, and the hub's HTTP client errors."""
    import importlib

    try:
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError:  # huggingface_hub < 0.23
        from huggingface_hub.utils import HfHubHTTPError, LocalEntryNotFoundError
    errors: list[type[BaseException]] = [LocalEntryNotFoundError, HfHubHTTPError, OSError]
    # Connection failures surface as the client library's own exceptions; which library depends on the version.
    for module, attr in (("httpx2", "HTTPError"), ("httpx", "HTTPError"), ("requests", "RequestException")):
        try:
            errors.append(getattr(importlib.import_module(module), attr))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def _has_hf_weights(folder: Path) -> bool:
    return any((folder / f).is_file() for f in HF_WEIGHT_FILES) or any(folder.glob("*.safetensors"))


def _download_hf(entry: PretrainedEntry, *, force: bool) -> Path:
    import huggingface_hub

    offline = _offline()
    hub_cache = _hf_hub_cache()
    try:
        for patterns in (HF_ALLOW_PATTERNS, HF_FALLBACK_PATTERNS):
            snapshot = huggingface_hub.snapshot_download(
                entry.hf_repo,  # type: ignore[arg-type]
                allow_patterns=patterns,
                cache_dir=hub_cache,
                force_download=force,
                local_files_only=offline,
            )
            if _has_hf_weights(Path(snapshot)):
                break
    except _hub_errors() as exc:
        reason = "HF_HUB_OFFLINE is set and it is not in the cache" if offline else "the download failed"
        repo_dir = entry.hf_repo.split("/")[-1]  # type: ignore[union-attr]
        raise DownloadError(
            f"cannot get the Hugging Face repo {entry.hf_repo}: {reason} ({type(exc).__name__}: {exc}).\n"
            f"Fetch it on a machine with network access (`hf download {entry.hf_repo}`; config.json and the weights: "
            f"{HF_ALLOW_PATTERNS[1:]} or pytorch_model.bin)\n"
            f"into the hub cache {hub_cache}\n" + _local_path_hint(f"/path/to/{repo_dir}") + ", a folder holding "
            "config.json and the weights."
        ) from exc
    if not _has_hf_weights(Path(snapshot)):
        where = "in the cache (HF_HUB_OFFLINE is set)" if offline else "in the repo"
        raise DownloadError(
            f"{entry.hf_repo}: no weights {where}: neither *.safetensors nor pytorch_model.bin in {snapshot}.\n"
            f"Fetch them on a machine with network access (`hf download {entry.hf_repo}`)\n"
            + _local_path_hint(f"/path/to/{entry.hf_repo.split('/')[-1]}")  # type: ignore[union-attr]
            + "."
        )
    return Path(snapshot)  # type: ignore[arg-type]
