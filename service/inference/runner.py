"""Running the models of one batch side by side on a few threads, longest work first.

One small network at batch 1 cannot keep two cores busy (onnxruntime's intra-op threads wait on
each other between layers), so the service runs the models side by side, each session on one
core's worth of threads. Giving each model a thread of its own is not enough under load: on two
cores the three models' work is lopsided (IRV2 and EfficientNetV2 take ~85 % of it), and one core
idles while the other finishes the long models. So the work is cut into tasks, each model's
batch split into up to `workers` chunks once it is large enough, and the tasks go to `workers`
threads longest first (greedy longest-processing-time scheduling), with each model's time per
image learnt from its own recent runs. Measured on two cores with the bundled models: a batch of
8 took 144 ms with a thread per model and 136 ms this way; batch 16, 280 ms against 263 ms.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from service.core.concurrency import Pool
from xray.contract.model import GraphOutputs, OnnxModel

#: Weight of the newest run in each model's moving average of seconds per image.
_EWMA_ALPHA = 0.2


@dataclass(frozen=True)
class ModelRun:
    """One model's outputs for a batch and the seconds its runs took."""

    outputs: GraphOutputs
    seconds: float


def forward(
    model: OnnxModel, batch: npt.NDArray[np.float32], *, with_maps: bool, with_features: bool = False
) -> ModelRun:
    """One run of `model`: logits, class maps and features as asked, and its seconds."""
    started = time.perf_counter()
    outputs = model.run_outputs(batch, with_maps=with_maps, with_features=with_features)
    return ModelRun(outputs, time.perf_counter() - started)


def _concatenate(parts: list[npt.NDArray[np.float32] | None]) -> npt.NDArray[np.float32] | None:
    present = [part for part in parts if part is not None]
    return np.concatenate(present) if present else None


class SideBySide:
    """Runs several models on one batch on a pool of threads, longest tasks first."""

    def __init__(self, models: Mapping[str, OnnxModel], pool: Pool, *, min_chunk: int = 4) -> None:
        """Run `models` on `pool` (the serving plan's model pool).

        Args:
            models: The sessions, by name.
            pool: The threads; with one intra-op thread per session, as many as the CPU quota.
            min_chunk: A model's batch is split only into chunks of at least this many images
                (smaller chunks lose more to per-run overhead than balancing wins back).
        """
        if min_chunk < 1:
            raise ValueError("min_chunk must be >= 1")
        self._models = dict(models)
        self._pool = pool
        self._workers = pool.threads
        self._min_chunk = min_chunk
        self._seconds_per_image = dict.fromkeys(self._models, 0.0)

    def observe(self, name: str, seconds: float, images: int) -> None:
        """Record that `name` took `seconds` for `images` images (also fed by the warm-up)."""
        per_image = seconds / max(1, images)
        previous = self._seconds_per_image[name]
        self._seconds_per_image[name] = (
            per_image if previous == 0.0 else (1 - _EWMA_ALPHA) * previous + _EWMA_ALPHA * per_image
        )

    def _task(
        self, name: str, batch: npt.NDArray[np.float32], with_maps: bool, with_features: bool
    ) -> ModelRun:
        run = forward(self._models[name], batch, with_maps=with_maps, with_features=with_features)
        self.observe(name, run.seconds, len(batch))
        return run

    def run(
        self,
        inputs: Mapping[str, npt.NDArray[np.float32]],
        maps_for: Collection[str] = (),
        features_for: Collection[str] = (),
    ) -> dict[str, ModelRun]:
        """Run every model on its input tensor (all of one batch size).

        Args:
            inputs: Model name → its input tensor for the batch.
            maps_for: Models whose class maps are wanted too.
            features_for: Models whose pooled features are wanted too.

        Returns:
            Per model: its outputs for the whole batch and the seconds its runs took in all.
        """
        size = len(next(iter(inputs.values())))
        parts = max(1, min(self._workers, size // self._min_chunk))
        tasks = [
            (name, index, chunk)
            for name, batch in inputs.items()
            for index, chunk in enumerate(np.array_split(batch, parts))
        ]
        tasks.sort(key=lambda task: self._seconds_per_image[task[0]] * len(task[2]), reverse=True)
        futures: dict[tuple[str, int], Future[ModelRun]] = {
            (name, index): self._pool.submit(self._task, name, chunk, name in maps_for, name in features_for)
            for name, index, chunk in tasks
        }
        runs: dict[str, ModelRun] = {}
        for name in inputs:
            pieces = [futures[(name, index)].result() for index in range(parts)]
            outputs = GraphOutputs(
                np.concatenate([piece.outputs.logits for piece in pieces]),
                _concatenate([piece.outputs.maps for piece in pieces]),
                _concatenate([piece.outputs.features for piece in pieces]),
            )
            runs[name] = ModelRun(outputs, sum(piece.seconds for piece in pieces))
        return runs

    def close(self) -> None:
        """Stop the threads after the running tasks end."""
        self._pool.shutdown(wait=True)
