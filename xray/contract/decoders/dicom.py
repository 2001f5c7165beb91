"""DICOM → 8-bit grayscale, following the grayscale pipeline of PS3.3 C.11 / PS3.4 N.2.

Stored values → modality LUT (rescale slope/intercept or Modality LUT Sequence) → VOI (VOI LUT
Sequence, else the first window centre/width with its VOI LUT Function, else the image's own
range) → MONOCHROME1 inversion, applied after VOI as the standard orders it → 0..255.

Only single-frame grayscale images are analysed; anything else is refused with a clear 4xx
before any pixel is decoded, and the pixel limit is checked from Rows x Columns first.
"""

from __future__ import annotations

import io
import logging
import struct

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom import encaps
from pydicom.dataset import FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels.processing import apply_modality_lut, apply_voi
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from xray.contract.decoders import DEFAULT_MAX_SCANS, DecodeLimits, codestream
from xray.contract.errors import InvalidImageError, PayloadTooLargeError
from xray.contract.images import DicomReference, GrayImage

logger = logging.getLogger(__name__)

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_GRAYSCALE = {"MONOCHROME1", "MONOCHROME2"}
_IDENTIFYING = ("SOPClassUID", "SOPInstanceUID", "Modality", "Rows", *_PIXEL_KEYWORDS)


class UnsupportedDicomError(InvalidImageError):
    """A valid DICOM that is not a single-frame grayscale image (SR, RGB, multi-frame, ...)."""

    slug = "unsupported-dicom"
    title = "The DICOM is not a single-frame grayscale image"


def _first(value: object) -> float:
    # Window centre/width may be multi-valued (alternative views); the first is the default view.
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        value = value[0]
    return float(str(value))


def window(
    values: npt.NDArray[np.float64], center: float, width: float, function: str
) -> npt.NDArray[np.float64]:
    """Apply a VOI window, returning values in [0, 1] (PS3.3 C.11.2.1.2).

    Args:
        values: Modality-LUT output.
        center: Window centre.
        width: Window width.
        function: VOI LUT Function: LINEAR (default), LINEAR_EXACT or SIGMOID.

    Raises:
        InvalidImageError: A window width the function does not allow.
    """
    function = (function or "LINEAR").upper()
    if function == "SIGMOID":
        if width <= 0:
            raise InvalidImageError(f"window width must be > 0 for SIGMOID, got {width}")
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "LINEAR_EXACT":
        if width <= 0:
            raise InvalidImageError(f"window width must be > 0 for LINEAR_EXACT, got {width}")
        return np.clip((values - center) / width + 0.5, 0.0, 1.0)
    if function != "LINEAR":
        raise InvalidImageError(f"unknown VOI LUT Function {function!r}")
    if width < 1:
        raise InvalidImageError(f"window width must be >= 1 for LINEAR, got {width}")
    if width == 1:
        # The linear ramp degenerates to a threshold at c - 0.5.
        return (values > center - 0.5).astype(np.float64)
    return np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def _full_range(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros_like(values)
    return (values - low) / (high - low)


def _voi(values: npt.NDArray[np.float64], ds: pydicom.Dataset) -> npt.NDArray[np.float64]:
    sequence = ds.get("VOILUTSequence")
    if sequence:
        bits = int(sequence[0].LUTDescriptor[2])
        mapped = apply_voi(np.rint(values).astype(np.int64), ds)
        return np.asarray(mapped, dtype=np.float64) / float((1 << bits) - 1)
    if "WindowCenter" in ds and "WindowWidth" in ds:
        return window(
            values, _first(ds.WindowCenter), _first(ds.WindowWidth), str(ds.get("VOILUTFunction", "LINEAR"))
        )
    return _full_range(values)


def _reference(ds: pydicom.Dataset) -> DicomReference:
    def uid(keyword: str) -> str | None:
        value = ds.get(keyword)
        return str(value) if value else None

    return DicomReference(
        study_instance_uid=uid("StudyInstanceUID"),
        series_instance_uid=uid("SeriesInstanceUID"),
        sop_instance_uid=uid("SOPInstanceUID"),
    )


def read_dataset(data: bytes) -> pydicom.Dataset:
    """Parse DICOM bytes, with or without preamble and file meta header.

    Raises:
        InvalidImageError: The bytes are not DICOM.
    """
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, OSError, OverflowError) as exc:
        raise InvalidImageError(f"the upload is not a readable DICOM file ({type(exc).__name__})") from exc
    try:
        # A forced read accepts any bytes and finds "elements" in noise; a real object, even a
        # pre-Part-10 one, carries at least one of these.
        recognised = any(keyword in ds for keyword in _IDENTIFYING)
    except Exception as exc:
        raise InvalidImageError(f"the upload is not a readable DICOM file ({type(exc).__name__})") from exc
    if not recognised:
        raise InvalidImageError(
            "the upload is not a DICOM file: it holds no recognisable DICOM data elements"
        )
    if not hasattr(ds, "file_meta"):
        ds.file_meta = FileMetaDataset()
    if "TransferSyntaxUID" not in ds.file_meta:
        # Files written before Part 10 (no meta header) are uncompressed; the encoding pydicom
        # detected while reading says which of the three uncompressed syntaxes they use.
        implicit, little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
        )
    return ds


def _check_compressed_frame(
    ds: pydicom.Dataset, rows: int, columns: int, max_pixels: int, max_scans: int
) -> None:
    """Read a compressed frame's own header before decoding it, and refuse one that disagrees.

    The decoders allocate what the codestream declares, not what Rows and Columns say.
    """
    if not ds.file_meta.TransferSyntaxUID.is_compressed or "PixelData" not in ds:
        return
    try:
        # The first item is the Basic Offset Table; a single frame is every fragment after it.
        frame = next(encaps.generate_frames(ds.PixelData, number_of_frames=1), b"")
    except (ValueError, TypeError, struct.error) as exc:
        raise InvalidImageError("the DICOM's encapsulated pixel data is malformed") from exc
    codestream.check(
        codestream.inspect(frame), max_pixels=max_pixels, max_scans=max_scans, expected=(rows, columns)
    )


def decode_dicom(
    data: bytes, *, max_pixels: int, max_scans: int = DEFAULT_MAX_SCANS
) -> tuple[GrayImage, DicomReference]:
    """Decode a single-frame grayscale DICOM image to 8-bit display values.

    Args:
        data: The DICOM file's bytes (Part 10, or a bare dataset).
        max_pixels: Largest Rows x Columns accepted.
        max_scans: Most scans a JPEG frame may hold.

    Returns:
        The (rows, columns) uint8 image and the instance's UIDs.

    Raises:
        InvalidImageError: Not DICOM, no pixel data, or pixel data that cannot be decoded.
        UnsupportedDicomError: Not a single-frame grayscale image.
        PayloadTooLargeError: More pixels than `max_pixels`.
    """
    ds = read_dataset(data)
    try:
        if not any(keyword in ds for keyword in _PIXEL_KEYWORDS):
            raise UnsupportedDicomError(
                "the DICOM has no pixel data (a structured report, for example): nothing to analyse"
            )
        photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        if samples != 1 or photometric not in _GRAYSCALE:
            raise UnsupportedDicomError(
                f"only grayscale (MONOCHROME1/2, one sample per pixel) images are analysed, got "
                f"{photometric or 'no photometric interpretation'} with {samples} sample(s) per pixel"
            )
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        if frames != 1:
            raise UnsupportedDicomError(
                f"only single-frame images are analysed, this one has {frames} frames"
            )
        rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        if rows <= 0 or columns <= 0:
            raise InvalidImageError(f"the DICOM declares {rows}x{columns} pixels")
        if rows * columns > max_pixels:
            raise PayloadTooLargeError(
                f"the DICOM has {rows}x{columns} = {rows * columns} pixels; the limit is {max_pixels}"
            )
    except (AttributeError, ValueError, TypeError, KeyError) as exc:
        # A malformed attribute value (for example a non-numeric Rows) in a forced read. The
        # message names the kind of failure, never the value (it may be patient data).
        raise InvalidImageError(f"the DICOM header is malformed ({type(exc).__name__})") from exc
    _check_compressed_frame(ds, rows, columns, max_pixels, max_scans)

    try:
        stored = ds.pixel_array
    except Exception as exc:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", "unknown transfer syntax")
        logger.info("DICOM pixel data could not be decoded (%s): %s", name, type(exc).__name__)
        raise InvalidImageError(f"the DICOM pixel data ({name}) cannot be decoded") from exc
    if stored.ndim != 2:
        raise UnsupportedDicomError(f"expected one grayscale frame, got pixel array of shape {stored.shape}")

    try:
        modality = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
        display = _voi(modality, ds)
    except InvalidImageError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, NotImplementedError) as exc:
        raise InvalidImageError(
            f"the DICOM's modality or VOI LUT cannot be applied ({type(exc).__name__})"
        ) from exc
    if photometric == "MONOCHROME1":
        display = 1.0 - display
    pixels = np.rint(np.clip(display, 0.0, 1.0) * 255.0).astype(np.uint8)
    return pixels, _reference(ds)


def decode(data: bytes, limits: DecodeLimits) -> tuple[GrayImage, DicomReference | None]:
    """The `xray.contract.decoders` entry: `decode_dicom` within `limits`."""
    return decode_dicom(data, max_pixels=limits.max_pixels, max_scans=limits.max_scans)
