"""The one image loader used everywhere in openblip.

The original BLIP code loads every image with ``Image.open(path).convert('RGB')``. That is fine for ordinary
8-bit RGB JPEGs, which make up the benchmark datasets, but it silently does the wrong thing for many files found in
the wild: EXIF-rotated phone photos come out sideways, transparent pixels turn black (or whatever colour hides
beneath them), 16-bit images are clipped to white, and truncated files can load half-grey if someone set
``ImageFile.LOAD_TRUNCATED_IMAGES``. :func:`load_image` keeps the original's result for ordinary RGB images and
handles the rest deliberately:

* EXIF orientation is applied (:func:`PIL.ImageOps.exif_transpose`).
* Anything with alpha (RGBA, LA, PA, palette images whose palette has alpha, palette or L/RGB images with a
  ``transparency`` entry, RGBA arrays) is composited on **white**.
* 16-bit images (``I;16``, ``I;16B``, ``I;16L``, ``I``) are scaled to 8 bits (``round(v / 257)``, so 65535 -> 255),
  not clipped at 255 as ``Image.convert`` does. ``I`` (32-bit) images are assumed to hold 16-bit values.
* CMYK, YCbCr, LAB, HSV, 1-bit and float (``F``) images go through Pillow's own ``convert('RGB')``.
* Animated images (GIF, APNG, WebP) give their first frame. A PIL image passed in is used at its current frame.
* The image is decoded completely (``.load()``), so truncated files fail here, not later. This module never sets
  ``ImageFile.LOAD_TRUNCATED_IMAGES`` and never touches ``Image.MAX_IMAGE_PIXELS``: Pillow's decompression-bomb
  protection stays on (images over twice the limit are refused; between one and two times it Pillow only warns).
* Only raster formats are decoded: JPEG (and MPO), PNG, WebP, GIF, BMP/DIB, TIFF, PPM, TGA, ICO, JPEG 2000, PCX,
  AVIF (if Pillow was built with it), QOI, SGI, PSD (the composite image Pillow reads, not the layers) and DDS. Other
  formats Pillow knows, in particular EPS (rendered by Ghostscript) and the other vector or scientific formats, are
  refused with "format X is not supported".

Every failure raises :class:`ImageLoadError` (a :class:`ValueError`) that names the input and the reason, with the
original exception chained as ``__cause__``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterable
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["ImageInput", "ImageLoadError", "load_image", "load_images"]

#: Everything :func:`load_image` accepts.
ImageInput = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO | Image.Image | np.ndarray

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_WHITE = (255, 255, 255, 255)


class ImageLoadError(ValueError):
    """An input could not be turned into an RGB image.

    Attributes:
        source: A printable name of the input: the path, the file object's name, or a placeholder such as
            ``"<bytes>"``, ``"<array>"``, ``"<file>"``, ``"<PIL.Image>"`` or ``"<int>"``.
        reason: Why it failed, e.g. ``"truncated file"`` or ``"file not found"``.
    """

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"cannot load image '{source}': {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.source, self.reason))


def load_image(src: ImageInput) -> Image.Image:
    """Load one image as a fully decoded RGB :class:`PIL.Image.Image`.

    Args:
        src: A path (``str`` or ``os.PathLike``); encoded image data (``bytes``, ``bytearray``, ``memoryview``); a
            binary file object (read from its start, like :func:`PIL.Image.open`); a :class:`PIL.Image.Image` (never
            modified; a new image is returned); or a numpy array of shape ``HxW``, ``HxWx1``, ``HxWx3`` or
            ``HxWx4`` with dtype ``uint8``, ``uint16`` (full 0..65535 range) or float (values in [0, 1]).

    Returns:
        A new, fully loaded image of mode ``"RGB"``, upright according to its EXIF orientation, with any
        transparency composited on white.

    Raises:
        ImageLoadError: The input is missing, empty, truncated, corrupt, not an image, too large for Pillow's
            decompression-bomb limit, of an unsupported type, or an array of unsupported shape/dtype/range.
    """
    if isinstance(src, Image.Image):
        return _convert_guarded(src, _pil_name(src))
    if isinstance(src, np.ndarray):
        return _from_array(src)
    if isinstance(src, (str, os.PathLike)):
        return _from_path(src)
    if isinstance(src, (bytes, bytearray, memoryview)):
        return _from_bytes(bytes(src), "<bytes>")
    if callable(getattr(src, "read", None)):
        return _from_file(src)
    raise ImageLoadError(
        f"<{type(src).__name__}>",
        f"unsupported input type {type(src).__name__}; expected a path, bytes, a binary file object, "
        "a PIL image or a numpy array",
    )


def load_images(srcs: Iterable[ImageInput] | ImageInput) -> list[Image.Image]:
    """Load several images with :func:`load_image`.

    Args:
        srcs: An iterable of anything :func:`load_image` accepts. A single input (a path, bytes, a file object, a
            PIL image or an array) is treated as a one-element list.

    Returns:
        The RGB images, in order.

    Raises:
        ImageLoadError: For the first input that cannot be loaded.
    """
    if _is_single_input(srcs):
        return [load_image(srcs)]  # type: ignore[arg-type]
    return [load_image(s) for s in srcs]  # type: ignore[union-attr]


def _is_single_input(obj: Any) -> bool:
    return isinstance(obj, (str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray)) or callable(
        getattr(obj, "read", None)
    )


#: Formats we decode. Vector/PostScript formats (EPS would call Ghostscript) and exotic decoders are refused, so an
#: untrusted file can only reach Pillow's ordinary raster decoders. Formats this Pillow does not register (AVIF before
#: Pillow 11.2, say) are dropped; MPO is opened by the JPEG plugin.
_WANTED_FORMATS = (
    "JPEG",
    "PNG",
    "WEBP",
    "GIF",
    "BMP",
    "TIFF",
    "MPO",
    "PPM",
    "TGA",
    "ICO",
    "JPEG2000",
    "DIB",
    "PCX",
    "AVIF",
    "QOI",
    "SGI",
    "PSD",
    "DDS",
)
Image.init()
RASTER_FORMATS = tuple(f for f in _WANTED_FORMATS if f in Image.OPEN)
#: How many leading bytes Pillow's format checks look at (``PIL.Image.open`` reads 16).
_PREFIX_LEN = 16

# --------------------------------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------------------------------


def _from_path(path: str | os.PathLike) -> Image.Image:
    fs_path = os.fspath(path)
    name = os.fsdecode(fs_path)
    if name.startswith(("http://", "https://")):
        raise ImageLoadError(name, "URLs are not supported; download the image first")
    try:
        if os.path.isdir(fs_path):
            raise ImageLoadError(name, "is a directory")
        if not os.path.exists(fs_path):
            raise ImageLoadError(name, "file not found")
        if os.path.getsize(fs_path) == 0:
            raise ImageLoadError(name, "empty file")
        with Image.open(fs_path, formats=RASTER_FORMATS) as im:
            return _convert(im)
    except ImageLoadError:
        raise
    except MemoryError:
        raise
    except Exception as e:
        raise ImageLoadError(name, _reason(e, lambda: _read_prefix(fs_path))) from e


def _read_prefix(fs_path: str | bytes) -> bytes:
    with open(fs_path, "rb") as f:
        return f.read(_PREFIX_LEN)


def _from_bytes(data: bytes, name: str) -> Image.Image:
    if not data:
        raise ImageLoadError(name, "empty data")
    try:
        with Image.open(io.BytesIO(data), formats=RASTER_FORMATS) as im:
            return _convert(im)
    except MemoryError:
        raise
    except Exception as e:
        raise ImageLoadError(name, _reason(e, lambda: data[:_PREFIX_LEN])) from e


def _from_file(f: Any) -> Image.Image:
    file_name = getattr(f, "name", None)
    name = os.fsdecode(file_name) if isinstance(file_name, (str, bytes)) else "<file>"
    try:
        try:
            f.seek(0)  # like PIL.Image.open: read the whole file, whatever its position
        except (AttributeError, OSError, ValueError):
            pass
        data = f.read()
    except MemoryError:
        raise
    except Exception as e:
        raise ImageLoadError(name, f"cannot read file object ({type(e).__name__}: {e})") from e
    if isinstance(data, str):
        raise ImageLoadError(name, "file object is in text mode; open it in binary mode ('rb')")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ImageLoadError(name, f"file object's read() returned {type(data).__name__}, not bytes")
    if not data:
        raise ImageLoadError(name, "empty file")
    return _from_bytes(bytes(data), name)


def _pil_name(im: Image.Image) -> str:
    filename = getattr(im, "filename", None)
    if isinstance(filename, (str, bytes)) and filename:
        return os.fsdecode(filename)
    return "<PIL.Image>"


def _convert_guarded(im: Image.Image, name: str) -> Image.Image:
    try:
        return _convert(im)
    except MemoryError:
        raise
    except Exception as e:
        raise ImageLoadError(name, _reason(e)) from e


def _from_array(arr: np.ndarray) -> Image.Image:
    name = "<array>"
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise ImageLoadError(name, f"unsupported array shape {tuple(arr.shape)}; expected HxW, HxWx3 or HxWx4")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageLoadError(name, f"empty array of shape {tuple(arr.shape)}")
    if arr.dtype == np.uint8:
        u8 = arr
    elif arr.dtype == np.uint16:
        u8 = _scale16(arr)
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ImageLoadError(name, "float array contains NaN or infinity")
        lo, hi = float(arr.min()), float(arr.max())
        tol = 1e-6
        if lo < -tol or hi > 1.0 + tol:
            raise ImageLoadError(
                name, f"float array values must lie in [0, 1], got [{lo:.6g}, {hi:.6g}] (scale 0..255 data to 0..1)"
            )
        u8 = np.rint(np.clip(arr.astype(np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)
    else:
        raise ImageLoadError(name, f"unsupported array dtype {arr.dtype}; expected uint8, uint16 or float")
    im = Image.fromarray(np.ascontiguousarray(u8))
    return _flatten(im)


# --------------------------------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------------------------------


def _convert(im: Image.Image) -> Image.Image:
    """Decode fully, apply EXIF orientation and flatten to RGB. Always returns a new image."""
    im.load()  # force the full decode: truncated data fails here
    upright = ImageOps.exif_transpose(im)  # a transposed image or a copy; never ``im`` itself
    out = _flatten(upright)
    out.load()
    return out


def _flatten(im: Image.Image) -> Image.Image:
    """Any mode -> RGB; 16-bit scaled to 8 bits; alpha and ``transparency`` composited on white."""
    mode = im.mode
    if mode in _SIXTEEN_BIT_MODES:
        arr = np.asarray(im)
        gray = Image.fromarray(_scale16(arr))
        trns = im.info.get("transparency")
        if isinstance(trns, int) and bool((arr == trns).any()):
            alpha = Image.fromarray(np.where(arr == trns, 0, 255).astype(np.uint8))
            return _on_white(Image.merge("RGBA", (gray, gray, gray, alpha)))
        return gray.convert("RGB")
    if _has_transparency_data(im):
        if mode == "La":  # Pillow converts La only to LA
            im = im.convert("LA")
        return _on_white(im.convert("RGBA"))
    if mode == "RGB":
        return im
    return im.convert("RGB")


def _has_transparency_data(im: Image.Image) -> bool:
    """Alpha channel, ``transparency`` entry, or a palette with alpha (``RGBA_image.quantize()`` gives one)."""
    has = getattr(im, "has_transparency_data", None)  # a property since Pillow 10.1
    if isinstance(has, bool):
        return has
    if im.mode in _ALPHA_MODES or "transparency" in im.info:  # Pillow 10.0: the same test by hand
        return True
    palette = im.palette if im.mode == "P" else None
    return palette is not None and str(palette.mode).endswith("A")


def _on_white(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGBA", rgba.size, _WHITE)
    return Image.alpha_composite(background, rgba).convert("RGB")


def _scale16(arr: np.ndarray) -> np.ndarray:
    """16-bit values (0..65535) to 8 bits: ``round(v / 257)``, so 65535 -> 255, 32768 -> 128, 257 * k -> k."""
    scaled = np.rint(arr.astype(np.float64) / 257.0)
    return np.clip(scaled, 0, 255).astype(np.uint8)


def _reason(e: BaseException, prefix: Callable[[], bytes] | None = None) -> str:
    """A short human reason for a Pillow/OS failure. ``prefix`` gives the input's first bytes, for naming a format."""
    if isinstance(e, Image.DecompressionBombError):
        return f"refused by Pillow's decompression bomb protection ({e})"
    if isinstance(e, UnidentifiedImageError):
        refused = _refused_format(prefix)
        if refused is not None:
            return refused
        return "not an image file, or an image format Pillow cannot read"
    if isinstance(e, FileNotFoundError):
        return "file not found"
    if isinstance(e, IsADirectoryError):
        return "is a directory"
    if isinstance(e, PermissionError):
        return "permission denied"
    message = str(e)
    if "truncated" in message.lower():
        return f"truncated file ({message})"
    return f"corrupt or unreadable image ({type(e).__name__}: {message})"


def _refused_format(prefix: Callable[[], bytes] | None) -> str | None:
    """Name the format of data that ``Image.open(..., formats=RASTER_FORMATS)`` refused, if Pillow can tell it.

    Only the plugins' ``accept`` checks run (cheap tests of the first 16 bytes, as in ``Image.open``); no plugin of a
    refused format parses the file. Returns ``"format X is not supported"`` for the first format Pillow would have
    tried, or None when no format claims the data or the first that does is one we accept (then the file is a corrupt
    file of that format and the generic reason fits better).
    """
    if prefix is None:
        return None
    try:
        head = prefix()
    except Exception:
        return None
    if not head:
        return None
    for fmt in Image.ID:
        entry = Image.OPEN.get(fmt)
        accept = entry[1] if entry else None
        if accept is None:
            continue  # formats without a quick check (TGA, IM, SPIDER, ...) cannot be named from the header
        try:
            result = accept(head)
        except Exception:
            continue
        if isinstance(result, str):  # Pillow knows the format but lacks the codec, e.g. AVIF without libavif
            return f"format {fmt} is not supported ({result})"
        if result:
            return None if fmt in RASTER_FORMATS else f"format {fmt} is not supported"
    return None
