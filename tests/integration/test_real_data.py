"""The service on real radiographs and real DICOM files from ../shared/data (skipped when absent).

The bundled models arrive with a later issue; until then these run tiny models whose output
depends on the pixels, so what is checked here is that real files travel the whole path.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.factories import ModelSpec
from xray.contract.preprocessing import decode_image, preprocess

pytestmark = pytest.mark.shared_data


@pytest.fixture
def pixel_client(make_client: Callable[..., TestClient], make_models: Callable[..., Path]) -> TestClient:
    specs = [
        ModelSpec("scratch", weights=[4.0, 0.0, -4.0], bias=[-2.0, 0.0, 2.0], height=64, width=64),
        ModelSpec(
            "inception_resnet_v2",
            weights=[-3.0, 3.0, 0.0],
            bias=[1.0, -1.0, 0.0],
            height=48,
            width=48,
            channels=3,
        ),
        ModelSpec(
            "efficientnet_v2_b2",
            weights=[1.0, -1.0, 2.0],
            bias=[0.0, 0.5, -1.0],
            height=40,
            width=40,
            channels=3,
        ),
    ]
    return make_client(make_models(specs))


def sample_rows(shared_data: Path, per_class: int = 2) -> list[dict[str, str]]:
    with (shared_data / "cxr" / "labels.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    chosen: list[dict[str, str]] = []
    for label in ("normal", "pneumonia", "tuberculosis"):
        chosen += [row for row in rows if row["label"] == label][:per_class]
    return chosen


def test_predict_on_real_radiographs(shared_data: Path, pixel_client: TestClient) -> None:
    answers = []
    for row in sample_rows(shared_data):
        path = shared_data / "cxr" / row["path"]
        response = pixel_client.post("/predict", files={"file": (path.name, path.read_bytes(), "image/jpeg")})
        assert response.status_code == 200, (row["path"], response.text)
        body = response.json()
        for result in (*body["models"].values(), *body["ensembles"].values()):
            assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)
        answers.append(body["models"]["scratch"]["probabilities"]["normal"])
    # The pixel-dependent models give different answers on different radiographs.
    assert len({round(value, 6) for value in answers}) > 1


def test_real_radiographs_decode_as_8bit_grayscale(shared_data: Path) -> None:
    for row in sample_rows(shared_data, per_class=3):
        data = (shared_data / "cxr" / row["path"]).read_bytes()
        decoded = decode_image(data)
        assert decoded.pixels.dtype == np.uint8
        assert decoded.size == (int(row["height"]), int(row["width"]))
        assert preprocess(data, 64, 64).shape == (64, 64)


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("CR-MONO1-10-chest.dcm", 200),
        ("JPEG2000__RG1_J2KI.dcm", 200),
        ("JPEGLSLossless__RG2_JLSL.dcm", 200),
        ("JPEGLosslessSV1__RG2_JPLL.dcm", 200),
        ("JPEGExtended__RG2_JPLY.dcm", 400),
        ("JPEGExtended__RG2_JPLY_fixed.dcm", 200),
    ],
)
def test_real_dicom_files_as_their_readme_says(
    shared_data: Path, pixel_client: TestClient, name: str, status: int
) -> None:
    data = (shared_data / "dicom" / name).read_bytes()
    response = pixel_client.post("/predict", content=data, headers={"Content-Type": "application/dicom"})
    assert response.status_code == status, response.text
    if status == 200:
        assert response.json()["dicom"]["sop_instance_uid"]
    else:
        assert response.headers["content-type"].startswith("application/problem+json")
        assert "cannot be decoded" in response.json()["detail"]
