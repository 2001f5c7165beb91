"""The image containers the product reads: one table entry per decoder, and the bounds of a decode.

Each `Decoder` says how its container is recognised (signature, media types, file suffixes) and
which function decodes it. The upload code, the OpenAPI document, the reference docs and the page
all read this table, so a new container is a new entry here and its own decoding module.

Decoding modules are imported on first use: a caller that reads only PNG and JPEG (training)
never loads pydicom.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from xray.contract.images import DicomReference, GrayImage

#: Default pixel limit for callers outside the service (training reads trusted files).
DEFAULT_MAX_PIXELS = 40_000_000
#: Most scans a JPEG may hold: a progressive JPEG has about ten; each scan is a pass of the decoder.
DEFAULT_MAX_SCANS = 100


def never_gone() -> bool:
    """A `stop` that never turns true: the decode of an upload whose client is not watched."""
    return False


@dataclass(frozen=True)
class DecodeLimits:
    """The bounds of one decode.

    Attributes:
        max_pixels: Largest width x height accepted, checked before the pixels are decoded.
        max_scans: Most scans a JPEG stream (or a DICOM's JPEG frame) may hold.
        max_seconds: Longest a PNG or JPEG decode may run, checked between the decoder's reads
            (None: no limit). A DICOM frame is decoded in one call, which its pixel and scan
            limits bound instead.
        stop: Returns true once the result is no longer wanted (its client has gone); checked
            where `max_seconds` is.
    """

    max_pixels: int = DEFAULT_MAX_PIXELS
    max_scans: int = DEFAULT_MAX_SCANS
    max_seconds: float | None = None
    stop: Callable[[], bool] = never_gone


DecodeFunction = Callable[[bytes, DecodeLimits], "tuple[GrayImage, DicomReference | None]"]


class ImageFormat(StrEnum):
    """Image containers the product reads (the keys of `DECODERS`)."""

    PNG = "png"
    JPEG = "jpeg"
    DICOM = "dicom"


@dataclass(frozen=True)
class Decoder:
    """One image container.

    Attributes:
        format: Its name.
        label: How people name it, in messages and documents.
        media_types: Request media types that declare it (the first is the canonical one).
        suffixes: File-name suffixes that declare it when the media type does not.
        signature: Whether bytes carry the container's own signature.
        trusted_when_declared: Decode it when declared even without a signature (a DICOM file
            without its 128-byte preamble has none).
        function: "module:function" of its decoder, `(bytes, DecodeLimits) -> (pixels, dicom UIDs)`.
    """

    format: ImageFormat
    label: str
    media_types: tuple[str, ...]
    suffixes: tuple[str, ...]
    signature: Callable[[bytes], bool]
    function: str
    trusted_when_declared: bool = False

    def decode(self, data: bytes, limits: DecodeLimits) -> tuple[GrayImage, DicomReference | None]:
        """Decode `data` with this container's decoder (imported on first use)."""
        module, _, name = self.function.partition(":")
        function: DecodeFunction = getattr(importlib.import_module(module), name)
        return function(data, limits)


DECODERS: dict[ImageFormat, Decoder] = {
    decoder.format: decoder
    for decoder in (
        Decoder(
            ImageFormat.PNG,
            "PNG",
            ("image/png",),
            (".png",),
            lambda data: data.startswith(b"\x89PNG\r\n\x1a\n"),
            "xray.contract.decoders.raster:decode_png",
        ),
        Decoder(
            ImageFormat.JPEG,
            "JPEG",
            ("image/jpeg", "image/jpg"),
            (".jpg", ".jpeg"),
            lambda data: data.startswith(b"\xff\xd8\xff"),
            "xray.contract.decoders.raster:decode_jpeg",
        ),
        Decoder(
            ImageFormat.DICOM,
            "DICOM",
            ("application/dicom",),
            (".dcm", ".dicom"),
            lambda data: data[128:132] == b"DICM",
            "xray.contract.decoders.dicom:decode",
            trusted_when_declared=True,
        ),
    )
}

#: Media types accepted as request bodies or multipart parts, mapped to their format.
MEDIA_TYPES: dict[str, ImageFormat] = {
    media_type: decoder.format for decoder in DECODERS.values() for media_type in decoder.media_types
}
#: File-name suffixes used when a multipart part is declared as application/octet-stream.
SUFFIXES: dict[str, ImageFormat] = {
    suffix: decoder.format for decoder in DECODERS.values() for suffix in decoder.suffixes
}


def accepted_labels() -> str:
    """The containers read, for messages: "PNG, JPEG or DICOM"."""
    labels = [decoder.label for decoder in DECODERS.values()]
    return ", ".join(labels[:-1]) + f" or {labels[-1]}" if len(labels) > 1 else labels[0]
