"""A corpus of bad and unusual inputs, each with the answer the README documents.

Made here, not downloaded: every file is built by the test so the corpus is reproducible.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.factories import dicom_bytes, gradient, jpeg_bytes, png_bytes


def png_bomb(width: int, height: int) -> bytes:
    """A PNG header declaring `width` x `height` with a tiny compressed body: a decompression bomb."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * (width + 1) * 64, 9)  # far fewer rows than declared
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def cmyk_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(gradient(40, 30)).convert("CMYK").save(buffer, format="JPEG")
    return buffer.getvalue()


def rgba_png() -> bytes:
    rgba = np.dstack([gradient(40, 30)] * 3 + [np.full((40, 30), 200, np.uint8)])
    return png_bytes(rgba)


def dicom_declaring(rows: int, columns: int) -> bytes:
    """A small DICOM whose header declares `rows` x `columns` (its pixel data is far shorter)."""
    import pydicom

    dataset = pydicom.dcmread(io.BytesIO(dicom_bytes(np.zeros((4, 4), np.uint16))))
    dataset.Rows, dataset.Columns = rows, columns
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    return buffer.getvalue()


def structured_report() -> bytes:
    """A DICOM SR: valid DICOM, no pixels, not an image."""
    return dicom_bytes(None, sop_class="1.2.840.10008.5.1.4.1.1.88.33")


VALID_PNG = png_bytes(gradient(48, 40))
VALID_DICOM = dicom_bytes(gradient(48, 40).astype(np.uint16) * 16)

CORPUS: list[tuple[str, bytes, str, int, str | None]] = [
    # name, body, content type, status, problem slug (None for a 200)
    ("zero bytes", b"", "image/png", 400, "invalid-image"),
    ("truncated PNG", VALID_PNG[: len(VALID_PNG) // 2], "image/png", 400, "invalid-image"),
    ("truncated JPEG", jpeg_bytes(gradient())[:200], "image/jpeg", 400, "invalid-image"),
    ("truncated DICOM", VALID_DICOM[:-500], "application/dicom", 400, "invalid-image"),
    ("random bytes as PNG", bytes(range(256)) * 4, "image/png", 400, "invalid-image"),
    ("random bytes as JPEG", bytes(range(255, -1, -1)) * 4, "image/jpeg", 400, "invalid-image"),
    ("random bytes as DICOM", b"\x01\x02" * 600, "application/dicom", 400, "invalid-image"),
    ("PNG bomb 60000x60000 declared", png_bomb(60_000, 60_000), "image/png", 413, "payload-too-large"),
    ("PNG declaring 1x2^31", png_bomb(1, 2**31 - 1), "image/png", 413, "payload-too-large"),
    ("DICOM declaring 65535x65535", dicom_declaring(65535, 65535), "application/dicom", 413,
     "payload-too-large"),
    ("16-bit PNG", png_bytes(gradient().astype(np.uint16) * 257), "image/png", 200, None),
    ("RGBA PNG", rgba_png(), "image/png", 200, None),
    ("CMYK JPEG", cmyk_jpeg(), "image/jpeg", 200, None),
    ("DICOM without pixel data", dicom_bytes(None), "application/dicom", 400, "unsupported-dicom"),
    ("multi-frame DICOM", dicom_bytes(np.zeros((4, 4), np.uint16), frames=3), "application/dicom", 400,
     "unsupported-dicom"),
    ("SR DICOM", structured_report(), "application/dicom", 400, "unsupported-dicom"),
    ("RGB DICOM", dicom_bytes(np.zeros((8, 8, 3), np.uint8)), "application/dicom", 400, "unsupported-dicom"),
    ("PNG sent as JPEG", VALID_PNG, "image/jpeg", 200, None),  # the bytes' signature wins
    ("GIF", b"GIF89a" + b"\0" * 64, "image/gif", 415, "unsupported-media-type"),
    ("text", b"hello", "text/plain", 415, "unsupported-media-type"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "body", "content_type", "status", "slug"), CORPUS, ids=[row[0] for row in CORPUS]
)
def test_every_bad_input_gets_its_documented_answer(
    client: TestClient, name: str, body: bytes, content_type: str, status: int, slug: str | None
) -> None:
    response = client.post("/predict", content=body, headers={"Content-Type": content_type})
    assert response.status_code == status, (name, response.text)
    if slug is None:
        assert abs(sum(response.json()["ensembles"]["classic"]["probabilities"].values()) - 1) < 1e-6
    else:
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["type"].endswith(slug)


def test_the_service_is_still_ready_after_the_whole_corpus(client: TestClient) -> None:
    for _, body, content_type, _, _ in CORPUS:
        client.post("/predict", content=body, headers={"Content-Type": content_type})
    assert client.get("/health/ready").status_code == 200
