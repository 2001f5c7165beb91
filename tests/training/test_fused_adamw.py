"""The fused AdamW updates what Keras's AdamW updates, and checkpoints pass between the two."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from training.fused_adamw import FusedAdamW, fuse_optimizer
from training.train import CUSTOM_OBJECTS

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="the fused kernels are TensorFlow's"
)


def _steps(
    optimizer: keras.optimizers.Optimizer, steps: int = 6
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Variables and optimizer state after `steps` updates from the same start and gradients."""
    rng = np.random.default_rng(0)
    variables = [
        keras.Variable(rng.normal(size=shape).astype("float32"), name=f"v{index}")
        for index, shape in enumerate([(3, 3, 4, 8), (8,), (16, 3)])
    ]
    optimizer.build(variables)
    for step in range(steps):
        # The first variable's gradients are large (its clip acts), the others' small (it does not).
        grads = [
            rng.normal(size=variable.shape).astype("float32") * (5.0 if index == 0 else 0.01)
            for index, variable in enumerate(variables)
        ]
        tensors = [keras.ops.convert_to_tensor(gradient) for gradient in grads]
        optimizer.apply_gradients(zip(tensors, variables, strict=True))
        assert int(optimizer.iterations) == step + 1
    state = [keras.ops.convert_to_numpy(v.value) for v in optimizer.variables]
    return [keras.ops.convert_to_numpy(v.value) for v in variables], state


@pytest.mark.parametrize(
    "options",
    [
        {"weight_decay": 0.05, "clipnorm": 1.0},  # what training compiles
        {"weight_decay": 0.05},
        {"weight_decay": 0.0, "clipnorm": 0.5},
        {"weight_decay": 0.05, "clipnorm": 1.0, "amsgrad": True},  # Keras's own code
    ],
    ids=["as-trained", "no-clip", "no-decay", "amsgrad"],
)
def test_the_fused_updates_equal_keras_adamw(options: dict) -> None:
    plain_variables, plain_state = _steps(keras.optimizers.AdamW(learning_rate=0.01, **options))
    fused_variables, fused_state = _steps(FusedAdamW(learning_rate=0.01, **options))
    assert len(fused_state) == len(plain_state)
    for plain, fused in zip(plain_variables + plain_state, fused_variables + fused_state, strict=True):
        np.testing.assert_allclose(fused, plain, rtol=1e-4, atol=1e-6)  # float32 rounding
    start = np.random.default_rng(0).normal(size=(3, 3, 4, 8))
    assert np.abs(plain_variables[0] - start).max() > 1e-2  # the steps moved the variables


def _compiled(optimizer: keras.optimizers.Optimizer) -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(optimizer=optimizer, loss="mse")
    return model


def test_a_checkpoint_of_keras_adamw_resumes_on_the_fused_one_and_back(tmp_path: Path) -> None:
    x = np.random.default_rng(1).normal(size=(8, 4)).astype("float32")
    y = np.random.default_rng(2).normal(size=(8, 3)).astype("float32")
    plain = _compiled(keras.optimizers.AdamW(learning_rate=0.01, weight_decay=0.05, clipnorm=1.0))
    plain.train_on_batch(x, y)
    plain.save(tmp_path / "plain.keras")

    reloaded = keras.models.load_model(tmp_path / "plain.keras", custom_objects=CUSTOM_OBJECTS)
    assert fuse_optimizer(reloaded)
    assert type(reloaded.optimizer) is FusedAdamW
    assert not fuse_optimizer(reloaded)  # already fused
    for _ in range(3):
        plain.train_on_batch(x, y)
        reloaded.train_on_batch(x, y)
    for a, b in zip(plain.get_weights(), reloaded.get_weights(), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)

    reloaded.save(tmp_path / "fused.keras")
    again = keras.models.load_model(tmp_path / "fused.keras", custom_objects=CUSTOM_OBJECTS)
    assert type(again.optimizer) is FusedAdamW
    assert int(again.optimizer.iterations) == 4
    assert again.optimizer.get_config() == reloaded.optimizer.get_config()


@pytest.mark.parametrize("amsgrad", [False, True])
def test_the_update_runs_on_the_fused_kernels(amsgrad: bool) -> None:
    import tensorflow as tf

    variables = [keras.Variable(np.ones((4, 4), "float32")), keras.Variable(np.ones(4, "float32"))]
    optimizer = FusedAdamW(learning_rate=0.01, weight_decay=0.05, clipnorm=1.0, amsgrad=amsgrad)
    optimizer.build(variables)

    @tf.function
    def apply() -> None:
        optimizer.apply_gradients([(tf.ones_like(v.value), v) for v in variables])

    kernels = {op.type for op in apply.get_concrete_function().graph.get_operations()}
    assert ("ResourceApplyAdam" in kernels) is not amsgrad  # amsgrad keeps Keras's update
    assert "ResourceApplyGradientDescent" in kernels  # the weight decay
