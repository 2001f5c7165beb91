"""Fixtures of the training tests: synthetic labelled radiographs, and one shared tiny training run."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="the training tests need the `training` extra")

from tests.factories import png_bytes


@pytest.fixture(autouse=True)
def _release_keras_memory() -> Iterator[None]:
    """Free each test's models: TensorFlow otherwise keeps every graph the process built."""
    yield
    import gc

    import keras

    keras.backend.clear_session()
    gc.collect()


TINY_SIZES = {"scratch": 32, "inception_resnet_v2": 75, "efficientnet_v2_b2": 32}


def synthetic_image(label: int, seed: int, size: int = 96) -> np.ndarray:
    """A gray 'radiograph' whose texture depends on the class, so a network can learn something."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    base = 90 + 60 * np.sin(2 * np.pi * (label + 1) * x) * np.cos(2 * np.pi * (label + 1) * y)
    return np.clip(base + rng.normal(0, 12, (size, size)), 0, 255).astype(np.uint8)


def write_labelled_images(
    root: Path, per_class: int = 12, *, sources: tuple[str, ...] = ("site-a", "site-b")
) -> Path:
    """A labels.csv dataset: two sources, patients with one or two images each."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    classes = ("normal", "pneumonia", "tuberculosis")
    for c, label in enumerate(classes):
        for i in range(per_class):
            source = sources[i % len(sources)]
            group = f"{source}:{label}:{i // 2}"  # two images per patient
            name = f"images/{label}-{i}.png"
            (root / "images").mkdir(exist_ok=True)
            (root / name).write_bytes(png_bytes(synthetic_image(c, seed=100 * c + i)))
            rows.append({"path": name, "label": label, "group": group, "source": source})
    with (root / "labels.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "group", "source"])
        writer.writeheader()
        writer.writerows(rows)
    return root


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`xray train` on all three networks at tiny sizes, one epoch: runs, models, report.

    Run as a subprocess, as a user runs it: TensorFlow keeps the memory of every graph a
    process built, and converting InceptionResNetV2 is heavy, so isolating it keeps the test
    process small. Shared by the slow tests so each network is trained and converted once.
    """
    import json
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("e2e")
    data = write_labelled_images(root / "data", per_class=12)
    recipes = root / "recipes.json"
    recipes.write_text(json.dumps({arch: {"image_size": size} for arch, size in TINY_SIZES.items()}))
    runs = root / "runs"
    command = [  # no --models-dir: the default, RUNS/models, is what a user gets
        sys.executable, "-m", "xray", "train",
        "--data", str(data),
        "--runs", str(runs),
        "--config", str(recipes),
        "--epochs", "1",
        "--batch-size", "8",
        "--precision", "bfloat16",  # the export's parity must hold for a bfloat16-trained model
        "--version", "0.0.1-test",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    (root / "train.log").write_text(result.stderr)
    return {"data": data, "runs": runs, "models": runs / "models", "log": root / "train.log"}
