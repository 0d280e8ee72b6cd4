"""Training and evaluation datasets in BLIP's annotation formats, plus generic caption formats.

Map-style :class:`torch.utils.data.Dataset` classes reading the original BLIP annotation JSONs (spec section 4.1),
with configurable image roots and no downloading:

* :class:`CaptionTrainDataset`: ``{"image", "caption": str, "image_id"}`` -> ``(image, prompt + caption, img_idx)``;
* :class:`CaptionEvalDataset`: ``{"image", "caption": [str, ...]}`` -> ``(image, index)`` (or ``(image, image_id)``);
* :class:`PretrainDataset`: ``{"image", "caption": str | [str, ...]}`` -> ``(image, caption)``;
* :class:`VQADataset`: ``{"image", "question", "answer", "dataset", ...}`` -> train
  ``(image, question, answers, weights)``, test ``(image, question, question_id)``; :func:`vqa_collate_fn`;
* :class:`NLVRDataset`: ``{"images": [p0, p1], "sentence", "label"}`` -> ``(image0, image1, sentence, label)``;
* generic formats, ``(image, caption)`` or ``(image, caption, img_idx)``: :class:`JsonlCaptionDataset` (JSON lines
  ``{"image", "caption"}``), :class:`CsvCaptionDataset` (``image,caption`` columns),
  :class:`ImageFolderCaptionDataset` (``x.jpg`` + ``x.txt``, one caption a line), and :func:`make_webdataset`
  (tar shards with ``jpg``/``png`` + ``txt``/``json`` members; an iterable dataset).

Captions go through :func:`openblip.text.pre_caption`, questions through :func:`openblip.text.pre_question`, exactly
where the original applies them. ``transform`` is either an image-only callable (e.g.
:func:`openblip.transforms.eval_transform`) or a pair transform with ``accepts_text = True`` (e.g.
:func:`openblip.data.augment.train_transform`), which receives the text as well and may rewrite it (a horizontal
flip swaps "left" and "right"); ``None`` returns the loaded PIL image.

**Bad images are never dropped silently.** Images are loaded with :func:`openblip.image.load_image`; when that
raises :class:`~openblip.image.ImageLoadError` (missing, empty, truncated, corrupt file ...), the dataset logs one
warning line naming the path and the reason (logger ``openblip.data.datasets``), records the failure and returns
the next item that loads (index + 1, + 2, ... wrapping around; deterministic). ``strict=True`` re-raises the error
instead. Evaluation datasets (:class:`CaptionEvalDataset`, :class:`VQADataset` with ``split="test"``,
:class:`NLVRDataset` with ``train=False``) are strict by default: there a substitute item would score one
image or question twice and another never, under the wrong id; pass ``strict=False`` to opt in.
``dataset.failures`` lists the :class:`ImageFailure` records and ``dataset.failure_count`` counts them --
across ``DataLoader`` workers too (a shared-memory counter); the list itself holds the failures seen in the calling
process, or, with ``failure_log=path``, every process's failures (appended there as JSON lines). More than
``max_consecutive_failures`` failures in a row raise :class:`TooManyBadImages` (usually a wrong image root).
:class:`SkipBadImages` wraps any other map-style dataset with the same policy.

Randomness (NLVR's pair swap, picking one of several captions) uses a :class:`random.Random` seeded from
:func:`torch.initial_seed`, i.e. from each ``DataLoader`` worker's seed: no global RNG, reproducible after
``torch.manual_seed``.
"""

from __future__ import annotations

import csv
import glob
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from openblip.data.augment import WorkerSeededRandom, swap_left_right
from openblip.eval.nlvr import as_bool_label
from openblip.image import ImageLoadError, load_image
from openblip.text import pre_caption, pre_question

__all__ = [
    "BadImagePolicy",
    "CaptionEvalDataset",
    "CaptionTrainDataset",
    "CsvCaptionDataset",
    "IMAGE_EXTENSIONS",
    "ImageFailure",
    "ImageFolderCaptionDataset",
    "JsonlCaptionDataset",
    "NLVRDataset",
    "PretrainDataset",
    "SkipBadImages",
    "TooManyBadImages",
    "VQADataset",
    "WebDatasetCaptions",
    "load_annotations",
    "make_webdataset",
    "parse_image_id",
    "vqa_collate_fn",
]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike
Annotations = PathLike | Sequence[PathLike] | Sequence[Mapping[str, Any]]

#: File extensions :class:`ImageFolderCaptionDataset` treats as images.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")

_COUNTER_SLOTS = 257  # slot 0: main process; 1 + worker_id for DataLoader workers


# --------------------------------------------------------------------------------------------------------------------
# Bad-image policy
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageFailure:
    """One image that could not be loaded: where, why, and which dataset index asked for it."""

    path: str
    reason: str
    index: int | None = None


class TooManyBadImages(RuntimeError):
    """Too many consecutive items failed to load (wrong image root? unmounted disk?)."""


class BadImagePolicy:
    """Counts, logs and skips (or re-raises) :class:`~openblip.image.ImageLoadError`; shared by every dataset here.

    Args:
        strict: Re-raise the first :class:`~openblip.image.ImageLoadError` instead of skipping.
        max_consecutive_failures: Give up with :class:`TooManyBadImages` after this many failures in a row
            (capped at the dataset's length).
        failure_log: Optional path of a JSON-lines file each failure is appended to, from every process, so that
            :attr:`failures` in the main process sees those hit in ``DataLoader`` workers as well.
        name: Name used in log lines.
    """

    def __init__(
        self,
        strict: bool = False,
        max_consecutive_failures: int = 100,
        failure_log: PathLike | None = None,
        name: str = "dataset",
    ) -> None:
        if max_consecutive_failures < 1:
            raise ValueError(f"max_consecutive_failures must be >= 1, got {max_consecutive_failures}")
        self.strict = bool(strict)
        self.max_consecutive_failures = int(max_consecutive_failures)
        self.failure_log = os.fspath(failure_log) if failure_log is not None else None
        self.name = name
        self._local: list[ImageFailure] = []
        self._counts = torch.zeros(_COUNTER_SLOTS, dtype=torch.int64).share_memory_()

    @property
    def failure_count(self) -> int:
        """Failures recorded by this process and by every ``DataLoader`` worker of it."""
        return int(self._counts.sum().item())

    @property
    def failures(self) -> list[ImageFailure]:
        """The failures: from ``failure_log`` if set (all processes), else those seen in this process."""
        if self.failure_log is None:
            return list(self._local)
        if not os.path.exists(self.failure_log):
            return []
        out = []
        with open(self.failure_log, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line:
                    rec = json.loads(line)
                    out.append(ImageFailure(rec["path"], rec["reason"], rec.get("index")))
        return out

    def record(self, error: ImageLoadError, index: int | None = None) -> ImageFailure:
        """Count, log (one line) and remember one failure."""
        failure = ImageFailure(str(error.source), str(error.reason), index)
        info = get_worker_info()
        slot = 0 if info is None else 1 + info.id % (_COUNTER_SLOTS - 1)
        self._counts[slot] += 1
        self._local.append(failure)
        if self.failure_log is not None:
            with open(self.failure_log, "a", encoding="utf-8") as f:
                f.write(json.dumps(asdict(failure)) + "\n")
        logger.warning(
            "%s: skipping bad image %s (%s) at index %s; %d bad image(s) so far",
            self.name,
            failure.path,
            failure.reason,
            index,
            self.failure_count,
        )
        return failure

    def fetch(self, get: Callable[[int], Any], index: int, length: int) -> Any:
        """``get(index)``; on :class:`ImageLoadError` record it and try ``index + 1``, ``index + 2``, ... (mod
        ``length``), unless strict."""
        if length <= 0:
            raise IndexError("dataset is empty")
        if not -length <= index < length:
            raise IndexError(f"index {index} out of range for a dataset of length {length}")
        index %= length
        limit = min(self.max_consecutive_failures, length)
        last: ImageFailure | None = None
        for attempt in range(limit):
            i = (index + attempt) % length
            try:
                return get(i)
            except ImageLoadError as e:
                if self.strict:
                    raise
                last = self.record(e, i)
        raise TooManyBadImages(
            f"{self.name}: {limit} consecutive items from index {index} have unloadable images (last: "
            f"{last.path if last else '?'}: {last.reason if last else '?'}); check the image root, or raise "
            "max_consecutive_failures"
        )


class _PolicyMixin:
    """``failures`` / ``failure_count`` / ``strict`` for classes holding a :class:`BadImagePolicy` as ``policy``."""

    policy: BadImagePolicy

    @property
    def failures(self) -> list[ImageFailure]:
        """Images that failed to load (see :attr:`BadImagePolicy.failures`)."""
        return self.policy.failures

    @property
    def failure_count(self) -> int:
        """Number of images that failed to load, in this process and its ``DataLoader`` workers."""
        return self.policy.failure_count

    @property
    def strict(self) -> bool:
        return self.policy.strict


class SkipBadImages(_PolicyMixin, Dataset):
    """Wrap a map-style dataset whose ``__getitem__`` may raise :class:`~openblip.image.ImageLoadError`.

    A failing index is recorded, logged and replaced by the next index that loads (deterministically); with
    ``strict=True`` the error propagates. Other attributes are forwarded to the wrapped dataset (e.g. ``.text``).
    """

    def __init__(
        self,
        dataset: Dataset,
        strict: bool = False,
        max_consecutive_failures: int = 100,
        failure_log: PathLike | None = None,
    ) -> None:
        self.dataset = dataset
        self.policy = BadImagePolicy(strict, max_consecutive_failures, failure_log, name=type(dataset).__name__)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        return self.policy.fetch(self.dataset.__getitem__, index, len(self))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("dataset", "policy"):
            raise AttributeError(name)
        return getattr(self.dataset, name)


# --------------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------------


def load_annotations(ann_files: Annotations) -> list[dict[str, Any]]:
    """Read BLIP annotation files into one list of records.

    Args:
        ann_files: A path or a list of paths to JSON files holding a list of records (``.jsonl`` files: one record
            a line), concatenated in order; or a list of records (dicts) used as is.
    """
    if isinstance(ann_files, (str, os.PathLike)):
        ann_files = [ann_files]
    items = list(ann_files)
    if items and all(isinstance(a, Mapping) for a in items):
        return [dict(a) for a in items]  # type: ignore[arg-type]
    out: list[dict[str, Any]] = []
    for path in items:
        if isinstance(path, Mapping):
            raise TypeError("ann_files mixes paths and records")
        path = os.fspath(path)
        if path.endswith(".jsonl"):
            out.extend(_read_jsonl(path))
            continue
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON list of annotation records, got {type(data).__name__}")
        out.extend(data)
    return out


def _read_jsonl(path: str) -> list[dict[str, Any]]:
    records = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: invalid JSON ({e})") from e
    return records


def _join(root: PathLike | None, path: str) -> str:
    return os.path.join(os.fspath(root), path) if root else path


def _apply(transform: Callable[..., Any] | None, image: Any, text: Any = None) -> tuple[Any, Any]:
    """Run an image-only or pair (``accepts_text``) transform; returns ``(image, text)``."""
    if transform is None:
        return image, text
    if getattr(transform, "accepts_text", False):
        return transform(image, text)
    return transform(image), text


def _view_idx(idx: int, n_images: int, before: str, after: str) -> int:
    """Retrieval's ``idx`` of an item: the image's index, or ``idx + n_images`` when the pair transform mirrored
    the image and rewrote its caption (left/right swapped). Such a caption is false for the unmirrored image, and
    the idx-aware ITC counts every item with the same ``idx`` as a positive (in the batch and in the idx queue),
    so a mirrored view with a rewritten caption gets an id of its own. (The original flips blindly and keeps one
    id per image; its flipped items then pair an image with a caption false for it.)"""
    return idx + n_images if after != before else idx


_TRAILING_DIGITS = re.compile(r"(\d+)$")


def parse_image_id(path: str) -> int | None:
    """The integer at the end of a file name's stem: ``COCO_val2014_000000391895.jpg`` -> 391895,
    ``1000092795.jpg`` -> 1000092795; ``None`` if the stem does not end in digits.

    (The original uses ``name.strip('.jpg').split('_')[-1]``, which agrees on COCO and Flickr names.)
    """
    stem = os.path.splitext(os.path.basename(path))[0]
    m = _TRAILING_DIGITS.search(stem)
    return int(m.group(1)) if m else None


class _ImageDataset(_PolicyMixin, Dataset):
    """Base: holds the bad-image policy and the worker-seeded RNG; subclasses implement ``_get(index)``."""

    def __init__(
        self,
        transform: Callable[..., Any] | None,
        strict: bool,
        max_consecutive_failures: int,
        failure_log: PathLike | None,
    ) -> None:
        self.transform = transform
        self.policy = BadImagePolicy(strict, max_consecutive_failures, failure_log, name=type(self).__name__)
        self._rng = WorkerSeededRandom(f"openblip.data.{type(self).__name__}")

    def __len__(self) -> int:
        raise NotImplementedError

    def _get(self, index: int) -> Any:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Any:
        return self.policy.fetch(self._get, index, len(self))


def _contiguous_ids(keys: Iterable[Any]) -> tuple[list[int], dict[Any, int]]:
    mapping: dict[Any, int] = {}
    out = []
    for k in keys:
        if k not in mapping:
            mapping[k] = len(mapping)
        out.append(mapping[k])
    return out, mapping


# --------------------------------------------------------------------------------------------------------------------
# BLIP formats
# --------------------------------------------------------------------------------------------------------------------


class CaptionTrainDataset(_ImageDataset):
    """COCO-Karpathy / Flickr30k train lists (``coco_karpathy_train``, ``flickr30k_train``).

    Records ``{"image": path under image_root, "caption": str, "image_id": any}``. Item ``i`` is
    ``(image, prompt + pre_caption(caption, max_words), img_idx)``, where ``img_idx`` numbers the distinct
    ``image_id`` values 0, 1, 2, ... in order of first appearance (retrieval's ``idx``: captions of the same image
    share it; a mirrored view whose caption the transform rewrote gets ``img_idx + len(img_ids)``, see
    :func:`_view_idx`). Mapping: :attr:`img_ids`.

    The default ``prompt`` is captioning's ``'a picture of '`` (``caption_coco.yaml``); **retrieval trains with
    ``prompt=''``** (the original class's default).
    """

    def __init__(
        self,
        ann_files: Annotations,
        image_root: PathLike | None,
        transform: Callable[..., Any] | None,
        max_words: int = 30,
        prompt: str = "a picture of ",
        *,
        strict: bool = False,
        max_consecutive_failures: int = 100,
        failure_log: PathLike | None = None,
    ) -> None:
        super().__init__(transform, strict, max_consecutive_failures, failure_log)
        self.annotation = load_annotations(ann_files)
        self.image_root = image_root
        self.max_words = max_words
        self.prompt = prompt
        idx, self.img_ids = _contiguous_ids(ann["image_id"] for ann in self.annotation)
        self._img_idx = idx

    def __len__(self) -> int:
        return len(self.annotation)

    def _get(self, index: int) -> tuple[Any, str, int]:
        ann = self.annotation[index]
        image = load_image(_join(self.image_root, ann["image"]))
        caption = pre_caption(ann["caption"], self.max_words)
        image, text = _apply(self.transform, image, caption)
        return image, self.prompt + text, _view_idx(self._img_idx[index], len(self.img_ids), caption, text)


class CaptionEvalDataset(_ImageDataset):
    """COCO-Karpathy / Flickr30k val and test lists (caption and retrieval evaluation; also NoCaps).

    Records ``{"image": path, "caption": [str, ...]}`` (the caption list may be missing, e.g. NoCaps). Item ``i`` is
    ``(image, i)`` -- or ``(image, image_id)`` with ``return_image_id=True``, as the original caption-eval dataset.
    Attributes, as ``coco_karpathy_retrieval_eval`` builds them:

    * ``text``: every caption, ``pre_caption``'d, image by image;
    * ``image``: the image paths (as in the annotation);
    * ``img2txt``: ``{image index: [text indices]}``; ``txt2img``: ``{text index: image index}``;
    * ``image_ids``: integer ids, ``img_id``/``image_id`` if the record has one, else parsed from the file name
      (``..._000000391895.jpg`` -> 391895, see :func:`parse_image_id`); ``None`` if neither.
    """

    def __init__(
        self,
        ann_file: Annotations,
        image_root: PathLike | None,
        transform: Callable[..., Any] | None,
        max_words: int = 30,
        *,
        return_image_id: bool = False,
        strict: bool = True,
        max_consecutive_failures: int = 100,
        failure_log: PathLike | None = None,
    ) -> None:
        super().__init__(transform, strict, max_consecutive_failures, failure_log)
        self.annotation = load_annotations(ann_file)
        self.image_root = image_root
        self.max_words = max_words
        self.return_image_id = return_image_id
        self.text: list[str] = []
        self.image: list[str] = []
        self.img2txt: dict[int, list[int]] = {}
        self.txt2img: dict[int, int] = {}
        self.image_ids: list[int | None] = []
        txt_id = 0
        for img_id, ann in enumerate(self.annotation):
            self.image.append(ann["image"])
            self.img2txt[img_id] = []
            captions = ann.get("caption", [])
            if isinstance(captions, str):
                captions = [captions]
            for caption in captions:
                self.text.append(pre_caption(caption, max_words))
                self.img2txt[img_id].append(txt_id)
                self.txt2img[txt_id] = img_id
                txt_id += 1
            explicit = ann.get("img_id", ann.get("image_id"))
            self.image_ids.append(int(explicit) if explicit is not None else parse_image_id(ann["image"]))

    def __len__(self) -> int:
        return len(self.annotation)

    def _get(self, index: int) -> tuple[Any, int]:
        image = load_image(_join(self.image_root, self.annotation[index]["image"]))
        image, _ = _apply(self.transform, image, None)
        if self.return_image_id:
            image_id = self.image_ids[index]
            if image_id is None:
                raise ValueError(f"no image id for {self.annotation[index]['image']!r}")
            return image, image_id
        return image, index


class PretrainDataset(_ImageDataset):
    """Pre-training lists ``{"image": path, "caption": str}`` (``pretrain_dataset``).

    Item: ``(image, pre_caption(caption, max_words))``. The original uses ``ann['image']`` as a full path;
    ``image_root`` (optional) is joined in front of relative paths. A caption list (not supported by the original)
    gives one caption drawn at random per access. ``laion_path``: a folder of ``*.json`` shards, one of which
    (sorted by name) is appended to the annotations and cycled by :meth:`reload_laion` each epoch, as the original.
    """

    def __init__(
        self,
        ann_files: Annotations,
        image_root: PathLike | None,
        transform: Callable[..., Any] | None,
        max_words: int = 30,
        *,
        laion_path: PathLike | None = None,
        strict: bool = False,
        max_consecutive_failures: int = 100,
        failure_log: PathLike | None = None,
    ) -> None:
        super().__init__(transform, strict, max_consecutive_failures, failure_log)
        self.ann_pretrain = load_annotations(ann_files)
        self.image_root = image_root
        self.max_words = max_words
        self.laion_files: list[str] = []
        self.ann_laion: list[dict[str, Any]] = []
        if laion_path:
            self.laion_files = sorted(glob.glob(os.path.join(os.fspath(laion_path), "*.json")))
            if not self.laion_files:
                raise FileNotFoundError(f"no *.json shards in laion_path {os.fspath(laion_path)!r}")
            self.reload_laion(0)
        self.annotation = self.ann_pretrain + self.ann_laion

    def reload_laion(self, epoch: int) -> None:
        """Load LAION shard ``epoch % number of shards`` (call at the start of each epoch)."""
        if not self.laion_files:
            return
        path = self.laion_files[epoch % len(self.laion_files)]
        logger.info("loading %s", path)
        self.ann_laion = load_annotations(path)
        self.annotation = self.ann_pretrain + self.ann_laion

    def __len__(self) -> int:
        return len(self.annotation)

    def _get(self, index: int) -> tuple[Any, str]:
        ann = self.annotation[index]
        image = load_image(_join(self.image_root, ann["image"]))
        caption = ann["caption"]
        if isinstance(caption, (list, tuple)):
            caption = caption[self._rng.get().randrange(len(caption))]
        caption = pre_caption(caption, self.max_words)
        return _apply(self.transform, image, caption)


class VQADataset(_ImageDataset):
    """VQA v2 + Visual Genome QA (``vqa_dataset``).

    Records: ``vqa_{train,val}.json`` ``{"question_id", "question", "answer": [10 str], "image", "dataset": "vqa"}``,
    ``vg_qa.json`` ``{"question", "answer": str, "image", "dataset": "vg"}``, ``vqa_test.json``
    ``{"question_id", "question", "image", "dataset"}``.

    * ``split="train"``: ``(image, pre_question(question), answers, weights)``. VQA records weight each distinct
      answer by ``count / len(answer list)``; VG records give ``[answer]`` with weight ``[0.2]``. (Records without
      ``"dataset"`` count as VQA; a single answer string there gets weight 1.0.) With a pair transform the question
      and answers are passed together, so a flip swaps "left"/"right" in both.
    * ``split="test"``: ``(image, pre_question(question), question_id)``.

    Args:
        image_root: One root for every record, or ``{"vqa": root, "vg": root}`` chosen by the record's
            ``"dataset"`` (``"vqa_root"``/``"vg_root"`` keys also accepted, as in ``vqa.yaml``).
        answer_list: The candidate answers for rank inference (``answer_list.json``): a path or a list; kept as
            :attr:`answer_list`.
    """

    def __init__(
        self,
        ann_files: Annotations,
        image_root: PathLike | Mapping[str, PathLike] | None,
        transform: Callable[..., Any] | None,
        split: str = "train",
        answer_list: PathLike | Sequence[str] | None = None,
        max_ques_words: int = 50,
        *,
        strict: bool | None = None,
        max_consecutive_failures: int = 100,
        failure_log: PathLike | None = None,
    ) -> None:
        strict = split == "test" if strict is None else strict
        super().__init__(transform, strict, max_consecutive_failures, failure_log)
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        self.split = split
        self.annotation = load_annotations(ann_files)
        if isinstance(image_root, Mapping):
            self.image_roots: dict[str, PathLike] | None = {
                (k[: -len("_root")] if k.endswith("_root") else k): v for k, v in image_root.items()
            }
            self.image_root = None
        else:
            self.image_roots = None
            self.image_root = image_root
        self.max_ques_words = max_ques_words
        if isinstance(answer_list, (str, os.PathLike)):
            with open(answer_list, encoding="utf-8") as f:
                answer_list = json.load(f)
        self.answer_list = list(answer_list) if answer_list is not None else None

    def __len__(self) -> int:
        return len(self.annotation)

    def _image_path(self, ann: Mapping[str, Any]) -> str:
        if self.image_roots is None:
            return _join(self.image_root, ann["image"])
        source = ann.get("dataset", "vqa")
        if source not in self.image_roots:
            raise KeyError(f"no image root for dataset {source!r}; image_root has {sorted(self.image_roots)}")
        return _join(self.image_roots[source], ann["image"])

    @staticmethod
    def answers_and_weights(ann: Mapping[str, Any]) -> tuple[list[str], list[float]]:
        """The original's answer weighting for one training record."""
        if ann.get("dataset") == "vg":
            return [ann["answer"]], [0.2]
        answers = ann["answer"]
        if isinstance(answers, str):
            return [answers], [1.0]
        weight: dict[str, float] = {}
        for a in answers:
            weight[a] = weight.get(a, 0.0) + 1 / len(answers)
        return list(weight.keys()), list(weight.values())

    def _get(self, index: int) -> tuple[Any, ...]:
        ann = self.annotation[index]
        image = load_image(self._image_path(ann))
        question = pre_question(ann["question"], self.max_ques_words)
        if self.split == "test":
            image, _ = _apply(self.transform, image, None)
            return image, question, ann["question_id"]
        answers, weights = self.answers_and_weights(ann)
        image, texts = _apply(self.transform, image, [question, *answers])
        return image, texts[0], list(texts[1:]), weights


def vqa_collate_fn(batch: Sequence[tuple[Any, str, list[str], list[float]]]) -> tuple[Any, ...]:
    """The original's VQA collate: ``(images [B,3,S,S], questions, answers (flat), weights (flat tensor), n)``
    where ``n[b]`` is the number of answers of question ``b``."""
    image_list, question_list, answer_list, weight_list, n = [], [], [], [], []
    for image, question, answer, weights in batch:
        image_list.append(image)
        question_list.append(question)
        weight_list += weights
        answer_list += answer
        n.append(len(answer))
    return torch.stack(image_list, dim=0), question_list, answer_list, torch.Tensor(weight_list), n


class NLVRDataset(_ImageDataset):
    """NLVR2 (``nlvr_dataset``): ``{"images": [p0, p1], "sentence": str, "label": "True" | "False"}``.

    Item: ``(image0, image1, pre_caption(sentence, max_words), label)`` with label 1 for ``"True"`` (or ``True``,
    ``1``, any case), 0 for ``"False"``; any other label is a ``ValueError`` (the original maps it to 0). With
    ``train=True``, half of the items (one draw each) swap the two images and swap "left"/"right" in the sentence,
    which keeps the label valid (NLVR2's "left"/"right" name the images).

    Differences from the original: it swaps in **every** split (val and test too, making evaluation random); here
    only with ``train=True``. It swaps only space-separated words equal to "left"/"right" (missing "left," or
    "right's"); here whole words (:func:`~openblip.data.augment.swap_left_right`). The transform gets each image
    alone (no text): a pair transform's own flip then flips that image without touching the sentence, as the
    original's per-image transform does.
    """

    def __init__(
        self,
        ann_file: Annotations,
        image_root: PathLike | None,
        transform: Callable[..., Any] | None,
        train: bool = False,
        max_words: int = 40,
        *,
        strict: bool | None = None,
        max_consecutive_failures: int = 100,
        failure_log: PathLike | None = None,
    ) -> None:
        strict = not train if strict is None else strict
        super().__init__(transform, strict, max_consecutive_failures, failure_log)
        self.annotation = load_annotations(ann_file)
        self.image_root = image_root
        self.train = bool(train)
        self.max_words = max_words

    def __len__(self) -> int:
        return len(self.annotation)

    def _get(self, index: int) -> tuple[Any, Any, str, int]:
        ann = self.annotation[index]
        raw0 = load_image(_join(self.image_root, ann["images"][0]))
        raw1 = load_image(_join(self.image_root, ann["images"][1]))
        image0, _ = _apply(self.transform, raw0, None)
        image1, _ = _apply(self.transform, raw1, None)
        sentence = pre_caption(ann["sentence"], self.max_words)
        label = int(as_bool_label(ann["label"]))  # the original: == "True"; a bool, 0/1 or "true" count too
        if self.train and self._rng.get().random() >= 0.5:
            return image1, image0, swap_left_right(sentence), label
        return image0, image1, sentence, label


# --------------------------------------------------------------------------------------------------------------------
# Generic caption formats
# --------------------------------------------------------------------------------------------------------------------


class _CaptionListDataset(_ImageDataset):
    """``(image path, caption)`` pairs -> ``(image, prompt + pre_caption(caption)[, img_idx])``."""

    def __init__(
        self,
        pairs: list[tuple[str, str]],
        transform: Callable[..., Any] | None,
        max_words: int,
        prompt: str,
        return_img_idx: bool,
        strict: bool,
        max_consecutive_failures: int,
        failure_log: PathLike | None,
        image_keys: Sequence[Any] | None = None,
    ) -> None:
        super().__init__(transform, strict, max_consecutive_failures, failure_log)
        self.samples = pairs
        self.max_words = max_words
        self.prompt = prompt
        self.return_img_idx = return_img_idx
        keys = image_keys if image_keys is not None else [p for p, _ in pairs]
        self.img_idx, self.img_ids = _contiguous_ids(keys)

    def __len__(self) -> int:
        return len(self.samples)

    def _get(self, index: int) -> tuple[Any, ...]:
        path, caption = self.samples[index]
        image = load_image(path)
        caption = pre_caption(caption, self.max_words)
        image, text = _apply(self.transform, image, caption)
        if self.return_img_idx:
            return image, self.prompt + text, _view_idx(self.img_idx[index], len(self.img_ids), caption, text)
        return image, self.prompt + text


class JsonlCaptionDataset(_CaptionListDataset):
    """JSON lines (or a JSON list) of ``{"image": path, "caption": str | [str, ...]}`` records.

    One item per caption (a caption list is expanded in order). Items ``(image, prompt + pre_caption(caption))``,
    plus ``img_idx`` (contiguous, grouped by ``image_id`` when records have it, else by image path) with
    ``return_img_idx=True`` -- the shape caption/retrieval fine-tuning expects.
    """

    def __init__(
        self,
        ann_file: Annotations,
        image_root: PathLike | None,
        transform: Callable[..., Any] | None,
        max_words: int = 30,
        prompt: str = "",
        *,
        return_img_idx: bool = False,
        image_key: str = "image",
        caption_key: str = "caption",
        strict: bool = False,
        max_consecutive_failures: int = 100,
        failure_log: PathLike | None = None,
    ) -> None:
        pairs: list[tuple[str, str]] = []
        keys: list[Any] = []
        for rec in load_annotations(ann_file):
            captions = rec[caption_key]
            if isinstance(captions, str):
                captions = [captions]
            path = _join(image_root, rec[image_key])
            for c in captions:
                pairs.append((path, c))
                keys.append(rec.get("image_id", path))
        super().__init__(
            pairs, transform, max_words, prompt, return_img_idx, strict, max_consecutive_failures, failure_log, keys
        )


class CsvCaptionDataset(_CaptionListDataset):
    """A CSV file with a header row naming (at least) an ``image`` and a ``caption`` column; one item per row.

    Items as :class:`JsonlCaptionDataset`.
    """

    def __init__(
        self,
        csv_file: PathLike,
        image_root: PathLike | None,
        transform: Callable[..., Any] | None,
        max_words: int = 30,
        prompt: str = "",
        *,
        return_img_idx: bool = False,
        image_key: str = "image",
        caption_key: str = "caption",
        delimiter: str = ",",
        strict: bool = False,
        max_consecutive_failures: int = 100,
        failure_log: PathLike | None = None,
    ) -> None:
        pairs: list[tuple[str, str]] = []
        with open(csv_file, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, delimiter=delimiter)
            missing = {image_key, caption_key} - set(reader.fieldnames or [])
            if missing:
                raise ValueError(f"{os.fspath(csv_file)}: missing column(s) {sorted(missing)}; has {reader.fieldnames}")
            for row in reader:
                pairs.append((_join(image_root, row[image_key]), row[caption_key]))
        super().__init__(
            pairs, transform, max_words, prompt, return_img_idx, strict, max_consecutive_failures, failure_log
        )


class ImageFolderCaptionDataset(_CaptionListDataset):
    """A folder of images, each with a same-name ``.txt`` file (``cat.jpg`` + ``cat.txt``) of captions.

    Every non-empty line of the text file is one caption and one item. Files are found recursively and sorted, so
    the order is stable. Images without a caption file are not used; they are listed in :attr:`uncaptioned` and
    counted in one warning. Items as :class:`JsonlCaptionDataset` (``img_idx`` groups by image file).
    """

    def __init__(
        self,
        root: PathLike,
        transform: Callable[..., Any] | None,
        max_words: int = 30,
        prompt: str = "",
        *,
        return_img_idx: bool = False,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        strict: bool = False,
        max_consecutive_failures: int = 100,
        failure_log: PathLike | None = None,
    ) -> None:
        root = os.fspath(root)
        if not os.path.isdir(root):
            raise NotADirectoryError(f"image folder {root!r} does not exist")
        exts = tuple(e.lower() for e in extensions)
        images = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames):
                if name.lower().endswith(exts):
                    images.append(os.path.join(dirpath, name))
        pairs: list[tuple[str, str]] = []
        self.uncaptioned: list[str] = []
        for path in images:
            txt = os.path.splitext(path)[0] + ".txt"
            if not os.path.isfile(txt):
                self.uncaptioned.append(path)
                continue
            with open(txt, encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        pairs.append((path, line.rstrip("\r\n")))
        if self.uncaptioned:
            logger.warning(
                "%s: %d image(s) without a .txt caption file are not used (first: %s)",
                root,
                len(self.uncaptioned),
                self.uncaptioned[0],
            )
        super().__init__(
            pairs, transform, max_words, prompt, return_img_idx, strict, max_consecutive_failures, failure_log
        )


# --------------------------------------------------------------------------------------------------------------------
# WebDataset shards
# --------------------------------------------------------------------------------------------------------------------


class WebDatasetCaptions(_PolicyMixin, IterableDataset):
    """An iterable dataset over WebDataset tar shards of image/caption samples; see :func:`make_webdataset`."""

    def __init__(
        self,
        urls: str | Sequence[str],
        transform: Callable[..., Any] | None,
        max_words: int = 30,
        prompt: str = "",
        *,
        shuffle: int = 0,
        shardshuffle: int | bool = False,
        image_keys: Sequence[str] = ("jpg", "jpeg", "png", "webp"),
        text_keys: Sequence[str] = ("txt", "json"),
        caption_field: str = "caption",
        split_by_node: bool = True,
        empty_check: bool = True,
        strict: bool = False,
        failure_log: PathLike | None = None,
    ) -> None:
        import webdataset  # noqa: F401  (fail early with ImportError if missing)

        self.urls = urls if isinstance(urls, str) else [os.fspath(u) for u in urls]
        self.transform = transform
        self.max_words = max_words
        self.prompt = prompt
        self.shuffle = int(shuffle)
        self.shardshuffle = 100 if shardshuffle is True else int(shardshuffle or 0)
        self.image_keys = tuple(image_keys)
        self.text_keys = tuple(text_keys)
        self.caption_field = caption_field
        self.split_by_node = split_by_node
        self.empty_check = empty_check
        # consecutive failures are not bounded for a stream: every one is logged and counted
        self.policy = BadImagePolicy(strict, 1, failure_log, name="webdataset")
        self._rng = WorkerSeededRandom("openblip.data.WebDatasetCaptions")

    def _pipeline(self) -> Iterable[dict[str, Any]]:
        import webdataset as wds

        seed = self._rng.get().randrange(2**31)
        ds = wds.WebDataset(
            self.urls,
            shardshuffle=self.shardshuffle if self.shardshuffle > 0 else False,
            nodesplitter=wds.split_by_node if self.split_by_node else wds.single_node_only,
            empty_check=self.empty_check,
            seed=seed,
        )
        if self.shuffle > 0:
            ds = ds.shuffle(self.shuffle, seed=seed + 1)
        return ds

    def _caption(self, sample: Mapping[str, Any]) -> str | None:
        for key in self.text_keys:
            if key not in sample:
                continue
            raw = sample[key]
            text = raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else raw
            if key == "json":
                obj = json.loads(text) if isinstance(text, str) else text
                if isinstance(obj, Mapping):
                    obj = obj.get(self.caption_field)
                if isinstance(obj, (list, tuple)) and obj:
                    obj = obj[self._rng.get().randrange(len(obj))]
                if isinstance(obj, str):
                    return obj
                continue
            return str(text).strip()
        return None

    def __iter__(self) -> Iterator[tuple[Any, str]]:
        for sample in self._pipeline():
            key = sample.get("__key__", "?")
            where = f"{sample.get('__url__', '?')}:{key}"
            image_key = next((k for k in self.image_keys if k in sample), None)
            try:
                if image_key is None:
                    raise ImageLoadError(where, f"sample has no image (keys: {sorted(k for k in sample)})")
                image = load_image(sample[image_key])
            except ImageLoadError as e:
                error = e if image_key is None else ImageLoadError(f"{where}.{image_key}", e.reason)
                if self.strict:
                    raise error from e
                self.policy.record(error)
                continue
            caption = self._caption(sample)
            if caption is None:
                error = ImageLoadError(where, "sample has no caption")
                if self.strict:
                    raise error
                self.policy.record(error)
                continue
            image, text = _apply(self.transform, image, pre_caption(caption, self.max_words))
            yield image, self.prompt + text


def make_webdataset(
    urls: str | Sequence[str],
    transform: Callable[..., Any] | None,
    max_words: int = 30,
    prompt: str = "",
    *,
    shuffle: int = 0,
    shardshuffle: int | bool = False,
    image_keys: Sequence[str] = ("jpg", "jpeg", "png", "webp"),
    text_keys: Sequence[str] = ("txt", "json"),
    caption_field: str = "caption",
    split_by_node: bool = True,
    empty_check: bool = True,
    strict: bool = False,
    failure_log: PathLike | None = None,
) -> WebDatasetCaptions:
    """Image/caption samples from WebDataset tar shards (needs the ``webdataset`` package, imported lazily).

    Each sample is a group of tar members sharing a key (``0001.jpg`` + ``0001.txt``). The image is the first of
    ``image_keys`` present (decoded with :func:`openblip.image.load_image`); the caption the first of ``text_keys``
    present: ``txt`` (UTF-8, stripped) or ``json`` (a string, or an object's ``caption_field``: a string or a list,
    one drawn at random). Yields ``(image, prompt + pre_caption(caption, max_words))``.

    Shards are split across nodes (``torch.distributed`` rank, if initialised) and ``DataLoader`` workers
    (``empty_check`` raises if a worker gets none: use at least as many shards as workers). ``shardshuffle`` (a
    buffer size, or ``False``) shuffles shard order, ``shuffle`` (a buffer size) samples, both seeded from the
    worker's torch seed. An undecodable or missing image, or a missing caption, is logged, counted in
    ``.failure_count``/``.failures`` and skipped (``strict=True`` raises instead); unreadable tar files raise.

    Args:
        urls: Shard paths or URLs; a string may use brace notation (``"shards/{0000..0099}.tar"``).
    """
    return WebDatasetCaptions(
        urls,
        transform,
        max_words,
        prompt,
        shuffle=shuffle,
        shardshuffle=shardshuffle,
        image_keys=image_keys,
        text_keys=text_keys,
        caption_field=caption_field,
        split_by_node=split_by_node,
        empty_check=empty_check,
        strict=strict,
        failure_log=failure_log,
    )
