"""The training benchmark's paired mode: one row per precision, timed in turn in one process."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import pytest

from bench.train_throughput import main


@pytest.mark.slow
def test_paired_mode_times_each_precision_against_the_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main([
        "--arch", "scratch", "--size", "32", "--batch", "4", "--steps", "2", "--paired",
        "--precision", "float32", "--precision", "bfloat16", "--json", str(tmp_path / "rows.json"),
    ])  # fmt: skip
    printed = capsys.readouterr().out.strip().splitlines()
    rows = json.loads(printed[-1])["rows"]
    assert [row["precision"] for row in rows] == ["float32", "bfloat16"]
    assert rows[0]["vs_first"] == 1.0  # the first precision against itself, step by step
    for row in rows:
        assert (row["arch"], row["size"], row["batch"]) == ("scratch", 32, 4)
        assert row["img_per_s"] > 0
        assert row["vs_first"] > 0
    assert json.loads((tmp_path / "rows.json").read_text()) == rows
    assert keras.mixed_precision.global_policy().name == "float32"  # left as it found it
