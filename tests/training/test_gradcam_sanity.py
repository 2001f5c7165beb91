"""Sanity checks for the Grad-CAM maps (Adebayo et al. 2018, "Sanity Checks for Saliency Maps").

A tiny CNN with our head (GAP → linear Dense) learns a task whose evidence has a known place:
the class is the shape of one bright object at a random position (disc, horizontal bar,
vertical bar). The maps go through the real path: tf2onnx export with `class_maps` → manifest →
the service's predictor. The test images hold two objects, a disc and a horizontal bar, apart.

(a) Model randomisation: maps of the trained model and of the same architecture with
    re-initialised weights must not agree (Spearman rank correlation below 0.5).
(b) Target sensitivity: the maps for two different classes differ, each pointing at its object.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from service.core.config import Settings
from service.inference import load_predictor
from service.inference.explanations import Explainer, ExplanationRequest
from tests.factories import sha256
from training.export import ClassMaps, _convert
from xray.contract.decoders import ImageFormat
from xray.contract.images import DecodedImage

pytestmark = pytest.mark.slow

SIZE = 48
CLASSES = ["normal", "pneumonia", "tuberculosis"]


def draw(image: np.ndarray, shape: int, cy: int, cx: int) -> None:
    """Add a bright disc (0), horizontal bar (1) or vertical bar (2) centred at (cy, cx)."""
    y, x = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
    if shape == 0:
        mask = (y - cy) ** 2 + (x - cx) ** 2 <= 20
    elif shape == 1:
        mask = (abs(y - cy) <= 1) & (abs(x - cx) <= 7)
    else:
        mask = (abs(y - cy) <= 7) & (abs(x - cx) <= 1)
    image[mask] += 150


def single_objects(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Training data: one object per image; the label is its shape."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, count)
    images = rng.normal(60, 15, (count, SIZE, SIZE))
    for image, label in zip(images, labels, strict=True):
        draw(image, int(label), int(rng.integers(9, SIZE - 9)), int(rng.integers(9, SIZE - 9)))
    return np.clip(images, 0, 255).astype(np.uint8), labels


def disc_and_bar(count: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Test data: a disc in one half and a horizontal bar in the other; their centres."""
    rng = np.random.default_rng(seed)
    images = rng.normal(60, 15, (count, SIZE, SIZE))
    discs, bars = [], []
    for image in images:
        left = bool(rng.integers(0, 2))
        disc = (int(rng.integers(10, SIZE - 10)), 12 if left else SIZE - 12)
        bar = (int(rng.integers(10, SIZE - 10)), SIZE - 12 if left else 12)
        draw(image, 0, *disc)
        draw(image, 1, *bar)
        discs.append(disc)
        bars.append(bar)
    return np.clip(images, 0, 255).astype(np.uint8), np.asarray(discs), np.asarray(bars)


def tiny_cnn(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((SIZE, SIZE, 1), name="image")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="features")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    logits = keras.layers.Dense(3, name="logits")(x)
    return keras.Model(inputs, logits)


def export(model: keras.Model, folder: Path) -> Path:
    """The same three outputs as `training.export`, through tf2onnx, into a one-model manifest."""
    kernel = keras.ops.convert_to_numpy(model.get_layer("logits").kernel)
    maps = ClassMaps(kernel, name="class_maps")(model.get_layer("features").output)
    probabilities = keras.layers.Activation("softmax", name="probabilities")(model.output)
    graph = keras.Model(model.input, [model.output, probabilities, maps])
    folder.mkdir(parents=True)
    _convert(graph, SIZE, folder / "tiny.onnx")
    manifest = {
        "classes": CLASSES,
        "models": [
            {
                "name": "tiny",
                "version": "1",
                "file": "tiny.onnx",
                "sha256": sha256(folder / "tiny.onnx"),
                "input": {"height": SIZE, "width": SIZE, "channels": 1},
                "outputs": {"logits": "logits", "probabilities": "probabilities", "class_maps": "class_maps"},
                "gradcam": {"layer": "features", "output": "class_maps"},
            }
        ],
        "ensembles": {"confidence": {"order": ["tiny"], "tau": 0.9}, "abstain_below": 0.5},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ranks_a = np.argsort(np.argsort(a.ravel())).astype(float)
    ranks_b = np.argsort(np.argsort(b.ravel())).astype(float)
    return float(np.corrcoef(ranks_a, ranks_b)[0, 1])


def as_image(pixels: np.ndarray) -> DecodedImage:
    return DecodedImage(pixels=pixels, format=ImageFormat.PNG)


def peak(heatmap: np.ndarray) -> np.ndarray:
    return np.asarray(np.unravel_index(np.argmax(heatmap), heatmap.shape))


@pytest.fixture(scope="module")
def maps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    images, labels = single_objects(1500, seed=0)
    trained = tiny_cnn(seed=1)
    trained.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    trained.fit(images[..., None].astype("float32"), labels, epochs=8, batch_size=32, verbose=0)
    randomised = tiny_cnn(seed=2)  # same architecture, re-initialised weights
    root = tmp_path_factory.mktemp("sanity")
    held_out, held_out_labels = single_objects(90, seed=98)
    pairs, discs, bars = disc_and_bar(16, seed=99)
    result: dict[str, object] = {"discs": discs, "bars": bars}
    for name, model in (("trained", trained), ("randomised", randomised)):
        predictor = load_predictor(Settings(models_dir=export(model, root / name)))
        explainer = Explainer(predictor, shap_time_limit=60)
        result[name] = {
            target: [
                explainer.maps(as_image(pixels), ExplanationRequest(target=target, models=("tiny",))).maps[
                    "tiny"
                ]
                for pixels in pairs
            ]
            for target in CLASSES[:2]
        }
        predicted = [
            predictor.predict([as_image(pixels)])[0].models["tiny"].label_index for pixels in held_out
        ]
        result[f"{name}_accuracy"] = float(np.mean(np.asarray(predicted) == held_out_labels))
    return result


def test_the_trained_model_learned_the_task(maps: dict[str, object]) -> None:
    assert maps["trained_accuracy"] >= 0.9


def test_maps_for_two_classes_differ_and_point_at_their_objects(maps: dict[str, object]) -> None:
    """Adebayo et al.'s target sensitivity: the disc's map is on the disc, the bar's on the bar."""
    trained = maps["trained"]
    disc_maps, bar_maps = trained["normal"], trained["pneumonia"]  # type: ignore[index]
    differences = [float(np.abs(a - b).mean()) for a, b in zip(disc_maps, bar_maps, strict=True)]
    assert min(differences) > 0.05
    on_disc = [np.abs(peak(m) - d).max() <= 8 for m, d in zip(disc_maps, maps["discs"], strict=True)]  # type: ignore[arg-type]
    on_bar = [np.abs(peak(m) - b).max() <= 8 for m, b in zip(bar_maps, maps["bars"], strict=True)]  # type: ignore[arg-type]
    assert np.mean(on_disc) >= 0.75
    assert np.mean(on_bar) >= 0.75


def test_model_randomisation_changes_the_maps(maps: dict[str, object]) -> None:
    """Adebayo et al. (a): a map that survives weight randomisation explains nothing about the model."""
    correlations = [
        spearman(trained, random)
        for target in CLASSES[:2]
        for trained, random in zip(maps["trained"][target], maps["randomised"][target], strict=True)  # type: ignore[index]
        if trained.max() > 0 and random.max() > 0
    ]
    assert len(correlations) >= 8
    assert float(np.mean(correlations)) < 0.5, correlations
