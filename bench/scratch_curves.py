"""`scratch` against the first `scratch` and a VGG-style stack: validation macro-F1 at equal wall-clock time.

    python -m bench.scratch_curves --data ../shared/data/cxr --runs ~/xray-runs/curves --minutes 25

Each network trains with the package's own loop (`fit_network`: same split, augmentation, class
weights and recipe) for the same wall-clock budget, with its learning-rate schedule planned to
end with the budget. The three run at the same time, one thread each, so that they share the
machine's load alike. `scratch` trains in the precision `auto` picks; the first `scratch` in
float32 as it used to; the VGG stack in `auto` too. Prints, per network, the best validation
macro-F1 reached by each mark of elapsed minutes, its parameters, FLOPs and training images per
second, and writes the curves as JSON and PNG.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.report import publish
from training.model_card import plot_validation_curves
from training.workflow import training_curve

logger = logging.getLogger("bench.scratch_curves")
#: Network → precision it trains in.
CONTENDERS = {"scratch": "auto", "scratch_v1": "float32", "vgg": "auto"}


def train_one(name: str, data_dir: Path, runs: Path, minutes: float, size: int) -> None:
    """Train one contender (in this process) and leave its run folder under `runs/name`."""
    from training.architectures.baselines import BASELINES
    from training.architectures.common import BuiltModel
    from training.config import SplitConfig, TrainConfig
    from training.train import train
    from training.workflow import prepare_split

    split = prepare_split(data_dir, runs, SplitConfig())
    config = TrainConfig(
        arch="scratch",
        image_size=size,
        batch_size=16,
        epochs=200,
        learning_rate=0.002,
        weight_decay=0.05,
        warmup_epochs=1,
        dropout=0.2,
        patience=200,
        label_smoothing=0.1,
        precision=CONTENDERS[name],  # type: ignore[arg-type]
        time_budget_minutes=minutes,
    )
    build = None
    if name in BASELINES:

        def build(config: TrainConfig) -> BuiltModel:
            return BuiltModel(BASELINES[name](config.size, 3), "", ())

    train(config, split.train, split.val, runs / name, runs / "cache", build=build)


def _best_by(curve: list[list[float]], seconds: float) -> float | None:
    scores = [score for elapsed, score in curve if elapsed <= seconds]
    return round(max(scores), 4) if scores else None


def main(argv: list[str] | None = None) -> None:
    """Train the contenders side by side (or one, with `--only`) and report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--runs", type=Path, required=True, help="a folder outside the work tree")
    parser.add_argument("--minutes", type=float, default=25.0)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--only", choices=tuple(CONTENDERS), help=argparse.SUPPRESS)
    parser.add_argument("--report-only", action="store_true", help="report the runs already in --runs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.only:
        train_one(args.only, args.data, args.runs, args.minutes, args.size)
        return
    if not args.report_only:
        args.runs.mkdir(parents=True, exist_ok=True)
        environment = os.environ | {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
        children = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.scratch_curves",
                    "--data",
                    str(args.data),
                    "--runs",
                    str(args.runs),
                    "--minutes",
                    str(args.minutes),
                    "--size",
                    str(args.size),
                    "--only",
                    name,
                ],
                env=environment,
                stdout=(args.runs / f"{name}.log").open("w"),
                stderr=subprocess.STDOUT,
            )
            for name in CONTENDERS
        ]
        for child in children:
            child.wait()
    curves = {name: training_curve(args.runs / name) for name in CONTENDERS}
    marks = [args.minutes * fraction for fraction in (0.2, 0.4, 0.6, 0.8, 1.0)]
    rows: list[dict[str, Any]] = []
    for name, curve in curves.items():
        summary = json.loads((args.runs / name / "summary.json").read_text())
        row: dict[str, Any] = {
            "network": name,
            "precision": summary["precision"],
            "epochs": summary["epochs_run"],
            "train_img_per_s": summary["train_images_per_second"],
        }
        row |= {f"best_f1_by_{mark:g}min": _best_by(curve, mark * 60) for mark in marks}
        rows.append(row)
    publish(f"Validation macro-F1 at equal wall-clock time, {args.size}², {args.minutes:g} min each", rows,
            args.runs / "curves.json")  # fmt: skip
    plot_validation_curves(
        {f"{name} ({CONTENDERS[name]})": [(s, f1) for s, f1 in curve] for name, curve in curves.items()},
        args.runs / "curves.png",
        xlabel="training wall-clock minutes (one thread each, side by side)",
        hours=False,
    )


if __name__ == "__main__":
    main()
