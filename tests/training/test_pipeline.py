"""Training batches and augmentation: uint8, reproducible by (seed, epoch, step), resumable."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from tests.training.conftest import synthetic_image
from training.augment import (
    WHITE_BOX_HEIGHT,
    WHITE_BOX_WIDTH,
    augment_batch,
    augment_image,
    mix_batch,
    paste_white_box,
)
from training.config import AugmentConfig
from training.pipeline import TrainingBatches
from xray.contract.images import equalize_batch

NO_AUGMENT = AugmentConfig(rotation_degrees=0, zoom=0, shift=0, brightness=0, contrast=0)


def _images(count: int = 20, size: int = 48) -> np.ndarray:
    return np.stack([synthetic_image(i % 3, seed=i, size=size) for i in range(count)])


def test_augmentation_keeps_shape_and_type_and_varies() -> None:
    images = _images(4)
    out = augment_batch(images, AugmentConfig(), np.random.default_rng(0))
    assert out.shape == images.shape
    assert out.dtype == np.uint8
    assert not np.array_equal(out, images)
    again = augment_batch(images, AugmentConfig(), np.random.default_rng(0))
    assert np.array_equal(out, again)


def test_no_augmentation_is_the_identity() -> None:
    image = _images(1)[0]
    assert np.array_equal(augment_image(image, NO_AUGMENT, np.random.default_rng(1)), image)


def test_geometry_moves_content_without_flipping_it() -> None:
    image = np.zeros((64, 64), np.uint8)
    image[:, :16] = 200  # a bright band on the left (the patient's right)
    config = AugmentConfig(rotation_degrees=5, zoom=0.05, shift=0.05, brightness=0, contrast=0)
    for seed in range(10):
        out = augment_image(image, config, np.random.default_rng(seed)).astype(float)
        assert out[:, :24].mean() > out[:, 40:].mean()


def test_exposure_changes_only_levels() -> None:
    image = _images(1)[0]
    config = AugmentConfig(rotation_degrees=0, zoom=0, shift=0, brightness=0.2, contrast=0.3)
    out = augment_image(image, config, np.random.default_rng(3))
    # A monotone level map: the order of pixel values is kept.
    order = np.argsort(image.ravel(), kind="stable")
    assert np.all(np.diff(out.ravel()[order].astype(int)) >= 0)


def test_a_tone_curve_keeps_black_white_and_order_and_bends_the_mid_tones() -> None:
    ramp = np.tile(np.arange(256, dtype=np.uint8), (16, 1))
    config = NO_AUGMENT.model_copy(update={"gamma": 0.5})
    exponents = []
    for seed in range(40):
        out = augment_image(ramp, config, np.random.default_rng(seed))
        assert out[0, 0] == 0
        assert out[0, 255] == 255
        assert np.all(np.diff(out[0].astype(int)) >= 0)
        exponents.append(np.log(out[0, 128] / 255.0) / np.log(128 / 255.0))
    # The log of the exponent is uniform in ±log 1.5: between 1/1.5 and 1.5, both sides of 1 drawn.
    assert 1 / 1.5 - 0.02 <= min(exponents) < 0.95
    assert 1.05 < max(exponents) <= 1.5 + 0.02


def _white_rectangle(image: np.ndarray) -> tuple[int, int]:
    """(height, width) of the one solid 255 rectangle on a dark image; fails if there is not exactly one."""
    rows, cols = np.nonzero(image == 255)
    height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    assert len(rows) == height * width  # solid, and a single rectangle
    return int(height), int(width)


def test_a_white_box_is_one_solid_rectangle_within_its_size_range() -> None:
    image = np.full((100, 100), 40, np.uint8)
    for seed in range(50):
        out = paste_white_box(image, np.random.default_rng(seed))
        height, width = _white_rectangle(out)
        assert WHITE_BOX_HEIGHT[0] * 100 - 1 <= height <= WHITE_BOX_HEIGHT[1] * 100 + 1
        assert WHITE_BOX_WIDTH[0] * 100 - 1 <= width <= WHITE_BOX_WIDTH[1] * 100 + 1
        assert np.all(out[out != 255] == 40)  # nothing else changed
    assert np.all(image == 40)  # the input is left alone


def test_white_boxes_land_on_the_configured_share_of_images_and_last() -> None:
    image = np.full((64, 64), 40, np.uint8)
    # Exposure on: a box pasted before it would no longer be 255.
    config = AugmentConfig(rotation_degrees=0, zoom=0, shift=0, brightness=0.2, contrast=0.3, white_box=0.3)
    rng = np.random.default_rng(5)
    boxed = [np.any(augment_image(image, config, rng) == 255) for _ in range(400)]
    assert 0.24 < np.mean(boxed) < 0.36
    always = config.model_copy(update={"white_box": 1.0})
    _white_rectangle(augment_image(image, always, np.random.default_rng(0)))


class _CountingGenerator:
    """A NumPy generator that records which of its methods were called."""

    def __init__(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        self.calls.append(name)
        return getattr(self._rng, name)


@pytest.mark.parametrize(("white_box", "draws_for_it"), [(0.0, False), (0.5, True)])
def test_white_boxes_draw_from_the_generator_only_when_on(white_box: float, draws_for_it: bool) -> None:
    # With the option off, runs recorded before it existed replay the same augmentations when resumed.
    counting = _CountingGenerator(9)
    augment_image(_images(1)[0], AugmentConfig(white_box=white_box), counting)  # type: ignore[arg-type]
    assert ("random" in counting.calls) is draws_for_it  # nothing else in the default draws `random`
    assert counting.calls.count("uniform") >= 5  # rotation, zoom, shift, contrast, brightness


def test_the_tone_curve_draws_from_the_generator_only_when_on() -> None:
    image = _images(1)[0]
    calls = {}
    for gamma in (0.0, 0.3):
        counting = _CountingGenerator(9)
        augment_image(image, AugmentConfig(gamma=gamma), counting)  # type: ignore[arg-type]
        calls[gamma] = counting.calls.count("uniform")
    assert calls[0.3] == calls[0.0] + 1


def test_batches_are_a_function_of_seed_epoch_and_step() -> None:
    batches = TrainingBatches(_images(), np.arange(20) % 3, batch_size=6, seed=7, augment=AugmentConfig())
    assert batches.steps_per_epoch == 3  # the incomplete last batch is left out
    x, y, w = batches.batch(2, 1)
    assert x.shape == (6, 48, 48, 1)
    assert x.dtype == np.float32
    assert y.dtype == np.int32
    assert w.shape == (6,)
    assert all(np.array_equal(a, b) for a, b in zip((x, y, w), batches.batch(2, 1), strict=True))
    assert not np.array_equal(batches.indices(2, 1), batches.indices(3, 1))
    seen = np.concatenate([batches.indices(0, step) for step in range(3)])
    assert len(set(seen.tolist())) == 18


def test_equalisation_comes_before_augmentation() -> None:
    """Batches see each image equalised as the service will equalise it, then augmented."""
    images, labels = _images(), np.arange(20) % 3
    plain = TrainingBatches(images, labels, batch_size=5, seed=3, equalization="histogram")
    x, _, _ = plain.batch(1, 2)
    expected = equalize_batch(images[plain.indices(1, 2)], "histogram")
    np.testing.assert_array_equal(x[..., 0], expected.astype(np.float32))
    augment = AugmentConfig(brightness=0.2)
    augmented = TrainingBatches(
        images, labels, batch_size=5, seed=3, augment=augment, equalization="histogram"
    )
    rng = np.random.default_rng([3, 1, 2, 1])
    np.testing.assert_array_equal(augmented.batch(1, 2)[0][..., 0], augment_batch(expected, augment, rng))


def test_a_stream_resumed_at_an_epoch_sees_what_an_uninterrupted_one_saw() -> None:
    batches = TrainingBatches(
        _images(), np.arange(20) % 3, batch_size=5, seed=1, augment=AugmentConfig(), workers=2
    )
    whole = list(itertools.islice(batches.stream(0), 12))  # epochs 0, 1, 2 of 4 steps
    resumed = list(itertools.islice(batches.stream(2), 4))
    for expected, got in zip(whole[8:], resumed, strict=True):
        assert all(np.array_equal(a, b) for a, b in zip(expected, got, strict=True))


def test_each_image_carries_its_weight() -> None:
    labels = np.array([0, 0, 0, 1, 2, 2])
    weights = np.array([0.5, 0.6, 0.7, 2.0, 1.0, 1.1])
    batches = TrainingBatches(_images(6), labels, batch_size=3, seed=0, sample_weights=weights)
    for step in range(2):
        _, _, w = batches.batch(0, step)
        assert np.allclose(w, weights[batches.indices(0, step)])
    assert np.all(TrainingBatches(_images(6), labels, batch_size=3, seed=0).batch(0, 0)[2] == 1.0)


def test_mismatched_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="one length"):
        TrainingBatches(_images(3), np.arange(2), batch_size=2, seed=0)
    with pytest.raises(ValueError, match="one weight per image"):
        TrainingBatches(_images(3), np.arange(3), batch_size=2, seed=0, sample_weights=np.ones(2))


def test_mixup_blends_images_labels_and_weights_with_one_lambda() -> None:
    # Image i is 1 at pixel i and 0 elsewhere, so a mixed image shows its λ and its partner.
    images = np.eye(6, dtype=np.float32).reshape(6, 1, 6, 1)
    labels = np.array([0, 1, 2, 0, 1, 2])
    targets = np.eye(3, dtype=np.float32)[labels]
    weights = np.array([1.0, 2.0, 4.0, 1.0, 2.0, 4.0], np.float32)
    mixed, soft, mixed_weights = mix_batch(images, targets, weights, 0.4, np.random.default_rng(0))
    assert mixed.shape == images.shape
    assert soft.shape == (6, 3)
    assert mixed_weights.shape == (6,)
    partners = []
    for i in range(6):
        pixels = mixed[i].ravel()
        lam = float(pixels[i])
        others = [j for j in range(6) if j != i and pixels[j] > 0]
        j = others[0] if others else i
        partners.append(j)
        # The partner's share is 1 - λ (an image mixed with itself stays itself).
        assert pixels[j] == pytest.approx(1 - lam if j != i else 1.0, abs=1e-6)
        np.testing.assert_allclose(soft[i], lam * targets[i] + (1 - lam) * targets[j], atol=1e-6)
        np.testing.assert_allclose(mixed_weights[i], lam * weights[i] + (1 - lam) * weights[j], atol=1e-6)
    assert sorted(partners) == list(range(6))  # the partners are a permutation of the batch
    assert not np.allclose(soft.max(axis=1), 1.0)  # some labels are soft


def test_mixed_batches_carry_class_probabilities_and_stay_reproducible() -> None:
    labels = np.arange(20) % 3
    batches = TrainingBatches(
        _images(), labels, batch_size=6, seed=7, augment=AugmentConfig(mixup=0.4), num_classes=3
    )
    x, y, w = batches.batch(1, 2)
    assert x.shape == (6, 48, 48, 1)
    assert x.dtype == np.float32
    assert y.shape == (6, 3)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-6)
    assert np.all((y > 0).sum(axis=1) <= 2)  # a blend of at most two classes
    assert y.max(axis=1).min() > 0.0
    assert not np.allclose(y.max(axis=1), 1.0)
    assert all(np.array_equal(a, b) for a, b in zip((x, y, w), batches.batch(1, 2), strict=True))
    plain = TrainingBatches(_images(), labels, batch_size=6, seed=7, augment=AugmentConfig())
    assert plain.batch(1, 2)[1].dtype == np.int32  # off by default: class indices, as before


def test_soft_targets_are_served_instead_of_labels_and_mixup_blends_them() -> None:
    labels = np.arange(20) % 3
    targets = np.random.default_rng(0).dirichlet(np.ones(3), size=20).astype(np.float32)
    plain = TrainingBatches(_images(), labels, batch_size=6, seed=7, augment=AugmentConfig(), targets=targets)
    x, y, w = plain.batch(1, 2)
    np.testing.assert_array_equal(y, targets[plain.indices(1, 2)])
    mixed = TrainingBatches(
        _images(), labels, batch_size=6, seed=7, augment=AugmentConfig(mixup=0.4), targets=targets
    )
    # Mixup blends the teacher's targets, with the λ and partners it would draw for class labels.
    expected = mix_batch(x, y, w, 0.4, np.random.default_rng([7, 1, 2, 2]))
    assert all(np.allclose(a, b) for a, b in zip(mixed.batch(1, 2), expected, strict=True))
    with pytest.raises(ValueError, match="one row of class probabilities per image"):
        TrainingBatches(_images(), labels, batch_size=6, seed=7, targets=targets[:5])
