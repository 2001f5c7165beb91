"""Grad-CAM maps and their PNGs."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from service.inference.gradcam import (
    OVERLAY_ALPHA,
    _turbo_lut,
    encode_png,
    heatmap_png,
    levels,
    normalise,
    overlay_png,
    overlay_rgb,
    render,
    render_all,
    render_all_base64,
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


@pytest.mark.parametrize(
    ("small", "large"),
    [((5, 5), (512, 379)), ((3, 3), (70, 90)), ((5, 7), (1955, 1841)), ((10, 10), (7, 5)), ((4, 4), (4, 9))],
)
def test_upsample_is_pillows_bilinear_resize(small: tuple[int, int], large: tuple[int, int]) -> None:
    heatmap = np.random.default_rng(2).random(small).astype(np.float32)
    pillow = Image.fromarray(heatmap, mode="F").resize(large[::-1], Image.Resampling.BILINEAR)
    np.testing.assert_allclose(upsample(heatmap, *large), np.clip(np.asarray(pillow), 0, 1), atol=1e-6)


def test_levels_round_to_the_nearest_of_256() -> None:
    heatmap = np.array([[0.0, 0.5 / 255, 0.49 / 255, 1.0], [128.6 / 255, 1.2, -0.1, 254.5 / 255]], np.float32)
    np.testing.assert_array_equal(levels(heatmap), [[0, 1, 0, 255], [129, 255, 0, 255]])


def test_overlay_blends_the_turbo_colour_by_the_map_level() -> None:
    rng = np.random.default_rng(3)
    gray = rng.integers(0, 256, (40, 30), dtype=np.uint8)
    heatmap = rng.random((40, 30)).astype(np.float32)
    level = levels(heatmap)
    weight = OVERLAY_ALPHA * level[..., None] / 255.0
    expected = gray[..., None] * (1 - weight) + _turbo_lut()[level].astype(np.float64) * weight
    overlay = overlay_rgb(gray, heatmap)
    assert overlay.shape == (40, 30, 3)
    np.testing.assert_allclose(overlay, expected, atol=0.51)  # the table rounds once
    decoded = np.asarray(Image.open(io.BytesIO(overlay_png(gray, heatmap))))
    np.testing.assert_array_equal(decoded, overlay)


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


def test_render_all_base64_is_the_pngs_in_base64() -> None:
    rng = np.random.default_rng(4)
    radiograph = rng.integers(0, 256, (50, 60), dtype=np.uint8)
    maps = {name: upsample(normalise(rng.random((5, 5))), 50, 60) for name in ("a", "ensemble")}
    encoded = render_all_base64(radiograph, maps, threads=2)
    for name, (heat, overlay) in render_all(radiograph, maps).items():
        assert encoded[name] == (base64.b64encode(heat).decode(), base64.b64encode(overlay).decode())
