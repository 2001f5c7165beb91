"""Images that are not frontal chest radiographs, to test and report the input check.

Each kind is one entry of `KINDS`: a function of a random generator and a chest radiograph (for
the kinds made from one) that returns an 8-bit grayscale image. Real non-chest radiographs (the
hip DICOMs of the shared data) are read by the caller; these are the kinds that can be made here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFilter

Gray = npt.NDArray[np.uint8]
Maker = Callable[[np.random.Generator, Gray], Gray]

SIZE = 512

# Shepp–Logan head phantom (Shepp & Logan 1974, modified contrast as in Toft 1996): intensity,
# semi-axes a, b, centre x0, y0 and rotation in degrees, in a [-1, 1]² frame. A CT-like slice.
_PHANTOM = (
    (1.0, 0.69, 0.92, 0.0, 0.0, 0.0),
    (-0.8, 0.6624, 0.874, 0.0, -0.0184, 0.0),
    (-0.2, 0.11, 0.31, 0.22, 0.0, -18.0),
    (-0.2, 0.16, 0.41, -0.22, 0.0, 18.0),
    (0.1, 0.21, 0.25, 0.0, 0.35, 0.0),
    (0.1, 0.046, 0.046, 0.0, 0.1, 0.0),
    (0.1, 0.046, 0.046, 0.0, -0.1, 0.0),
    (0.1, 0.046, 0.023, -0.08, -0.605, 0.0),
    (0.1, 0.023, 0.023, 0.0, -0.606, 0.0),
    (0.1, 0.023, 0.046, 0.06, -0.605, 0.0),
)


def _to_gray(values: npt.NDArray[np.floating]) -> Gray:
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    return np.asarray(np.round(scaled * 255), dtype=np.uint8)


def blank(rng: np.random.Generator, chest: Gray) -> Gray:
    """A flat image of one random grey level (an empty or failed acquisition)."""
    return np.full((SIZE, SIZE), int(rng.integers(0, 256)), dtype=np.uint8)


def noise(rng: np.random.Generator, chest: Gray) -> Gray:
    """Uniform white noise."""
    return rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8)


def photograph(rng: np.random.Generator, chest: Gray) -> Gray:
    """A photograph-like scene: a smooth gradient sky over overlapping filled shapes, blurred."""
    y = np.linspace(0, 1, SIZE)[:, None]
    image = Image.fromarray(_to_gray(np.broadcast_to(y * rng.uniform(0.3, 1.0), (SIZE, SIZE))))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(8, 20))):
        x0, y0 = (int(v) for v in rng.integers(0, SIZE, 2))
        x1, y1 = x0 + int(rng.integers(20, 250)), y0 + int(rng.integers(20, 250))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x0, y0, x1, y1), fill=int(rng.integers(0, 256)))
    return np.asarray(image.filter(ImageFilter.GaussianBlur(2)), dtype=np.uint8)


def text_page(rng: np.random.Generator, chest: Gray) -> Gray:
    """A scanned page of text: dark lines of characters on a light background, slightly noisy."""
    image = Image.new("L", (SIZE, SIZE), int(rng.integers(215, 250)))
    draw = ImageDraw.Draw(image)
    letters = "abcdefghijklmnopqrstuvwxyz     "
    for row in range(20, SIZE - 20, 16):
        line = "".join(letters[int(i)] for i in rng.integers(0, len(letters), 70))
        draw.text((20, row), line, fill=int(rng.integers(0, 60)))
    page = np.asarray(image, dtype=np.int16) + rng.integers(-8, 9, (SIZE, SIZE))
    return np.asarray(np.clip(page, 0, 255), dtype=np.uint8)


def ct_phantom(rng: np.random.Generator, chest: Gray) -> Gray:
    """A CT-like axial head slice (the Shepp–Logan phantom), randomly scaled and shifted."""
    coords = np.linspace(-1, 1, SIZE)
    x, y = np.meshgrid(coords, -coords)
    zoom, dx, dy = rng.uniform(0.8, 1.1), rng.uniform(-0.1, 0.1), rng.uniform(-0.1, 0.1)
    x, y = (x - dx) / zoom, (y - dy) / zoom
    values = np.zeros((SIZE, SIZE))
    for intensity, a, b, x0, y0, degrees in _PHANTOM:
        angle = np.deg2rad(degrees)
        u = (x - x0) * np.cos(angle) + (y - y0) * np.sin(angle)
        v = -(x - x0) * np.sin(angle) + (y - y0) * np.cos(angle)
        values[(u / a) ** 2 + (v / b) ** 2 <= 1] += intensity
    return _to_gray(values + rng.normal(0, 0.01, values.shape))


def inverted_chest(rng: np.random.Generator, chest: Gray) -> Gray:
    """A chest radiograph with its grey levels inverted (MONOCHROME1 shown as MONOCHROME2)."""
    return np.asarray(255 - chest, dtype=np.uint8)


#: Every kind that can be made here, by name.
KINDS: dict[str, Maker] = {
    "blank": blank,
    "noise": noise,
    "photograph": photograph,
    "text_page": text_page,
    "ct_phantom": ct_phantom,
    "inverted_chest": inverted_chest,
}


def make(kind: str, count: int, chests: list[Gray], *, seed: int = 0) -> list[Gray]:
    """`count` images of `kind`; the chest-derived kinds use `chests` in turn."""
    rng = np.random.default_rng(seed)
    return [KINDS[kind](rng, chests[index % len(chests)]) for index in range(count)]
