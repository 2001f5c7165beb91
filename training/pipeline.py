"""Streaming input pipelines over the decoded-image cache, with prefetch and bounded memory."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from keras import Sequential


def make_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    augment: Sequential | None = None,
) -> tf.data.Dataset:
    """Batches of (float32 images (b, h, w, 1) in [0, 255], int32 labels).

    Only indices live in the dataset; each batch is read from the memmap when needed, so memory
    stays at a few batches whatever the data's size.
    """
    count = len(labels)
    labels = np.asarray(labels, dtype=np.int32)

    def fetch(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        order = np.sort(indices)  # sequential reads from the memmap
        return images[order].astype(np.float32)[..., None], labels[order]

    dataset = tf.data.Dataset.from_tensor_slices(np.arange(count, dtype=np.int64))
    if shuffle:
        dataset = dataset.shuffle(count, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    size = images.shape[1:]

    def load(indices: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        batch, batch_labels = tf.numpy_function(fetch, [indices], [tf.float32, tf.int32])
        batch.set_shape((None, *size, 1))
        batch_labels.set_shape((None,))
        return batch, batch_labels

    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    if augment is not None:
        dataset = dataset.map(
            lambda x, y: (augment(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE
        )
    return dataset.prefetch(tf.data.AUTOTUNE)
