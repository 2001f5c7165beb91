"""`xray train`, `xray export` and `xray evaluate`.

This module imports no TensorFlow: the `xray` entry point registers these subcommands on every
install, and their handlers import the training stack only when run, with a clear message when
the `training` extra is missing.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from training.architectures import ARCHITECTURES
from training.config import SplitConfig, TrainConfig
from training.precision import PRECISIONS

logger = logging.getLogger("training.cli")


def _prepare(args: argparse.Namespace) -> None:
    """Log, load the training stack (or exit with what to install), resolve `--models-dir`'s default."""
    from service.core.logging import configure_logging
    from training.runtime import load_training_stack

    configure_logging(getattr(args, "log_level", None) or "INFO")
    load_training_stack()
    if args.models_dir is None:  # beside the run, never over the bundled, git-tracked models/
        args.models_dir = args.runs / "models"


def _configs(args: argparse.Namespace) -> list[TrainConfig]:
    recipes: dict[str, dict[str, Any]] = {}
    if args.config:
        recipes = json.loads(Path(args.config).read_text())
    flags = {
        key: value
        for key, value in {
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "image_size": args.image_size,
            "learning_rate": args.learning_rate,
            "weights": args.weights,
            "seed": args.seed,
            "steps_per_epoch": args.steps_per_epoch,
            "patience": args.patience,
            "precision": args.precision,
            "init_weights": args.init_weights,
            "time_budget_minutes": args.time_budget_minutes,
        }.items()
        if value is not None
    }
    # Recipe file first, command-line flags on top.
    return [
        TrainConfig(arch=arch, **{**recipes.get(arch, {}), **_fitted(arch, flags)})
        for arch in args.arch or ARCHITECTURES
    ]


def _fitted(arch: str, flags: dict[str, Any]) -> dict[str, Any]:
    """The flags for one network: `--image-size` (given for all) raised to its smallest input.

    A smoke run's `--image-size 32` then trains InceptionResNetV2 at 75, the least it accepts,
    and says so; a recipe asking one network for less is refused by `TrainConfig`.
    """
    size = flags.get("image_size")
    smallest = ARCHITECTURES[arch].min_size
    if size is None or size >= smallest:
        return flags
    logger.warning("--image-size %d is below %s's smallest input: it trains at %d", size, arch, smallest)
    return {**flags, "image_size": smallest}


def _non_chest_dicoms(args: argparse.Namespace) -> Path | None:
    folder: Path = args.non_chest_dicoms or args.data.resolve().parent / "dicom"
    return folder if folder.is_dir() else None


def _split_config(args: argparse.Namespace) -> SplitConfig:
    return SplitConfig(val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.split_seed)


def _train(args: argparse.Namespace) -> int:
    _prepare(args)
    from training.model_card import write_model_card
    from training.train import TrainingDivergedError, train
    from training.workflow import (
        choose_ensembles,
        evaluate_models,
        export_and_calibrate,
        fit_input_check_step,
        in_fresh_process,
        prepare_split,
    )

    configs = _configs(args)
    split = prepare_split(args.data, args.runs, _split_config(args))
    cache = args.cache or args.runs / "cache"
    for config in configs:
        run_dir = args.runs / config.arch
        try:
            result = in_fresh_process(
                train, config, split.train, split.val, run_dir, cache, resume=args.resume
            )
        except TrainingDivergedError as error:
            logger.error("%s Nothing was exported.", error)
            return 1
        logger.info(
            "%s: best validation macro-F1 %.4f after %d epoch(s), %.1f images/s",
            config.arch,
            result.best_val_macro_f1,
            result.epochs_run,
            result.images_per_second,
        )
        if not args.no_export:
            in_fresh_process(
                export_and_calibrate, run_dir, args.models_dir, split, cache, version=args.version
            )
    if not args.no_export:
        fit_input_check_step(args.models_dir, split, cache, dicom_dir=_non_chest_dicoms(args))
    if not args.no_export and not args.no_evaluate:
        choose_ensembles(args.models_dir, split.val)
        evaluate_models(
            args.models_dir, split.test, args.runs / "report", runs_dir=args.runs, cache_dir=cache
        )
        write_model_card(args.models_dir, args.runs / "report")
    return 0


def _export(args: argparse.Namespace) -> int:
    _prepare(args)
    from training.workflow import export_and_calibrate, fit_input_check_step, prepare_split

    split = prepare_split(args.data, args.runs, _split_config(args))
    cache = args.cache or args.runs / "cache"
    export_and_calibrate(
        args.run, args.models_dir, split, cache, version=args.version, quantize=args.quantize
    )
    # A new graph invalidates the check's statistics for the whole folder: refit them all.
    fit_input_check_step(args.models_dir, split, cache, dicom_dir=_non_chest_dicoms(args))
    return 0


def _input_check(args: argparse.Namespace) -> int:
    _prepare(args)
    from training.workflow import fit_input_check_step, prepare_split

    split = prepare_split(args.data, args.runs, _split_config(args))
    fit_input_check_step(
        args.models_dir, split, args.cache or args.runs / "cache", dicom_dir=_non_chest_dicoms(args)
    )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    _prepare(args)
    from training.model_card import write_model_card
    from training.workflow import choose_ensembles, evaluate_models, prepare_split

    split = prepare_split(args.data, args.runs, _split_config(args))
    if args.choose_ensembles:
        choose_ensembles(args.models_dir, split.val)
    records = split.part(args.split)
    out = args.out or args.runs / f"report-{args.split}"
    evaluate_models(
        args.models_dir,
        records,
        out,
        split_name=args.split,
        update_manifest=not args.no_update_manifest,
        runs_dir=args.runs,
        cache_dir=args.cache or args.runs / "cache",
    )
    if args.baseline_models:
        # The bundle being replaced, on the same images, for the card's before/after table.
        evaluate_models(
            args.baseline_models, records, out / "baseline", split_name=args.split, update_manifest=False
        )
    if args.split == "test" and not args.no_update_manifest:
        # The card describes test-split metrics only; a validation report must not overwrite it.
        write_model_card(args.models_dir, out)
    return 0


def _teacher_targets(args: argparse.Namespace) -> int:
    _prepare(args)
    from training.workflow import prepare_split, write_teacher_targets

    split = prepare_split(args.data, args.runs, _split_config(args))
    out = args.out or args.runs / f"teacher-{args.predictor}.csv"
    write_teacher_targets(args.models_dir, split.train, args.data, out, predictor=args.predictor)
    return 0


def _common(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--data", type=Path, required=True, help="folder with labels.csv, or class folders")
    sub.add_argument(
        "--runs", type=Path, default=Path("runs"), help="run folder (split, checkpoints, reports)"
    )
    sub.add_argument(
        "--models-dir",
        type=Path,
        help="where ONNX files and manifest go (default: RUNS/models; serve it with "
        "`xray serve --models-dir RUNS/models`)",
    )
    sub.add_argument("--cache", type=Path, help="decoded-image cache (default: RUNS/cache)")
    sub.add_argument("--val-fraction", type=float, default=0.15)
    sub.add_argument("--test-fraction", type=float, default=0.15)
    sub.add_argument("--split-seed", type=int, default=42)
    sub.add_argument(
        "--non-chest-dicoms",
        type=Path,
        help="a folder of DICOM radiographs; those not of the chest test the input check "
        "(default: the `dicom` folder beside DATA, when there is one)",
    )


def register(commands: Any) -> None:
    """Add the training subcommands to the `xray` parser's subparsers."""
    train = commands.add_parser("train", help="train, export, calibrate and evaluate the networks")
    _common(train)
    train.add_argument(
        "--arch", action="append", choices=list(ARCHITECTURES), help="repeatable; default: all of them"
    )
    train.add_argument("--config", help="JSON file: architecture → TrainConfig fields")
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--image-size", type=int)
    train.add_argument("--learning-rate", type=float)
    train.add_argument("--weights", help="imagenet, a local weights file, or none")
    train.add_argument("--seed", type=int)
    train.add_argument(
        "--init-weights", help="a .keras file of the same network to start from (anneal, fine-tune)"
    )
    train.add_argument("--steps-per-epoch", type=int)
    train.add_argument("--patience", type=int)
    train.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="auto (the recipe's default): bfloat16 where the CPU or GPU computes it natively, else float32",
    )
    train.add_argument(
        "--time-budget-minutes",
        type=float,
        help="training wall-clock budget per network over all resumed segments; the schedule ends with it",
    )
    train.add_argument("--resume", action="store_true", help="continue each run from its last epoch")
    train.add_argument("--version", help="model version written to the manifest (default: a timestamp)")
    train.add_argument("--no-export", action="store_true", help="only train")
    train.add_argument("--no-evaluate", action="store_true", help="skip ensemble choice and test evaluation")
    train.set_defaults(handler=_train)

    export = commands.add_parser("export", help="export a run to ONNX with its manifest entry")
    _common(export)
    export.add_argument("--run", type=Path, required=True, help="the run folder, e.g. runs/scratch")
    export.add_argument("--version", help="model version (default: a timestamp)")
    export.add_argument(
        "--quantize",
        choices=("none", "int8"),
        help="serve an onnxruntime static INT8 copy calibrated on training images (default: the recipe's)",
    )
    export.set_defaults(handler=_export)

    evaluate = commands.add_parser("evaluate", help="evaluate the exported models and ensembles")
    _common(evaluate)
    evaluate.add_argument("--split", choices=("train", "val", "test"), default="test")
    evaluate.add_argument("--out", type=Path, help="report folder (default: RUNS/report-SPLIT)")
    evaluate.add_argument("--choose-ensembles", action="store_true", help="first choose them on validation")
    evaluate.add_argument("--no-update-manifest", action="store_true")
    evaluate.add_argument(
        "--baseline-models",
        type=Path,
        help="also evaluate this (older) bundle on the same images, for the card",
    )
    evaluate.set_defaults(handler=_evaluate)

    check = commands.add_parser(
        "fit-input-check",
        help="fit the input check of a models folder (adds each graph's features output)",
    )
    _common(check)
    check.set_defaults(handler=_input_check)

    teacher = commands.add_parser(
        "teacher-targets",
        help="write a model's or an ensemble's answers on the training split, to distil from "
        '(a recipe\'s "distill": {"targets": FILE})',
    )
    _common(teacher)
    teacher.add_argument(
        "--predictor", default="classic", help="a model's name or an ensemble's (default: classic)"
    )
    teacher.add_argument("--out", type=Path, help="the CSV to write (default: RUNS/teacher-PREDICTOR.csv)")
    teacher.set_defaults(handler=_teacher_targets)
