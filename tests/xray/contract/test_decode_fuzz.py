"""Property-based fuzzing of the decoders: any bytes give an image or a client error, never a crash.

Random bytes rarely get past a format's signature, so most examples start from valid PNG, JPEG
and DICOM files and corrupt them: truncation, flipped bytes, spliced garbage. Whatever comes
out, `decode_image` either returns an 8-bit grayscale image or raises a `RequestError` (a 4xx);
anything else would be a 500 in the service.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.factories import dicom_bytes, gradient, jpeg_bytes, png_bytes
from xray.contract.decoders import ImageFormat
from xray.contract.errors import RequestError
from xray.contract.images import DecodedImage
from xray.contract.preprocessing import decode_image

SEEDS = {
    "png": png_bytes(gradient(24, 20)),
    "png16": png_bytes(gradient(24, 20).astype(np.uint16) * 257),
    "jpeg": jpeg_bytes(gradient(24, 20)),
    "dicom": dicom_bytes(gradient(24, 20).astype(np.uint16) * 16),
    "dicom-mono1-windowed": dicom_bytes(
        gradient(24, 20).astype(np.uint16) * 16, photometric="MONOCHROME1", window=(2048.0, 4096.0)
    ),
}
DECLARED = st.sampled_from([None, ImageFormat.PNG, ImageFormat.JPEG, ImageFormat.DICOM])


@st.composite
def corrupted(draw: st.DrawFn) -> bytes:
    """A valid file with one to three corruptions."""
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["truncate", "flip", "splice", "overwrite"]))
        position = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "truncate":
            del data[position:]
        elif kind == "flip" and data:
            data[position] ^= draw(st.integers(1, 255))
        elif kind == "splice":
            data[position:position] = draw(st.binary(min_size=1, max_size=64))
        else:
            chunk = draw(st.binary(min_size=1, max_size=16))
            data[position : position + len(chunk)] = chunk
    return bytes(data)


def decodes_or_refuses(data: bytes, declared: ImageFormat | None) -> None:
    refusal: RequestError | None = None
    try:
        image = decode_image(data, declared=declared, max_pixels=4_000_000)
    except RequestError as exc:
        refusal = exc
    if refusal is not None:
        assert 400 <= refusal.status < 500
        assert refusal.detail
        return
    assert isinstance(image, DecodedImage)
    assert image.pixels.dtype == np.uint8
    assert image.pixels.ndim == 2


@pytest.mark.filterwarnings("ignore")  # pydicom and Pillow warn loudly about the damage
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=corrupted(), declared=DECLARED)
def test_corrupted_files_decode_or_are_refused_with_a_4xx(data: bytes, declared: ImageFormat | None) -> None:
    decodes_or_refuses(data, declared)


@pytest.mark.filterwarnings("ignore")
@settings(max_examples=200, deadline=None)
@given(
    data=st.one_of(
        st.binary(max_size=512),
        st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"\0" * 128 + b"DICM"]).flatmap(
            lambda magic: st.binary(max_size=256).map(lambda tail: magic + tail)
        ),
    ),
    declared=DECLARED,
)
def test_random_bytes_and_bare_signatures_are_refused_with_a_4xx(
    data: bytes, declared: ImageFormat | None
) -> None:
    decodes_or_refuses(data, declared)
