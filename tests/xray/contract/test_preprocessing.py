"""Decode → grayscale → resize on every container and pixel format the service accepts."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from typing import ClassVar

import numpy as np
import pytest
from PIL import Image

from tests.factories import dicom_bytes, gradient, jpeg_bytes, png_bytes
from xray.contract.decoders import DECODERS, MEDIA_TYPES, SUFFIXES, DecodeLimits, ImageFormat, accepted_labels
from xray.contract.errors import (
    ClientGoneError,
    InvalidImageError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
)
from xray.contract.images import resize_gray
from xray.contract.preprocessing import decode_image, preprocess, sniff_format


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height and whose data is a few bytes: a bomb's shape."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))


def png_16bit(values: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(values.astype(np.uint16)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_gray_png_is_read_unchanged() -> None:
    image = gradient()
    decoded = decode_image(png_bytes(image))
    assert decoded.format is ImageFormat.PNG
    np.testing.assert_array_equal(decoded.pixels, image)


def test_rgb_and_rgba_png_use_luma_and_drop_alpha() -> None:
    gray = gradient()
    rgb = np.stack([gray, gray, gray], axis=-1)
    rgba = np.concatenate([rgb, np.full((*gray.shape, 1), 17, np.uint8)], axis=-1)
    np.testing.assert_array_equal(decode_image(png_bytes(rgb)).pixels, gray)
    np.testing.assert_array_equal(decode_image(png_bytes(rgba)).pixels, gray)


def test_16bit_png_holding_an_8bit_image_gives_the_8bit_array() -> None:
    image = gradient()
    decoded = decode_image(png_16bit(image.astype(np.uint32) * 257))
    np.testing.assert_array_equal(decoded.pixels, image)


def test_12bit_data_in_a_16bit_png_uses_the_whole_range() -> None:
    values = np.array([[0, 1024, 2048, 4095]], dtype=np.uint16)
    decoded = decode_image(png_16bit(values))
    np.testing.assert_array_equal(decoded.pixels, [[0, 64, 128, 255]])


def test_jpeg_decodes_close_to_the_source() -> None:
    image = gradient()
    decoded = decode_image(jpeg_bytes(image, quality=100))
    assert decoded.format is ImageFormat.JPEG
    assert np.abs(decoded.pixels.astype(int) - image.astype(int)).max() <= 3


def test_jpeg_exif_orientation_is_applied() -> None:
    image = gradient(20, 30)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=100, exif=exif)
    assert decode_image(buffer.getvalue()).pixels.shape == (30, 20)


def test_cmyk_jpeg_is_answered() -> None:
    buffer = io.BytesIO()
    Image.new("CMYK", (16, 16), (0, 0, 0, 128)).save(buffer, format="JPEG")
    assert decode_image(buffer.getvalue()).pixels.shape == (16, 16)


def test_signature_wins_over_the_declared_type() -> None:
    image = gradient()
    decoded = decode_image(png_bytes(image), declared=ImageFormat.JPEG)
    assert decoded.format is ImageFormat.PNG


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello, not an image",
        png_bytes(gradient())[:60],
        jpeg_bytes(gradient())[:200],
        b"\xff\xd8\xff" + b"\0" * 50,
    ],
    ids=["empty", "text", "truncated-png", "truncated-jpeg", "jpeg-magic-only"],
)
def test_undecodable_bytes_are_invalid_images(data: bytes) -> None:
    with pytest.raises(InvalidImageError):
        decode_image(data)


@pytest.mark.parametrize(
    ("image_format", "name"), [("GIF", "GIF"), ("BMP", "BMP"), ("TIFF", "TIFF"), ("WEBP", "WebP")]
)
def test_other_image_formats_are_unsupported_media(image_format: str, name: str) -> None:
    buffer = io.BytesIO()
    Image.fromarray(gradient()).convert("RGB").save(buffer, format=image_format)
    with pytest.raises(UnsupportedMediaTypeError, match=name):
        decode_image(buffer.getvalue())


def test_pixel_limit_is_checked_from_the_header_before_decoding() -> None:
    bomb = png_header_only(100_000, 100_000)
    assert len(bomb) < 200
    with pytest.raises(PayloadTooLargeError, match="10000000000 pixels"):
        decode_image(bomb, max_pixels=40_000_000)


def test_pixel_limit_is_inclusive() -> None:
    image = gradient(10, 10)
    assert decode_image(png_bytes(image), max_pixels=100).pixels.shape == (10, 10)
    with pytest.raises(PayloadTooLargeError):
        decode_image(png_bytes(image), max_pixels=99)


def test_sniffing() -> None:
    assert sniff_format(png_bytes(gradient())) is ImageFormat.PNG
    assert sniff_format(jpeg_bytes(gradient())) is ImageFormat.JPEG
    assert sniff_format(b"\0" * 128 + b"DICM" + b"\0" * 10) is ImageFormat.DICOM
    assert sniff_format(b"plain text") is None


def test_resize_gives_the_model_size_and_keeps_a_flat_image_flat() -> None:
    flat = np.full((300, 200), 77, np.uint8)
    resized = resize_gray(flat, 64, 48)
    assert resized.shape == (64, 48)
    assert resized.dtype == np.uint8
    assert np.all(resized == 77)


def test_preprocess_is_decode_then_resize() -> None:
    data = png_bytes(gradient(100, 80))
    expected = resize_gray(decode_image(data).pixels, 32, 24)
    np.testing.assert_array_equal(preprocess(data, 32, 24), expected)


def test_an_unforeseen_decoder_failure_is_still_a_client_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from xray.contract.decoders import raster

    def explode(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("decoder bug")

    monkeypatch.setattr(raster, "_decode_raster", explode)
    with pytest.raises(InvalidImageError, match="PNG data cannot be decoded"):
        decode_image(png_bytes(gradient()))


def _noise(side: int) -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, (side, side), dtype=np.uint8)


@pytest.mark.parametrize("encode", [png_bytes, jpeg_bytes], ids=["png", "jpeg"])
def test_a_decode_past_its_deadline_is_stopped_between_reads(
    encode: Callable[[np.ndarray], bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = encode(_noise(1024))  # hundreds of kB: the decoder reads it in several 64 kB blocks
    decode_image(data, max_seconds=1.0)  # in time, it decodes
    clock = iter(float(second) for second in range(1000))  # every look at the clock, a second later
    monkeypatch.setattr("xray.contract.decoders.raster.time.monotonic", lambda: next(clock))
    with pytest.raises(PayloadTooLargeError, match=r"took longer than the limit of 2\.5 s"):
        decode_image(data, max_seconds=2.5)
    assert next(clock) < 10  # stopped after a few reads, not after the whole stream


@pytest.mark.parametrize("encode", [png_bytes, jpeg_bytes], ids=["png", "jpeg"])
def test_a_decode_stops_once_its_client_has_gone(encode: Callable[[np.ndarray], bytes]) -> None:
    data = encode(_noise(1024))
    asked = []

    def gone() -> bool:
        asked.append(True)
        return len(asked) >= 3  # the client leaves during the decode

    with pytest.raises(ClientGoneError):
        decode_image(data, stop=gone)
    assert len(asked) == 3


class TestDecoderTable:
    """`DECODERS` is the one list of containers: recognition, uploads and messages follow it."""

    SAMPLES: ClassVar[dict[ImageFormat, Callable[[], bytes]]] = {
        ImageFormat.PNG: lambda: png_bytes(gradient()),
        ImageFormat.JPEG: lambda: jpeg_bytes(gradient()),
        ImageFormat.DICOM: lambda: dicom_bytes(gradient().astype(np.uint16) * 16),
    }

    def test_every_container_has_a_sample_here_and_is_recognised_by_its_own_signature(self) -> None:
        assert set(self.SAMPLES) == set(DECODERS) == set(ImageFormat)
        for image_format, sample in self.SAMPLES.items():
            data = sample()
            assert [entry.format for entry in DECODERS.values() if entry.signature(data)] == [image_format]
            assert decode_image(data).format is image_format

    def test_the_media_types_and_suffixes_come_from_the_table(self) -> None:
        assert {
            media: entry.format for entry in DECODERS.values() for media in entry.media_types
        } == MEDIA_TYPES
        assert SUFFIXES[".dcm"] is ImageFormat.DICOM
        assert accepted_labels() == "PNG, JPEG or DICOM"

    def test_a_decoder_is_found_through_its_entry(self, monkeypatch: pytest.MonkeyPatch) -> None:
        calls: list[int] = []

        def fake(data: bytes, limits: DecodeLimits) -> tuple[np.ndarray, None]:
            calls.append(limits.max_pixels)
            return np.zeros((2, 3), dtype=np.uint8), None

        monkeypatch.setattr("xray.contract.decoders.raster.decode_png", fake)
        decoded = decode_image(png_bytes(gradient()), max_pixels=1234)
        assert calls == [1234]
        assert decoded.size == (2, 3)
