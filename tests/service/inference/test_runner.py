"""SideBySide: the models' work split into tasks, longest first, answers as if run whole."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from service.core.concurrency import Pool
from service.core.config import Settings
from service.inference.predictor import load_predictor
from service.inference.runner import SideBySide
from tests.factories import pixel_specs
from xray.contract.model import GraphOutputs, OnnxModel


@pytest.fixture
def models(make_models: Callable[..., Path]) -> dict[str, OnnxModel]:
    predictor = load_predictor(Settings(models_dir=make_models(pixel_specs(with_maps=True))))
    predictor.close()
    return predictor.models


def _inputs(models: dict[str, OnnxModel], size: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(size)
    return {
        name: model.from_gray(rng.integers(0, 256, (size, model.entry.input.height, model.entry.input.width)))
        for name, model in models.items()
    }


@pytest.mark.parametrize(("size", "workers"), [(1, 2), (8, 2), (9, 2), (13, 3)])
def test_split_batches_give_the_whole_batches_answers(
    models: dict[str, OnnxModel], size: int, workers: int
) -> None:
    runner = SideBySide(models, Pool(workers, "test-models"), min_chunk=4)
    inputs = _inputs(models, size)
    try:
        outputs = runner.run(inputs, maps_for=["scratch"])
    finally:
        runner.close()
    for name, batch in inputs.items():
        run = outputs[name]
        np.testing.assert_allclose(run.outputs.logits, models[name].run(batch), rtol=1e-6)
        if name == "scratch":
            whole = models[name].run_outputs(batch, with_maps=True)
            assert run.outputs.maps is not None
            assert whole.maps is not None
            np.testing.assert_allclose(run.outputs.maps, whole.maps, rtol=1e-6)
        else:
            assert run.outputs.maps is None
        assert run.outputs.features is None
        assert run.seconds > 0


def test_large_batches_are_split_per_worker_and_the_longest_work_goes_first(
    models: dict[str, OnnxModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[tuple[str, int]] = []
    original = OnnxModel.run_outputs

    def recording(self: OnnxModel, batch: np.ndarray, **asked: bool) -> GraphOutputs:
        started.append((self.name, len(batch)))
        return original(self, batch, **asked)

    monkeypatch.setattr(OnnxModel, "run_outputs", recording)
    # One worker runs the tasks in the order they were queued.
    runner = SideBySide(models, Pool(1, "test-models"), min_chunk=4)
    try:
        for name, seconds in (
            ("scratch", 0.001),
            ("inception_resnet_v2", 0.010),
            ("efficientnet_v2_b2", 0.005),
        ):
            runner.observe(name, seconds, 1)
        runner.run(_inputs(models, 8))
        assert [name for name, _ in started] == ["inception_resnet_v2", "efficientnet_v2_b2", "scratch"]
        assert {size for _, size in started} == {8}  # one worker: nothing to balance, no split
    finally:
        runner.close()
    started.clear()
    runner = SideBySide(models, Pool(2, "test-models"), min_chunk=4)
    try:
        runner.run(_inputs(models, 8))
        runner.run(_inputs(models, 7))
    finally:
        runner.close()
    assert sorted(started[:6]) == sorted([(name, 4) for name in models] * 2)
    assert sorted(started[6:]) == sorted((name, 7) for name in models)  # under 2 x min_chunk: whole
