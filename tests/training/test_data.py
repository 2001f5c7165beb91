"""Reading labelled data and the patient-level split."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.factories import gradient, png_bytes
from tests.training.conftest import write_labelled_images
from training.config import SplitConfig
from training.data import DataError, Record, Split, class_weights, read_dataset, split_by_group


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
