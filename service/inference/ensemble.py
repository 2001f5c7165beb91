"""Calibrated probabilities and the two ensembles of SPEC.md.

* `classic`: the unweighted mean of the models' probabilities; label = argmax.
* `confidence`: a cascade; the models in `order` are asked in turn and the first whose top
  probability is >= `tau` decides alone; if none does, `classic` decides.

Both are `uncertain` when their top probability is below `abstain_below`. All arithmetic is in
float64 so that the ensembles are exact functions of the models' outputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Probabilities = npt.NDArray[np.float64]

CLASSIC = "classic"
CONFIDENCE = "confidence"


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
        uncertain: True when `confidence` is below the abstention threshold (ensembles only).
        decided_by: For the cascade, the model that decided, or "classic".
    """

    probabilities: Probabilities
    label_index: int
    confidence: float
    uncertain: bool = False
    decided_by: str | None = None


def decide(
    probabilities: Probabilities, *, abstain_below: float = 0.0, decided_by: str | None = None
) -> Decision:
    """Turn a probability vector into a `Decision`."""
    index = int(np.argmax(probabilities))
    top = float(probabilities[index])
    return Decision(
        probabilities=probabilities,
        label_index=index,
        confidence=top,
        uncertain=top < abstain_below,
        decided_by=decided_by,
    )


def classic(per_model: Mapping[str, Probabilities], *, abstain_below: float) -> Decision:
    """The unweighted mean of every model's probabilities.

    Args:
        per_model: Model name → calibrated probabilities, shape [classes].
        abstain_below: Threshold under which the decision is `uncertain`.
    """
    if not per_model:
        raise ValueError("the classic ensemble needs at least one model")
    mean = np.mean(np.stack([np.asarray(p, dtype=np.float64) for p in per_model.values()]), axis=0)
    return decide(mean, abstain_below=abstain_below)


def confidence_cascade(
    per_model: Mapping[str, Probabilities], *, order: Sequence[str], tau: float, abstain_below: float
) -> Decision:
    """The cascade: the first model in `order` with top probability >= `tau` decides.

    Args:
        per_model: Model name → calibrated probabilities, shape [classes].
        order: Models to ask, in turn; each must be in `per_model`.
        tau: Top probability at which a model decides alone.
        abstain_below: Threshold under which the decision is `uncertain`.

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
    fallback = classic(per_model, abstain_below=abstain_below)
    return decide(fallback.probabilities, abstain_below=abstain_below, decided_by=CLASSIC)
