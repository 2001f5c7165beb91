"""End to end on a tiny configuration: train → export → calibrate → evaluate → the service answers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.core.config import Settings
from tests.conftest import wait_ready
from tests.factories import png_bytes
from tests.training.conftest import TINY_SIZES, synthetic_image
from training.data import Split
from training.distill import read_teacher_probabilities
from training.evaluate import UNWEIGHTED_MEAN
from training.input_check import DEFAULT_PASS_RATE
from xray.cli import main
from xray.contract.manifest import load_manifest, verify_model_files

pytestmark = pytest.mark.slow


def test_manifest_has_three_verified_models_with_calibration_and_records(trained: dict[str, Path]) -> None:
    models = trained["models"]
    manifest = load_manifest(models)
    verify_model_files(manifest, models)
    assert [m.name for m in manifest.models] == ["scratch", "inception_resnet_v2", "efficientnet_v2_b2"]
    for entry in manifest.models:
        assert entry.version == "0.0.1-test"
        assert entry.input.height == TINY_SIZES[entry.name]
        assert entry.input.channels == 1
        assert entry.gradcam is not None
        assert entry.outputs.class_maps == "class_maps"
        assert 0.05 <= entry.temperature <= 20
        validation = entry.metrics["validation"]
        assert validation["nll_calibrated"] <= validation["nll_uncalibrated"] + 1e-9
        assert entry.metrics["export_parity"]["probabilities_max_abs_diff"] <= 1e-4
        assert set(entry.metrics["test"]) == {"pooled", "site-a", "site-b"}
        assert entry.training["config"]["arch"] == entry.name
        assert entry.training["epochs_run"] == 1
        assert entry.data["splits"]["test"]["all"]
        assert entry.framework["tf2onnx"]
    check = manifest.input_check
    assert check is not None  # every new model set gets its input check
    assert check.method == "mahalanobis"
    assert all(entry.outputs.features == "features" for entry in manifest.models)
    assert check.metrics["validation_pass_rate"] >= DEFAULT_PASS_RATE
    assert set(check.metrics["test"]) == {"pooled", "site-a", "site-b"}
    assert set(check.selection["compared_on_non_chest_images"]) == {"mahalanobis", "energy"}
    ensembles = manifest.ensembles
    assert len(ensembles.confidence.order) == 2
    assert "validation" in ensembles.selection["data"]
    # Weights are kept only when they beat the unweighted mean; either way the choice is recorded,
    # and with weights the card's tables also carry the unweighted mean.
    assert {"unweighted_val_macro_f1", "best_weights", "single_model_val_macro_f1"} <= set(
        ensembles.selection
    )
    # abstain_below is chosen by the binomial bound of the answered cases' validation accuracy.
    selection = ensembles.selection
    assert selection["abstain_goal_confidence"] == 0.95
    bound = selection["abstain_val_accuracy_kept_lower_bound"]
    assert 0 <= bound <= selection["abstain_val_accuracy_kept"]
    assert selection["abstain_goal_reached"] == (bound >= selection["abstain_goal_accuracy"])
    weighted = {UNWEIGHTED_MEAN} if ensembles.classic.weights is not None else set()
    assert set(ensembles.metrics["test"]) == {"classic", "confidence", *weighted}


def test_split_is_by_patient_and_recorded(trained: dict[str, Path]) -> None:
    split = json.loads((trained["runs"] / "split.json").read_text())
    groups = {name: {row["group"] for row in rows} for name, rows in split.items()}
    assert not groups["train"] & groups["val"]
    assert not groups["train"] & groups["test"]
    assert not groups["val"] & groups["test"]


def test_report_and_plots_are_written(trained: dict[str, Path]) -> None:
    report = trained["runs"] / "report"
    text = (report / "report.md").read_text()
    assert "Not for clinical use" in text
    for scope in ("pooled", "site-a", "site-b"):
        assert f"## {scope}" in text
        for kind in ("confusion", "roc", "reliability"):
            plot = report / f"{kind}-{scope}.png"
            assert plot.stat().st_size > 1000
            assert plot.read_bytes().startswith(b"\x89PNG")
            assert f"({kind}-{scope}.png)" in text
    metrics = json.loads((report / "report.json").read_text())["metrics"]
    for name in ("scratch", "inception_resnet_v2", "efficientnet_v2_b2", "classic", "confidence"):
        assert {"accuracy", "macro_f1", "ece", "confusion_matrix", "per_class"} <= set(
            metrics["pooled"][name]
        )
    # The white-box check ran the served predictors again on the non-tuberculosis test images.
    box = json.loads((report / "report.json").read_text())["white_box"]
    assert box["images"] == sum(
        metrics["pooled"]["scratch"]["per_class"][label]["support"] for label in ("normal", "pneumonia")
    )
    assert set(box["called"]) == {
        "scratch",
        "inception_resnet_v2",
        "efficientnet_v2_b2",
        "classic",
        "confidence",
    }
    assert all(0.0 <= shares["with"] <= 1.0 for shares in box["called"].values())
    assert "## White-box check" in text


def test_runs_keep_checkpoints_and_logs(trained: dict[str, Path]) -> None:
    for arch in TINY_SIZES:
        run = trained["runs"] / arch
        assert (run / "best.keras").is_file()
        assert (run / "last.keras").is_file()
        with (run / "history.csv").open() as handle:
            rows = list(csv.DictReader(handle))
        assert len(rows) == 1
        assert "val_macro_f1" in rows[0]
        assert json.loads((run / "summary.json").read_text())["train_images_per_second"] > 0


def test_the_service_loads_the_result_and_predicts(trained: dict[str, Path]) -> None:
    with TestClient(create_app(Settings(models_dir=trained["models"]))) as client:
        wait_ready(client)
        response = client.post(
            "/predict", content=png_bytes(synthetic_image(2, seed=999)), headers={"Content-Type": "image/png"}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body["models"]) == set(TINY_SIZES)
        assert body["model_versions"] == dict.fromkeys(TINY_SIZES, "0.0.1-test")
        assert body["ensembles"]["confidence"]["decided_by"] in {*TINY_SIZES, "classic"}
        assert body["input_check"]["method"] == "mahalanobis"


def test_resume_continues_from_the_last_epoch(trained: dict[str, Path], tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    common = ["train", "--data", str(trained["data"]), "--runs", str(runs), "--arch", "scratch",
              "--image-size", "32", "--batch-size", "8", "--no-export"]  # fmt: skip
    assert main([*common, "--epochs", "1"]) == 0
    # A resumed segment that diverges exits with an error and leaves the checkpoint as it was.
    assert main([*common, "--epochs", "2", "--resume", "--learning-rate", "1e6"]) == 1
    assert json.loads((runs / "scratch" / "state.json").read_text())["epoch"] == 0
    assert main([*common, "--epochs", "2", "--resume"]) == 0
    with (runs / "scratch" / "history.csv").open() as handle:
        epochs = [int(row["epoch"]) for row in csv.DictReader(handle)]
    assert epochs == [0, 1]
    assert json.loads((runs / "scratch" / "state.json").read_text())["epoch"] == 1


def test_model_card_is_written_from_the_manifest_with_the_plots(trained: dict[str, Path]) -> None:
    models = trained["models"]
    card = (models / "README.md").read_text()
    assert "Not for clinical use" in card
    for heading in ("## Intended use", "## Data", "## Training", "## Test metrics", "## Calibration",
                    "## Limitations", "Known confound"):  # fmt: skip
        assert heading in card
    manifest = load_manifest(models)
    for entry in manifest.models:
        pooled = entry.metrics["test"]["pooled"]
        # The row of each model carries the manifest's own numbers, not a separate computation.
        prefix = f"| `{entry.name}` | {pooled['count']} |"
        row = next(line for line in card.splitlines() if line.startswith(prefix))
        assert f"{pooled['macro_f1']:.3f}" in row
        assert f"{entry.temperature:.3f}" in card
    for scope in ("pooled", "site-a", "site-b"):
        assert f"### {scope}" in card
        for kind in ("confusion", "roc", "reliability"):
            assert f"(report/{kind}-{scope}.png)" in card
            assert (models / "report" / f"{kind}-{scope}.png").read_bytes().startswith(b"\x89PNG")


def test_a_run_started_from_another_continues_its_curve(tmp_path: Path) -> None:
    from training.workflow import training_curve

    parent, child = tmp_path / "gpu" / "scratch", tmp_path / "anneal" / "scratch"
    for folder, rows, init in (
        (parent, [(10.0, 0.5), (20.0, 0.7)], None),
        (child, [(5.0, 0.72)], parent / "best.keras"),
    ):
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(
            json.dumps({"arch": "scratch", "init_weights": str(init) if init else None})
        )
        history = [{"elapsed_seconds": s, "val_macro_f1": f} for s, f in rows]
        (folder / "state.json").write_text(json.dumps({"history": history}))
    assert training_curve(parent) == [[10.0, 0.5], [20.0, 0.7]]
    assert training_curve(child) == [[10.0, 0.5], [20.0, 0.7], [25.0, 0.72]]


def test_the_log_names_the_devices_once_without_native_noise(trained: dict[str, Path]) -> None:
    from training.runtime import nvidia_driver_present

    log = trained["log"].read_text()
    assert len([line for line in log.splitlines() if "INFO training.runtime devices: " in line]) == 1
    assert "Could not find cuda drivers" not in log
    if not nvidia_driver_present():
        assert "cuInit" not in log
        assert "(no NVIDIA driver on this machine)" in log


def test_models_go_beside_the_run_by_default_not_over_the_bundle(trained: dict[str, Path]) -> None:
    assert (trained["runs"] / "models" / "manifest.json").is_file()


def test_an_ensembles_answers_on_the_training_split_become_a_teacher_file(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "teacher.csv"
    args = ["teacher-targets", "--data", str(trained["data"]), "--runs", str(trained["runs"])]
    assert main([*args, "--out", str(out)]) == 0
    train_records = Split.load(trained["runs"] / "split.json").train
    teacher = read_teacher_probabilities(out, train_records)  # one row per training image, in any order
    assert teacher.shape == (len(train_records), 3)
    np.testing.assert_allclose(teacher.sum(axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="no predictor 'nonesuch'"):
        main([*args, "--out", str(out), "--predictor", "nonesuch"])
