"""Networks kept only to compare with `scratch`: the first `scratch` and a plain VGG-style stack.

Neither is in the architecture table; `bench.train_throughput` and the tests build them by name
from `BASELINES`.

The first `scratch` (models before 2.0.0): inverted-residual blocks (1x1 expand → 3x3
depthwise → squeeze-and-excitation → 1x1 project, batch norm, SiLU, identity shortcut when shapes
allow), as in MobileNetV2/EfficientNet, in four stages down to 1/32 resolution, then a 1x1
convolution to 384 channels (`head_activation`, the Grad-CAM layer) and the shared linear head.

At 400x400 it has 1.06 M parameters and 1.31 GFLOPs (2 x multiply-adds); a plain VGG-style
stack (two 3x3 convolutions per stage, 32-64-128-256-256 channels, `build_vgg_baseline`) has
2.35 M parameters and 17.8 GFLOPs, 13.6 times more. It needs few FLOPs but trains slowly on
CPUs: depthwise convolutions and squeeze-and-excitation get nothing from bfloat16.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
from keras import layers

from training.architectures.common import classification_head, image_input

FEATURES = "head_activation"
# (output channels, blocks, first stride, expansion)
STAGES: tuple[tuple[int, int, int, int], ...] = ((32, 2, 2, 4), (64, 2, 2, 4), (96, 3, 2, 4), (160, 3, 2, 4))
STEM_CHANNELS = 24
HEAD_CHANNELS = 384


def _conv_bn(
    x: keras.KerasTensor, filters: int, kernel: int, stride: int, name: str, act: bool = True
) -> keras.KerasTensor:
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.Activation("silu", name=f"{name}_act")(x) if act else x


def _squeeze_excite(x: keras.KerasTensor, channels: int, reduced: int, name: str) -> keras.KerasTensor:
    s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_se_pool")(x)
    s = layers.Conv2D(reduced, 1, activation="silu", name=f"{name}_se_reduce")(s)
    s = layers.Conv2D(channels, 1, activation="sigmoid", name=f"{name}_se_expand")(s)
    return layers.Multiply(name=f"{name}_se")([x, s])


def _block(x: keras.KerasTensor, filters: int, stride: int, expand: int, name: str) -> keras.KerasTensor:
    in_channels = int(x.shape[-1])
    hidden = in_channels * expand
    y = _conv_bn(x, hidden, 1, 1, f"{name}_expand")
    y = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"{name}_dw")(y)
    y = layers.BatchNormalization(name=f"{name}_dw_bn")(y)
    y = layers.Activation("silu", name=f"{name}_dw_act")(y)
    y = _squeeze_excite(y, hidden, max(8, in_channels // 4), name)
    y = _conv_bn(y, filters, 1, 1, f"{name}_project", act=False)
    if stride == 1 and in_channels == filters:
        y = layers.Add(name=f"{name}_add")([x, y])
    return y


def build_inverted_residual(size: int, num_classes: int = 3, *, dropout: float = 0.2) -> keras.Model:
    """Build the first `scratch` for (size, size, 1) inputs in [0, 255].

    Args:
        size: Input side.
        num_classes: Number of classes.
        dropout: Dropout before the linear head.
    """
    inputs = image_input(size)
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    x = _conv_bn(x, STEM_CHANNELS, 3, 2, "stem")
    for stage, (filters, blocks, stride, expand) in enumerate(STAGES, start=1):
        for index in range(blocks):
            x = _block(x, filters, stride if index == 0 else 1, expand, f"stage{stage}_block{index + 1}")
    x = _conv_bn(x, HEAD_CHANNELS, 1, 1, "head")
    features = layers.Activation("linear", name=FEATURES)(x)
    logits = classification_head(features, num_classes, dropout)
    return keras.Model(inputs, logits, name="scratch_v1")


def build_vgg_baseline(size: int, num_classes: int = 3) -> keras.Model:
    """A plain VGG-style stack, only to compare parameters and FLOPs with `scratch`."""
    inputs = image_input(size)
    x = layers.Rescaling(1.0 / 255.0)(inputs)
    for filters in (32, 64, 128, 256, 256):
        for _ in range(2):
            x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D()(x)
    logits = classification_head(x, num_classes, 0.0)
    return keras.Model(inputs, logits, name="vgg_baseline")


#: Baseline name → builder (size, num_classes) → model.
BASELINES: dict[str, Callable[[int, int], keras.Model]] = {
    "scratch_v1": lambda size, num_classes: build_inverted_residual(size, num_classes),
    "vgg": build_vgg_baseline,
}
