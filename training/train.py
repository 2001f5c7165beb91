"""Training one network: precision, class weights, schedule, macro-F1 checkpointing, time budget, resume.

Backend-neutral: the same code trains with Keras on TensorFlow (this package's CPU install), on
JAX or on PyTorch (a GPU machine without TensorFlow); only the export needs TensorFlow.

A run folder holds everything about one network's training:

    config.json      the TrainConfig
    best.keras       the weights with the best validation macro-F1 so far
    last.keras       the latest checkpoint, with optimizer state, for `--resume`
    state.json       last epoch, best macro-F1, epochs without improvement, planned epochs, time spent
    history.csv      per-epoch loss, accuracy, learning rate, validation macro-F1, elapsed seconds
    summary.json     what the export writes into the manifest's `training` record

A checkpoint is written whole into `checkpoint.pending/` first and then moved into place
(`commit_checkpoint`), so a process killed while saving leaves the previous checkpoint intact.
Resuming continues from `last.keras` and `state.json`: weights, optimizer moments and step, the
dropout generators' state, the learning rate (a function of the epoch) and the batches (a
function of seed, epoch and step) are those an uninterrupted run would have had.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np
from sklearn.metrics import f1_score

from service.core.cpu import available_cpus
from training.architectures import build_model
from training.architectures.common import BuiltModel
from training.config import CLASSES, TrainConfig
from training.data import Record, archive_balanced_weights, archives_of, class_weights, labels_of
from training.distill import distillation_targets
from training.fused_adamw import FusedAdamW, fuse_optimizer
from training.fused_batchnorm import FusedBatchNormalization, fuse_batch_norms
from training.pipeline import TrainingBatches
from training.precision import choose_precision, float32_depthwise
from training.weight_average import averaged_weights, has_weight_average, recalibration_batches
from xray.contract.images import equalize_batch

logger = logging.getLogger(__name__)

#: A checkpoint is written whole into this subfolder of the run, then moved into place.
PENDING_DIR = "checkpoint.pending"
#: Written into `PENDING_DIR` once every file of the checkpoint is there.
PENDING_COMPLETE = "complete"
#: A checkpoint's files in the order they are moved into place: `state.json`, which says which
#: epoch the others belong to, last.
CHECKPOINT_FILES = ("last.keras", "best.keras", "history.csv", "state.json")


@dataclass(frozen=True)
class TrainingData:
    """Decoded images (uint8, (n, size, size)) and labels of the training and validation splits.

    `train_archives` names each training image's archive (source and stored-size group), for
    `TrainConfig.balance_archives`; None where it is not known. `train_targets` holds each
    training image's class probabilities where a teacher distils into the run
    (`TrainConfig.distill`), and `teacher` what the summary records of it.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    train_archives: np.ndarray | None = None
    train_targets: np.ndarray | None = None
    teacher: dict[str, Any] | None = None


def make_strategy() -> Any:
    """The TensorFlow distribution strategy for this machine (None under other backends).

    Several workers (TF_CONFIG set) → MultiWorkerMirroredStrategy; several GPUs →
    MirroredStrategy; otherwise the default strategy. The model and optimizer are created under
    its scope, so the same code trains on one CPU or many GPUs.
    """
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


@dataclass
class RunState:
    """What a run must remember to resume: written to `state.json` at every checkpoint."""

    epoch: int = -1
    best_val_macro_f1: float = -1.0
    waited: int = 0
    planned_epochs: int = 0
    seconds: float = 0.0
    best_epoch: int = -1
    history: list[dict[str, float]] = field(default_factory=list)
    #: The dropout layers' random-generator states, which `.keras` files do not keep.
    seed_states: list[list[int]] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> RunState:
        """Read `state.json` (older files lack the newer keys)."""
        document = json.loads(path.read_text())
        known = {key: document[key] for key in cls.__dataclass_fields__ if key in document}
        return cls(**known)


def learning_rate_at(config: TrainConfig, epoch: int, planned_epochs: int, scale: float = 1.0) -> float:
    """Linear warm-up over `warmup_epochs`, then cosine decay to 1 % of the peak at `planned_epochs`."""
    peak = config.learning_rate * scale
    warmup = math.ceil(config.warmup_epochs)
    if epoch < warmup:
        return peak * (epoch + 1) / (warmup + 1)
    progress = min(1.0, (epoch - warmup) / max(1, planned_epochs - warmup))
    floor = 0.01 * peak
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class TrainingDivergedError(RuntimeError):
    """The training loss left the range of a network that learns: the run stopped, unsaved."""


class RunControl(keras.callbacks.Callback):
    """Per epoch: learning rate, validation macro-F1, checkpoints, early stopping, time budget, ETA.

    The learning rate is set at the start of each epoch from the epoch index and the planned
    number of epochs. With a time budget, the plan is revised after each epoch from the median
    epoch time of this segment, so the cosine reaches its end when the budget does; the median,
    because one epoch slowed by other work on the machine must not cut the schedule short.

    An epoch whose mean loss is not finite, or above `diverged_factor` times a uniform guess's
    (ln of the class count), stops the run without a checkpoint, as if the process had died
    there: `last.keras` and `best.keras` stay those of the last good checkpoint, so the run can
    be resumed from it with a lower learning rate, and `diverged` says what happened.
    """

    #: The clock of the time budget and the progress log (tests replace it).
    clock = staticmethod(time.monotonic)
    #: A network that learns stays near or below 1× a uniform guess's loss; the CPU run of
    #: EfficientNetV2B2 at 5e-4, batch 16, went from 1.28 to 3,303 in one epoch, and a
    #: checkpoint of those weights would have overwritten the resumable one.
    diverged_factor = 10.0

    def __init__(
        self,
        config: TrainConfig,
        data: TrainingData,
        run_dir: Path,
        state: RunState,
        *,
        checkpoint_every: int = 1,
        scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.config = config
        self.data = data
        self.run_dir = run_dir
        self.state = state
        self.checkpoint_every = max(1, checkpoint_every)
        self.scale = scale
        self.best_weights: list[np.ndarray] | None = None
        self.segment_started = self.clock()
        self.segment_offset = state.seconds
        self.epoch_started = self.segment_started
        self.epoch_seconds: list[float] = []
        self.diverged: str | None = None
        #: Epochs that the checkpoint on disk holds (a resumed run starts with its state's).
        self.saved_epochs = state.epoch + 1

    def elapsed(self) -> float:
        """Training seconds over all segments of the run."""
        return self.segment_offset + self.clock() - self.segment_started

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Set this epoch's learning rate."""
        self.epoch_started = self.clock()
        self.model.optimizer.learning_rate = learning_rate_at(
            self.config, epoch, self.state.planned_epochs, self.scale
        )

    def _replan(self, epoch: int) -> None:
        budget = self.config.time_budget_minutes
        if budget is None:
            return
        done = epoch + 1
        # The segment's first epoch also builds the graph: left out once there are others.
        timed = self.epoch_seconds[1:] or self.epoch_seconds
        per_epoch = max(1e-3, float(np.median(timed)))
        remaining = max(0.0, budget * 60.0 - self.elapsed())
        self.state.planned_epochs = max(done, min(self.config.epochs, done + int(remaining // per_epoch)))

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Score validation, keep the best weights, checkpoint, stop on patience or budget."""
        logs = logs if logs is not None else {}
        loss = float(logs.get("loss", 0.0))
        if not math.isfinite(loss) or loss > self.diverged_factor * math.log(len(CLASSES)):
            self._stop_diverged(epoch, loss)
            return
        scored: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
        if has_weight_average(self.model):
            logs["val_macro_f1_live"] = self._val_macro_f1()
            # The average is what is scored, kept and exported, with batch-norm statistics of its own.
            batches = recalibration_batches(
                self.data.train_images, self.config.batch_size, [self.config.seed, epoch]
            )
            scored = averaged_weights(self.model, batches)
        with scored:
            score = self._val_macro_f1()
            better = score > self.state.best_val_macro_f1
            if better:
                self.best_weights = self.model.get_weights()
        logs["val_macro_f1"] = score
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        logs["elapsed_seconds"] = round(self.elapsed(), 1)
        self.state.epoch = epoch
        self.state.seconds = self.elapsed()
        self.epoch_seconds.append(self.clock() - self.epoch_started)
        if better:
            self.state.best_val_macro_f1, self.state.waited, self.state.best_epoch = score, 0, epoch
        else:
            self.state.waited += 1
        self._replan(epoch)
        stop = self.state.waited >= self.config.patience or epoch + 1 >= self.state.planned_epochs
        self.state.history.append({key: float(value) for key, value in logs.items()} | {"epoch": epoch})
        if stop or (epoch + 1) % self.checkpoint_every == 0:
            self.checkpoint()
        left = (self.state.planned_epochs - epoch - 1) * (self.clock() - self.epoch_started)
        logger.info(
            "%s epoch %d/%d: loss %.4f, val macro-F1 %.4f%s (best %.4f at %d), lr %.2e, %.0fs; "
            "about %.0f min left",
            self.config.arch,
            epoch + 1,
            self.state.planned_epochs,
            logs.get("loss", float("nan")),
            score,
            f" averaged, {logs['val_macro_f1_live']:.4f} live" if "val_macro_f1_live" in logs else "",
            self.state.best_val_macro_f1,
            self.state.best_epoch + 1,
            logs["learning_rate"],
            self.clock() - self.epoch_started,
            left / 60.0,
        )
        if self.state.waited >= self.config.patience:
            logger.info("no better validation macro-F1 for %d epochs: stopping", self.config.patience)
        if stop:
            self.model.stop_training = True

    def _val_macro_f1(self) -> float:
        logits = predict_logits(self.model, self.data.val_images, max(self.config.batch_size, 32))
        return float(f1_score(self.data.val_labels, logits.argmax(axis=1), average="macro"))

    def _stop_diverged(self, epoch: int, loss: float) -> None:
        learning_rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        saved = f"after epoch {self.saved_epochs}" if self.saved_epochs else "none yet"
        self.diverged = (
            f"{self.config.arch} diverged in epoch {epoch + 1}: mean training loss {loss:.4g} at "
            f"learning rate {learning_rate:.2e}. Nothing of this epoch was saved (last checkpoint: "
            f"{saved}). Lower learning_rate or lengthen warmup_epochs, then --resume or start again."
        )
        self.model.stop_training = True  # fit_network raises it; `xray train` logs it and exits 1

    def checkpoint(self) -> None:
        """Write last.keras, best.keras, history.csv and state.json as one set (`commit_checkpoint`)."""
        pending = self.run_dir / PENDING_DIR
        shutil.rmtree(pending, ignore_errors=True)  # a partial set a killed process left
        pending.mkdir()
        self.model.save(pending / "last.keras")
        if self.best_weights is not None:
            current = self.model.get_weights()
            self.model.set_weights(self.best_weights)
            self.model.save(pending / "best.keras")
            self.model.set_weights(current)
        write_history(pending / "history.csv", self.state.history)
        self.state.seed_states = [
            [int(v) for v in keras.ops.convert_to_numpy(variable)] for variable in seed_variables(self.model)
        ]
        (pending / "state.json").write_text(json.dumps(self.state.__dict__))
        for path in pending.iterdir():
            _flush_to_disk(path)  # a machine taken back loses what only the page cache held
        (pending / PENDING_COMPLETE).touch()
        commit_checkpoint(self.run_dir)
        self.best_weights = None  # on disk now
        self.saved_epochs = self.state.epoch + 1


def _flush_to_disk(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def commit_checkpoint(run_dir: Path) -> None:
    """Move a whole pending checkpoint into place, or drop a partial one.

    A run's process can be killed at any moment (a session ends, the machine is taken back):
    saving InceptionResNetV2 with its optimizer state takes seconds, and a `last.keras` cut off
    halfway would lose the run. So a checkpoint is first written whole into `PENDING_DIR` and
    only then moved into place, file by file, by atomic renames. Called after each checkpoint
    and before a resume: a set without `PENDING_COMPLETE` is dropped (the previous checkpoint
    stays as it was); a complete one that was not yet all moved is moved the rest of the way.
    """
    pending = run_dir / PENDING_DIR
    if not pending.is_dir():
        return
    if (pending / PENDING_COMPLETE).is_file():
        for name in CHECKPOINT_FILES:
            if (pending / name).is_file():
                os.replace(pending / name, run_dir / name)
    else:
        logger.warning("dropping the partial checkpoint a stopped process left in %s", pending)
    shutil.rmtree(pending)


def start_from(model: keras.Model, path: Path) -> None:
    """Give `model` the weights of a trained network: a `.keras` checkpoint, or a weights file.

    A checkpoint's weights are copied layer by layer, by name: the layer names are deterministic,
    so this works whatever the checkpoint's input size (the network is fully convolutional up to
    its pooled head) and whether or not its batch norms ran on the fused kernel, which Keras's
    own `load_weights` stores under other paths.

    Raises:
        ValueError: A layer with weights has no counterpart of the same name and shapes.
    """
    if path.suffix != ".keras":
        model.load_weights(path)
        return
    source = keras.models.load_model(path, custom_objects=CUSTOM_OBJECTS, compile=False)
    by_name = {layer.name: layer for layer in source._flatten_layers(include_self=False, recursive=True)}
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if not layer.weights or isinstance(layer, keras.Model):  # a nested model's layers come one by one
            continue
        other = by_name.get(layer.name)
        mine = [tuple(weight.shape) for weight in layer.weights]
        if other is None or [tuple(weight.shape) for weight in other.weights] != mine:
            raise ValueError(f"{path} has no layer {layer.name!r} with weights of shapes {mine}")
        layer.set_weights(other.get_weights())


def seed_variables(model: keras.Model) -> list[Any]:
    """The state variables of the model's random generators (dropout), in a fixed order."""
    return [variable for variable in model.variables if variable.path.endswith("seed_generator_state")]


def write_history(path: Path, rows: list[dict[str, float]]) -> None:
    """The per-epoch log as CSV (columns: the union of every row's keys)."""
    columns = sorted({key for row in rows for key in row}, key=lambda k: (k != "epoch", k))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def predict_logits(model: keras.Model, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Logits of a uint8 (n, h, w) image array, in equal batches (the last one padded).

    Equal batches mean one compiled predict step for every call, under any backend.
    """
    count = len(images)
    size = min(batch_size, count)
    padded = math.ceil(count / size) * size
    outputs = []
    for start in range(0, padded, size):
        batch = np.asarray(images[start : start + size])
        if len(batch) < size:
            batch = np.concatenate([batch, np.zeros((size - len(batch), *batch.shape[1:]), batch.dtype)])
        outputs.append(model.predict_on_batch(batch.astype(np.float32)[..., None]))
    return np.concatenate([keras.ops.convert_to_numpy(o) for o in outputs])[:count].astype(np.float32)


def _teacher_targets(config: TrainConfig, records: list[Record]) -> dict[str, Any]:
    """`TrainingData`'s distillation fields for `config` (none without a teacher)."""
    if config.distill is None:
        return {}
    targets, teacher = distillation_targets(config.distill, records, CLASSES)
    logger.info(
        "%s distils from %s (weight %.2f, temperature %.2f; the teacher's top class is the label on "
        "%.1f%% of the training images)",
        config.arch,
        teacher["targets"],
        config.distill.weight,
        config.distill.temperature,
        100 * teacher["teacher_train_accuracy"],
    )
    return {"train_targets": targets, "teacher": teacher}


def _sample_weights(config: TrainConfig, data: TrainingData) -> tuple[np.ndarray | None, dict[str, Any]]:
    """Each training image's loss weight, and what the summary records of them."""
    if not config.class_weights:
        return None, {"class_weights": {}}
    if config.balance_archives:
        if data.train_archives is None:
            raise ValueError("balance_archives needs each training image's archive (train_archives)")
        weights, table = archive_balanced_weights(data.train_labels, data.train_archives, len(CLASSES))
        named = {archive: {CLASSES[c]: w for c, w in sorted(row.items())} for archive, row in table.items()}
        return weights, {"class_weights": {}, "archive_weights": named}
    per_class = class_weights(data.train_labels.tolist(), len(CLASSES))
    weights = np.asarray([per_class[int(c)] for c in data.train_labels], dtype=np.float32)
    return weights, {"class_weights": {CLASSES[k]: round(v, 4) for k, v in per_class.items()}}


def _build_from_table(config: TrainConfig) -> BuiltModel:
    return build_model(
        config.arch,
        config.size,
        len(CLASSES),
        dropout=config.dropout,
        weights=config.weights,
        bn_momentum=config.bn_momentum,
    )


def _compile(model: keras.Model, config: TrainConfig) -> None:
    fused = fuse_batch_norms(model)  # TensorFlow backend only; the checkpoint's weights are unchanged
    if fused:
        logger.info("%d batch-norm layers run on the fused kernel", fused)
    _depthwise_in_float32(model)
    average = config.weight_average
    optimizer = FusedAdamW(  # Keras's AdamW on fused kernels where TensorFlow computes it
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        clipnorm=1.0,
        use_ema=average is not None,
        ema_momentum=average if average is not None else 0.99,
    )
    loss: keras.losses.Loss
    if config.soft_labels:  # the batches carry class probabilities, not class indices
        loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=config.label_smoothing)
    elif config.label_smoothing:
        loss = _SmoothedSparseCrossentropy(config.label_smoothing, len(CLASSES))
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])


def _depthwise_in_float32(model: keras.Model) -> None:
    if changed := float32_depthwise(model):
        logger.info("%d depthwise convolutions compute in float32 (bfloat16 is slower there)", changed)


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
    strategy: Any = None,
    build: Callable[[TrainConfig], BuiltModel] | None = None,
) -> TrainResult:
    """Train one network on labelled records (decoded once into the cache) and keep its best weights.

    Args:
        config: The recipe.
        train_records: Training images.
        val_records: Validation images (model selection and early stopping).
        run_dir: The run folder (created).
        cache_dir: Where decoded images are cached.
        resume: Continue from `run_dir/last.keras` and `state.json`.
        strategy: The TensorFlow distribution strategy; default: `make_strategy()`.
        build: Another network for `config` (see `fit_network`).
    """
    from training.cache import load_images  # the service's decoders, only where files are decoded

    data = TrainingData(
        load_images(train_records, config.size, cache_dir),
        labels_of(train_records),
        np.asarray(load_images(val_records, config.size, cache_dir)),
        labels_of(val_records),
        train_archives=archives_of(train_records) if config.balance_archives else None,
        **_teacher_targets(config, train_records),
    )
    return fit_network(config, data, run_dir, resume=resume, strategy=strategy, build=build)


def fit_network(
    config: TrainConfig,
    data: TrainingData,
    run_dir: Path,
    *,
    resume: bool = False,
    strategy: Any = None,
    workers: int | None = None,
    checkpoint_every: int = 1,
    build: Callable[[TrainConfig], BuiltModel] | None = None,
) -> TrainResult:
    """Train one network on decoded images and keep its best weights in `run_dir/best.keras`.

    Args:
        config: The recipe.
        data: Decoded training and validation images with their labels.
        run_dir: The run folder (created).
        resume: Continue from `run_dir/last.keras` and `state.json`.
        strategy: The TensorFlow distribution strategy; default: `make_strategy()`.
        workers: Threads building batches; default: `TrainingBatches`'s.
        checkpoint_every: Write checkpoints every this many epochs (and at the end).
        build: Another network for `config` (benchmarks compare baselines this way); default:
            the architecture table's `config.arch`.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    # Free what earlier networks of this process built (clear_session also resets the dtype
    # policy, so it comes before the policy is set).
    keras.backend.clear_session()
    keras.utils.set_random_seed(config.seed)
    precision = choose_precision(config.precision)
    keras.mixed_precision.set_global_policy(precision.policy)
    (run_dir / "config.json").write_text(config.model_dump_json(indent=2))

    # Validation sees what the service will feed: the recipe's equalisation (if any), once, up front.
    data = replace(data, val_images=equalize_batch(np.asarray(data.val_images), config.equalization))
    weights, weights_record = _sample_weights(config, data)
    if config.distill is not None and data.train_targets is None:
        raise ValueError("distill needs each training image's teacher targets (train_targets)")
    cpus = available_cpus()
    batches = TrainingBatches(
        data.train_images,
        data.train_labels,
        batch_size=config.batch_size,
        seed=config.seed,
        augment=config.augment,
        sample_weights=weights,
        workers=workers,
        num_classes=len(CLASSES),
        targets=data.train_targets if config.distill is not None else None,
        equalization=config.equalization,
    )
    steps = batches.steps_per_epoch
    if config.steps_per_epoch:
        steps = min(steps, config.steps_per_epoch)

    state = RunState(planned_epochs=config.epochs)
    strategy = strategy if strategy is not None else make_strategy()

    def scope() -> Any:
        return strategy.scope() if strategy is not None else contextlib.nullcontext()

    with scope():
        built = (build or _build_from_table)(config)
        model = built.model
        if config.init_weights:
            start_from(model, Path(config.init_weights))
            logger.info("%s starts from the weights of %s", config.arch, config.init_weights)
        if resume:
            commit_checkpoint(run_dir)
        if resume and (run_dir / "last.keras").is_file() and (run_dir / "state.json").is_file():
            state = RunState.load(run_dir / "state.json")
            model = keras.models.load_model(run_dir / "last.keras", custom_objects=CUSTOM_OBJECTS)
            if fuse_optimizer(model):  # a checkpoint written before the fused optimizer holds Keras's AdamW
                logger.info("the checkpoint's AdamW continues on the fused kernels")
            _depthwise_in_float32(model)  # as in a checkpoint written before the change
            for variable, value in zip(seed_variables(model), state.seed_states, strict=False):
                variable.assign(np.asarray(value, dtype=variable.dtype))
            logger.info(
                "resuming %s after epoch %d (%.0fs spent)", config.arch, state.epoch + 1, state.seconds
            )
    if config.time_budget_minutes is None:
        state.planned_epochs = config.epochs  # a resumed run may be given more epochs
    elif state.seconds >= config.time_budget_minutes * 60:
        state.planned_epochs = state.epoch + 1  # the budget is spent
    else:
        state.planned_epochs = min(config.epochs, max(state.planned_epochs, state.epoch + 2))
    first_epoch = state.epoch + 1
    resumed = first_epoch > 0 and model.optimizer is not None
    # A pretrained backbone first stays frozen while the new head settles, then is fine-tuned
    # at a lower learning rate. Phases: (first epoch, end epoch, learning-rate factor, backbone trainable).
    frozen = config.frozen_epochs if config.pretrained and built.backbone_layers else 0
    phases = [
        (0, frozen, 1.0, False),
        (frozen, config.epochs, config.fine_tune_learning_rate_factor if frozen else 1.0, True),
    ]
    control = RunControl(config, data, run_dir, state, checkpoint_every=checkpoint_every)
    started = time.perf_counter()
    epochs_run = 0
    for phase_start, stop, scale, trainable in phases:
        start = max(phase_start, state.epoch + 1)
        if start >= min(stop, state.planned_epochs) or getattr(model, "stop_training", False):
            continue
        control.scale = scale
        # A model resumed inside a phase keeps its saved flags and optimizer state.
        if not (resumed and phase_start < first_epoch):
            if built.backbone_layers:
                _set_backbone_trainable(model, built.backbone_layers, trainable)
            with scope():
                _compile(model, config)
        history = model.fit(
            batches.stream(start),
            epochs=stop,  # RunControl ends the last phase at the planned epoch
            initial_epoch=start,
            steps_per_epoch=steps,
            callbacks=[control, keras.callbacks.TerminateOnNaN()],
            verbose=0,
            shuffle=False,  # the batches are shuffled by seed and epoch
        )
        epochs_run += len(history.epoch)
    if control.diverged is not None:
        raise TrainingDivergedError(control.diverged)
    seconds = time.perf_counter() - started
    throughput = epochs_run * steps * batches.batch_size / seconds if seconds else 0.0
    summary = {
        "arch": config.arch,
        "epochs_run": epochs_run,
        "last_epoch": state.epoch + 1,
        "best_epoch": state.best_epoch + 1,
        "best_val_macro_f1": state.best_val_macro_f1,
        "seconds": round(state.seconds, 1),
        "train_images_per_second": round(throughput, 2),
        # CPU time spent building batches, as a share of all the CPU time the run had.
        "input_pipeline_share": round(batches.build_seconds / (seconds * cpus), 4) if seconds else 0.0,
        "train_images": len(data.train_labels),
        "val_images": len(data.val_labels),
        **weights_record,
        **({"distillation": data.teacher} if config.distill is not None else {}),
        "precision": precision.precision,
        "precision_reason": precision.reason,
        "keras_backend": keras.backend.backend(),
        "keras": keras.__version__,
        "strategy": type(strategy).__name__ if strategy is not None else None,
        "replicas": strategy.num_replicas_in_sync if strategy is not None else 1,
    }
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        summary["tensorflow"] = tf.__version__
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return TrainResult(run_dir, state.best_val_macro_f1, epochs_run, seconds, throughput)


CUSTOM_OBJECTS: dict[str, Any] = {
    "_SmoothedSparseCrossentropy": _SmoothedSparseCrossentropy,
    "FusedBatchNormalization": FusedBatchNormalization,
    "FusedAdamW": FusedAdamW,
}
