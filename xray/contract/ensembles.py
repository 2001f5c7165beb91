"""Calibrated probabilities and the ensembles of docs/api.md, one `ENSEMBLES` entry each.

* `classic`: the mean of the models' probabilities, unweighted unless the manifest gives weights
  chosen on validation (`ensembles.classic.weights`); label = argmax.
* `confidence`: a cascade; the models in `order` are asked in turn and the first whose top
  probability is >= `tau` decides alone; if none does, `classic` decides.

Both are `uncertain` when they have a reason to be (`uncertain_reasons`, see `REASONS`): their top
probability is below `abstain_below`, the input check finds the image unlike the training images,
or the members' top labels differ. The members are the models with a weight above 0 (all of them
without weights): a model weighted 0 is still answered per model, but takes no part in the
ensembles. All arithmetic is in float64 so that the ensembles are exact
functions of the models' outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel

from xray.contract.manifest import ClassicEnsembleSpec, ConfidenceEnsembleSpec, EnsembleSpec

Probabilities = npt.NDArray[np.float64]

CLASSIC = "classic"
CONFIDENCE = "confidence"

LOW_CONFIDENCE = "low_confidence"
OUT_OF_DISTRIBUTION = "out_of_distribution"
MODELS_DISAGREE = "models_disagree"
#: Why an ensemble's answer is uncertain; each reason is defined here, once.
REASONS: dict[str, str] = {
    LOW_CONFIDENCE: "the ensemble's top probability is below the manifest's `abstain_below`, "
    "chosen on validation for the accuracy of the answers it keeps",
    OUT_OF_DISTRIBUTION: "the input check finds the image unlike the frontal chest radiographs the "
    "models were trained on; the labels are not meaningful for it",
    MODELS_DISAGREE: "the top labels of the networks the ensembles are made of are not all the same",
}


def calibrated_softmax(logits: npt.NDArray[np.floating], temperature: float) -> Probabilities:
    """Return softmax(logits / temperature) along the last axis, in float64.

    Args:
        logits: Pre-softmax scores, shape [..., classes].
        temperature: The model's calibration temperature (> 0); 1 leaves it uncalibrated.
    """
    scaled = np.asarray(logits, dtype=np.float64) / float(temperature)
    scaled -= scaled.max(axis=-1, keepdims=True)  # numerically safe, same result
    exp = np.exp(scaled)
    return np.asarray(exp / exp.sum(axis=-1, keepdims=True), dtype=np.float64)


@dataclass(frozen=True)
class Decision:
    """One answer: probabilities over the classes and what follows from them.

    Attributes:
        probabilities: Shape [classes].
        label_index: Index of the top class (the first one on a tie).
        confidence: The top probability.
        uncertain: True when the answer has a reason to be doubted (ensembles only).
        decided_by: For the cascade, the model that decided, or "classic".
        uncertain_reasons: Why it is uncertain, names from `REASONS` (empty when certain).
    """

    probabilities: Probabilities
    label_index: int
    confidence: float
    uncertain: bool = False
    decided_by: str | None = None
    uncertain_reasons: tuple[str, ...] = ()

    def with_reasons(self, *reasons: str) -> Decision:
        """This decision, made uncertain for `reasons` as well (unknown names are refused)."""
        unknown = [reason for reason in reasons if reason not in REASONS]
        if unknown:
            raise ValueError(f"unknown uncertainty reason(s) {unknown}")
        merged = tuple(dict.fromkeys((*self.uncertain_reasons, *reasons)))
        return replace(self, uncertain=bool(merged), uncertain_reasons=merged)


def decide(
    probabilities: Probabilities, *, abstain_below: float = 0.0, decided_by: str | None = None
) -> Decision:
    """Turn a probability vector into a `Decision`."""
    index = int(np.argmax(probabilities))
    top = float(probabilities[index])
    reasons = (LOW_CONFIDENCE,) if top < abstain_below else ()
    return Decision(
        probabilities=probabilities,
        label_index=index,
        confidence=top,
        uncertain=bool(reasons),
        decided_by=decided_by,
        uncertain_reasons=reasons,
    )


def members(names: Iterable[str], weights: Mapping[str, float] | None) -> list[str]:
    """The models the ensembles are made of: those weighted above 0, or all without weights."""
    return [name for name in names if weights is None or weights.get(name, 0.0) > 0]


def classic(
    per_model: Mapping[str, Probabilities],
    *,
    abstain_below: float,
    weights: Mapping[str, float] | None = None,
) -> Decision:
    """The mean of the models' probabilities, weighted when `weights` are given.

    Args:
        per_model: Model name → calibrated probabilities, shape [classes].
        abstain_below: Threshold under which the decision is `uncertain`.
        weights: Model name → weight >= 0 (normalised here); None: the unweighted mean.
    """
    return decide(mean_probabilities(per_model, weights), abstain_below=abstain_below)


def mean_probabilities(
    per_model: Mapping[str, npt.NDArray[np.floating]], weights: Mapping[str, float] | None
) -> Probabilities:
    """The members' probabilities averaged with `weights` (normalised), in float64.

    Args:
        per_model: Model name → probabilities, shape [..., classes] (one image or a batch).
        weights: Model name → weight >= 0; None: the unweighted mean.
    """
    names = members(per_model, weights)
    if not names:
        raise ValueError("the classic ensemble needs at least one model weighted above 0")
    stacked = np.stack([np.asarray(per_model[name], dtype=np.float64) for name in names])
    factors = np.asarray([1.0 if weights is None else float(weights[name]) for name in names])
    return np.asarray(np.tensordot(factors / factors.sum(), stacked, axes=1), dtype=np.float64)


def confidence_cascade(
    per_model: Mapping[str, Probabilities],
    *,
    order: Sequence[str],
    tau: float,
    abstain_below: float,
    weights: Mapping[str, float] | None = None,
) -> Decision:
    """The cascade: the first model in `order` with top probability >= `tau` decides.

    Args:
        per_model: Model name → calibrated probabilities, shape [classes].
        order: Models to ask, in turn; each must be in `per_model`.
        tau: Top probability at which a model decides alone.
        abstain_below: Threshold under which the decision is `uncertain`.
        weights: The classic fallback's weights (None: unweighted).

    Returns:
        The deciding model's probabilities with `decided_by` set to its name, or the classic
        ensemble's with `decided_by="classic"`.
    """
    for name in order:
        probabilities = per_model[name]
        if float(np.max(probabilities)) >= tau:
            return decide(
                np.asarray(probabilities, dtype=np.float64), abstain_below=abstain_below, decided_by=name
            )
    fallback = classic(per_model, abstain_below=abstain_below, weights=weights)
    return decide(fallback.probabilities, abstain_below=abstain_below, decided_by=CLASSIC)


@dataclass(frozen=True)
class Ensemble:
    """One way of combining the models' answers.

    Attributes:
        name: Its key in every answer (`ensembles.<name>`).
        rule: One sentence saying what it answers, for the documents and `/models`.
        combine: Per-model calibrated probabilities and the manifest's ensemble settings → its decision.
        describe: The manifest's ensemble settings → what `/models` reports of it.
        description_type: The type `describe` returns (for the API schema).
        names_decider: Whether its answers name the model that decided (`decided_by`).
    """

    name: str
    rule: str
    combine: Callable[[Mapping[str, Probabilities], EnsembleSpec], Decision]
    describe: Callable[[EnsembleSpec], BaseModel]
    description_type: type[BaseModel]
    names_decider: bool = False


class ClassicDescription(ClassicEnsembleSpec):
    """The mean, described: its rule and the manifest's weights (null: unweighted)."""

    rule: str


def _classic(per_model: Mapping[str, Probabilities], spec: EnsembleSpec) -> Decision:
    return classic(per_model, abstain_below=spec.abstain_below, weights=spec.classic.weights)


def _cascade(per_model: Mapping[str, Probabilities], spec: EnsembleSpec) -> Decision:
    return confidence_cascade(
        per_model,
        order=spec.confidence.order,
        tau=spec.confidence.tau,
        abstain_below=spec.abstain_below,
        weights=spec.classic.weights,
    )


_CLASSIC_RULE = (
    "mean of the models' probabilities: unweighted, or weighted by `weights` (chosen on validation) "
    "when the manifest gives them"
)

#: The ensembles every answer carries, in the order they are reported. A new one is an entry here
#: (and, if it has settings, a field of `EnsembleSpec`); the API schema, `/models`, the metrics,
#: the evaluation report and the model card read this table.
ENSEMBLES: dict[str, Ensemble] = {
    ensemble.name: ensemble
    for ensemble in (
        Ensemble(
            CLASSIC,
            _CLASSIC_RULE,
            _classic,
            lambda spec: ClassicDescription(rule=_CLASSIC_RULE, weights=spec.classic.weights),
            ClassicDescription,
        ),
        Ensemble(
            CONFIDENCE,
            "a cascade: the first model in `order` whose top probability reaches `tau` decides alone; "
            "otherwise the classic mean",
            _cascade,
            lambda spec: spec.confidence,
            ConfidenceEnsembleSpec,
            names_decider=True,
        ),
    )
}
