"""The model card: before/after and the stored-size check from the test report, and the recipe's rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.factories import default_specs, write_models_dir
from training.model_card import (
    BASELINE_DIR,
    _abstention_lines,
    _comparison_section,
    _distillation,
    _input_check_section,
    _read_report,
    _recipe_rows,
    _stored_size_section,
    _white_box_section,
)
from xray.contract.manifest import InputCheckSpec, load_manifest


def _metrics(score: float) -> dict[str, Any]:
    per_class = {label: {"f1": score, "recall": score} for label in ("normal", "pneumonia", "tuberculosis")}
    return {"macro_f1": score, "pneumonia_vs_normal_auc": score, "per_class": per_class}


def _report(score: float, versions: dict[str, str], held_out: dict[str, str]) -> dict[str, Any]:
    return {
        "metrics": {scope: {"scratch": _metrics(score)} for scope in ("pooled", "kaggle-mix")},
        "context": {
            "images": 12,
            "versions": versions,
            "images_fingerprint": "same-images",
            "models_split_fingerprints": held_out,
        },
    }


@pytest.mark.parametrize(
    ("old_split", "fair"),
    [("same-images", True), ("another-split", False)],
    ids=["same-split", "other-split"],
)
def test_before_and_after_says_whether_the_old_bundle_saw_these_images(
    tmp_path: Path, old_split: str, fair: bool
) -> None:
    # As the card finds them: this bundle's report, and the replaced bundle's beside it.
    (tmp_path / BASELINE_DIR).mkdir()
    (tmp_path / "report.json").write_text(
        json.dumps(_report(0.8, {"scratch": "3.0.0"}, {"scratch": "same-images"}))
    )
    (tmp_path / BASELINE_DIR / "report.json").write_text(
        json.dumps(_report(0.7, {"scratch": "2.0.0"}, {"scratch": old_split}))
    )
    text = "\n".join(
        _comparison_section(
            _read_report(tmp_path / "report.json"), _read_report(tmp_path / BASELINE_DIR / "report.json")
        )
    )
    assert "`scratch` 2.0.0" in text
    assert "| macro-F1, pooled | 0.700 → 0.800 |" in text
    assert "| F1 tuberculosis, kaggle-mix | 0.700 → 0.800 |" in text
    assert ("the comparison is fair" in text) is fair
    assert ("favours them" in text) is not fair


def test_without_a_baseline_there_is_no_section(tmp_path: Path) -> None:
    assert _read_report(tmp_path / BASELINE_DIR / "report.json") is None
    assert _comparison_section(_report(0.8, {"scratch": "3.0.0"}, {"scratch": "same-images"}), None) == []


def test_the_stored_size_check_lists_the_sources_that_mix_sizes() -> None:
    def group(tb: int, recall: float) -> dict[str, Any]:
        return {
            "images": {"normal": 20, "pneumonia": 0, "tuberculosis": tb},
            "recall": {"scratch": {"normal": 0.9, "pneumonia": None, "tuberculosis": recall}},
        }

    metrics = {
        "pooled": {"by_stored_size": {"< 384 px": group(30, 0.9), ">= 384 px": group(40, 0.3)}},
        "kaggle-mix": {"by_stored_size": {"< 384 px": group(30, 0.9), ">= 384 px": group(40, 0.3)}},
        "nih-cxr14": {"by_stored_size": {}},
    }
    text = "\n".join(
        _stored_size_section({"metrics": metrics, "context": {}}, ["normal", "pneumonia", "tuberculosis"])
    )
    assert "**kaggle-mix**" in text
    assert "nih-cxr14" not in text
    assert "**pooled**" not in text  # sizes there mostly tell sources apart
    assert "| tuberculosis | >= 384 px | 40 | 0.300 |" in text
    assert "pneumonia |" not in text  # in neither group
    assert "Largest recall gap between the two sizes: 0.60 (`scratch`, tuberculosis)." in text


def test_without_a_report_there_is_no_stored_size_check() -> None:
    assert _stored_size_section(None, ["normal"]) == []


def test_the_recipe_names_the_teacher_a_model_distilled_from() -> None:
    record = {
        "targets": "teacher.csv",
        "sha256": "ab" * 32,
        "weight": 0.5,
        "temperature": 2.0,
        "teacher_train_accuracy": 0.9374,
    }
    assert _distillation(record) == (
        "from a teacher's probabilities (teacher.csv, sha256 abababababab…): weight 0.5, temperature 2.0; "
        "its top class was the label on 0.937 of the training images"
    )
    assert _distillation(None) is None  # the row reads "–" for models trained on labels alone


def test_the_recipe_rows_say_how_the_input_is_equalised(tmp_path: Path) -> None:
    folder = write_models_dir(tmp_path, default_specs())
    manifest = load_manifest(folder)
    entry = manifest.models[0]
    histogram = entry.input.model_copy(update={"equalization": "histogram"})
    equalized = entry.model_copy(update={"input": histogram})
    assert dict(_recipe_rows(entry))["input equalisation"] == "none"
    assert dict(_recipe_rows(equalized))["input equalisation"] == "histogram"


def test_the_card_shows_the_white_box_check_when_the_report_has_it() -> None:
    check = {
        "images": 344,
        "target": "tuberculosis",
        "seed": 0,
        "called": {"scratch": {"without": 0.04, "with": 0.11}, "classic": {"without": 0.03, "with": 0.09}},
    }
    section = _white_box_section({"metrics": {}, "white_box": check})
    assert section[-1] == ""  # a blank line ends the table before the next heading
    text = "\n".join(section)
    assert "## A shortcut check: one white box" in text
    assert "the 344 images not labelled tuberculosis" in text
    assert "| `scratch` | 0.040 | 0.110 |" in text
    assert _white_box_section({"metrics": {}}) == []  # a report from before the check
    assert _white_box_section(None) == []


@pytest.mark.parametrize(
    ("highest_views", "says"),
    [(None, "score is their mean."), (2, "score is the mean of an image's 2 highest")],
    ids=["all-views", "two-highest"],
)
def test_the_input_check_section_says_how_the_views_are_combined(
    tmp_path: Path, highest_views: int | None, says: str
) -> None:
    manifest = load_manifest(write_models_dir(tmp_path, default_specs()))
    spec = InputCheckSpec(
        method="mahalanobis",
        file="input_check.npz",
        sha256="0" * 64,
        threshold=5.0,
        highest_views=highest_views,
    )
    text = " ".join(_input_check_section(manifest.model_copy(update={"input_check": spec})))
    assert says in text
    assert "The threshold, 5.000," in text


def test_the_card_gives_the_bound_the_abstention_threshold_was_chosen_by() -> None:
    selection = {"abstain_val_coverage": 0.391, "abstain_val_accuracy_kept": 0.978}
    assert " ".join(_abstention_lines(selection)) == (
        "On validation that leaves 39.1% of the images answered without doubt, 97.8% of them correctly;"
        " the test split's figures are in the tables of the metrics section."
    )  # a manifest from before the bound
    bounded = {
        **selection,
        "abstain_goal_confidence": 0.95,
        "abstain_goal_reached": True,
        "abstain_val_accuracy_kept_lower_bound": 0.9512,
    }
    text = " ".join(_abstention_lines(bounded))
    assert "97.8% of them correctly (with 95% confidence at least 95.1%:" in text
    assert "no threshold reached" not in text
    missed = " ".join(_abstention_lines({**bounded, "abstain_goal_reached": False}))
    assert "no threshold reached the goal, so this is the most the ensemble abstains on" in missed
    assert _abstention_lines({}) == []
