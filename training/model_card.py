"""The model card (`models/README.md`), written from the manifest and the test-split report.

Every number in the card is read from `manifest.json` (which the service serves) and every plot
is copied from the evaluation report, so the card cannot drift from the artifacts it describes.
The prose sections (intended use, data confounds, limitations) are fixed text here, reviewed
like code.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from service.inference.manifest import Manifest, ModelEntry, load_manifest

logger = logging.getLogger(__name__)

CARD_NAME = "README.md"
PLOTS_DIR = "report"
ENSEMBLES = ("classic", "confidence")
PLOT_KINDS = ("confusion", "roc", "reliability")

INTENDED_USE = """\
> **Not for clinical use.** These are research models, trained in a few CPU hours on 2,770 public
> images. They are not a medical device, have not been validated prospectively, and must not be
> used to diagnose, triage or treat anyone. Every output needs review by a qualified clinician.

## Intended use

Demonstrating and testing the triage service: integration with PACS tooling, the API contract,
explanations and monitoring. A site that wants a clinically useful model retrains with the same
package on its own, much larger, data (and with ImageNet weights where it has them), evaluates it
on its own population, and replaces these files; the service reads everything it needs from
`manifest.json`.

Input: one frontal (PA/AP) chest radiograph, as PNG, JPEG or single-frame grayscale DICOM. Output:
the probability of **normal**, **pneumonia** and **tuberculosis** per model and for two ensembles.
Not intended for lateral views, children (see the confound below), other findings, or images that
are not chest radiographs: the models have no "other" class and will still answer.
"""

DATA = """\
## Data

`../shared/data/cxr` (2,770 images, 8-bit JPEG, longest side at most 512 px), two sources:

- `kaggle-mix`: a compilation of public Kaggle sets: adult normal and tuberculosis images, and
  **pediatric** pneumonia images.
- `nih-cxr14`: adult normal and pneumonia images from NIH ChestX-ray14, labels mined from
  radiology reports (noisy); no tuberculosis.

**Known confound.** Every `kaggle-mix` pneumonia image is of a child, every other `kaggle-mix`
image of an adult. A model can score well on `kaggle-mix` by recognising children. The adult NIH
pneumonia images are the check on that shortcut, so every metric below is reported per source:
`nih-cxr14` pneumonia-vs-normal is the number that says whether a model sees pneumonia.

The split is by patient group (the `group` column: a patient or a near-duplicate cluster),
stratified by source and label, seed 42. The test split was used for nothing but this card:
temperatures, the cascade and the abstention threshold were chosen on the validation split.
"""

LIMITATIONS = """\
## Limitations

- **Small, CPU-trained networks.** No pretrained weights could be downloaded here, so all three
  networks learned from about 1,900 training images, for as many epochs as a 2-core CPU allowed
  (see the recipes). The large backbones are far from converged; they are in the bundle so that
  the service, the ensembles and the explanations run on all three architectures.
- **Shortcut learning.** `kaggle-mix` pneumonia can be recognised from the patient's age; the
  pooled and `kaggle-mix` numbers overstate what the models know about pneumonia. Read the
  `nih-cxr14` column.
- **Labels.** NIH labels come from text mining of reports and are noisy; some test "errors" are
  label errors and some "correct" answers are wrong.
- **Population.** Two public sources; no information on scanners, sites, ethnicity or sex.
  Performance on other hospitals' images is unknown and likely lower.
- **Three classes only.** Other findings (effusion, nodules, devices, COVID-19 ...) are forced into
  one of the three classes.
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
        ("epochs (configured / run)", f"{config.get('epochs')} / {entry.training.get('last_epoch')}"),
        ("best validation macro-F1", entry.training.get("best_val_macro_f1")),
        ("batch size", config.get("batch_size")),
        ("learning rate (peak, warm-up then cosine)", config.get("learning_rate")),
        ("warm-up epochs", config.get("warmup_epochs")),
        ("weight decay (AdamW)", config.get("weight_decay")),
        ("label smoothing", config.get("label_smoothing")),
        ("dropout before the head", config.get("dropout")),
        ("batch-norm momentum", config.get("bn_momentum")),
        ("class weights", entry.training.get("class_weights") or config.get("class_weights")),
        ("augmentation", augment or None),
        ("early-stopping patience (epochs)", config.get("patience")),
        ("seed", config.get("seed")),
        ("training images/s (last segment)", entry.training.get("train_images_per_second")),
        ("training time, last segment (s)", entry.training.get("seconds")),
        (
            "software",
            f"TensorFlow {entry.training.get('tensorflow')}, Keras {entry.training.get('keras')} "
            f"({entry.training.get('keras_backend')}), {entry.training.get('strategy')}",
        ),
    ]


def _training_section(manifest: Manifest) -> list[str]:
    lines = [
        "## Training",
        "",
        "Each network was trained from random initialisation on the training split with the",
        "package in `training/`, on a 2-core CPU, with `xray train --config training/recipes/cpu-2core.json`",
        "(see the repository README for the full command). The values below are read from the",
        "manifest's `training` record of each model.",
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
    predictors += [(name, ensemble_metrics.get(name, {}).get(scope, {})) for name in ENSEMBLES]
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
        "- `classic`: the mean of the three models' calibrated probabilities.",
        f"- `confidence`: a cascade over {', '.join(f'`{n}`' for n in spec.confidence.order)}: each",
        f"  model in turn answers when its top probability is at least tau = {spec.confidence.tau};",
        "  otherwise the classic mean answers.",
        f"- `uncertain` is set when the answering ensemble's top probability is below {spec.abstain_below}.",
        "",
        f"Chosen on the {selection.get('data', 'validation split')}: {selection.get('cascade', '')};",
        f"abstention: {selection.get('abstain', '')}.",
        "",
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
        for scope, scores in quantization.get("test", {}).items():
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
    if not rows:
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


def write_model_card(models_dir: Path, report_dir: Path) -> Path:
    """Write `models_dir/README.md` and copy the report's plots to `models_dir/report/`.

    Args:
        models_dir: The bundled models and their manifest, already evaluated on the test split.
        report_dir: The evaluation report of that test split (its PNG plots).

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
    lines = [
        "# Model card: chest X-ray triage (normal / pneumonia / tuberculosis)",
        "",
        INTENDED_USE,
        *_models_table(manifest, models_dir),
        DATA,
        *_training_section(manifest),
        *_metrics_section(manifest),
        *_ensembles_section(manifest),
        *_calibration_section(manifest),
        *_quantization_section(manifest),
        LIMITATIONS,
    ]
    path = models_dir / CARD_NAME
    path.write_text("\n".join(lines))
    logger.info("wrote the model card to %s", path)
    return path
