"""SHAP explanations (Lundberg & Lee 2017) of the ONNX models, within a budget.

The `shap` package's Partition explainer over an image masker runs on the model's own input
(the radiograph resized to the model's size): regions are hidden hierarchically by replacing
them with a blurred copy of the image, and each region's contribution to the calibrated
probability of the target class is estimated. Positive contributions form the map, normalised
like Grad-CAM's so that both methods read the same.

Every explanation is bounded: at most `max_evals` model evaluations, and a deadline checked
before each batch of evaluations; a request beyond either is refused with a 422, never left to
run on. `shap` is an optional extra (`pip install '.[explain]'`); without it SHAP answers 501.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageFilter

from service.inference.gradcam import FloatMap, normalise
from xray.contract.errors import RequestError
from xray.contract.images import GrayImage, resize_gray
from xray.contract.model import OnnxModel

#: Evaluations per batch sent to onnxruntime.
BATCH = 50


class ExplanationLimitError(RequestError):
    """The explanation would exceed the server's evaluation budget or time limit."""

    status = 422
    slug = "explanation-limit"
    title = "The explanation exceeds the server's budget"


class ExplanationUnavailableError(RequestError):
    """The explanation method is not installed on this server."""

    status = 501
    slug = "not-implemented"
    title = "This explanation method is not available on this server"


@dataclass(frozen=True)
class ShapBudget:
    """How much one SHAP request may cost."""

    max_evals: int
    deadline: float  # time.monotonic() value

    @classmethod
    def starting_now(cls, max_evals: int, seconds: float) -> ShapBudget:
        """A budget of `max_evals` evaluations and `seconds` from now."""
        return cls(max_evals=max_evals, deadline=time.monotonic() + seconds)


def _import_shap() -> Any:
    try:
        import shap
    except ImportError as exc:
        raise ExplanationUnavailableError(
            "SHAP is not installed on this server (install the `explain` extra); use method=gradcam"
        ) from exc
    return shap


def shap_map(model: OnnxModel, pixels: GrayImage, target: int, budget: ShapBudget) -> FloatMap:
    """The normalised SHAP map of `model` for class `target`, at the model's input size.

    Args:
        model: The ONNX model.
        pixels: The decoded radiograph (any size; resized to the model's input).
        target: Index of the class explained.
        budget: Evaluation budget and deadline.

    Raises:
        ExplanationLimitError: The deadline passed before the explanation finished.
        ExplanationUnavailableError: `shap` is not installed.
    """
    shap = _import_shap()
    spec = model.entry.input
    image = resize_gray(pixels, spec.height, spec.width)
    # The background a hidden region takes: the same radiograph, blurred beyond recognition.
    radius = max(spec.height, spec.width) / 16
    blurred = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius)), dtype=np.float32)

    def evaluate(masked: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
        if time.monotonic() > budget.deadline:
            raise ExplanationLimitError(
                "the SHAP explanation ran past the server's time limit; ask for fewer evaluations "
                "(max_evals) or fewer models"
            )
        batch = model.from_gray(np.asarray(masked, dtype=np.float32)[..., 0])
        return model.calibrated(model.run(batch))

    masker = shap.maskers.Image(blurred[..., None], (spec.height, spec.width, 1))
    explainer = shap.Explainer(evaluate, masker, algorithm="partition")
    values = explainer(
        image.astype(np.float32)[None, ..., None],
        max_evals=budget.max_evals,
        batch_size=BATCH,
        outputs=[target],
        silent=True,
    ).values
    return normalise(np.asarray(values, dtype=np.float32)[0, ..., 0, 0])
