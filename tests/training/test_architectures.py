"""The three networks: one parametrised table."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from pydantic import ValidationError

from training.architectures import ARCHITECTURES, build_model, default_cascade_order
from training.architectures.baselines import BASELINES
from training.architectures.common import WeightsError
from training.config import TrainConfig
from training.flops import count_flops, count_params

ARCHS = [
    # (architecture, small input size, Grad-CAM layer, keras.applications class or None)
    ("scratch", 64, "head_activation", None),
    ("inception_resnet_v2", 75, "conv_7b_ac", keras.applications.InceptionResNetV2),
    ("efficientnet_v2_b2", 64, "top_activation", keras.applications.EfficientNetV2B2),
]


@pytest.mark.parametrize(("arch", "size", "features", "_"), ARCHS, ids=[a[0] for a in ARCHS])
def test_contract_input_logits_and_features(arch: str, size: int, features: str, _: object) -> None:
    built = build_model(arch, size)
    model = built.model
    assert model.input_shape == (None, size, size, 1)
    assert model.get_layer("logits").activation is keras.activations.linear
    assert built.features_layer == features
    assert len(model.get_layer(features).output.shape) == 4
    logits = keras.ops.convert_to_numpy(model(np.zeros((2, size, size, 1), np.float32)))
    assert logits.shape == (2, 3)
    assert np.all(np.isfinite(logits))


@pytest.mark.parametrize(("arch", "size", "_f", "_c"), ARCHS, ids=[a[0] for a in ARCHS])
def test_layer_names_are_deterministic(arch: str, size: int, _f: object, _c: object) -> None:
    first = [layer.name for layer in build_model(arch, size).model.layers]
    keras.layers.Dense(1)  # move Keras' global name counter on
    second = [layer.name for layer in build_model(arch, size).model.layers]
    assert first == second


@pytest.mark.parametrize(("arch", "size", "_", "application"), ARCHS[1:], ids=[a[0] for a in ARCHS[1:]])
def test_local_weights_file_is_loaded(tmp_path: Path, arch: str, size: int, _: object, application) -> None:  # type: ignore[no-untyped-def]
    reference = application(include_top=False, weights=None, input_shape=(size, size, 3))
    for variable in reference.weights:
        variable.assign(np.random.default_rng(0).normal(0, 0.05, variable.shape).astype("float32"))
    path = tmp_path / f"{arch}_notop.weights.h5"
    reference.save_weights(path)
    built = build_model(arch, size, weights=str(path))
    expected = reference.get_weights()
    loaded = built.model.get_weights()[: len(expected)]
    assert all(np.array_equal(a, b) for a, b in zip(expected, loaded, strict=True))
    assert set(built.backbone_layers) >= {layer.name for layer in reference.layers[1:]}


def test_missing_weights_file_is_a_clear_error() -> None:
    with pytest.raises(WeightsError, match="does not exist"):
        build_model("efficientnet_v2_b2", 64, weights="/nonexistent/weights.h5")


def test_scratch_refuses_pretrained_weights() -> None:
    with pytest.raises(ValueError, match="from scratch"):
        build_model("scratch", 64, weights="imagenet")


def test_scratch_is_dense_3x3_residual_and_cheaper_than_a_vgg_stack_at_224() -> None:
    scratch = build_model("scratch", 224).model
    vgg, first = BASELINES["vgg"](224, 3), BASELINES["scratch_v1"](224, 3)
    assert count_params(scratch) == pytest.approx(3.20e6, rel=0.01)
    assert count_flops(scratch) == pytest.approx(1.42e9, rel=0.01)
    assert count_flops(vgg) / count_flops(scratch) > 3.9
    # Built from what bfloat16 speeds up: no depthwise convolutions, no squeeze-and-excitation.
    assert not any(isinstance(layer, keras.layers.DepthwiseConv2D) for layer in scratch.layers)
    assert any(isinstance(layer, keras.layers.DepthwiseConv2D) for layer in first.layers)
    kernels = {layer.kernel_size for layer in scratch.layers if isinstance(layer, keras.layers.Conv2D)}
    assert kernels == {(3, 3), (1, 1)}
    assert sum(isinstance(layer, keras.layers.Add) for layer in scratch.layers) == 6


def test_scratch_grad_cam_layer_feeds_the_linear_head_through_pooling() -> None:
    model = build_model("scratch", 64).model
    pool = model.get_layer("pool")
    assert pool.input is model.get_layer("head_activation").output
    assert isinstance(model.get_layer("logits"), keras.layers.Dense)


def test_flop_counter_matches_published_figures() -> None:
    # EfficientNetV2B2 at 260: 1.7 G multiply-adds (Tan & Le 2021, table 7 of the Keras docs).
    flops = count_flops(build_model("efficientnet_v2_b2", 260).model)
    assert flops / 2 == pytest.approx(1.7e9, rel=0.03)


def test_batch_norm_momentum_is_set_on_every_layer() -> None:
    model = build_model("efficientnet_v2_b2", 64, bn_momentum=0.9).model
    momenta = {layer.momentum for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)}
    assert momenta == {0.9}
    assert keras.models.clone_model(model).get_layer("stem_bn").momentum == 0.9


def test_the_table_is_what_the_config_the_command_line_and_the_manifest_read() -> None:
    assert [row[0] for row in ARCHS] == list(ARCHITECTURES)
    for name, entry in ARCHITECTURES.items():
        assert TrainConfig(arch=name).size == entry.default_size
        assert TrainConfig(arch=name, image_size=entry.min_size).size == entry.min_size
        with pytest.raises(ValidationError, match="smallest input"):
            TrainConfig(arch=name, image_size=entry.min_size - 1)
    with pytest.raises(ValidationError, match="unknown architecture"):
        TrainConfig(arch="resnet50")
    # The contract's default cascade (docs/api.md): EfficientNetV2 first, then InceptionResNetV2.
    assert default_cascade_order() == ["efficientnet_v2_b2", "inception_resnet_v2"]
