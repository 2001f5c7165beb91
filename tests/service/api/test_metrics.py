"""GET /metrics: the SPEC's metric names, and that they move."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from tests.factories import gradient, pixel_specs, png_bytes


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = re.match(r"^([a-zA-Z_:][\w:]*)(\{(.*)\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(3) or ""))
        if all(found.get(key) == value for key, value in labels.items()):
            return float(match.group(4))
    return 0.0


def test_spec_metric_names_are_exported(client: TestClient) -> None:
    text = client.get("/metrics").text
    for name in (
        "xray_requests_total",
        "xray_request_seconds",
        "xray_inference_seconds",
        "xray_batch_size",
        "xray_predictions_total",
        "xray_uncertain_total",
        "xray_uncertain_reasons_total",
        "xray_out_of_distribution_total",
        "xray_model_info",
    ):
        assert f"# TYPE {name.removesuffix('_total')}" in text, name


def test_metrics_move_after_a_request(client: TestClient) -> None:
    before = client.get("/metrics").text
    response = client.post("/predict", content=png_bytes(gradient()), headers={"Content-Type": "image/png"})
    assert response.status_code == 200
    client.post("/predict", content=b"nope", headers={"Content-Type": "image/png"})
    after = client.get("/metrics").text

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert delta("xray_requests_total", endpoint="/predict", status="200") == 1
    assert delta("xray_requests_total", endpoint="/predict", status="400") == 1
    assert delta("xray_request_seconds_count", endpoint="/predict") == 2
    for model in ("scratch", "inception_resnet_v2", "efficientnet_v2_b2"):
        assert delta("xray_inference_seconds_count", model=model) == 1
    assert delta("xray_batch_size_count") == 1
    assert delta("xray_batch_size_sum") == 1
    assert delta("xray_predictions_total", model="scratch", label="tuberculosis") == 1
    assert delta("xray_predictions_total", model="efficientnet_v2_b2", label="normal") == 1
    assert delta("xray_predictions_total", model="classic", label="tuberculosis") == 1
    assert delta("xray_predictions_total", model="confidence", label="tuberculosis") == 1
    # The three constant models disagree, and the classic mean's top probability is 0.37 < 0.5.
    for ensemble in ("classic", "confidence"):
        assert delta("xray_uncertain_total", ensemble=ensemble) == 1
        assert delta("xray_uncertain_reasons_total", ensemble=ensemble, reason="low_confidence") == 1
        assert delta("xray_uncertain_reasons_total", ensemble=ensemble, reason="models_disagree") == 1
        assert delta("xray_uncertain_reasons_total", ensemble=ensemble, reason="out_of_distribution") == 0
    assert delta("xray_out_of_distribution_total") == 0


def test_out_of_distribution_images_are_counted_whether_answered_or_refused(
    make_client: Callable[..., TestClient], make_models: Callable[..., Path]
) -> None:
    folder = make_models(pixel_specs(with_features=True), input_check_threshold=1.0)
    for reject, status in ((False, 200), (True, 422)):
        client = make_client(folder, reject_out_of_distribution=reject)
        before = client.get("/metrics").text
        blank = png_bytes(np.zeros((48, 40), np.uint8))
        assert (
            client.post("/predict", content=blank, headers={"Content-Type": "image/png"}).status_code
            == status
        )
        after = client.get("/metrics").text
        assert (
            sample(after, "xray_out_of_distribution_total") - sample(before, "xray_out_of_distribution_total")
            == 1
        )
        assert (
            sample(after, "xray_uncertain_reasons_total", ensemble="classic", reason="out_of_distribution")
            - sample(before, "xray_uncertain_reasons_total", ensemble="classic", reason="out_of_distribution")
            == 1
        )
        assert (
            sample(after, "xray_requests_total", endpoint="/predict", status=str(status))
            - sample(before, "xray_requests_total", endpoint="/predict", status=str(status))
            == 1
        )


def test_model_info_reports_version_and_provider(client: TestClient) -> None:
    text = client.get("/metrics").text
    assert (
        sample(
            text, "xray_model_info", model="scratch", version="1.0.0-test", provider="CPUExecutionProvider"
        )
        == 1
    )


def test_unknown_paths_share_one_label(client: TestClient) -> None:
    client.get("/patients/Doe-John")
    text = client.get("/metrics").text
    assert "Doe-John" not in text
    assert sample(text, "xray_requests_total", endpoint="unmatched", status="404") == 1
