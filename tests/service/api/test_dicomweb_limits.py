"""Limits of the DICOMweb door that need no PACS: the key before the body, body and part caps."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.api.routes import dicomweb
from service.pacs import stow
from tests.factories import pixel_specs
from tests.service.api.test_dicomweb import multipart_related
from xray.contract.errors import InvalidParametersError, PayloadTooLargeError, UnsupportedMediaTypeError

SPECS = pixel_specs(with_maps=True)


def test_analyze_checks_the_key_before_reading_the_body_and_caps_the_body(
    make_client: Callable[..., TestClient], make_models: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client(make_models(SPECS), api_key="k" * 32, max_json_bytes=1024)
    read: list[int] = []
    original = dicomweb.read_capped

    async def counting(request: Any, limit: int) -> bytes:
        read.append(limit)
        return await original(request, limit)

    monkeypatch.setattr(dicomweb, "read_capped", counting)
    huge = b'{"study_instance_uid": "' + b"1" * 2_000_000 + b'"}'
    unauthenticated = client.post("/pacs/analyze", content=huge, headers={"Content-Type": "application/json"})
    assert unauthenticated.status_code == 401
    assert read == []  # refused before a byte of the body was read or parsed
    keyed = {"Content-Type": "application/json", "X-API-Key": "k" * 32}
    too_big = client.post("/pacs/analyze", content=huge, headers=keyed)
    assert too_big.status_code == 413
    assert too_big.json()["type"].endswith(":payload-too-large")
    not_json = client.post("/pacs/analyze", content=b"{", headers=keyed)
    assert not_json.status_code == 422
    unconfigured = client.post("/pacs/analyze", json={"study_instance_uid": "1.2.3"}, headers=keyed)
    assert unconfigured.status_code == 501  # a valid request reaches the PACS step


def test_stow_with_more_parts_than_allowed_is_413_before_any_is_parsed(
    make_client: Callable[..., TestClient], make_models: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client(make_models(SPECS), max_stow_parts=10)
    parsed: list[bytes] = []
    monkeypatch.setattr(stow, "identify", lambda data: parsed.append(data))
    body, content_type = multipart_related(*[b"junk"] * 11)
    response = client.post("/dicom-web/studies", content=body, headers={"Content-Type": content_type})
    assert response.status_code == 413
    assert "more than 10 parts" in response.json()["detail"]
    assert parsed == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(count=st.integers(0, 40), junk=st.binary(max_size=64), limit=st.integers(1, 20))
def test_any_multipart_shape_is_split_within_the_part_limit_or_refused(
    count: int, junk: bytes, limit: int
) -> None:
    body, content_type = multipart_related(*[junk] * count)
    try:
        parts = stow.split_parts(body, content_type, max_parts=limit)
    except PayloadTooLargeError:
        assert count > limit
    except (InvalidParametersError, UnsupportedMediaTypeError):
        assert count == 0 or not junk or b"--xray-boundary-7" in junk
    else:
        assert len(parts) == count <= limit


def test_stow_parts_are_parsed_off_the_event_loop(
    make_client: Callable[..., TestClient], make_models: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client(make_models(SPECS))
    threads: list[str] = []
    original = stow.identify

    def recording(data: bytes) -> stow.Part:
        threads.append(threading.current_thread().name)
        return original(data)

    monkeypatch.setattr(stow, "identify", recording)
    body, content_type = multipart_related(b"junk", b"more junk")
    client.post("/dicom-web/studies", content=body, headers={"Content-Type": content_type})
    assert len(threads) == 2
    assert threading.main_thread().name not in threads
    loop_thread = client.portal.call(lambda: threading.current_thread().name)  # type: ignore[union-attr]
    assert loop_thread not in threads
