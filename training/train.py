"""Training one network: class weights, schedule, macro-F1 checkpointing, resume, distribution.

A run folder holds everything about one network's training:

    config.json      the TrainConfig
    best.keras       the weights with the best validation macro-F1 so far
    last.keras       the latest epoch, with optimizer state, for `--resume`
    state.json       epoch, best macro-F1, epochs without improvement
    history.csv      per-epoch loss, accuracy, learning rate and validation macro-F1
    summary.json     what the export writes into the manifest's `training` record
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from sklearn.metrics import f1_score

from training.architectures import build_model
from training.augment import build_augmenter
from training.cache import load_images
from training.config import CLASSES, TrainConfig
from training.data import Record, class_weights, labels_of
from training.pipeline import make_dataset

logger = logging.getLogger(__name__)


def make_strategy() -> tf.distribute.Strategy:
    """The distribution strategy for this machine.

    Several workers (TF_CONFIG set) → MultiWorkerMirroredStrategy; several GPUs →
    MirroredStrategy; otherwise the default strategy. The model and optimizer are created under
    its scope, so the same code trains on one CPU or many GPUs.
    """
    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


class MacroF1Checkpoint(keras.callbacks.Callback):
    """Validation macro-F1 each epoch: logged, best model saved, early stopping, resumable state."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        run_dir: Path,
        *,
        patience: int,
        batch_size: int,
        best: float = -1.0,
        waited: int = 0,
    ) -> None:
        super().__init__()
        self.images = images
        self.labels = labels
        self.run_dir = run_dir
        self.patience = patience
        self.batch_size = batch_size
        self.best = best
        self.waited = waited

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Score the validation split, keep the best weights, stop after `patience` bad epochs."""
        logs = logs if logs is not None else {}
        logits = predict_logits(self.model, self.images, self.batch_size)
        score = float(f1_score(self.labels, logits.argmax(axis=1), average="macro"))
        logs["val_macro_f1"] = score
        optimizer = self.model.optimizer
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        if score > self.best:
            self.best, self.waited = score, 0
            self.model.save(self.run_dir / "best.keras")
        else:
            self.waited += 1
        self.model.save(self.run_dir / "last.keras")
        state = {"epoch": epoch, "best_val_macro_f1": self.best, "waited": self.waited}
        (self.run_dir / "state.json").write_text(json.dumps(state))
        logger.info("epoch %d: val macro-F1 %.4f (best %.4f)", epoch + 1, score, self.best)
        if self.waited >= self.patience:
            logger.info("no better validation macro-F1 for %d epochs: stopping", self.patience)
            self.model.stop_training = True


def predict_logits(model: keras.Model, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Logits of a uint8 (n, h, w) image array, in batches."""
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].astype(np.float32)[..., None]
        outputs.append(keras.ops.convert_to_numpy(model(batch, training=False)))
    return np.concatenate(outputs).astype(np.float32)


def _schedule(
    config: TrainConfig, steps_per_epoch: int, epochs: int, scale: float
) -> keras.optimizers.schedules.LearningRateSchedule:
    total = max(2, epochs * steps_per_epoch)
    warmup = min(int(config.warmup_epochs * steps_per_epoch), total - 1)
    peak = config.learning_rate * scale
    # Linear warm-up then cosine decay to 1 % of the peak.
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=peak / 10 if warmup else peak,
        decay_steps=total - warmup,
        alpha=0.01,
        warmup_target=peak if warmup else None,
        warmup_steps=warmup,
    )


def _compile(
    model: keras.Model, config: TrainConfig, steps_per_epoch: int, epochs: int, scale: float
) -> None:
    optimizer = keras.optimizers.AdamW(
        learning_rate=_schedule(config, steps_per_epoch, epochs, scale),
        weight_decay=config.weight_decay,
        clipnorm=1.0,
    )
    loss: keras.losses.Loss
    if config.label_smoothing:
        loss = _SmoothedSparseCrossentropy(config.label_smoothing, len(CLASSES))
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])


class _SmoothedSparseCrossentropy(keras.losses.Loss):
    def __init__(self, smoothing: float, num_classes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.smoothing = smoothing
        self.num_classes = num_classes

    def call(self, y_true: Any, y_pred: Any) -> Any:
        one_hot = keras.ops.one_hot(
            keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32"), self.num_classes
        )
        return keras.losses.categorical_crossentropy(
            one_hot, y_pred, from_logits=True, label_smoothing=self.smoothing
        )

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "smoothing": self.smoothing, "num_classes": self.num_classes}


def _set_backbone_trainable(model: keras.Model, names: tuple[str, ...], trainable: bool) -> None:
    for name in names:
        layer = model.get_layer(name)
        # Batch-norm statistics of a pretrained backbone stay frozen while fine-tuning.
        layer.trainable = trainable and not isinstance(layer, keras.layers.BatchNormalization)


@dataclass(frozen=True)
class TrainResult:
    """What a run produced."""

    run_dir: Path
    best_val_macro_f1: float
    epochs_run: int
    seconds: float
    images_per_second: float


def train(
    config: TrainConfig,
    train_records: list[Record],
    val_records: list[Record],
    run_dir: Path,
    cache_dir: Path,
    *,
    resume: bool = False,
    strategy: tf.distribute.Strategy | None = None,
) -> TrainResult:
    """Train one network and keep its best weights in `run_dir/best.keras`.

    Args:
        config: The recipe.
        train_records: Training images.
        val_records: Validation images (model selection and early stopping).
        run_dir: The run folder (created).
        cache_dir: Where decoded images are cached.
        resume: Continue from `run_dir/last.keras` and `state.json`.
        strategy: The distribution strategy; default: `make_strategy()` for this machine.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    # Free what earlier networks of this process built (clear_session also resets the dtype
    # policy, so it comes before the policy is set).
    keras.backend.clear_session()
    keras.utils.set_random_seed(config.seed)
    keras.mixed_precision.set_global_policy("mixed_float16" if config.mixed_precision else "float32")
    (run_dir / "config.json").write_text(config.model_dump_json(indent=2))

    train_images = load_images(train_records, config.size, cache_dir)
    val_images = load_images(val_records, config.size, cache_dir)
    train_labels, val_labels = labels_of(train_records), labels_of(val_records)
    dataset = make_dataset(
        train_images,
        train_labels,
        batch_size=config.batch_size,
        shuffle=True,
        seed=config.seed,
        augment=build_augmenter(config.augment, config.seed),
    )
    steps = math.ceil(len(train_labels) / config.batch_size)
    if config.steps_per_epoch:
        steps = min(steps, config.steps_per_epoch)
        dataset = dataset.repeat()
    weights = class_weights(train_labels.tolist(), len(CLASSES)) if config.class_weights else None

    state = {"epoch": -1, "best_val_macro_f1": -1.0, "waited": 0}
    strategy = strategy or make_strategy()
    with strategy.scope():
        built = build_model(
            config.arch,
            config.size,
            len(CLASSES),
            dropout=config.dropout,
            weights=config.weights,
            bn_momentum=config.bn_momentum,
        )
        model = built.model
        if resume and (run_dir / "last.keras").is_file():
            state = json.loads((run_dir / "state.json").read_text())
            model = keras.models.load_model(run_dir / "last.keras", custom_objects=CUSTOM_OBJECTS)
            logger.info("resuming %s after epoch %d", config.arch, state["epoch"] + 1)
    checkpoint = MacroF1Checkpoint(
        val_images,
        val_labels,
        run_dir,
        patience=config.patience,
        batch_size=max(config.batch_size, 32),
        best=state["best_val_macro_f1"],
        waited=state["waited"],
    )
    callbacks = [
        checkpoint,  # before the logger, so that val_macro_f1 reaches history.csv
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=resume),
        keras.callbacks.TerminateOnNaN(),
    ]
    verbose = 1 if sys.stdout.isatty() else 2
    started = time.perf_counter()
    first_epoch = int(state["epoch"]) + 1
    resumed = first_epoch > 0 and model.optimizer is not None
    # A pretrained backbone first stays frozen while the new head settles, then is fine-tuned
    # at a lower learning rate. Phases: (first epoch, end epoch, learning-rate factor, backbone trainable).
    frozen = config.frozen_epochs if config.pretrained and built.backbone_layers else 0
    phases = [
        (0, frozen, 1.0, False),
        (frozen, config.epochs, config.fine_tune_learning_rate_factor if frozen else 1.0, True),
    ]
    epochs_run = 0
    for phase_start, stop, scale, trainable in phases:
        start = max(phase_start, first_epoch)
        if start >= stop or getattr(model, "stop_training", False):
            continue
        # A model resumed inside a phase keeps its saved flags and optimizer state.
        if not (resumed and phase_start < first_epoch):
            if built.backbone_layers:
                _set_backbone_trainable(model, built.backbone_layers, trainable)
            with strategy.scope():
                _compile(model, config, steps, stop - start, scale)
        history = model.fit(
            dataset,
            epochs=stop,
            initial_epoch=start,
            steps_per_epoch=steps,
            class_weight=weights,
            callbacks=callbacks,
            verbose=verbose,
            shuffle=False,  # the dataset shuffles itself, every epoch
        )
        epochs_run += len(history.epoch)
    seconds = time.perf_counter() - started
    throughput = epochs_run * steps * config.batch_size / seconds if seconds else 0.0
    summary = {
        "arch": config.arch,
        "epochs_run": epochs_run,
        "last_epoch": first_epoch + epochs_run,
        "best_val_macro_f1": checkpoint.best,
        "seconds": round(seconds, 1),
        "train_images_per_second": round(throughput, 2),
        "train_images": len(train_labels),
        "val_images": len(val_labels),
        "class_weights": {CLASSES[k]: round(v, 4) for k, v in (weights or {}).items()},
        "keras_backend": keras.backend.backend(),
        "keras": keras.__version__,
        "tensorflow": tf.__version__,
        "strategy": type(strategy).__name__,
        "replicas": strategy.num_replicas_in_sync,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return TrainResult(run_dir, checkpoint.best, epochs_run, seconds, throughput)


CUSTOM_OBJECTS: dict[str, Any] = {"_SmoothedSparseCrossentropy": _SmoothedSparseCrossentropy}
