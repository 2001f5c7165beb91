"""The model card's before/after table: the replaced bundle against the new one, on the same images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from training.model_card import BASELINE_DIR, _comparison_section


def _metrics(score: float) -> dict[str, Any]:
    per_class = {label: {"f1": score, "recall": score} for label in ("normal", "pneumonia", "tuberculosis")}
    return {"macro_f1": score, "pneumonia_vs_normal_auc": score, "per_class": per_class}


def _report(folder: Path, score: float, versions: dict[str, str], held_out: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    document = {
        "metrics": {scope: {"scratch": _metrics(score)} for scope in ("pooled", "kaggle-mix")},
        "context": {
            "images": 12,
            "versions": versions,
            "images_fingerprint": "same-images",
            "models_split_fingerprints": held_out,
        },
    }
    (folder / "report.json").write_text(json.dumps(document))


@pytest.mark.parametrize(
    ("old_split", "fair"),
    [("same-images", True), ("another-split", False)],
    ids=["same-split", "other-split"],
)
def test_before_and_after_says_whether_the_old_bundle_saw_these_images(
    tmp_path: Path, old_split: str, fair: bool
) -> None:
    _report(tmp_path, 0.8, {"scratch": "3.0.0"}, {"scratch": "same-images"})
    _report(tmp_path / BASELINE_DIR, 0.7, {"scratch": "2.0.0"}, {"scratch": old_split})
    text = "\n".join(_comparison_section(tmp_path))
    assert "`scratch` 2.0.0" in text
    assert "| macro-F1, pooled | 0.700 → 0.800 |" in text
    assert "| F1 tuberculosis, kaggle-mix | 0.700 → 0.800 |" in text
    assert ("the comparison is fair" in text) is fair
    assert ("favours them" in text) is not fair


def test_without_a_baseline_there_is_no_section(tmp_path: Path) -> None:
    _report(tmp_path, 0.8, {"scratch": "3.0.0"}, {"scratch": "same-images"})
    assert _comparison_section(tmp_path) == []
