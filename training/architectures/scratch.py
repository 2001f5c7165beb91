"""`scratch`: our own compact CNN for radiographs, built for training speed on CPUs with bfloat16.

Design (measured, not borrowed): every convolution is a dense 3×3 (or a 1×1 projection), the
operations that AVX-512 BF16 and GPU tensor cores run at their full rate; depthwise
convolutions and squeeze-and-excitation, which made the first `scratch` the slowest network per
FLOP on this CPU (`bench.train_throughput`), are gone.

* **Stem**: two stride-2 3×3 convolutions (1→24→48 channels), so nothing runs at full
  resolution beyond the first layer: at 224² the stem costs 6 % of the FLOPs.
* **Stages**: at 1/4, 1/8, 1/16 and 1/32 of the input, (48, 96, 192, 320) channels, 1, 2, 2, 1
  residual pairs of 3×3 convolutions with batch norm and ReLU. A stage opens with a stride-2
  pair whose shortcut is a strided 1×1 projection. Widths are multiples of 16, the bf16 tile.
* **Head**: a 1×1 convolution to 384 channels (`head_activation`, the Grad-CAM layer), global
  average pooling and the shared linear head, so Grad-CAM stays exact.

At 224×224 it has 3.2 M parameters and 1.42 GFLOPs (2 × multiply-adds). `baselines.py` keeps
the first `scratch` and a plain VGG-style stack for the comparisons in `bench.train_throughput`.
"""

from __future__ import annotations

import keras
from keras import layers

from training.architectures.common import BuiltModel, classification_head, image_input

FEATURES = "head_activation"
STEM_CHANNELS = (24, 48)
# (output channels, residual pairs, stride of the first pair)
STAGES: tuple[tuple[int, int, int], ...] = ((48, 1, 1), (96, 2, 2), (192, 2, 2), (320, 1, 2))
HEAD_CHANNELS = 384


def _conv_bn(
    x: keras.KerasTensor, filters: int, kernel: int, stride: int, name: str, *, act: bool = True
) -> keras.KerasTensor:
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x) if act else x


def _residual_pair(x: keras.KerasTensor, filters: int, stride: int, name: str) -> keras.KerasTensor:
    """Two 3×3 convolutions and a shortcut (identity, or a strided 1×1 projection)."""
    shortcut = x
    if stride != 1 or int(x.shape[-1]) != filters:
        shortcut = _conv_bn(x, filters, 1, stride, f"{name}_shortcut", act=False)
    y = _conv_bn(x, filters, 3, stride, f"{name}_a")
    y = _conv_bn(y, filters, 3, 1, f"{name}_b", act=False)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.Activation("relu", name=f"{name}_out")(y)


def build(size: int, num_classes: int = 3, *, dropout: float = 0.2, weights: str = "none") -> BuiltModel:
    """Build `scratch` for (size, size, 1) inputs in [0, 255].

    Args:
        size: Input side (at least 32).
        num_classes: Number of classes.
        dropout: Dropout before the linear head.
        weights: Only `none`: this network has no pretrained weights.

    Raises:
        ValueError: Pretrained weights were asked for.
    """
    if weights.lower() != "none":
        raise ValueError("scratch is trained from scratch; weights must be `none`")
    inputs = image_input(size)
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    for index, channels in enumerate(STEM_CHANNELS, start=1):
        x = _conv_bn(x, channels, 3, 2, f"stem{index}")
    for stage, (filters, pairs, stride) in enumerate(STAGES, start=1):
        for index in range(pairs):
            x = _residual_pair(x, filters, stride if index == 0 else 1, f"stage{stage}_pair{index + 1}")
    x = _conv_bn(x, HEAD_CHANNELS, 1, 1, "head")
    features = layers.Activation("linear", name=FEATURES)(x)
    logits = classification_head(features, num_classes, dropout)
    return BuiltModel(keras.Model(inputs, logits, name="scratch"), FEATURES, backbone_layers=())
