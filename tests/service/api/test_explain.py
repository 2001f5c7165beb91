"""POST /explain with Grad-CAM."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.inference.gradcam import normalise, upsample
from tests.factories import ModelSpec, gradient, png_bytes

# Positive map weights for pneumonia and tuberculosis, negative for normal (see intensity_model).
SPECS = [
    ModelSpec("scratch", weights=[-1.0, 2.0, 3.0], bias=[0.5, 0.0, 0.0], height=64, width=64, with_maps=True),
    ModelSpec(
        "efficientnet_v2_b2",
        weights=[-2.0, 1.0, 4.0],
        bias=[1.0, 0.0, 0.0],
        height=32,
        width=32,
        with_maps=True,
    ),
]


@pytest.fixture
def explainer(make_client: Callable[..., TestClient], make_models: Callable[..., Path]) -> TestClient:
    return make_client(make_models(SPECS, order=["efficientnet_v2_b2"]))


def decode(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def test_maps_per_model_and_ensemble_at_the_image_size(explainer: TestClient) -> None:
    image = gradient(120, 90)
    response = explainer.post(
        "/explain?target=tuberculosis", content=png_bytes(image), headers={"Content-Type": "image/png"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body["explanations"]) == {"scratch", "efficientnet_v2_b2", "ensemble"}
    assert body["ensembles"]["classic"]["label"] in body["classes"]
    for name, explanation in body["explanations"].items():
        assert explanation["method"] == "gradcam"
        assert explanation["target"] == "tuberculosis"
        heat, overlay = decode(explanation["heatmap_png"]), decode(explanation["overlay_png"])
        assert heat.shape == (120, 90)
        assert overlay.shape == (120, 90, 3)
        if name != "ensemble":
            assert explanation["layer"] == f"{name}_features"
    # scratch: the map is the 64x64 input pooled by 8, normalised, upsampled back to 120x90.
    resized = np.asarray(Image.fromarray(image).resize((64, 64), Image.Resampling.BILINEAR), np.float32)
    expected = upsample(normalise(resized.reshape(8, 8, 8, 8).mean(axis=(1, 3))), 120, 90)
    heat = decode(body["explanations"]["scratch"]["heatmap_png"]).astype(np.float32) / 255
    assert np.abs(heat - expected).max() <= 1 / 255 + 1e-6


def test_a_large_image_is_explained_within_max_side_whatever_its_size(
    make_client: Callable[..., TestClient], make_models: Callable[..., Path]
) -> None:
    client = make_client(make_models(SPECS, order=["efficientnet_v2_b2"]), explain_max_side=512)
    large = png_bytes(gradient(2400, 1000))
    for extra, expected in (({}, (512, 213)), ({"max_side": "128"}, (128, 53))):
        response = client.post(
            "/explain",
            params={"include_image": "true", **extra},
            content=large,
            headers={"Content-Type": "image/png"},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert decode(body["image_png"]).shape == expected
        for explanation in body["explanations"].values():
            assert (explanation["height"], explanation["width"]) == expected
            assert decode(explanation["heatmap_png"]).shape == expected
            assert decode(explanation["overlay_png"]).shape == (*expected, 3)
    beyond = client.post("/explain?max_side=1024", content=large, headers={"Content-Type": "image/png"})
    assert beyond.status_code == 422
    assert "max_side" in beyond.json()["detail"]


def test_a_target_with_negative_evidence_gives_an_empty_map(explainer: TestClient) -> None:
    response = explainer.post(
        "/explain?target=normal&models=scratch",
        content=png_bytes(gradient()),
        headers={"Content-Type": "image/png"},
    )
    assert response.status_code == 200
    assert set(response.json()["explanations"]) == {"scratch", "ensemble"}
    assert decode(response.json()["explanations"]["scratch"]["heatmap_png"]).max() == 0


@pytest.mark.parametrize(
    "query",
    ["target=covid", "models=resnet", "models=,", "method=lime"],
    ids=["unknown-target", "unknown-model", "empty-models", "unknown-method"],
)
def test_bad_parameters_are_422(explainer: TestClient, query: str) -> None:
    response = explainer.post(
        f"/explain?{query}", content=png_bytes(gradient()), headers={"Content-Type": "image/png"}
    )
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")


def test_a_model_without_maps_is_refused(client: TestClient) -> None:
    response = client.post("/explain", content=png_bytes(gradient()), headers={"Content-Type": "image/png"})
    assert response.status_code == 422
    assert "exported with Grad-CAM maps" in response.json()["detail"]


def test_a_model_without_maps_is_refused_when_named(
    make_client: Callable[..., TestClient], make_models: Callable[..., Path]
) -> None:
    specs = [*SPECS, ModelSpec("inception_resnet_v2", probabilities=[0.2, 0.3, 0.5])]
    client = make_client(make_models(specs, order=["efficientnet_v2_b2"]))
    named = client.post(
        "/explain?models=inception_resnet_v2",
        content=png_bytes(gradient()),
        headers={"Content-Type": "image/png"},
    )
    assert named.status_code == 422
    assert "without Grad-CAM maps" in named.json()["detail"]
    default = client.post("/explain", content=png_bytes(gradient()), headers={"Content-Type": "image/png"})
    assert set(default.json()["explanations"]) == {"scratch", "efficientnet_v2_b2", "ensemble"}


class TestShap:
    def test_shap_maps_for_every_model_and_the_ensemble(self, explainer: TestClient) -> None:
        response = explainer.post(
            "/explain?method=shap&target=tuberculosis&max_evals=100",
            content=png_bytes(gradient(70, 50)),
            headers={"Content-Type": "image/png"},
        )
        assert response.status_code == 200, response.text
        explanations = response.json()["explanations"]
        assert set(explanations) == {"scratch", "efficientnet_v2_b2", "ensemble"}
        for explanation in explanations.values():
            assert explanation["method"] == "shap"
            assert "layer" not in explanation
            assert decode(explanation["heatmap_png"]).shape == (70, 50)
            assert decode(explanation["overlay_png"]).shape == (70, 50, 3)

    def test_shap_works_on_models_without_class_maps(self, client: TestClient) -> None:
        response = client.post(
            "/explain?method=shap&max_evals=50&models=scratch",
            content=png_bytes(gradient()),
            headers={"Content-Type": "image/png"},
        )
        assert response.status_code == 200, response.text

    def test_more_evaluations_than_the_budget_are_refused(
        self, make_client: Callable[..., TestClient], make_models: Callable[..., Path]
    ) -> None:
        client = make_client(make_models(SPECS, order=["efficientnet_v2_b2"]), shap_max_evals=200)
        response = client.post(
            "/explain?method=shap&max_evals=201",
            content=png_bytes(gradient()),
            headers={"Content-Type": "image/png"},
        )
        assert response.status_code == 422
        assert "budget of 200" in response.json()["detail"]

    def test_the_time_limit_stops_an_explanation_with_a_4xx(
        self, make_client: Callable[..., TestClient], make_models: Callable[..., Path]
    ) -> None:
        client = make_client(make_models(SPECS, order=["efficientnet_v2_b2"]), shap_time_limit_seconds=1e-6)
        response = client.post(
            "/explain?method=shap", content=png_bytes(gradient()), headers={"Content-Type": "image/png"}
        )
        assert response.status_code == 422
        assert response.json()["type"].endswith("explanation-limit")
        assert client.get("/health/ready").status_code == 200

    def test_without_the_shap_package_the_answer_is_501(
        self, explainer: TestClient, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import sys

        monkeypatch.setitem(sys.modules, "shap", None)  # makes `import shap` fail
        response = explainer.post(
            "/explain?method=shap", content=png_bytes(gradient()), headers={"Content-Type": "image/png"}
        )
        assert response.status_code == 501
        assert "explain` extra" in response.json()["detail"]


def test_server_timing_splits_inference_maps_and_rendering(explainer: TestClient) -> None:
    image = png_bytes(gradient(120, 90))
    explained = explainer.post("/explain", content=image, headers={"Content-Type": "image/png"})
    predicted = explainer.post("/predict", content=image, headers={"Content-Type": "image/png"})
    phases = {
        part.split(";")[0].strip(): float(part.split("dur=")[1])
        for part in explained.headers["Server-Timing"].split(",")
    }
    assert set(phases) == {"inference", "explain", "render"}
    assert all(value >= 0 for value in phases.values())
    assert phases["inference"] <= phases["explain"]  # the forward passes are part of `explain`
    assert predicted.headers["Server-Timing"].startswith("inference;dur=")


def test_include_image_returns_the_radiograph_as_decoded(explainer: TestClient) -> None:
    image = gradient(70, 50)
    without = explainer.post("/explain", content=png_bytes(image), headers={"Content-Type": "image/png"})
    assert "image_png" not in without.json()
    response = explainer.post(
        "/explain?include_image=true", content=png_bytes(image), headers={"Content-Type": "image/png"}
    )
    np.testing.assert_array_equal(decode(response.json()["image_png"]), image)


def test_overlays_false_returns_the_same_heatmaps_without_overlays(explainer: TestClient) -> None:
    image = png_bytes(gradient(70, 50))
    full = explainer.post("/explain", content=image, headers={"Content-Type": "image/png"}).json()
    lean = explainer.post("/explain?overlays=false", content=image, headers={"Content-Type": "image/png"})
    assert lean.status_code == 200, lean.text
    body = lean.json()
    assert set(body["explanations"]) == set(full["explanations"])
    for name, explanation in body["explanations"].items():
        assert "overlay_png" not in explanation
        assert explanation["heatmap_png"] == full["explanations"][name]["heatmap_png"]
        assert decode(full["explanations"][name]["overlay_png"]).shape == (70, 50, 3)
    assert body["models"] == full["models"]
