"""Grad-CAM maps: normalisation and the upsampling to the image's size."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from service.inference.gradcam import normalise, upsample


def test_normalise_is_relu_then_divide_by_the_maximum() -> None:
    maps = np.array([[[-1.0, 0.0], [2.0, 4.0]], [[-3.0, -1.0], [-2.0, -5.0]]])
    result = normalise(maps)
    np.testing.assert_allclose(result[0], [[0.0, 0.0], [0.5, 1.0]])
    np.testing.assert_array_equal(result[1], np.zeros((2, 2)))  # no positive evidence: no map


def test_upsample_keeps_the_range_and_reaches_the_image_size() -> None:
    heatmap = normalise(np.random.default_rng(0).normal(size=(7, 7)))
    large = upsample(heatmap, 300, 200)
    assert large.shape == (300, 200)
    assert 0.0 <= large.min() <= large.max() <= 1.0


@pytest.mark.parametrize(
    ("small", "large"),
    [((5, 5), (512, 379)), ((3, 3), (70, 90)), ((5, 7), (1955, 1841)), ((10, 10), (7, 5)), ((4, 4), (4, 9))],
)
def test_upsample_is_pillows_bilinear_resize(small: tuple[int, int], large: tuple[int, int]) -> None:
    heatmap = np.random.default_rng(2).random(small).astype(np.float32)
    pillow = Image.fromarray(heatmap, mode="F").resize(large[::-1], Image.Resampling.BILINEAR)
    np.testing.assert_allclose(upsample(heatmap, *large), np.clip(np.asarray(pillow), 0, 1), atol=1e-6)
