"""The evaluation report: metrics per source and predictor, Markdown, JSON and plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from training.data import Record
from training.evaluate import Predictions, write_report

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
