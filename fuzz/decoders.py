"""Coverage-guided fuzzing of the image decoders with atheris (libFuzzer).

    python fuzz/decoders.py -atheris_runs=20000 [corpus_dir]

The first input byte picks the declared format (none, PNG, JPEG, DICOM); the rest is the upload.
Any outcome but an image or a `RequestError` (the service's 4xx) is a crash that libFuzzer
reports with the input that caused it. Seeds are small valid files of each format, so the
fuzzer starts past the signatures.
"""

from __future__ import annotations

import io
import sys
import warnings

import atheris
import numpy as np

with atheris.instrument_imports(include=["xray"]):
    from xray.contract.decoders import ImageFormat
    from xray.contract.errors import RequestError
    from xray.contract.preprocessing import decode_image

DECLARED = (None, ImageFormat.PNG, ImageFormat.JPEG, ImageFormat.DICOM)


def test_one_input(data: bytes) -> None:
    """One libFuzzer iteration."""
    if not data:
        return
    declared = DECLARED[data[0] % len(DECLARED)]
    try:
        image = decode_image(data[1:], declared=declared, max_pixels=4_000_000)
    except RequestError:
        return
    if image.pixels.dtype.name != "uint8" or image.pixels.ndim != 2:
        raise AssertionError(f"decoded to {image.pixels.dtype} with shape {image.pixels.shape}")


def seeds() -> list[bytes]:
    """Small valid files of every format, each prefixed with its format byte."""
    from PIL import Image

    gray = (np.arange(24 * 20, dtype=np.uint16).reshape(24, 20) % 256).astype(np.uint8)
    files = []
    for fmt in ("PNG", "JPEG"):
        buffer = io.BytesIO()
        Image.fromarray(gray).save(buffer, format=fmt)
        files.append(bytes([DECLARED.index(ImageFormat[fmt])]) + buffer.getvalue())
    files.append(bytes([DECLARED.index(ImageFormat.DICOM)]) + _dicom(gray.astype(np.uint16) * 16))
    return files


def _dicom(pixels: np.ndarray) -> bytes:
    """A minimal 12-bit MONOCHROME2 DICOM file (explicit VR little endian) holding `pixels`."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("seed.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SamplesPerPixel, ds.PhotometricInterpretation = "DX", 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.astype("<u2").tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def main() -> None:
    """Write the seeds into the corpus folder (when given), then fuzz."""
    warnings.simplefilter("ignore")  # the decoders warn about every broken file
    corpus = [arg for arg in sys.argv[1:] if not arg.startswith("-")]
    if corpus:
        from pathlib import Path

        folder = Path(corpus[0])
        folder.mkdir(parents=True, exist_ok=True)
        for index, seed in enumerate(seeds()):
            (folder / f"seed-{index}").write_bytes(seed)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
