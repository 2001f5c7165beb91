r"""Training throughput: images per second of real training steps on this machine, per precision.

    python -m bench.train_throughput --arch scratch --size 224 --batch 16 --steps 8 --precision auto
    python -m bench.train_throughput --arch scratch --arch scratch_v1 --size 160 --size 224 \\
        --precision float32 --precision auto

Each step is what `xray train` runs: the network compiled as training compiles it (AdamW,
label-smoothed cross-entropy on float32 logits) under the precision's dtype policy, fed by the
training input pipeline (`TrainingBatches`: uint8 cache → augmentation → float32) in its worker
thread. The first steps (tracing, compilation) are timed apart and left out of the rate. Besides
the three networks, the baselines of `training.architectures.baselines` can be measured
(`scratch_v1`, the first `scratch`; `vgg`, a plain VGG-style stack).

One configuration runs in this process and prints its table, then, as the last line, one JSON
object (`arch`, `size`, `batch`, `precision` actually used, `img_per_s`, …). Several run one after
another, each in a fresh process (the dtype policy is process-wide), and end with one JSON object
holding all rows.

This machine's speed drifts by 10-20 % within minutes, more than the difference a change is
measured for. `--paired` times the precisions of each network and size in one process instead, a
step of each in turn on the same batch, and gives each row `vs_first`, its median step-by-step
speed relative to the first precision:

    python -m bench.train_throughput --arch inception_resnet_v2 --paired \\
        --precision float32 --precision auto --steps 16
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from bench.report import publish
from service.core.cpu import available_cpus
from training.architectures import ARCHITECTURES
from training.architectures.baselines import BASELINES
from training.config import AugmentConfig, TrainConfig
from training.precision import PRECISIONS

logger = logging.getLogger("bench.train_throughput")


def measure(arch: str, size: int, batch: int, steps: int, precision: str, warmup: int = 2) -> dict[str, Any]:
    """Time `steps` training steps of `arch` at `size` with batches of `batch` in `precision`."""
    return measure_paired(arch, size, batch, steps, [precision], warmup)[0]


def measure_paired(
    arch: str, size: int, batch: int, steps: int, precisions: list[str], warmup: int = 2
) -> list[dict[str, Any]]:
    """Time `arch` in each of `precisions` in this process, one step of each in turn.

    This machine's speed drifts by 10-20 % within minutes, so two precisions timed one after the
    other can differ by the drift alone. Here each model (one per precision, built under its dtype
    policy) trains on the same batch in turn, the order alternating from step to step, so the
    drift reaches all of them alike; each row's `vs_first` is the median of its step-by-step speed
    ratios to the first precision's model.
    """
    from training.flops import count_flops, count_params

    chosen, models = zip(*(training_model(arch, size, precision) for precision in precisions), strict=True)
    float_model = _network(arch, size)
    cpus = available_cpus()
    batches = random_batches(size, batch)
    stream = batches.stream()
    first = [0.0] * len(models)
    for _ in range(warmup):  # tracing and compilation, timed apart
        arrays = next(stream)
        for index, model in enumerate(models):
            started = time.perf_counter()
            model.train_on_batch(*arrays)
            first[index] += time.perf_counter() - started
    built_before = batches.build_seconds
    times: list[list[float]] = [[] for _ in models]
    for step in range(steps):
        arrays = next(stream)  # the same batch for every model
        order = range(len(models)) if step % 2 == 0 else reversed(range(len(models)))
        for index in order:
            started = time.perf_counter()
            models[index].train_on_batch(*arrays)
            times[index].append(time.perf_counter() - started)
    elapsed = sum(map(sum, times))
    pipeline_share = (batches.build_seconds - built_before) / (elapsed * cpus)
    described = {
        "params_m": round(count_params(float_model) / 1e6, 2),
        "forward_gflops": round(count_flops(float_model) / 1e9, 2),
    }
    return [
        {
            "arch": arch,
            "size": size,
            "batch": batch,
            "precision": precision,
            **described,
            "first_steps_s": round(first[index], 1),
            "step_s": round(sum(times[index]) / steps, 3),
            "img_per_s": round(batch * steps / sum(times[index]), 2),
            **({"vs_first": _median_ratio(times[0], times[index])} if len(models) > 1 else {}),
            # The pipeline's CPU time per step as a share of the CPU time a step has on this machine.
            "pipeline_cpu_share": round(pipeline_share, 4),
        }
        for index, precision in enumerate(chosen)
    ]


def training_model(arch: str, size: int, precision: str) -> tuple[str, Any]:
    """`arch` built under `precision`'s dtype policy and compiled as `xray train` compiles it.

    Returns the precision actually used and the model; the global dtype policy is left float32.
    """
    import keras

    from training.precision import choose_precision
    from training.train import _compile

    choice = choose_precision(precision)  # type: ignore[arg-type]
    keras.mixed_precision.set_global_policy(choice.policy)
    try:
        keras.utils.set_random_seed(0)
        model = _network(arch, size)
        _compile(model, TrainConfig(arch="scratch", label_smoothing=0.1))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return choice.precision, model


def random_batches(size: int, batch: int) -> Any:
    """The training input pipeline (`TrainingBatches`) over four batches of random uint8 images."""
    import numpy as np

    from training.pipeline import TrainingBatches

    rng = np.random.default_rng(0)
    count = batch * 4
    return TrainingBatches(
        rng.integers(0, 256, (count, size, size), dtype=np.uint8),
        rng.integers(0, 3, count),
        batch_size=batch,
        seed=0,
        augment=AugmentConfig(),
    )


def _median_ratio(reference: list[float], other: list[float]) -> float:
    """The median over steps of how much faster `other`'s step was than `reference`'s."""
    import statistics

    return round(statistics.median(a / b for a, b in zip(reference, other, strict=True)), 3)


def _network(arch: str, size: int) -> Any:
    """A network of the architecture table or of the baselines, built in the current dtype policy."""
    from training.architectures import build_model

    return BASELINES[arch](size, 3) if arch in BASELINES else build_model(arch, size).model


def _title() -> str:
    import keras

    return (
        f"Training throughput, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Keras {keras.__version__} ({keras.backend.backend()})"
    )


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print its table and JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", action="append", choices=(*ARCHITECTURES, *BASELINES))
    parser.add_argument("--size", type=int, action="append", help="repeatable; default 224")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=8, help="timed steps, after 2 untimed ones")
    parser.add_argument("--precision", action="append", choices=PRECISIONS, help="repeatable; default auto")
    parser.add_argument(
        "--paired",
        action="store_true",
        help="time the precisions of each network and size in one process, a step of each in turn "
        "(robust to the machine's drift; rows gain vs_first, the speed relative to the first precision)",
    )
    parser.add_argument("--json", type=Path, default=Path("runs/bench/train_throughput.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    configs = list(
        itertools.product(args.arch or ARCHITECTURES, args.size or [224], args.precision or ["auto"])
    )
    if args.paired:
        precisions = args.precision or ["float32", "auto"]
        rows = [
            row
            for arch, size in itertools.product(args.arch or ARCHITECTURES, args.size or [224])
            for row in measure_paired(arch, size, args.batch, args.steps, precisions)
        ]
    elif len(configs) == 1:
        arch, size, precision = configs[0]
        rows = [measure(arch, size, args.batch, args.steps, precision)]
    else:
        rows = []
        for arch, size, precision in configs:
            command = [
                sys.executable, "-m", "bench.train_throughput", "--arch", arch, "--size", str(size),
                "--batch", str(args.batch), "--steps", str(args.steps), "--precision", precision,
                "--json", str(args.json.with_suffix(f".{arch}-{size}-{precision}.json")),
            ]  # fmt: skip
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            rows.append(json.loads(output.strip().splitlines()[-1]))
    publish(_title(), rows, args.json)
    print(json.dumps(rows[0] if len(rows) == 1 else {"rows": rows}))


if __name__ == "__main__":
    main()
