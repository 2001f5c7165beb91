"""Histogram equalisation, the optional intensity step of a model's input."""

from __future__ import annotations

from typing import get_args

import numpy as np
import pytest

from xray.contract.images import EQUALIZATIONS, Equalization, equalize_batch, equalize_histogram


def radiograph_like(seed: int, size: int = 64) -> np.ndarray:
    """Skewed intensities over part of the range, as a processed radiograph has."""
    rng = np.random.default_rng(seed)
    return (rng.beta(2.0, 5.0, (size, size)) * 180 + 20).astype(np.uint8)


def test_the_levels_spread_over_the_whole_range_in_their_order() -> None:
    image = radiograph_like(0)
    equalized = equalize_histogram(image)
    assert equalized.dtype == np.uint8
    assert (equalized.min(), equalized.max()) == (0, 255)
    levels = np.unique(image)
    mapped = np.array([equalized[image == level][0] for level in levels])
    assert np.all(np.diff(mapped.astype(int)) >= 0)  # order kept (rare neighbours may merge)
    # Nearly flat: each quarter of the output range holds about a quarter of the pixels.
    quarters = np.histogram(equalized, bins=4, range=(0, 256))[0] / equalized.size
    assert np.abs(quarters - 0.25).max() < 0.08


@pytest.mark.parametrize("exponent", [0.6, 0.8, 1.5])
def test_a_tone_curve_does_not_change_the_result(exponent: float) -> None:
    """What an archive's processing curve changes, equalisation takes away."""
    image = 40 + 4 * (radiograph_like(1) // 5)  # every 4th level, so no curve here merges two
    levels = np.arange(256) / 255.0
    curve = np.rint(255 * levels**exponent).astype(np.uint8)
    assert len(np.unique(curve[np.unique(image)])) == len(np.unique(image))  # no levels merged
    np.testing.assert_array_equal(equalize_histogram(curve[image]), equalize_histogram(image))


@pytest.mark.parametrize("value", [0, 117, 255])
def test_a_flat_image_is_returned_unchanged(value: int) -> None:
    image = np.full((8, 8), value, dtype=np.uint8)
    np.testing.assert_array_equal(equalize_histogram(image), image)


def test_a_batch_is_equalised_image_by_image_and_none_is_the_identity() -> None:
    batch = np.stack([radiograph_like(seed) for seed in range(3)])
    assert equalize_batch(batch, "none") is batch
    equalized = equalize_batch(batch, "histogram")
    for image, expected in zip(equalized, batch, strict=True):
        np.testing.assert_array_equal(image, equalize_histogram(expected))
    assert equalize_batch(batch[:0], "histogram").shape == (0, 64, 64)
    assert set(EQUALIZATIONS) == set(get_args(Equalization))  # one transform per declarable name
