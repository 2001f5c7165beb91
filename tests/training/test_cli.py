"""`xray train`'s options: flags over recipes, and input sizes each network can take."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

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


RECIPES = sorted((Path(__file__).parents[2] / "training" / "recipes").glob("*.json"))


@pytest.mark.parametrize("recipe", RECIPES, ids=[path.name for path in RECIPES])
def test_the_shipped_recipes_are_valid_for_every_network(recipe: Path) -> None:
    configs = _configs(_arguments(config=str(recipe)))
    assert {config.arch for config in configs} == set(ARCHITECTURES)
    # Every shipped recipe pastes white boxes: kaggle-mix's redactions otherwise mean tuberculosis.
    assert all(config.augment.white_box > 0 for config in configs)
