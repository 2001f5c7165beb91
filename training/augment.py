"""Augmentation for chest radiographs, as Keras preprocessing layers (backend-neutral)."""

from __future__ import annotations

import keras

from training.config import AugmentConfig


def build_augmenter(config: AugmentConfig, seed: int) -> keras.Sequential:
    """A pipeline of random transforms applied to (batch, h, w, 1) images in [0, 255].

    Geometric transforms fill with black, as the borders of a radiograph are; intensity
    transforms model exposure and contrast differences between machines.
    """
    steps: list[keras.layers.Layer] = []
    if config.horizontal_flip:
        steps.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if config.rotation_degrees:
        steps.append(
            keras.layers.RandomRotation(config.rotation_degrees / 360.0, fill_mode="constant", seed=seed + 1)
        )
    if config.zoom:
        steps.append(keras.layers.RandomZoom(config.zoom, fill_mode="constant", seed=seed + 2))
    if config.shift:
        steps.append(
            keras.layers.RandomTranslation(config.shift, config.shift, fill_mode="constant", seed=seed + 3)
        )
    if config.brightness:
        steps.append(keras.layers.RandomBrightness(config.brightness, value_range=(0, 255), seed=seed + 4))
    if config.contrast:
        steps.append(keras.layers.RandomContrast(config.contrast, value_range=(0, 255), seed=seed + 5))
    return keras.Sequential(steps, name="augment")
