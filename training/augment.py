"""Augmentation for chest radiographs, on uint8 images with Pillow and NumPy (any Keras backend).

On a 2-core machine the input pipeline shares the CPU with the model, so each transform is one
cheap pass over a uint8 image: one bilinear affine warp in Pillow's C code (which releases the
GIL, so worker threads overlap with the training step) for rotation, zoom, shift and flip, and
256-entry look-up tables for the tone curve (gamma) and exposure (brightness and contrast). Each
batch's randomness comes from a generator seeded by (seed, epoch, step), so a resumed run sees
exactly the images an uninterrupted one would.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from training.config import AugmentConfig


def _affine(config: AugmentConfig, size: int, rng: np.random.Generator) -> tuple[float, ...]:
    """Pillow's inverse affine coefficients (output → input) of one random transform."""
    angle = math.radians(rng.uniform(-config.rotation_degrees, config.rotation_degrees))
    scale = rng.uniform(1.0 - config.zoom, 1.0 + config.zoom)
    shift_x, shift_y = rng.uniform(-config.shift, config.shift, 2) * size
    flip = -1.0 if config.horizontal_flip and rng.random() < 0.5 else 1.0
    centre = (size - 1) / 2.0
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    # input = R(-angle)/scale · (output - centre - shift), with x mirrored when flipped.
    a, b, d, e = flip * cos, flip * sin, -sin, cos
    ox, oy = centre + shift_x, centre + shift_y
    return (a, b, centre - a * ox - b * oy, d, e, centre - d * ox - e * oy)


def _exposure_table(config: AugmentConfig, mean: float, rng: np.random.Generator) -> np.ndarray:
    """A uint8 look-up table: contrast about the image's mean, then a brightness offset."""
    contrast = rng.uniform(1.0 - config.contrast, 1.0 + config.contrast)
    brightness = rng.uniform(-config.brightness, config.brightness) * 255.0
    levels = (np.arange(256, dtype=np.float32) - mean) * contrast + mean + brightness
    return np.clip(np.rint(levels), 0, 255).astype(np.uint8)


def _tone_table(gamma: float, rng: np.random.Generator) -> np.ndarray:
    """A uint8 look-up table for a random tone curve 255·(x/255)^g; 0 and 255 stay where they are.

    The exponent g is log-uniform in [1 / (1 + gamma), 1 + gamma].
    """
    exponent = math.exp(rng.uniform(-math.log1p(gamma), math.log1p(gamma)))
    levels = 255.0 * (np.arange(256, dtype=np.float64) / 255.0) ** exponent
    return np.clip(np.rint(levels), 0, 255).astype(np.uint8)


#: A pasted white box's width and height, as fractions of the image's side.
WHITE_BOX_WIDTH = (0.10, 0.35)
WHITE_BOX_HEIGHT = (0.04, 0.15)


def paste_white_box(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A copy of a uint8 (h, w) image with one solid white rectangle at a random place.

    Redaction boxes and burned-in labels are white rectangles. In kaggle-mix they sit on about 54
    of its 845 tuberculosis images and on 1 of its 1,150 others, so a model learns "white box →
    tuberculosis" (one box on the normal test images made the bundled 3.0.0 EfficientNetV2B2 call
    40 % of them tuberculosis instead of 7 %). Pasted on images of every class, boxes tell nothing.
    The box's sides are fractions of the image's (`WHITE_BOX_WIDTH`, `WHITE_BOX_HEIGHT`).
    """
    rows, cols = image.shape[:2]
    width = max(1, round(rng.uniform(*WHITE_BOX_WIDTH) * cols))
    height = max(1, round(rng.uniform(*WHITE_BOX_HEIGHT) * rows))
    left, top = rng.integers(0, cols - width + 1), rng.integers(0, rows - height + 1)
    out = image.copy()
    out[top : top + height, left : left + width] = 255
    return out


def augment_image(image: np.ndarray, config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """One random variant of a square (h, w) uint8 radiograph; borders fill with black.

    No vertical flips (anatomy is never upside down); horizontal flips only when configured,
    since they move the heart to the right. A white box, when configured, comes last, so it stays
    saturated as real ones are.
    """
    size = image.shape[0]
    geometric = config.rotation_degrees or config.zoom or config.shift or config.horizontal_flip
    out = image
    if geometric:
        warped = Image.fromarray(np.ascontiguousarray(image)).transform(
            (size, size),
            Image.Transform.AFFINE,
            _affine(config, size, rng),
            Image.Resampling.BILINEAR,
            fillcolor=0,
        )
        out = np.asarray(warped)
    if config.gamma:  # drawn only when on, so runs without it keep their random streams
        out = _tone_table(config.gamma, rng)[out]
    if config.brightness or config.contrast:
        out = _exposure_table(config, float(out.mean()), rng)[out]
    # No draw at all when off, so the random streams of runs without boxes are unchanged.
    if config.white_box and rng.random() < config.white_box:
        out = paste_white_box(out, rng)
    return out


def augment_batch(images: np.ndarray, config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """`augment_image` over a (b, h, w) uint8 batch."""
    return np.stack([augment_image(image, config, rng) for image in images])


def mix_batch(
    images: np.ndarray,
    targets: np.ndarray,
    weights: np.ndarray,
    alpha: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mixup within a batch: image i becomes λᵢ·xᵢ + (1 - λᵢ)·xⱼ for a partner j of the same batch.

    Args:
        images: (b, h, w, 1) float32 images.
        targets: (b, classes) float32 class probabilities (one-hot before mixing).
        weights: (b,) float32 loss weights (class weights).
        alpha: λᵢ ~ Beta(α, α), one per image.
        rng: The batch's generator.

    Returns:
        The mixed images, targets and weights; targets and weights mix with the same λᵢ, so a
        blend of two classes is weighted between their class weights.
    """
    count = len(images)
    lam = rng.beta(alpha, alpha, count).astype(np.float32)
    partner = rng.permutation(count)
    mixed = lam[:, None, None, None] * images + (1.0 - lam)[:, None, None, None] * images[partner]
    soft = lam[:, None] * targets + (1.0 - lam)[:, None] * targets[partner]
    return mixed, soft, lam * weights + (1.0 - lam) * weights[partner]
