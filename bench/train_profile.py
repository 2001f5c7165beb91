r"""Where a training step's time goes, per TensorFlow op type, in each precision.

    python -m bench.train_profile --arch inception_resnet_v2 --size 224 --batch 16 --steps 3 \\
        --precision float32 --precision auto

`bench.train_throughput` says how fast a precision trains; this says why. Each precision's model
(built and compiled as `xray train` builds it, on the training pipeline's batch) runs a few warm
steps, then `--steps` steps under TensorFlow's profiler. The table gives each op type's self time
per step (summed over the executor's threads), and its speed-up against the first precision. By
default ops run one at a time (`--inter-op-threads 1`), so each op's time is its own; training
runs up to two side by side here, and then each op's time includes the cores it shares.

Three summary rows split the total: the oneDNN kernels (`_Mkl*`: convolutions, batch norm,
pooling, which bfloat16 speeds up on CPUs that compute it natively) and the other ops
(element-wise gradients, casts, the optimizer: TensorFlow's Eigen kernels, which bfloat16 does
not). The last line is one JSON object with all rows.

TensorFlow backend only: the op names are TensorFlow's.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from bench.report import publish
from bench.train_throughput import random_batches, training_model
from training.architectures import ARCHITECTURES
from training.architectures.baselines import BASELINES
from training.precision import PRECISIONS

#: Op types whose kernels are oneDNN's (TensorFlow's layout pass renames them `_Mkl…`).
ONEDNN_PREFIX = "_Mkl"
#: Profiler events on an executor thread that are bookkeeping, not ops.
_NOT_OPS = frozenset({
    "Process", "Record", "StartRegion", "StopRegion", "MemoryAllocation", "MemoryDeallocation",
    "ExecutorDoneCallback",
})  # fmt: skip


def op_self_times(xspace: bytes, steps: int) -> dict[str, float]:
    """Milliseconds per step of each op type's self time, from a serialised profiler `XSpace`.

    Events on TensorFlow's executor threads (`tf_Compute…`) nest (a function call holds its ops);
    each op type is charged the time of its events minus that of the events inside them.
    """
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    space.ParseFromString(xspace)
    totals: collections.Counter[str] = collections.Counter()
    for plane in space.planes:
        if plane.name != "/host:CPU":
            continue
        names = plane.event_metadata
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            events = sorted(
                (
                    event
                    for event in line.events
                    if names[event.metadata_id].name.split("::")[-1] not in _NOT_OPS
                ),
                key=lambda event: (event.offset_ps, -event.duration_ps),
            )
            own = [event.duration_ps for event in events]
            open_events: list[tuple[int, int]] = []  # (end, index) of the events that contain this one
            for index, event in enumerate(events):
                while open_events and open_events[-1][0] <= event.offset_ps:
                    open_events.pop()
                if open_events:
                    own[open_events[-1][1]] -= event.duration_ps
                open_events.append((event.offset_ps + event.duration_ps, index))
            for event, picoseconds in zip(events, own, strict=True):
                op_type = names[event.metadata_id].name.rsplit(":", 1)[-1]
                totals[op_type] += picoseconds / 1e9 / steps
    return dict(totals)


def profile(
    arch: str, size: int, batch: int, steps: int, precision: str, warmup: int = 2
) -> dict[str, float]:
    """The op types' self times (ms per step) of `steps` profiled training steps in `precision`."""
    import tensorflow as tf

    _, model = training_model(arch, size, precision)
    arrays = next(random_batches(size, batch).stream())
    for _ in range(warmup):  # tracing and compilation, left out
        model.train_on_batch(*arrays)
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        try:
            for _ in range(steps):
                model.train_on_batch(*arrays)
        finally:
            tf.profiler.experimental.stop()
        (trace,) = Path(logdir).rglob("*.xplane.pb")
        return op_self_times(trace.read_bytes(), steps)


def table(precisions: list[str], times: list[dict[str, float]], top: int) -> list[dict[str, Any]]:
    """Rows of the `top` op types by the first precision's time, the rest folded, and the totals."""
    first = times[0]
    ranked = sorted(set().union(*times), key=lambda op: -first.get(op, 0.0))
    shown, folded = ranked[:top], ranked[top:]
    groups: list[tuple[str, list[str]]] = [(op, [op]) for op in shown]
    groups += [(f"{len(folded)} other op types", folded)] if folded else []
    groups += [
        ("oneDNN kernels (_Mkl*)", [op for op in ranked if op.startswith(ONEDNN_PREFIX)]),
        ("other ops", [op for op in ranked if not op.startswith(ONEDNN_PREFIX)]),
        ("all ops", ranked),
    ]
    rows = []
    for label, ops in groups:
        row: dict[str, Any] = {"op_type": label}
        sums = [sum(precision_times.get(op, 0.0) for op in ops) for precision_times in times]
        for precision, total in zip(precisions, sums, strict=True):
            row[f"{precision}_ms"] = round(total, 1)
        for precision, total in zip(precisions[1:], sums[1:], strict=True):
            row[f"{precision}_speedup"] = round(sums[0] / total, 2) if total > 0 else None
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    """Profile the precisions of one network and print the table and its JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="inception_resnet_v2", choices=(*ARCHITECTURES, *BASELINES))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3, help="profiled steps, after 2 untimed ones")
    parser.add_argument(
        "--precision", action="append", choices=PRECISIONS, help="repeatable; default float32 and auto"
    )
    parser.add_argument("--top", type=int, default=15, help="op types listed before the rest is folded")
    parser.add_argument(
        "--inter-op-threads",
        type=int,
        default=1,
        help="ops run side by side (default 1: one at a time, so an op's time is its own, not shared "
        "with one running beside it; 0: TensorFlow's default, as training runs)",
    )
    parser.add_argument("--json", type=Path, default=Path("runs/bench/train_profile.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import tensorflow as tf

    from training.precision import choose_precision

    if args.inter_op_threads != tf.config.threading.get_inter_op_parallelism_threads():
        try:
            tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)
        except RuntimeError:  # TensorFlow already started in this process
            parser.error("--inter-op-threads can only be set before TensorFlow starts")
    precisions = [choose_precision(p).precision for p in args.precision or ["float32", "auto"]]  # type: ignore[arg-type]
    if len(set(precisions)) < len(precisions):
        parser.error(f"the precisions resolve to {', '.join(precisions)}: each may be profiled once")
    times = [profile(args.arch, args.size, args.batch, args.steps, precision) for precision in precisions]
    rows = table(precisions, times, args.top)
    title = "Self time per training step (ms, summed over threads)"
    publish(f"{title}, {args.arch} {args.size} px, batch {args.batch}", rows, args.json)
    summary = {
        "arch": args.arch,
        "size": args.size,
        "batch": args.batch,
        "inter_op_threads": args.inter_op_threads,
        "precisions": precisions,
    }
    print(json.dumps({**summary, "rows": rows}))


if __name__ == "__main__":
    main()
