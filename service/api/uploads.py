"""Reading an image from a request: raw body or multipart field `file`, size-capped while reading."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from pathlib import PurePath

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from xray.contract.decoders import DECODERS, MEDIA_TYPES, SUFFIXES, ImageFormat, never_gone
from xray.contract.errors import (
    InvalidImageError,
    InvalidParametersError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
)

FORM_FIELD = "file"
# Room for the multipart boundaries and part headers around a file of the maximum size.
_MULTIPART_OVERHEAD = 64 * 1024
_ACCEPTED = (
    f"send the image as the request body with Content-Type "
    f"{', '.join(decoder.media_types[0] for decoder in DECODERS.values())}, "
    f"or as the multipart/form-data field `{FORM_FIELD}`"
)


@dataclass(frozen=True)
class Upload:
    """An uploaded file's bytes and the format its sender declared (None when unknown).

    `client_gone` turns true once the client has disconnected, so that queued work can be skipped.
    """

    data: bytes
    declared: ImageFormat | None
    client_gone: Callable[[], bool] = never_gone


def media_type(content_type: str | None) -> str:
    """The bare, lower-case media type of a Content-Type header value."""
    return (content_type or "").split(";", 1)[0].strip().lower()


async def read_capped(request: Request, limit: int) -> bytes:
    """Read the request body, refusing it as soon as it exceeds `limit` bytes.

    A declared Content-Length over the limit is refused before anything is read; a chunked or
    lying body is refused at the first chunk that crosses the limit, so an oversized upload
    never sits in memory whole.

    Raises:
        PayloadTooLargeError: More than `limit` bytes.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"the body has {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise PayloadTooLargeError(f"the body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _declared_part_format(part: UploadFile) -> ImageFormat | None:
    declared = MEDIA_TYPES.get(media_type(part.content_type))
    if declared is None and part.filename:
        # Browsers label .dcm files application/octet-stream; the suffix is the only hint, and
        # the bytes' own signature still wins when there is one.
        declared = SUFFIXES.get(PurePath(part.filename).suffix.lower())
    return declared


async def _parse_multipart(request: Request, body: bytes, limit: int) -> Upload:
    async def replay() -> AsyncGenerator[bytes, None]:
        yield body

    parser = MultiPartParser(request.headers, replay(), max_files=1, max_fields=8)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise InvalidImageError(f"malformed multipart/form-data body: {exc.message}") from exc
    try:
        part = form.get(FORM_FIELD)
        if not isinstance(part, UploadFile):
            raise InvalidParametersError(f"the multipart body has no file field `{FORM_FIELD}`; {_ACCEPTED}")
        data = await part.read()
        if len(data) > limit:
            raise PayloadTooLargeError(f"the file has {len(data)} bytes; the limit is {limit}")
        return Upload(data=data, declared=_declared_part_format(part))
    finally:
        await form.close()


async def read_image_upload(request: Request, limit: int) -> Upload:
    """Read the image a client sent, in either of the two accepted shapes.

    Args:
        request: The incoming request.
        limit: Largest file accepted, in bytes.

    Raises:
        UnsupportedMediaTypeError: Neither an accepted image type nor multipart/form-data.
        PayloadTooLargeError: Over `limit` bytes.
        InvalidParametersError: A multipart body without the `file` field.
        InvalidImageError: A malformed multipart body or an empty upload.
    """
    media = media_type(request.headers.get("content-type"))
    if media == "multipart/form-data":
        body = await read_capped(request, limit + _MULTIPART_OVERHEAD)
        upload = await _parse_multipart(request, body, limit)
    elif media in MEDIA_TYPES:
        upload = Upload(data=await read_capped(request, limit), declared=MEDIA_TYPES[media])
    else:
        shown = media or "no Content-Type"
        raise UnsupportedMediaTypeError(f"{shown} is not accepted; {_ACCEPTED}")
    if not upload.data:
        raise InvalidImageError("the upload is empty")
    return upload
