"""`xray train`'s options: flags over recipes, and input sizes each network can take."""

from __future__ import annotations

import argparse
import logging

import pytest
from pydantic import ValidationError

from training.architectures import ARCHITECTURES
from training.cli import _configs
from training.config import TrainConfig


def _arguments(**overrides: object) -> argparse.Namespace:
    fields = dict.fromkeys(
        ("config", "arch", "epochs", "batch_size", "image_size", "learning_rate", "weights", "seed",
         "steps_per_epoch", "patience", "precision", "init_weights", "time_budget_minutes"),
    )  # fmt: skip
    return argparse.Namespace(**{**fields, **overrides})


def test_a_smoke_size_for_all_networks_raises_each_to_its_smallest_input(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        configs = _configs(_arguments(image_size=32))
    assert {config.arch: config.size for config in configs} == {
        arch: max(32, entry.min_size) for arch, entry in ARCHITECTURES.items()
    }
    assert "below inception_resnet_v2's smallest input: it trains at 75" in caplog.text


def test_a_recipe_below_a_network_s_smallest_input_is_refused() -> None:
    with pytest.raises(ValidationError, match="below inception_resnet_v2's smallest input, 75"):
        TrainConfig(arch="inception_resnet_v2", image_size=64)
