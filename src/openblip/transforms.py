"""BLIP's evaluation preprocessing, without torchvision.

The original BLIP (``data/__init__.py``) builds its test transform as::

    transforms.Compose([
        transforms.Resize((image_size, image_size), interpolation=InterpolationMode.BICUBIC),
        transforms.ToTensor(),
        normalize,  # Normalize(CLIP mean, CLIP std)
    ])

That is: a plain **square** resize to ``image_size x image_size`` (aspect ratio not preserved, no center crop), with
Pillow's own bicubic filter (torchvision's ``Resize`` on a PIL image calls ``PIL.Image.resize`` and nothing else),
then ``uint8 / 255`` to float in [0, 1], then normalisation with the OpenAI CLIP statistics. The same transform is
used for captioning, retrieval, VQA and NLVR at test time (384 px for most fine-tuned checkpoints, 224 px for
pre-training). :func:`eval_transform` reproduces it step for step with Pillow and torch, so the tensors match
torchvision's bit for bit. Train-time augmentation (random resized crop, RandAugment) is not here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from openblip.image import ImageInput, load_image

__all__ = ["CLIP_MEAN", "CLIP_STD", "EvalTransform", "eval_transform", "preprocess"]

#: OpenAI CLIP's per-channel RGB mean, used by BLIP for every image (``transforms.Normalize``).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
#: OpenAI CLIP's per-channel RGB standard deviation.
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class EvalTransform:
    """BLIP's test transform: square bicubic resize, ``/255``, CLIP normalisation.

    Instances are picklable (usable in ``DataLoader`` workers).

    Args:
        image_size: Output side length ``S``.
        mean: Per-channel mean subtracted after scaling to [0, 1].
        std: Per-channel standard deviation divided by.
    """

    def __init__(
        self,
        image_size: int,
        mean: Sequence[float] = CLIP_MEAN,
        std: Sequence[float] = CLIP_STD,
    ) -> None:
        self.image_size = _check_size(image_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"mean and std need 3 values each, got {len(self.mean)} and {len(self.std)}")

    def __call__(self, image: Image.Image | ImageInput) -> torch.Tensor:
        """Transform one image.

        Args:
            image: An RGB PIL image, used as given (like torchvision: no EXIF handling; load files with
                :func:`openblip.image.load_image`, as :func:`preprocess` does). Anything else (another mode, a path,
                bytes, an array, ...) goes through :func:`openblip.image.load_image` first.

        Returns:
            A float32 tensor of shape ``[3, S, S]``.
        """
        if not isinstance(image, Image.Image) or image.mode != "RGB":
            image = load_image(image)
        size = self.image_size
        # torchvision: Resize((S, S), BICUBIC) on PIL == PIL.Image.resize((S, S), BICUBIC)
        resized = image.resize((size, size), Image.Resampling.BICUBIC)
        # torchvision: ToTensor == HWC uint8 -> CHW float / 255
        x = torch.from_numpy(np.array(resized, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()
        x = x.to(torch.float32).div(255)
        # torchvision: Normalize == (x - mean[:, None, None]) / std[:, None, None], in float32
        mean = torch.tensor(self.mean, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(3, 1, 1)
        return x.sub_(mean).div_(std)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(image_size={self.image_size}, mean={self.mean}, std={self.std})"


def eval_transform(image_size: int) -> EvalTransform:
    """The original BLIP test transform for ``image_size``.

    Args:
        image_size: Output side length ``S`` (e.g. 384 or 224).

    Returns:
        A callable mapping a PIL image to a float32 tensor ``[3, S, S]``: square bicubic resize (no crop, aspect
        ratio not kept), scale to [0, 1], normalise with :data:`CLIP_MEAN` / :data:`CLIP_STD`.
    """
    return EvalTransform(image_size)


def preprocess(
    images: ImageInput | torch.Tensor | Sequence[ImageInput | torch.Tensor],
    image_size: int,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Turn one or more images into a model-ready batch.

    Args:
        images: One input or a list/tuple of inputs that :func:`openblip.image.load_image` accepts (every one goes
            through it, so EXIF orientation and transparency are handled even for PIL images); or already
            preprocessed float tensors, ``[B, 3, S, S]`` / ``[3, S, S]`` (alone or as list items), which are passed
            through unchanged apart from device/dtype.
        image_size: The model's input size ``S``.
        device: Where to put the result (default: CPU, or the input tensor's device).
        dtype: Floating dtype of the result (default: float32, or the input tensor's dtype).

    Returns:
        A tensor of shape ``[B, 3, S, S]``.

    Raises:
        ValueError: A tensor of the wrong shape or dtype, an empty list, or a bad ``image_size``/``dtype``.
        openblip.image.ImageLoadError: An input cannot be loaded.
    """
    size = _check_size(image_size)
    if dtype is not None and not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating point dtype, got {dtype}")
    if isinstance(images, torch.Tensor):
        batch = _check_tensor(images, size)
    else:
        items = list(images) if isinstance(images, (list, tuple)) else [images]
        if not items:
            raise ValueError("preprocess() got an empty list of images")
        transform = EvalTransform(size)
        parts = [
            _check_tensor(item, size) if isinstance(item, torch.Tensor) else transform(load_image(item)).unsqueeze(0)
            for item in items
        ]
        if len(parts) == 1:
            batch = parts[0]
        else:
            batch = torch.cat([p.to(device=device, dtype=dtype) for p in parts], dim=0)
    return batch.to(device=device, dtype=dtype)


def _check_size(image_size: int) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size <= 0:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    return int(image_size)


def _check_tensor(t: torch.Tensor, size: int) -> torch.Tensor:
    """Validate a preprocessed tensor and return it as ``[B, 3, S, S]``."""
    expected = f"[B, 3, {size}, {size}] or [3, {size}, {size}]"
    shape = tuple(t.shape)
    if t.ndim not in (3, 4):
        raise ValueError(f"expected a preprocessed image tensor of shape {expected}, got shape {list(shape)}")
    if not t.is_floating_point():
        raise ValueError(
            f"expected a preprocessed float tensor of shape {expected}, got dtype {t.dtype} (shape {list(shape)}); "
            "pass raw images as PIL images, numpy arrays, paths or bytes instead"
        )
    if t.shape[-3] != 3 or t.shape[-2] != size or t.shape[-1] != size:
        raise ValueError(f"expected a preprocessed image tensor of shape {expected}, got shape {list(shape)}")
    return t.unsqueeze(0) if t.ndim == 3 else t
