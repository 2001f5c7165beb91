"""Training batches and augmentation: uint8, reproducible by (seed, epoch, step), resumable."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tests.training.conftest import synthetic_image
from training.augment import augment_batch, augment_image
from training.config import AugmentConfig
from training.pipeline import TrainingBatches

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


def test_a_stream_resumed_at_an_epoch_sees_what_an_uninterrupted_one_saw() -> None:
    batches = TrainingBatches(
        _images(), np.arange(20) % 3, batch_size=5, seed=1, augment=AugmentConfig(), workers=2
    )
    whole = list(itertools.islice(batches.stream(0), 12))  # epochs 0, 1, 2 of 4 steps
    resumed = list(itertools.islice(batches.stream(2), 4))
    for expected, got in zip(whole[8:], resumed, strict=True):
        assert all(np.array_equal(a, b) for a, b in zip(expected, got, strict=True))


def test_class_weights_become_sample_weights() -> None:
    labels = np.array([0, 0, 0, 1, 2, 2])
    batches = TrainingBatches(
        _images(6), labels, batch_size=6, seed=0, class_weights={0: 0.5, 1: 2.0, 2: 1.0}
    )
    _, y, w = batches.batch(0, 0)
    assert np.allclose(w, np.array([0.5, 2.0, 1.0])[y])


def test_mismatched_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="one length"):
        TrainingBatches(_images(3), np.arange(2), batch_size=2, seed=0)
