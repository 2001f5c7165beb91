"""The heatmap and overlay PNGs of explanation maps, and their base64."""

from __future__ import annotations

import base64
import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from service.inference.gradcam import normalise, upsample
from service.inference.rendering import (
    OVERLAY_ALPHA,
    _turbo_lut,
    base64_text,
    encode_png,
    heatmap_png,
    levels,
    overlay_rgb,
    render,
    render_all,
    render_heatmaps,
)


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
    decoded = np.asarray(Image.open(io.BytesIO(encode_png(overlay_rgb(gray, heatmap)))))
    np.testing.assert_array_equal(decoded, overlay)


def test_pngs_have_the_image_size() -> None:
    gray = np.full((60, 40), 100, np.uint8)
    heatmap = np.zeros((60, 40), np.float32)
    heatmap[:30] = 1.0
    heat = Image.open(io.BytesIO(heatmap_png(heatmap)))
    assert (heat.mode, heat.size) == ("L", (40, 60))
    overlay = np.asarray(Image.open(io.BytesIO(encode_png(overlay_rgb(gray, heatmap)))))
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
    with ThreadPoolExecutor(2) as pool:
        threaded = render_all(radiograph, maps, pool=pool)
    assert list(threaded) == list(maps)
    for name, heatmap in maps.items():
        assert threaded[name] == render(radiograph, heatmap)


def test_render_heatmaps_are_the_heatmap_pngs_of_render_all() -> None:
    rng = np.random.default_rng(5)
    radiograph = rng.integers(0, 256, (48, 40), dtype=np.uint8)
    maps = {name: upsample(normalise(rng.normal(size=(5, 5))), 48, 40) for name in ("a", "b", "ensemble")}
    with ThreadPoolExecutor(2) as pool:
        heatmaps = render_heatmaps(maps, pool)
    for name, (heat, _overlay) in render_all(radiograph, maps).items():
        assert heatmaps[name] == heat == heatmap_png(maps[name])


def test_base64_text_is_standard_base64_without_newlines() -> None:
    data = encode_png(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64).astype(np.uint8))
    text = base64_text(data)
    assert "\n" not in text
    assert base64.b64decode(text) == data
