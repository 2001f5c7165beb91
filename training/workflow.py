"""The steps from labelled images to served artifacts, shared by the `xray` subcommands.

split (by patient group) → train each network → export each (ONNX, parity, temperature on
validation) → choose the ensembles' order, tau and abstention on validation → evaluate on the
test split, which nothing before has looked at.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
from sklearn.metrics import f1_score

from service.core.config import Settings
from service.inference import Predictor, load_predictor
from training import input_check, non_chest
from training.cache import load_images
from training.calibration import (
    MEMBER_CONFIDENCE,
    MEMBER_RESAMPLES,
    choose_abstain_threshold,
    choose_cascade,
    choose_members,
    fit_temperature,
    negative_log_likelihood,
    weighted_mean_f1,
)
from training.config import CLASSES, SplitConfig
from training.data import Record, Split, labels_of, read_dataset, records_fingerprint, split_by_group
from training.distill import top_class_agreement, write_teacher_probabilities
from training.evaluate import POOLED, UNWEIGHTED_MEAN, predict_records, white_box_check, write_report
from training.export import export_run, load_run_config, served_model
from training.manifest import read_document, set_ensembles, update_model_fields, upsert_model, write_document
from training.metrics import expected_calibration_error
from training.quantize import quantize_int8
from training.runtime import worker_initializer
from xray.contract.decoders import ImageFormat
from xray.contract.ensembles import ENSEMBLES, calibrated_softmax
from xray.contract.errors import RequestError
from xray.contract.images import equalize_batch, resize_gray
from xray.contract.input_check import FEATURES_OUTPUT, INPUT_CHECK_FILE, InputCheck, save_statistics
from xray.contract.manifest import ModelEntry, file_sha256
from xray.contract.model import OnnxModel
from xray.contract.preprocessing import decode_image, preprocess

logger = logging.getLogger(__name__)

SPLIT_FILE = "split.json"

T = TypeVar("T")


def in_fresh_process(function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run `function(*args, **kwargs)` in a freshly spawned Python process and return its result.

    TensorFlow never gives back the memory of the graphs a process built: training
    InceptionResNetV2 and then converting it with tf2onnx (about 11 GB on its own) in one
    process peaked at 22 GB here. Each training and each export therefore runs in its own
    process, and its memory returns to the system when it ends. Exceptions are re-raised here.
    """
    context = multiprocessing.get_context("spawn")
    level = logging.getLevelName(logging.getLogger().level)
    with context.Pool(1, initializer=worker_initializer, initargs=(level, os.getpid())) as pool:
        return pool.apply(function, args, kwargs)


def prepare_split(data_dir: Path, runs_dir: Path, config: SplitConfig) -> Split:
    """Load `runs_dir/split.json`, or split `data_dir` by patient group and save it.

    Every network of a run folder shares one split, so the ensembles are validated and tested
    on images none of their members trained on.
    """
    path = runs_dir / SPLIT_FILE
    if path.is_file():
        split = Split.load(path)
        logger.info("using the split in %s", path)
    else:
        records = read_dataset(data_dir.resolve())
        split = split_by_group(records, config)
        split.save(path)
        logger.info("split %d images by patient group into %s", len(records), path)
    for name, sources in split.summary().items():
        logger.info("%s: %s", name, sources)
    return split


def export_and_calibrate(
    run_dir: Path,
    models_dir: Path,
    split: Split,
    cache_dir: Path,
    *,
    version: str | None = None,
    quantize: Literal["none", "int8"] | None = None,
) -> dict[str, Any]:
    """Export a run, fit its temperature on the validation split, and write its manifest entry.

    Args:
        run_dir: The training run.
        models_dir: Where the ONNX file and the manifest go.
        split: The split the run was trained on.
        cache_dir: The decoded-image cache.
        version: The model version; default: the export's timestamp.
        quantize: Serve an INT8 copy (`int8`) or the float model (`none`); default: the run's recipe.
    """
    config = load_run_config(run_dir)
    val_images = np.asarray(load_images(split.val, config.size, cache_dir))
    entry = export_run(run_dir, models_dir, val_images[:8], version=version)
    if (quantize or config.quantize) == "int8":
        entry = _quantize_entry(entry, run_dir, models_dir, split, cache_dir, val_images, config.seed)
    logits = served_model(models_dir / entry["file"], entry).logits_of(val_images)
    labels = labels_of(split.val)
    temperature = fit_temperature(logits, labels)
    raw, calibrated = calibrated_softmax(logits, 1.0), calibrated_softmax(logits, temperature)
    entry["temperature"] = round(temperature, 6)
    entry["metrics"]["validation"] = {
        "images": len(labels),
        "accuracy": float(np.mean(raw.argmax(1) == labels)),
        "macro_f1": float(f1_score(labels, raw.argmax(1), average="macro")),
        "nll_uncalibrated": negative_log_likelihood(logits, labels, 1.0),
        "nll_calibrated": negative_log_likelihood(logits, labels, temperature),
        "ece_uncalibrated": expected_calibration_error(labels, raw),
        "ece_calibrated": expected_calibration_error(labels, calibrated),
    }
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    entry["training"] = {"config": config.model_dump(), **summary, "curve": training_curve(run_dir)}
    parent = _parent_run(run_dir)
    if parent is not None and (parent / "summary.json").is_file():
        # Where the weights came from: that run's own record (device, precision, epochs).
        entry["training"]["started_from"] = {
            "config": json.loads((parent / "config.json").read_text()),
            **json.loads((parent / "summary.json").read_text()),
        }
    entry["data"] = {
        "splits": split.summary(),
        "split_method": "by patient group, stratified by source and label",
        "split_fingerprints": {name: split.fingerprint(name) for name in ("train", "val", "test")},
    }
    upsert_model(models_dir, entry)
    logger.info(
        "%s: temperature %.3f, validation ECE %.4f → %.4f",
        config.arch,
        temperature,
        entry["metrics"]["validation"]["ece_uncalibrated"],
        entry["metrics"]["validation"]["ece_calibrated"],
    )
    return entry


def training_curve(run_dir: Path) -> list[list[float]]:
    """[elapsed seconds, validation macro-F1] per epoch, from the run's `state.json`.

    A run that started from another run's weights (`init_weights` pointing into a run folder)
    continues that run's curve, its time counted after the parent's.
    """
    path = run_dir / "state.json"
    history = json.loads(path.read_text()).get("history", []) if path.is_file() else []
    curve = [
        [round(row["elapsed_seconds"], 1), round(row["val_macro_f1"], 4)]
        for row in history
        if "elapsed_seconds" in row and "val_macro_f1" in row
    ]
    parent = _parent_run(run_dir)
    if parent is None:
        return curve
    before = training_curve(parent)
    offset = before[-1][0] if before else 0.0
    return before + [[round(offset + seconds, 1), score] for seconds, score in curve]


def _parent_run(run_dir: Path) -> Path | None:
    """The run folder whose weights this run started from, if it is one."""
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        return None
    init = json.loads(config_path.read_text()).get("init_weights")
    parent = Path(init).parent if init else None
    return parent if parent is not None and (parent / "config.json").is_file() and parent != run_dir else None


def _quantize_entry(
    entry: dict[str, Any],
    run_dir: Path,
    models_dir: Path,
    split: Split,
    cache_dir: Path,
    val_images: np.ndarray,
    seed: int,
    calibration_count: int = 64,
) -> dict[str, Any]:
    """Serve an INT8 copy: quantize, compare with float on validation, keep the float file in the run."""
    float_path = models_dir / entry["file"]
    int8_path = float_path.with_suffix(".int8.onnx")
    train_images = load_images(split.train, entry["input"]["height"], cache_dir)
    count = min(calibration_count, len(train_images))
    picks = np.sort(np.random.default_rng(seed).choice(len(train_images), count, replace=False))
    # The graph is calibrated on what it will be fed: equalised where the manifest says so.
    calibration = equalize_batch(np.asarray(train_images[picks]), entry["input"]["equalization"])
    quantization = quantize_int8(float_path, int8_path, calibration)
    # Before calibration: the entry's temperature is still 1.
    float_probabilities = served_model(float_path, entry).probabilities_of(val_images)
    int8_probabilities = served_model(int8_path, entry).probabilities_of(val_images)
    quantization.update(
        {
            "float_file_sha256": entry["sha256"],
            "float_bytes": float_path.stat().st_size,
            "int8_bytes": int8_path.stat().st_size,
            "val_top1_agreement_with_float": float(
                np.mean(float_probabilities.argmax(1) == int8_probabilities.argmax(1))
            ),
            "val_max_probability_difference": float(np.abs(float_probabilities - int8_probabilities).max()),
        }
    )
    float_path.replace(run_dir / f"{entry['name']}.float.onnx")
    return {**entry, "file": int8_path.name, "sha256": file_sha256(int8_path), "quantization": quantization}


def choose_ensembles(
    models_dir: Path,
    val_records: list[Record],
    *,
    target_accuracy: float = 0.95,
    confidence: float | None = 0.95,
) -> dict[str, Any]:
    """Pick the mean's members, the cascade's order and tau and `abstain_below` on validation; write them.

    A model is left out of the mean (weight 0) only when validation shows with confidence that the
    mean is better without it (`choose_members`). `abstain_below` is the lowest threshold at which
    the answered cases' accuracy reaches `target_accuracy` with `confidence`
    (`choose_abstain_threshold`).
    """
    predictor = load_predictor(Settings(models_dir=models_dir))
    predictions = predict_records(predictor, val_records)
    per_model = {name: predictions.probabilities[name] for name in predictor.models}
    labels = predictions.labels
    membership = choose_members(per_model, labels)
    weights = membership.weights
    order, tau, cascade_f1 = choose_cascade(per_model, labels, weights=weights)
    abstention = choose_abstain_threshold(
        per_model, labels, target_accuracy=target_accuracy, confidence=confidence, weights=weights
    )
    if not abstention.reached:
        logger.warning(
            "no threshold reaches %.0f%% accuracy on the answered validation cases; abstaining on %.1f%%",
            100 * target_accuracy,
            100 * (1 - abstention.coverage),
        )
    goal = (
        f"{target_accuracy:.0%} accuracy"
        if confidence is None
        else f"{target_accuracy:.0%} accuracy with {confidence:.0%} confidence (the one-sided "
        "Clopper-Pearson lower bound of their validation accuracy, per threshold)"
    )
    ensembles = {
        "classic": {"weights": weights},
        "confidence": {"order": order, "tau": tau},
        "abstain_below": round(abstention.threshold, 6),
        "selection": {
            "data": f"validation split ({len(labels)} images)",
            "weights": "every subset of the models (equal weights) scored on validation macro-F1; the best "
            f"is kept only if it beats the mean of all models in at least {MEMBER_CONFIDENCE:.0%} of "
            f"{MEMBER_RESAMPLES} paired bootstrap resamples of the validation split",
            "unweighted_val_macro_f1": membership.all_f1,
            "best_weights": membership.best,
            "best_weights_val_macro_f1": membership.best_f1,
            "best_weights_bootstrap_win_rate": membership.win_rate,
            "single_model_val_macro_f1": {
                name: weighted_mean_f1({name: probs}, labels, None) for name, probs in per_model.items()
            },
            "cascade": "order (2 of the models) and tau from a grid, maximising validation macro-F1",
            "cascade_val_macro_f1": cascade_f1,
            "abstain": f"lowest threshold on the classic ensemble's confidence at which the answers not "
            f"flagged uncertain (confidence at or above it, the models' top labels agreeing) reach "
            f"{goal}; the coverage is what that goal costs",
            "abstain_goal_accuracy": target_accuracy,
            "abstain_goal_confidence": confidence,
            "abstain_goal_reached": abstention.reached,
            "abstain_val_coverage": abstention.coverage,
            "abstain_val_accuracy_kept": abstention.accuracy,
            "abstain_val_accuracy_kept_lower_bound": abstention.accuracy_lower_bound,
        },
    }
    set_ensembles(models_dir, ensembles)
    logger.info("ensembles chosen on validation data: %s", ensembles)
    return ensembles


def _compact(metrics: dict[str, Any]) -> dict[str, Any]:
    keys = ("count", "accuracy", "macro_f1", "macro_roc_auc", "pneumonia_vs_normal_auc", "ece")
    result = {key: metrics[key] for key in keys}
    result["f1"] = {name: value["f1"] for name, value in metrics["per_class"].items()}
    if "abstention" in metrics:
        result["abstention"] = metrics["abstention"]
    return result


def float_original(runs_dir: Path, quantization: dict[str, Any]) -> Path | None:
    """The float32 file an INT8 model was quantized from, found under `runs_dir` by its checksum.

    `_quantize_entry` keeps it in the run folder it exported, whatever that folder is called, and
    records its sha256 in the manifest; the checksum, not a folder name, finds it again.
    """
    wanted = quantization.get("float_file_sha256")
    for path in sorted(runs_dir.rglob("*.float.onnx")) if runs_dir.is_dir() else []:
        if file_sha256(path) == wanted:
            return path
    return None


def _without_features(entry: ModelEntry) -> ModelEntry:
    return entry.model_copy(update={"outputs": entry.outputs.model_copy(update={"features": None})})


def compare_quantized(
    models_dir: Path, runs_dir: Path, records: list[Record], cache_dir: Path
) -> dict[str, dict[str, Any]]:
    """Score each INT8 model against the float32 model it was quantized from, on `records`.

    The float file is the one `_quantize_entry` kept in the model's run folder, found under
    `runs_dir` by its checksum. A model whose float file is not there is reported as such in the
    result (and logged), never left out silently. Both use the served temperature.

    Returns:
        Per model name and scope (pooled and each source): macro-F1 and accuracy of both, and
        how often their top-1 classes agree; or, for a model whose original is missing, why.
    """
    predictor = load_predictor(Settings(models_dir=models_dir))
    labels = labels_of(records)
    sources = sorted({record.source for record in records})
    scopes = {POOLED: np.ones(len(records), dtype=bool)} | {
        source: np.asarray([record.source == source for record in records]) for source in sources
    }
    results: dict[str, dict[str, Any]] = {}
    for name, model in predictor.models.items():
        entry = model.entry
        if entry.quantization is None:
            continue
        float_path = float_original(runs_dir, entry.quantization)
        if float_path is None:
            checksum = entry.quantization.get("float_file_sha256")
            missing = f"no *.float.onnx with sha256 {checksum} under {runs_dir}"
            logger.warning("%s: INT8 not compared with float32: %s", name, missing)
            results[name] = {"skipped": missing}
            continue
        images = np.asarray(load_images(records, entry.input.height, cache_dir))
        # The original predates the input check, which adds `features` to the served graph only.
        original = OnnxModel.open(float_path, _without_features(entry))
        predicted = {
            "float32": original.probabilities_of(images).argmax(axis=1),
            "int8": model.probabilities_of(images).argmax(axis=1),
        }
        results[name] = {
            scope: {
                "count": int(mask.sum()),
                "top1_agreement": float(np.mean(predicted["float32"][mask] == predicted["int8"][mask])),
                **{
                    # Macro-F1 over the classes present, as the evaluation report counts it.
                    f"{metric}_{kind}": float(
                        f1_score(labels[mask], guess[mask], labels=np.unique(labels[mask]), average="macro")
                        if metric == "macro_f1"
                        else np.mean(guess[mask] == labels[mask])
                    )
                    for kind, guess in predicted.items()
                    for metric in ("macro_f1", "accuracy")
                },
            }
            for scope, mask in scopes.items()
        }
        logger.info("%s INT8 vs float32 on %d images: %s", name, len(records), results[name][POOLED])
    return results


def write_teacher_targets(
    models_dir: Path, records: list[Record], data_root: Path, out: Path, *, predictor: str = "classic"
) -> float:
    """Write what the served `predictor` (a model or an ensemble) answers on `records`, for distillation.

    The probabilities are the calibrated ones the service returns. Returns how often the
    teacher's top class is the label on these images.
    """
    served = load_predictor(Settings(models_dir=models_dir))
    if predictor not in (*served.models, *ENSEMBLES):
        raise ValueError(f"no predictor {predictor!r} in {models_dir}; one of {[*served.models, *ENSEMBLES]}")
    predictions = predict_records(served, records)
    probabilities = predictions.probabilities[predictor]
    write_teacher_probabilities(out, records, probabilities, data_root, CLASSES)
    accuracy = top_class_agreement(probabilities, predictions.labels)
    logger.info(
        "%s's answers on %d images written to %s (top class = label: %.3f)",
        predictor,
        len(records),
        out,
        accuracy,
    )
    return accuracy


def evaluate_models(
    models_dir: Path,
    records: list[Record],
    out_dir: Path,
    *,
    split_name: str = "test",
    update_manifest: bool = True,
    runs_dir: Path | None = None,
    cache_dir: Path | None = None,
) -> dict[str, Any]:
    """Evaluate the served models and ensembles on `records`; write the report (and the manifest).

    With `runs_dir` (and `cache_dir`), each INT8 model is also compared with its float32 original
    on the same images, and the comparison is recorded under its `quantization` entry.
    """
    predictor = load_predictor(Settings(models_dir=models_dir))
    predictions = predict_records(predictor, records)
    context = {
        "split": split_name,
        "images": len(records),
        "versions": dict(predictor.versions),
        # Whether these images are the models' own held-out split (see the card's before/after).
        "images_fingerprint": records_fingerprint(records),
        "models_split_fingerprints": {
            entry.name: entry.data.get("split_fingerprints", {}).get(split_name)
            for entry in predictor.manifest.models
        },
    }
    white_box = white_box_check(predictor, predictions, CLASSES)
    report = write_report(predictions, CLASSES, out_dir, context, white_box)
    if update_manifest:
        scopes = list(report)
        for name in predictor.models:
            entry_metrics = dict(predictor.manifest.model(name).metrics)
            entry_metrics[split_name] = {scope: _compact(report[scope][name]) for scope in scopes}
            update_model_fields(models_dir, name, metrics=entry_metrics)
        document_ensembles = predictor.manifest.ensembles.model_dump()
        document_ensembles["metrics"] = {
            split_name: {
                name: {scope: _compact(report[scope][name]) for scope in scopes}
                for name in (*ENSEMBLES, UNWEIGHTED_MEAN)
                if name in report[POOLED]
            }
        }
        set_ensembles(models_dir, document_ensembles)
        if predictor.manifest.input_check is not None:
            document = read_document(models_dir)
            document["input_check"]["metrics"][split_name] = {
                scope: report[scope]["input_check"] for scope in scopes
            }
            write_document(models_dir, document)
    if runs_dir is not None:
        comparison = compare_quantized(models_dir, runs_dir, records, cache_dir or runs_dir / "cache")
        (out_dir / "quantization.json").write_text(json.dumps(comparison, indent=1))
        for name, scores in comparison.items():
            entry = predictor.manifest.model(name)
            quantization = dict(entry.quantization or {})
            recorded = quantization.get(split_name)
            held_out = context["models_split_fingerprints"]  # as recorded when the model was evaluated
            same_images = held_out.get(name) == context["images_fingerprint"]
            if "skipped" in scores and recorded and "skipped" not in recorded and same_images:
                # The same INT8 file (the manifest's checksum) was compared on these same images
                # when its float original was at hand: that comparison still holds, so it is kept.
                logger.info("%s: keeping the INT8 comparison recorded for the %s split", name, split_name)
                continue
            quantization[split_name] = scores
            if update_manifest:
                update_model_fields(models_dir, name, quantization=quantization)
    pooled = report[POOLED]
    logger.info(
        "%s macro-F1: %s",
        split_name,
        {name: round(pooled[name]["macro_f1"], 4) for name in (*predictor.models, *ENSEMBLES)},
    )
    return report


def _views_and_logits(
    predictor: Predictor, images_at: Callable[[int], np.ndarray]
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """Every network's input-check views (pooled features, class maps) and logits, in batches.

    Args:
        predictor: The served models.
        images_at: The images at a given input size, (n, size, size) uint8.
    """
    views: dict[str, dict[str, np.ndarray]] = {}
    logits: dict[str, np.ndarray] = {}
    for name, model in predictor.models.items():
        images = images_at(model.entry.input.height)
        runs = [
            model.run_outputs(model.from_gray(images[start : start + 32]), with_maps=True, with_features=True)
            for start in range(0, len(images), 32)
        ]
        views[name] = {
            "features": np.concatenate([run.features for run in runs if run.features is not None]),
            "class_maps": np.concatenate([run.maps for run in runs if run.maps is not None]),
        }
        logits[name] = np.concatenate([run.logits for run in runs])
    return views, logits


def non_chest_images(
    dicom_dir: Path | None, chests: list[np.ndarray], *, count: int = 20
) -> dict[str, list[np.ndarray]]:
    """Non-chest images of each kind: the synthetic kinds, and the real ones in `dicom_dir`.

    Every DICOM in `dicom_dir` whose Body Part Examined is not CHEST counts as `other_anatomy`
    (the shared data's hip radiographs); files that do not decode are skipped.
    """
    from xray.contract.decoders.dicom import read_dataset

    images = {
        kind: non_chest.make(kind, count, chests, seed=index) for index, kind in enumerate(non_chest.KINDS)
    }
    others = []
    for path in sorted(dicom_dir.glob("*.dcm")) if dicom_dir is not None and dicom_dir.is_dir() else []:
        data = path.read_bytes()
        try:
            if str(read_dataset(data).get("BodyPartExamined", "")).upper() == "CHEST":
                continue
            others.append(decode_image(data, declared=ImageFormat.DICOM).pixels)
        except RequestError:
            continue
    if others:
        images["other_anatomy"] = others
    return images


def _seconds_per_image(
    check: InputCheck, views: dict[str, dict[str, np.ndarray]], repeats: int = 200
) -> float:
    """Median wall time of the check's score for one image (what it adds to a request)."""
    one = {
        network: {view: values[:1] for view, values in by_view.items()} for network, by_view in views.items()
    }
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        check.scores(one)
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def fit_input_check_step(
    models_dir: Path,
    split: Split,
    cache_dir: Path,
    *,
    dicom_dir: Path | None = None,
    pass_rate: float = input_check.DEFAULT_PASS_RATE,
) -> dict[str, Any]:
    """Give every model its `features` output, fit the input check, and record it in the manifest.

    Statistics come from the training split; robust scales and the threshold (`pass_rate` of
    validation passes) from the validation split. The check is compared with the energy score on
    non-chest images (the synthetic kinds, and `dicom_dir`'s non-chest radiographs): AUROC against
    the validation radiographs, and the share detected at each score's own threshold.

    Returns:
        The manifest's `input_check` entry.
    """
    document = read_document(models_dir)
    for entry in document["models"]:
        path = models_dir / entry["file"]
        if input_check.expose_features(path):
            logger.info("%s: added the pooled features output", entry["name"])
        entry["sha256"] = file_sha256(path)
        entry["outputs"]["features"] = FEATURES_OUTPUT
    document.pop("input_check", None)  # statistics of the previous graphs no longer apply
    write_document(models_dir, document)

    predictor = load_predictor(Settings(models_dir=models_dir))
    labels = labels_of(split.train)
    train_views, _ = _views_and_logits(
        predictor, lambda size: np.asarray(load_images(split.train, size, cache_dir))
    )
    val_views, val_logits = _views_and_logits(
        predictor, lambda size: np.asarray(load_images(split.val, size, cache_dir))
    )
    check = input_check.fit_input_check(train_views, labels, val_views, pass_rate=pass_rate)
    val_scores = {
        "mahalanobis": check.scores(val_views),
        "energy": input_check.energy_scores(val_logits, val_logits, check.highest_views),
    }
    thresholds = {
        "mahalanobis": check.threshold,
        "energy": float(np.quantile(val_scores["energy"], pass_rate, method="higher")),
    }
    # The chest-derived kinds start from every 37th validation radiograph, decoded as the cache
    # would at 512 (decoding those few, not caching the whole split at a size nothing else uses).
    chests = [preprocess(record.path.read_bytes(), 512, 512) for record in split.val[::37]]
    kinds = non_chest_images(dicom_dir, chests)
    compared: dict[str, dict[str, dict[str, float]]] = {method: {} for method in thresholds}
    for kind, images in kinds.items():
        views, logits = _views_and_logits(
            predictor,
            lambda size, images=images: np.stack([resize_gray(image, size, size) for image in images]),
        )
        scores = {
            "mahalanobis": check.scores(views),
            "energy": input_check.energy_scores(logits, val_logits, check.highest_views),
        }
        for method, threshold in thresholds.items():
            compared[method][kind] = {
                "count": len(images),
                "auroc_vs_validation": round(input_check.roc_auc(val_scores[method], scores[method]), 4),
                "detected": round(float(np.mean(scores[method] > threshold)), 4),
            }
    detection = {
        method: float(np.mean([row["detected"] for row in rows.values()]))
        for method, rows in compared.items()
    }
    logger.info("input check: mean share detected per kind of non-chest image %s", detection)
    statistics = models_dir / INPUT_CHECK_FILE
    save_statistics(statistics, check.models)
    document = read_document(models_dir)
    document["input_check"] = {
        "method": check.method,
        "file": statistics.name,
        "sha256": file_sha256(statistics),
        "threshold": round(check.threshold, 6),
        "highest_views": check.highest_views,
        "selection": {
            "data": f"statistics: training split ({len(labels)} images); robust scales and threshold: "
            f"validation split ({len(val_scores['mahalanobis'])} images)",
            "views": "per network: pooled features and the class-map layout; the score averages "
            f"an image's {check.highest_views} highest view z-scores",
            "components": input_check.DEFAULT_COMPONENTS,
            "threshold_rule": f"the {pass_rate:.0%} quantile of the validation images' scores",
            "compared_on_non_chest_images": compared,
            "mean_share_detected": detection,
        },
        "metrics": {
            "validation_pass_rate": float(np.mean(val_scores["mahalanobis"] <= check.threshold)),
            "seconds_per_image": _seconds_per_image(check, val_views),
        },
    }
    write_document(models_dir, document)
    return dict(document["input_check"])
