"""Compressed streams are read before they are decoded: declared size, container match, scan count."""

from __future__ import annotations

import io
import struct
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from pydicom import encaps

from tests.factories import jpeg_bytes
from xray.contract.decoders import codestream
from xray.contract.decoders.dicom import decode_dicom
from xray.contract.errors import InvalidImageError, PayloadTooLargeError
from xray.contract.preprocessing import decode_image

#: The shared data's compressed DICOMs and where their frame size sits in the first fragment.
SIZE_FIELDS = {
    "JPEG2000__RG1_J2KI.dcm": (b"\xff\x4f\xff\x51", 8, ">II"),  # Xsiz, Ysiz (width, height)
    "JPEGLSLossless__RG2_JLSL.dcm": (b"\xff\xf7", 5, ">HH"),  # SOF55: height, width
    "JPEGLosslessSV1__RG2_JPLL.dcm": (b"\xff\xc3", 5, ">HH"),  # SOF3: height, width
}


def _patched(path: Path, width: int, height: int) -> bytes:
    """The DICOM with its codestream's declared frame size changed, the DICOM header left as it was."""
    ds = pydicom.dcmread(path)
    marker, offset, layout = SIZE_FIELDS[path.name]
    frame = bytearray(next(encaps.generate_frames(ds.PixelData, number_of_frames=1)))
    at = frame.index(marker) + offset
    values = (width, height) if layout == ">II" else (height, width)
    struct.pack_into(layout, frame, at, *values)
    ds.PixelData = encaps.encapsulate([bytes(frame)])
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.shared_data
@pytest.mark.parametrize("name", sorted(SIZE_FIELDS))
def test_a_codestream_declaring_a_huge_frame_is_refused_before_decoding(name: str, shared_data: Path) -> None:
    data = _patched(shared_data / "dicom" / name, 60000, 60000)
    started = time.perf_counter()
    with pytest.raises(PayloadTooLargeError, match="60000x60000"):
        decode_dicom(data, max_pixels=40_000_000)
    assert time.perf_counter() - started < 5  # refused from the header: no decoder ran


@pytest.mark.shared_data
@pytest.mark.parametrize("name", sorted(SIZE_FIELDS))
def test_a_codestream_that_disagrees_with_rows_and_columns_is_refused(name: str, shared_data: Path) -> None:
    ds = pydicom.dcmread(shared_data / "dicom" / name)
    data = _patched(shared_data / "dicom" / name, ds.Columns + 16, ds.Rows)
    with pytest.raises(InvalidImageError, match="does not belong to this header"):
        decode_dicom(data, max_pixels=40_000_000)


@pytest.mark.shared_data
@pytest.mark.parametrize("name", [*sorted(SIZE_FIELDS), "JPEGExtended__RG2_JPLY_fixed.dcm"])
def test_the_real_compressed_dicoms_still_decode(name: str, shared_data: Path) -> None:
    pixels, _ = decode_dicom((shared_data / "dicom" / name).read_bytes(), max_pixels=40_000_000)
    ds = pydicom.dcmread(shared_data / "dicom" / name, stop_before_pixels=True)
    assert pixels.shape == (ds.Rows, ds.Columns)


def _progressive(scans_repeated: int) -> bytes:
    """A progressive JPEG whose last scan is repeated: as many decoder passes as scans."""
    buffer = io.BytesIO()
    image = np.random.default_rng(0).integers(0, 256, (64, 48), dtype=np.uint8)
    Image.fromarray(image).save(buffer, format="JPEG", progressive=True)
    data = buffer.getvalue()
    last_scan = data.rindex(b"\xff\xda")
    body = data[last_scan:-2]  # the last SOS segment and its entropy-coded data, without EOI
    return data[:-2] + body * scans_repeated + b"\xff\xd9"


def test_scans_are_counted_and_a_jpeg_with_too_many_is_refused_before_decoding() -> None:
    assert codestream.inspect(_progressive(0)).scans < 12  # type: ignore[union-attr]
    assert codestream.inspect(_progressive(200)).scans >= 200  # type: ignore[union-attr]
    decode_image(_progressive(0), max_scans=100)  # a normal progressive JPEG decodes
    with pytest.raises(InvalidImageError, match="scans"):
        decode_image(_progressive(200), max_scans=100)


def test_a_raster_jpeg_declaring_more_pixels_than_allowed_is_refused_from_its_header() -> None:
    with pytest.raises(PayloadTooLargeError):
        decode_image(jpeg_bytes(np.zeros((64, 64), np.uint8)), max_pixels=1000)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_any_bytes_after_a_jpeg_start_are_read_or_refused_cleanly(tail: bytes) -> None:
    for head in (b"\xff\xd8", b"\xff\x4f\xff\x51", b"\x00\x00\x00\x0cjP  \r\n\x87\n"):
        try:
            info = codestream.inspect(head + tail)
        except InvalidImageError:
            continue
        if info is not None:
            assert info.width >= 0
            assert info.height >= 0
            assert info.scans >= 1


@settings(max_examples=200, deadline=None)
@given(
    width=st.integers(1, 2**32 - 1),
    height=st.integers(1, 2**32 - 1),
    rows=st.integers(1, 5000),
    columns=st.integers(1, 5000),
)
def test_any_declared_j2k_size_is_judged_against_the_limits_and_the_header(
    width: int, height: int, rows: int, columns: int
) -> None:
    siz = b"\xff\x4f\xff\x51" + struct.pack(">HHIIII", 41, 0, width, height, 0, 0) + b"\x00" * 40
    info = codestream.inspect(siz)
    assert info is not None
    assert (info.width, info.height) == (width, height)
    try:
        codestream.check(info, max_pixels=40_000_000, max_scans=100, expected=(rows, columns))
    except PayloadTooLargeError:
        assert width * height > 40_000_000
    except InvalidImageError:
        assert (height, width) != (rows, columns)
    else:
        assert (height, width) == (rows, columns)
