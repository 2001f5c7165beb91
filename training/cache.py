"""Decode each image once into a uint8 memmap, so epochs never decode again.

The cache holds the output of the service's own `preprocess` (decode → grayscale → resize), so
training sees exactly what the service will feed the model. A cache file is keyed by the image
size and by each file's path, size and modification time: a changed file rebuilds the cache.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from training.data import Record
from xray.contract.preprocessing import preprocess

logger = logging.getLogger(__name__)

# Bump when the preprocessing changes in a way that alters pixels.
_CACHE_VERSION = "1"


def cache_key(records: Sequence[Record], size: int) -> str:
    """A digest of the files (path, size, mtime) and the image size."""
    digest = hashlib.sha256(f"v{_CACHE_VERSION}:{size}".encode())
    for record in records:
        stat = record.path.stat()
        digest.update(f"{record.path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def load_images(records: Sequence[Record], size: int, cache_dir: Path, *, workers: int = 2) -> np.memmap:
    """Return the preprocessed images of `records` as a read-only (N, size, size) uint8 memmap.

    Builds the cache on first use (decoding in `workers` threads: Pillow releases the GIL) and
    logs progress; later calls open it instantly.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"images-{size}-{cache_key(records, size)}.u8"
    shape = (len(records), size, size)
    if path.is_file() and path.stat().st_size == int(np.prod(shape)):
        return np.memmap(path, dtype=np.uint8, mode="r", shape=shape)

    partial = path.with_suffix(f".partial-{os.getpid()}")
    _build(records, size, partial, workers)
    partial.replace(path)  # atomic: a crashed build never leaves a half-written cache behind
    return np.memmap(path, dtype=np.uint8, mode="r", shape=shape)


def _build(records: Sequence[Record], size: int, path: Path, workers: int) -> None:
    target = np.memmap(path, dtype=np.uint8, mode="w+", shape=(len(records), size, size))
    started = time.perf_counter()

    def decode(index: int) -> None:
        target[index] = preprocess(records[index].path.read_bytes(), size, size)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for done, _ in enumerate(pool.map(decode, range(len(records))), start=1):
            if done % 250 == 0 or done == len(records):
                elapsed = time.perf_counter() - started
                logger.info("cached %d/%d images at %dx%d (%.0fs)", done, len(records), size, size, elapsed)
    target.flush()
