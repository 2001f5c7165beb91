"""ONNX export: parity with Keras and exact Grad-CAM maps, one parametrised table."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import onnxruntime as ort
import pytest
import tensorflow as tf

from tests.training.conftest import TINY_SIZES, synthetic_image
from training.architectures import build_model
from training.config import TrainConfig
from training.export import ExportParityError, build_export_model, export_run, served_model
from xray.contract.images import equalize_batch

ARCHS = list(TINY_SIZES)


def images(size: int, count: int = 6) -> np.ndarray:
    return np.stack([synthetic_image(i % 3, seed=500 + i, size=size) for i in range(count)])


def onnx_outputs(models: Path, arch: str, batch: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(models / f"{arch}.onnx"), providers=["CPUExecutionProvider"])
    return session.run(
        ["logits", "probabilities", "class_maps"], {"image": batch.astype(np.float32)[..., None]}
    )


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_onnx_reproduces_keras(trained: dict[str, Path], arch: str) -> None:
    batch = images(TINY_SIZES[arch])
    export = build_export_model(trained["runs"] / arch)
    expected = [keras.ops.convert_to_numpy(t) for t in export.model(batch.astype(np.float32)[..., None])]
    logits, probabilities, maps = onnx_outputs(trained["models"], arch, batch)
    assert np.abs(probabilities - expected[1]).max() <= 1e-4
    assert np.abs(logits - expected[0]).max() <= 1e-4 * max(1.0, float(np.abs(expected[0]).max()))
    assert np.abs(maps - expected[2]).max() <= 1e-4 * float(np.abs(expected[2]).max())


def normalised(maps: np.ndarray) -> np.ndarray:
    positive = np.maximum(maps, 0)
    peak = positive.max(axis=(1, 2), keepdims=True)
    return np.divide(positive, peak, out=np.zeros_like(positive), where=peak > 0)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_class_maps_are_exact_gradcam(trained: dict[str, Path], arch: str) -> None:
    """Against Selvaraju et al.'s definition, computed with a GradientTape on the Keras model."""
    size = TINY_SIZES[arch]
    batch = images(size)
    export = build_export_model(trained["runs"] / arch)
    model = export.model
    probe = keras.Model(model.input, [model.get_layer(export.features_layer).output, model.outputs[0]])
    _, _, onnx_maps = onnx_outputs(trained["models"], arch, batch)
    for target in range(3):
        with tf.GradientTape() as tape:
            features, logits = probe(tf.constant(batch.astype(np.float32)[..., None]))
            score = logits[:, target]
        gradients = tape.gradient(score, features)
        weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)  # α_k^c
        reference = tf.reduce_sum(weights * features, axis=-1).numpy()  # Σ_k α_k^c A_k
        difference = np.abs(normalised(reference) - normalised(onnx_maps[..., target])).max()
        assert difference <= 1e-4, (arch, target, difference)


def test_a_diverging_export_fails_and_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from training import export as export_module

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(TrainConfig(arch="scratch", image_size=32).model_dump_json())
    build_model("scratch", 32).model.save(run / "best.keras")
    original = export_module._convert

    def perturbed(model: keras.Model, size: int, path: Path) -> None:
        logits = model.get_layer("logits")
        kernel, bias = logits.get_weights()
        logits.set_weights([kernel, bias + np.array([0.5, 0.0, -0.5], dtype=bias.dtype)])
        original(model, size, path)
        logits.set_weights([kernel, bias])

    monkeypatch.setattr(export_module, "_convert", perturbed)
    models = tmp_path / "models"
    with pytest.raises(ExportParityError, match="differs from Keras"):
        export_run(run, models, images(32))
    assert not list(models.glob("*.onnx"))


def test_a_model_trained_on_equalised_images_is_served_with_them(tmp_path: Path) -> None:
    """The manifest carries the recipe's equalisation, and the parity check runs through it."""
    run = tmp_path / "run"
    run.mkdir()
    config = TrainConfig(arch="scratch", image_size=32, equalization="histogram")
    (run / "config.json").write_text(config.model_dump_json())
    keras.utils.set_random_seed(0)
    build_model("scratch", 32).model.save(run / "best.keras")
    batch = images(32)
    entry = export_run(run, tmp_path / "models", batch)  # raises if Keras and the service disagree
    model = build_export_model(run).model  # outputs: logits, probabilities, class maps
    served = served_model(tmp_path / "models" / entry["file"], entry)
    equalized = equalize_batch(batch, "histogram").astype(np.float32)[..., None]
    keras_on_equalized = keras.ops.convert_to_numpy(model(equalized, training=False)[0])
    keras_on_raw = keras.ops.convert_to_numpy(model(batch.astype(np.float32)[..., None], training=False)[0])
    served_logits = served.logits_of(batch)
    assert np.abs(served_logits - keras_on_equalized).max() <= 1e-4
    # Not a no-op here: the raw images give other logits (by 10x the tolerance at least).
    assert np.abs(served_logits - keras_on_raw).max() > 1e-3
