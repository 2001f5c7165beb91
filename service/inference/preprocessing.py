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
  (`service.inference.dicom`).
"""

from __future__ import annotations

import io
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

from service.errors import (
    ClientGoneError,
    InvalidImageError,
    PayloadTooLargeError,
    RequestError,
    UnsupportedMediaTypeError,
)
from service.inference import codestream

logger = logging.getLogger(__name__)

GrayImage = npt.NDArray[np.uint8]

#: Default pixel limit for callers outside the service (training reads trusted files).
DEFAULT_MAX_PIXELS = 40_000_000
#: Most scans a JPEG may hold: a progressive JPEG has about ten; each scan is a pass of the decoder.
DEFAULT_MAX_SCANS = 100


def never_gone() -> bool:
    """A `stop` that never turns true: the decode of an upload whose client is not watched."""
    return False


class _WatchedBytes(io.BytesIO):
    """An upload's bytes as Pillow reads them, a block (64 KB) at a time while it decodes.

    Pillow's decoders run in C between reads, so a read is where a decode can be stopped: past
    its deadline, or once the client that sent it has gone.
    """

    def __init__(self, data: bytes, deadline: float | None, stop: Callable[[], bool]) -> None:
        super().__init__(data)
        self._deadline = deadline
        self._stop = stop

    def read(self, size: int | None = -1, /) -> bytes:
        if self._deadline is not None and time.monotonic() > self._deadline:
            raise _DecodeStoppedError(past_deadline=True)
        if self._stop():
            raise _DecodeStoppedError(past_deadline=False)
        return super().read(size)


class _DecodeStoppedError(Exception):
    """Raised from inside Pillow's read loop; mapped to a request error by `_decode_raster`."""

    def __init__(self, *, past_deadline: bool) -> None:
        super().__init__("past the decode deadline" if past_deadline else "the client has gone")
        self.past_deadline = past_deadline


class ImageFormat(StrEnum):
    """Image containers the service reads."""

    PNG = "png"
    JPEG = "jpeg"
    DICOM = "dicom"


#: Media types accepted as request bodies or multipart parts, mapped to their format.
MEDIA_TYPES: dict[str, ImageFormat] = {
    "image/png": ImageFormat.PNG,
    "image/jpeg": ImageFormat.JPEG,
    "image/jpg": ImageFormat.JPEG,
    "application/dicom": ImageFormat.DICOM,
}

#: File-name suffixes used when a multipart part is declared as application/octet-stream.
SUFFIXES: dict[str, ImageFormat] = {
    ".png": ImageFormat.PNG,
    ".jpg": ImageFormat.JPEG,
    ".jpeg": ImageFormat.JPEG,
    ".dcm": ImageFormat.DICOM,
    ".dicom": ImageFormat.DICOM,
}

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


@dataclass(frozen=True)
class DicomReference:
    """The UIDs that identify a DICOM instance; the only DICOM attributes the service echoes."""

    study_instance_uid: str | None
    series_instance_uid: str | None
    sop_instance_uid: str | None


@dataclass(frozen=True)
class DecodedImage:
    """An upload decoded to 8-bit grayscale at its original size.

    Attributes:
        pixels: Array of shape (height, width), dtype uint8.
        format: The container it came in.
        dicom: The instance's UIDs, for DICOM input only.
    """

    pixels: GrayImage
    format: ImageFormat
    dicom: DicomReference | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the original image."""
        height, width = self.pixels.shape
        return int(height), int(width)


def sniff_format(data: bytes) -> ImageFormat | None:
    """Recognise PNG, JPEG and DICOM (with the 128-byte preamble) from their first bytes."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return ImageFormat.PNG
    if data.startswith(b"\xff\xd8\xff"):
        return ImageFormat.JPEG
    if data[128:132] == b"DICM":
        return ImageFormat.DICOM
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
    if declared is ImageFormat.DICOM:
        return ImageFormat.DICOM
    other = _other_format(data)
    if other is not None:
        raise UnsupportedMediaTypeError(f"{other} images are not supported; send PNG, JPEG or DICOM")
    raise InvalidImageError("the upload is not a PNG, JPEG or DICOM image")


def _effective_bit_depth_to_uint8(values: npt.NDArray[np.integer]) -> GrayImage:
    top = int(values.max()) if values.size else 0
    if top <= 255:
        return values.astype(np.uint8)
    full_scale = (1 << top.bit_length()) - 1
    scaled = np.rint(values.astype(np.float64) * (255.0 / full_scale))
    return scaled.astype(np.uint8)


def _pil_to_gray(image: Image.Image) -> GrayImage:
    if image.mode == "L":
        return np.asarray(image, dtype=np.uint8).copy()
    if image.mode in {"I;16", "I;16L", "I;16B", "I;16N", "I"}:
        values = np.asarray(image)
        if values.ndim != 2:
            raise InvalidImageError(f"unexpected pixel layout for mode {image.mode}")
        return _effective_bit_depth_to_uint8(np.clip(values, 0, None).astype(np.int64))
    if image.mode == "F":
        raise InvalidImageError("floating-point images are not supported")
    return np.asarray(image.convert("L"), dtype=np.uint8).copy()


def _decode_raster(
    data: bytes,
    expected: ImageFormat,
    max_pixels: int,
    max_scans: int,
    max_seconds: float | None,
    stop: Callable[[], bool],
) -> GrayImage:
    pil_format = "PNG" if expected is ImageFormat.PNG else "JPEG"
    if expected is ImageFormat.JPEG:
        # Its scans are counted before decoding: each is a full pass of the decoder.
        codestream.check(codestream.inspect(data), max_pixels=max_pixels, max_scans=max_scans)
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    try:
        with warnings.catch_warnings():
            # The pixel limit below is ours; Pillow's own bomb warning would only duplicate it.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(_WatchedBytes(data, deadline, stop), formats=[pil_format]) as image:
                width, height = image.size
                if width <= 0 or height <= 0:
                    raise InvalidImageError("the image has no pixels")
                if width * height > max_pixels:
                    raise PayloadTooLargeError(
                        f"the image has {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
                    )
                image.load()
                oriented = ImageOps.exif_transpose(image) if expected is ImageFormat.JPEG else image
                return _pil_to_gray(oriented)
    except (InvalidImageError, PayloadTooLargeError):
        raise
    except _DecodeStoppedError as stopped:
        if stopped.past_deadline:
            raise PayloadTooLargeError(
                f"decoding the {expected.value.upper()} image took longer than the limit of {max_seconds:g} s"
            ) from None
        raise ClientGoneError("the client disconnected while its image was being decoded") from None
    except Image.DecompressionBombError as exc:
        raise PayloadTooLargeError(str(exc)) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        # Pillow reports truncated and corrupt streams through this mix of exception types; the
        # problem names the kind, not the library's internals.
        raise InvalidImageError(
            f"the {expected.value.upper()} data cannot be decoded ({type(exc).__name__})"
        ) from exc


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
        max_pixels: Largest width x height accepted, checked before the pixels are decoded.
        max_scans: Most scans a JPEG stream (or a DICOM's JPEG frame) may hold.
        max_seconds: Longest a PNG or JPEG decode may run, checked between the decoder's reads
            (None: no limit). A DICOM frame is decoded in one call, which its pixel and scan
            limits bound instead.
        stop: Returns true once the result is no longer wanted (its client has gone); checked
            where `max_seconds` is.

    Returns:
        The decoded image.

    Raises:
        InvalidImageError: Empty, truncated, corrupt, or not an image.
        PayloadTooLargeError: More pixels than `max_pixels`, or decoding past `max_seconds`.
        UnsupportedMediaTypeError: An image container the service does not read.
        ClientGoneError: `stop` turned true during the decode.
    """
    image_format = resolve_format(data, declared)
    try:
        if image_format is ImageFormat.DICOM:
            # Imported here so that PNG/JPEG-only callers (training) do not load pydicom.
            from service.inference.dicom import decode_dicom

            pixels, reference = decode_dicom(data, max_pixels=max_pixels, max_scans=max_scans)
            return DecodedImage(pixels=pixels, format=image_format, dicom=reference)
        return DecodedImage(
            pixels=_decode_raster(data, image_format, max_pixels, max_scans, max_seconds, stop),
            format=image_format,
        )
    except (RequestError, MemoryError):
        raise
    except Exception as exc:
        # The known failures are mapped where they happen; this keeps an unforeseen one a 400.
        logger.warning("%s decoder raised %s", image_format.value, type(exc).__name__)
        raise InvalidImageError(f"the {image_format.value.upper()} data cannot be decoded") from exc


def resize_gray(pixels: GrayImage, height: int, width: int) -> GrayImage:
    """Resize an 8-bit grayscale image to (height, width) with antialiased bilinear filtering.

    The aspect ratio is not kept: the whole radiograph fills the model's input, and a heat map
    maps back to the original by the inverse resize.
    """
    if pixels.shape == (height, width):
        return pixels
    resized = Image.fromarray(pixels).resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8).copy()


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
