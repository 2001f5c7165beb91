"""`efficientnet_v2_b2`: Keras' EfficientNetV2B2 backbone with our input and head.

The gray input is repeated to three channels; the backbone's own preprocessing layers (which
expect [0, 255]) stay in the graph. Grad-CAM layer: `top_activation`.
"""

from __future__ import annotations

import keras

from training.architectures.common import (
    BuiltModel,
    backbone_names,
    classification_head,
    gray_to_rgb,
    image_input,
    resolve_weights,
)

FEATURES = "top_activation"


def build(size: int, num_classes: int = 3, *, dropout: float = 0.2, weights: str = "none") -> BuiltModel:
    """Build EfficientNetV2B2 for (size, size, 1) inputs in [0, 255].

    Args:
        size: Input side (at least 32).
        num_classes: Number of classes.
        dropout: Dropout before the linear head.
        weights: `imagenet`, a local weights file of the backbone without its top, or `none`.
    """
    inputs = image_input(size)
    rgb = gray_to_rgb(inputs)
    backbone = keras.applications.EfficientNetV2B2(
        include_top=False, weights=resolve_weights(weights), input_tensor=rgb, include_preprocessing=True
    )
    logits = classification_head(backbone.output, num_classes, dropout)
    model = keras.Model(inputs, logits, name="efficientnet_v2_b2")
    return BuiltModel(model, FEATURES, backbone_names(backbone))
