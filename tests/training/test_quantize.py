"""INT8 export: the served file is quantized, compared with float, and still explains exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.core.config import Settings
from service.inference.predictor import load_predictor
from tests.conftest import wait_ready
from tests.factories import png_bytes
from tests.training.conftest import synthetic_image, write_labelled_images
from training.architectures import build_model
from training.config import SplitConfig, TrainConfig
from training.data import Split, labels_of, read_dataset, split_by_group
from training.workflow import compare_quantized, export_and_calibrate, float_original
from xray.cli import main
from xray.contract.manifest import file_sha256, load_manifest, verify_model_files
from xray.contract.preprocessing import decode_image

pytestmark = pytest.mark.slow


def _export_int8_scratch(tmp_path: Path, *, by_flag: bool = False) -> tuple[Split, Path, Path]:
    """An untrained scratch network exported as INT8; returns the split, runs and models folders.

    INT8 comes from the run's recipe, or with `by_flag` from `xray export --quantize int8` on a
    float recipe.
    """
    data = write_labelled_images(tmp_path / "data", per_class=12)
    split = split_by_group(read_dataset(data), SplitConfig())
    runs, models = tmp_path / "runs", tmp_path / "models"
    run = runs / "scratch"
    run.mkdir(parents=True)
    recipe = TrainConfig(arch="scratch", image_size=32, quantize="none" if by_flag else "int8")
    (run / "config.json").write_text(recipe.model_dump_json())
    build_model("scratch", 32).model.save(run / "best.keras")
    if by_flag:
        command = ["export", "--run", str(run), "--data", str(data), "--runs", str(runs),
                   "--models-dir", str(models), "--version", "q1", "--quantize", "int8"]  # fmt: skip
        assert main(command) == 0
    else:
        export_and_calibrate(run, models, split, runs / "cache", version="q1")
    return split, runs, models


def test_int8_export_is_served_with_its_comparison_to_float(tmp_path: Path) -> None:
    split, runs, models = _export_int8_scratch(tmp_path)
    run = runs / "scratch"

    entry = load_manifest(models).model("scratch")
    verify_model_files(load_manifest(models), models)
    assert entry.file == "scratch.int8.onnx"
    assert not (models / "scratch.onnx").exists()
    assert (run / "scratch.float.onnx").is_file()
    quantization = entry.quantization
    assert quantization is not None
    assert quantization["int8_bytes"] < quantization["float_bytes"]
    assert 0.0 <= quantization["val_top1_agreement_with_float"] <= 1.0
    assert quantization["calibration_images"] == min(64, len(split.train))
    with TestClient(create_app(Settings(models_dir=models))) as client:
        wait_ready(client)
        image = png_bytes(synthetic_image(1, seed=3))
        response = client.post(
            "/explain?target=pneumonia", content=image, headers={"Content-Type": "image/png"}
        )
        assert response.status_code == 200, response.text
        assert np.isclose(sum(response.json()["models"]["scratch"]["probabilities"].values()), 1.0)


def test_int8_is_compared_with_its_float_original_per_source(tmp_path: Path) -> None:
    split, runs, models = _export_int8_scratch(tmp_path, by_flag=True)

    comparison = compare_quantized(models, runs, split.test, runs / "cache")

    scores = comparison["scratch"]
    sources = {record.source for record in split.test}
    assert set(scores) == {"pooled", *sources}
    assert sum(scores[source]["count"] for source in sources) == scores["pooled"]["count"] == len(split.test)
    # The INT8 side is what the service serves: its accuracy is the service's own on these images.
    served = load_predictor(Settings(models_dir=models)).predict(
        [decode_image(record.path.read_bytes()) for record in split.test]
    )
    served_labels = [prediction.models["scratch"].label_index for prediction in served]
    expected = np.mean(np.asarray(served_labels) == labels_of(split.test))
    assert scores["pooled"]["accuracy_int8"] == pytest.approx(expected)
    for scope in scores.values():
        assert 0.0 <= scope["top1_agreement"] <= 1.0
        assert {"macro_f1_float32", "macro_f1_int8", "accuracy_float32"} <= set(scope)


def test_the_float_original_is_found_by_its_checksum_whatever_the_run_folder(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    (runs / "scratch-v2").mkdir(parents=True)  # not `<runs>/<model name>`
    (runs / "other").mkdir()
    (runs / "scratch-v2" / "scratch.float.onnx").write_bytes(b"the original")
    (runs / "other" / "scratch.float.onnx").write_bytes(b"another run's")
    quantization = {"float_file_sha256": file_sha256(runs / "scratch-v2" / "scratch.float.onnx")}
    assert float_original(runs, quantization) == runs / "scratch-v2" / "scratch.float.onnx"
    assert float_original(runs, {"float_file_sha256": "0" * 64}) is None
    assert float_original(tmp_path / "absent", quantization) is None


def test_a_missing_float_original_is_reported_not_skipped_silently(tmp_path: Path) -> None:
    split, runs, models = _export_int8_scratch(tmp_path)
    (runs / "scratch" / "scratch.float.onnx").unlink()
    comparison = compare_quantized(models, runs, split.test, runs / "cache")
    assert comparison["scratch"]["skipped"].startswith("no *.float.onnx with sha256 ")
