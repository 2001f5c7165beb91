"""The predictor's execution modes: the models side by side or one after another."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from service.core.config import Settings
from service.inference.explanations import Explainer, ExplanationRequest
from service.inference.predictor import load_predictor
from tests.factories import gradient, pixel_specs
from xray.contract.decoders import ImageFormat
from xray.contract.images import DecodedImage
from xray.contract.model import GraphOutputs, OnnxModel


def _images() -> list[DecodedImage]:
    return [
        DecodedImage(
            pixels=(gradient(50 + 9 * i, 70) * (0.4 + 0.15 * i)).astype(np.uint8), format=ImageFormat.PNG
        )
        for i in range(3)
    ]


def test_side_by_side_gives_the_same_answers_as_one_after_another_on_model_threads(
    make_models: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("service.core.concurrency.available_cpus", lambda: 2)
    folder = make_models(pixel_specs(with_maps=True))
    sequential = load_predictor(Settings(models_dir=folder, model_execution="sequential"))
    parallel = load_predictor(Settings(models_dir=folder, model_execution="parallel"))
    assert parallel.parallel
    assert not sequential.parallel
    threads: set[str] = set()
    original = OnnxModel.run_outputs

    def recording(self: OnnxModel, batch: np.ndarray, **asked: bool) -> GraphOutputs:
        threads.add(threading.current_thread().name)
        return original(self, batch, **asked)

    monkeypatch.setattr(OnnxModel, "run_outputs", recording)
    try:
        images = _images()
        for one, other in zip(sequential.predict(images), parallel.predict(images), strict=True):
            for name in (*one.models, *one.ensembles):
                mine, theirs = (
                    {**one.models, **one.ensembles}[name],
                    {**other.models, **other.ensembles}[name],
                )
                np.testing.assert_array_equal(mine.probabilities, theirs.probabilities)
                assert (mine.label_index, mine.uncertain, mine.decided_by) == (
                    theirs.label_index,
                    theirs.uncertain,
                    theirs.decided_by,
                )
            assert set(one.timings) == set(other.timings) == set(parallel.models)
            assert other.inference_seconds > 0
        names = list(parallel.gradcam_models())
        explained = {
            predictor.parallel: Explainer(predictor, shap_time_limit=60).maps(
                images[1], ExplanationRequest(models=tuple(names))
            )
            for predictor in (sequential, parallel)
        }
        assert explained[True].target_index == explained[False].target_index
        for name, heatmap in explained[False].all_maps.items():
            np.testing.assert_array_equal(explained[True].all_maps[name], heatmap)
        # The parallel predictor ran its models on its own threads, the sequential one on the caller's.
        assert any(name.startswith("xray-model-run") for name in threads)
        assert threading.current_thread().name in threads
    finally:
        sequential.close()
        parallel.close()


@pytest.mark.parametrize("execution", ["parallel", "sequential"])
def test_the_warm_up_runs_one_full_batch_through_the_request_path(
    make_models: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, execution: str
) -> None:
    predictor = load_predictor(Settings(models_dir=make_models(pixel_specs()), model_execution=execution))  # type: ignore[arg-type]
    batches: list[int] = []
    original = OnnxModel.run_outputs

    def recording(self: OnnxModel, batch: np.ndarray, **asked: bool) -> GraphOutputs:
        batches.append(batch.shape[0])
        return original(self, batch, **asked)

    monkeypatch.setattr(OnnxModel, "run_outputs", recording)
    try:
        predictor.warm_up(batch_size=1)
        assert batches == [1, 1, 1]  # each model once
        batches.clear()
        predictor.warm_up(batch_size=8)
        # each model once, then eight images through every model (split among threads or not)
        assert batches[:3] == [1, 1, 1]
        assert sum(batches[3:]) == 8 * 3
    finally:
        predictor.close()
