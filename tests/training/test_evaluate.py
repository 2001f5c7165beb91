"""The evaluation report: metrics per source and predictor, Markdown, JSON and plots."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from tests.factories import png_bytes
from training.data import Record
from training.evaluate import (
    Predictions,
    by_stored_size,
    stored_size_lines,
    white_box_check,
    white_box_lines,
    write_report,
)
from xray.contract.images import DecodedImage

CLASSES = ["normal", "pneumonia", "tuberculosis"]


def predictions(count: int = 120) -> Predictions:
    rng = np.random.default_rng(0)
    sources = np.where(np.arange(count) % 2 == 0, "kaggle-mix", "nih-cxr14")
    labels = np.where(sources == "nih-cxr14", rng.integers(0, 2, count), rng.integers(0, 3, count))
    records = [
        Record(path=Path(f"/x/{i}.png"), label=CLASSES[label], group=str(i), source=str(source))
        for i, (label, source) in enumerate(zip(labels, sources, strict=True))
    ]

    def noisy(strength: float) -> np.ndarray:
        logits = rng.normal(0, 1, (count, 3))
        logits[np.arange(count), labels] += strength
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    probabilities = {"scratch": noisy(2.0), "efficientnet_v2_b2": noisy(3.0)}
    probabilities["classic"] = (probabilities["scratch"] + probabilities["efficientnet_v2_b2"]) / 2
    probabilities["confidence"] = probabilities["efficientnet_v2_b2"]
    uncertain = {name: probabilities[name].max(axis=1) < 0.6 for name in ("classic", "confidence")}
    decided = [
        "efficientnet_v2_b2" if p.max() >= 0.9 else "classic" for p in probabilities["efficientnet_v2_b2"]
    ]
    return Predictions(records, labels, probabilities, uncertain, decided)


def test_report_is_written_per_source_with_plots(tmp_path: Path) -> None:
    data = predictions()
    report = write_report(data, CLASSES, tmp_path, {"split": "test", "images": 120, "versions": {}})
    assert set(report) == {"pooled", "kaggle-mix", "nih-cxr14"}
    nih = report["nih-cxr14"]["efficientnet_v2_b2"]
    assert nih["per_class"]["tuberculosis"]["f1"] is None
    assert nih["pneumonia_vs_normal_auc"] is not None
    assert report["pooled"]["classic"]["abstention"]["abstain_rate"] == np.mean(data.uncertain["classic"])
    kept = report["pooled"]["confidence"]["abstention"]
    assert kept["accuracy_kept"] >= kept["accuracy_all"] >= kept["accuracy_abstained"]
    text = (tmp_path / "report.md").read_text()
    for scope in report:
        assert f"## {scope}" in text
        for kind in ("confusion", "roc", "reliability"):
            png = tmp_path / f"{kind}-{scope}.png"
            assert png.read_bytes().startswith(b"\x89PNG")
            assert f"]({kind}-{scope}.png)" in text
    stored = json.loads((tmp_path / "report.json").read_text())
    assert stored["metrics"]["pooled"]["scratch"]["macro_f1"] == report["pooled"]["scratch"]["macro_f1"]


def test_recall_is_broken_down_by_stored_size_where_a_source_mixes_sizes(tmp_path: Path) -> None:
    # kaggle-mix: tuberculosis stored at 256 px is found, at 512 px missed (called normal), as an
    # archive shortcut would do; nih-cxr14 is stored at one size only.
    data = predictions(240)
    kaggle = np.asarray([r.source == "kaggle-mix" for r in data.records])
    small = kaggle & (np.arange(len(data.labels)) % 4 == 0)
    data.stored_sides = np.where(small, 256, 512)
    tb = data.labels == 2
    answer = data.probabilities["scratch"].copy()
    answer[tb & small] = [0.1, 0.1, 0.8]
    answer[tb & ~small] = [0.8, 0.1, 0.1]
    data.probabilities["scratch"] = answer
    report = write_report(data, CLASSES, tmp_path, {"split": "test", "images": 240, "versions": {}})
    groups = report["kaggle-mix"]["by_stored_size"]
    assert list(groups) == ["< 384 px", ">= 384 px"]
    assert groups["< 384 px"]["images"]["tuberculosis"] == int((tb & small).sum()) >= 10
    assert groups["< 384 px"]["recall"]["scratch"]["tuberculosis"] == 1.0
    assert groups[">= 384 px"]["recall"]["scratch"]["tuberculosis"] == 0.0
    assert report["nih-cxr14"]["by_stored_size"] == {}  # one size: nothing to compare
    assert groups[">= 384 px"]["recall"]["efficientnet_v2_b2"]["pneumonia"] is not None
    text = (tmp_path / "report.md").read_text()
    assert "| tuberculosis | < 384 px |" in text
    assert "Largest recall gap between the two sizes: 1.00 (`scratch`, tuberculosis)." in text


def test_without_stored_sizes_there_is_no_breakdown() -> None:
    data = predictions()  # sides unknown (0)
    assert by_stored_size(data, CLASSES) == {}
    assert stored_size_lines({}, CLASSES) == []


class _BoxReader:
    """Stands in for the service's predictor: `fooled` calls tuberculosis wherever it sees pure white,
    `steady` never does; both ensembles follow `fooled`."""

    classes = tuple(CLASSES)
    models = ("fooled", "steady")
    manifest = SimpleNamespace(ensembles=SimpleNamespace(classic=SimpleNamespace(weights=None)))

    def predict(self, images: Sequence[DecodedImage]) -> list[Any]:
        answers = []
        for image in images:
            boxed = bool(np.any(image.pixels == 255))
            fooled = SimpleNamespace(
                probabilities=np.array([0.1, 0.1, 0.8] if boxed else [0.8, 0.1, 0.1]),
                uncertain=False,
                decided_by=None,
            )
            steady = SimpleNamespace(probabilities=np.array([0.7, 0.2, 0.1]))
            answers.append(
                SimpleNamespace(
                    models={"fooled": fooled, "steady": steady},
                    ensembles={"classic": fooled, "confidence": fooled},
                    input_check=SimpleNamespace(in_distribution=True),
                )
            )
        return answers


def test_the_white_box_check_counts_calls_of_the_target_with_and_without_a_box(tmp_path: Path) -> None:
    labels = np.array([0, 1, 2, 0, 1, 2, 0])  # five images not labelled tuberculosis
    records = []
    for i, label in enumerate(labels):
        path = tmp_path / f"{i}.png"
        path.write_bytes(png_bytes(np.full((40, 60), 90, np.uint8)))  # not square, no white
        records.append(Record(path=path, label=CLASSES[label], group=str(i), source="kaggle-mix"))
    plain = np.tile([0.8, 0.1, 0.1], (len(labels), 1))
    plain[1] = [0.1, 0.1, 0.8]  # one pneumonia image already called tuberculosis without a box
    probabilities = {
        name: plain for name in ("fooled", "steady", "classic", "confidence", "classic_unweighted")
    }
    uncertain = {name: np.zeros(len(labels), dtype=bool) for name in ("classic", "confidence")}
    predictions = Predictions(records, labels, probabilities, uncertain, ["classic"] * len(labels))
    check = white_box_check(_BoxReader(), predictions, CLASSES, batch_size=2)  # type: ignore[arg-type]
    assert check["images"] == 5
    assert check["target"] == "tuberculosis"
    assert check["called"]["fooled"] == {"without": 0.2, "with": 1.0}
    assert check["called"]["steady"] == {"without": 0.2, "with": 0.0}
    assert "classic_unweighted" not in check["called"]  # not a served predictor
    assert white_box_check(_BoxReader(), predictions, CLASSES) == check  # the same boxes every time  # type: ignore[arg-type]
    assert "| `fooled` | 0.200 | 1.000 |" in white_box_lines(check)
    write_report(predictions, CLASSES, tmp_path / "report", {"split": "test", "images": 7}, check)
    assert json.loads((tmp_path / "report" / "report.json").read_text())["white_box"] == check
    assert "## White-box check" in (tmp_path / "report" / "report.md").read_text()


def test_without_images_to_check_there_is_no_white_box_table() -> None:
    assert white_box_lines({"images": 0, "target": "tuberculosis", "called": {}}) == []
