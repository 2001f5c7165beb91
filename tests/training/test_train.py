"""The training loop's distribution strategy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tensorflow as tf

from tests.training.conftest import write_labelled_images
from training.config import SplitConfig, TrainConfig
from training.data import read_dataset, split_by_group
from training.train import make_strategy, train


def test_one_cpu_uses_the_default_strategy() -> None:
    assert make_strategy().num_replicas_in_sync == 1


@pytest.mark.slow
def test_training_runs_under_a_mirrored_strategy(tmp_path: Path) -> None:
    """The code path several GPUs take: variables, optimizer and callbacks under a MirroredStrategy."""
    records = read_dataset(write_labelled_images(tmp_path / "data", per_class=4))
    split = split_by_group(records, SplitConfig(seed=0))
    config = TrainConfig(arch="scratch", image_size=32, epochs=1, batch_size=4)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    result = train(config, split.train, split.val, tmp_path / "run", tmp_path / "cache", strategy=strategy)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["strategy"] == "MirroredStrategy"
    assert summary["epochs_run"] == result.epochs_run == 1
    assert (tmp_path / "run" / "best.keras").is_file()
