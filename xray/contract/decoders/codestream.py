"""What a compressed image stream declares about itself, read before a byte of it is decoded.

A decoder allocates what the codestream's own header asks for, not what the DICOM header says:
a JPEG 2000 frame whose SIZ marker claims 60000 x 60000 pixels inside a DICOM of 2000 x 2000 made
the decoder allocate 20 GB. And a progressive JPEG of a few hundred kilobytes can hold thousands of
scans, each a full pass of the decoder over the image. So every JPEG-family and JPEG 2000 stream is
read here first, cheaply and without decoding: its declared size must fit the limits (and, inside a
DICOM, equal Rows x Columns), and its number of scans must be within the limit.

Only the marker structure is walked: JPEG segments by their lengths (entropy-coded data cannot
contain an unstuffed 0xFF followed by a marker code other than restarts, so the walk after a scan
searches for the next marker), JPEG 2000 by its SIZ segment, JP2 files by their boxes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from xray.contract.errors import InvalidImageError, PayloadTooLargeError

#: Start-of-frame markers of every JPEG process (baseline, extended, progressive, lossless, the
#: arithmetic variants) and JPEG-LS's SOF55; C4 (DHT), C8 (JPG) and CC (DAC) are not frames.
_SOF_MARKERS = frozenset({*range(0xC0, 0xD0)} - {0xC4, 0xC8, 0xCC}) | {0xF7}
_SOS = 0xDA
_EOI = 0xD9
#: Markers without a length field: TEM, RST0-7, SOI, EOI.
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8), 0xD8, 0xD9})
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
_J2K_SOC_SIZ = b"\xff\x4f\xff\x51"


@dataclass(frozen=True)
class StreamInfo:
    """What a codestream declares: its frame size and, for JPEG, how many scans it holds."""

    kind: str
    width: int
    height: int
    scans: int = 1


def inspect(data: bytes) -> StreamInfo | None:
    """The declared size (and scans) of a JPEG, JPEG-LS, JPEG 2000 or JP2 stream; None for others.

    Raises:
        InvalidImageError: The stream starts like one of these but its header is truncated or
            declares no frame.
    """
    if data.startswith(b"\xff\xd8"):
        return _jpeg(data)
    if data.startswith(_J2K_SOC_SIZ):
        return _j2k(data, 0)
    if data.startswith(_JP2_SIGNATURE):
        return _jp2(data)
    return None


def check(
    info: StreamInfo | None, *, max_pixels: int, max_scans: int, expected: tuple[int, int] | None = None
) -> None:
    """Refuse a stream whose declaration exceeds the limits or disagrees with its container.

    Args:
        info: What `inspect` found (None: not a stream this module reads; nothing to check).
        max_pixels: Largest width x height.
        max_scans: Most JPEG scans (progressive passes).
        expected: (rows, columns) the DICOM header declares, which the stream must match.

    Raises:
        InvalidImageError: Too many scans, or a size that differs from the container's.
        PayloadTooLargeError: More pixels than `max_pixels`.
    """
    if info is None:
        return
    if info.width * info.height > max_pixels:
        raise PayloadTooLargeError(
            f"the {info.kind} stream declares {info.width}x{info.height} pixels; the limit is {max_pixels}"
        )
    if expected is not None and (info.height, info.width) != expected:
        rows, columns = expected
        raise InvalidImageError(
            f"the {info.kind} stream declares {info.width}x{info.height} pixels but the DICOM header "
            f"{columns}x{rows}: the pixel data does not belong to this header"
        )
    if info.scans > max_scans:
        raise InvalidImageError(
            f"the {info.kind} stream has {info.scans} scans; at most {max_scans} are decoded"
        )


def _jpeg(data: bytes) -> StreamInfo:
    size: tuple[int, int] | None = None
    kind = "JPEG"
    scans = 0
    position = 2
    end = len(data)
    while 0 <= position < end:
        marker = data[position + 1] if data[position] == 0xFF and position + 1 < end else 0x00
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker == 0x00 or 0xD0 <= marker <= 0xD7:  # not at a marker: resynchronise on the next one
            position = _next_marker(data, position)
            continue
        if marker == _EOI:
            break
        if marker in _STANDALONE:
            position += 2
            continue
        if position + 4 > end:
            raise InvalidImageError("the JPEG stream ends inside a marker segment")
        (length,) = struct.unpack_from(">H", data, position + 2)
        if length < 2:
            raise InvalidImageError("the JPEG stream has a marker segment of impossible length")
        if marker in _SOF_MARKERS and size is None:
            if position + 9 > end:
                raise InvalidImageError("the JPEG stream ends inside its frame header")
            height, width = struct.unpack_from(">HH", data, position + 5)
            size = (width, height)
            kind = "JPEG-LS" if marker == 0xF7 else "JPEG"
        elif marker == _SOS:
            scans += 1
            # Entropy-coded data follows the scan header, up to the next marker that is neither a
            # stuffed 0xFF00 nor a restart.
            position = _next_marker(data, position + 2 + length)
            continue
        position += 2 + length
    if size is None:
        raise InvalidImageError("the JPEG stream has no frame header (SOF)")
    return StreamInfo(kind, size[0], size[1], max(scans, 1))


def _next_marker(data: bytes, position: int) -> int:
    while True:
        found = data.find(b"\xff", position)
        if found < 0 or found + 1 >= len(data):
            return -1
        following = data[found + 1]
        if following == 0x00 or 0xD0 <= following <= 0xD7:
            position = found + 2
            continue
        return found


def _j2k(data: bytes, start: int) -> StreamInfo:
    # SOC (2), SIZ marker (2), Lsiz (2), Rsiz (2), Xsiz, Ysiz, XOsiz, YOsiz (4 each).
    if len(data) < start + 24 or data[start : start + 4] != _J2K_SOC_SIZ:
        raise InvalidImageError("the JPEG 2000 stream does not begin with SOC and SIZ")
    width, height, x_offset, y_offset = struct.unpack_from(">IIII", data, start + 8)
    if width <= x_offset or height <= y_offset:
        raise InvalidImageError("the JPEG 2000 stream declares an empty image")
    return StreamInfo("JPEG 2000", width - x_offset, height - y_offset)


def _jp2(data: bytes) -> StreamInfo:
    position = 0
    while position + 8 <= len(data):
        length, box = struct.unpack_from(">I4s", data, position)
        header = 8
        if length == 1:  # a 64-bit length follows
            if position + 16 > len(data):
                break
            (length,) = struct.unpack_from(">Q", data, position + 8)
            header = 16
        if box == b"jp2c":
            return _j2k(data, position + header)
        if length == 0:  # the last box runs to the end
            break
        if length < header:
            raise InvalidImageError("the JP2 file has a box of impossible length")
        position += length
    raise InvalidImageError("the JP2 file holds no JPEG 2000 codestream")
