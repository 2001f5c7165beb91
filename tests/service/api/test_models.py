"""GET /models."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient

from tests.factories import pixel_specs, sha256


def test_models_lists_versions_checksums_inputs_and_providers(client: TestClient, models_dir: Path) -> None:
    body = client.get("/models").json()
    assert body["classes"] == ["normal", "pneumonia", "tuberculosis"]
    names = [model["name"] for model in body["models"]]
    assert names == ["scratch", "inception_resnet_v2", "efficientnet_v2_b2"]
    for model in body["models"]:
        assert model["sha256"] == sha256(models_dir / model["file"])
        assert model["provider"] == "CPUExecutionProvider"
        assert model["input"] == {"height": 32, "width": 32, "channels": 1, "layout": "NHWC"}
        assert model["version"] == "1.0.0-test"
    assert body["ensembles"]["confidence"] == {
        "order": ["efficientnet_v2_b2", "inception_resnet_v2"],
        "tau": 0.9,
    }
    assert body["ensembles"]["abstain_below"] == 0.5
    assert body["input_check"] == {"method": "none", "threshold": None}


def test_models_reports_the_input_check_threshold(
    make_client: Callable[..., TestClient], make_models: Callable[..., Path]
) -> None:
    client = make_client(make_models(pixel_specs(with_features=True), input_check_threshold=2.5))
    assert client.get("/models").json()["input_check"] == {"method": "mahalanobis", "threshold": 2.5}
