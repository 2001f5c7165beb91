"""The app factory: start-up refusals, OpenAPI, CORS."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.core.config import Settings
from xray.contract.errors import ChecksumMismatchError, ManifestError, ModelFileError


def start(folder: Path) -> None:
    with TestClient(create_app(Settings(models_dir=folder))):
        pass


def test_wrong_sha256_refuses_start_up_naming_the_file(models_dir: Path) -> None:
    path = models_dir / "manifest.json"
    document = json.loads(path.read_text())
    document["models"][2]["sha256"] = "f" * 64
    path.write_text(json.dumps(document))
    with pytest.raises(ChecksumMismatchError, match=r"efficientnet_v2_b2\.onnx"):
        start(models_dir)


def test_missing_model_file_refuses_start_up(models_dir: Path) -> None:
    (models_dir / "scratch.onnx").unlink()
    with pytest.raises(ModelFileError, match=r"scratch\.onnx is missing"):
        start(models_dir)


def test_missing_manifest_refuses_start_up(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no model manifest"):
        start(tmp_path)


def test_openapi_documents_the_image_body_and_problems(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    predict = spec["paths"]["/predict"]["post"]
    assert set(predict["requestBody"]["content"]) == {
        "image/png",
        "image/jpeg",
        "application/dicom",
        "multipart/form-data",
    }
    for status in ("400", "401", "413", "415", "422", "503"):
        assert "application/problem+json" in predict["responses"][status]["content"]


def test_cors_is_off_by_default(client: TestClient) -> None:
    response = client.options(
        "/predict", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in response.headers


def test_cors_when_configured(make_client: Callable[..., TestClient], models_dir: Path) -> None:
    client = make_client(models_dir, cors_origins=["https://viewer.example"])
    response = client.options(
        "/predict", headers={"Origin": "https://viewer.example", "Access-Control-Request-Method": "POST"}
    )
    assert response.headers["access-control-allow-origin"] == "https://viewer.example"


@pytest.mark.parametrize("path", ["/", "/static/index.html", "/static/app.js", "/static/style.css"])
def test_the_page_and_every_static_file_carry_the_security_headers(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    policy = response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy
    assert "default-src 'self'" in policy
    assert response.headers["x-content-type-options"] == "nosniff"
