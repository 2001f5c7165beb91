"""`efficientnet_v2_b2`: Keras' EfficientNetV2B2 backbone with our input and head.

The gray input is repeated to three channels; the backbone's own preprocessing layers (which
expect [0, 255]) stay in the graph. Grad-CAM layer: `top_activation`.
"""

from __future__ import annotations

import keras

from training.architectures.common import BuiltModel, on_application

FEATURES = "top_activation"


def build(size: int, num_classes: int = 3, *, dropout: float = 0.2, weights: str = "none") -> BuiltModel:
    """Build EfficientNetV2B2 for (size, size, 1) inputs in [0, 255].

    Args:
        size: Input side (at least 32).
        num_classes: Number of classes.
        dropout: Dropout before the linear head.
        weights: `imagenet`, a local weights file of the backbone without its top, or `none`.
    """
    return on_application(
        "efficientnet_v2_b2",
        keras.applications.EfficientNetV2B2,
        size,
        num_classes,
        dropout=dropout,
        weights=weights,
        features_layer=FEATURES,
        include_preprocessing=True,
    )
