"""The manifest contract and the file checks that stop start-up."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xray.contract.errors import ChecksumMismatchError, ManifestError, ModelFileError
from xray.contract.manifest import load_manifest, verify_model_files


def edit_manifest(folder: Path, change) -> None:  # type: ignore[no-untyped-def]
    path = folder / "manifest.json"
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


def test_valid_manifest_loads_with_classes_models_and_ensembles(models_dir: Path) -> None:
    manifest = load_manifest(models_dir)
    assert manifest.classes == ["normal", "pneumonia", "tuberculosis"]
    assert [m.name for m in manifest.models] == ["scratch", "inception_resnet_v2", "efficientnet_v2_b2"]
    assert manifest.ensembles.confidence.order == ["efficientnet_v2_b2", "inception_resnet_v2"]
    assert manifest.ensembles.confidence.tau == 0.9
    assert set(verify_model_files(manifest, models_dir)) == {m.name for m in manifest.models}


def test_missing_manifest_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"no model manifest at .*manifest\.json"):
        load_manifest(tmp_path)


def test_invalid_json_is_reported(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        load_manifest(tmp_path)


def _weights(document: dict, value: float) -> dict[str, float]:  # type: ignore[type-arg]
    return {model["name"]: value for model in document["models"]}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["ensembles"]["confidence"].update(order=["resnet"]), "unknown model"),
        (lambda d: d["ensembles"].update(abstain_below=1.5), "abstain_below"),
        (lambda d: d["ensembles"]["confidence"].update(tau=0), "tau"),
        (lambda d: d["ensembles"].update(abstain_belo=0.5), "abstain_belo"),
        (lambda d: d["models"][0].update(sha256="abc"), "sha256"),
        (lambda d: d["models"][0].update(file="../escape.onnx"), "relative path inside"),
        (lambda d: d["models"][1].update(name="scratch"), "unique"),
        (lambda d: d.update(classes=["normal", "normal", "tb"]), "unique"),
        (lambda d: d["models"][0].update(temperature=0), "temperature"),
        (lambda d: d["models"][0]["input"].update(channels=2), "channels"),
        (lambda d: d["models"][0]["input"].update(equalization="clahe"), "equalization"),
        (lambda d: d.update(schema_version=2), "schema_version"),
        (lambda d: d["ensembles"].update(classic={"weights": {"scratch": 1.0}}), "every model"),
        (lambda d: d["ensembles"].update(classic={"weights": _weights(d, -1.0)}), ">= 0"),
        (lambda d: d["ensembles"].update(classic={"weights": _weights(d, 0.0)}), "> 0"),
    ],
    ids=[
        "order-unknown-model",
        "abstain-out-of-range",
        "tau-zero",
        "typo-in-key",
        "bad-sha",
        "path-traversal",
        "duplicate-model",
        "duplicate-class",
        "zero-temperature",
        "two-channels",
        "unknown-equalization",
        "future-schema",
        "weights-miss-a-model",
        "negative-weight",
        "all-weights-zero",
    ],
)
def test_contract_violations_are_refused(models_dir: Path, change, message: str) -> None:  # type: ignore[no-untyped-def]
    edit_manifest(models_dir, change)
    with pytest.raises(ManifestError, match=message):
        load_manifest(models_dir)


def test_wrong_sha256_names_the_file(models_dir: Path) -> None:
    edit_manifest(models_dir, lambda d: d["models"][1].update(sha256="0" * 64))
    with pytest.raises(ChecksumMismatchError, match=r"inception_resnet_v2\.onnx has sha256 [0-9a-f]{64}"):
        verify_model_files(load_manifest(models_dir), models_dir)


def test_modified_file_is_caught(models_dir: Path) -> None:
    with (models_dir / "scratch.onnx").open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ChecksumMismatchError, match=r"scratch\.onnx"):
        verify_model_files(load_manifest(models_dir), models_dir)


def test_missing_file_names_the_file(models_dir: Path) -> None:
    (models_dir / "efficientnet_v2_b2.onnx").unlink()
    with pytest.raises(ModelFileError, match=r"efficientnet_v2_b2\.onnx is missing"):
        verify_model_files(load_manifest(models_dir), models_dir)
