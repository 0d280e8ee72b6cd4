"""Tests for openblip.image (the loader) and openblip.transforms (BLIP's eval preprocessing)."""

from __future__ import annotations

import io
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from openblip.image import ImageLoadError, load_image, load_images
from openblip.transforms import CLIP_MEAN, CLIP_STD, EvalTransform, eval_transform, preprocess

# --------------------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------------------


def _encode(im: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _noise_rgb(w: int = 64, h: int = 48, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _px(im: Image.Image, x: int, y: int) -> tuple[int, int, int]:
    return tuple(int(v) for v in np.asarray(im)[y, x])


def _assert_rgb(im: Image.Image, size: tuple[int, int] | None = None) -> None:
    assert isinstance(im, Image.Image)
    assert im.mode == "RGB"
    if size is not None:
        assert im.size == size


def _opened(path: Path, attr: str = "mode"):
    with Image.open(path) as im:
        return getattr(im, attr)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


# --------------------------------------------------------------------------------------------------------------------
# parity with transformers' BLIP image processor on real photos
# --------------------------------------------------------------------------------------------------------------------

SKIMAGE_PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "camera"]


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    data = pytest.importorskip("skimage.data")
    return {name: Image.fromarray(getattr(data, name)()).convert("RGB") for name in SKIMAGE_PHOTOS}


def _hf_processor(size: int):
    pytest.importorskip("transformers")
    # transformers 5.x ships two BLIP processors: ``BlipImageProcessor`` (torchvision backend, unusable here: no
    # torchvision) and ``BlipImageProcessorPil`` (PIL/numpy backend). The PIL one does exactly what BLIP's test
    # transform does: PIL ``resize((S, S), BICUBIC)`` (no reducing_gap, no crop), then ``x * (1/255)`` and
    # ``(x - mean) / std`` with the OpenAI CLIP statistics. It rescales in float64 and casts to float32, where
    # torchvision (and we) divide in float32; on these photos the results are bit-identical anyway.
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    return BlipImageProcessorPil(
        size={"height": size, "width": size},
        resample=Image.Resampling.BICUBIC,
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
        do_resize=True,
        do_rescale=True,
        do_normalize=True,
    )


def test_clip_statistics_match_transformers() -> None:
    pytest.importorskip("transformers")
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    assert tuple(OPENAI_CLIP_MEAN) == CLIP_MEAN
    assert tuple(OPENAI_CLIP_STD) == CLIP_STD


@pytest.mark.parametrize("size", [384, 224])
def test_parity_with_transformers_blip_processor(photos: dict[str, Image.Image], size: int) -> None:
    processor = _hf_processor(size)
    for name, im in photos.items():
        expected = processor(images=im, return_tensors="pt")["pixel_values"]
        ours = preprocess(im, size)
        assert ours.shape == expected.shape == (1, 3, size, size), name
        assert ours.dtype == torch.float32
        diff = (ours - expected).abs().max().item()
        assert diff <= 1e-6, f"{name} @ {size}: max abs diff {diff}"


def test_parity_batch_and_array_input(photos: dict[str, Image.Image]) -> None:
    processor = _hf_processor(384)
    ims = list(photos.values())
    expected = processor(images=ims, return_tensors="pt")["pixel_values"]
    ours = preprocess([np.asarray(im) for im in ims], 384)  # numpy uint8 HxWx3 goes through load_image
    assert ours.shape == (len(ims), 3, 384, 384)
    assert (ours - expected).abs().max().item() <= 1e-6


def test_eval_transform_matches_reference_formula() -> None:
    im = _noise_rgb(37, 23)
    out = eval_transform(16)(im)
    assert out.shape == (3, 16, 16) and out.dtype == torch.float32
    ref = np.asarray(im.resize((16, 16), Image.BICUBIC)).astype(np.float32) / np.float32(255)
    ref = (ref - np.array(CLIP_MEAN, np.float32)) / np.array(CLIP_STD, np.float32)
    np.testing.assert_allclose(out.permute(1, 2, 0).numpy(), ref, atol=1e-6)


def test_eval_transform_is_a_square_resize_without_crop() -> None:
    # wide image: a red stripe in the left quarter, blue elsewhere; a center crop would lose the red entirely
    arr = np.zeros((16, 64, 3), np.uint8)
    arr[:, :16] = (255, 0, 0)
    arr[:, 16:] = (0, 0, 255)
    out = eval_transform(32)(Image.fromarray(arr))
    pixels = out * torch.tensor(CLIP_STD).view(3, 1, 1) + torch.tensor(CLIP_MEAN).view(3, 1, 1)
    assert pixels[0, :, :6].min() > 0.95  # left 8 columns (minus bicubic ringing) still red
    assert pixels[2, :, 10:].min() > 0.95


def test_eval_transform_accepts_other_inputs_and_pickles() -> None:
    t = eval_transform(8)
    rgba = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    white = t(rgba)
    np.testing.assert_allclose(white, t(Image.new("RGB", (10, 10), (255, 255, 255))))
    t2 = pickle.loads(pickle.dumps(t))
    assert isinstance(t2, EvalTransform) and t2.image_size == 8
    assert "image_size=8" in repr(t2)


# --------------------------------------------------------------------------------------------------------------------
# unusual but valid inputs
# --------------------------------------------------------------------------------------------------------------------


def test_exif_orientation_applied(tmp_path: Path) -> None:
    arr = np.zeros((32, 64, 3), np.uint8)  # h=32, w=64
    arr[:] = (0, 0, 255)
    arr[:16, :32] = (255, 0, 0)  # top-left quadrant red
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    Image.fromarray(arr).save(path, quality=95, exif=exif)

    im = load_image(path)
    _assert_rgb(im, (32, 64))  # width and height swapped
    r, g, b = _px(im, 24, 8)  # top-left went to top-right
    assert r > 200 and b < 60
    r, g, b = _px(im, 8, 8)
    assert r < 60 and b > 200
    # the orientation tag is consumed: loading the result again does not rotate it twice
    assert load_image(im).size == (32, 64)
    with Image.open(path) as lazy:
        assert load_image(lazy).size == (32, 64)
        # preprocess() sends PIL images through load_image too, so a lazily opened photo is upright as well
        torch.testing.assert_close(preprocess(lazy, 16), preprocess(path, 16), rtol=0, atol=0)


def test_palette_png_with_transparency(tmp_path: Path) -> None:
    im = Image.new("P", (4, 4), 1)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    im.putpixel((0, 0), 0)
    path = tmp_path / "palette.png"
    im.save(path, transparency=0)
    assert _opened(path) == "P"

    out = load_image(path)
    _assert_rgb(out, (4, 4))
    assert _px(out, 0, 0) == (255, 255, 255)  # transparent index -> white (convert('RGB') would give black)
    assert _px(out, 1, 1) == (255, 0, 0)


@pytest.mark.parametrize("simulate_pillow_10_0", [False, True])
def test_palette_with_rgba_palette_composited_on_white(monkeypatch: pytest.MonkeyPatch, simulate_pillow_10_0) -> None:
    if simulate_pillow_10_0:  # Image.has_transparency_data arrived in Pillow 10.1; the loader must not need it
        monkeypatch.delattr(Image.Image, "has_transparency_data", raising=False)
    rgba = Image.new("RGBA", (2, 2), (255, 0, 0, 0))
    rgba.putpixel((1, 1), (0, 0, 255, 255))
    pal = rgba.quantize()  # mode "P" with an RGBA palette and no "transparency" entry
    assert pal.mode == "P" and pal.palette.mode == "RGBA" and "transparency" not in pal.info
    out = load_image(pal)
    _assert_rgb(out, (2, 2))
    np.testing.assert_array_equal(np.asarray(out), np.asarray(load_image(rgba)))
    assert _px(out, 0, 0) == (255, 255, 255)  # fully transparent red is white, not red
    assert _px(out, 1, 1) == (0, 0, 255)
    assert pal.mode == "P" and pal.palette.mode == "RGBA"  # the input is not modified


def test_palette_png_without_transparency(tmp_path: Path) -> None:
    im = Image.new("P", (4, 4), 1)
    im.putpalette([0, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 6))
    im.putpixel((0, 0), 0)
    out = load_image(_encode(im, "PNG"))
    assert _px(out, 0, 0) == (0, 0, 0) and _px(out, 1, 1) == (0, 255, 0)


def test_la_image_composited_on_white(tmp_path: Path) -> None:
    lum = Image.new("L", (3, 1), 0)
    alpha = Image.frombytes("L", (3, 1), bytes([0, 128, 255]))
    path = tmp_path / "la.png"
    Image.merge("LA", (lum, alpha)).save(path)
    assert _opened(path) == "LA"

    out = load_image(path)
    _assert_rgb(out, (3, 1))
    assert _px(out, 0, 0) == (255, 255, 255)
    assert all(abs(v - 127) <= 1 for v in _px(out, 1, 0))  # half transparent black on white
    assert _px(out, 2, 0) == (0, 0, 0)


def test_rgba_transparent_pixel_becomes_white(tmp_path: Path) -> None:
    im = Image.new("RGBA", (2, 2), (10, 20, 30, 255))
    im.putpixel((0, 0), (0, 0, 0, 0))
    for src in (im, _encode(im, "PNG")):
        out = load_image(src)
        _assert_rgb(out, (2, 2))
        assert _px(out, 0, 0) == (255, 255, 255)
        assert _px(out, 1, 1) == (10, 20, 30)


def test_rgb_and_l_png_with_trns_chunk_composited_on_white() -> None:
    rgb = Image.new("RGB", (2, 1), (10, 20, 30))
    rgb.putpixel((0, 0), (1, 2, 3))
    out = load_image(_encode(rgb, "PNG", transparency=(1, 2, 3)))
    assert _px(out, 0, 0) == (255, 255, 255) and _px(out, 1, 0) == (10, 20, 30)
    gray = Image.new("L", (2, 1), 7)
    gray.putpixel((0, 0), 1)
    out = load_image(_encode(gray, "PNG", transparency=1))
    assert _px(out, 0, 0) == (255, 255, 255) and _px(out, 1, 0) == (7, 7, 7)


def test_16bit_png_scaled_not_clipped(tmp_path: Path) -> None:
    arr = np.array([[65535, 32768, 0, 2570, 255]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(arr).save(path)
    assert _opened(path).startswith("I")

    out = load_image(path)
    _assert_rgb(out, (5, 1))
    values = np.asarray(out)[0, :, 0].tolist()
    assert values[0] == 255
    assert abs(values[1] - 128) <= 1
    assert values[2:] == [0, 10, 1]  # 255 is dark in 16 bits, not white


@pytest.mark.parametrize("dtype", ["<u2", ">u2", "<i4"])
def test_16bit_pil_modes(dtype: str) -> None:
    arr = np.array([[65535, 32768, 0]]).astype(dtype)
    im = Image.fromarray(arr)
    assert im.mode in ("I;16", "I;16B", "I")
    out = load_image(im)
    assert np.asarray(out)[0, :, 0].tolist() == [255, 128, 0]


def test_cmyk_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path, quality=95)  # red in CMYK
    assert _opened(path) == "CMYK"
    out = load_image(path)
    _assert_rgb(out, (16, 16))
    r, g, b = _px(out, 8, 8)
    assert r > 240 and g < 15 and b < 15


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_animated_image_gives_first_frame(tmp_path: Path, fmt: str) -> None:
    if fmt == "WEBP":
        from PIL import features

        if not features.check("webp"):
            pytest.skip("Pillow built without WebP")
    frames = [Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    path = tmp_path / f"anim.{fmt.lower()}"
    extra = {"lossless": True} if fmt == "WEBP" else {}
    frames[0].save(path, fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, **extra)
    assert _opened(path, "n_frames") == 3

    out = load_image(path)
    _assert_rgb(out, (8, 8))
    r, g, b = _px(out, 4, 4)
    assert r > 240 and g < 15 and b < 15


def test_numpy_uint8_arrays() -> None:
    gray = np.full((3, 5), 77, np.uint8)
    out = load_image(gray)
    _assert_rgb(out, (5, 3))
    assert _px(out, 0, 0) == (77, 77, 77)
    assert load_image(gray[:, :, None]).size == (5, 3)  # HxWx1

    rgb = np.zeros((3, 5, 3), np.uint8)
    rgb[..., 0] = 200
    assert _px(load_image(rgb), 4, 2) == (200, 0, 0)
    assert _px(load_image(rgb[:, ::-1]), 0, 0) == (200, 0, 0)  # non-contiguous views are fine

    rgba = np.zeros((3, 5, 4), np.uint8)
    rgba[..., :3] = 9
    rgba[1:, :, 3] = 255
    out = load_image(rgba)
    assert _px(out, 0, 0) == (255, 255, 255) and _px(out, 0, 1) == (9, 9, 9)


def test_numpy_float_and_uint16_arrays() -> None:
    f = np.array([[0.0, 0.2, 0.5, 1.0]], dtype=np.float32)
    assert np.asarray(load_image(f))[0, :, 0].tolist() == [0, 51, 128, 255]
    f3 = np.stack([f, f * 0, f * 0], axis=-1).astype(np.float64)
    assert _px(load_image(f3), 3, 0) == (255, 0, 0)
    u16 = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    assert np.asarray(load_image(u16))[0, :, 0].tolist() == [0, 1, 128, 255]
    u16rgb = np.zeros((1, 2, 3), np.uint16)
    u16rgb[0, 1] = (65535, 0, 32768)
    assert _px(load_image(u16rgb), 1, 0) == (255, 0, 128)


def test_bytes_and_file_like(tmp_path: Path) -> None:
    src = _noise_rgb()
    data = _encode(src, "PNG")
    expected = np.asarray(src)
    for inp in (data, bytearray(data), memoryview(data), io.BytesIO(data)):
        out = load_image(inp)
        _assert_rgb(out, src.size)
        np.testing.assert_array_equal(np.asarray(out), expected)

    stream = io.BytesIO(data)
    stream.read(10)  # like PIL.Image.open, a file object is read from its start
    np.testing.assert_array_equal(np.asarray(load_image(stream)), expected)

    path = tmp_path / "noise.png"
    path.write_bytes(data)
    with open(path, "rb") as f:
        np.testing.assert_array_equal(np.asarray(load_image(f)), expected)
    np.testing.assert_array_equal(np.asarray(load_image(str(path))), expected)

    class NonSeekable(io.RawIOBase):
        def __init__(self, payload: bytes) -> None:
            self._inner = io.BytesIO(payload)

        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> bytes:
            return self._inner.read(n)

    np.testing.assert_array_equal(np.asarray(load_image(NonSeekable(data))), expected)


def test_pil_input_not_modified_and_fully_loaded(tmp_path: Path) -> None:
    im = Image.new("RGBA", (2, 2), (0, 0, 0, 0))
    out = load_image(im)
    assert out is not im and im.mode == "RGBA" and im.getpixel((0, 0)) == (0, 0, 0, 0)
    rgb = _noise_rgb()
    out = load_image(rgb)
    assert out is not rgb
    np.testing.assert_array_equal(np.asarray(out), np.asarray(rgb))

    path = tmp_path / "x.jpg"
    rgb.save(path)
    out = load_image(path)
    path.unlink()  # nothing is read lazily from the file later
    assert out.getpixel((0, 0)) is not None and out.tobytes()


def test_other_modes_convert(tmp_path: Path) -> None:
    for mode in ("1", "L", "YCbCr", "HSV", "F", "I", "RGBX", "RGBa", "La", "PA"):
        out = load_image(Image.new(mode, (3, 2)))
        _assert_rgb(out, (3, 2))


def test_load_images() -> None:
    data = _encode(_noise_rgb(8, 8), "PNG")
    outs = load_images([data, np.zeros((4, 4), np.uint8), Image.new("L", (2, 2))])
    assert [o.size for o in outs] == [(8, 8), (4, 4), (2, 2)]
    assert all(o.mode == "RGB" for o in outs)
    assert len(load_images(data)) == 1  # a single input is a one-element list
    assert len(load_images(iter([data, data]))) == 2


# --------------------------------------------------------------------------------------------------------------------
# bad inputs
# --------------------------------------------------------------------------------------------------------------------


def _assert_load_error(src, name: str, *reason_words: str) -> ImageLoadError:
    with pytest.raises(ImageLoadError) as info:
        load_image(src)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.source == name
    assert str(err).startswith(f"cannot load image '{name}': ")
    for word in reason_words:
        assert word in err.reason.lower(), err.reason
    return err


def test_error_message_format_and_pickle() -> None:
    err = ImageLoadError("x.jpg", "truncated file")
    assert str(err) == "cannot load image 'x.jpg': truncated file"
    again = pickle.loads(pickle.dumps(err))
    assert (again.source, again.reason, str(again)) == (err.source, err.reason, str(err))


def test_empty_inputs(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    _assert_load_error(path, str(path), "empty")
    _assert_load_error(b"", "<bytes>", "empty")
    _assert_load_error(io.BytesIO(b""), "<file>", "empty")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_files(tmp_path: Path, fmt: str) -> None:
    data = _encode(_noise_rgb(64, 64), fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: len(data) // 2])
    err = _assert_load_error(path, str(path), "truncated")
    assert isinstance(err.__cause__, OSError)
    _assert_load_error(data[: len(data) // 2], "<bytes>", "truncated")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # we never switch it on


def test_text_file_named_jpg(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("this is not an image\n" * 20)
    err = _assert_load_error(path, str(path), "not an image")
    assert err.__cause__ is not None
    _assert_load_error(b"hello world, not an image", "<bytes>", "not an image")


def test_missing_path_and_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jpg"
    _assert_load_error(missing, str(missing), "not found")
    _assert_load_error(str(missing), str(missing), "not found")
    _assert_load_error(tmp_path, str(tmp_path), "directory")
    _assert_load_error("https://example.com/cat.jpg", "https://example.com/cat.jpg", "url")


@pytest.mark.parametrize("obj", [42, None, 3.5, {"a": 1}, torch.zeros(3, 4, 4)])
def test_unsupported_types(obj) -> None:
    _assert_load_error(obj, f"<{type(obj).__name__}>", "unsupported input type")


def test_text_mode_file_object(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(_encode(_noise_rgb(4, 4), "PNG"))
    with open(path, encoding="latin-1") as f:
        _assert_load_error(f, str(path), "binary mode")


@pytest.mark.parametrize(
    "arr, word",
    [
        (np.zeros((2, 3, 5), np.uint8), "shape"),
        (np.zeros((4,), np.uint8), "shape"),
        (np.zeros((2, 2, 2), np.uint8), "shape"),
        (np.zeros((1, 4, 4, 3), np.uint8), "shape"),
        (np.zeros((0, 4, 3), np.uint8), "empty"),
        (np.zeros((4, 4), np.int32), "dtype"),
        (np.zeros((4, 4), bool), "dtype"),
        (np.full((4, 4), 200.0), "[0, 1]"),
        (np.full((4, 4), np.nan, np.float32), "nan"),
    ],
)
def test_bad_arrays(arr: np.ndarray, word: str) -> None:
    _assert_load_error(arr, "<array>", word)


def test_decompression_bomb_png_header(tmp_path: Path) -> None:
    # a ~60-byte PNG whose header claims 100000 x 100000 pixels (10^10 > 2 * MAX_IMAGE_PIXELS)
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    data = (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\0"))
        + _png_chunk(b"IEND", b"")
    )
    path = tmp_path / "bomb.png"
    path.write_bytes(data)
    limit = Image.MAX_IMAGE_PIXELS
    err = _assert_load_error(path, str(path), "decompression bomb")
    assert isinstance(err.__cause__, Image.DecompressionBombError)
    _assert_load_error(data, "<bytes>", "decompression bomb")
    assert Image.MAX_IMAGE_PIXELS == limit  # protection left as it was


def test_decompression_bomb_lowered_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.png"
    _noise_rgb(64, 64).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4096 px > 2 * 1000: Pillow raises
    _assert_load_error(path, str(path), "decompression bomb")


def test_errors_print_nothing(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.jpg"
    path.write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(ImageLoadError):
        load_image(path)
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""


def test_load_images_reports_failing_item(tmp_path: Path) -> None:
    good = _encode(_noise_rgb(4, 4), "PNG")
    with pytest.raises(ImageLoadError, match="nope.png"):
        load_images([good, tmp_path / "nope.png"])


# --------------------------------------------------------------------------------------------------------------------
# preprocess
# --------------------------------------------------------------------------------------------------------------------


def test_preprocess_inputs(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    _noise_rgb(20, 10).save(path)
    one = preprocess(path, 32)
    assert one.shape == (1, 3, 32, 32) and one.dtype == torch.float32
    with Image.open(path) as lazy:
        batch = preprocess([path, str(path), path.read_bytes(), np.asarray(load_image(path)), lazy], 32)
    assert batch.shape == (5, 3, 32, 32)
    for i in range(5):
        torch.testing.assert_close(batch[i], one[0], rtol=0, atol=0)
    half = preprocess((path,), 32, dtype=torch.float16, device="cpu")
    assert half.dtype == torch.float16 and half.shape == (1, 3, 32, 32)


def test_preprocess_tensor_passthrough() -> None:
    x = torch.randn(2, 3, 16, 16)
    assert preprocess(x, 16) is x
    torch.testing.assert_close(preprocess(x, 16, dtype=torch.float64), x.double())
    y = preprocess(x[0], 16, device=torch.device("cpu"))
    assert y.shape == (1, 3, 16, 16)
    torch.testing.assert_close(y[0], x[0])
    mixed = preprocess([x[0], np.zeros((5, 5, 3), np.uint8)], 16)
    assert mixed.shape == (2, 3, 16, 16)
    torch.testing.assert_close(mixed[0], x[0])


@pytest.mark.parametrize(
    "shape", [(2, 3, 16, 17), (1, 1, 16, 16), (3, 16), (1, 1, 3, 16, 16), (4, 3, 32, 32), (16, 16, 3)]
)
def test_preprocess_tensor_bad_shape(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError) as info:
        preprocess(torch.zeros(shape), 16)
    message = str(info.value)
    assert "[B, 3, 16, 16]" in message
    assert str(list(shape)) in message


def test_preprocess_validation() -> None:
    with pytest.raises(ValueError, match="float"):
        preprocess(torch.zeros(1, 3, 16, 16, dtype=torch.uint8), 16)
    with pytest.raises(ValueError, match="empty"):
        preprocess([], 16)
    for bad_size in (0, -3, 16.0, True):
        with pytest.raises(ValueError, match="image_size"):
            preprocess(torch.zeros(1, 3, 16, 16), bad_size)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dtype"):
        preprocess(torch.zeros(1, 3, 16, 16), 16, dtype=torch.int64)
    with pytest.raises(ImageLoadError):
        preprocess(["missing-file.jpg"], 16)


def test_postscript_is_refused_without_running_ghostscript(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """EPS would be rendered by Ghostscript; only raster formats are decoded, and the refusal names the format."""
    Image.init()
    _, accept = Image.OPEN["EPS"]

    def factory(*args, **kwargs):  # pragma: no cover - reaching it is the failure
        raise AssertionError("the EPS plugin must not parse the file")

    monkeypatch.setitem(Image.OPEN, "EPS", (factory, accept))
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nnewpath 0 0 moveto 10 10 lineto stroke\n"
    err = _assert_load_error(eps, "<bytes>")
    assert err.reason == "format EPS is not supported"
    path = tmp_path / "drawing.eps"
    path.write_bytes(eps)
    err = _assert_load_error(path, str(path))
    assert err.reason == "format EPS is not supported"
    err = _assert_load_error(io.BytesIO(eps), "<file>")
    assert err.reason == "format EPS is not supported"


@pytest.mark.parametrize("fmt", ["XBM", "MSP"])
def test_other_refused_formats_are_named(fmt: str) -> None:
    data = _encode(Image.new("1", (8, 8), 1), fmt)
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == fmt  # Pillow reads it; openblip refuses it on purpose
    err = _assert_load_error(data, "<bytes>")
    assert err.reason == f"format {fmt} is not supported"


def test_unidentified_and_corrupt_allowed_formats_keep_the_generic_reason() -> None:
    # no format claims text; a broken JPEG header is claimed by an allowed format, so no "format X" is named
    for data in (b"hello world, not an image", b"\xff\xd8\xff garbage"):
        err = _assert_load_error(data, "<bytes>", "not an image file")
        assert "is not supported" not in err.reason


# --------------------------------------------------------------------------------------------------------------------
# other raster formats Pillow reads natively
# --------------------------------------------------------------------------------------------------------------------


def _colour_blocks() -> Image.Image:
    arr = np.zeros((16, 16, 3), np.uint8)
    arr[:, :8] = (220, 30, 40)
    arr[:, 8:] = (20, 60, 230)
    return Image.fromarray(arr)


def _assert_colour_blocks(out: Image.Image, tol: int) -> None:
    _assert_rgb(out, (16, 16))
    for (x, y), want in (((3, 8), (220, 30, 40)), ((12, 8), (20, 60, 230))):
        got = _px(out, x, y)
        assert all(abs(g - w) <= tol for g, w in zip(got, want)), (got, want)


def test_avif_loads(tmp_path: Path) -> None:
    from PIL import features

    if not features.check("avif"):
        pytest.skip("this Pillow was built without AVIF support, so AVIF loading cannot be tested here")
    data = _encode(_colour_blocks(), "AVIF", quality=95)
    assert Image.open(io.BytesIO(data)).format == "AVIF"
    _assert_colour_blocks(load_image(data), tol=12)  # lossy, 4:2:0
    path = tmp_path / "photo.avif"
    path.write_bytes(data)
    _assert_colour_blocks(load_image(path), tol=12)
    # AVIF with alpha is composited on white like any other transparent image
    rgba = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    out = load_image(_encode(rgba, "AVIF", quality=95))
    assert all(v >= 245 for v in _px(out, 8, 8))


@pytest.mark.parametrize("fmt", ["QOI", "SGI", "DDS"])
def test_lossless_raster_formats_load_exactly(tmp_path: Path, fmt: str) -> None:
    src = _colour_blocks()
    data = _encode(src, fmt)
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == fmt
    path = tmp_path / f"img.{fmt.lower()}"
    path.write_bytes(data)
    for inp in (data, path):
        np.testing.assert_array_equal(np.asarray(load_image(inp)), np.asarray(src))


def test_qoi_with_alpha_composited_on_white() -> None:
    rgba = Image.new("RGBA", (2, 1), (10, 20, 30, 255))
    rgba.putpixel((0, 0), (200, 0, 0, 0))
    out = load_image(_encode(rgba, "QOI"))
    assert _px(out, 0, 0) == (255, 255, 255) and _px(out, 1, 0) == (10, 20, 30)


def _minimal_psd(arr: np.ndarray) -> bytes:
    """An uncompressed 8-bit RGB Photoshop file with no layers: just the composite image (planar channels)."""
    h, w, c = arr.shape
    header = b"8BPS" + struct.pack(">H6xHIIHH", 1, c, h, w, 8, 3)
    sections = struct.pack(">III", 0, 0, 0)  # colour mode data, image resources, layer and mask info: all empty
    return header + sections + struct.pack(">H", 0) + arr.transpose(2, 0, 1).tobytes()


def test_psd_composite_loads() -> None:
    src = np.asarray(_colour_blocks())
    data = _minimal_psd(src)
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "PSD"
    np.testing.assert_array_equal(np.asarray(load_image(data)), src)
