"""Liveness and readiness around the warm-up."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.inference.predictor import Predictor
from tests.conftest import wait_ready
from tests.factories import gradient, png_bytes


def test_ready_only_after_warm_up(
    make_client: Callable[..., TestClient], models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate, entered = threading.Event(), threading.Event()
    original = Predictor.warm_up

    def gated_warm_up(self: Predictor, batch_size: int = 1) -> None:
        entered.set()
        gate.wait(10)
        original(self, batch_size)

    monkeypatch.setattr(Predictor, "warm_up", gated_warm_up)
    client = make_client(models_dir, ready=False)
    assert entered.wait(10)

    assert client.get("/health/live").status_code == 200
    before = client.get("/health/ready")
    assert before.status_code == 503
    assert before.headers["content-type"].startswith("application/problem+json")
    assert "warming up" in before.json()["detail"]
    assert before.headers["retry-after"]
    refused = client.post("/predict", content=png_bytes(gradient()), headers={"Content-Type": "image/png"})
    assert refused.status_code == 503
    assert "xray_ready 0.0" in client.get("/metrics").text

    gate.set()
    wait_ready(client)
    after = client.get("/health/ready")
    assert after.json() == {
        "status": "ready",
        "models": {
            name: "CPUExecutionProvider" for name in ("scratch", "inception_resnet_v2", "efficientnet_v2_b2")
        },
    }
    assert "xray_ready 1.0" in client.get("/metrics").text
    assert (
        client.post(
            "/predict", content=png_bytes(gradient()), headers={"Content-Type": "image/png"}
        ).status_code
        == 200
    )


def test_failed_warm_up_keeps_the_service_unready_with_the_reason(
    make_client: Callable[..., TestClient], models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Predictor, batch_size: int = 1) -> None:
        raise RuntimeError("simulated warm-up failure")

    monkeypatch.setattr(Predictor, "warm_up", broken)
    client = make_client(models_dir, ready=False)
    for _ in range(200):
        response = client.get("/health/ready")
        if "failed" in response.json()["detail"]:
            break
        threading.Event().wait(0.01)
    assert response.status_code == 503
    assert "simulated warm-up failure" in response.json()["detail"]
    assert client.get("/health/live").status_code == 200
