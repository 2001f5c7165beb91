"""The ensemble arithmetic, asserted exactly: pure functions first, then through ONNX and the manifest."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from service.core.config import Settings
from service.inference.predictor import load_predictor
from tests.factories import ModelSpec, gradient, png_bytes
from xray.contract.ensembles import (
    CLASSIC,
    CONFIDENCE,
    ENSEMBLES,
    Decision,
    calibrated_softmax,
    classic,
    confidence_cascade,
    decide,
    members,
)
from xray.contract.manifest import ConfidenceEnsembleSpec, EnsembleSpec
from xray.contract.preprocessing import decode_image

# float32 logits round-trip log(p) → softmax to within a few ulps of float32.
EXACT = 1e-6


def probs(*values: float) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


class TestPureFunctions:
    def test_classic_is_the_unweighted_mean_and_argmax(self) -> None:
        decision = classic(
            {"a": probs(0.1, 0.2, 0.7), "b": probs(0.2, 0.5, 0.3), "c": probs(0.6, 0.3, 0.1)},
            abstain_below=0.5,
        )
        np.testing.assert_allclose(decision.probabilities, [0.3, 1 / 3, 11 / 30], atol=1e-15)
        assert decision.label_index == 2
        assert decision.confidence == pytest.approx(11 / 30, abs=1e-15)
        assert decision.uncertain  # 0.3667 < 0.5

    def test_classic_with_weights_is_the_normalised_weighted_mean(self) -> None:
        per_model = {"a": probs(0.1, 0.2, 0.7), "b": probs(0.2, 0.5, 0.3), "c": probs(0.6, 0.3, 0.1)}
        decision = classic(per_model, abstain_below=0.0, weights={"a": 2.0, "b": 1.0, "c": 1.0})
        np.testing.assert_allclose(decision.probabilities, [1.0 / 4, 1.2 / 4, 1.8 / 4], atol=1e-15)
        assert decision.label_index == 2

    def test_a_model_weighted_zero_is_not_a_member(self) -> None:
        per_model = {"a": probs(0.1, 0.2, 0.7), "b": probs(0.9, 0.05, 0.05)}
        weights = {"a": 1.0, "b": 0.0}
        assert members(per_model, weights) == ["a"]
        assert members(per_model, None) == ["a", "b"]
        np.testing.assert_array_equal(
            classic(per_model, abstain_below=0.0, weights=weights).probabilities, per_model["a"]
        )
        fallback = confidence_cascade(per_model, order=["a"], tau=0.99, abstain_below=0.0, weights=weights)
        assert fallback.decided_by == "classic"
        np.testing.assert_array_equal(fallback.probabilities, per_model["a"])
        with pytest.raises(ValueError, match="weighted above 0"):
            classic(per_model, abstain_below=0.0, weights={"a": 0.0, "b": 0.0})

    def test_uncertain_is_strictly_below_the_threshold(self) -> None:
        at = classic({"a": probs(0.25, 0.25, 0.5)}, abstain_below=0.5)
        below = classic({"a": probs(0.26, 0.25, 0.49)}, abstain_below=0.5)
        assert not at.uncertain
        assert below.uncertain

    def test_cascade_first_model_decides(self) -> None:
        per_model = {"a": probs(0.95, 0.03, 0.02), "b": probs(0.0, 0.99, 0.01), "c": probs(0.3, 0.3, 0.4)}
        decision = confidence_cascade(per_model, order=["a", "b"], tau=0.9, abstain_below=0.5)
        assert decision.decided_by == "a"
        np.testing.assert_array_equal(decision.probabilities, per_model["a"])
        assert decision.label_index == 0

    def test_cascade_second_model_decides_when_the_first_is_unsure(self) -> None:
        per_model = {"a": probs(0.85, 0.1, 0.05), "b": probs(0.0, 0.92, 0.08), "c": probs(0.3, 0.3, 0.4)}
        decision = confidence_cascade(per_model, order=["a", "b"], tau=0.9, abstain_below=0.5)
        assert decision.decided_by == "b"
        assert decision.label_index == 1
        assert decision.confidence == 0.92

    def test_cascade_tau_is_inclusive(self) -> None:
        decision = confidence_cascade({"a": probs(0.9, 0.05, 0.05)}, order=["a"], tau=0.9, abstain_below=0.5)
        assert decision.decided_by == "a"

    def test_cascade_falls_back_to_classic(self) -> None:
        per_model = {"a": probs(0.5, 0.4, 0.1), "b": probs(0.2, 0.7, 0.1), "c": probs(0.1, 0.1, 0.8)}
        decision = confidence_cascade(per_model, order=["a", "b"], tau=0.9, abstain_below=0.5)
        assert decision.decided_by == "classic"
        np.testing.assert_allclose(decision.probabilities, [0.8 / 3, 1.2 / 3, 1.0 / 3], atol=1e-15)
        assert decision.label_index == 1
        assert decision.uncertain  # 0.4 < 0.5

    def test_temperature_softens_without_changing_the_argmax(self) -> None:
        logits = np.array([[2.0, 0.0, -1.0]], dtype=np.float32)
        plain = calibrated_softmax(logits, 1.0)[0]
        soft = calibrated_softmax(logits, 2.0)[0]
        expected = np.exp([1.0, 0.0, -0.5]) / np.exp([1.0, 0.0, -0.5]).sum()
        np.testing.assert_allclose(soft, expected, atol=1e-15)
        assert soft.max() < plain.max()
        assert soft.argmax() == plain.argmax()


def predict_once(folder: Path):  # type: ignore[no-untyped-def]
    predictor = load_predictor(Settings(models_dir=folder))
    (prediction,) = predictor.predict([decode_image(png_bytes(gradient()))])
    return prediction


class TestThroughOnnxAndManifest:
    """Constant-probability ONNX models, so every number in the answer is known in advance."""

    def test_per_model_probabilities_and_classic_mean(self, make_models: Callable[..., Path]) -> None:
        folder = make_models(
            [
                ModelSpec("scratch", probabilities=[0.1, 0.2, 0.7]),
                ModelSpec("inception_resnet_v2", probabilities=[0.2, 0.5, 0.3]),
                ModelSpec("efficientnet_v2_b2", probabilities=[0.6, 0.3, 0.1]),
            ],
            abstain_below=0.4,
        )
        prediction = predict_once(folder)
        np.testing.assert_allclose(prediction.models["scratch"].probabilities, [0.1, 0.2, 0.7], atol=EXACT)
        classic_decision = prediction.ensembles["classic"]
        np.testing.assert_allclose(classic_decision.probabilities, [0.3, 1 / 3, 11 / 30], atol=EXACT)
        assert prediction.classes[classic_decision.label_index] == "tuberculosis"
        assert classic_decision.uncertain  # 0.367 < 0.4
        cascade = prediction.ensembles["confidence"]
        assert cascade.decided_by == "classic"
        np.testing.assert_allclose(cascade.probabilities, classic_decision.probabilities, atol=1e-15)

    @pytest.mark.parametrize(
        ("efficientnet", "inception", "decided_by", "label"),
        [
            ([0.02, 0.03, 0.95], [0.05, 0.92, 0.03], "efficientnet_v2_b2", "tuberculosis"),
            ([0.3, 0.3, 0.4], [0.05, 0.92, 0.03], "inception_resnet_v2", "pneumonia"),
            ([0.3, 0.3, 0.4], [0.5, 0.4, 0.1], "classic", "normal"),
        ],
        ids=["first-decides", "second-decides", "falls-back-to-classic"],
    )
    def test_cascade_branches(
        self,
        make_models: Callable[..., Path],
        efficientnet: list[float],
        inception: list[float],
        decided_by: str,
        label: str,
    ) -> None:
        folder = make_models(
            [
                ModelSpec("scratch", probabilities=[0.8, 0.1, 0.1]),
                ModelSpec("inception_resnet_v2", probabilities=inception),
                ModelSpec("efficientnet_v2_b2", probabilities=efficientnet),
            ]
        )
        cascade = predict_once(folder).ensembles["confidence"]
        assert cascade.decided_by == decided_by
        assert predict_once(folder).classes[cascade.label_index] == label

    def test_weights_are_read_from_the_manifest_and_a_zero_weight_does_not_disagree(
        self, make_models: Callable[..., Path]
    ) -> None:
        specs = [
            ModelSpec("scratch", probabilities=[0.1, 0.2, 0.7]),
            ModelSpec("inception_resnet_v2", probabilities=[0.1, 0.1, 0.8]),
            ModelSpec("efficientnet_v2_b2", probabilities=[0.7, 0.2, 0.1]),
        ]
        unweighted = predict_once(make_models(specs, abstain_below=0.0)).ensembles["classic"]
        weighted = predict_once(
            make_models(
                specs,
                abstain_below=0.0,
                weights={"scratch": 0.75, "inception_resnet_v2": 0.25, "efficientnet_v2_b2": 0.0},
            )
        ).ensembles
        assert unweighted.uncertain_reasons == ("models_disagree",)
        np.testing.assert_allclose(weighted["classic"].probabilities, [0.1, 0.175, 0.725], atol=EXACT)
        for decision in weighted.values():
            assert decision.uncertain_reasons == ()  # the two members agree; efficientnet is not one

    def test_order_and_tau_are_read_from_the_manifest(self, make_models: Callable[..., Path]) -> None:
        specs = [
            ModelSpec("scratch", probabilities=[0.1, 0.1, 0.8]),
            ModelSpec("inception_resnet_v2", probabilities=[0.05, 0.93, 0.02]),
            ModelSpec("efficientnet_v2_b2", probabilities=[0.95, 0.03, 0.02]),
        ]
        default = predict_once(make_models(specs)).ensembles["confidence"]
        reordered = predict_once(
            make_models(specs, order=["inception_resnet_v2", "efficientnet_v2_b2"])
        ).ensembles["confidence"]
        strict_tau = predict_once(make_models(specs, tau=0.96)).ensembles["confidence"]
        only_scratch = predict_once(make_models(specs, order=["scratch"], tau=0.8)).ensembles["confidence"]
        assert default.decided_by == "efficientnet_v2_b2"
        assert reordered.decided_by == "inception_resnet_v2"
        assert strict_tau.decided_by == "classic"
        assert only_scratch.decided_by == "scratch"

    def test_abstain_threshold_is_read_from_the_manifest(self, make_models: Callable[..., Path]) -> None:
        specs = [
            ModelSpec(name, probabilities=[0.2, 0.2, 0.6]) for name in ("scratch", "inception_resnet_v2")
        ]
        order = ["inception_resnet_v2"]
        assert (
            not predict_once(make_models(specs, order=order, abstain_below=0.55))
            .ensembles["classic"]
            .uncertain
        )
        assert (
            predict_once(make_models(specs, order=order, abstain_below=0.65)).ensembles["classic"].uncertain
        )

    def test_temperature_from_the_manifest_is_applied(self, make_models: Callable[..., Path]) -> None:
        folder = make_models(
            [ModelSpec("scratch", probabilities=[0.1, 0.2, 0.7], temperature=2.0)], order=["scratch"]
        )
        calibrated = predict_once(folder).models["scratch"].probabilities
        expected = np.sqrt([0.1, 0.2, 0.7]) / np.sqrt([0.1, 0.2, 0.7]).sum()
        np.testing.assert_allclose(calibrated, expected, atol=EXACT)


class TestTable:
    """`ENSEMBLES` is the one list of ensembles: answers, schema and `/models` follow it."""

    SPEC = EnsembleSpec(confidence=ConfidenceEnsembleSpec(order=["b", "a"], tau=0.6), abstain_below=0.45)
    PER_MODEL: ClassVar[dict[str, np.ndarray]] = {"a": probs(0.1, 0.2, 0.7), "b": probs(0.5, 0.3, 0.2)}

    def test_each_entry_combines_as_its_function(self) -> None:
        combined = {name: entry.combine(self.PER_MODEL, self.SPEC) for name, entry in ENSEMBLES.items()}
        expected = {
            CLASSIC: classic(self.PER_MODEL, abstain_below=0.45),
            CONFIDENCE: confidence_cascade(self.PER_MODEL, order=["b", "a"], tau=0.6, abstain_below=0.45),
        }
        for name, decision in expected.items():
            np.testing.assert_array_equal(combined[name].probabilities, decision.probabilities)
            assert combined[name].decided_by == decision.decided_by
            assert combined[name].uncertain == decision.uncertain

    def test_the_answer_schema_and_the_models_description_have_a_field_per_entry(self) -> None:
        from service.api.schemas import EnsembleInfo, Ensembles

        assert list(Ensembles.model_fields) == list(ENSEMBLES)
        assert list(EnsembleInfo.model_fields) == [*ENSEMBLES, "abstain_below"]
        described = {name: entry.describe(self.SPEC) for name, entry in ENSEMBLES.items()}
        assert described[CONFIDENCE].model_dump() == {"order": ["b", "a"], "tau": 0.6}
        for name, entry in ENSEMBLES.items():
            assert isinstance(described[name], entry.description_type)

    def test_a_new_entry_reaches_every_answer(
        self, make_models: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def first_model(per_model: Mapping[str, np.ndarray], spec: EnsembleSpec) -> Decision:
            return decide(next(iter(per_model.values())), abstain_below=spec.abstain_below)

        table = {**ENSEMBLES, "first": replace(ENSEMBLES[CLASSIC], name="first", combine=first_model)}
        monkeypatch.setattr("service.inference.predictor.ENSEMBLES", table)
        specs = [
            ModelSpec("scratch", probabilities=[0.1, 0.2, 0.7]),
            ModelSpec("inception_resnet_v2", probabilities=[0.6, 0.3, 0.1]),
        ]
        predictor = load_predictor(Settings(models_dir=make_models(specs, order=["scratch"])))
        (prediction,) = predictor.predict([decode_image(png_bytes(gradient()))])
        assert list(prediction.ensembles) == [CLASSIC, CONFIDENCE, "first"]
        first = next(iter(prediction.models.values()))
        np.testing.assert_array_equal(prediction.ensembles["first"].probabilities, first.probabilities)
