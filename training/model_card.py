"""The model card (`models/README.md`), written from the manifest and the test-split report.

Every number in the card is read from `manifest.json` (which the service serves) and every plot
is copied from the evaluation report, so the card cannot drift from the artifacts it describes.
The prose sections (intended use, data confounds, limitations) are fixed text here, reviewed
like code.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from training.augment import WHITE_BOX_HEIGHT, WHITE_BOX_WIDTH
from training.calibration import MEMBER_CONFIDENCE
from training.evaluate import UNWEIGHTED_MEAN, stored_size_lines, white_box_lines
from xray.contract.ensembles import ENSEMBLES
from xray.contract.manifest import Manifest, ModelEntry, load_manifest

logger = logging.getLogger(__name__)

CARD_NAME = "README.md"
PLOTS_DIR = "report"
PLOT_KINDS = ("confusion", "roc", "reliability")
CURVES_PLOT = "training-curves.png"
BASELINE_DIR = "baseline"

INTENDED_USE = """\
> **Not for clinical use.** These are research models, trained from random initialisation on
> 2,635 public images. They are not a medical device, have not been validated prospectively, and
> must not be used to diagnose, triage or treat anyone. Every output needs review by a qualified
> clinician.

## Intended use

Demonstrating and testing the triage service: integration with PACS tooling, the API contract,
explanations and monitoring. A site that wants a clinically useful model retrains with the same
package on its own, much larger, data (and with ImageNet weights where it has them), evaluates it
on its own population, and replaces these files; the service reads everything it needs from
`manifest.json`.

Input: one frontal (PA/AP) chest radiograph, as PNG, JPEG or single-frame grayscale DICOM. Output:
the probability of **normal**, **pneumonia** and **tuberculosis** per model and for two ensembles.
Not intended for lateral views, children (see the confound below), other findings, or images that
are not chest radiographs: the models have no "other" class and will still answer. The input check
(below) flags most such images as out of distribution, but not all of them: it is a safety net, not
a gate to rely on.
"""

DATA = """\
## Data

`../shared/data/cxr` (3,774 images, 8-bit JPEG, longest side at most 512 px), four sources:

- `kaggle-mix`: a compilation of public Kaggle sets: adult normal and tuberculosis images, and
  **pediatric** pneumonia images.
- `nih-cxr14`: adult normal and pneumonia images from NIH ChestX-ray14, labels mined from
  radiology reports (noisy); no tuberculosis.
- `ieee8023`: frontal adult radiographs of the COVID-19 image data collection: pneumonias of many
  causes, a few normals.
- `tbx11k`: tuberculosis radiographs of TBX11K, another population; tuberculosis only.

Near-identical images filed with conflicting labels across sources (20 clusters) were removed.

**Known confounds.** Every `kaggle-mix` pneumonia image is of a child, every other `kaggle-mix`
image of an adult: a model can score well on `kaggle-mix` by recognising children. `ieee8023` is
almost all pneumonia and `tbx11k` all tuberculosis: a model can learn a source's look (scanner,
processing, borders) instead of the disease, so recall on those two sources is an upper bound on
what the models know about the disease. The adult NIH images are the check on both shortcuts,
so every metric below is reported per source: `nih-cxr14` pneumonia-vs-normal is the number that
says whether a model sees pneumonia.

The split is by patient group (the `group` column: a patient or a near-duplicate cluster),
stratified by source and label, seed 42. The test split was used for nothing but this card:
temperatures, the cascade and the abstention threshold were chosen on the validation split.
"""

LIMITATIONS = """\
## Limitations

- **Small data, no pretraining.** No pretrained weights could be downloaded here, so all three
  networks learned from 2,635 training images. Validation macro-F1 stopped improving after about
  50 epochs (see the curves): the networks overfit this data, and the large backbones (54 M and
  9 M parameters) do no better than our own 3 M-parameter `scratch` (see the tables). These
  figures are far from those of ImageNet-pretrained networks trained on tens of thousands of images.
- **Shortcut learning.** `kaggle-mix` pneumonia can be recognised from the patient's age, and
  `tbx11k` and `ieee8023` from their source's look; the pooled, `tbx11k` and `ieee8023` numbers
  overstate what the models know about disease. Read the `nih-cxr14` column. Within a source, an
  archive's look can stand in for a class as well: the shortcut check above shows where. White
  rectangles (redactions) mark some `kaggle-mix` tuberculosis images; the white-box check above
  shows how far one such box, or a burned-in label, pushes the answers towards tuberculosis.
- **Labels.** NIH labels come from text mining of reports and are noisy; some test "errors" are
  label errors and some "correct" answers are wrong.
- **Population.** Four public sources; no information on scanners, sites, ethnicity or sex.
  Performance on other hospitals' images is unknown and likely lower.
- **Three classes only.** Other findings (effusion, nodules, devices ...) are forced into one of
  the three classes.
- **Calibration** was fitted on the validation split of the same sources; probabilities on other
  data are not calibrated.
- **Heatmaps** (Grad-CAM, SHAP) show what drives a model's score, not where disease is. Those of
  these models have not been reviewed by a radiologist; a map over a marker, the edge of the
  image or outside the lungs is a warning about the model, not a finding.
"""


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if value != 0 and abs(value) < 0.01:
            return f"{value:.2g}"  # learning rates, weight decay: 0.0002, not 0.000
        if abs(value) >= 100:
            return f"{value:.0f}"
        return f"{value:.{digits}f}"
    if isinstance(value, dict):
        return ", ".join(f"{key} {_fmt(item)}" for key, item in value.items())
    return str(value)


def _combination(highest_views: int | None) -> str:
    """How the input check's score combines the views' z-scores, in words."""
    if highest_views is None:
        return "their mean"
    return (
        f"the mean of an image's {highest_views} highest (one network that finds an image ordinary "
        "does not outvote the others)"
    )


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(cell) for cell in row) + " |" for row in rows]
    return [*lines, ""]


def _scopes(manifest: Manifest) -> list[str]:
    test = manifest.models[0].metrics.get("test", {})
    return list(test)


def _models_table(manifest: Manifest, models_dir: Path) -> list[str]:
    rows = []
    for entry in manifest.models:
        size = (models_dir / entry.file).stat().st_size / 1e6
        quantized = "INT8 (static QDQ)" if entry.quantization else "float32"
        rows.append(
            [
                f"`{entry.name}`",
                entry.version,
                f"`{entry.file}`",
                f"{size:.1f} MB",
                quantized,
                f"{entry.input.height}×{entry.input.width}",
                entry.temperature,
                f"`{entry.sha256[:12]}…`",
            ]
        )
    header = ["model", "version", "file", "size", "weights", "input", "temperature", "sha256"]
    return ["## Models", "", *_table(header, rows)]


def _recipe_rows(entry: ModelEntry) -> list[tuple[str, Any]]:
    config = entry.training.get("config", {})
    augment = config.get("augment", {})
    return [
        ("initial weights", config.get("weights")),
        ("input side (px)", config.get("image_size")),
        # From the served input, not the recipe: that is what the service applies.
        ("input equalisation", entry.input.equalization),
        ("epochs (configured / run)", f"{config.get('epochs')} / {entry.training.get('last_epoch')}"),
        ("best validation macro-F1", entry.training.get("best_val_macro_f1")),
        ("batch size", config.get("batch_size")),
        ("learning rate (peak, warm-up then cosine)", config.get("learning_rate")),
        ("warm-up epochs", config.get("warmup_epochs")),
        ("weight decay (AdamW)", config.get("weight_decay")),
        ("label smoothing", config.get("label_smoothing")),
        ("dropout before the head", config.get("dropout")),
        ("batch-norm momentum", config.get("bn_momentum")),
        ("weight average (momentum per step)", config.get("weight_average")),
        (
            "class weights",
            "balanced within each archive (source and stored size), then across classes"
            if config.get("balance_archives")
            else entry.training.get("class_weights") or config.get("class_weights"),
        ),
        ("augmentation", augment or None),
        ("distillation", _distillation(entry.training.get("distillation"))),
        ("early-stopping patience (epochs)", config.get("patience")),
        ("seed", config.get("seed")),
        ("best epoch", entry.training.get("best_epoch")),
        ("started from", _started_from(entry.training.get("started_from"))),
        ("trained on", entry.training.get("device") or "CPU"),
        ("precision", entry.training.get("precision", "float32")),
        ("training images/s", entry.training.get("train_images_per_second")),
        ("training time (s)", entry.training.get("seconds")),
        ("software", f"Keras {entry.training.get('keras')} ({entry.training.get('keras_backend')})"),
        ("weights as trained → as exported", _compact_weights(entry.training.get("compact_weights"))),
    ]


def _distillation(record: dict[str, Any] | None) -> str | None:
    if not record:
        return None
    digest = str(record.get("sha256"))[:12]
    return (
        f"from a teacher's probabilities ({record.get('targets')}, sha256 {digest}…): "
        f"weight {record.get('weight')}, temperature {record.get('temperature')}; its top class was the "
        f"label on {_fmt(record.get('teacher_train_accuracy'))} of the training images"
    )


def _started_from(record: dict[str, Any] | None) -> str:
    if not record:
        return "random initialisation"
    return (
        f"a run of {record.get('epochs_run')} epochs on {record.get('device') or 'CPU'} "
        f"({record.get('precision')}, {record.get('keras_backend')}; best val macro-F1 "
        f"{_fmt(record.get('best_val_macro_f1'))} at epoch {record.get('best_epoch')})"
    )


def _compact_weights(record: dict[str, Any] | None) -> str | None:
    if not record:
        return None
    return (
        f"val macro-F1 {record['val_macro_f1_float32']:.3f} → {record['val_macro_f1_int8_kernels']:.3f} "
        f"(kernels rounded to {record['levels']} levels to travel back)"
    )


def _training_section(manifest: Manifest) -> list[str]:
    lines = [
        "## Training",
        "",
        "Each network was trained from random initialisation on the training split with the",
        "package's training loop (`training.train.fit_network`). The values below are read from",
        "the manifest's `training` record of each model; a model trained on a GPU machine without",
        "TensorFlow came through `python -m training.packed` (the split packed at the training",
        "size, compact weights back) and was exported here. Validation macro-F1 during training:",
        "",
        f"![training curves]({PLOTS_DIR}/{CURVES_PLOT})",
        "",
    ]
    names = [entry.name for entry in manifest.models]
    rows: dict[str, list[Any]] = {}
    for entry in manifest.models:
        for key, value in _recipe_rows(entry):
            rows.setdefault(key, []).append(value)
    lines += _table(["", *[f"`{name}`" for name in names]], [[key, *values] for key, values in rows.items()])
    return lines


def _metric_rows(manifest: Manifest, scope: str) -> list[list[Any]]:
    classes = manifest.classes
    rows = []
    predictors: list[tuple[str, dict[str, Any]]] = [
        (entry.name, entry.metrics.get("test", {}).get(scope, {})) for entry in manifest.models
    ]
    ensemble_metrics = manifest.ensembles.metrics.get("test", {})
    predictors += [
        (name, ensemble_metrics.get(name, {}).get(scope, {})) for name in (*ENSEMBLES, UNWEIGHTED_MEAN)
    ]
    for name, metrics in predictors:
        if not metrics:
            continue
        f1 = metrics.get("f1", {})
        rows.append(
            [
                f"`{name}`",
                metrics.get("count"),
                metrics.get("accuracy"),
                metrics.get("macro_f1"),
                metrics.get("macro_roc_auc"),
                metrics.get("pneumonia_vs_normal_auc"),
                metrics.get("ece"),
                *[f1.get(label) for label in classes],
            ]
        )
    return rows


def _metrics_section(manifest: Manifest) -> list[str]:
    header = ["predictor", "n", "accuracy", "macro-F1", "macro AUC", "pneu-vs-normal AUC", "ECE"]
    header += [f"F1 {label}" for label in manifest.classes]
    lines = [
        "## Test metrics",
        "",
        "Held-out test split, through the service's own predictor (ONNX files, temperatures, both",
        "ensembles). Macro-F1 on `nih-cxr14` is over the two classes it has. ECE: 15 equal-width bins",
        "on the top-class probability, after temperature scaling.",
        "",
    ]
    for scope in _scopes(manifest):
        lines += [f"### {scope}", "", *_table(header, _metric_rows(manifest, scope))]
        lines += _abstention(manifest, scope)
        lines += [f"![{kind} {scope}]({PLOTS_DIR}/{kind}-{scope}.png)" for kind in PLOT_KINDS]
        lines.append("")
    return lines


def _abstention(manifest: Manifest, scope: str) -> list[str]:
    ensemble_metrics = manifest.ensembles.metrics.get("test", {})
    rows = []
    for name in ENSEMBLES:
        abstention = ensemble_metrics.get(name, {}).get(scope, {}).get("abstention")
        if abstention:
            rows.append(
                [
                    f"`{name}`",
                    f"{abstention['abstain_rate']:.1%}",
                    abstention["accuracy_all"],
                    abstention["accuracy_kept"],
                    abstention["accuracy_abstained"],
                ]
            )
    if not rows:
        return []
    header = ["ensemble", "marked uncertain", "accuracy, all", "accuracy, not uncertain"]
    return _table([*header, "accuracy, uncertain"], rows)


def _ensembles_section(manifest: Manifest) -> list[str]:
    spec = manifest.ensembles
    selection = spec.selection
    return [
        "## Ensembles",
        "",
        *(f"- `{name}`: {ensemble.rule}." for name, ensemble in ENSEMBLES.items()),
        *_weights_lines(manifest),
        f"- The cascade asks {', '.join(f'`{n}`' for n in spec.confidence.order)} in turn, with tau ="
        f" {spec.confidence.tau}.",
        "- `uncertain` is set, with its reasons in `uncertain_reasons`, when the ensemble's top probability",
        f"  is below {spec.abstain_below} (`low_confidence`), when the top labels of the models it is made",
        "  of differ (`models_disagree`), or when the input check finds the image unlike the training",
        "  radiographs (`out_of_distribution`).",
        "",
        f"Chosen on the {selection.get('data', 'validation split')}: {selection.get('cascade', '')};",
        f"abstention: {selection.get('abstain', '')}.",
        *_abstention_lines(selection),
        "",
        *_against_the_best_model(manifest),
    ]


def _abstention_lines(selection: dict[str, Any]) -> list[str]:
    """What the abstention threshold leaves answered on validation, and the bound it was chosen by."""
    if "abstain_val_coverage" not in selection:
        return []
    lines = [
        f"On validation that leaves {selection['abstain_val_coverage']:.1%} of the images answered",
        f"without doubt, {selection['abstain_val_accuracy_kept']:.1%} of them correctly",
    ]
    bound = selection.get("abstain_val_accuracy_kept_lower_bound")
    if bound is not None:
        lines[-1] += f" (with {selection['abstain_goal_confidence']:.0%} confidence at least {bound:.1%}:"
        lines.append("a threshold at which validation only just reaches the goal misses it on new images")
        lines.append("about half the time)")
    if selection.get("abstain_goal_reached") is False:
        lines[-1] += "; no threshold reached the goal, so this is the most the ensemble abstains on"
    lines[-1] += "; the test split's figures are in the tables of the metrics section."
    return lines


def _against_the_best_model(manifest: Manifest) -> list[str]:
    """Whether the ensembles beat the best single model, on validation and on test."""
    selection = manifest.ensembles.selection
    single = selection.get("single_model_val_macro_f1")
    test = manifest.ensembles.metrics.get("test", {})
    if not single or not all(name in test for name in ENSEMBLES):
        return []
    best = max(single, key=single.get)
    ensembles_val = {
        "classic": selection["unweighted_val_macro_f1"],
        "confidence": selection["cascade_val_macro_f1"],
    }
    if manifest.ensembles.classic.weights is not None:
        ensembles_val["classic"] = selection["best_weights_val_macro_f1"]
    best_test = manifest.model(best).metrics["test"]["pooled"]["macro_f1"]
    ensembles_test = {name: test[name]["pooled"]["macro_f1"] for name in ENSEMBLES}
    behind = [name for name in ENSEMBLES if ensembles_val.get(name, 1.0) < single[best]]
    lines = [
        f"Against the best single model on validation, `{best}` (macro-F1 {single[best]:.3f}; test"
        f" {best_test:.3f}): "
        + ", ".join(
            f"`{name}` {ensembles_val[name]:.3f} (test {ensembles_test[name]:.3f})"
            for name in ENSEMBLES
            if name in ensembles_val
        )
        + "."
    ]
    if behind:
        lines.append(
            f"{' and '.join(f'`{name}`' for name in behind)} did not reach the best single model on"
            " validation: the other networks are weaker than it, and the ensembles are served for their"
            " agreement signal (`models_disagree`) more than for their accuracy."
        )
    return [*lines, ""]


def _weights_lines(manifest: Manifest) -> list[str]:
    """Which models the mean is made of, and the validation evidence for it."""
    weights = manifest.ensembles.classic.weights
    selection = manifest.ensembles.selection
    if "best_weights" not in selection:
        return []
    best = ", ".join(f"`{name}`" for name, weight in selection["best_weights"].items() if weight > 0)
    evidence = (
        f"the best subset on validation ({best}: macro-F1 {selection['best_weights_val_macro_f1']:.3f}"
        f" against {selection['unweighted_val_macro_f1']:.3f} for all models) beat the mean of all"
        f" models in {selection['best_weights_bootstrap_win_rate']:.0%} of paired bootstrap resamples"
    )
    if weights is None:
        return [
            f"- `classic` is the mean of all models: {evidence}, short of the {MEMBER_CONFIDENCE:.0%}"
            " required to leave one out."
        ]
    left_out = ", ".join(f"`{name}`" for name, weight in weights.items() if weight == 0)
    return [
        f"- `classic` leaves out {left_out} (weight 0; still answered per model, not a member of either",
        f"  ensemble): {evidence}. The mean of all models is reported as `{UNWEIGHTED_MEAN}` in the tables.",
    ]


def _detection(row: dict[str, Any]) -> str:
    return f"{row['detected']:.0%} (AUROC {row['auroc_vs_validation']:.3f})"


def _input_check_section(manifest: Manifest) -> list[str]:
    """What the input check is, how it was chosen, what it detects, and its false alarms."""
    spec = manifest.input_check
    if spec is None:
        return [
            "## Input check",
            "",
            "These models were exported without an input check: every image is answered as if it were",
            "a frontal chest radiograph (`input_check.method` is `none`).",
            "",
        ]
    selection, metrics = spec.selection, spec.metrics
    compared = selection.get("compared_on_non_chest_images", {})
    methods = list(compared)
    kinds = list(compared.get(spec.method, {}))
    rows = [
        [
            kind,
            compared[spec.method][kind]["count"],
            *[_detection(compared[method][kind]) for method in methods],
        ]
        for kind in kinds
    ]
    test = metrics.get("test", {})
    alarms = [
        [scope, values["images"], f"{values['flagged_out_of_distribution']:.1%}"]
        for scope, values in test.items()
    ]
    seconds = metrics.get("seconds_per_image")
    return [
        "## Input check",
        "",
        "Every answer says whether the image looks like the frontal chest radiographs these models were",
        "trained on (`input_check`). The check reads two views of each network from the same forward pass:",
        "the pooled features and the layout of the Grad-CAM class maps. For each it computes the Mahalanobis",
        "distance to the nearest class mean under the training split's shared covariance (Lee et al. 2018),",
        f"exact in the {selection.get('components', '?')} leading principal components and with one pooled",
        "variance for the rest; each distance becomes a robust z-score against the validation split, and the",
        f"score is {_combination(spec.highest_views)}.",
        f"The threshold, {spec.threshold:.3f}, is {selection.get('threshold_rule', '')}",
        f"({metrics.get('validation_pass_rate', 0):.1%} of them pass). An image above it is answered with",
        "both ensembles `uncertain` (reason `out_of_distribution`), or refused with a 422 where",
        "`XRAY_REJECT_OUT_OF_DISTRIBUTION=true`.",
        "",
        "Compared with the energy score of the logits (Liu et al. 2020, fitted and thresholded the same way)",
        "on images that are not frontal chest radiographs: share detected at each score's own threshold, and",
        "AUROC against the validation radiographs. `other_anatomy` is the shared data's hip radiograph (one",
        "image in three encodings); the other kinds are made here (`training/non_chest.py`). The pooled",
        "features alone missed the hip; the class-map layout, which a hip does not share with a chest, is",
        "what catches it. These kinds were also in view when the views were chosen, so the rates are an",
        "optimistic estimate for unseen kinds of image.",
        "",
        *_table(["kind", "images", *[f"`{method}`" for method in methods]], rows),
        "",
        "False alarms: chest radiographs of the test split flagged out of distribution, per source.",
        "",
        *(_table(["scope", "images", "flagged"], alarms) if alarms else ["(not evaluated yet)", ""]),
        "",
        *(
            [
                f"The score costs {seconds * 1000:.2f} ms per image where it was fitted (NumPy, one thread).",
                "",
            ]
            if seconds
            else []
        ),
    ]


def _calibration_section(manifest: Manifest) -> list[str]:
    rows = []
    for entry in manifest.models:
        validation = entry.metrics.get("validation", {})
        test = entry.metrics.get("test", {})
        rows.append(
            [
                f"`{entry.name}`",
                entry.temperature,
                validation.get("ece_uncalibrated"),
                validation.get("ece_calibrated"),
                validation.get("nll_uncalibrated"),
                validation.get("nll_calibrated"),
                *[test.get(scope, {}).get("ece") for scope in _scopes(manifest)],
            ]
        )
    header = ["model", "temperature", "val ECE before", "val ECE after", "val NLL before", "val NLL after"]
    header += [f"test ECE {scope}" for scope in _scopes(manifest)]
    return [
        "## Calibration",
        "",
        "One temperature per model, fitted on the validation split by minimising the negative log",
        "likelihood; the service divides the logits by it before the softmax.",
        "",
        *_table(header, rows),
    ]


def _quantization_section(manifest: Manifest) -> list[str]:
    rows: list[list[Any]] = []
    notes: list[str] = []
    for entry in manifest.models:
        quantization = entry.quantization
        if not quantization:
            continue
        compared = quantization.get("test", {})
        if "skipped" in compared:
            notes.append(f"- `{entry.name}`: INT8 not compared with float32 on test: {compared['skipped']}.")
            compared = {}
        for scope, scores in compared.items():
            rows.append(
                [
                    f"`{entry.name}`",
                    scope,
                    scores["count"],
                    scores["macro_f1_float32"],
                    scores["macro_f1_int8"],
                    scores["accuracy_float32"],
                    scores["accuracy_int8"],
                    scores["top1_agreement"],
                ]
            )
        notes.append(
            f"- `{entry.name}`: {quantization.get('float_bytes', 0) / 1e6:.0f} MB float32 → "
            f"{quantization.get('int8_bytes', 0) / 1e6:.0f} MB INT8, calibrated on "
            f"{quantization.get('calibration_images')} training images; {quantization.get('method')}."
        )
        if quantization.get("requantized"):
            notes.append(f"  Requantized: {quantization['requantized']}")
    if not rows and not notes:
        return []
    header = ["model", "scope", "n", "macro-F1 float32", "macro-F1 INT8", "acc. float32", "acc. INT8"]
    return [
        "## Quantization",
        "",
        "Models too large for the 120 MB bundle are served as onnxruntime static INT8 (QDQ, per-channel",
        "weights, the Grad-CAM head kept in float32). The weights use 7 of the 8 bits: CPUs without",
        "VNNI may add uint8 x int8 products in saturating 16-bit sums, and an earlier file with full",
        "8-bit weights scored 0.530 test accuracy on the machine it was evaluated on and 0.511 on an",
        "AVX-512 VNNI machine. 7-bit weights cannot saturate, so every CPU computes the same integers.",
        "Against the float32 model on the test split:",
        "",
        *_table([*header, "top-1 agreement"], rows),
        *notes,
        "",
    ]


def plot_validation_curves(
    curves: dict[str, list[tuple[float, float]]], path: Path, *, xlabel: str, hours: bool = True
) -> None:
    """Validation macro-F1 against training time (seconds in, hours or minutes shown), one line each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scale = 3600.0 if hours else 60.0
    figure, axes = plt.subplots(figsize=(6.5, 3.8))
    for name, curve in curves.items():
        if curve:
            axes.plot(
                [s / scale for s, _ in curve], [f1 for _, f1 in curve], label=name, linewidth=1.2, marker="."
            )
    ends = [curve[-1][0] for curve in curves.values() if curve and curve[-1][0] > 0]
    if ends and max(ends) > 10 * min(ends):
        # Runs of minutes (a GPU) beside runs of hours (a CPU): only a log scale shows both.
        axes.set_xscale("log")
    axes.set_xlabel(xlabel)
    axes.set_ylabel("validation macro-F1")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _read_report(path: Path) -> dict[str, Any] | None:
    """An evaluation report (`report.json`), or None where there is none."""
    return json.loads(path.read_text()) if path.is_file() else None


def _comparison_section(new: dict[str, Any] | None, old: dict[str, Any] | None) -> list[str]:
    """Before and after: the bundle this one replaces (`old`), evaluated on the same test images."""
    if new is None or old is None:
        return []

    def recall(metrics: dict[str, Any], label: str) -> Any:
        return metrics["per_class"][label]["recall"]

    measures: list[tuple[str, str, Any]] = [
        ("macro-F1, pooled", "pooled", lambda m: m["macro_f1"]),
        ("macro-F1, kaggle-mix", "kaggle-mix", lambda m: m["macro_f1"]),
        ("F1 tuberculosis, kaggle-mix", "kaggle-mix", lambda m: m["per_class"]["tuberculosis"]["f1"]),
        ("pneumonia-vs-normal AUC, nih-cxr14", "nih-cxr14", lambda m: m["pneumonia_vs_normal_auc"]),
        ("recall tuberculosis, tbx11k", "tbx11k", lambda m: recall(m, "tuberculosis")),
        ("recall pneumonia, ieee8023", "ieee8023", lambda m: recall(m, "pneumonia")),
    ]
    names = [
        name
        for name, metrics in new["metrics"]["pooled"].items()
        if isinstance(metrics, dict) and "macro_f1" in metrics and name in old["metrics"]["pooled"]
    ]
    rows = []
    for title, scope, read in measures:
        if scope not in new["metrics"] or scope not in old["metrics"]:
            continue
        cells = [
            f"{_fmt(read(old['metrics'][scope][n]))} → {_fmt(read(new['metrics'][scope][n]))}" for n in names
        ]
        rows.append([title, *cells])
    versions = ", ".join(f"`{k}` {v}" for k, v in old["context"]["versions"].items())
    held_out = old["context"].get("models_split_fingerprints", {})
    if held_out and set(held_out.values()) == {old["context"].get("images_fingerprint")}:
        fairness = [
            "These images are the held-out test split of both bundles (the same split fingerprint), so",
            "the comparison is fair.",
        ]
    else:
        fairness = [
            "The earlier models were not all evaluated on this split, so some of these images may have",
            "been in their training set: the comparison favours them.",
        ]
    return [
        "## Before and after",
        "",
        f"The bundle this one replaces ({versions}) against this one, on the same",
        f"{new['context']['images']} test images.",
        *fairness,
        "",
        *_table(["measure", *[f"`{n}`" for n in names]], rows),
    ]


def _stored_size_section(report: dict[str, Any] | None, classes: Sequence[str]) -> list[str]:
    """Per source, recall in the images stored small and large: a check for archive shortcuts."""
    if report is None:
        return []
    metrics = report["metrics"]
    lines: list[str] = []
    for scope, entry in metrics.items():
        if scope != "pooled" and entry.get("by_stored_size"):
            lines += [f"**{scope}**", "", *stored_size_lines(entry["by_stored_size"], classes), ""]
    if not lines:
        return []
    return [
        "## A shortcut check: images stored small and large",
        "",
        "Within one source, images stored at different sizes usually come from different archives",
        "(sites, scanners, processing). Where a class is found far more often in one size than in",
        "the other, the models recognise that archive's look as much as the disease, and the",
        "source's pooled figures overstate what they know. Test split, served models, by the",
        "longest side of the image as stored:",
        "",
        *lines,
    ]


def _white_box_section(report: dict[str, Any] | None) -> list[str]:
    """How much one white rectangle moves the answers: a check for the redaction-box shortcut."""
    check = (report or {}).get("white_box") or {}
    lines = white_box_lines(check)
    if not lines:
        return []
    return [
        "## A shortcut check: one white box",
        "",
        "In `kaggle-mix`, white rectangles (redactions) mark some tuberculosis images and almost no",
        "others; hospital images often carry burned-in labels that look the same.",
        f"Test split, the {check['images']} images not labelled {check['target']}, served models: the",
        f"share called {check['target']} as they are and with one solid white rectangle pasted on each",
        f"({WHITE_BOX_WIDTH[0]:.0%}-{WHITE_BOX_WIDTH[1]:.0%} of the width, {WHITE_BOX_HEIGHT[0]:.0%}-"
        f"{WHITE_BOX_HEIGHT[1]:.0%} of the height, anywhere; the same boxes at every evaluation).",
        "A model that learnt the disease calls about as many with the box as without.",
        "",
        *lines,
        "",  # the next section's heading must not join the table
    ]


def write_model_card(models_dir: Path, report_dir: Path) -> Path:
    """Write `models_dir/README.md` and copy the report's plots to `models_dir/report/`.

    Args:
        models_dir: The bundled models and their manifest, already evaluated on the test split.
        report_dir: The evaluation report of that test split (its PNG plots), with, where it was
            made, `baseline/report.json`: the replaced bundle evaluated on the same images.

    Returns:
        The card's path.
    """
    manifest = load_manifest(models_dir)
    plots = models_dir / PLOTS_DIR
    plots.mkdir(exist_ok=True)
    for scope in _scopes(manifest):
        for kind in PLOT_KINDS:
            source = report_dir / f"{kind}-{scope}.png"
            if source.is_file():
                shutil.copyfile(source, plots / source.name)
            else:
                logger.warning("plot %s is missing from the report", source)
    plot_validation_curves(
        {
            f"{entry.name} ({entry.training.get('device') or 'CPU'})": [
                tuple(point) for point in entry.training.get("curve") or []
            ]
            for entry in manifest.models
        },
        plots / CURVES_PLOT,
        xlabel="training hours (wall clock, compilation included)",
    )
    report = _read_report(report_dir / "report.json")
    lines = [
        "# Model card: chest X-ray triage (normal / pneumonia / tuberculosis)",
        "",
        INTENDED_USE,
        *_models_table(manifest, models_dir),
        DATA,
        *_training_section(manifest),
        *_metrics_section(manifest),
        *_comparison_section(report, _read_report(report_dir / BASELINE_DIR / "report.json")),
        *_stored_size_section(report, manifest.classes),
        *_white_box_section(report),
        *_ensembles_section(manifest),
        *_input_check_section(manifest),
        *_calibration_section(manifest),
        *_quantization_section(manifest),
        LIMITATIONS,
    ]
    path = models_dir / CARD_NAME
    path.write_text("\n".join(lines))
    logger.info("wrote the model card to %s", path)
    return path
