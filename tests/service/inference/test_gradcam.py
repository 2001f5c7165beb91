"""Grad-CAM maps and their PNGs."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from service.inference.gradcam import (
    encode_png,
    heatmap_png,
    normalise,
    overlay_png,
    render,
    render_all,
    upsample,
)


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


def test_pngs_have_the_image_size() -> None:
    gray = np.full((60, 40), 100, np.uint8)
    heatmap = np.zeros((60, 40), np.float32)
    heatmap[:30] = 1.0
    heat = Image.open(io.BytesIO(heatmap_png(heatmap)))
    assert (heat.mode, heat.size) == ("L", (40, 60))
    overlay = np.asarray(Image.open(io.BytesIO(overlay_png(gray, heatmap))))
    assert overlay.shape == (60, 40, 3)
    # Where the map is zero the X-ray shows through unchanged; where it is one, the colour map does.
    np.testing.assert_array_equal(overlay[45], np.full((40, 3), 100))
    assert not np.array_equal(overlay[10], np.full((40, 3), 100))


@pytest.mark.parametrize("shape", [(37, 53), (37, 53, 3), (1, 1), (512, 512, 3)])
def test_png_encoder_round_trips_through_pillow(shape: tuple[int, ...]) -> None:
    array = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    decoded = Image.open(io.BytesIO(encode_png(array)))
    assert decoded.mode == ("RGB" if len(shape) == 3 else "L")
    np.testing.assert_array_equal(np.asarray(decoded), array)


def test_render_all_on_threads_gives_the_same_pngs_as_one_by_one() -> None:
    rng = np.random.default_rng(1)
    radiograph = rng.integers(0, 256, (70, 90), dtype=np.uint8)
    maps = {name: upsample(normalise(rng.random((5, 5))), 70, 90) for name in ("a", "b", "c", "ensemble")}
    threaded = render_all(radiograph, maps, threads=2)
    assert list(threaded) == list(maps)
    for name, heatmap in maps.items():
        assert threaded[name] == render(radiograph, heatmap)
