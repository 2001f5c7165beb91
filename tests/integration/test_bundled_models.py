"""The models bundled in `models/`: intact, documented, and as good as their manifest says.

The re-evaluation re-derives the test split from `../shared/data/cxr/labels.csv`, proves by the
manifest's fingerprint that it is the split the models were evaluated on, sends every test image
through `/predict` and recomputes the metrics recorded in the manifest (skipped without the data).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.core.config import Settings
from tests.conftest import REPO, wait_ready
from tests.factories import png_bytes
from tests.live_server import LiveServer, live_server
from training import non_chest
from training.config import SplitConfig
from training.data import Record, read_dataset, split_by_group
from training.evaluate import UNWEIGHTED_MEAN
from training.metrics import classification_metrics, pairwise_auc
from xray.contract.manifest import Manifest, load_manifest, verify_model_files
from xray.contract.preprocessing import decode_image

MODELS = REPO / "models"
ARCHITECTURES = ("scratch", "inception_resnet_v2", "efficientnet_v2_b2")
ENSEMBLES = ("classic", "confidence")
#: One test image of ~110 (NIH) flipping between runs moves accuracy by < 0.01; onnxruntime's
#: thread scheduling can flip a case that sits exactly on a decision boundary.
TOLERANCE = 0.011


@pytest.fixture(scope="module")
def manifest() -> Manifest:
    return load_manifest(MODELS)


def _scopes(manifest: Manifest) -> set[str]:
    """`pooled` and every source of the test split the bundle was evaluated on."""
    return {"pooled", *(s for s in manifest.models[0].data["splits"]["test"] if s != "all")}


def test_three_models_are_bundled_verified_and_within_the_size_budget(manifest: Manifest) -> None:
    verify_model_files(manifest, MODELS)  # raises on a missing file or a wrong sha256
    assert [entry.name for entry in manifest.models] == list(ARCHITECTURES)
    sizes = [(MODELS / entry.file).stat().st_size for entry in manifest.models]
    assert sum(sizes) <= 120 * 10**6, sizes
    for entry in manifest.models:
        assert entry.gradcam is not None
        assert entry.training["config"]["arch"] == entry.name
        assert entry.training["config"]["weights"] == "none"
        assert entry.training["last_epoch"] >= 1
        assert set(entry.metrics["test"]) == _scopes(manifest)
        assert entry.data["split_fingerprints"]["test"]
        if entry.quantization is not None:
            assert set(entry.quantization["test"]) == _scopes(manifest)
    # With ensemble weights, the card also reports the unweighted mean they were chosen over.
    unweighted = {UNWEIGHTED_MEAN} if manifest.ensembles.classic.weights is not None else set()
    assert set(manifest.ensembles.metrics["test"]) == {*ENSEMBLES, *unweighted}


def test_model_card_is_there_with_its_plots(manifest: Manifest) -> None:
    card = (MODELS / "README.md").read_text()
    assert "Not for clinical use" in card
    for scope in _scopes(manifest):
        for kind in ("confusion", "roc", "reliability"):
            assert f"(report/{kind}-{scope}.png)" in card
            assert (MODELS / "report" / f"{kind}-{scope}.png").is_file()
    for entry in manifest.models:
        assert f"{entry.metrics['test']['pooled']['macro_f1']:.3f}" in card


def _image_counts(manifest: Manifest) -> Counter[tuple[str, str]]:
    """(source, label) → images, over every split the bundle's manifest records."""
    counts: Counter[tuple[str, str]] = Counter()
    for split in manifest.models[0].data["splits"].values():
        for source, labels in split.items():
            if source != "all":
                counts.update({(source, label): count for label, count in labels.items()})
    return counts


def _test_split(shared_data: Path, manifest: Manifest) -> list[Record]:
    records = read_dataset(shared_data / "cxr")
    split = split_by_group(records, SplitConfig())
    recorded = {entry.data["split_fingerprints"]["test"] for entry in manifest.models}
    if recorded != {split.fingerprint("test")}:
        evaluated, present = _image_counts(manifest), Counter((r.source, r.label) for r in records)
        if evaluated != present:
            # Not a defect of the split: the data is another version than the one the bundle was
            # evaluated on, so its test split cannot be re-derived. Anything else still fails.
            pytest.skip(
                f"the bundle was evaluated on another version of the data ({sum(evaluated.values())} "
                f"images from {sorted({s for s, _ in evaluated})}); labels.csv now holds "
                f"{sum(present.values())} images from {sorted({s for s, _ in present})}, so the "
                "recorded test split cannot be re-derived until the bundle is retrained on it"
            )
    assert recorded == {split.fingerprint("test")}, "the data or the split differs from the one evaluated"
    return split.test


def _metrics(labels: np.ndarray, probabilities: np.ndarray, classes: list[str]) -> dict[str, Any]:
    metrics = classification_metrics(labels, probabilities, classes)
    metrics["pneumonia_vs_normal_auc"] = pairwise_auc(
        labels, probabilities, classes.index("pneumonia"), classes.index("normal")
    )
    return metrics


@pytest.mark.shared_data
@pytest.mark.slow
def test_bundled_models_reproduce_their_recorded_test_metrics_through_the_service(
    shared_data: Path, manifest: Manifest
) -> None:
    records = _test_split(shared_data, manifest)
    if sample := int(os.environ.get("XRAY_BUNDLED_SAMPLE", "0")):
        # A quicker, looser check: every `sample`-th image; only the recorded accuracy is compared.
        records = records[::sample]
    classes = list(manifest.classes)
    probabilities: dict[str, list[list[float]]] = {name: [] for name in (*ARCHITECTURES, *ENSEMBLES)}
    flagged: list[bool] = []
    uncertain: dict[str, list[bool]] = {name: [] for name in ENSEMBLES}
    with TestClient(create_app(Settings(models_dir=MODELS))) as client:
        wait_ready(client, timeout=120)
        for record in records:
            response = client.post(
                "/predict", content=record.path.read_bytes(), headers={"Content-Type": "image/jpeg"}
            )
            assert response.status_code == 200, response.text
            body = response.json()
            for name, result in (*body["models"].items(), *body["ensembles"].items()):
                probabilities[name].append([result["probabilities"][label] for label in classes])
            flagged.append(not body["input_check"]["in_distribution"])
            for name, result in body["ensembles"].items():
                uncertain[name].append(result["uncertain"])
    # The input check's false alarms on real chest radiographs: at most 3 % in every scope, as recorded.
    assert manifest.input_check is not None
    for scope, recorded_check in manifest.input_check.metrics["test"].items():
        mask = [scope in ("pooled", record.source) for record in records]
        share = float(np.mean(np.asarray(flagged)[mask]))
        assert share <= 0.03, (scope, share)
        if not sample:
            assert share == pytest.approx(recorded_check["flagged_out_of_distribution"], abs=TOLERANCE), scope
    labels = np.asarray([classes.index(record.label) for record in records])
    recorded = {entry.name: entry.metrics["test"] for entry in manifest.models}
    recorded |= manifest.ensembles.metrics["test"]
    keys = ("accuracy",) if sample else ("accuracy", "macro_f1", "macro_roc_auc", "pneumonia_vs_normal_auc")
    for scope in _scopes(manifest):
        mask = np.asarray([scope in ("pooled", record.source) for record in records])
        for name, rows in probabilities.items():
            measured = _metrics(labels[mask], np.asarray(rows)[mask], classes)
            for key in keys:
                if recorded[name][scope][key] is None:
                    continue
                tolerance = TOLERANCE
                if sample:  # a sample's accuracy spreads around the recorded one: three binomial SDs
                    accuracy = recorded[name][scope][key]
                    tolerance = max(TOLERANCE, 3 * np.sqrt(accuracy * (1 - accuracy) / mask.sum()))
                assert measured[key] == pytest.approx(recorded[name][scope][key], abs=tolerance), (
                    name,
                    scope,
                    key,
                )
    # What `uncertain` leaves answered, and how well: as recorded, and the answered pooled
    # accuracy at least the goal `abstain_below` was chosen for on validation.
    if not sample:
        for name, flags in uncertain.items():
            kept = ~np.asarray(flags)
            right = np.asarray(probabilities[name]).argmax(axis=1) == labels
            abstention = recorded[name]["pooled"]["abstention"]
            assert 1 - kept.mean() == pytest.approx(abstention["abstain_rate"], abs=TOLERANCE), name
            assert right[kept].mean() == pytest.approx(abstention["accuracy_kept"], abs=TOLERANCE), name
    goal = manifest.ensembles.selection["abstain_goal_accuracy"]
    assert recorded["classic"]["pooled"]["abstention"]["accuracy_kept"] >= goal


@pytest.fixture(scope="module")
def served() -> Iterator[LiveServer]:
    """`xray serve` on the bundled models, as the README starts it (its default models folder)."""
    with live_server() as server:
        yield server


@pytest.mark.shared_data
def test_xray_serve_answers_a_real_radiograph_with_the_bundled_models(
    shared_data: Path, served: LiveServer, manifest: Manifest
) -> None:
    image = next((shared_data / "cxr" / "images" / "tuberculosis").glob("*.jpg"))
    status, _, content = served.request(
        "POST", "/predict", image.read_bytes(), {"Content-Type": "image/jpeg"}
    )
    assert status == 200, content
    body = json.loads(content)
    assert body["model_versions"] == {entry.name: entry.version for entry in manifest.models}
    for result in (*body["models"].values(), *body["ensembles"].values()):
        assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)
    models = json.loads(served.request("GET", "/models")[2])
    assert {model["name"] for model in models["models"]} == set(ARCHITECTURES)


@pytest.fixture(scope="module")
def bundled_client() -> Iterator[TestClient]:
    with TestClient(create_app(Settings(models_dir=MODELS))) as client:
        wait_ready(client, timeout=120)
        yield client


def _input_check(client: TestClient, content: bytes, content_type: str) -> dict[str, Any]:
    response = client.post("/predict", content=content, headers={"Content-Type": content_type})
    assert response.status_code == 200, response.text
    body = response.json()
    if not body["input_check"]["in_distribution"]:
        for ensemble in body["ensembles"].values():
            assert ensemble["uncertain"] is True
            assert "out_of_distribution" in ensemble["uncertain_reasons"]
    return dict(body["input_check"])


@pytest.mark.shared_data
def test_the_real_hip_radiographs_are_flagged_and_the_real_chest_dicoms_are_not(
    shared_data: Path, bundled_client: TestClient
) -> None:
    dicoms = shared_data / "dicom"
    hips = [
        "JPEGLSLossless__RG2_JLSL.dcm",
        "JPEGLosslessSV1__RG2_JPLL.dcm",
        "JPEGExtended__RG2_JPLY_fixed.dcm",
    ]
    for name in hips:
        check = _input_check(bundled_client, (dicoms / name).read_bytes(), "application/dicom")
        assert check["in_distribution"] is False, (name, check)
        assert check["method"] == "mahalanobis"
    for name in ("CR-MONO1-10-chest.dcm", "JPEG2000__RG1_J2KI.dcm"):
        check = _input_check(bundled_client, (dicoms / name).read_bytes(), "application/dicom")
        assert check["in_distribution"] is True, (name, check)


#: Share of each synthetic kind the bundled check must flag (see the card's input-check table):
#: the kinds with nothing of a radiograph in them, all; an inverted chest and a photograph-like scene
#: share much with a radiograph, and the check is known to miss some of them (an inverted chest is
#: flagged 30-75 % of the time, depending on the radiographs it is made from).
FLAGGED_AT_LEAST = {
    "blank": 1.0,
    "noise": 1.0,
    "text_page": 1.0,
    "ct_phantom": 1.0,
    "photograph": 0.7,
    "inverted_chest": 0.25,
}


@pytest.mark.shared_data
@pytest.mark.parametrize("kind", sorted(FLAGGED_AT_LEAST))
def test_synthetic_non_chest_images_are_flagged(
    kind: str, shared_data: Path, bundled_client: TestClient
) -> None:
    chests = [
        decode_image(path.read_bytes()).pixels
        for label in ("normal", "pneumonia", "tuberculosis")
        for path in sorted((shared_data / "cxr" / "images" / label).glob("*.jpg"))[::150][:4]
    ]
    images = non_chest.make(kind, 12, chests, seed=7)
    flagged = [
        not _input_check(bundled_client, png_bytes(image), "image/png")["in_distribution"] for image in images
    ]
    assert np.mean(flagged) >= FLAGGED_AT_LEAST[kind], flagged


def test_the_reevaluation_skips_only_when_the_data_is_another_version(
    tmp_path: Path, manifest: Manifest
) -> None:
    from tests.training.conftest import write_labelled_images

    write_labelled_images(tmp_path / "cxr", per_class=6)
    with pytest.raises(pytest.skip.Exception, match="another version of the data"):
        _test_split(tmp_path, manifest)  # other images than the manifest counts: another version
    split = split_by_group(read_dataset(tmp_path / "cxr"), SplitConfig())
    same_counts = {"splits": split.summary(), "split_fingerprints": {"test": "0" * 64}}
    altered = manifest.model_copy(
        update={"models": [entry.model_copy(update={"data": same_counts}) for entry in manifest.models]}
    )
    with pytest.raises(AssertionError, match="differs from the one evaluated"):
        _test_split(tmp_path, altered)  # the same data, another split: a defect, not a skip
