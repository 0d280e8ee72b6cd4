"""BLIP's train-time augmentation, without torchvision or OpenCV.

The original BLIP (``data/__init__.py``) trains every task with::

    transforms.Compose([
        transforms.RandomResizedCrop(image_size, scale=(min_scale, 1.0), interpolation=InterpolationMode.BICUBIC),
        transforms.RandomHorizontalFlip(),
        RandomAugment(2, 5, isPIL=True, augs=['Identity', 'AutoContrast', 'Brightness', 'Sharpness', 'Equalize',
                                             'ShearX', 'ShearY', 'TranslateX', 'TranslateY', 'Rotate']),
        transforms.ToTensor(),
        normalize,   # CLIP mean / std
    ])

with ``min_scale`` 0.5 for fine-tuning and 0.2 for pre-training. This module reproduces each step with Pillow, numpy
and torch:

* :class:`RandomResizedCrop` is torchvision's algorithm draw for draw (10 attempts of area / log-aspect-ratio sampling,
  then the central-crop fallback), followed by Pillow's crop and bicubic resize exactly as torchvision does on PIL
  images. Given a :class:`torch.Generator` it makes the same draws (in the same float32 arithmetic) that torchvision
  makes from the global torch RNG.
* :class:`RandomHorizontalFlip` flips with probability ``p`` and -- a deliberate fix -- swaps the words "left" and
  "right" in the paired text, so that captions, questions and answers keep describing the image.
* :class:`RandomAugment` is BLIP's ``transform/randaugment.py``: ``N`` operations drawn **with replacement**, each
  applied with probability 0.5, at magnitude ``M``, on a uint8 HWC array. The geometric operations re-implement
  OpenCV's ``warpAffine`` (``INTER_LINEAR``, constant border) in numpy, fixed-point arithmetic included.
* :func:`train_transform` chains them, then ``/255`` and CLIP normalisation, returning ``(tensor, text)``.

Randomness never comes from a global RNG. Every call takes an optional ``rng`` (a :class:`random.Random` or a
:class:`torch.Generator`); without one, each object uses its own :class:`random.Random` seeded from
:func:`torch.initial_seed` (re-seeded whenever that seed changes). In a ``DataLoader`` worker that seed is the
worker's seed (``base_seed + worker_id``, where ``base_seed`` is drawn from the main process's torch RNG each epoch),
so augmentation is different in every worker and epoch, and reproducible after ``torch.manual_seed``.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image

from openblip.image import load_image
from openblip.transforms import CLIP_MEAN, CLIP_STD

__all__ = [
    "BLIP_AUGS",
    "RandomAugment",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "Rng",
    "TrainTransform",
    "WorkerSeededRandom",
    "autocontrast",
    "brightness",
    "equalize",
    "rotate",
    "sharpness",
    "shear_x",
    "shear_y",
    "swap_left_right",
    "train_transform",
    "translate_x",
    "translate_y",
    "warp_affine",
]

#: A source of randomness accepted everywhere in this module.
Rng = random.Random | torch.Generator

#: The operations BLIP's ``create_dataset`` passes to ``RandomAugment`` (all of them are implemented here).
BLIP_AUGS = (
    "Identity",
    "AutoContrast",
    "Brightness",
    "Sharpness",
    "Equalize",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Rotate",
)

_FILL = (128, 128, 128)  # randaugment.py's ``replace_value``
_MAX_LEVEL = 10  # randaugment.py's ``MAX_LEVEL``
_TRANSLATE_CONST = 10  # randaugment.py's ``translate_const`` (pixels at M = MAX_LEVEL)

T = TypeVar("T")


# --------------------------------------------------------------------------------------------------------------------
# Randomness
# --------------------------------------------------------------------------------------------------------------------


def _mix_seed(seed: int, salt: str) -> int:
    digest = hashlib.sha256(f"{int(seed)}:{salt}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


class WorkerSeededRandom:
    """A :class:`random.Random` seeded from :func:`torch.initial_seed`, per process and per salt.

    :meth:`get` returns the same generator (continuing its stream) as long as ``torch.initial_seed()`` is unchanged,
    and a freshly seeded one (``sha256(seed, salt)``) when it changes -- as it does in every ``DataLoader`` worker,
    every epoch (unless ``persistent_workers``), and after :func:`torch.manual_seed`. Different salts give
    independent streams from the same torch seed. Picklable.
    """

    def __init__(self, salt: str) -> None:
        self.salt = salt
        self._seed: int | None = None
        self._rng: random.Random | None = None

    def get(self) -> random.Random:
        seed = torch.initial_seed()
        if self._rng is None or seed != self._seed:
            self._rng = random.Random(_mix_seed(seed, self.salt))
            self._seed = seed
        return self._rng

    def __repr__(self) -> str:
        return f"{type(self).__name__}(salt={self.salt!r})"


def _random(rng: Rng) -> float:
    """Uniform in [0, 1)."""
    if isinstance(rng, torch.Generator):
        return float(torch.rand(1, generator=rng).item())
    return rng.random()


def _uniform(rng: Rng, a: float, b: float) -> float:
    if isinstance(rng, torch.Generator):
        return float(torch.empty(1).uniform_(a, b, generator=rng).item())
    return rng.uniform(a, b)


def _randrange(rng: Rng, n: int) -> int:
    """Uniform integer in [0, n)."""
    if isinstance(rng, torch.Generator):
        return int(torch.randint(0, n, (1,), generator=rng).item())
    return rng.randrange(n)


def _check_rng(rng: Any) -> Rng:
    if not isinstance(rng, (random.Random, torch.Generator)):
        raise TypeError(f"rng must be a random.Random or a torch.Generator, got {type(rng).__name__}")
    return rng


# --------------------------------------------------------------------------------------------------------------------
# RandomResizedCrop
# --------------------------------------------------------------------------------------------------------------------


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        h = w = int(size)
    else:
        vals = tuple(int(s) for s in size)  # type: ignore[union-attr]
        if len(vals) == 1:
            vals = (vals[0], vals[0])
        if len(vals) != 2:
            raise ValueError(f"size must be an int or (height, width), got {size!r}")
        h, w = vals
    if h <= 0 or w <= 0:
        raise ValueError(f"size must be positive, got {size!r}")
    return h, w


def _rgb(image: Any) -> Image.Image:
    if isinstance(image, Image.Image) and image.mode == "RGB":
        return image
    return load_image(image)


class RandomResizedCrop:
    """torchvision's ``RandomResizedCrop`` for PIL images.

    Crop a random region whose area is a fraction ``scale`` of the image and whose aspect ratio (w/h) lies in
    ``ratio`` (sampled log-uniformly), then resize it to ``size``. As torchvision: 10 attempts, each drawing
    ``target_area = area * U(scale)`` and ``aspect = exp(U(log ratio))``, ``w = round(sqrt(target_area * aspect))``,
    ``h = round(sqrt(target_area / aspect))``; the first that fits is placed uniformly (top ``i`` drawn before left
    ``j``); if none fits, the central crop of the whole image clamped to ``ratio``. The crop is ``Image.crop`` then
    ``Image.resize((w, h), interpolation)``, exactly torchvision's PIL path.

    Args:
        size: Output size, an int (square) or ``(height, width)``.
        scale: Range of the crop's area as a fraction of the image's (BLIP: ``(min_scale, 1.0)``).
        ratio: Range of the crop's aspect ratio ``w / h``.
        interpolation: A Pillow resampling filter (BLIP: bicubic).
    """

    def __init__(
        self,
        size: int | Sequence[int],
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
        interpolation: Image.Resampling = Image.Resampling.BICUBIC,
    ) -> None:
        self.size = _pair(size)
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale must satisfy 0 < min <= max, got {scale!r}")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"ratio must satisfy 0 < min <= max, got {ratio!r}")
        self.interpolation = interpolation
        self._auto = WorkerSeededRandom("openblip.augment.RandomResizedCrop")

    def get_params(self, width: int, height: int, rng: Rng) -> tuple[int, int, int, int]:
        """Draw a crop box for a ``width x height`` image.

        Returns:
            ``(i, j, h, w)``: top, left, height, width (torchvision's order).
        """
        rng = _check_rng(rng)
        area = height * width
        use_torch = isinstance(rng, torch.Generator)
        if use_torch:  # torchvision's float32 arithmetic
            log_ratio = torch.log(torch.tensor(self.ratio))
            lo_r, hi_r = float(log_ratio[0]), float(log_ratio[1])
        else:
            lo_r, hi_r = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            target_area = area * _uniform(rng, self.scale[0], self.scale[1])
            if use_torch:
                aspect_ratio = float(torch.exp(torch.empty(1).uniform_(lo_r, hi_r, generator=rng)).item())
            else:
                aspect_ratio = math.exp(_uniform(rng, lo_r, hi_r))
            w = int(round(math.sqrt(target_area * aspect_ratio)))
            h = int(round(math.sqrt(target_area / aspect_ratio)))
            if 0 < w <= width and 0 < h <= height:
                i = _randrange(rng, height - h + 1)
                j = _randrange(rng, width - w + 1)
                return i, j, h, w
        return self.fallback_params(width, height)

    def fallback_params(self, width: int, height: int) -> tuple[int, int, int, int]:
        """torchvision's fallback: the whole image, centrally cropped to the nearest allowed aspect ratio."""
        in_ratio = float(width) / float(height)
        if in_ratio < min(self.ratio):
            w = width
            h = int(round(w / min(self.ratio)))
        elif in_ratio > max(self.ratio):
            h = height
            w = int(round(h * max(self.ratio)))
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, image: Image.Image, rng: Rng | None = None) -> Image.Image:
        image = _rgb(image)
        r = self._auto.get() if rng is None else rng
        i, j, h, w = self.get_params(image.width, image.height, r)
        out_h, out_w = self.size
        return image.crop((j, i, j + w, i + h)).resize((out_w, out_h), self.interpolation)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, scale={self.scale}, ratio={self.ratio})"


# --------------------------------------------------------------------------------------------------------------------
# Horizontal flip with left/right swapping
# --------------------------------------------------------------------------------------------------------------------

_LEFT_RIGHT = re.compile(r"\b(left|right)\b", re.IGNORECASE)


def _swap_match(m: re.Match[str]) -> str:
    word = m.group(0)
    target = "right" if word.lower() == "left" else "left"
    if word.isupper():
        return target.upper()
    if word[0].isupper():
        return target.capitalize()
    return target


def swap_left_right(text: T) -> T:
    """Swap the whole words "left" and "right" (case kept: ``left``/``Left``/``LEFT``).

    Word boundaries are regex ``\\b``: "left," "left-hand" and "right's" are swapped; "leftover", "bright" and
    "rightmost" are not. ``text`` may be a string, ``None`` (returned as is) or a list/tuple of strings (swapped
    element-wise, recursively; the container type is kept).
    """
    if text is None:
        return text
    if isinstance(text, str):
        return _LEFT_RIGHT.sub(_swap_match, text)  # type: ignore[return-value]
    if isinstance(text, (list, tuple)):
        return type(text)(swap_left_right(t) for t in text)  # type: ignore[return-value]
    raise TypeError(f"text must be a str, a list/tuple of str or None, got {type(text).__name__}")


class RandomHorizontalFlip:
    """Flip the image left-right with probability ``p``; when it flips, swap "left"/"right" in the text.

    The original BLIP uses torchvision's ``RandomHorizontalFlip()``, which flips blindly even when the caption (or
    VQA question/answer) says "left" or "right", so half of those training texts describe the mirror image. This
    class fixes that deliberately (spec section 10): with ``swap_words=True`` (default) the text passed along is
    rewritten with :func:`swap_left_right` whenever the image is flipped, and left untouched otherwise. Set
    ``swap_words=False`` to reproduce the original exactly. One draw per call (``rng.random() < p``, like
    torchvision's ``torch.rand(1) < p``).

    Args:
        p: Flip probability.
        swap_words: Swap "left"/"right" in the text of flipped samples.
    """

    def __init__(self, p: float = 0.5, swap_words: bool = True) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must lie in [0, 1], got {p}")
        self.p = float(p)
        self.swap_words = bool(swap_words)
        self._auto = WorkerSeededRandom("openblip.augment.RandomHorizontalFlip")

    def __call__(self, image: Image.Image, text: T = None, rng: Rng | None = None) -> tuple[Image.Image, T]:
        """Returns ``(image, text)``, both flipped/swapped or both unchanged."""
        r = self._auto.get() if rng is None else _check_rng(rng)
        if _random(r) < self.p:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            if self.swap_words:
                text = swap_left_right(text)
        return image, text

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p}, swap_words={self.swap_words})"


# --------------------------------------------------------------------------------------------------------------------
# RandAugment operations (uint8 HWC arrays)
# --------------------------------------------------------------------------------------------------------------------


def _as_array(image: Image.Image | np.ndarray) -> np.ndarray:
    arr = np.asarray(image) if isinstance(image, Image.Image) else image
    if arr.dtype != np.uint8 or arr.ndim != 3:
        raise ValueError(f"expected a uint8 HxWxC array or an RGB PIL image, got {arr.dtype} {arr.shape}")
    return arr


def autocontrast(image: Image.Image | np.ndarray, original: bool = False) -> np.ndarray:
    """Per-channel autocontrast with cutoff 0 (``randaugment.autocontrast_func``).

    Each channel is stretched linearly so that its minimum maps to 0 and its maximum to 255 (values truncated to
    uint8); a constant channel is left alone. This equals ``PIL.ImageOps.autocontrast(image)`` bit for bit, which
    is what the original's docstring promises.

    Args:
        original: Reproduce the original's actual output instead. It computes ``offset = -low * scale`` with
            ``low`` a numpy ``uint8`` scalar, so ``-low`` wraps to ``256 - low``: every channel whose minimum is
            above 0 comes out entirely 255 (and an image with no pure-black pixel in any channel turns white).
            Only channels that contain a 0 are stretched correctly.
    """
    arr = _as_array(image)
    out = np.empty_like(arr)
    idx = np.arange(256, dtype=np.float64)
    for c in range(arr.shape[2]):
        ch = arr[..., c]
        high, low = int(ch.max()), int(ch.min())
        if high <= low:
            out[..., c] = ch
            continue
        scale = 255.0 / (high - low)
        offset = ((-low) % 256 if original else -low) * scale
        table = np.clip(idx * scale + offset, 0, 255).astype(np.uint8)
        out[..., c] = table[ch]
    return out


def equalize(image: Image.Image | np.ndarray) -> np.ndarray:
    """Per-channel histogram equalisation (``randaugment.equalize_func`` == ``PIL.ImageOps.equalize``).

    ``step = (number of pixels - count of the highest occupied level) // 255``; if 0 the channel is unchanged,
    otherwise ``lut[v] = (step // 2 + #pixels below v) // step``, clipped to 255.
    """
    arr = _as_array(image)
    out = np.empty_like(arr)
    for c in range(arr.shape[2]):
        ch = arr[..., c]
        hist = np.bincount(ch.ravel(), minlength=256).astype(np.int64)
        nonzero = hist[hist != 0]
        step = int(nonzero[:-1].sum()) // 255
        if step == 0:
            out[..., c] = ch
            continue
        n = np.empty(256, dtype=np.int64)
        n[0] = step // 2
        n[1:] = hist[:-1]
        table = np.clip(np.cumsum(n) // step, 0, 255).astype(np.uint8)
        out[..., c] = table[ch]
    return out


def brightness(image: Image.Image | np.ndarray, factor: float) -> np.ndarray:
    """``randaugment.brightness_func``: ``uint8(clip(v * factor))`` (float32, truncated). Identity at 1.0."""
    arr = _as_array(image)
    table = (np.arange(256, dtype=np.float32) * np.float32(factor)).clip(0, 255).astype(np.uint8)
    return table[arr]


def _smooth_3x3(arr: np.ndarray) -> np.ndarray:
    """``cv2.filter2D(img, -1, [[1,1,1],[1,5,1],[1,1,1]] / 13)``: reflect-101 border, rounded to uint8."""
    p = np.pad(arr.astype(np.float32), ((1, 1), (1, 1), (0, 0)), mode="reflect")
    h, w = arr.shape[:2]
    acc = np.zeros(arr.shape, dtype=np.float32)
    for dy in range(3):
        for dx in range(3):
            acc += p[dy : dy + h, dx : dx + w]
    acc += 4.0 * arr.astype(np.float32)
    return np.clip(np.rint(acc / 13.0), 0, 255).astype(np.uint8)


def sharpness(image: Image.Image | np.ndarray, factor: float) -> np.ndarray:
    """``randaugment.sharpness_func``: blend with a 3x3 smoothed image on the interior (borders kept).

    Identity at ``factor == 1.0`` (BLIP's M=5), the smoothed image (borders included) at 0.0. For other factors the
    original casts the blend to uint8 without clipping (wrapping around for factors > 1); this clips to [0, 255].
    """
    arr = _as_array(image)
    if factor == 1.0:
        return arr.copy()
    degenerate = _smooth_3x3(arr)
    if factor == 0.0:
        return degenerate
    if arr.shape[0] < 3 or arr.shape[1] < 3:
        return arr.copy()
    out = arr.astype(np.float32)
    d = degenerate.astype(np.float32)[1:-1, 1:-1]
    out[1:-1, 1:-1] = d + np.float32(factor) * (out[1:-1, 1:-1] - d)
    return np.clip(out, 0, 255).astype(np.uint8)


def _invert_affine(m: np.ndarray) -> np.ndarray:
    """``cv2.invertAffineTransform`` in double precision."""
    m = m.astype(np.float64)
    d = m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0]
    d = 1.0 / d if d != 0 else 0.0
    a11, a22 = m[1, 1] * d, m[0, 0] * d
    a12, a21 = -m[0, 1] * d, -m[1, 0] * d
    b1 = -a11 * m[0, 2] - a12 * m[1, 2]
    b2 = -a21 * m[0, 2] - a22 * m[1, 2]
    return np.array([[a11, a12, b1], [a21, a22, b2]], dtype=np.float64)


def warp_affine(image: Image.Image | np.ndarray, matrix: np.ndarray, fill: Sequence[int] = _FILL) -> np.ndarray:
    """``cv2.warpAffine(img, matrix, (W, H), flags=INTER_LINEAR, borderMode=BORDER_CONSTANT, borderValue=fill)``.

    ``matrix`` is the 2x3 forward map in OpenCV's convention (pixel centres at integer coordinates): the output pixel
    at ``matrix @ (x, y, 1)`` takes the input pixel ``(x, y)``. Re-implemented in numpy following OpenCV's classic
    fixed-point path: the inverse map is evaluated in steps of 1/1024 px (``cvRound``), quantised to a 1/32-pixel
    grid, bilinear weights are exact multiples of 2^-15, results rounded half up; samples whose 2x2 neighbourhood
    leaves the image blend with ``fill`` (a one-pixel soft edge), those entirely outside are ``fill``.

    Why not Pillow's ``Image.transform``: Pillow *truncates* interpolated values (a -0.5 grey-level bias on every
    interpolated pixel) and cuts the border hard instead of blending it with the fill colour. This follows OpenCV's
    reference C++ algorithm; it has not been compared bit for bit with an OpenCV build (openblip does not depend on
    OpenCV), whose vectorised or IPP code paths may differ in rare roundings.
    """
    arr = _as_array(image)
    h, w, cn = arr.shape
    inv = _invert_affine(np.asarray(matrix))
    ab_bits, inter_bits = 10, 5
    ab_scale = 1 << ab_bits
    round_delta = ab_scale // (1 << inter_bits) // 2
    xs = np.arange(w, dtype=np.float64)
    ys = np.arange(h, dtype=np.float64)
    adelta = np.rint(inv[0, 0] * xs * ab_scale).astype(np.int64)
    bdelta = np.rint(inv[1, 0] * xs * ab_scale).astype(np.int64)
    x0 = np.rint((inv[0, 1] * ys + inv[0, 2]) * ab_scale).astype(np.int64) + round_delta
    y0 = np.rint((inv[1, 1] * ys + inv[1, 2]) * ab_scale).astype(np.int64) + round_delta
    X = (x0[:, None] + adelta[None, :]) >> (ab_bits - inter_bits)
    Y = (y0[:, None] + bdelta[None, :]) >> (ab_bits - inter_bits)
    sx, fx = X >> inter_bits, (X & ((1 << inter_bits) - 1)).astype(np.int32)
    sy, fy = Y >> inter_bits, (Y & ((1 << inter_bits) - 1)).astype(np.int32)

    fill_arr = np.asarray(fill, dtype=np.int32).reshape(-1)
    if fill_arr.size == 1:
        fill_arr = np.repeat(fill_arr, cn)
    fill_arr = np.clip(fill_arr[:cn], 0, 255)
    outside = (sx >= w) | (sx < -1) | (sy >= h) | (sy < -1)
    # planar copy padded by one fill pixel on every side, so that neighbours at -1 or W/H read the fill value
    pw = w + 2
    padded = np.empty((cn, h + 2, pw), dtype=np.int32)
    padded[:] = fill_arr[:, None, None]
    padded[:, 1:-1, 1:-1] = np.moveaxis(arr, 2, 0)
    flat = padded.reshape(cn, -1)
    i00 = (np.clip(sy, -1, h - 1) + 1) * pw + (np.clip(sx, -1, w - 1) + 1)
    i01, i10, i11 = i00 + 1, i00 + pw, i00 + pw + 1
    # OpenCV's weights are (32 - fx) * (32 - fy) * 32 etc. (summing to 2^15); the separable form is the same sum
    gx, gy = 32 - fx, 32 - fy
    out = np.empty((h, w, cn), dtype=np.uint8)
    for c in range(cn):
        f = flat[c]
        top = f[i00] * gx + f[i01] * fx
        bottom = f[i10] * gx + f[i11] * fx
        val = ((top * gy + bottom * fy) * 32 + (1 << 14)) >> 15
        val[outside] = fill_arr[c]
        out[..., c] = np.clip(val, 0, 255)
    return out


def shear_x(image: Image.Image | np.ndarray, factor: float, fill: Sequence[int] = _FILL) -> np.ndarray:
    """``randaugment.shear_x_func``: the pixel at ``(x, y)`` moves to ``(x + factor * y, y)``."""
    m = np.array([[1, factor, 0], [0, 1, 0]], dtype=np.float32)  # float32 like the original
    return warp_affine(image, m, fill)


def shear_y(image: Image.Image | np.ndarray, factor: float, fill: Sequence[int] = _FILL) -> np.ndarray:
    """``randaugment.shear_y_func``: the pixel at ``(x, y)`` moves to ``(x, y + factor * x)``."""
    m = np.array([[1, 0, 0], [factor, 1, 0]], dtype=np.float32)
    return warp_affine(image, m, fill)


def translate_x(image: Image.Image | np.ndarray, offset: float, fill: Sequence[int] = _FILL) -> np.ndarray:
    """``randaugment.translate_x_func``: content moves ``offset`` pixels to the **left** (right if negative)."""
    m = np.array([[1, 0, -offset], [0, 1, 0]], dtype=np.float32)
    return warp_affine(image, m, fill)


def translate_y(image: Image.Image | np.ndarray, offset: float, fill: Sequence[int] = _FILL) -> np.ndarray:
    """``randaugment.translate_y_func``: content moves ``offset`` pixels **up** (down if negative)."""
    m = np.array([[1, 0, 0], [0, 1, -offset]], dtype=np.float32)
    return warp_affine(image, m, fill)


def rotate(image: Image.Image | np.ndarray, degree: float, fill: Sequence[int] = _FILL) -> np.ndarray:
    """``randaugment.rotate_func``: rotate ``degree`` degrees counter-clockwise about ``(W/2, H/2)``.

    The matrix is ``cv2.getRotationMatrix2D((W/2, H/2), degree, 1)``; note that OpenCV's ``(W/2, H/2)`` is half a
    pixel right of and below the true centre ``((W-1)/2, (H-1)/2)``, which this keeps.
    """
    arr = _as_array(image)
    h, w = arr.shape[:2]
    cx, cy = float(np.float32(w / 2)), float(np.float32(h / 2))
    angle = math.radians(degree)
    alpha, beta = math.cos(angle), math.sin(angle)
    m = np.array(
        [[alpha, beta, (1 - alpha) * cx - beta * cy], [-beta, alpha, beta * cx + (1 - alpha) * cy]],
        dtype=np.float64,
    )
    return warp_affine(arr, m, fill)


def _identity(image: Image.Image | np.ndarray) -> np.ndarray:
    return _as_array(image)


# --------------------------------------------------------------------------------------------------------------------
# RandomAugment
# --------------------------------------------------------------------------------------------------------------------


def _signed(level: float, rng: Rng, negate_if_above: bool) -> float:
    u = _random(rng)
    if (u > 0.5) if negate_if_above else (u < 0.5):
        return -level
    return level


def _level_to_args(name: str, m: float, rng: Rng) -> tuple[float, ...]:
    """``randaugment.arg_dict`` (MAX_LEVEL 10, translate_const 10)."""
    if name in ("Identity", "AutoContrast", "Equalize"):
        return ()
    if name in ("Brightness", "Sharpness"):
        return ((m / _MAX_LEVEL) * 1.8 + 0.1,)
    if name in ("ShearX", "ShearY"):
        return (_signed((m / _MAX_LEVEL) * 0.3, rng, negate_if_above=True),)
    if name in ("TranslateX", "TranslateY"):
        return (_signed((m / _MAX_LEVEL) * float(_TRANSLATE_CONST), rng, negate_if_above=True),)
    if name == "Rotate":
        return (_signed((m / _MAX_LEVEL) * 30, rng, negate_if_above=False),)
    raise KeyError(name)


class RandomAugment:
    """BLIP's ``RandomAugment(N, M, isPIL=True, augs=...)`` (``transform/randaugment.py``).

    Per call: draw ``N`` operation names uniformly **with replacement** from ``augs``; then for each, skip it unless
    ``u <= 0.5`` (``np.random.random() > prob`` skips), and draw its argument at magnitude ``M`` (MAX_LEVEL 10):

    ============================ ======================================================================
    Identity, AutoContrast,       no argument (AutoContrast: per channel, cutoff 0; see :func:`autocontrast`)
    Equalize
    Brightness, Sharpness         factor ``M/10 * 1.8 + 0.1`` -- exactly **1.0, a no-op, at M=5**
    ShearX, ShearY                ``+-M/10 * 0.3`` (+-0.15 at M=5), sign negative if ``u > 0.5``
    TranslateX, TranslateY        ``+-M/10 * 10`` **pixels** (+-5 px at M=5, whatever the image size)
    Rotate                        ``+-M/10 * 30`` degrees (+-15 at M=5), sign negative if ``u < 0.5``
    ============================ ======================================================================

    Geometric operations fill with ``(128, 128, 128)`` and use :func:`warp_affine` (OpenCV ``INTER_LINEAR``
    semantics). The draws follow the original's order (names first, then per operation: apply?, sign), from ``rng``
    instead of numpy's global RNG.

    Args:
        N: Number of operations drawn per image.
        M: Magnitude, 0..10.
        augs: Operation names (default: BLIP's ten, :data:`BLIP_AUGS`).
        fill: Fill colour of the geometric operations.
        original_autocontrast: Reproduce the original AutoContrast bug (channels without a 0 turn 255; see
            :func:`autocontrast`). Default ``False``: the intended, Pillow-equal AutoContrast.

    Calling returns a uint8 ``HxWx3`` numpy array, like the original with ``isPIL=True``.
    """

    def __init__(
        self,
        N: int = 2,
        M: float = 5,
        augs: Sequence[str] = BLIP_AUGS,
        fill: Sequence[int] = _FILL,
        original_autocontrast: bool = False,
    ) -> None:
        if N < 0:
            raise ValueError(f"N must be >= 0, got {N}")
        self.N = int(N)
        self.M = M
        self.augs = tuple(augs) if augs else BLIP_AUGS
        unknown = [a for a in self.augs if a not in BLIP_AUGS]
        if unknown:
            raise ValueError(f"unsupported augmentation(s) {unknown}; available: {list(BLIP_AUGS)}")
        self.fill = tuple(int(v) for v in fill)
        self.original_autocontrast = bool(original_autocontrast)
        self._auto = WorkerSeededRandom("openblip.augment.RandomAugment")

    def sample_ops(self, rng: Rng) -> list[tuple[str, tuple[float, ...]]]:
        """Draw the operations one call applies, in order, with their arguments (skipped ones left out)."""
        rng = _check_rng(rng)
        names = [self.augs[_randrange(rng, len(self.augs))] for _ in range(self.N)]
        ops = []
        for name in names:
            if _random(rng) > 0.5:
                continue
            ops.append((name, _level_to_args(name, self.M, rng)))
        return ops

    def apply_op(self, image: Image.Image | np.ndarray, name: str, args: tuple[float, ...]) -> np.ndarray:
        """Apply one named operation with explicit arguments."""
        if name == "AutoContrast":
            return autocontrast(image, original=self.original_autocontrast)
        fn: Callable[..., np.ndarray] = {
            "Identity": _identity,
            "Equalize": equalize,
            "Brightness": brightness,
            "Sharpness": sharpness,
        }.get(name)  # type: ignore[assignment]
        if fn is not None:
            return fn(image, *args)
        geometric = {
            "ShearX": shear_x,
            "ShearY": shear_y,
            "TranslateX": translate_x,
            "TranslateY": translate_y,
            "Rotate": rotate,
        }
        if name not in geometric:
            raise ValueError(f"unknown augmentation {name!r}")
        return geometric[name](image, *args, fill=self.fill)

    def __call__(self, image: Image.Image | np.ndarray, rng: Rng | None = None) -> np.ndarray:
        r = self._auto.get() if rng is None else rng
        arr = _as_array(image)
        for name, args in self.sample_ops(r):
            arr = self.apply_op(arr, name, args)
        return arr

    def __repr__(self) -> str:
        return f"{type(self).__name__}(N={self.N}, M={self.M}, augs={list(self.augs)})"


# --------------------------------------------------------------------------------------------------------------------
# The full train transform
# --------------------------------------------------------------------------------------------------------------------


def _normalize(arr: np.ndarray, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """torchvision ``ToTensor`` + ``Normalize``: HWC uint8 -> CHW float32 / 255, minus mean, over std."""
    x = torch.from_numpy(np.array(arr, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()
    x = x.to(torch.float32).div(255)
    return x.sub_(mean).div_(std)


class TrainTransform:
    """BLIP's training transform on an ``(image, text)`` pair; see :func:`train_transform`.

    ``accepts_text = True`` tells openblip's datasets to pass the text along (and use the text it returns).
    Picklable (usable in ``DataLoader`` workers).
    """

    accepts_text = True

    def __init__(
        self,
        image_size: int,
        min_scale: float = 0.5,
        randaug: bool = True,
        *,
        max_scale: float = 1.0,
        swap_words: bool = True,
        flip_p: float = 0.5,
        randaug_n: int = 2,
        randaug_m: float = 5,
        original_autocontrast: bool = False,
        mean: Sequence[float] = CLIP_MEAN,
        std: Sequence[float] = CLIP_STD,
        rng: Rng | None = None,
    ) -> None:
        self.image_size = _pair(image_size)
        self.crop = RandomResizedCrop(image_size, scale=(min_scale, max_scale))
        self.flip = RandomHorizontalFlip(flip_p, swap_words=swap_words)
        self.augment = (
            RandomAugment(randaug_n, randaug_m, original_autocontrast=original_autocontrast) if randaug else None
        )
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("mean and std need 3 values each")
        self.rng = None if rng is None else _check_rng(rng)
        self._auto = WorkerSeededRandom("openblip.augment.TrainTransform")

    def __call__(self, image: Image.Image, text: T = None, rng: Rng | None = None) -> tuple[torch.Tensor, T]:
        """Transform one pair.

        Args:
            image: An RGB PIL image (anything else goes through :func:`openblip.image.load_image`).
            text: The caption, question, a list of strings (e.g. question and answers) or ``None``; "left"/"right"
                are swapped in it when the image is flipped.
            rng: Randomness for this call; default: the ``rng`` given at construction, else a generator seeded
                from :func:`torch.initial_seed` (see :class:`WorkerSeededRandom`).

        Returns:
            ``(tensor [3, S, S] float32, text)``.
        """
        r = rng if rng is not None else (self.rng if self.rng is not None else self._auto.get())
        _check_rng(r)
        img = self.crop(_rgb(image), rng=r)
        img, text = self.flip(img, text, rng=r)
        arr = self.augment(img, rng=r) if self.augment is not None else np.asarray(img)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(3, 1, 1)
        return _normalize(arr, mean, std), text

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(crop={self.crop!r}, flip={self.flip!r}, augment={self.augment!r}, "
            f"mean={self.mean}, std={self.std})"
        )


def train_transform(
    image_size: int,
    min_scale: float = 0.5,
    randaug: bool = True,
    *,
    swap_words: bool = True,
    original_autocontrast: bool = False,
    rng: Rng | None = None,
) -> TrainTransform:
    """BLIP's training transform: ``(PIL image, text) -> (tensor [3, S, S], text)``.

    RandomResizedCrop(S, scale=(min_scale, 1), bicubic) -> RandomHorizontalFlip(0.5) with "left"/"right" swapped
    in the text of flipped samples -> RandomAugment(2, 5) (if ``randaug``) -> ``/255`` -> CLIP normalisation.

    Args:
        image_size: Output side ``S`` (384 for most fine-tuning, 480 VQA, 224 pre-training).
        min_scale: Smallest crop area fraction: 0.5 for fine-tuning, 0.2 for pre-training.
        randaug: Apply :class:`RandomAugment`.
        swap_words: Swap "left"/"right" in flipped samples' text (``False``: the original's blind flip).
        original_autocontrast: Reproduce the original's AutoContrast bug (see :func:`autocontrast`).
        rng: A fixed source of randomness (deterministic given its seed; with several ``DataLoader`` workers every
            worker gets a copy of the same state, so prefer the default). Default: per-process generators seeded
            from :func:`torch.initial_seed`.
    """
    return TrainTransform(
        image_size,
        min_scale,
        randaug,
        swap_words=swap_words,
        original_autocontrast=original_autocontrast,
        rng=rng,
    )
