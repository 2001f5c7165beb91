"""The optional API key."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.factories import gradient, png_bytes

KEY = "correct horse battery staple"


@pytest.fixture
def secured(make_client: Callable[..., TestClient], models_dir: Path) -> TestClient:
    return make_client(models_dir, api_key=KEY)


def predict(client: TestClient, **headers: str):  # type: ignore[no-untyped-def]
    return client.post(
        "/predict", content=png_bytes(gradient()), headers={"Content-Type": "image/png", **headers}
    )


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {KEY}"},
        {"X-API-Key": KEY},
        {"Authorization": f"bearer {KEY}"},
        {"Authorization": f"Bearer {KEY}", "X-API-Key": KEY},
    ],
    ids=["bearer", "x-api-key", "lower-case-scheme", "both-right"],
)
def test_accepted_forms(secured: TestClient, headers: dict[str, str]) -> None:
    assert predict(secured, **headers).status_code == 200
    assert secured.get("/models", headers=headers).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"X-API-Key": KEY[:-1]},
        {"Authorization": f"Basic {KEY}"},
        {"X-API-Key": KEY, "Authorization": "Bearer wrong"},  # a right key does not hide a wrong one
        {"X-API-Key": "wrong", "Authorization": f"Bearer {KEY}"},
    ],
    ids=[
        "missing",
        "wrong",
        "prefix",
        "wrong-scheme",
        "right-header-wrong-bearer",
        "wrong-header-right-bearer",
    ],
)
def test_refused_with_401_problem(secured: TestClient, headers: dict[str, str]) -> None:
    response = predict(secured, **headers)
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert KEY not in response.text
    assert secured.get("/models", headers=headers).status_code == 401


def test_auth_is_checked_before_the_body_is_read(secured: TestClient) -> None:
    # An unauthenticated client gets 401, not 413 or 400, whatever it sends.
    response = secured.post("/predict", content=b"\0" * 10, headers={"Content-Type": "text/plain"})
    assert response.status_code == 401


def test_probes_and_metrics_stay_open(secured: TestClient) -> None:
    assert secured.get("/health/live").status_code == 200
    assert secured.get("/health/ready").status_code == 200
    assert secured.get("/metrics").status_code == 200


def test_no_key_configured_means_no_auth(client: TestClient) -> None:
    assert predict(client).status_code == 200
