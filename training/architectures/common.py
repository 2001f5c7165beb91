"""What every network shares: the input contract, the head, and pretrained-weight handling.

Input: float32 (batch, h, w, 1) grayscale in [0, 255]; any normalisation happens inside the
graph, so the exported ONNX carries it. Head: global average pooling → dropout → one linear
Dense layer named `logits`. With that head the gradient of a class score with respect to the last
feature maps is the Dense kernel column divided by h·w at every position, so Grad-CAM is exactly
`ReLU(Σ_k W[k, c] · A_k)` up to a positive factor: the export attaches that map as an output.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
from keras import layers

INPUT_NAME = "image"
LOGITS = "logits"
POOL = "pool"


class WeightsError(ValueError):
    """Pretrained weights were asked for but cannot be had."""


@dataclass(frozen=True)
class BuiltModel:
    """A network ready to train.

    Attributes:
        model: Input `image` → output `logits` (float32, pre-softmax).
        features_layer: Name of the layer whose output is the last convolutional feature maps.
        backbone_layers: Names of the layers frozen during the warm-up on a pretrained backbone.
    """

    model: keras.Model
    features_layer: str
    backbone_layers: tuple[str, ...]


def image_input(size: int) -> keras.KerasTensor:
    """The model input: (size, size, 1) grayscale in [0, 255]."""
    return keras.Input((size, size, 1), name=INPUT_NAME)


def gray_to_rgb(x: keras.KerasTensor) -> keras.KerasTensor:
    """Repeat the gray channel three times for ImageNet backbones."""
    return layers.Concatenate(axis=-1, name="gray_to_rgb")([x, x, x])


def classification_head(features: keras.KerasTensor, num_classes: int, dropout: float) -> keras.KerasTensor:
    """GAP → dropout → linear Dense `logits` (kept float32 under mixed precision)."""
    x = layers.GlobalAveragePooling2D(name=POOL)(features)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    return layers.Dense(num_classes, name=LOGITS, dtype="float32")(x)


def resolve_weights(weights: str) -> str | None:
    """Map the `weights` setting to what `keras.applications` takes.

    Args:
        weights: `imagenet`, a path to a weights file of the backbone without its top, or `none`.

    Raises:
        WeightsError: A path that does not exist.
    """
    if weights.lower() == "none":
        return None
    if weights.lower() == "imagenet":
        return "imagenet"
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    return str(path)


def backbone_names(backbone: keras.Model) -> tuple[str, ...]:
    """Names of a `keras.applications` backbone's own layers (not the input layers we put before it).

    With `input_tensor=`, the backbone model starts at our `image` input, so its layer list also
    holds our input conversion layers; those stay trainable during the frozen warm-up.
    """
    ours = {INPUT_NAME, "gray_to_rgb", "scale_to_unit"}
    return tuple(layer.name for layer in backbone.layers if layer.name not in ours)


def on_application(
    name: str,
    application: Callable[..., keras.Model],
    size: int,
    num_classes: int,
    *,
    dropout: float,
    weights: str,
    features_layer: str,
    to_backbone_range: layers.Layer | None = None,
    **application_kwargs: Any,
) -> BuiltModel:
    """A `keras.applications` backbone between our gray input and our linear head.

    Args:
        name: The model's name.
        application: For example `keras.applications.EfficientNetV2B2`.
        size: Input side.
        num_classes: Number of classes.
        dropout: Dropout before the linear head.
        weights: `imagenet`, a local weights file of the backbone without its top, or `none`.
        features_layer: The backbone's last activation (the Grad-CAM layer).
        to_backbone_range: A layer mapping [0, 255] RGB to the backbone's input range, if it has
            no preprocessing of its own.
        **application_kwargs: Further arguments of `application`.
    """
    inputs = image_input(size)
    rgb = gray_to_rgb(inputs)
    scaled = to_backbone_range(rgb) if to_backbone_range is not None else rgb
    backbone = application(
        include_top=False, weights=resolve_weights(weights), input_tensor=scaled, **application_kwargs
    )
    logits = classification_head(backbone.output, num_classes, dropout)
    model = keras.Model(inputs, logits, name=name)
    return BuiltModel(model, features_layer, backbone_names(backbone))
