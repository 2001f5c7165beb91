"""The three networks, one builder module each (as `keras.applications` does)."""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Callable, Iterator

import keras

from training.architectures import efficientnet_v2_b2, inception_resnet_v2, scratch
from training.architectures.common import BuiltModel

BUILDERS: dict[str, Callable[..., BuiltModel]] = {
    "scratch": scratch.build,
    "inception_resnet_v2": inception_resnet_v2.build,
    "efficientnet_v2_b2": efficientnet_v2_b2.build,
}


@contextlib.contextmanager
def fresh_layer_names() -> Iterator[None]:
    """Restart Keras' automatic layer names (`conv2d_17`, ...) from zero inside the block.

    `keras.applications.InceptionResNetV2` names most of its layers from a process-wide counter,
    so a second build in one process would get other names. Inside this block every build gets
    the same names; the caller's counter is restored afterwards. Keras keeps the counter in its
    global state under `object_name_uids` (reset by its own `naming.reset_uids`).
    """
    from keras.src.backend.common import global_state

    saved = global_state.get_global_attribute("object_name_uids")
    global_state.set_global_attribute("object_name_uids", collections.defaultdict(int))
    try:
        yield
    finally:
        global_state.set_global_attribute("object_name_uids", saved)


def build_model(
    arch: str,
    size: int,
    num_classes: int = 3,
    *,
    dropout: float = 0.2,
    weights: str = "none",
    bn_momentum: float | None = None,
) -> BuiltModel:
    """Build network `arch` for (size, size, 1) grayscale inputs in [0, 255].

    Args:
        arch: One of `BUILDERS`.
        size: Input side.
        num_classes: Number of classes.
        dropout: Dropout before the linear head.
        weights: `imagenet`, a local weights file of the backbone without its top, or `none`.
        bn_momentum: If set, the moving-average momentum of every batch-norm layer.

    Raises:
        KeyError: Unknown architecture.
    """
    builder = BUILDERS[arch]
    with fresh_layer_names():
        built = builder(size, num_classes, dropout=dropout, weights=weights)
    if bn_momentum is not None:
        for layer in built.model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = bn_momentum
    return built
