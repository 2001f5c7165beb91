"""The training loop: distribution strategy, resume, schedule, time budget."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.training.conftest import synthetic_image, write_labelled_images
from training.architectures import build_model
from training.config import AugmentConfig, DistillConfig, SplitConfig, TrainConfig
from training.data import read_dataset, split_by_group
from training.distill import write_teacher_probabilities
from training.fused_batchnorm import fuse_batch_norms
from training.train import (
    CHECKPOINT_FILES,
    CUSTOM_OBJECTS,
    PENDING_COMPLETE,
    PENDING_DIR,
    RunControl,
    RunState,
    TrainingData,
    TrainingDivergedError,
    commit_checkpoint,
    fit_network,
    learning_rate_at,
    make_strategy,
    train,
)
from xray.contract.images import equalize_batch


def test_one_cpu_uses_the_default_strategy() -> None:
    assert make_strategy().num_replicas_in_sync == 1


@pytest.mark.slow
def test_training_runs_under_a_mirrored_strategy(tmp_path: Path) -> None:
    """The code path several GPUs take: variables, optimizer and callbacks under a MirroredStrategy."""
    records = read_dataset(write_labelled_images(tmp_path / "data", per_class=4))
    split = split_by_group(records, SplitConfig(seed=0))
    config = TrainConfig(arch="scratch", image_size=32, epochs=1, batch_size=4)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    result = train(config, split.train, split.val, tmp_path / "run", tmp_path / "cache", strategy=strategy)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["strategy"] == "MirroredStrategy"
    assert summary["epochs_run"] == result.epochs_run == 1
    assert (tmp_path / "run" / "best.keras").is_file()


def _tiny_data(count: int = 24, size: int = 32) -> TrainingData:
    images = np.stack([synthetic_image(i % 3, seed=i, size=size) for i in range(count)])
    labels = np.arange(count) % 3
    return TrainingData(images[:18], labels[:18], images[18:], labels[18:])


class _InterruptedError(Exception):
    pass


@pytest.mark.slow
@pytest.mark.parametrize("weight_average", [None, 0.9])
def test_a_resumed_run_ends_where_an_uninterrupted_one_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, weight_average: float | None
) -> None:
    config = TrainConfig(
        arch="scratch", image_size=32, epochs=3, batch_size=6, precision="float32", seed=3,
        weight_average=weight_average,
    )  # fmt: skip
    data = _tiny_data()
    fit_network(config, data, tmp_path / "whole", workers=1)

    original = RunControl.on_epoch_end

    def stop_after_first_epoch(self: RunControl, epoch: int, logs: dict | None = None) -> None:
        original(self, epoch, logs)
        if epoch == 0:
            self.checkpoint()
            raise _InterruptedError  # the process dies here

    monkeypatch.setattr(RunControl, "on_epoch_end", stop_after_first_epoch)
    with pytest.raises(_InterruptedError):
        fit_network(config, data, tmp_path / "split", workers=1)
    monkeypatch.setattr(RunControl, "on_epoch_end", original)
    result = fit_network(config, data, tmp_path / "split", resume=True, workers=1)

    assert result.epochs_run == 2
    whole = keras.models.load_model(tmp_path / "whole" / "last.keras", custom_objects=CUSTOM_OBJECTS)
    split = keras.models.load_model(tmp_path / "split" / "last.keras", custom_objects=CUSTOM_OBJECTS)
    assert int(whole.optimizer.iterations) == int(split.optimizer.iterations) == 9
    for a, b in zip(whole.get_weights(), split.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # The optimizer's state, the moving average of the weights among it, carries over too.
    for a, b in zip(whole.optimizer.variables, split.optimizer.variables, strict=True):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), rtol=1e-4, atol=1e-5
        )
    whole_state = json.loads((tmp_path / "whole" / "state.json").read_text())
    split_state = json.loads((tmp_path / "split" / "state.json").read_text())
    for key in ("epoch", "best_epoch", "best_val_macro_f1", "waited", "planned_epochs"):
        assert whole_state[key] == split_state[key], key
    rates = [row["learning_rate"] for row in split_state["history"]]
    assert rates == [row["learning_rate"] for row in whole_state["history"]]


@pytest.mark.slow
def test_an_equalising_recipe_scores_validation_on_equalised_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training import train as train_module

    scored: list[np.ndarray] = []
    original = train_module.predict_logits

    def recording(model: keras.Model, images: np.ndarray, batch_size: int) -> np.ndarray:
        scored.append(np.array(images))
        return original(model, images, batch_size)

    monkeypatch.setattr(train_module, "predict_logits", recording)
    config = TrainConfig(
        arch="scratch", image_size=32, epochs=1, batch_size=6, precision="float32", equalization="histogram"
    )
    data = _tiny_data()
    fit_network(config, data, tmp_path / "run", workers=1)
    assert scored
    np.testing.assert_array_equal(scored[0], equalize_batch(np.asarray(data.val_images), "histogram"))


@pytest.mark.slow
def test_a_process_killed_while_saving_a_checkpoint_resumes_from_the_one_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = TrainConfig(arch="scratch", image_size=32, epochs=1, batch_size=6, precision="float32", seed=3)
    run = tmp_path / "run"
    fit_network(config, _tiny_data(), run, workers=1)
    saved = {name: (run / name).read_bytes() for name in CHECKPOINT_FILES}

    def killed_halfway(self: keras.Model, path: Path, *args: object, **kwargs: object) -> None:
        Path(path).write_bytes(b"PK\x03\x04 cut off")  # the start of a zip, then nothing
        raise _InterruptedError

    monkeypatch.setattr(keras.Model, "save", killed_halfway)
    with pytest.raises(_InterruptedError):
        fit_network(config.model_copy(update={"epochs": 2}), _tiny_data(), run, resume=True, workers=1)
    assert {name: (run / name).read_bytes() for name in CHECKPOINT_FILES} == saved
    assert (run / PENDING_DIR / "last.keras").is_file()  # the cut-off file, set aside
    monkeypatch.undo()

    result = fit_network(config.model_copy(update={"epochs": 2}), _tiny_data(), run, resume=True, workers=1)
    assert result.epochs_run == 1
    assert [row["epoch"] for row in json.loads((run / "state.json").read_text())["history"]] == [0, 1]
    assert not (run / PENDING_DIR).exists()


def test_a_whole_pending_checkpoint_is_moved_the_rest_of_the_way_and_a_partial_one_dropped(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    pending = run / PENDING_DIR
    pending.mkdir(parents=True)
    for name in CHECKPOINT_FILES:
        (run / name).write_text(f"old {name}")
    # Killed after moving last.keras: the rest of the whole set is still pending.
    for name in CHECKPOINT_FILES[1:]:
        (pending / name).write_text(f"new {name}")
    (pending / PENDING_COMPLETE).touch()
    (run / "last.keras").write_text("new last.keras")
    commit_checkpoint(run)
    assert {name: (run / name).read_text() for name in CHECKPOINT_FILES} == {
        name: f"new {name}" for name in CHECKPOINT_FILES
    }
    assert not pending.exists()

    # Killed while writing: no completion mark, so the set is dropped and nothing moves.
    pending.mkdir()
    (pending / "last.keras").write_text("partial")
    commit_checkpoint(run)
    assert (run / "last.keras").read_text() == "new last.keras"
    assert not pending.exists()
    commit_checkpoint(run)  # nothing pending: nothing to do


@pytest.mark.slow
def test_a_diverging_epoch_stops_the_run_and_leaves_the_last_checkpoint_as_it_was(tmp_path: Path) -> None:
    config = TrainConfig(arch="scratch", image_size=32, epochs=1, batch_size=6, precision="float32", seed=3)
    run = tmp_path / "run"
    fit_network(config, _tiny_data(), run, workers=1)
    files = ("last.keras", "best.keras", "state.json", "history.csv", "summary.json")
    saved = {name: (run / name).read_bytes() for name in files}

    # A learning rate no network survives: its second epoch's loss explodes.
    exploding = config.model_copy(update={"epochs": 2, "learning_rate": 1e6})
    with pytest.raises(TrainingDivergedError, match=r"diverged in epoch 2: .*last checkpoint: after epoch 1"):
        fit_network(exploding, _tiny_data(), run, resume=True, workers=1)
    assert {name: (run / name).read_bytes() for name in files} == saved

    # Resumed with a sane rate, the run continues from the checkpoint before the divergence.
    result = fit_network(config.model_copy(update={"epochs": 2}), _tiny_data(), run, resume=True, workers=1)
    history = json.loads((run / "state.json").read_text())["history"]
    assert result.epochs_run == 1
    assert [row["epoch"] for row in history] == [0, 1]
    assert all(np.isfinite(row["loss"]) for row in history)


class _Optimizer:
    learning_rate = 0.5


class _Model:
    optimizer = _Optimizer()
    stop_training = False


@pytest.mark.parametrize("loss", [float("nan"), float("inf"), 3303.0], ids=["nan", "inf", "exploded"])
def test_an_epoch_with_a_loss_out_of_range_is_neither_scored_nor_saved(tmp_path: Path, loss: float) -> None:
    # A NaN loss stops the epoch early (TerminateOnNaN); its end must not write those weights.
    state = RunState(epoch=4, best_val_macro_f1=0.6, planned_epochs=10)
    control = RunControl(TrainConfig(arch="scratch"), _tiny_data(), tmp_path, state)
    control.set_model(_Model())
    control.on_epoch_end(5, {"loss": loss})
    assert control.model.stop_training
    assert control.diverged is not None
    assert "diverged in epoch 6" in control.diverged
    assert "after epoch 5" in control.diverged
    assert (state.epoch, state.best_val_macro_f1, state.history) == (4, 0.6, [])
    assert list(tmp_path.iterdir()) == []


def test_learning_rate_warms_up_then_decays_to_one_percent() -> None:
    config = TrainConfig(arch="scratch", learning_rate=0.01, warmup_epochs=2)
    rates = [learning_rate_at(config, epoch, 10) for epoch in range(12)]
    assert rates[0] < rates[1] < rates[2] == pytest.approx(0.01)
    assert all(a >= b for a, b in itertools.pairwise(rates[2:]))
    assert rates[-1] == pytest.approx(0.0001)


@pytest.mark.slow
def test_a_time_budget_plans_the_schedule_and_the_summary_records_precision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A clock on which every epoch takes exactly 2 s, so that the plan does not depend on the load.
    now = [0.0]
    monkeypatch.setattr(RunControl, "clock", staticmethod(lambda: now[0]))
    original = RunControl.on_epoch_end

    def two_seconds_later(self: RunControl, epoch: int, logs: dict | None = None) -> None:
        now[0] += 2.0
        original(self, epoch, logs)

    monkeypatch.setattr(RunControl, "on_epoch_end", two_seconds_later)
    config = TrainConfig(
        arch="scratch",
        image_size=32,
        epochs=500,
        batch_size=6,
        patience=500,
        precision="bfloat16",
        time_budget_minutes=0.3,
    )
    result = fit_network(config, _tiny_data(), tmp_path / "run", workers=1)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert summary["precision"] == "bfloat16"
    assert 1 <= result.epochs_run == state["planned_epochs"] < 500  # stopped by the budget, on plan
    assert result.epochs_run == 9  # 18 s of budget, 2 s an epoch
    assert state["seconds"] < 0.3 * 60 + 15
    assert state["history"][-1]["learning_rate"] < 0.05 * config.learning_rate  # the cosine reached its end


@pytest.mark.slow
def test_one_slow_epoch_does_not_bend_the_schedule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every epoch takes 2 s but the fourth, slowed to 10 s by other work on the machine. Planning
    # from the last epoch alone would shrink the plan there and grow it again after: the learning
    # rate would dip and rise. Planned from the median, it only decreases after the warm-up.
    now = [0.0]
    monkeypatch.setattr(RunControl, "clock", staticmethod(lambda: now[0]))
    original = RunControl.on_epoch_end

    def timed(self: RunControl, epoch: int, logs: dict | None = None) -> None:
        now[0] += 10.0 if epoch == 3 else 2.0
        original(self, epoch, logs)

    monkeypatch.setattr(RunControl, "on_epoch_end", timed)
    config = TrainConfig(
        arch="scratch", image_size=32, epochs=500, batch_size=6, patience=500, time_budget_minutes=0.5
    )
    result = fit_network(config, _tiny_data(), tmp_path / "run", workers=1)
    rates = [
        row["learning_rate"] for row in json.loads((tmp_path / "run" / "state.json").read_text())["history"]
    ]
    assert result.epochs_run == 11  # 30 s: 10 epochs of 2 s and one of 10 s
    assert all(a >= b for a, b in itertools.pairwise(rates[2:]))


@pytest.mark.parametrize("fused", [False, True], ids=["plain-batch-norm", "fused-batch-norm"])
def test_a_run_can_start_from_a_trained_networks_weights(tmp_path: Path, fused: bool) -> None:
    # The checkpoint is of another input size (progressive resizing), and its batch norms may be
    # the fused ones of a bfloat16 run, which Keras's own load_weights cannot map back.
    source = tmp_path / "trained.keras"
    trained = build_model("scratch", 48).model
    if fused:
        assert fuse_batch_norms(trained) > 0
    for variable in trained.trainable_weights:
        variable.assign(np.full(variable.shape, 0.01, dtype="float32"))
    trained.save(source)
    config = TrainConfig(
        arch="scratch", image_size=32, epochs=1, batch_size=6, precision="float32",
        learning_rate=1e-9, weight_decay=0.0, init_weights=str(source),
    )  # fmt: skip
    fit_network(config, _tiny_data(), tmp_path / "run", workers=1)
    started = keras.models.load_model(tmp_path / "run" / "last.keras", custom_objects=CUSTOM_OBJECTS)
    assert np.allclose(started.get_layer("stem1_conv").kernel.numpy(), 0.01, atol=1e-6)


def test_a_mixup_run_learns_from_class_probabilities_and_resumes(tmp_path: Path) -> None:
    config = TrainConfig(
        arch="scratch", image_size=32, epochs=1, batch_size=6, precision="float32",
        label_smoothing=0.1, augment=AugmentConfig(mixup=0.4),
    )  # fmt: skip
    fit_network(config, _tiny_data(), tmp_path / "run", workers=1)
    saved = keras.models.load_model(tmp_path / "run" / "last.keras", custom_objects=CUSTOM_OBJECTS)
    assert isinstance(saved.loss, keras.losses.CategoricalCrossentropy)
    assert saved.loss.label_smoothing == pytest.approx(0.1)
    longer = config.model_copy(update={"epochs": 2})
    result = fit_network(longer, _tiny_data(), tmp_path / "run", resume=True, workers=1)
    history = json.loads((tmp_path / "run" / "state.json").read_text())["history"]
    assert result.epochs_run == 1
    assert [row["epoch"] for row in history] == [0, 1]
    assert all(np.isfinite(row["loss"]) for row in history)


def test_archive_balanced_weights_reach_the_run_and_its_summary(tmp_path: Path) -> None:
    records = read_dataset(write_labelled_images(tmp_path / "data", per_class=4))
    config = TrainConfig(
        arch="scratch", image_size=32, epochs=1, batch_size=4, precision="float32", balance_archives=True
    )
    train(config, records, records[:3], tmp_path / "run", tmp_path / "cache")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    # The synthetic images are 96 px: each source is one archive of small images.
    assert set(summary["archive_weights"]) == {"site-a < 384 px", "site-b < 384 px"}
    assert set(summary["archive_weights"]["site-a < 384 px"]) == {"normal", "pneumonia", "tuberculosis"}
    with pytest.raises(ValueError, match="archive"):
        fit_network(config, _tiny_data(), tmp_path / "without", workers=1)  # no archives given


def test_a_distilled_run_learns_from_the_teachers_targets_and_records_the_teacher(tmp_path: Path) -> None:
    root = write_labelled_images(tmp_path / "data", per_class=4)
    records = read_dataset(root)
    teacher = tmp_path / "teacher.csv"
    # A teacher that always answers "tuberculosis" first: its top class is the label on a third.
    write_teacher_probabilities(teacher, records, np.tile([0.2, 0.3, 0.5], (len(records), 1)), root)
    config = TrainConfig(
        arch="scratch", image_size=32, epochs=1, batch_size=4, precision="float32",
        distill=DistillConfig(targets=str(teacher), weight=0.3, temperature=2.0),
    )  # fmt: skip
    train(config, records, records[:3], tmp_path / "run", tmp_path / "cache")
    saved = keras.models.load_model(tmp_path / "run" / "last.keras", custom_objects=CUSTOM_OBJECTS)
    assert isinstance(saved.loss, keras.losses.CategoricalCrossentropy)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["distillation"]["targets"] == "teacher.csv"
    assert (summary["distillation"]["weight"], summary["distillation"]["temperature"]) == (0.3, 2.0)
    assert summary["distillation"]["teacher_train_accuracy"] == pytest.approx(1 / 3, abs=1e-4)
    with pytest.raises(ValueError, match="teacher targets"):
        fit_network(config, _tiny_data(), tmp_path / "without", workers=1)  # no targets given
