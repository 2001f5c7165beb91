"""Fuzzing the request layer: corrupted uploads under any media type are answered, never a 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.api.app import create_app
from service.core.config import Settings
from tests.conftest import wait_ready
from tests.factories import default_specs, write_models_dir
from tests.xray.contract.test_decode_fuzz import corrupted

CONTENT_TYPES = st.sampled_from(
    [
        "image/png",
        "image/jpeg",
        "application/dicom",
        "application/octet-stream",
        "text/plain",
        "image/gif",
        "",
    ]
)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One service for all examples (a new one per example would only test start-up)."""
    folder = write_models_dir(Path(tmp_path_factory.mktemp("fuzz")) / "models", default_specs())
    with TestClient(create_app(Settings(models_dir=folder)), raise_server_exceptions=False) as started:
        wait_ready(started)
        yield started


@pytest.mark.filterwarnings("ignore")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.one_of(corrupted(), st.binary(max_size=256)), content_type=CONTENT_TYPES, multipart=st.booleans()
)
def test_any_upload_gets_an_answer_or_a_documented_4xx(
    client: TestClient, body: bytes, content_type: str, multipart: bool
) -> None:
    if multipart:
        part_type = content_type or "application/octet-stream"
        response = client.post("/predict", files={"file": ("upload.bin", body, part_type)})
    else:
        headers = {"Content-Type": content_type} if content_type else {}
        response = client.post("/predict", content=body, headers=headers)
    assert response.status_code in {200, 400, 413, 415, 422}, response.text
    if response.status_code != 200:
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["detail"]
