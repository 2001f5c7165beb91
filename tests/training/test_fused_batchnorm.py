"""The fused batch norm computes what Keras's layer computes, and survives a checkpoint."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from training.architectures import build_model
from training.fused_batchnorm import FusedBatchNormalization, fuse_batch_norms


def _trained(fuse: bool) -> tuple[keras.Model, list[float]]:
    keras.utils.set_random_seed(0)
    model = build_model("scratch", 64).model
    if fuse:
        assert fuse_batch_norms(model) > 0
    model.compile(
        optimizer=keras.optimizers.SGD(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    images = np.random.default_rng(0).uniform(0, 255, (8, 64, 64, 1)).astype("float32")
    losses = [float(model.train_on_batch(images, np.arange(8) % 3)) for _ in range(3)]
    return model, losses


def test_fused_training_steps_match_keras_batch_norm_in_float32() -> None:
    keras.mixed_precision.set_global_policy("float32")
    plain, plain_losses = _trained(fuse=False)
    fused, fused_losses = _trained(fuse=True)
    assert fused_losses == pytest.approx(plain_losses, rel=1e-4)
    images = np.random.default_rng(1).uniform(0, 255, (4, 64, 64, 1)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(fused(images, training=False)),
        keras.ops.convert_to_numpy(plain(images, training=False)),
        atol=1e-3,
    )
    plain_moving = {variable.path: variable for variable in plain.weights if "moving" in variable.path}
    fused_moving = {variable.path: variable for variable in fused.weights if "moving" in variable.path}
    assert set(fused_moving) == set(plain_moving)
    for path, variable in fused_moving.items():
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(variable.value),
            keras.ops.convert_to_numpy(plain_moving[path].value),
            rtol=1e-4,
            atol=1e-6,
            err_msg=path,
        )


def test_a_fused_checkpoint_reloads_with_the_same_weights(tmp_path: Path) -> None:
    keras.mixed_precision.set_global_policy("float32")
    fused, _ = _trained(fuse=True)
    fused.save(tmp_path / "fused.keras")
    reloaded = keras.models.load_model(tmp_path / "fused.keras", compile=False)
    assert any(isinstance(layer, FusedBatchNormalization) for layer in reloaded._flatten_layers())
    for saved, loaded in zip(fused.weights, reloaded.weights, strict=True):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(saved.value), keras.ops.convert_to_numpy(loaded.value)
        )


@pytest.mark.parametrize(("channels", "kernel_dtype"), [(24, "float32"), (32, "bfloat16")])
def test_bfloat16_channels_off_the_kernel_block_normalise_in_float32(
    channels: int, kernel_dtype: str
) -> None:
    import tensorflow as tf

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        fused = FusedBatchNormalization()
        plain = keras.layers.BatchNormalization()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    images = np.random.default_rng(2).normal(3.0, 2.0, (4, 6, 6, channels)).astype("float32")
    for layer in (fused, plain):
        layer.build(images.shape)
    graph = tf.function(lambda x: fused(x, training=True)).get_concrete_function(tf.constant(images)).graph
    (kernel,) = [op for op in graph.get_operations() if op.type == "FusedBatchNormV3"]
    assert kernel.get_attr("T") == tf.as_dtype(kernel_dtype)  # off the 16-channel block: float32
    outputs = fused(images, training=True)
    assert outputs.dtype == "bfloat16"  # the layer's compute dtype, whichever kernel ran
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(keras.ops.cast(outputs, "float32")),
        keras.ops.convert_to_numpy(keras.ops.cast(plain(images, training=True), "float32")),
        atol=0.05,
    )
