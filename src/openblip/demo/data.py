"""The demo's data: the synthetic world, held in memory as preprocessed tensors, and the training batches."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from openblip.data.augment import swap_left_right
from openblip.data.datasets import VQADataset
from openblip.data.synthetic import COLORS, SHAPES, SIZES, Scene, WorldInfo, generate_world, load_world
from openblip.image import ImageLoadError
from openblip.text import pre_caption, pre_question
from openblip.transforms import preprocess


class WorldDataError(RuntimeError):
    """A file of the world (an annotation file or an image) is missing or cannot be read; the message names it."""


def prepare_world(
    root: Path, n_train: int, n_test: int, image_size: int, seed: int, log: Callable[[str], None] | None = None
) -> tuple[WorldInfo, bool]:
    """Generate the world into ``root``, or reuse the one already there if it has the same seed and sizes.

    A world is reused only if its ``world.json`` (which :func:`~openblip.data.synthetic.generate_world` removes
    first and writes last) is readable and matches; otherwise it is regenerated and ``log`` says why.
    Returns ``(info, reused)``.
    """
    root = Path(root)
    splits = {"train": int(n_train), "val": 0, "test": int(n_test)}
    marker = root / "world.json"
    if marker.is_file():
        try:
            info = load_world(root)
            if info.seed == seed and info.splits == splits and info.image_size == image_size:
                return info, True
            why = (
                f"it has seed {info.seed}, image size {info.image_size} and {info.splits['train']} train / "
                f"{info.splits['test']} test scenes; asked for seed {seed}, image size {image_size} and "
                f"{splits['train']} / {splits['test']}"
            )
        except (OSError, KeyError, TypeError, ValueError) as e:  # JSONDecodeError is a ValueError
            why = f"{marker} is unreadable ({_describe(e)})"
        if log is not None:
            log(f"regenerating the world in {root}: {why}")
    elif root.exists() and log is not None and any(root.iterdir()):
        log(f"regenerating the world in {root}: it has no world.json (an earlier generation did not finish)")
    return generate_world(root, n_train, 0, n_test, image_size=image_size, seed=seed), False


def prepare_data(
    root: Path,
    n_train: int,
    n_test: int,
    image_size: int,
    seed: int,
    n_retrieval: int,
    log: Callable[[str], None] | None = None,
) -> tuple[WorldInfo, bool, TrainData, TestData]:
    """:func:`prepare_world`, then :func:`load_train` and :func:`load_test`.

    A reused world that cannot be loaded (an image or annotation file missing or damaged) is regenerated, with
    one ``log`` line saying which file failed; a freshly generated one that cannot be loaded raises
    :class:`WorldDataError`. Returns ``(info, reused, train, test)``.
    """
    info, reused = prepare_world(root, n_train, n_test, image_size, seed, log)
    if reused:
        try:
            return info, True, load_train(info), load_test(info, n_retrieval)
        except WorldDataError as e:
            if log is not None:
                log(f"regenerating the world in {root}: {e}")
        info = generate_world(root, n_train, 0, n_test, image_size=image_size, seed=seed)
    return info, False, load_train(info), load_test(info, n_retrieval)


def _describe(e: BaseException) -> str:
    if isinstance(e, KeyError):
        return f"missing key {e.args[0]!r}" if e.args else "missing key"
    if isinstance(e, FileNotFoundError):
        return "file not found"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


@contextmanager
def _reading(path: Path | str) -> Iterator[None]:
    """Turn any failure to read or interpret ``path`` into a :class:`WorldDataError` naming it."""
    try:
        yield
    except WorldDataError:
        raise
    except ImageLoadError as e:
        raise WorldDataError(str(e)) from None
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
        raise WorldDataError(f"cannot read {path}: {_describe(e)}") from None


def _path(info: WorldInfo, name: str) -> Path:
    try:
        return info.path(name)
    except (KeyError, TypeError):
        raise WorldDataError(f"{Path(info.root) / 'world.json'} lists no file {name!r}") from None


def _read(info: WorldInfo, name: str) -> Any:
    path = _path(info, name)
    with _reading(path), open(path, encoding="utf-8") as f:
        return json.load(f)


def _load_pixels(root: Path, paths: list[str], image_size: int, chunk: int = 512) -> torch.Tensor:
    """``[N, 3, S, S]`` float32, through :func:`openblip.transforms.preprocess` (BLIP's eval transform): exactly
    the tensors ``openblip caption`` would compute from the files."""
    with _reading(root / "images"):  # an ImageLoadError names the image
        parts = [preprocess([root / p for p in paths[i : i + chunk]], image_size) for i in range(0, len(paths), chunk)]
        return torch.cat(parts)


@dataclass
class TrainData:
    """Train split in memory: one tensor per scene, its captions, its VQA questions."""

    pixels: torch.Tensor  # [N, 3, S, S]
    captions: list[list[str]]  # per scene (canonical, paraphrase), pre_caption'd
    vqa_image: list[int]  # per question: scene index
    vqa_question: list[str]
    vqa_answers: list[list[str]]
    vqa_weights: list[list[float]]
    # per scene: its objects as (x, y, radius, shape index, colour index, size index) (openblip.data.synthetic's
    # SHAPES / COLORS / SIZES orders), from scenes_train.json; used only by the supervised ViT stage
    objects: list[list[tuple[float, float, float, int, int, int]]] = field(default_factory=list)


@dataclass
class TestData:
    """Test split in memory."""

    paths: list[str]
    pixels: torch.Tensor  # [N, 3, S, S]
    references: list[list[str]]  # per scene: (canonical, paraphrase)
    canonical: list[str]
    negatives: list[str]  # hard negative caption per scene
    negative_kinds: list[str]
    scenes: list[dict[str, Any]]
    retrieval_index: list[int]  # scenes with distinct canonical captions, used for retrieval
    vqa_image: list[int]
    vqa_question: list[str]
    vqa_answers: list[list[str]]
    vqa_type: list[str]
    answer_list: list[str]


def load_train(info: WorldInfo) -> TrainData:
    """The train split in memory. Raises :class:`WorldDataError` (naming the file) if a file is missing or bad."""
    root = Path(info.root)
    entries = _read(info, "caption_train")
    index: dict[str, int] = {}
    paths: list[str] = []
    captions: list[list[str]] = []
    with _reading(_path(info, "caption_train")):
        for e in entries:
            if e["image"] not in index:
                index[e["image"]] = len(paths)
                paths.append(e["image"])
                captions.append([])
            captions[index[e["image"]]].append(pre_caption(e["caption"], 30))
    if not paths:
        raise WorldDataError(f"{_path(info, 'caption_train')} lists no images")
    pixels = _load_pixels(root, paths, info.image_size)
    objects = _scene_objects(info, paths)
    vqa = _read(info, "vqa_train")
    with _reading(_path(info, "vqa_train")):
        weights = [VQADataset.answers_and_weights(q) for q in vqa]
        return TrainData(
            pixels=pixels,
            captions=captions,
            vqa_image=[index[q["image"]] for q in vqa],
            vqa_question=[pre_question(q["question"]) for q in vqa],
            vqa_answers=[w[0] for w in weights],
            vqa_weights=[w[1] for w in weights],
            objects=objects,
        )


def _scene_objects(info: WorldInfo, paths: list[str]) -> list[list[tuple[float, float, float, int, int, int]]]:
    """The objects of the scenes ``paths`` (see :attr:`TrainData.objects`)."""
    specs = _read(info, "scenes_train")
    with _reading(_path(info, "scenes_train")):
        by_image = {e["image"]: Scene.from_dict(e) for e in specs}
        colours, sizes = list(COLORS), list(SIZES)
        return [
            [
                (o.x, o.y, o.radius, SHAPES.index(o.shape), colours.index(o.color), sizes.index(o.size))
                for o in by_image[p].objects
            ]
            for p in paths
        ]


def load_test(info: WorldInfo, n_retrieval: int) -> TestData:
    """The test split in memory. Raises :class:`WorldDataError` (naming the file) if a file is missing or bad."""
    root = Path(info.root)
    caps = _read(info, "caption_test")
    negs = _read(info, "hard_negatives_test")
    scenes = _read(info, "scenes_test")
    with _reading(_path(info, "caption_test")):
        paths = [e["image"] for e in caps]
        references = [[pre_caption(c, 30) for c in e["caption"]] for e in caps]
    if not paths:
        raise WorldDataError(f"{_path(info, 'caption_test')} lists no images")
    with _reading(_path(info, "hard_negatives_test")):
        if [n["image"] for n in negs] != paths:
            raise WorldDataError(f"{_path(info, 'hard_negatives_test')} lists other images than caption_test")
        canonical = [pre_caption(n["caption"], 30) for n in negs]
        negatives = [pre_caption(n["negative"], 30) for n in negs]
    with _reading(_path(info, "scenes_test")):
        if [s["image"] for s in scenes] != paths:
            raise WorldDataError(f"{_path(info, 'scenes_test')} lists other images than caption_test")
        negative_kinds = [s.get("negative_kind", "") for s in scenes]
    index = {p: i for i, p in enumerate(paths)}
    seen: set[str] = set()
    retrieval_index = []
    for i, c in enumerate(canonical):
        if c not in seen and len(retrieval_index) < n_retrieval:
            seen.add(c)
            retrieval_index.append(i)
    vqa = _read(info, "vqa_test")
    with _reading(_path(info, "vqa_test")):
        vqa_image = [index[q["image"]] for q in vqa]
        vqa_question = [q["question"] for q in vqa]
        vqa_answers = [list(q["answer"]) for q in vqa]
        vqa_type = [q["question_type"] for q in vqa]
    answer_list = _read(info, "answer_list")
    if not (isinstance(answer_list, list) and answer_list and all(isinstance(a, str) for a in answer_list)):
        raise WorldDataError(f"cannot read {_path(info, 'answer_list')}: expected a non-empty list of strings")
    return TestData(
        paths=paths,
        pixels=_load_pixels(root, paths, info.image_size),
        references=references,
        canonical=canonical,
        negatives=negatives,
        negative_kinds=negative_kinds,
        scenes=scenes,
        retrieval_index=retrieval_index,
        vqa_image=vqa_image,
        vqa_question=vqa_question,
        vqa_answers=vqa_answers,
        vqa_type=vqa_type,
        answer_list=answer_list,
    )


class EpochSampler:
    """Indices ``0..n-1`` in a fresh random order every epoch, served in fixed-size batches.

    A batch may span two epochs but never holds an index twice (unless ``batch > n``): when the order runs out
    mid-batch, the new epoch's permutation is drawn and any index already in the batch is moved to just after the
    batch's remaining slots, so it is served early in the next batch instead. Every epoch is still one permutation
    of ``0..n-1``: the stream of served indices, cut into consecutive runs of ``n``, visits each index exactly once
    per run. Deterministic for a given ``generator`` state; an epoch that starts on a batch boundary is exactly
    ``torch.randperm``'s order (served from its end)."""

    def __init__(self, n: int, generator: torch.Generator) -> None:
        if n <= 0:
            raise ValueError("nothing to sample from")
        self.n, self.generator = n, generator
        self.order: list[int] = []  # served from the end (``pop``)
        self.epoch = 0

    def _refill(self, in_batch: set[int], remaining: int) -> None:
        serve = torch.randperm(self.n, generator=self.generator).tolist()[::-1]  # in the order it will be served
        head: list[int] = []
        if in_batch:
            for i in serve:
                if len(head) == remaining:
                    break
                if i not in in_batch:
                    head.append(i)
            taken = set(head)
            serve = head + [i for i in serve if i not in taken]
        self.order = serve[::-1]
        self.epoch += 1

    def take(self, batch: int) -> list[int]:
        out: list[int] = []
        seen: set[int] = set()
        while len(out) < batch:
            if not self.order:
                self._refill(seen, batch - len(out))
            i = self.order.pop()
            out.append(i)
            seen.add(i)
        return out


def flip_batch(
    pixels: torch.Tensor, texts: list[Any], generator: torch.Generator, p: float = 0.5
) -> tuple[torch.Tensor, list[Any]]:
    """BLIP's ``RandomHorizontalFlip`` as :mod:`openblip.data.augment` does it: each sample is mirrored with
    probability ``p`` and "left"/"right" are swapped in its text (a string or a list of strings), so the text
    still describes the image (the canonical caption of a flipped scene becomes its paraphrase and vice versa)."""
    flip = torch.rand(pixels.shape[0], generator=generator) < p
    if not bool(flip.any()):
        return pixels, texts
    pixels = pixels.clone()
    pixels[flip] = pixels[flip].flip(-1)
    out = [swap_left_right(t) if f else t for t, f in zip(texts, flip.tolist())]
    return pixels, out


BatchFn = Callable[[], tuple]
