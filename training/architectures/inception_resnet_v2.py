"""`inception_resnet_v2`: Keras' InceptionResNetV2 backbone with our input and head.

The gray input is repeated to three channels and scaled to [-1, 1] (the backbone's own
`preprocess_input`) inside the graph. Grad-CAM layer: `conv_7b_ac`, the last activation.
"""

from __future__ import annotations

import keras
from keras import layers

from training.architectures.common import BuiltModel, on_application

FEATURES = "conv_7b_ac"


def build(size: int, num_classes: int = 3, *, dropout: float = 0.2, weights: str = "none") -> BuiltModel:
    """Build InceptionResNetV2 for (size, size, 1) inputs in [0, 255].

    Args:
        size: Input side (at least 75).
        num_classes: Number of classes.
        dropout: Dropout before the linear head.
        weights: `imagenet`, a local weights file of the backbone without its top, or `none`.
    """
    return on_application(
        "inception_resnet_v2",
        keras.applications.InceptionResNetV2,
        size,
        num_classes,
        dropout=dropout,
        weights=weights,
        features_layer=FEATURES,
        to_backbone_range=layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale_to_unit"),
    )
