"""Training batches from the decoded-image cache: shuffled, augmented, reproducible, prefetched.

Batch `step` of epoch `epoch` is a pure function of (seed, epoch, step): its images are the
epoch's seeded permutation, its augmentation draws from a generator seeded the same way. So a run
resumed at epoch k sees exactly what an uninterrupted run saw from epoch k on. Batches are built
in worker threads (Pillow and NumPy release the GIL) a few steps ahead of the model, and every
epoch has the same number of full batches, so no backend compiles a second step for a short one.
With soft targets (distillation) or mixup, the labels are class probabilities (b, classes) instead
of class indices.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from service.core.cpu import available_cpus
from training.augment import augment_batch, mix_batch
from training.config import AugmentConfig
from xray.contract.images import Equalization, equalize_batch

Batch = tuple[np.ndarray, np.ndarray, np.ndarray]


class TrainingBatches:
    """(float32 images (b, h, w, 1) in [0, 255], labels, float32 sample weights) per step.

    The labels are int32 class indices (b,), or float32 class probabilities (b, classes) when
    `targets` are given or the augmentation mixes images (`AugmentConfig.mixup`).

    Args:
        images: (n, h, w) uint8, a memmap or an array.
        labels: (n,) class indices.
        batch_size: Images per step; the last incomplete batch of an epoch is left out
            (a different few images each epoch).
        seed: The run's seed.
        augment: The augmentation, or None for plain batches.
        sample_weights: (n,) each image's loss weight (class weights); default: 1.
        workers: Threads building batches ahead of the model; default: one per usable CPU but
            one (the model's), at least 1 and at most 4.
        num_classes: The number of classes, for mixup's soft labels; default: the largest label + 1.
        targets: (n, classes) each image's class probabilities, served instead of its label
            (distillation); default: none.
        equalization: Applied to each image before augmentation (`TrainConfig.equalization`).
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        *,
        batch_size: int,
        seed: int,
        augment: AugmentConfig | None = None,
        sample_weights: np.ndarray | None = None,
        workers: int | None = None,
        num_classes: int | None = None,
        targets: np.ndarray | None = None,
        equalization: Equalization = "none",
    ) -> None:
        if len(images) != len(labels) or not len(labels):
            raise ValueError("images and labels must be non-empty and of one length")
        if sample_weights is not None and len(sample_weights) != len(labels):
            raise ValueError("sample_weights needs one weight per image")
        if targets is not None and (targets.ndim != 2 or len(targets) != len(labels)):
            raise ValueError("targets needs one row of class probabilities per image")
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int32)
        self.batch_size = min(batch_size, len(labels))
        self.seed = seed
        self.augment = augment
        self.equalization = equalization
        self.num_classes = num_classes if num_classes is not None else int(self.labels.max()) + 1
        self.targets = None if targets is None else np.asarray(targets, dtype=np.float32)
        self.workers = max(1, workers if workers is not None else min(4, available_cpus() - 1))
        self.sample_weights = (
            np.ones(len(self.labels), np.float32)
            if sample_weights is None
            else np.asarray(sample_weights, dtype=np.float32)
        )
        self._lock = threading.Lock()
        self.build_seconds = 0.0  # CPU time spent building batches, for the pipeline's share

    @property
    def steps_per_epoch(self) -> int:
        """Full batches per epoch."""
        return len(self.labels) // self.batch_size

    def indices(self, epoch: int, step: int) -> np.ndarray:
        """The images of batch `step` of `epoch`, in reading order."""
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.labels))
        return np.sort(order[step * self.batch_size : (step + 1) * self.batch_size])

    def batch(self, epoch: int, step: int) -> Batch:
        """Batch `step` of `epoch`."""
        started = time.thread_time()
        picks = self.indices(epoch, step)
        images = equalize_batch(np.asarray(self.images[picks]), self.equalization)
        if self.augment is not None:
            images = augment_batch(images, self.augment, np.random.default_rng([self.seed, epoch, step, 1]))
        labels = self.labels[picks] if self.targets is None else self.targets[picks]
        result: Batch = images.astype(np.float32)[..., None], labels, self.sample_weights[picks]
        if self.augment is not None and self.augment.mixup > 0:
            soft = labels if self.targets is not None else np.eye(self.num_classes, dtype=np.float32)[labels]
            rng = np.random.default_rng([self.seed, epoch, step, 2])
            result = mix_batch(result[0], soft, result[2], self.augment.mixup, rng)
        with self._lock:
            self.build_seconds += time.thread_time() - started
        return result

    def stream(self, first_epoch: int = 0) -> Iterator[Batch]:
        """Every batch from `first_epoch` on, endlessly, built `workers` steps ahead."""
        steps = self.steps_per_epoch
        positions = ((epoch, step) for epoch in range(first_epoch, 1 << 30) for step in range(steps))
        with ThreadPoolExecutor(self.workers, thread_name_prefix="batches") as pool:
            pending: collections.deque[Future[Batch]] = collections.deque()
            for _ in range(self.workers + 1):
                pending.append(pool.submit(self.batch, *next(positions)))
            while True:
                ready = pending.popleft().result()
                pending.append(pool.submit(self.batch, *next(positions)))
                yield ready
