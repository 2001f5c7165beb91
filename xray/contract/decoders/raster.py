"""PNG and JPEG through Pillow: 8-bit grayscale at the original size, within the request's limits."""

from __future__ import annotations

import io
import time
import warnings
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

from xray.contract.decoders import DecodeLimits, codestream
from xray.contract.errors import ClientGoneError, InvalidImageError, PayloadTooLargeError
from xray.contract.images import DicomReference, GrayImage


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


def _decode_raster(data: bytes, pil_format: str, limits: DecodeLimits) -> GrayImage:
    max_pixels, max_seconds = limits.max_pixels, limits.max_seconds
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    try:
        with warnings.catch_warnings():
            # The pixel limit below is ours; Pillow's own bomb warning would only duplicate it.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(_WatchedBytes(data, deadline, limits.stop), formats=[pil_format]) as image:
                width, height = image.size
                if width <= 0 or height <= 0:
                    raise InvalidImageError("the image has no pixels")
                if width * height > max_pixels:
                    raise PayloadTooLargeError(
                        f"the image has {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
                    )
                image.load()
                oriented = ImageOps.exif_transpose(image) if pil_format == "JPEG" else image
                return _pil_to_gray(oriented)
    except (InvalidImageError, PayloadTooLargeError):
        raise
    except _DecodeStoppedError as stopped:
        if stopped.past_deadline:
            raise PayloadTooLargeError(
                f"decoding the {pil_format} image took longer than the limit of {max_seconds:g} s"
            ) from None
        raise ClientGoneError("the client disconnected while its image was being decoded") from None
    except Image.DecompressionBombError as exc:
        raise PayloadTooLargeError(str(exc)) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        # Pillow reports truncated and corrupt streams through this mix of exception types; the
        # problem names the kind, not the library's internals.
        raise InvalidImageError(f"the {pil_format} data cannot be decoded ({type(exc).__name__})") from exc


def decode_png(data: bytes, limits: DecodeLimits) -> tuple[GrayImage, DicomReference | None]:
    """A PNG (8 or 16 bits, gray, colour or palette) as 8-bit grayscale."""
    return _decode_raster(data, "PNG", limits), None


def decode_jpeg(data: bytes, limits: DecodeLimits) -> tuple[GrayImage, DicomReference | None]:
    """A JPEG as 8-bit grayscale, EXIF orientation applied; its scans counted before decoding."""
    # Each scan is a full pass of the decoder, so a stream of thousands is refused up front.
    codestream.check(codestream.inspect(data), max_pixels=limits.max_pixels, max_scans=limits.max_scans)
    return _decode_raster(data, "JPEG", limits), None
