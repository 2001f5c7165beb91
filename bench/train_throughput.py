"""Training throughput per architecture: images per second of `model.fit` steps on this machine.

    python -m bench.train_throughput --size 400 --batch 8 --steps 4

Each network is compiled as `xray train` compiles it (AdamW, sparse cross-entropy on logits)
and fed batches of (size, size, 1) images through the same augmentation; the first step (graph
tracing) is timed apart and left out of the rate. Prints a Markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import tensorflow as tf

from bench.report import publish
from training.architectures import build_model
from training.augment import build_augmenter
from training.config import ARCHITECTURES, AugmentConfig
from training.flops import count_flops, count_params

logger = logging.getLogger("bench.train_throughput")


def measure(arch: str, size: int, batch: int, steps: int) -> dict[str, float | int | str]:
    """Time `steps` training steps of `arch` at `size` with batches of `batch`."""
    keras.utils.set_random_seed(0)
    model = build_model(arch, size).model
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    augment = build_augmenter(AugmentConfig(), seed=0)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch * (steps + 1), size, size, 1)).astype(np.float32)
    labels = rng.integers(0, 3, batch * (steps + 1)).astype(np.int32)
    dataset = (
        tf.data.Dataset.from_tensor_slices((images, labels))
        .batch(batch)
        .map(lambda x, y: (augment(x, training=True), y))
        .prefetch(2)
    )
    iterator = iter(dataset)
    started = time.perf_counter()
    model.train_on_batch(*next(iterator))
    first = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(*next(iterator))
    elapsed = time.perf_counter() - started
    return {
        "arch": arch,
        "size": size,
        "batch": batch,
        "params_m": round(count_params(model) / 1e6, 2),
        "forward_gflops": round(count_flops(model) / 1e9, 2),
        "first_step_s": round(first, 1),
        "step_s": round(elapsed / steps, 2),
        "images_per_s": round(batch * steps / elapsed, 2),
    }


def main() -> None:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=400)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--arch", action="append", choices=ARCHITECTURES)
    parser.add_argument("--json", type=Path, default=Path("runs/bench/train_throughput.json"))
    args = parser.parse_args()
    rows = [measure(arch, args.size, args.batch, args.steps) for arch in args.arch or ARCHITECTURES]
    publish(
        f"Training throughput, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}",
        rows,
        args.json,
    )


if __name__ == "__main__":
    main()
