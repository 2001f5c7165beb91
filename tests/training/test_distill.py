"""Distillation targets: the teacher's file read and matched to the training images, softened, blended."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest

from training.config import DistillConfig
from training.data import DataError, Record
from training.distill import (
    distillation_targets,
    read_teacher_probabilities,
    soften,
    write_teacher_probabilities,
)


def _records(root: Path) -> list[Record]:
    labels = ("normal", "pneumonia", "tuberculosis", "normal")
    return [Record(root / "images" / f"{label}-{i}.png", label, f"g{i}") for i, label in enumerate(labels)]


def _write(path: Path, rows: list[list[object]], header: tuple[str, ...] = ()) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header or ("path", "normal", "pneumonia", "tuberculosis"))
        writer.writerows(rows)
    return path


def test_rows_match_records_by_their_relative_path_in_record_order_and_are_normalised(tmp_path: Path) -> None:
    records = _records(tmp_path / "data")
    # Written in another order, one row absolute, one unnormalised (2, 1, 1 → 0.5, 0.25, 0.25).
    rows: list[list[object]] = [
        ["images/pneumonia-1.png", 0.1, 0.8, 0.1],
        [str(records[3].path), 0.6, 0.2, 0.2],
        ["images/normal-0.png", 2, 1, 1],
        ["images/tuberculosis-2.png", 0.0, 0.3, 0.7],
        ["images/unused.png", 1, 0, 0],  # images outside the training split are ignored
    ]
    teacher = read_teacher_probabilities(_write(tmp_path / "t.csv", rows), records)
    np.testing.assert_allclose(
        teacher, [[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.0, 0.3, 0.7], [0.6, 0.2, 0.2]], atol=1e-6
    )
    assert teacher.dtype == np.float32


def test_the_longest_matching_tail_wins_between_two_images_of_one_name(tmp_path: Path) -> None:
    records = [
        Record(tmp_path / "a" / "x.png", "normal", "g1"),
        Record(tmp_path / "b" / "x.png", "normal", "g2"),
    ]
    rows: list[list[object]] = [["a/x.png", 1, 0, 0], ["b/x.png", 0, 1, 0]]
    teacher = read_teacher_probabilities(_write(tmp_path / "t.csv", rows), records)
    np.testing.assert_allclose(teacher, [[1, 0, 0], [0, 1, 0]])


@pytest.mark.parametrize(
    ("rows", "header", "message"),
    [
        ([], ("path", "normal", "pneumonia"), "lacks the column"),
        ([["images/normal-0.png", -0.1, 0.6, 0.5]], (), "non-negative"),
        ([["images/normal-0.png", "nan", 0.5, 0.5]], (), "finite"),
        ([["images/normal-0.png", 0, 0, 0]], (), "not all zero"),
        ([["images/normal-0.png", "high", 0.5, 0.5]], (), "could not convert"),
        ([["images/normal-0.png", 1, 0, 0], ["images/normal-0.png", 1, 0, 0]], (), "twice"),
        ([["images/normal-0.png", 1, 0, 0]], (), "no probabilities for 3 of 4 training images"),
    ],
)
def test_a_bad_teacher_file_is_refused_with_the_reason(
    tmp_path: Path, rows: list[list[object]], header: tuple[str, ...], message: str
) -> None:
    with pytest.raises(DataError, match=message):
        read_teacher_probabilities(_write(tmp_path / "t.csv", rows, header), _records(tmp_path / "data"))


def test_a_teacher_file_that_is_not_text_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(b"path,normal,pneumonia,tuberculosis\n\xff\xfe,1,0,0\n")
    with pytest.raises(DataError, match="not UTF-8 text"):
        read_teacher_probabilities(path, _records(tmp_path / "data"))


def test_temperature_flattens_or_sharpens_and_one_changes_nothing() -> None:
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], np.float32)
    np.testing.assert_allclose(soften(p, 1.0), p, atol=1e-6)
    flat, sharp = soften(p, 3.0), soften(p, 0.5)
    np.testing.assert_allclose(flat.sum(axis=1), 1.0, atol=1e-6)
    assert np.all(flat.max(axis=1) < p.max(axis=1))
    assert np.all(sharp.max(axis=1) > p.max(axis=1))
    np.testing.assert_allclose(sharp[0], np.array([0.49, 0.04, 0.01]) / 0.54, atol=1e-6)  # p², renormalised
    assert np.array_equal(flat.argmax(axis=1), p.argmax(axis=1))


def test_targets_blend_label_and_teacher_and_the_record_names_the_teacher(tmp_path: Path) -> None:
    records = _records(tmp_path / "data")
    rows: list[list[object]] = [
        ["images/normal-0.png", 0.6, 0.4, 0.0],
        ["images/pneumonia-1.png", 0.0, 1.0, 0.0],
        ["images/tuberculosis-2.png", 0.5, 0.0, 0.5],
        ["images/normal-3.png", 0.0, 0.0, 1.0],  # the teacher is wrong here
    ]
    path = _write(tmp_path / "teacher.csv", rows)
    targets, record = distillation_targets(DistillConfig(targets=str(path), weight=0.25), records)
    expected = 0.75 * np.eye(3)[[0, 1, 2, 0]] + 0.25 * np.asarray([r[1:] for r in rows], dtype=float)
    np.testing.assert_allclose(targets, expected, atol=1e-6)
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, atol=1e-6)
    assert record == {
        "targets": "teacher.csv",
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "weight": 0.25,
        "temperature": 1.0,
        "teacher_train_accuracy": 0.5,  # right on 0 and 1; 2 is a tie read as normal; 3 wrong
    }


def test_a_written_teacher_file_reads_back_row_for_row(tmp_path: Path) -> None:
    records = _records(tmp_path / "data")
    probabilities = np.random.default_rng(1).dirichlet(np.ones(3), size=len(records))
    path = tmp_path / "out" / "teacher.csv"
    write_teacher_probabilities(path, records, probabilities, tmp_path / "data")
    assert path.read_text().splitlines()[1].startswith("images/normal-0.png,")  # relative, as in labels.csv
    np.testing.assert_allclose(read_teacher_probabilities(path, records), probabilities, atol=2e-6)


def test_a_root_spelt_another_way_still_gives_relative_paths_and_outsiders_stay_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = _records(tmp_path / "data")
    outsider = Record(tmp_path / "elsewhere" / "x.png", "normal", "g9")
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path / "data")  # the records say /…/data/images/…, the root "../data"
    path = tmp_path / "teacher.csv"
    probabilities = np.full((5, 3), 1 / 3)
    write_teacher_probabilities(path, [*records, outsider], probabilities, Path("../data"))
    names = [line.split(",")[0] for line in path.read_text().splitlines()[1:]]
    assert names[0] == "images/normal-0.png"
    assert names[-1] == (tmp_path / "elsewhere" / "x.png").resolve().as_posix()
    assert read_teacher_probabilities(path, [*records, outsider]).shape == (5, 3)
