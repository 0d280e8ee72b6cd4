"""A small, fully learnable synthetic vision-language world, written in the formats of BLIP's real datasets.

It exists so that the project can show on a CPU that BLIP really learns: pre-training (ITC + ITM + LM),
captioning, retrieval, VQA and NLVR2 all train on it with the same loaders as the real data (spec §4.1), and
their scores can be compared with baselines that are *computed* on the generated splits.

The world
---------
A scene is a square image (default 64x64) with a light, noisy, near-white background and 1-3 objects. An object
is a ``shape`` (:data:`SHAPES`: circle, square, triangle, diamond, cross) x a ``color`` (:data:`COLORS`: red, green,
blue, yellow, orange, purple) x a ``size`` (:data:`SIZES`: small, large; the half-extent of the object's bounding
box is 0.09 or 0.15 of the image side). Positions are stored as fractions of the image side, so a scene renders at
any resolution. Layout rules (checked by :func:`layout_problems`):

* every object's bounding box lies inside the image with a margin of 0.03;
* bounding boxes never overlap: they are separated by at least 0.04 along x or along y;
* "left of" is unambiguous: any two objects' centres differ in x by at least 0.75 x (sum of their half-extents),
  so each centre lies outside the other object's horizontal extent;
* no two objects of a scene share shape, colour *and* size, so a full description names each object uniquely.

Texts (every word is a whole word of the ``bert-base-uncased`` vocabulary, see :data:`VOCABULARY`):

* canonical caption, objects left to right: ``"a large green circle"``,
  ``"a large green circle left of a small orange square"``,
  ``"a small red triangle left of a large blue square left of a small yellow circle"``;
* paraphrase (same meaning), objects right to left: ``"a small orange square right of a large green circle"``;
  for one object ``"there is a large green circle"``. With ``captions_per_image=2`` (default) every scene has both
  captions (train: two entries, val/test: a two-element list); with 1 only the canonical caption is used.
  A caption is a *full* description: it is true for a scene iff it lists exactly the scene's objects in their
  left-to-right order (:func:`caption_is_true`).
* one hard negative per scene (:func:`make_hard_negative`): the colour, shape or size of one object changed to a
  value that no object of the scene has in that combination, or (2+ objects) two objects swapped; the kind is
  drawn uniformly among those possible. It is always false for the scene.
* VQA questions (``vqa_per_scene`` per scene, types drawn without replacement among the applicable ones):

  =============== ==================================================== ===================
  question_type   example                                              answers
  =============== ==================================================== ===================
  ``count``       how many objects are there?                          1 2 3
  ``count_shape`` how many circles are there?                          0 1 2 3
  ``color``       what color is the square? / the small square?        colours
  ``shape``       what shape is the red object? / the large red object? shapes
  ``size``        what size is the green circle?                       small large
  ``exists``      is there a blue triangle? / a small blue triangle?   yes no (balanced)
  ``relation``    what is left of the red square?                      shapes
  ``relation_yn`` is the circle right of the red square?               yes no (balanced)
  =============== ==================================================== ===================

  Objects are referred to by the shortest unique description (``relation`` always names the colour too, so the
  form of the reference does not give the answer away); ``relation`` is only asked when exactly one object lies
  on that side. Yes/no answers are balanced exactly (to within one question) per split and type; half of the
  "no" existence questions name a present object with one attribute changed.
* NLVR2 statements about two scenes (templates in :data:`NLVR_TEMPLATES`; no statement speaks of left/right
  *inside* an image, so BLIP's NLVR augmentation that swaps the images and the words left/right keeps labels
  correct): ``"the left image contains more objects than the right image"``, ``"both images contain a red
  object"``, ``"the right image contains a circle"``, ``"exactly one image contains a blue object"``, ``"the left
  image contains exactly two objects"``. Labels are balanced per template and split.

Note for training: BLIP's ``RandomHorizontalFlip`` (spec §2) mirrors images without changing "left"/"right" in the
text; on this world that makes every spatial caption, relation question and hard "swap" negative wrong half the
time. Disable the flip (or swap left/right in the text with the image) when training on it.

Files written by :func:`generate_world` (paths relative to ``out_dir``, which is the ``image_root``)
-------------------------------------------------------------------------------------------------------
* ``images/{split}/scene_{id:06d}.png``. Ids are global over the world and start at 1: train is ``1..n_train``,
  val follows, then test, so every image id (and ``question_id``) is unique. The integer image id is the number
  in the file name (``scene_000123.png`` -> 123). BLIP's own parser, ``int(name.split('_')[-1].strip('.jpg'))``,
  fails on ``.png`` (``strip`` removes characters, leaving ``"000123.pn"``); use ``os.path.splitext`` first.
* ``annotations/caption_train.json``: ``[{"image", "caption": str, "image_id": "scene_000001"}]``, one entry per
  caption (COCO-Karpathy train);
* ``annotations/caption_{val,test}.json``: ``[{"image", "caption": [str, ...]}]``;
* ``annotations/caption_{val,test}_gt.json``: COCO ground truth ``{"annotations": [{"image_id": int, "caption",
  "id": int}], "images": [{"id": int}]}``;
* ``annotations/hard_negatives_{split}.json``: ``[{"image", "caption", "negative"}]``, one per scene (canonical
  caption);
* ``annotations/vqa_{split}.json``: ``[{"question_id", "question", "answer": [10 x str], "image", "dataset": "vqa",
  "question_type"}]`` (answers also in test) and ``annotations/answer_list.json`` (every possible answer);
* ``annotations/nlvr_{split}.json``: ``[{"images": [p0, p1], "sentence", "label": "True"|"False"}]``;
* ``annotations/pretrain.json``: ``[{"image", "caption"}]`` (all train captions);
* ``annotations/scenes_{split}.json``: the scene specs ``[{"image", "image_id": int, "objects": [{"shape",
  "color", "size", "x", "y"}], "negative_kind"}]`` (objects left to right), loadable with :func:`load_scenes`;
* ``world.json``: seed, sizes, vocabulary, answer list, counts, file names and the computed baselines.

Everything is a function of ``seed`` only (``numpy.random.default_rng`` seeded from ``(seed, split, index,
purpose)``; no global RNG state): the same seed gives byte-identical files. The scene layouts and texts do not
depend on ``image_size``.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "SHAPES",
    "SHAPE_PLURALS",
    "COLORS",
    "SIZES",
    "SPLITS",
    "VOCABULARY",
    "ANSWER_LIST",
    "QUESTION_TYPES",
    "NLVR_TEMPLATES",
    "CORRUPTION_KINDS",
    "SceneObject",
    "Scene",
    "WorldInfo",
    "layout_problems",
    "sample_scene",
    "render_scene",
    "object_mask",
    "describe_object",
    "scene_caption",
    "scene_captions",
    "parse_caption",
    "caption_is_true",
    "corrupt_caption",
    "make_hard_negative",
    "make_questions",
    "make_nlvr_example",
    "vqa_accuracy",
    "image_id_from_path",
    "generate_world",
    "load_scenes",
    "load_world",
]

# ----------------------------------------------------------------------------------------------------------------
# The world's attributes and constants
# ----------------------------------------------------------------------------------------------------------------

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross")
SHAPE_PLURALS: dict[str, str] = {
    "circle": "circles",
    "square": "squares",
    "triangle": "triangles",
    "diamond": "diamonds",
    "cross": "crosses",
}
#: Nominal RGB of each colour (each object gets a jitter of +-``COLOR_JITTER`` per channel).
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (35, 155, 55),
    "blue": (35, 75, 215),
    "yellow": (235, 205, 25),
    "orange": (245, 130, 15),
    "purple": (135, 50, 185),
}
#: Half-extent of an object's bounding box, as a fraction of the image side.
SIZES: dict[str, float] = {"small": 0.09, "large": 0.15}
SPLITS: tuple[str, ...] = ("train", "val", "test")

#: Probabilities of 1, 2 and 3 objects per scene.
COUNT_PROBS: tuple[float, ...] = (0.2, 0.4, 0.4)
EDGE_MARGIN = 0.03
BOX_GAP = 0.04
MIN_DX_FACTOR = 0.75
COLOR_JITTER = 10
PIXEL_NOISE = 3.0
BACKGROUND_RANGE = (228.0, 250.0)
BACKGROUND_TINT = 5.0

QUESTION_TYPES: tuple[str, ...] = (
    "count",
    "count_shape",
    "color",
    "shape",
    "size",
    "exists",
    "relation",
    "relation_yn",
)
NLVR_TEMPLATES: tuple[str, ...] = (
    "count_compare",
    "both_color",
    "both_shape",
    "side_shape",
    "exactly_one_color",
    "side_count",
)
CORRUPTION_KINDS: tuple[str, ...] = ("attribute", "swap", "other_scene")

_COUNT_WORDS = {1: "one", 2: "two", 3: "three"}
_TEMPLATE_WORDS = (
    "a an there is are left right of how many objects object what color shape size the yes no "
    "both images image contain contains more than same number exactly one two three"
).split()

#: Every answer a VQA question of this world can have (the ``answer_list.json``).
ANSWER_LIST: list[str] = ["0", "1", "2", "3", "yes", "no", *SIZES, *COLORS, *SHAPES]
#: Every word any generated text can contain (``?`` is a separate token, not listed).
VOCABULARY: list[str] = sorted(
    set(_TEMPLATE_WORDS) | set(SHAPES) | set(SHAPE_PLURALS.values()) | set(COLORS) | set(SIZES) | set(ANSWER_LIST)
)

_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
_P_LAYOUT, _P_RENDER, _P_NEGATIVE, _P_VQA, _P_NLVR = range(5)

Key = tuple[str, str, str]  # (size, color, shape)


def _rng(*entropy: int) -> np.random.Generator:
    return np.random.default_rng([int(e) for e in entropy])


def _as_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def _pick(rng: np.random.Generator, items: Sequence[Any]) -> Any:
    if not items:
        raise ValueError("cannot pick from an empty sequence")
    return items[int(rng.integers(len(items)))]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


# ----------------------------------------------------------------------------------------------------------------
# Scenes
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SceneObject:
    """One object: attributes plus the centre ``(x, y)`` as fractions of the image side (y grows downwards)."""

    shape: str
    color: str
    size: str
    x: float
    y: float

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; expected one of {SHAPES}")
        if self.color not in COLORS:
            raise ValueError(f"unknown color {self.color!r}; expected one of {tuple(COLORS)}")
        if self.size not in SIZES:
            raise ValueError(f"unknown size {self.size!r}; expected one of {tuple(SIZES)}")

    @property
    def radius(self) -> float:
        """Half-extent of the bounding box, as a fraction of the image side."""
        return SIZES[self.size]

    @property
    def key(self) -> Key:
        return (self.size, self.color, self.shape)

    def description(self) -> str:
        """``"large green circle"``."""
        return f"{self.size} {self.color} {self.shape}"

    def to_dict(self) -> dict[str, Any]:
        return {"shape": self.shape, "color": self.color, "size": self.size, "x": self.x, "y": self.y}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SceneObject:
        return cls(str(d["shape"]), str(d["color"]), str(d["size"]), float(d["x"]), float(d["y"]))


@dataclass(frozen=True)
class Scene:
    """A scene: its objects, always stored left to right (sorted by ``x``)."""

    objects: tuple[SceneObject, ...]

    def __post_init__(self) -> None:
        objs = tuple(sorted(self.objects, key=lambda o: o.x))
        if not objs:
            raise ValueError("a scene needs at least one object")
        object.__setattr__(self, "objects", objs)

    @property
    def keys(self) -> tuple[Key, ...]:
        """``(size, color, shape)`` of each object, left to right."""
        return tuple(o.key for o in self.objects)

    def caption(self, paraphrase: bool = False) -> str:
        return scene_caption(self, paraphrase=paraphrase)

    def problems(self) -> list[str]:
        return layout_problems(self.objects)

    def to_dict(self) -> dict[str, Any]:
        return {"objects": [o.to_dict() for o in self.objects]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Scene:
        return cls(tuple(SceneObject.from_dict(o) for o in d["objects"]))


def layout_problems(objects: Sequence[SceneObject]) -> list[str]:
    """The reasons why ``objects`` is not a valid scene layout (empty list: valid). See the module docstring."""
    problems = []
    eps = 1e-9
    for i, o in enumerate(objects):
        lo, hi = o.radius + EDGE_MARGIN, 1.0 - o.radius - EDGE_MARGIN
        if not (lo - eps <= o.x <= hi + eps and lo - eps <= o.y <= hi + eps):
            problems.append(f"object {i} ({o.description()}) is not inside the image margin")
    keys = [o.key for o in objects]
    if len(set(keys)) != len(keys):
        problems.append("two objects are identical (same shape, color and size)")
    for i in range(len(objects)):
        for j in range(i + 1, len(objects)):
            a, b = objects[i], objects[j]
            dx, dy, reach = abs(a.x - b.x), abs(a.y - b.y), a.radius + b.radius
            if max(dx, dy) - reach < BOX_GAP - eps:
                problems.append(f"objects {i} and {j} overlap (bounding boxes closer than {BOX_GAP})")
            if dx < MIN_DX_FACTOR * reach - eps:
                problems.append(f"objects {i} and {j} have an ambiguous left/right order")
    return problems


def sample_scene(
    rng: np.random.Generator | int | None = None,
    n_objects: int | None = None,
    *,
    count_probs: Sequence[float] = COUNT_PROBS,
    max_tries: int = 20000,
) -> Scene:
    """Draw a random valid scene.

    The number of objects is drawn from ``count_probs`` (for 1, 2, 3, ... objects) unless ``n_objects`` is given;
    the attributes are drawn uniformly (distinct objects), then positions uniformly inside the margins until the
    layout is valid (positions are rounded to 4 decimals, so a scene survives a JSON round trip exactly).
    """
    rng = _as_rng(rng)
    if n_objects is None:
        p = np.asarray(count_probs, dtype=float)
        n_objects = int(rng.choice(len(p), p=p / p.sum())) + 1
    if n_objects < 1:
        raise ValueError(f"n_objects must be >= 1, got {n_objects}")
    keys: list[Key] = []
    while len(keys) < n_objects:
        key = (_pick(rng, list(SIZES)), _pick(rng, list(COLORS)), _pick(rng, SHAPES))
        if key not in keys:
            keys.append(key)
    radii = np.array([SIZES[k[0]] for k in keys])
    lo = radii + EDGE_MARGIN
    pairs = [(i, j) for i in range(n_objects) for j in range(i + 1, n_objects)]
    reach = np.array([radii[i] + radii[j] for i, j in pairs])
    batch = 64
    for _ in range(0, max_tries, batch):
        # A batch of candidate layouts, screened with vectorised checks; the exact check is layout_problems.
        xy = np.round(lo[None, :, None] + rng.random((batch, n_objects, 2)) * (1.0 - 2.0 * lo)[None, :, None], 4)
        ok = np.ones(batch, dtype=bool)
        for (i, j), r in zip(pairs, reach):
            d = np.abs(xy[:, i] - xy[:, j])
            ok &= (d.max(axis=1) - r >= BOX_GAP - 1e-9) & (d[:, 0] >= MIN_DX_FACTOR * r - 1e-9)
        for b in np.flatnonzero(ok):
            objs = [
                SceneObject(shape, color, size, round(float(x), 4), round(float(y), 4))
                for (size, color, shape), (x, y) in zip(keys, xy[b])
            ]
            if not layout_problems(objs):
                return Scene(tuple(objs))
    raise RuntimeError(f"could not place {keys} after {max_tries} tries")


# ----------------------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------------------


def _draw_object(draw: ImageDraw.ImageDraw, obj: SceneObject, image_size: int, fill: Any) -> None:
    s = float(image_size)
    cx, cy, r = obj.x * s, obj.y * s, obj.radius * s
    if obj.shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif obj.shape == "square":
        h = 0.82 * r
        draw.rectangle([cx - h, cy - h, cx + h, cy + h], fill=fill)
    elif obj.shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + 0.85 * r), (cx - r, cy + 0.85 * r)], fill=fill)
    elif obj.shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + 0.8 * r, cy), (cx, cy + r), (cx - 0.8 * r, cy)], fill=fill)
    elif obj.shape == "cross":
        w = 0.34 * r
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fill)
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fill)
    else:  # pragma: no cover - guarded by SceneObject
        raise ValueError(obj.shape)


def _as_scene(spec: Scene | Mapping[str, Any] | Sequence[SceneObject]) -> Scene:
    if isinstance(spec, Scene):
        return spec
    if isinstance(spec, Mapping):
        return Scene.from_dict(spec)
    return Scene(tuple(spec))


def render_scene(
    spec: Scene | Mapping[str, Any] | Sequence[SceneObject],
    image_size: int = 64,
    rng: np.random.Generator | int | None = None,
) -> Image.Image:
    """Draw a scene as an RGB :class:`PIL.Image.Image` of ``image_size`` x ``image_size``.

    Background: one grey level in ``BACKGROUND_RANGE`` with a small colour tint; each object is filled with its
    colour (jittered by up to ``COLOR_JITTER`` per channel); then Gaussian noise (sigma ``PIXEL_NOISE``) is added
    to every pixel. ``rng`` (a Generator or a seed) drives the background, jitter and noise only.
    """
    scene = _as_scene(spec)
    if image_size < 16:
        raise ValueError(f"image_size must be >= 16, got {image_size}")
    rng = _as_rng(rng)
    base = rng.uniform(*BACKGROUND_RANGE) + rng.uniform(-BACKGROUND_TINT, BACKGROUND_TINT, size=3)
    bg = np.broadcast_to(np.clip(np.rint(base), 0, 255).astype(np.uint8), (image_size, image_size, 3))
    img = Image.fromarray(np.ascontiguousarray(bg), "RGB")
    draw = ImageDraw.Draw(img)
    for obj in scene.objects:
        jitter = rng.integers(-COLOR_JITTER, COLOR_JITTER + 1, size=3)
        fill = tuple(int(v) for v in np.clip(np.asarray(COLORS[obj.color]) + jitter, 0, 255))
        _draw_object(draw, obj, image_size, fill)
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0.0, PIXEL_NOISE, size=(image_size, image_size, 3))
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "RGB")


def object_mask(obj: SceneObject, image_size: int = 64) -> np.ndarray:
    """Boolean ``[image_size, image_size]`` mask of the pixels :func:`render_scene` paints for ``obj``."""
    img = Image.new("L", (image_size, image_size), 0)
    _draw_object(ImageDraw.Draw(img), obj, image_size, 255)
    return np.asarray(img) > 0


# ----------------------------------------------------------------------------------------------------------------
# Captions and negatives
# ----------------------------------------------------------------------------------------------------------------


def describe_object(obj: SceneObject | Key, article: bool = True) -> str:
    """``"a large green circle"`` (or ``"large green circle"`` without the article)."""
    size, color, shape = obj.key if isinstance(obj, SceneObject) else obj
    text = f"{size} {color} {shape}"
    return f"{_article(size)} {text}" if article else text


def _caption_from_keys(keys: Sequence[Key], paraphrase: bool = False) -> str:
    if len(keys) == 1:
        return ("there is " if paraphrase else "") + describe_object(keys[0])
    if paraphrase:
        return " right of ".join(describe_object(k) for k in reversed(keys))
    return " left of ".join(describe_object(k) for k in keys)


def scene_caption(scene: Scene, paraphrase: bool = False) -> str:
    """The canonical caption (objects left to right, ``left of``) or the paraphrase (right to left, ``right of``;
    ``there is ...`` for one object)."""
    return _caption_from_keys(scene.keys, paraphrase)


def scene_captions(scene: Scene, n: int = 2) -> list[str]:
    """The first ``n`` (1 or 2) captions of a scene: canonical, then paraphrase."""
    if n not in (1, 2):
        raise ValueError(f"captions per image must be 1 or 2, got {n}")
    return [scene_caption(scene, paraphrase=p) for p in (False, True)][:n]


def _parse_phrase(phrase: str) -> Key:
    words = phrase.split(" ")
    if len(words) != 4 or words[0] != _article(words[1]):
        raise ValueError(f"cannot parse object phrase {phrase!r}")
    _, size, color, shape = words
    if size not in SIZES or color not in COLORS or shape not in SHAPES:
        raise ValueError(f"cannot parse object phrase {phrase!r}")
    return (size, color, shape)


def parse_caption(caption: str) -> tuple[Key, ...]:
    """Parse a caption of this world into the ``(size, color, shape)`` of its objects, left to right.

    Raises:
        ValueError: if the text is not a caption of this world's grammar.
    """
    text = " ".join(caption.strip().split())
    if text.startswith("there is "):
        return (_parse_phrase(text[len("there is ") :]),)
    if " left of " in text and " right of " in text:
        raise ValueError(f"mixed directions in {caption!r}")
    if " right of " in text:
        return tuple(_parse_phrase(p) for p in reversed(text.split(" right of ")))
    return tuple(_parse_phrase(p) for p in text.split(" left of "))


def caption_is_true(scene: Scene, caption: str) -> bool:
    """Whether ``caption`` fully describes ``scene`` (exactly its objects, in their left-to-right order)."""
    return parse_caption(caption) == scene.keys


def _attribute_options(keys: Sequence[Key], attribute: str) -> list[tuple[int, Key]]:
    index = {"size": 0, "color": 1, "shape": 2}[attribute]
    values = {"size": list(SIZES), "color": list(COLORS), "shape": list(SHAPES)}[attribute]
    options = []
    for i, key in enumerate(keys):
        for v in values:
            if v == key[index]:
                continue
            new = list(key)
            new[index] = v
            if tuple(new) not in keys:
                options.append((i, tuple(new)))
    return options


def _attribute_negative(scene: Scene, rng: np.random.Generator, attribute: str | None = None) -> tuple[str, str]:
    keys = list(scene.keys)
    attributes = [attribute] if attribute else [a for a in ("color", "shape", "size") if _attribute_options(keys, a)]
    attribute = _pick(rng, attributes)
    options = _attribute_options(keys, attribute)
    if not options:
        raise ValueError(f"no valid {attribute} change for {keys}")
    i, new = _pick(rng, options)
    keys[i] = new
    return _caption_from_keys(keys), attribute


def _swap_negative(scene: Scene, rng: np.random.Generator) -> str:
    keys = list(scene.keys)
    if len(keys) < 2:
        raise ValueError("a swap negative needs at least two objects")
    pairs = [(i, j) for i in range(len(keys)) for j in range(i + 1, len(keys))]
    i, j = _pick(rng, pairs)
    keys[i], keys[j] = keys[j], keys[i]
    return _caption_from_keys(keys)


def corrupt_caption(
    scene: Scene,
    rng: np.random.Generator | int | None,
    kind: str = "attribute",
    pool: Sequence[Scene] | None = None,
) -> str:
    """A caption that is false for ``scene`` (canonical grammar).

    Args:
        scene: The scene.
        rng: Generator or seed.
        kind: ``"attribute"`` (colour, shape or size of one object changed to a value no object of the scene has
            in that combination; also accepted: ``"color"``, ``"shape"``, ``"size"`` to force the attribute),
            ``"swap"`` (two objects exchanged; needs 2+ objects) or ``"other_scene"`` (the caption of a scene from
            ``pool`` that does not describe ``scene``).
        pool: Scenes to draw from for ``"other_scene"``.

    Raises:
        ValueError: if the kind is unknown or impossible for this scene (swap with one object, empty pool, ...).
    """
    rng = _as_rng(rng)
    if kind in ("attribute", "color", "shape", "size"):
        caption, _ = _attribute_negative(scene, rng, None if kind == "attribute" else kind)
    elif kind == "swap":
        caption = _swap_negative(scene, rng)
    elif kind == "other_scene":
        candidates = [s for s in (pool or ()) if s.keys != scene.keys]
        if not candidates:
            raise ValueError("other_scene needs a pool with at least one scene described differently")
        caption = scene_caption(_pick(rng, candidates))
    else:
        raise ValueError(f"unknown corruption kind {kind!r}; expected one of {CORRUPTION_KINDS}")
    assert not caption_is_true(scene, caption)
    return caption


def make_hard_negative(scene: Scene, rng: np.random.Generator | int | None) -> tuple[str, str]:
    """The hard negative of a scene: ``(caption, kind)``, kind uniform among ``color``, ``shape``, ``size`` and
    (2+ objects) ``swap``, restricted to the kinds possible for the scene."""
    rng = _as_rng(rng)
    keys = scene.keys
    kinds = [a for a in ("color", "shape", "size") if _attribute_options(keys, a)]
    if len(keys) >= 2:
        kinds.append("swap")
    kind = _pick(rng, kinds)
    caption = corrupt_caption(scene, rng, kind)
    return caption, kind


# ----------------------------------------------------------------------------------------------------------------
# VQA
# ----------------------------------------------------------------------------------------------------------------

_FORMS_BY_SHAPE = (("shape",), ("size", "shape"))
_FORMS_BY_COLOR = (("color",), ("size", "color"))
_FORMS_ANY = (("shape",), ("color", "shape"), ("size", "shape"), ("size", "color", "shape"))
# For "what is left of the X?": a shape-only reference would reveal that no other object has that shape (and a
# longer one that some other object has), leaking the answer, so the reference always includes the colour.
_FORMS_RELATION = (("color", "shape"), ("size", "color", "shape"))


def _unique_ref(scene: Scene, obj: SceneObject, forms: Sequence[tuple[str, ...]]) -> str | None:
    for form in forms:
        value = tuple(getattr(obj, a) for a in form)
        if sum(tuple(getattr(o, a) for a in form) == value for o in scene.objects) == 1:
            return " ".join(value)
    return None


class _YesNoBalancer:
    """Chooses yes/no targets so that each question type stays balanced within one answer."""

    def __init__(self) -> None:
        self.counts: dict[str, Counter] = defaultdict(Counter)

    def target(self, qtype: str, rng: np.random.Generator) -> str:
        c = self.counts[qtype]
        if c["yes"] != c["no"]:
            return "yes" if c["yes"] < c["no"] else "no"
        return "yes" if rng.random() < 0.5 else "no"

    def record(self, qtype: str, answer: str) -> None:
        self.counts[qtype][answer] += 1


def _q_count(scene: Scene, rng: np.random.Generator, bal: _YesNoBalancer) -> tuple[str, str] | None:
    return "how many objects are there?", str(len(scene.objects))


def _q_count_shape(scene: Scene, rng: np.random.Generator, bal: _YesNoBalancer) -> tuple[str, str] | None:
    present = sorted({o.shape for o in scene.objects}, key=SHAPES.index)
    shape = _pick(rng, present) if rng.random() < 0.5 else _pick(rng, SHAPES)
    n = sum(o.shape == shape for o in scene.objects)
    return f"how many {SHAPE_PLURALS[shape]} are there?", str(n)


def _q_color(scene: Scene, rng: np.random.Generator, bal: _YesNoBalancer) -> tuple[str, str] | None:
    cands = [(o, r) for o in scene.objects if (r := _unique_ref(scene, o, _FORMS_BY_SHAPE))]
    if not cands:
        return None
    obj, ref = _pick(rng, cands)
    return f"what color is the {ref}?", obj.color


def _q_shape(scene: Scene, rng: np.random.Generator, bal: _YesNoBalancer) -> tuple[str, str] | None:
    cands = [(o, r) for o in scene.objects if (r := _unique_ref(scene, o, _FORMS_BY_COLOR))]
    if not cands:
        return None
    obj, ref = _pick(rng, cands)
    return f"what shape is the {ref} object?", obj.shape


def _q_size(scene: Scene, rng: np.random.Generator, bal: _YesNoBalancer) -> tuple[str, str] | None:
    cands = [(o, r) for o in scene.objects if (r := _unique_ref(scene, o, (("color", "shape"),)))]
    if not cands:
        return None
    obj, ref = _pick(rng, cands)
    return f"what size is the {ref}?", obj.size


def _q_exists(scene: Scene, rng: np.random.Generator, bal: _YesNoBalancer) -> tuple[str, str] | None:
    target = bal.target("exists", rng)
    with_size = bool(rng.random() < 0.5)

    def phrase(key: Key) -> tuple[str, ...]:
        return key if with_size else key[1:]

    present = {phrase(k) for k in scene.keys}
    if target == "yes":
        words = phrase(_pick(rng, scene.keys))
    else:
        words = None
        if rng.random() < 0.5:  # hard "no": one attribute of a present object changed
            base = list(_pick(rng, scene.keys))
            attr = _pick(rng, ["size", "color", "shape"] if with_size else ["color", "shape"])
            idx = {"size": 0, "color": 1, "shape": 2}[attr]
            values = {"size": list(SIZES), "color": list(COLORS), "shape": list(SHAPES)}[attr]
            options = [
                v for v in values if v != base[idx] and phrase((*base[:idx], v, *base[idx + 1 :])) not in present
            ]
            if options:
                base[idx] = _pick(rng, options)
                words = phrase(tuple(base))
        while words is None or words in present:
            words = phrase((_pick(rng, list(SIZES)), _pick(rng, list(COLORS)), _pick(rng, SHAPES)))
    answer = "yes" if words in present else "no"
    bal.record("exists", answer)
    return f"is there {_article(words[0])} {' '.join(words)}?", answer


def _q_relation(scene: Scene, rng: np.random.Generator, bal: _YesNoBalancer) -> tuple[str, str] | None:
    objs = scene.objects
    cands = []
    for i, o in enumerate(objs):
        ref = _unique_ref(scene, o, _FORMS_RELATION)
        if ref is None:  # pragma: no cover - the full description is always unique
            continue
        if i == 1:  # exactly one object lies left of objs[1]
            cands.append((ref, "left", objs[0]))
        if i == len(objs) - 2:  # exactly one object lies right of objs[-2]
            cands.append((ref, "right", objs[-1]))
    if not cands:
        return None
    ref, direction, other = _pick(rng, cands)
    return f"what is {direction} of the {ref}?", other.shape


def _q_relation_yn(scene: Scene, rng: np.random.Generator, bal: _YesNoBalancer) -> tuple[str, str] | None:
    objs = scene.objects
    if len(objs) < 2:
        return None
    target = bal.target("relation_yn", rng)
    i, j = (int(v) for v in rng.choice(len(objs), size=2, replace=False))
    a, b = objs[i], objs[j]
    truly = "left" if a.x < b.x else "right"
    direction = truly if target == "yes" else ("right" if truly == "left" else "left")
    ref_a, ref_b = _unique_ref(scene, a, _FORMS_ANY), _unique_ref(scene, b, _FORMS_ANY)
    bal.record("relation_yn", target)
    return f"is the {ref_a} {direction} of the {ref_b}?", target


_QUESTION_MAKERS: dict[str, Callable[[Scene, np.random.Generator, _YesNoBalancer], tuple[str, str] | None]] = {
    "count": _q_count,
    "count_shape": _q_count_shape,
    "color": _q_color,
    "shape": _q_shape,
    "size": _q_size,
    "exists": _q_exists,
    "relation": _q_relation,
    "relation_yn": _q_relation_yn,
}


def _applicable_types(scene: Scene) -> list[str]:
    types = ["count", "count_shape", "exists"]
    if any(_unique_ref(scene, o, _FORMS_BY_SHAPE) for o in scene.objects):
        types.append("color")
    if any(_unique_ref(scene, o, _FORMS_BY_COLOR) for o in scene.objects):
        types.append("shape")
    if any(_unique_ref(scene, o, (("color", "shape"),)) for o in scene.objects):
        types.append("size")
    if len(scene.objects) >= 2:
        types += ["relation", "relation_yn"]
    return sorted(types, key=QUESTION_TYPES.index)


def make_questions(
    scene: Scene,
    rng: np.random.Generator | int | None,
    n: int = 4,
    types: Sequence[str] | None = None,
    balancer: Any = None,
) -> list[tuple[str, str, str]]:
    """Up to ``n`` questions about ``scene`` as ``(question, answer, question_type)``, with distinct types drawn
    uniformly among the applicable ones (restricted to ``types`` if given). ``balancer`` (internal) keeps yes/no
    answers balanced across calls; without it each yes/no target is a fair coin."""
    rng = _as_rng(rng)
    balancer = balancer if balancer is not None else _YesNoBalancer()
    applicable = [t for t in _applicable_types(scene) if types is None or t in types]
    order = [applicable[int(k)] for k in rng.permutation(len(applicable))]
    out = []
    for qtype in order[:n]:
        qa = _QUESTION_MAKERS[qtype](scene, rng, balancer)
        if qa is not None:
            out.append((qa[0], qa[1], qtype))
    return out


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """The official VQA v2 accuracy of one answer as a **fraction** in [0, 1] (the world's baselines are fractions):
    :func:`openblip.eval.vqa.question_accuracy` (answer normalisation, ``min(1, #matches / 3)`` averaged over the
    ten 9-of-10 subsets of the human answers) / 100."""
    from openblip.eval.vqa import question_accuracy

    return question_accuracy(prediction, answers) / 100.0


# ----------------------------------------------------------------------------------------------------------------
# NLVR2
# ----------------------------------------------------------------------------------------------------------------


def _nlvr_candidate(template: str, s0: Scene, s1: Scene, rng: np.random.Generator) -> tuple[str, bool]:
    both = (s0, s1)
    if template == "count_compare":
        n0, n1 = len(s0.objects), len(s1.objects)
        variant = int(rng.integers(3))
        if variant == 0:
            return "the left image contains more objects than the right image", n0 > n1
        if variant == 1:
            return "the right image contains more objects than the left image", n1 > n0
        return "both images contain the same number of objects", n0 == n1
    if template == "side_count":
        side = int(rng.integers(2))
        n = int(rng.integers(1, 4))
        noun = "object" if n == 1 else "objects"
        sentence = f"the {('left', 'right')[side]} image contains exactly {_COUNT_WORDS[n]} {noun}"
        return sentence, len(both[side].objects) == n
    if template in ("both_color", "exactly_one_color"):
        seen_colors = [o.color for o in _pick(rng, both).objects]
        color = _pick(rng, seen_colors) if rng.random() < 0.7 else _pick(rng, list(COLORS))
        has = [any(o.color == color for o in s.objects) for s in both]
        if template == "both_color":
            return f"both images contain {_article(color)} {color} object", all(has)
        return f"exactly one image contains {_article(color)} {color} object", has[0] != has[1]
    if template == "both_shape":
        seen_shapes = [o.shape for o in _pick(rng, both).objects]
        shape = _pick(rng, seen_shapes) if rng.random() < 0.7 else _pick(rng, SHAPES)
        truth = all(any(o.shape == shape for o in s.objects) for s in both)
        return f"both images contain {_article(shape)} {shape}", truth
    if template == "side_shape":
        side = int(rng.integers(2))
        obj = _pick(rng, _pick(rng, both).objects)
        shape = obj.shape if rng.random() < 0.7 else _pick(rng, SHAPES)
        name = ("left", "right")[side]
        if rng.random() < 0.5:
            color = obj.color if rng.random() < 0.7 else _pick(rng, list(COLORS))
            truth = any(o.shape == shape and o.color == color for o in both[side].objects)
            return f"the {name} image contains {_article(color)} {color} {shape}", truth
        return f"the {name} image contains {_article(shape)} {shape}", any(o.shape == shape for o in both[side].objects)
    raise ValueError(f"unknown NLVR template {template!r}; expected one of {NLVR_TEMPLATES}")


def make_nlvr_example(
    scenes: Sequence[Scene],
    rng: np.random.Generator | int | None,
    label: bool | None = None,
    template: str | None = None,
    max_tries: int = 10000,
) -> tuple[int, int, str, bool, str]:
    """Draw two different scenes of ``scenes`` and a statement about them: ``(i0, i1, sentence, label,
    template)``. ``label`` and ``template`` are random unless given."""
    rng = _as_rng(rng)
    if len(scenes) < 2:
        raise ValueError("NLVR examples need at least two scenes")
    template = template or _pick(rng, NLVR_TEMPLATES)
    label = bool(rng.random() < 0.5) if label is None else bool(label)
    for _ in range(max_tries):
        i0, i1 = (int(v) for v in rng.choice(len(scenes), size=2, replace=False))
        sentence, truth = _nlvr_candidate(template, scenes[i0], scenes[i1], rng)
        if truth == label:
            return i0, i1, sentence, label, template
    raise RuntimeError(f"no {label} NLVR statement of template {template!r} found in {max_tries} tries")


# ----------------------------------------------------------------------------------------------------------------
# World generation
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class WorldInfo:
    """What :func:`generate_world` wrote: paths are relative to ``root`` (the ``image_root`` of every loader)."""

    root: Path
    seed: int
    image_size: int
    splits: dict[str, int]
    files: dict[str, str]
    vocabulary: list[str]
    answer_list: list[str]
    counts: dict[str, dict[str, int]]
    baselines: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)

    def path(self, name: str) -> Path:
        """Absolute path of a file by its logical name (e.g. ``"caption_val"``, ``"vqa_train"``)."""
        return self.root / self.files[name]

    def to_dict(self) -> dict[str, Any]:
        return {
            "generator": "openblip.data.synthetic",
            "format_version": 1,
            "seed": self.seed,
            "image_size": self.image_size,
            "splits": self.splits,
            "config": self.config,
            "files": self.files,
            "vocabulary": self.vocabulary,
            "answer_list": self.answer_list,
            "counts": self.counts,
            "baselines": self.baselines,
        }


def image_id_from_path(path: str) -> int:
    """``".../scene_000123.png"`` -> 123 (the COCO-style integer id used in the ground-truth files)."""
    stem = os.path.splitext(os.path.basename(path))[0]
    return int(stem.split("_")[-1])


def _image_path(split: str, image_id: int) -> str:
    return f"images/{split}/scene_{image_id:06d}.png"


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=True) + "\n", encoding="utf-8")


def _mode(counter: Mapping[str, int]) -> str:
    return min(counter, key=lambda a: (-counter[a], a))


def _p_none_in_top_k(total: int, good: int, k: int) -> float:
    """Probability that none of ``good`` items lands in the top ``k`` of a random ranking of ``total`` items."""
    if k >= total:
        return 0.0
    return math.comb(total - good, k) / math.comb(total, k) if total - good >= k else 0.0


def _retrieval_baselines(entries: Sequence[Mapping[str, Any]], ks: Sequence[int] = (1, 5, 10)) -> dict[str, Any]:
    texts = [c for e in entries for c in e["caption"]]
    mult = Counter(texts)
    images_with = Counter(c for e in entries for c in set(e["caption"]))
    n_img, n_txt, n_unique = len(entries), len(texts), len(mult)
    out: dict[str, Any] = {"n_images": n_img, "n_texts": n_txt, "n_unique_captions": n_unique}
    for k in ks:
        out[f"chance_r{k}_unique"] = min(1.0, k / n_unique)
        out[f"ir_chance_r{k}"] = min(1.0, k / n_img)
        out[f"tr_chance_r{k}"] = float(np.mean([1.0 - _p_none_in_top_k(n_txt, len(e["caption"]), k) for e in entries]))
        # Ceilings of a perfect model that cannot tell apart images with identical captions (ties broken randomly).
        out[f"ir_ceiling_r{k}"] = float(np.mean([min(1.0, k / images_with[t]) for t in texts]))
        out[f"tr_ceiling_r{k}"] = float(
            np.mean(
                [1.0 - _p_none_in_top_k(sum(mult[c] for c in set(e["caption"])), len(e["caption"]), k) for e in entries]
            )
        )
    return out


def _vqa_baselines(train: Sequence[Mapping[str, Any]], split: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    if not train or not split:  # a world generated without questions has no VQA baselines
        return {"n_questions": len(split), "most_frequent_answer": None, "chance_accuracy": None}
    overall: Counter = Counter()
    by_type: dict[str, Counter] = defaultdict(Counter)
    by_question: dict[str, Counter] = defaultdict(Counter)
    for q in train:
        a = q["answer"][0]
        overall[a] += 1
        by_type[q["question_type"]][a] += 1
        by_question[q["question"]][a] += 1
    most = _mode(overall)
    type_mode = {t: _mode(c) for t, c in by_type.items()}
    question_mode = {t: _mode(c) for t, c in by_question.items()}

    acc: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    seen = 0
    for q in split:
        t = q["question_type"]
        seen += q["question"] in question_mode
        preds = {
            "chance": most,
            "type_prior": type_mode.get(t, most),
            "question_only": question_mode.get(q["question"], type_mode.get(t, most)),
        }
        for name, pred in preds.items():
            score = vqa_accuracy(pred, q["answer"])
            acc["all"][name].append(score)
            acc[t][name].append(score)
    per_type = {
        t: {"n": len(v["chance"]), **{name: float(np.mean(s)) for name, s in v.items()}}
        for t, v in sorted(acc.items())
        if t != "all"
    }
    yes_no = [q["answer"][0] for q in split if q["answer"][0] in ("yes", "no")]
    return {
        "n_questions": len(split),
        "most_frequent_answer": most,
        "chance_accuracy": float(np.mean(acc["all"]["chance"])) if split else None,
        "type_prior_accuracy": float(np.mean(acc["all"]["type_prior"])) if split else None,
        "question_only_accuracy": float(np.mean(acc["all"]["question_only"])) if split else None,
        "question_seen_in_train": seen / len(split) if split else None,
        "yes_fraction": yes_no.count("yes") / len(yes_no) if yes_no else None,
        "per_type": per_type,
    }


def _nlvr_baselines(train: Sequence[Mapping[str, Any]], split: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    labels = Counter(e["label"] for e in train)
    majority = _mode(labels) if labels else "True"
    by_sentence: dict[str, Counter] = defaultdict(Counter)
    for e in train:
        by_sentence[e["sentence"]][e["label"]] += 1
    n = len(split)
    if not n:
        return {"n_pairs": 0, "majority_label": majority}
    sentence_pred = [_mode(by_sentence[e["sentence"]]) if e["sentence"] in by_sentence else majority for e in split]
    return {
        "n_pairs": n,
        "majority_label": majority,
        "majority_accuracy": sum(e["label"] == majority for e in split) / n,
        "sentence_only_accuracy": sum(p == e["label"] for p, e in zip(sentence_pred, split)) / n,
        "true_fraction": sum(e["label"] == "True" for e in split) / n,
    }


def _itm_baselines(train_captions: Counter, split: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    scores = []
    for e in split:
        pos, neg = train_captions.get(e["caption"], 0), train_captions.get(e["negative"], 0)
        scores.append(1.0 if pos > neg else 0.0 if pos < neg else 0.5)
    return {
        "n_pairs": len(split),
        "chance": 0.5,
        "text_prior_accuracy": float(np.mean(scores)) if scores else None,
    }


def _resolve_nlvr_counts(n_nlvr: int | Mapping[str, int] | None, sizes: Mapping[str, int]) -> dict[str, int]:
    if n_nlvr is None:
        counts = dict(sizes)
    elif isinstance(n_nlvr, Mapping):
        counts = {s: int(n_nlvr.get(s, 0)) for s in SPLITS}
    else:
        counts = {s: int(round(int(n_nlvr) * sizes[s] / sizes["train"])) for s in SPLITS}
    return {s: (counts[s] if sizes[s] >= 2 else 0) for s in SPLITS}


def generate_world(
    out_dir: str | os.PathLike[str],
    n_train: int = 5000,
    n_val: int = 500,
    n_test: int = 500,
    image_size: int = 64,
    seed: int = 0,
    n_nlvr: int | Mapping[str, int] | None = None,
    *,
    captions_per_image: int = 2,
    vqa_per_scene: int = 4,
    count_probs: Sequence[float] = COUNT_PROBS,
) -> WorldInfo:
    """Generate the synthetic world into ``out_dir`` (see the module docstring for the files and formats).

    Args:
        out_dir: Output folder (created; existing files of the same names are overwritten, others are kept).
            ``world.json`` is the completion marker: an existing one is deleted before anything is written and the
            new one is written last, so a folder with a ``world.json`` holds a completely generated world.
        n_train, n_val, n_test: Number of scenes per split (train >= 2; val/test may be 0).
        image_size: Side of the square images in pixels (48-512; 64-96 is the intended range).
        seed: The only source of randomness.
        n_nlvr: NLVR pairs: ``None`` -> as many pairs as scenes in each split; an int -> that many for train and
            proportionally fewer for val/test (``round(n * n_split / n_train)``); a mapping -> per split.
        captions_per_image: 1 (canonical) or 2 (canonical + paraphrase).
        vqa_per_scene: Questions per scene (of distinct types).
        count_probs: Probabilities of 1, 2, 3 objects.

    Returns:
        A :class:`WorldInfo`, also saved as ``world.json``.
    """
    sizes = {"train": int(n_train), "val": int(n_val), "test": int(n_test)}
    if sizes["train"] < 2 or sizes["val"] < 0 or sizes["test"] < 0:
        raise ValueError(f"need n_train >= 2 and n_val, n_test >= 0, got {sizes}")
    if not 48 <= int(image_size) <= 512:
        raise ValueError(f"image_size must be in [48, 512], got {image_size}")
    if captions_per_image not in (1, 2):
        raise ValueError(f"captions_per_image must be 1 or 2, got {captions_per_image}")
    if vqa_per_scene < 0:
        raise ValueError(f"vqa_per_scene must be >= 0, got {vqa_per_scene}")
    image_size = int(image_size)
    root = Path(out_dir)
    nlvr_counts = _resolve_nlvr_counts(n_nlvr, sizes)  # validated before anything in out_dir is touched
    # world.json marks a complete world: remove it before any other file is written and write it last (atomically,
    # below), so a generation that is interrupted or fails half-way never leaves a world that looks complete.
    marker = root / "world.json"
    if marker.is_file() or marker.is_symlink():
        marker.unlink()
    ann = root / "annotations"
    ann.mkdir(parents=True, exist_ok=True)

    files: dict[str, str] = {}
    data: dict[str, dict[str, Any]] = {}
    next_id = 1
    next_qid = 1
    for split in SPLITS:
        code = _SPLIT_CODES[split]
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        scenes, paths, ids, neg_kinds = [], [], [], []
        cap_entries: list[dict[str, Any]] = []
        hard_negs, vqa = [], []
        balancer = _YesNoBalancer()
        for i in range(sizes[split]):
            image_id = next_id
            next_id += 1
            scene = sample_scene(_rng(seed, code, i, _P_LAYOUT), count_probs=count_probs)
            path = _image_path(split, image_id)
            render_scene(scene, image_size, _rng(seed, code, i, _P_RENDER)).save(root / path, format="PNG")
            caps = scene_captions(scene, captions_per_image)
            if split == "train":
                cap_entries += [{"image": path, "caption": c, "image_id": f"scene_{image_id:06d}"} for c in caps]
            else:
                cap_entries.append({"image": path, "caption": caps})
            negative, kind = make_hard_negative(scene, _rng(seed, code, i, _P_NEGATIVE))
            hard_negs.append({"image": path, "caption": caps[0], "negative": negative})
            for question, answer, qtype in make_questions(
                scene, _rng(seed, code, i, _P_VQA), vqa_per_scene, balancer=balancer
            ):
                vqa.append(
                    {
                        "question_id": next_qid,
                        "question": question,
                        "answer": [answer] * 10,
                        "image": path,
                        "dataset": "vqa",
                        "question_type": qtype,
                    }
                )
                next_qid += 1
            scenes.append(scene)
            paths.append(path)
            ids.append(image_id)
            neg_kinds.append(kind)

        nlvr = []
        label_counts: dict[str, Counter] = defaultdict(Counter)
        total: Counter = Counter()
        for k in range(nlvr_counts[split]):
            rng = _rng(seed, code, k, _P_NLVR)
            template = _pick(rng, NLVR_TEMPLATES)
            c = label_counts[template]
            # balanced per template; ties go to the overall minority label, so the split is balanced too
            if c[True] != c[False]:
                label = c[True] < c[False]
            elif total[True] != total[False]:
                label = total[True] < total[False]
            else:
                label = bool(rng.random() < 0.5)
            i0, i1, sentence, label, _ = make_nlvr_example(scenes, rng, label=label, template=template)
            c[label] += 1
            total[label] += 1
            nlvr.append({"images": [paths[i0], paths[i1]], "sentence": sentence, "label": str(label)})

        def put(name: str, obj: Any) -> None:
            files[name] = f"annotations/{name}.json"
            _write_json(root / files[name], obj)

        put(f"caption_{split}", cap_entries)
        if split != "train":
            gt_anns, gt_id = [], 1
            for e, image_id in zip(cap_entries, ids):
                for c in e["caption"]:
                    gt_anns.append({"image_id": image_id, "caption": c, "id": gt_id})
                    gt_id += 1
            put(f"caption_{split}_gt", {"annotations": gt_anns, "images": [{"id": i} for i in ids]})
        put(f"hard_negatives_{split}", hard_negs)
        put(f"vqa_{split}", vqa)
        put(f"nlvr_{split}", nlvr)
        put(
            f"scenes_{split}",
            [
                {"image": p, "image_id": i, **s.to_dict(), "negative_kind": kd}
                for p, i, s, kd in zip(paths, ids, scenes, neg_kinds)
            ],
        )
        if split == "train":
            put("pretrain", [{"image": e["image"], "caption": e["caption"]} for e in cap_entries])
        data[split] = {"captions": cap_entries, "hard_negatives": hard_negs, "vqa": vqa, "nlvr": nlvr}
    files["answer_list"] = "annotations/answer_list.json"
    _write_json(root / files["answer_list"], ANSWER_LIST)

    # Baselines, computed on the generated data.
    train_caps = Counter(e["caption"] for e in data["train"]["captions"])
    top_caption = _mode(train_caps)
    baselines: dict[str, Any] = {"itm_chance": 0.5}
    for split in SPLITS:
        d = data[split]
        if not d["hard_negatives"]:
            baselines[split] = None
            continue
        eval_entries = d["captions"]
        if split == "train":  # group the train entries (one per caption) by image
            grouped: dict[str, list[str]] = defaultdict(list)
            for e in d["captions"]:
                grouped[e["image"]].append(e["caption"])
            eval_entries = [{"image": k, "caption": v} for k, v in grouped.items()]
        baselines[split] = {
            "retrieval": _retrieval_baselines(eval_entries),
            "caption": {
                "most_frequent_train_caption": top_caption,
                "exact_match": float(np.mean([top_caption in e["caption"] for e in eval_entries])),
            },
            "vqa": _vqa_baselines(data["train"]["vqa"], d["vqa"]),
            "nlvr": _nlvr_baselines(data["train"]["nlvr"], d["nlvr"]),
            "itm_hard_negative": _itm_baselines(train_caps, d["hard_negatives"]),
        }

    counts = {
        split: {
            "scenes": sizes[split],
            "captions": sum(
                len(e["caption"]) if isinstance(e["caption"], list) else 1 for e in data[split]["captions"]
            ),
            "questions": len(data[split]["vqa"]),
            "nlvr_pairs": len(data[split]["nlvr"]),
        }
        for split in SPLITS
    }
    info = WorldInfo(
        root=root,
        seed=int(seed),
        image_size=image_size,
        splits=sizes,
        files=dict(sorted(files.items())),
        vocabulary=list(VOCABULARY),
        answer_list=list(ANSWER_LIST),
        counts=counts,
        baselines=baselines,
        config={
            "captions_per_image": captions_per_image,
            "vqa_per_scene": vqa_per_scene,
            "count_probs": [float(p) for p in count_probs],
            "shapes": list(SHAPES),
            "colors": {k: list(v) for k, v in COLORS.items()},
            "sizes": dict(SIZES),
            "question_types": list(QUESTION_TYPES),
            "nlvr_templates": list(NLVR_TEMPLATES),
            "image_ids": "global over the world, from 1: train, then val, then test",
        },
    )
    partial = root / "world.json.partial"
    _write_json(partial, info.to_dict())
    os.replace(partial, marker)  # last: the world is complete
    return info


def load_scenes(out_dir: str | os.PathLike[str], split: str) -> list[tuple[str, Scene]]:
    """The ``(image path, Scene)`` pairs of a generated split, in file order."""
    with open(Path(out_dir) / "annotations" / f"scenes_{split}.json", encoding="utf-8") as f:
        return [(e["image"], Scene.from_dict(e)) for e in json.load(f)]


def load_world(out_dir: str | os.PathLike[str]) -> WorldInfo:
    """Read ``world.json`` back into a :class:`WorldInfo`."""
    root = Path(out_dir)
    with open(root / "world.json", encoding="utf-8") as f:
        d = json.load(f)
    return WorldInfo(
        root=root,
        seed=d["seed"],
        image_size=d["image_size"],
        splits=d["splits"],
        files=d["files"],
        vocabulary=d["vocabulary"],
        answer_list=d["answer_list"],
        counts=d["counts"],
        baselines=d["baselines"],
        config=d.get("config", {}),
    )
