"""INT8 export: the served file is quantized, compared with float, and still explains exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.core.config import Settings
from service.inference.manifest import load_manifest, verify_model_files
from tests.conftest import wait_ready
from tests.factories import png_bytes
from tests.training.conftest import synthetic_image, write_labelled_images
from training.architectures import build_model
from training.config import SplitConfig, TrainConfig
from training.data import read_dataset, split_by_group
from training.workflow import export_and_calibrate

pytestmark = pytest.mark.slow


def test_int8_export_is_served_with_its_comparison_to_float(tmp_path: Path) -> None:
    split = split_by_group(
        read_dataset(write_labelled_images(tmp_path / "data", per_class=12)), SplitConfig(seed=0)
    )
    run, models = tmp_path / "runs" / "scratch", tmp_path / "models"
    run.mkdir(parents=True)
    (run / "config.json").write_text(
        TrainConfig(arch="scratch", image_size=32, quantize="int8").model_dump_json()
    )
    build_model("scratch", 32).model.save(run / "best.keras")

    export_and_calibrate(run, models, split, tmp_path / "cache", version="q1")

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
