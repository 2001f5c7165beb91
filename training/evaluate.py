"""Evaluation of exported models through the service's own predictor: JSON, Markdown, plots.

The models are run exactly as the service runs them (ONNX, temperatures, both ensembles), on
each image decoded by the service's decoder, so the report describes what is served.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from service.inference import Predictor
from training.augment import paste_white_box
from training.data import Record, size_group
from training.metrics import classification_metrics, pairwise_auc, reliability
from xray.contract.ensembles import ENSEMBLES, mean_probabilities
from xray.contract.preprocessing import decode_image

logger = logging.getLogger(__name__)

POOLED = "pooled"
#: Keys of a report scope that are not predictors.
NOT_PREDICTORS = ("confidence_decided_by", "input_check", "by_stored_size")
#: Images of one class per size group below which recall is too noisy to compare.
STORED_SIZE_MIN_IMAGES = 10
#: With ensemble weights in the manifest, the unweighted mean is reported beside the served
#: (weighted) `classic`, so that the card shows what the weights change.
UNWEIGHTED_MEAN = "classic_unweighted"
#: The white-box check's generator seed: every evaluation pastes the same boxes on the same images.
WHITE_BOX_SEED = 0


@dataclass
class Predictions:
    """Every predictor's probabilities on a list of records."""

    records: list[Record]
    labels: np.ndarray
    probabilities: dict[str, np.ndarray]
    uncertain: dict[str, np.ndarray] = field(default_factory=dict)
    decided_by: list[str] = field(default_factory=list)
    out_of_distribution: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    #: Each image's longest side as stored (before any resizing); 0 where unknown.
    stored_sides: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __post_init__(self) -> None:
        if not len(self.out_of_distribution):  # not given: nothing was flagged
            self.out_of_distribution = np.zeros(len(self.labels), dtype=bool)
        if not len(self.stored_sides):
            self.stored_sides = np.zeros(len(self.labels), dtype=np.int64)
        if len(self.out_of_distribution) != len(self.labels) or len(self.stored_sides) != len(self.labels):
            raise ValueError("out_of_distribution and stored_sides need one value per record")

    def subset(self, mask: np.ndarray) -> Predictions:
        """The predictions of the records where `mask` is true."""
        return Predictions(
            records=[r for r, keep in zip(self.records, mask, strict=True) if keep],
            labels=self.labels[mask],
            probabilities={name: probs[mask] for name, probs in self.probabilities.items()},
            uncertain={name: flags[mask] for name, flags in self.uncertain.items()},
            decided_by=[d for d, keep in zip(self.decided_by, mask, strict=True) if keep],
            out_of_distribution=self.out_of_distribution[mask],
            stored_sides=self.stored_sides[mask],
        )


def predict_records(
    predictor: Predictor,
    records: Sequence[Record],
    *,
    batch_size: int = 16,
    edit: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Predictions:
    """Run the served models and ensembles on `records`.

    Args:
        predictor: The served models.
        records: The images, decoded by the service's decoder.
        batch_size: Images per forward pass.
        edit: Applied to each decoded image's pixels, in record order, before the models see
            them (the stored sides stay those of the files).
    """
    classes = list(predictor.classes)
    probabilities: dict[str, list[np.ndarray]] = {name: [] for name in (*predictor.models, *ENSEMBLES)}
    uncertain: dict[str, list[bool]] = {name: [] for name in ENSEMBLES}
    decided_by: list[str] = []
    flagged: list[bool] = []
    sides: list[int] = []
    for start in range(0, len(records), batch_size):
        batch = records[start : start + batch_size]
        images = [decode_image(record.path.read_bytes()) for record in batch]
        sides += [max(image.pixels.shape[:2]) for image in images]
        if edit is not None:
            images = [replace(image, pixels=edit(image.pixels)) for image in images]
        for prediction in predictor.predict(images):
            for name, decision in (*prediction.models.items(), *prediction.ensembles.items()):
                probabilities[name].append(decision.probabilities)
            for name in ENSEMBLES:
                uncertain[name].append(prediction.ensembles[name].uncertain)
            decided_by.append(prediction.ensembles["confidence"].decided_by or "classic")
            flagged.append(not prediction.input_check.in_distribution)
        if (start // batch_size) % 20 == 0:
            logger.info("evaluated %d/%d images", min(start + batch_size, len(records)), len(records))
    stacked = {name: np.stack(rows) for name, rows in probabilities.items()}
    if predictor.manifest.ensembles.classic.weights is not None:
        models = {name: stacked[name] for name in predictor.models}
        stacked[UNWEIGHTED_MEAN] = mean_probabilities(models, None)
    return Predictions(
        records=list(records),
        labels=np.asarray([classes.index(record.label) for record in records]),
        probabilities=stacked,
        uncertain={name: np.asarray(flags) for name, flags in uncertain.items()},
        decided_by=decided_by,
        out_of_distribution=np.asarray(flagged, dtype=bool),
        stored_sides=np.asarray(sides, dtype=np.int64),
    )


def white_box_check(
    predictor: Predictor,
    predictions: Predictions,
    classes: Sequence[str],
    *,
    target: str = "tuberculosis",
    batch_size: int = 16,
) -> dict[str, Any]:
    """How often each predictor calls an image `target`, without and with one white box pasted on it.

    A shortcut check: white rectangles (redactions, burned-in labels) mark tuberculosis images in
    kaggle-mix, and hospital images often carry them. On the images whose label is not `target`,
    each decoded at its stored size, one box is pasted as training's `white_box` augmentation
    pastes it (`WHITE_BOX_SEED`, so every evaluation uses the same boxes), and the served models
    and ensembles run again.

    Args:
        predictor: The served models, as `predict_records` ran them.
        predictions: Their answers on the plain images (the "without" column).
        classes: The class names, in the models' output order.
        target: The class a box should not call.
        batch_size: Images per forward pass.

    Returns:
        `images` (how many were checked), `target`, `seed`, and per predictor the share called
        `target` `without` and `with` the box.
    """
    index = classes.index(target)
    chosen = predictions.labels != index
    rng = np.random.default_rng(WHITE_BOX_SEED)
    boxed = (
        predict_records(
            predictor,
            predictions.subset(chosen).records,
            batch_size=batch_size,
            edit=lambda pixels: paste_white_box(pixels, rng),
        )
        if chosen.any()
        else None
    )

    def share(probabilities: np.ndarray) -> float | None:
        return float(np.mean(probabilities.argmax(axis=1) == index)) if len(probabilities) else None

    return {
        "images": int(chosen.sum()),
        "target": target,
        "seed": WHITE_BOX_SEED,
        "called": {
            name: {
                "without": share(probabilities[chosen]),
                "with": share(boxed.probabilities[name]) if boxed is not None else None,
            }
            for name, probabilities in predictions.probabilities.items()
            if name != UNWEIGHTED_MEAN
        },
    }


def white_box_lines(check: dict[str, Any]) -> list[str]:
    """`white_box_check`'s result as a Markdown table (no lines for no images)."""
    if not check.get("images"):
        return []
    target = check["target"]
    lines = [
        f"| predictor | called {target}, no box | called {target}, one white box |",
        "|---|---|---|",
    ]
    for name, shares in check["called"].items():
        lines.append(f"| `{name}` | {_fmt(shares['without'])} | {_fmt(shares['with'])} |")
    return lines


def _abstention(predictions: Predictions, name: str) -> dict[str, Any]:
    flags = predictions.uncertain[name]
    correct = predictions.probabilities[name].argmax(axis=1) == predictions.labels
    kept = ~flags
    return {
        "abstain_rate": float(flags.mean()),
        "accuracy_all": float(correct.mean()),
        "accuracy_kept": float(correct[kept].mean()) if kept.any() else None,
        "accuracy_abstained": float(correct[flags].mean()) if flags.any() else None,
    }


def by_stored_size(predictions: Predictions, classes: Sequence[str]) -> dict[str, Any]:
    """Each predictor's recall per class in a scope's small and large stored images.

    Returns:
        Group name (`< 384 px`, `>= 384 px`, by the longest stored side) → images per class and
        recall per predictor and class (None for a class with no image there); empty unless both
        groups have images, since there is then nothing to compare.
    """
    names = np.asarray([size_group(int(side)) for side in predictions.stored_sides])
    groups = sorted(set(names.tolist()) - {"unknown"})
    if len(groups) < 2:
        return {}
    result: dict[str, Any] = {}
    for group in groups:
        part = predictions.subset(names == group)
        counts = {label: int((part.labels == c).sum()) for c, label in enumerate(classes)}
        recall: dict[str, dict[str, Any]] = {}
        for name, probs in part.probabilities.items():
            per_class = classification_metrics(part.labels, probs, classes)["per_class"]
            recall[name] = {label: per_class[label]["recall"] for label in classes}
        result[group] = {"images": counts, "recall": recall}
    return result


def stored_size_lines(groups: dict[str, Any], classes: Sequence[str]) -> list[str]:
    """`by_stored_size`'s result as a Markdown table and the largest gap in it (no lines if empty).

    A row per class and size group, for the classes present in both groups; the gap is among the
    classes with at least `STORED_SIZE_MIN_IMAGES` images in each group.
    """
    if not groups:
        return []
    names = list(next(iter(groups.values()))["recall"])
    shared = [c for c in classes if all(group["images"][c] for group in groups.values())]
    lines = [
        "| class | stored size | images | " + " | ".join(f"recall `{n}`" for n in names) + " |",
        "|---|---|---|" + "---|" * len(names),
    ]
    gaps: list[tuple[float, str, str]] = []
    for label in shared:
        for group, entry in groups.items():
            cells = " | ".join(_fmt(entry["recall"][n][label]) for n in names)
            lines.append(f"| {label} | {group} | {entry['images'][label]} | {cells} |")
        if all(group["images"][label] >= STORED_SIZE_MIN_IMAGES for group in groups.values()):
            for name in names:
                small, large = (group["recall"][name][label] for group in groups.values())
                gaps.append((abs(small - large), label, name))
    if gaps:
        gap, label, name = max(gaps)
        lines += ["", f"Largest recall gap between the two sizes: {gap:.2f} (`{name}`, {label})."]
    return lines


def score(predictions: Predictions, classes: Sequence[str]) -> dict[str, Any]:
    """Metrics per scope (pooled and each source) and per predictor."""
    sources = sorted({record.source for record in predictions.records})
    scopes = {POOLED: np.ones(len(predictions.labels), dtype=bool)}
    for source in sources:
        scopes[source] = np.asarray([record.source == source for record in predictions.records])
    normal, pneumonia = classes.index("normal"), classes.index("pneumonia")
    result: dict[str, Any] = {}
    for scope, mask in scopes.items():
        part = predictions.subset(mask)
        entry: dict[str, Any] = {}
        for name, probs in part.probabilities.items():
            metrics = classification_metrics(part.labels, probs, classes)
            metrics["pneumonia_vs_normal_auc"] = pairwise_auc(part.labels, probs, pneumonia, normal)
            metrics["reliability"] = reliability(part.labels, probs)
            if name in ENSEMBLES:
                metrics["abstention"] = _abstention(part, name)
            entry[name] = metrics
        decided = {name: part.decided_by.count(name) for name in sorted(set(part.decided_by))}
        entry["confidence_decided_by"] = decided
        entry["by_stored_size"] = by_stored_size(part, classes)
        entry["input_check"] = {
            "images": len(part.labels),
            "flagged_out_of_distribution": float(part.out_of_distribution.mean())
            if len(part.labels)
            else 0.0,
        }
        result[scope] = entry
    return result


def _panels(
    names: Sequence[str], title: str, ylabel: str, draw: Callable[[Any, str], None], path: Path
) -> str:
    """One row of panels, one per predictor, drawn by `draw(axes, name)`; returns the file name."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.3), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        draw(ax, name)
        ax.set_title(ax.get_title() or name, fontsize=8)
    axes[0][0].set_ylabel(ylabel, fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _plots(report: dict[str, Any], classes: Sequence[str], predictions: Predictions, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    from sklearn.metrics import roc_curve

    names = list(predictions.probabilities)
    short = [c[:4] for c in classes]
    written = []
    for scope, metrics in report.items():
        mask = (
            np.ones(len(predictions.labels), bool)
            if scope == POOLED
            else np.asarray([r.source == scope for r in predictions.records])
        )
        part = predictions.subset(mask)

        def confusion(ax: Any, name: str, metrics: dict[str, Any] = metrics) -> None:
            matrix = np.asarray(metrics[name]["confusion_matrix"])
            ax.imshow(matrix, cmap="Blues")
            for (i, j), value in np.ndenumerate(matrix):
                ax.text(j, i, str(value), ha="center", va="center", fontsize=8)
            ax.set_xticks(range(len(classes)), short, fontsize=7)
            ax.set_yticks(range(len(classes)), short, fontsize=7)
            ax.set_xlabel("predicted", fontsize=7)

        def roc(ax: Any, name: str, metrics: dict[str, Any] = metrics, part: Predictions = part) -> None:
            for c, label in enumerate(classes):
                positives = part.labels == c
                if positives.any() and not positives.all():
                    fpr, tpr, _ = roc_curve(positives, part.probabilities[name][:, c])
                    ax.plot(
                        fpr, tpr, label=f"{label[:4]} {_fmt(metrics[name]['per_class'][label]['roc_auc'])}"
                    )
            ax.plot([0, 1], [0, 1], color="gray", lw=0.5, ls="--")
            ax.set_xlabel("false positive rate", fontsize=7)
            ax.legend(fontsize=6, loc="lower right")

        def calibration(ax: Any, name: str, metrics: dict[str, Any] = metrics) -> None:
            bins = metrics[name]["reliability"]
            ax.bar(
                [b["low"] for b in bins],
                [b["accuracy"] for b in bins],
                width=1 / 15,
                align="edge",
                alpha=0.7,
                edgecolor="white",
            )
            ax.plot([0, 1], [0, 1], color="gray", lw=0.5, ls="--")
            ax.set_title(f"{name}\nECE {metrics[name]['ece']:.3f}")
            ax.set_xlabel("confidence", fontsize=7)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)

        written += [
            _panels(names, f"Confusion matrices: {scope}", "true", confusion, out / f"confusion-{scope}.png"),
            _panels(
                names,
                f"ROC curves (one vs rest): {scope}",
                "true positive rate",
                roc,
                out / f"roc-{scope}.png",
            ),
            _panels(
                names, f"Reliability: {scope}", "accuracy", calibration, out / f"reliability-{scope}.png"
            ),
        ]
    return written


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _markdown(
    report: dict[str, Any],
    classes: Sequence[str],
    plots: list[str],
    context: dict[str, Any],
    white_box: dict[str, Any] | None = None,
) -> str:
    lines = [
        "# Evaluation report",
        "",
        "> **Not for clinical use.** Research models; results need review by a qualified clinician.",
        "",
        f"Split: `{context.get('split', 'test')}` ({context.get('images', '?')} images); models: "
        + ", ".join(f"`{k}` {v}" for k, v in context.get("versions", {}).items()),
        "",
    ]
    for scope, entry in report.items():
        lines += [
            f"## {scope}",
            "",
            "| predictor | n | accuracy | macro-F1 | macro AUC | pneu-vs-normal AUC | ECE | "
            + " | ".join(f"F1 {c}" for c in classes)
            + " |",
            "|---|---|---|---|---|---|---|" + "---|" * len(classes),
        ]
        for name, metrics in entry.items():
            if name in NOT_PREDICTORS:
                continue
            f1s = " | ".join(_fmt(metrics["per_class"][c]["f1"]) for c in classes)
            scores = " | ".join(
                _fmt(metrics[key])
                for key in ("accuracy", "macro_f1", "macro_roc_auc", "pneumonia_vs_normal_auc", "ece")
            )
            lines.append(f"| {name} | {metrics['count']} | {scores} | {f1s} |")
        lines += [
            "",
            "| ensemble | abstained | accuracy, all | accuracy, kept | accuracy, abstained |",
            "|---|---|---|---|---|",
        ]
        for name in ENSEMBLES:
            a = entry[name]["abstention"]
            accuracies = " | ".join(
                _fmt(a[key]) for key in ("accuracy_all", "accuracy_kept", "accuracy_abstained")
            )
            lines.append(f"| {name} | {a['abstain_rate']:.1%} | {accuracies} |")
        flagged = entry["input_check"]["flagged_out_of_distribution"]
        if entry["by_stored_size"]:
            lines += ["", "By stored image size (longest side):", ""]
            lines += stored_size_lines(entry["by_stored_size"], classes)
        lines += ["", f"Cascade decided by: {entry['confidence_decided_by']}", ""]
        lines += [f"Flagged out of distribution by the input check: {flagged:.1%}", ""]
        lines += [f"![{plot}]({plot})" for plot in plots if plot.endswith(f"-{scope}.png")]
        lines.append("")
    if white_box and white_box.get("images"):
        lines += [
            "## White-box check",
            "",
            f"The {white_box['images']} images not labelled {white_box['target']}, with one white "
            "rectangle pasted on each:",
            "",
            *white_box_lines(white_box),
            "",
        ]
    return "\n".join(lines)


def write_report(
    predictions: Predictions,
    classes: Sequence[str],
    out: Path,
    context: dict[str, Any],
    white_box: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Score `predictions` and write `report.json`, `report.md` and the PNG plots into `out`.

    Args:
        predictions: The predictors' answers.
        classes: The class names, in the models' output order.
        out: The report's folder.
        context: What was evaluated (split, images, versions), written as is.
        white_box: `white_box_check`'s result, where it was run.

    Returns:
        The metrics, per scope and predictor.
    """
    out.mkdir(parents=True, exist_ok=True)
    report = score(predictions, classes)
    plots = _plots(report, classes, predictions, out)
    document: dict[str, Any] = {"context": context, "metrics": report}
    if white_box is not None:
        document["white_box"] = white_box
    (out / "report.json").write_text(json.dumps(document, indent=1))
    (out / "report.md").write_text(_markdown(report, classes, plots, context, white_box))
    logger.info("wrote the evaluation report to %s", out / "report.md")
    return report
