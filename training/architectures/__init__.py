"""The networks: one table entry each, and a builder module each (as `keras.applications` has).

`ARCHITECTURES` is the one place an architecture is described: its builder module, the input size
it was designed for, the smallest input it accepts, and its place in the confidence cascade's
default order. The configuration, the command line, the manifest writer and the benchmarks read
it; a fourth network is an entry here and its own module with `build(size, num_classes, *,
dropout, weights) -> BuiltModel`. Nothing here imports Keras until a network is built.
"""

from __future__ import annotations

import collections
import contextlib
import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from training.architectures.common import BuiltModel


@dataclass(frozen=True)
class Architecture:
    """One network.

    Attributes:
        name: Its name in configs, runs, the manifest and every answer.
        default_size: The input side it was designed for (a recipe may choose another).
        min_size: The smallest input side it accepts.
        cascade_rank: Its place in the confidence cascade's default order, used until the order
            is chosen on validation data (None: not in the default cascade).
    """

    name: str
    default_size: int
    min_size: int
    cascade_rank: int | None = None

    @property
    def module(self) -> str:
        """The builder module: `training.architectures.<name>`."""
        return f"{__name__}.{self.name}"


#: Every network, in the order the manifest lists them.
ARCHITECTURES: dict[str, Architecture] = {
    architecture.name: architecture
    for architecture in (
        Architecture("scratch", default_size=224, min_size=32),
        Architecture("inception_resnet_v2", default_size=299, min_size=75, cascade_rank=1),
        Architecture("efficientnet_v2_b2", default_size=260, min_size=32, cascade_rank=0),
    )
}


def default_cascade_order() -> list[str]:
    """The networks of the default confidence cascade, in the order they are asked."""
    ranked = [entry for entry in ARCHITECTURES.values() if entry.cascade_rank is not None]
    return [entry.name for entry in sorted(ranked, key=lambda entry: entry.cascade_rank or 0)]


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
        arch: One of `ARCHITECTURES`.
        size: Input side.
        num_classes: Number of classes.
        dropout: Dropout before the linear head.
        weights: `imagenet`, a local weights file of the backbone without its top, or `none`.
        bn_momentum: If set, the moving-average momentum of every batch-norm layer.

    Raises:
        KeyError: Unknown architecture.
    """
    import keras

    builder = importlib.import_module(ARCHITECTURES[arch].module).build
    with fresh_layer_names():
        built: BuiltModel = builder(size, num_classes, dropout=dropout, weights=weights)
    if bn_momentum is not None:
        for layer in built.model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = bn_momentum
    return built
