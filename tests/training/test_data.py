"""Reading labelled data and the patient-level split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.factories import gradient, png_bytes
from tests.training.conftest import write_labelled_images
from training.config import SplitConfig
from training.data import (
    MAX_ARCHIVE_WEIGHT,
    DataError,
    Record,
    Split,
    archive_balanced_weights,
    archives_of,
    class_weights,
    read_dataset,
    size_group,
    split_by_group,
    stored_side,
)


def records(groups: int, per_group: int = 1) -> list[Record]:
    result = []
    for g in range(groups):
        label = ("normal", "pneumonia", "tuberculosis")[g % 3]
        source = ("kaggle-mix", "nih-cxr14")[g % 2]
        for i in range(per_group + (g % 3 == 0)):
            result.append(Record(path=Path(f"/data/{g}-{i}.png"), label=label, group=f"g{g}", source=source))
    return result


def test_split_never_puts_a_group_on_two_sides() -> None:
    data = records(300, per_group=2)
    split = split_by_group(data, SplitConfig(seed=7))
    sides = {name: {r.group for r in split.part(name)} for name in ("train", "val", "test")}
    assert not sides["train"] & sides["val"]
    assert not sides["train"] & sides["test"]
    assert not sides["val"] & sides["test"]
    assert sum(len(split.part(name)) for name in ("train", "val", "test")) == len(data)


def test_split_is_stratified_by_source_and_label() -> None:
    split = split_by_group(records(600), SplitConfig(val_fraction=0.15, test_fraction=0.15, seed=1))
    summary = split.summary()
    for source in ("kaggle-mix", "nih-cxr14"):
        for label, total in summary["train"][source].items():
            whole = sum(summary[name][source].get(label, 0) for name in ("train", "val", "test"))
            assert total / whole == pytest.approx(0.70, abs=0.03)
            assert summary["test"][source][label] / whole == pytest.approx(0.15, abs=0.03)


def test_split_is_reproducible_and_seeded() -> None:
    data = records(200)
    first = split_by_group(data, SplitConfig(seed=3))
    again = split_by_group(data, SplitConfig(seed=3))
    other = split_by_group(data, SplitConfig(seed=4))
    assert first == again
    assert {r.group for r in first.test} != {r.group for r in other.test}


def test_fingerprint_names_the_membership_not_the_location() -> None:
    split = split_by_group(records(90), SplitConfig(seed=3))

    def moved(part: list[Record]) -> list[Record]:
        return [Record(Path("/mnt") / r.path.relative_to("/"), r.label, r.group, r.source) for r in part]

    elsewhere = Split(moved(split.train), moved(split.val), moved(split.test))
    assert elsewhere.fingerprint("test") == split.fingerprint("test")
    assert split.fingerprint("test") != split.fingerprint("val")
    one_swapped = Split(split.train[1:], split.val, [*split.test, split.train[0]])
    assert one_swapped.fingerprint("test") != split.fingerprint("test")


def test_split_round_trips_through_json(tmp_path: Path) -> None:
    split = split_by_group(records(60), SplitConfig())
    split.save(tmp_path / "split.json")
    assert Split.load(tmp_path / "split.json") == split


def test_labels_csv_is_read_relative_to_its_folder(tmp_path: Path) -> None:
    root = write_labelled_images(tmp_path / "data", per_class=4)
    data = read_dataset(root)
    assert len(data) == 12
    assert all(record.path.is_file() for record in data)
    assert {record.source for record in data} == {"site-a", "site-b"}


def test_class_folders_are_read(tmp_path: Path) -> None:
    for label in ("normal", "pneumonia", "tuberculosis"):
        (tmp_path / label).mkdir()
        (tmp_path / label / "a.png").write_bytes(png_bytes(gradient()))
    data = read_dataset(tmp_path)
    assert sorted(record.label for record in data) == ["normal", "pneumonia", "tuberculosis"]
    assert len({record.group for record in data}) == 3


def test_unknown_label_and_missing_files_are_reported(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("path,label,group\na.png,covid,g1\n")
    with pytest.raises(DataError, match="unknown label 'covid'"):
        read_dataset(tmp_path)
    (tmp_path / "labels.csv").write_text("path,label,group\nabsent.png,normal,g1\n")
    with pytest.raises(DataError, match="do not exist"):
        read_dataset(tmp_path)


def test_balanced_class_weights() -> None:
    assert class_weights([0, 0, 0, 1], 3) == {0: 4 / 9, 1: 4 / 3}


def test_stored_side_is_read_from_the_header_and_grouped_into_archives(tmp_path: Path) -> None:
    (tmp_path / "wide.png").write_bytes(png_bytes(gradient(height=200, width=500)))
    (tmp_path / "note.dcm").write_bytes(b"not an image Pillow reads")
    assert stored_side(tmp_path / "wide.png") == 500
    assert stored_side(tmp_path / "note.dcm") == 0
    assert [size_group(side) for side in (256, 383, 384, 512, 0)] == [
        "< 384 px", "< 384 px", ">= 384 px", ">= 384 px", "unknown",
    ]  # fmt: skip
    records = [
        Record(tmp_path / "wide.png", "normal", "g1", "site-a"),
        Record(tmp_path / "note.dcm", "normal", "g2", "site-b"),
    ]
    assert archives_of(records).tolist() == ["site-a >= 384 px", "site-b unknown"]


def test_archive_balanced_weights_take_the_class_out_of_the_archive() -> None:
    # Archive "a": 10 normal, 30 tuberculosis; "b": 30 normal, 10 tuberculosis, 20 pneumonia;
    # "c": tuberculosis only. Unweighted, "a" says tuberculosis and "b" says normal.
    labels = np.array([0] * 10 + [2] * 30 + [0] * 30 + [2] * 10 + [1] * 20 + [2] * 20)
    archives = np.asarray(["a"] * 40 + ["b"] * 60 + ["c"] * 20)
    weights, table = archive_balanced_weights(labels, archives, 3)
    assert weights.dtype == np.float32
    assert weights.mean() == pytest.approx(1.0)

    def total(archive: str, label: int) -> float:
        return float(weights[(archives == archive) & (labels == label)].sum())

    # Weighted, tuberculosis against normal is the same in both archives: the archive tells nothing.
    assert total("a", 2) / total("a", 0) == pytest.approx(total("b", 2) / total("b", 0), rel=1e-5)
    # Overall, every class weighs the same, as with balanced class weights.
    totals = [weights[labels == c].sum() for c in range(3)]
    assert totals == pytest.approx([totals[0]] * 3, rel=1e-5)
    assert table["a"][0] == pytest.approx(float(weights[0]), abs=1e-4)
    assert set(table["c"]) == {2}


def test_archive_weights_are_capped_for_a_handful_of_images() -> None:
    # Two normal images among 98 tuberculosis ones: balancing them fully would weigh each 25×.
    labels = np.array([0] * 2 + [2] * 98 + [0] * 100 + [2] * 100)
    archives = ["small"] * 100 + ["large"] * 200
    weights, _ = archive_balanced_weights(labels, archives, 3)
    assert weights[0] / weights[100] == pytest.approx(MAX_ARCHIVE_WEIGHT)  # against a normal of "large"
