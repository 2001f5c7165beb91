"""Knowledge distillation: a teacher's class probabilities, read from a file, blended with the labels.

The teacher's answers arrive as a CSV (`path`, then one column per class), so any teacher serves:
a stronger network of this package, an ensemble, or a pretrained model that runs elsewhere (the
one ImageNet-pretrained network reachable here is PyTorch, which training never imports). Each
training image's target is then

    (1 - weight) · one_hot(label) + weight · softmax(log p_teacher / temperature)

and the loss is a cross-entropy on probabilities, as with mixup (the two combine: mixup blends
these targets).
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.config import CLASSES, DistillConfig
from training.data import DataError, Record, labels_of


def read_teacher_probabilities(
    path: Path, records: Sequence[Record], classes: Sequence[str] = CLASSES
) -> np.ndarray:
    """The teacher's probabilities (n, classes) for `records`, in their order.

    A row's `path` matches a record whose path ends with it (labels.csv's relative paths) or
    equals it. Each row is normalised to sum to 1.

    Raises:
        DataError: The file is not UTF-8, lacks a column, holds a negative, non-finite or all-zero
            row, names one image twice, or has no row for some record.
    """
    return _parse_teacher(path.read_bytes(), path, records, classes)


def _parse_teacher(
    content: bytes, path: Path, records: Sequence[Record], classes: Sequence[str]
) -> np.ndarray:
    """`read_teacher_probabilities` on the file's bytes, read once, so its checksum is theirs."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"{path} is not UTF-8 text: {error.reason} at byte {error.start}") from None
    rows: dict[tuple[str, ...], np.ndarray] = {}
    with io.StringIO(text, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"path", *classes} - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"{path} lacks the column(s) {sorted(missing)}")
        for line, row in enumerate(reader, start=2):
            try:
                values = np.asarray([float(row[name]) for name in classes], dtype=np.float64)
            except ValueError as error:
                raise DataError(f"{path}:{line}: {error}") from None
            if not np.all(np.isfinite(values)) or np.any(values < 0) or values.sum() <= 0:
                raise DataError(f"{path}:{line}: probabilities must be finite, non-negative, not all zero")
            key = Path(row["path"]).parts
            if key in rows:
                raise DataError(f"{path}:{line}: {row['path']!r} appears twice")
            rows[key] = values / values.sum()
    longest = max((len(key) for key in rows), default=0)
    found: list[np.ndarray] = []
    absent: list[Record] = []
    for record in records:
        parts = record.path.parts
        # The longest tail of the record's path that the file names: "images/normal/a.png".
        match = next(
            (rows[parts[-k:]] for k in range(min(longest, len(parts)), 0, -1) if parts[-k:] in rows), None
        )
        if match is None:
            absent.append(record)
        else:
            found.append(match)
    if absent:
        raise DataError(
            f"{path} has no probabilities for {len(absent)} of {len(records)} training images, "
            f"e.g. {absent[0].path}"
        )
    return np.asarray(found, dtype=np.float32).reshape(len(records), len(classes))


def write_teacher_probabilities(
    path: Path,
    records: Sequence[Record],
    probabilities: np.ndarray,
    root: Path,
    classes: Sequence[str] = CLASSES,
) -> None:
    """Write a teacher's probabilities (n, classes) for `records` as `read_teacher_probabilities` reads them.

    Args:
        path: The CSV to write.
        records: The images, in the order of `probabilities`' rows.
        probabilities: The teacher's class probabilities.
        root: The data folder: paths under it are written relative to it, as in labels.csv;
            others absolute.
        classes: The class names, in the order of `probabilities`' columns.
    """
    base = root.resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", *classes])
        for record, row in zip(records, probabilities, strict=True):
            # A split saved by one command names its files as that command's --data spelt them.
            image = record.path.resolve()
            name = image.relative_to(base) if image.is_relative_to(base) else image
            writer.writerow([name.as_posix(), *(f"{value:.6f}" for value in row)])


def soften(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """p^(1/T), renormalised per row: T > 1 flattens the teacher's answers, T < 1 sharpens them."""
    logs = np.log(np.clip(probabilities.astype(np.float64), 1e-12, None)) / temperature
    logs -= logs.max(axis=1, keepdims=True)
    out = np.exp(logs)
    softened: np.ndarray = (out / out.sum(axis=1, keepdims=True)).astype(np.float32)
    return softened


def top_class_agreement(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """How often a teacher's top class is the label (NaN for no images).

    Near 1 on the teacher's own training images means it memorised them and adds little beyond
    the labels.
    """
    return float(np.mean(probabilities.argmax(axis=1) == labels)) if len(labels) else math.nan


def distillation_targets(
    config: DistillConfig, records: Sequence[Record], classes: Sequence[str] = CLASSES
) -> tuple[np.ndarray, dict[str, Any]]:
    """Each training image's target (n, classes), and what the run's summary records of the teacher.

    Args:
        config: The teacher's file, its share of each target and its temperature.
        records: The training images.
        classes: The class names, in the model's output order.
    """
    source = Path(config.targets)
    content = source.read_bytes()
    teacher = _parse_teacher(content, source, records, classes)
    labels = labels_of(records, classes)
    one_hot = np.eye(len(classes), dtype=np.float32)[labels]
    targets = (1.0 - config.weight) * one_hot + config.weight * soften(teacher, config.temperature)
    record = {
        "targets": source.name,
        "sha256": hashlib.sha256(content).hexdigest(),
        "weight": config.weight,
        "temperature": config.temperature,
        "teacher_train_accuracy": round(top_class_agreement(teacher, labels), 4),
    }
    return targets.astype(np.float32), record
