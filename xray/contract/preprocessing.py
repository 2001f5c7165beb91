"""Decode → grayscale → resize: the one image path shared by training and serving.

`preprocess` is the function both sides call, so a model never sees, in service, pixels that
were prepared differently from those it was trained on. It is split into its two steps,
`decode_image` (bytes → 8-bit grayscale at the original size) and `resize_gray`, only so that the
service decodes an upload once and resizes it for each model's input size.

Intensity rules, chosen so that the same radiograph gives the same array whatever its container:

* 8-bit images are used as they are.
* High-bit-depth PNGs are scaled by their *effective* bit depth, the smallest `b` with
  `max < 2**b`: `v * 255 / (2**b - 1)`, rounded. A 16-bit PNG holding an 8-bit image times 257
  gives exactly the 8-bit array, and 12-bit detector data in a 16-bit container is not crushed
  into the bottom sixteenth of the range.
* Colour is converted with ITU-R 601-2 luma (Pillow's "L"); alpha is dropped; JPEG EXIF
  orientation is applied.
* DICOM goes through the modality LUT, the VOI LUT or window, and MONOCHROME1 inversion
  (`xray.contract.decoders.dicom`).

Which container a file is, and which decoder reads it, is the table `xray.contract.decoders`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from xray.contract.decoders import (
    DECODERS,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_SCANS,
    DecodeLimits,
    ImageFormat,
    accepted_labels,
    never_gone,
)
from xray.contract.errors import InvalidImageError, RequestError, UnsupportedMediaTypeError
from xray.contract.images import DecodedImage, GrayImage, resize_gray

logger = logging.getLogger(__name__)

# Other image containers, recognised only to answer 415 rather than "not an image".
_OTHER_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"GIF87a", 0, "GIF"),
    (b"GIF89a", 0, "GIF"),
    (b"BM", 0, "BMP"),
    (b"II*\x00", 0, "TIFF"),
    (b"MM\x00*", 0, "TIFF"),
    (b"WEBP", 8, "WebP"),
    (b"\x00\x00\x00\x0cjP  ", 0, "JPEG 2000"),
)


def sniff_format(data: bytes) -> ImageFormat | None:
    """Recognise a container from its own signature (DICOM: with the 128-byte preamble)."""
    for decoder in DECODERS.values():
        if decoder.signature(data):
            return decoder.format
    return None


def _other_format(data: bytes) -> str | None:
    for signature, offset, name in _OTHER_SIGNATURES:
        if data[offset : offset + len(signature)] == signature:
            return name
    return None


def resolve_format(data: bytes, declared: ImageFormat | None) -> ImageFormat:
    """Decide how to decode `data`: the bytes' own signature wins over the declared type.

    A DICOM file without its preamble has no signature, so a declared DICOM is trusted.

    Raises:
        InvalidImageError: Empty, or neither recognisable nor declared.
        UnsupportedMediaTypeError: The bytes are another image format (GIF, TIFF, ...).
    """
    if not data:
        raise InvalidImageError("the upload is empty")
    sniffed = sniff_format(data)
    if sniffed is not None:
        return sniffed
    if declared is not None and DECODERS[declared].trusted_when_declared:
        return declared
    other = _other_format(data)
    if other is not None:
        raise UnsupportedMediaTypeError(f"{other} images are not supported; send {accepted_labels()}")
    raise InvalidImageError(f"the upload is not a {accepted_labels()} image")


def decode_image(
    data: bytes,
    *,
    declared: ImageFormat | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_scans: int = DEFAULT_MAX_SCANS,
    max_seconds: float | None = None,
    stop: Callable[[], bool] = never_gone,
) -> DecodedImage:
    """Decode an upload to 8-bit grayscale at its original size.

    Args:
        data: The file's bytes.
        declared: The format the client declared, if any; the bytes' signature wins.
        max_pixels: The bounds of this decode, as `DecodeLimits` defines them.
        max_scans: See `max_pixels`.
        max_seconds: See `max_pixels`.
        stop: See `max_pixels`.

    Returns:
        The decoded image.

    Raises:
        InvalidImageError: Empty, truncated, corrupt, or not an image.
        PayloadTooLargeError: More pixels than `max_pixels`, or decoding past `max_seconds`.
        UnsupportedMediaTypeError: An image container the service does not read.
        ClientGoneError: `stop` turned true during the decode.
    """
    image_format = resolve_format(data, declared)
    limits = DecodeLimits(max_pixels=max_pixels, max_scans=max_scans, max_seconds=max_seconds, stop=stop)
    try:
        pixels, reference = DECODERS[image_format].decode(data, limits)
        return DecodedImage(pixels=pixels, format=image_format, dicom=reference)
    except (RequestError, MemoryError):
        raise
    except Exception as exc:
        # The known failures are mapped where they happen; this keeps an unforeseen one a 400.
        logger.warning("%s decoder raised %s", image_format.value, type(exc).__name__)
        raise InvalidImageError(f"the {image_format.value.upper()} data cannot be decoded") from exc


def preprocess(
    data: bytes,
    height: int,
    width: int,
    *,
    declared: ImageFormat | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> GrayImage:
    """Decode → grayscale → resize: the model input, before the graph's own normalisation.

    Training calls this on every file; the service calls its two steps with the same arguments.

    Args:
        data: The file's bytes.
        height: The model's input height.
        width: The model's input width.
        declared: The declared format, if any.
        max_pixels: Largest width x height accepted.

    Returns:
        Array of shape (height, width), dtype uint8.
    """
    decoded = decode_image(data, declared=declared, max_pixels=max_pixels)
    return resize_gray(decoded.pixels, height, width)
