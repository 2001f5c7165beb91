"""The explanation use case: which models, the maps, the ensemble map, and the PNGs, in one place.

`/explain`, the PACS write-back's overlay and `xray explain` all go through `Explainer`:

    check the request (target, models)  →  one forward pass (Grad-CAM maps come with it) or SHAP
    →  each model's map upsampled to the image (or within `max_side`)  →  the ensemble map
    →  heatmap and overlay PNGs (`rendering.py`), side by side on the render pool.

The maps' maths is `gradcam.py` and `shap.py`; turning maps into bytes is `rendering.py`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from service.inference.gradcam import FloatMap, normalise, upsample
from service.inference.predictor import Prediction, Predictor
from service.inference.rendering import encode_png, overlay_rgb, render_all, render_heatmaps
from service.inference.shap import ShapBudget, shap_map
from xray.contract.ensembles import CLASSIC
from xray.contract.errors import InvalidParametersError
from xray.contract.images import DecodedImage, resize_gray

ExplanationMethod = Literal["gradcam", "shap"]


@dataclass(frozen=True)
class ExplanationRequest:
    """What a client asks to be explained, and how the answer is drawn.

    Attributes:
        method: "gradcam" (from the forward pass) or "shap" (up to `max_evals` evaluations per model).
        target: "predicted" (the classic ensemble's label) or a class name.
        models: The models to explain (see `Explainer.models_for`).
        max_evals: SHAP evaluations per model.
        max_side: Draw the maps with their longer side at most this (the image's aspect kept);
            None: at the image's size.
        overlays: Draw the overlay PNGs as well as the heatmaps.
        include_image: Also draw the decoded radiograph (what the maps are drawn over).
    """

    method: ExplanationMethod = "gradcam"
    target: str = "predicted"
    models: tuple[str, ...] = ()
    max_evals: int = 300
    max_side: int | None = None
    overlays: bool = True
    include_image: bool = False


@dataclass(frozen=True)
class Explanation:
    """A prediction with its explanation maps (values in [0, 1], at the drawn size)."""

    method: ExplanationMethod
    prediction: Prediction
    target_index: int
    maps: dict[str, FloatMap]
    ensemble: FloatMap

    @property
    def all_maps(self) -> dict[str, FloatMap]:
        """Each model's map, then the ensemble's under `ensemble`."""
        return {**self.maps, "ensemble": self.ensemble}


@dataclass(frozen=True)
class RenderedExplanation:
    """An explanation with its PNGs.

    Attributes:
        result: The prediction, the target and the maps.
        pngs: Per model and `ensemble`: (heatmap PNG, overlay PNG or None without overlays).
        image_png: The decoded radiograph as a PNG at the drawn size, when asked for.
        timings: Seconds spent in `explain` (models and maps) and in `render` (PNGs).
    """

    result: Explanation
    pngs: dict[str, tuple[bytes, bytes | None]]
    image_png: bytes | None
    timings: dict[str, float]


def display_size(size: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    """(height, width) scaled down so that the longer side is at most `max_side` (never up)."""
    height, width = size
    if max_side is None or max(height, width) <= max_side:
        return height, width
    scale = max_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _accept_all(_prediction: Prediction) -> None:
    """A `before_render` that lets every prediction through."""


class Explainer:
    """Explains the loaded models' answers for one image at a time (blocking; run it on a pool)."""

    def __init__(
        self, predictor: Predictor, *, shap_time_limit: float, render_pool: Executor | None = None
    ) -> None:
        """Explain with `predictor`'s models.

        Args:
            predictor: The loaded models.
            shap_time_limit: Seconds a SHAP explanation may run, from the start of its job.
            render_pool: Threads that encode one request's PNGs side by side (None: one by one).
        """
        self.predictor = predictor
        self.shap_time_limit = shap_time_limit
        self.render_pool = render_pool

    def models_for(self, target: str, models: Sequence[str] | None, method: ExplanationMethod) -> list[str]:
        """Check an explanation's target and models; return the models to explain.

        Args:
            target: "predicted" or a class name.
            models: Model names, or None for every model the method can explain.
            method: "gradcam" (needs the class-map output) or "shap" (any model).

        Raises:
            InvalidParametersError: An unknown target or model, or a model without maps.
        """
        predictor = self.predictor
        if target != "predicted" and target not in predictor.classes:
            raise InvalidParametersError(
                f"target must be `predicted` or one of {list(predictor.classes)}, got {target!r}"
            )
        available = predictor.gradcam_models() if method == "gradcam" else list(predictor.models)
        if not available:
            raise InvalidParametersError(
                "none of the loaded models was exported with Grad-CAM maps (outputs.class_maps)"
            )
        chosen = [name.strip() for name in models if name.strip()] if models is not None else available
        unknown = [name for name in chosen if name not in predictor.models]
        if unknown or not chosen:
            raise InvalidParametersError(
                f"models must name some of {list(predictor.models)}, got {list(chosen)}"
            )
        without = [name for name in chosen if name not in available]
        if without:
            raise InvalidParametersError(f"model(s) {without} were exported without Grad-CAM maps")
        return chosen

    def maps(self, image: DecodedImage, request: ExplanationRequest) -> Explanation:
        """Predict one image and explain the target class for each of `request.models`.

        Grad-CAM comes from the same forward pass as the probabilities; SHAP costs up to
        `request.max_evals` further evaluations per model, within the time limit from now.

        Returns:
            The prediction, the target class, each model's normalised map and the ensemble map
            (each model's map weighted by its probability of the target), at the drawn size.
        """
        predictor, models = self.predictor, list(request.models)
        done = predictor.forward([image], maps_for=models if request.method == "gradcam" else ())
        (prediction,) = predictor.combine([image], done)
        index = (
            prediction.ensembles[CLASSIC].label_index
            if request.target == "predicted"
            else predictor.classes.index(request.target)
        )
        if request.method == "gradcam":
            small = {name: normalise(done.maps[name][0, ..., index]) for name in models}
        else:
            budget = ShapBudget.starting_now(request.max_evals, self.shap_time_limit)
            small = {name: shap_map(predictor.models[name], image.pixels, index, budget) for name in models}
        height, width = display_size(image.size, request.max_side)
        per_model = {name: upsample(heatmap, height, width) for name, heatmap in small.items()}
        weights = np.asarray(
            [prediction.models[name].probabilities[index] for name in models], dtype=np.float32
        )
        if float(weights.sum()) <= 0.0:
            weights = np.ones_like(weights)
        weights /= weights.sum()
        # Accumulated in place in float32: a stacked tensordot upcast and copied every full-size
        # map (10 ms for a 512x512 image, more than the forward pass of the scratch network).
        combined = np.zeros((height, width), dtype=np.float32)
        for weight, name in zip(weights, models, strict=True):
            combined += np.float32(weight) * per_model[name]
        return Explanation(request.method, prediction, index, per_model, normalise(combined))

    def explain(
        self,
        image: DecodedImage,
        request: ExplanationRequest,
        *,
        before_render: Callable[[Prediction], None] = _accept_all,
    ) -> RenderedExplanation:
        """The maps of `maps`, drawn as PNGs over the radiograph.

        Args:
            image: The decoded upload.
            request: What to explain and how to draw it.
            before_render: Called with the prediction before any PNG is drawn; it may raise to
                refuse the answer (the service's out-of-distribution refusal), sparing the drawing.
        """
        started = time.perf_counter()
        result = self.maps(image, request)
        explained = time.perf_counter()
        before_render(result.prediction)
        shown = resize_gray(image.pixels, *display_size(image.size, request.max_side))
        if request.overlays:
            pngs: dict[str, tuple[bytes, bytes | None]] = dict(
                render_all(shown, result.all_maps, pool=self.render_pool)
            )
        else:
            heatmaps = render_heatmaps(result.all_maps, self.render_pool)
            pngs = {name: (heat, None) for name, heat in heatmaps.items()}
        image_png = encode_png(shown) if request.include_image else None
        timings = {"explain": explained - started, "render": time.perf_counter() - explained}
        return RenderedExplanation(result, pngs, image_png, timings)

    def overlay(
        self, image: DecodedImage, *, before_render: Callable[[Prediction], None] = _accept_all
    ) -> tuple[Prediction, npt.NDArray[np.uint8] | None]:
        """The prediction and the ensemble Grad-CAM overlay's RGB pixels at the image's size.

        The overlay is None when no model gives Grad-CAM maps (the prediction is still made).
        """
        models = tuple(self.predictor.gradcam_models())
        if not models:
            (prediction,) = self.predictor.predict([image])
            before_render(prediction)
            return prediction, None
        result = self.maps(image, ExplanationRequest(models=models))
        before_render(result.prediction)
        return result.prediction, overlay_rgb(image.pixels, result.ensemble)

    def warm_up(self) -> None:
        """Compute one small SHAP map, so that the first SHAP request does not pay shap's start-up.

        shap compiles parts of itself with numba on first use: about 15 s on two cores, after
        which a call takes milliseconds. Without this, the first `/explain?method=shap` after a
        start would wait for the compiler (and could run past its time limit).

        Raises:
            ExplanationUnavailableError: shap is not installed.
        """
        model = next(iter(self.predictor.models.values()))
        spec = model.entry.input
        blank = np.zeros((spec.height, spec.width), dtype=np.uint8)
        shap_map(model, blank, 0, ShapBudget.starting_now(10, 600))
