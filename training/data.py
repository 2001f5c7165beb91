"""Labelled radiographs: reading them, and splitting them by patient group.

Two layouts are read:

* a `labels.csv` with columns `path,label,group[,source]` (paths relative to the CSV's folder);
* one folder per class (`normal/`, `pneumonia/`, `tuberculosis/`); each file is its own group,
  so use a CSV when several images belong to one patient.

The split assigns whole groups to train, validation or test, stratified by (source, label), so
that no patient is on two sides and every source keeps its class mix in each split.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from training.config import CLASSES, SplitConfig

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm")
SPLITS = ("train", "val", "test")
#: A source's images split at this longest stored side into its small and large ones. A source
#: whose images were stored at different sizes is often a mix of archives (sites, scanners,
#: processing), and a model can learn an archive's look in place of its images' disease.
STORED_SIZE_SPLIT_PX = 384
#: The largest weight `archive_balanced_weights` gives an image over its archive's mean: a class
#: with a handful of images in an archive must not be fitted image by image.
MAX_ARCHIVE_WEIGHT = 4.0


class DataError(ValueError):
    """The labelled data cannot be read or split."""


@dataclass(frozen=True)
class Record:
    """One labelled image."""

    path: Path
    label: str
    group: str
    source: str = "default"


def _read_csv(csv_path: Path, classes: Sequence[str]) -> list[Record]:
    root = csv_path.parent
    records = []
    with csv_path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"path", "label", "group"} - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"{csv_path} lacks the column(s) {sorted(missing)}")
        for line, row in enumerate(reader, start=2):
            if row["label"] not in classes:
                raise DataError(
                    f"{csv_path}:{line}: unknown label {row['label']!r}; expected one of {list(classes)}"
                )
            path = root / row["path"]
            records.append(
                Record(
                    path=path, label=row["label"], group=row["group"], source=row.get("source") or "default"
                )
            )
    return records


def _read_folders(root: Path, classes: Sequence[str]) -> list[Record]:
    records = []
    for label in classes:
        folder = root / label
        if not folder.is_dir():
            raise DataError(f"{root} has neither labels.csv nor a {label}/ folder")
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                records.append(Record(path=path, label=label, group=f"{label}/{path.stem}", source=root.name))
    return records


def read_dataset(root: Path, classes: Sequence[str] = CLASSES) -> list[Record]:
    """Read the labelled images under `root` (a labels.csv there, or class folders).

    Raises:
        DataError: No data, an unknown label, or a listed file that does not exist.
    """
    csv_path = root / "labels.csv" if root.is_dir() else root
    records = _read_csv(csv_path, classes) if csv_path.is_file() else _read_folders(root, classes)
    if not records:
        raise DataError(f"no labelled images under {root}")
    absent = [record.path for record in records if not record.path.is_file()]
    if absent:
        raise DataError(f"{len(absent)} listed file(s) do not exist, e.g. {absent[0]}")
    groups: dict[str, set[str]] = defaultdict(set)
    for record in records:
        groups[record.group].add(record.label)
    mixed = [group for group, labels in groups.items() if len(labels) > 1]
    if mixed:
        logger.warning("%d group(s) hold more than one label (e.g. %s)", len(mixed), mixed[0])
    return records


@dataclass(frozen=True)
class Split:
    """Records per split."""

    train: list[Record]
    val: list[Record]
    test: list[Record]

    def part(self, name: str) -> list[Record]:
        """The records of `train`, `val` or `test`."""
        if name not in SPLITS:
            raise KeyError(name)
        records: list[Record] = getattr(self, name)
        return records

    def summary(self) -> dict[str, dict[str, dict[str, int]]]:
        """Image counts per split, source and label (also `all` over sources)."""
        result: dict[str, dict[str, dict[str, int]]] = {}
        for name in SPLITS:
            counts: dict[str, Counter[str]] = defaultdict(Counter)
            for record in self.part(name):
                counts[record.source][record.label] += 1
                counts["all"][record.label] += 1
            result[name] = {
                source: dict(sorted(counter.items())) for source, counter in sorted(counts.items())
            }
        return result

    def fingerprint(self, name: str) -> str:
        """A sha256 of one split's membership (group, label, file name), independent of where the data lies.

        Recorded in the manifest, it lets anyone re-derive the split from the same `labels.csv`
        and prove that it holds exactly the images the models were evaluated on.
        """
        return records_fingerprint(self.part(name))

    def save(self, path: Path) -> None:
        """Write the split as JSON (paths as given)."""
        document = {name: [{**asdict(r), "path": str(r.path)} for r in self.part(name)] for name in SPLITS}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=1))

    @classmethod
    def load(cls, path: Path) -> Split:
        """Read a split written by `save`."""
        document = json.loads(path.read_text())
        parts = {
            name: [Record(**{**row, "path": Path(row["path"])}) for row in document[name]] for name in SPLITS
        }
        return cls(**parts)


def records_fingerprint(records: Iterable[Record]) -> str:
    """A sha256 of a set of images (group, label, file name), independent of where the data lies."""
    rows = sorted(f"{r.group}\t{r.label}\t{r.path.parent.name}/{r.path.name}" for r in records)
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def split_by_group(records: Sequence[Record], config: SplitConfig) -> Split:
    """Assign whole groups to train/val/test, stratified by (source, majority label), seeded.

    Within each stratum the groups are shuffled and dealt out so that each split's image count
    tracks its target fraction; a group's images always stay together.
    """
    by_group: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        by_group[record.group].append(record)
    strata: dict[tuple[str, str], list[str]] = defaultdict(list)
    for group, members in sorted(by_group.items()):
        label = Counter(member.label for member in members).most_common(1)[0][0]
        strata[(members[0].source, label)].append(group)

    rng = random.Random(config.seed)  # noqa: S311 - a reproducible shuffle, not a secret
    targets = {"val": config.val_fraction, "test": config.test_fraction}
    targets["train"] = 1.0 - targets["val"] - targets["test"]
    assigned: dict[str, list[Record]] = {name: [] for name in SPLITS}
    for stratum in sorted(strata):
        groups = strata[stratum]
        rng.shuffle(groups)
        total = sum(len(by_group[group]) for group in groups)
        taken = dict.fromkeys(SPLITS, 0)
        for group in groups:
            # Give the group to the split furthest below its share of this stratum.
            name = min(SPLITS, key=lambda s: (taken[s] - targets[s] * total) / max(targets[s], 1e-9))
            taken[name] += len(by_group[group])
            assigned[name].extend(by_group[group])
    return Split(**assigned)


def labels_of(records: Sequence[Record], classes: Sequence[str] = CLASSES) -> np.ndarray:
    """Class indices of `records` (int32), in the order of `classes`."""
    return np.asarray([classes.index(record.label) for record in records], dtype=np.int32)


def class_weights(labels: Iterable[int], num_classes: int) -> dict[int, float]:
    """Balanced class weights, n / (k * count_c), for classes that occur."""
    counts = Counter(labels)
    total = sum(counts.values())
    return {c: total / (num_classes * counts[c]) for c in range(num_classes) if counts[c]}


def stored_side(path: Path) -> int:
    """The longest side of an image file as stored, from its header; 0 where it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return max(image.size)
    except (OSError, UnidentifiedImageError):  # a DICOM file, or not an image Pillow knows
        return 0


def size_group(side: int) -> str:
    """The stored-size group of an image whose longest stored side is `side` (0: unknown)."""
    if side <= 0:
        return "unknown"
    return f"< {STORED_SIZE_SPLIT_PX} px" if side < STORED_SIZE_SPLIT_PX else f">= {STORED_SIZE_SPLIT_PX} px"


def archives_of(records: Sequence[Record]) -> np.ndarray:
    """Each record's archive: its source and the stored-size group of its file."""
    return np.asarray([f"{r.source} {size_group(stored_side(r.path))}" for r in records])


def archive_balanced_weights(
    labels: np.ndarray, archives: Sequence[str], num_classes: int
) -> tuple[np.ndarray, dict[str, dict[int, float]]]:
    """Per-image loss weights under which no archive's look predicts a class.

    Within each archive (a source and stored-size group), every class present weighs the same in
    total (n_archive / (k_archive * n_archive,class), at most `MAX_ARCHIVE_WEIGHT`); then each
    class is scaled so that all classes weigh the same over the whole set, as balanced class
    weights do. An archive of one class cannot be balanced and keeps weight 1 before that scaling.

    Args:
        labels: (n,) class indices.
        archives: (n,) the archive of each image.
        num_classes: The number of classes.

    Returns:
        The weights (float32, mean 1), and archive → class → weight, for the record.
    """
    labels = np.asarray(labels)
    keys = np.asarray(archives)
    weights = np.ones(len(labels), dtype=np.float64)
    for archive in np.unique(keys):
        inside = keys == archive
        counts = Counter(labels[inside].tolist())
        for label, count in counts.items():
            share = inside.sum() / (len(counts) * count)
            weights[inside & (labels == label)] = min(share, MAX_ARCHIVE_WEIGHT)
    present = [c for c in range(num_classes) if (labels == c).any()]
    for c in present:
        weights[labels == c] *= (len(labels) / len(present)) / weights[labels == c].sum()
    table: dict[str, dict[int, float]] = defaultdict(dict)
    for archive, label, weight in zip(keys.tolist(), labels.tolist(), weights.tolist(), strict=True):
        table[archive][int(label)] = round(weight, 4)
    return weights.astype(np.float32), dict(table)
