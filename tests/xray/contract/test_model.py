"""Sessions: provider choice, graph-vs-manifest checks, input preparation."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from service.core.config import Settings
from service.inference.predictor import load_predictor
from tests.factories import ModelSpec, gradient, png_bytes, sha256
from xray.contract.errors import ModelLoadError, ProviderUnavailableError
from xray.contract.images import equalize_histogram
from xray.contract.preprocessing import preprocess
from xray.contract.providers import CPU, resolve_providers


class TestProviders:
    def test_cpu_only(self) -> None:
        choice = resolve_providers(["cpu"], [CPU])
        assert choice.providers == [CPU]
        assert choice.missing == []

    def test_missing_cuda_falls_back_to_cpu_and_says_so(self) -> None:
        choice = resolve_providers(["cuda", "cpu"], ["AzureExecutionProvider", CPU])
        assert choice.providers == [CPU]
        assert choice.missing == ["CUDAExecutionProvider"]

    def test_cuda_first_when_present(self) -> None:
        choice = resolve_providers(["tensorrt", "cuda"], ["CUDAExecutionProvider", CPU])
        assert choice.providers == ["CUDAExecutionProvider", CPU]
        assert choice.missing == ["TensorrtExecutionProvider"]

    def test_strict_refuses_a_missing_provider(self) -> None:
        with pytest.raises(ProviderUnavailableError, match="CUDAExecutionProvider"):
            resolve_providers(["cuda"], [CPU], strict=True)

    def test_fallback_is_logged_and_reported(
        self, models_dir: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        predictor = load_predictor(Settings(models_dir=models_dir, providers=["cuda", "cpu"]))
        assert {model.provider for model in predictor.models.values()} == {CPU}
        assert "CUDAExecutionProvider" in caplog.text
        assert "unavailable" in caplog.text

    def test_strict_setting_stops_loading(self, models_dir: Path) -> None:
        with pytest.raises(ProviderUnavailableError):
            load_predictor(Settings(models_dir=models_dir, providers=["cuda"], strict_providers=True))


class TestGraphChecks:
    def rewrite(self, folder: Path, change) -> None:  # type: ignore[no-untyped-def]
        path = folder / "manifest.json"
        document = json.loads(path.read_text())
        change(document)
        path.write_text(json.dumps(document))

    def test_input_size_mismatch_names_the_model(self, models_dir: Path) -> None:
        self.rewrite(models_dir, lambda d: d["models"][0]["input"].update(height=64))
        with pytest.raises(ModelLoadError, match=r"'scratch': input dimension 1 is 32 in the graph but 64"):
            load_predictor(Settings(models_dir=models_dir))

    def test_unknown_output_name_is_refused(self, models_dir: Path) -> None:
        self.rewrite(models_dir, lambda d: d["models"][2]["outputs"].update(logits="scores"))
        with pytest.raises(ModelLoadError, match="no output 'scores'"):
            load_predictor(Settings(models_dir=models_dir))

    def test_wrong_input_name_is_refused(self, models_dir: Path) -> None:
        self.rewrite(models_dir, lambda d: d["models"][1]["input"].update(name="pixels"))
        with pytest.raises(ModelLoadError, match="no input 'pixels'"):
            load_predictor(Settings(models_dir=models_dir))

    def test_a_file_that_is_not_onnx_is_refused_with_its_name(self, models_dir: Path) -> None:
        path = models_dir / "scratch.onnx"
        path.write_bytes(b"definitely not a protobuf")
        self.rewrite(models_dir, lambda d: d["models"][0].update(sha256=sha256(path)))
        with pytest.raises(ModelLoadError, match=r"cannot load scratch\.onnx"):
            load_predictor(Settings(models_dir=models_dir))


@pytest.mark.parametrize(("channels", "layout"), [(1, "NHWC"), (3, "NHWC"), (1, "NCHW"), (3, "NCHW")])
def test_prepare_feeds_the_preprocessed_pixels_in_the_declared_layout(
    make_models: Callable[..., Path], channels: int, layout: str
) -> None:
    folder = make_models(
        [
            ModelSpec(
                "scratch",
                probabilities=[0.2, 0.3, 0.5],
                height=24,
                width=20,
                channels=channels,
                layout=layout,
            )
        ],
        order=["scratch"],
    )
    model = load_predictor(Settings(models_dir=folder)).models["scratch"]
    data = png_bytes(gradient(90, 70))
    from xray.contract.preprocessing import decode_image

    batch = model.prepare([decode_image(data).pixels])
    expected = preprocess(data, 24, 20).astype(np.float32)
    assert batch.dtype == np.float32
    channel_axis = 3 if layout == "NHWC" else 1
    assert batch.shape[channel_axis] == channels
    for channel in range(channels):
        plane = batch[0, ..., channel] if layout == "NHWC" else batch[0, channel]
        np.testing.assert_array_equal(plane, expected)


def test_a_declared_equalisation_is_applied_after_the_resize(make_models: Callable[..., Path]) -> None:
    folder = make_models(
        [ModelSpec("scratch", probabilities=[0.2, 0.3, 0.5], height=24, width=20)], order=["scratch"]
    )
    manifest = folder / "manifest.json"
    document = json.loads(manifest.read_text())
    document["models"][0]["input"]["equalization"] = "histogram"
    manifest.write_text(json.dumps(document))
    model = load_predictor(Settings(models_dir=folder)).models["scratch"]
    dark = np.round(gradient(90, 70).astype(np.float64) ** 2 / 255.0).astype(np.uint8)  # mostly low levels
    data = png_bytes(dark)
    from xray.contract.preprocessing import decode_image

    batch = model.prepare([decode_image(data).pixels])
    resized = preprocess(data, 24, 20)
    expected = equalize_histogram(resized)
    assert not np.array_equal(expected, resized)
    np.testing.assert_array_equal(batch[0, ..., 0], expected.astype(np.float32))
    # Float images (SHAP's masked ones) are rounded to levels first.
    np.testing.assert_array_equal(model.from_gray(resized[None] + np.float32(0.2)), batch)
