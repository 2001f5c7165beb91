"""Choosing the training precision from the hardware."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from training.config import TrainConfig
from training.precision import (
    Accelerator,
    choose_precision,
    cpu_flags,
    detect_accelerators,
    float32_depthwise,
)

CPU_WITH_BF16 = [Accelerator("cpu", "cpu (avx512_bf16)", True)]
CPU_WITHOUT = [Accelerator("cpu", "cpu", False)]
GPU_AMPERE = [Accelerator("gpu", "NVIDIA A100", True)]
GPU_TURING = [Accelerator("gpu", "Tesla T4", False)]


@pytest.mark.parametrize(
    ("devices", "expected"),
    [
        (CPU_WITH_BF16, "bfloat16"),
        (CPU_WITHOUT, "float32"),
        (GPU_AMPERE, "bfloat16"),
        (GPU_TURING, "float32"),
    ],
    ids=["cpu-bf16", "cpu-plain", "gpu-sm80", "gpu-sm75"],
)
def test_auto_picks_bfloat16_only_where_it_is_native(devices: list[Accelerator], expected: str) -> None:
    choice = choose_precision("auto", lambda: devices)
    assert choice.precision == expected
    assert choice.policy == {"bfloat16": "mixed_bfloat16", "float32": "float32"}[expected]


def test_auto_falls_back_to_float32_and_logs_why(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="training.precision"):
        choice = choose_precision("auto", lambda: CPU_WITHOUT)
    assert choice.precision == "float32"
    assert "AVX-512 BF16 or AMX" in choice.reason
    assert any(
        "float32" in record.message and "lacks native bfloat16" in record.message for record in caplog.records
    )


def test_an_explicit_choice_is_kept_and_emulation_is_warned(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="training.precision"):
        assert choose_precision("float16", lambda: CPU_WITH_BF16).policy == "mixed_float16"
        assert choose_precision("bfloat16", lambda: CPU_WITHOUT).precision == "bfloat16"
    assert [r.levelname for r in caplog.records] == ["WARNING", "WARNING"]
    assert choose_precision("float32", lambda: CPU_WITH_BF16).policy == "float32"


def test_cpu_flags_come_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 avx512_vnni\n\n")
    assert "avx512_bf16" in cpu_flags(cpuinfo)
    assert cpu_flags(tmp_path / "absent") == frozenset()
    cpu = detect_accelerators("numpy", flags={"avx512f"})
    assert cpu == [Accelerator("cpu", "cpu", False)]
    assert detect_accelerators("numpy", flags={"amx_bf16"})[0].bf16


def test_configs_from_before_precision_still_load() -> None:
    assert TrainConfig(arch="scratch", mixed_precision=True).precision == "float16"  # type: ignore[call-arg]
    assert TrainConfig(arch="scratch", mixed_precision=False).precision == "float32"  # type: ignore[call-arg]
    assert TrainConfig(arch="scratch").precision == "auto"


def _depthwise_model(policy: str) -> Any:
    import keras

    keras.mixed_precision.set_global_policy(policy)
    try:
        inputs = keras.Input((16, 16, 16))
        x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same", name="depthwise")(inputs)
        x = keras.layers.Conv2D(16, 1, name="pointwise")(x)
        outputs = keras.layers.Dense(3, dtype="float32", name="logits")(
            keras.layers.GlobalAveragePooling2D()(x)
        )
        return keras.Model(inputs, outputs)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_bfloat16_depthwise_convolutions_compute_in_float32_and_stay_so_in_checkpoints(
    tmp_path: Path,
) -> None:
    import keras
    import numpy as np

    model = _depthwise_model("mixed_bfloat16")
    assert float32_depthwise(model) == 1
    assert model.get_layer("depthwise").compute_dtype == "float32"
    assert model.get_layer("pointwise").compute_dtype == "bfloat16"  # dense convolutions keep bfloat16
    assert all(variable.dtype == "float32" for variable in model.weights)
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    images = np.random.default_rng(0).normal(size=(4, 16, 16, 16)).astype("float32")
    assert np.isfinite(float(model.train_on_batch(images, np.arange(4) % 3)))
    model.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras")
    assert reloaded.get_layer("depthwise").compute_dtype == "float32"
    assert float32_depthwise(reloaded) == 0  # nothing left to change


def test_float32_training_has_no_depthwise_to_change() -> None:
    assert float32_depthwise(_depthwise_model("float32")) == 0
