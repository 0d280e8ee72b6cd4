"""The demo's data: the synthetic world, held in memory as preprocessed tensors, and the training batches."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from openblip.data.augment import swap_left_right
from openblip.data.datasets import VQADataset
from openblip.data.synthetic import WorldInfo, generate_world, load_world
from openblip.text import pre_caption, pre_question
from openblip.transforms import preprocess


def prepare_world(root: Path, n_train: int, n_test: int, image_size: int, seed: int) -> tuple[WorldInfo, bool]:
    """Generate the world into ``root``, or reuse the one already there if it has the same seed and sizes.

    Returns ``(info, reused)``.
    """
    splits = {"train": int(n_train), "val": 0, "test": int(n_test)}
    if (root / "world.json").is_file():
        try:
            info = load_world(root)
            if info.seed == seed and info.splits == splits and info.image_size == image_size:
                return info, True
        except (OSError, KeyError, ValueError, json.JSONDecodeError):
            pass
    return generate_world(root, n_train, 0, n_test, image_size=image_size, seed=seed), False


def _read(info: WorldInfo, name: str) -> Any:
    with open(info.path(name), encoding="utf-8") as f:
        return json.load(f)


def _load_pixels(root: Path, paths: list[str], image_size: int, chunk: int = 512) -> torch.Tensor:
    """``[N, 3, S, S]`` float32, through :func:`openblip.transforms.preprocess` (BLIP's eval transform): exactly
    the tensors ``openblip caption`` would compute from the files."""
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
    root = Path(info.root)
    entries = _read(info, "caption_train")
    index: dict[str, int] = {}
    paths: list[str] = []
    captions: list[list[str]] = []
    for e in entries:
        if e["image"] not in index:
            index[e["image"]] = len(paths)
            paths.append(e["image"])
            captions.append([])
        captions[index[e["image"]]].append(pre_caption(e["caption"], 30))
    pixels = _load_pixels(root, paths, info.image_size)
    vqa = _read(info, "vqa_train")
    weights = [VQADataset.answers_and_weights(q) for q in vqa]
    return TrainData(
        pixels=pixels,
        captions=captions,
        vqa_image=[index[q["image"]] for q in vqa],
        vqa_question=[pre_question(q["question"]) for q in vqa],
        vqa_answers=[w[0] for w in weights],
        vqa_weights=[w[1] for w in weights],
    )


def load_test(info: WorldInfo, n_retrieval: int) -> TestData:
    root = Path(info.root)
    caps = _read(info, "caption_test")
    negs = _read(info, "hard_negatives_test")
    scenes = _read(info, "scenes_test")
    paths = [e["image"] for e in caps]
    if [n["image"] for n in negs] != paths or [s["image"] for s in scenes] != paths:
        raise RuntimeError("the world's test annotation files list different images")
    index = {p: i for i, p in enumerate(paths)}
    canonical = [pre_caption(n["caption"], 30) for n in negs]
    seen: set[str] = set()
    retrieval_index = []
    for i, c in enumerate(canonical):
        if c not in seen and len(retrieval_index) < n_retrieval:
            seen.add(c)
            retrieval_index.append(i)
    vqa = _read(info, "vqa_test")
    return TestData(
        paths=paths,
        pixels=_load_pixels(root, paths, info.image_size),
        references=[[pre_caption(c, 30) for c in e["caption"]] for e in caps],
        canonical=canonical,
        negatives=[pre_caption(n["negative"], 30) for n in negs],
        negative_kinds=[s.get("negative_kind", "") for s in scenes],
        scenes=scenes,
        retrieval_index=retrieval_index,
        vqa_image=[index[q["image"]] for q in vqa],
        vqa_question=[q["question"] for q in vqa],
        vqa_answers=[list(q["answer"]) for q in vqa],
        vqa_type=[q["question_type"] for q in vqa],
        answer_list=list(_read(info, "answer_list")),
    )


class EpochSampler:
    """Indices ``0..n-1`` in a fresh random order every epoch, served in fixed-size batches (a batch may span two
    epochs, never repeating an index within itself unless ``batch > n``)."""

    def __init__(self, n: int, generator: torch.Generator) -> None:
        if n <= 0:
            raise ValueError("nothing to sample from")
        self.n, self.generator = n, generator
        self.order: list[int] = []
        self.epoch = 0

    def take(self, batch: int) -> list[int]:
        out: list[int] = []
        while len(out) < batch:
            if not self.order:
                self.order = torch.randperm(self.n, generator=self.generator).tolist()
                self.epoch += 1
            out.append(self.order.pop())
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
