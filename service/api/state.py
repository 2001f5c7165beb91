"""What the running service holds: settings, the loaded models, the queue, metrics, readiness."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from service.api.metrics import Metrics
from service.core.config import Settings
from service.errors import ClientGoneError, InferenceFailedError, OutOfDistributionError, RequestError
from service.inference.batcher import MicroBatcher
from service.inference.gradcam import base64_text, encode_png, overlay_rgb, render_all_base64
from service.inference.predictor import (
    Explanation,
    ExplanationMethod,
    Prediction,
    Predictor,
    cpu_share,
    display_size,
)
from service.inference.preprocessing import DecodedImage, ImageFormat, decode_image, never_gone, resize_gray
from service.inference.scheduler import InferenceScheduler
from service.inference.shap import ShapBudget

logger = logging.getLogger(__name__)

T = TypeVar("T")


@contextlib.contextmanager
def _runtime_failures(what: str) -> Iterator[None]:
    """Turn an unforeseen runtime failure into a 503 for this request; the service stays up."""
    try:
        yield
    except RequestError:
        raise
    except Exception as exc:
        logger.exception("inference failed for %s", what)
        raise InferenceFailedError(
            f"the model runtime failed on {what}; the service is still up, retry or report it",
            retry_after=1,
        ) from exc


@dataclass(frozen=True)
class RenderedExplanation:
    """An explanation with its maps as base64 PNGs, as /explain answers it.

    Attributes:
        result: The prediction, the target and the maps.
        pngs: Per model and `ensemble`: (heatmap PNG, overlay PNG or None), base64.
        image_png: The decoded radiograph as a base64 PNG, when asked for.
        timings: Seconds spent in `explain` (models and maps) and in `render` (PNGs).
    """

    result: Explanation
    pngs: dict[str, tuple[str, str | None]]
    image_png: str | None
    timings: dict[str, float]


@dataclass
class Readiness:
    """Whether warm-up has passed, or why it failed."""

    ready: bool = False
    error: str | None = None


@dataclass
class ServiceState:
    """The service's long-lived objects, created once in the app's lifespan."""

    settings: Settings
    predictor: Predictor
    scheduler: InferenceScheduler
    metrics: Metrics
    readiness: Readiness = field(default_factory=Readiness)
    batcher: MicroBatcher[DecodedImage, Prediction] | None = None

    @property
    def render_threads(self) -> int:
        """Threads to render one request's PNGs: each inference worker's share of the CPU quota."""
        return cpu_share(self.settings)

    async def warm_up(self) -> None:
        """Run the warm-up inference off the event loop, then mark the service ready."""
        try:
            await asyncio.to_thread(self.predictor.warm_up, self.settings.batch_max_size)
        except Exception as exc:
            self.readiness.error = f"warm-up failed: {exc}"
            logger.exception("warm-up failed; the service stays unready")
            return
        self.readiness.ready = True
        self.metrics.ready.set(1)
        logger.info("all models warmed up; ready")
        try:
            # After readiness: /predict and Grad-CAM need none of it, and it takes seconds.
            await asyncio.to_thread(self.predictor.warm_up_explanations)
        except Exception:
            logger.exception("SHAP warm-up failed; SHAP requests will pay their own start-up")

    def _decode_job(
        self, data: bytes, declared: ImageFormat | None, client_gone: Callable[[], bool] = never_gone
    ) -> Callable[[], DecodedImage]:
        settings = self.settings

        def decode() -> DecodedImage:
            # Checked when a worker picks the job up: a client that left while it was queued
            # costs no decoding and no inference.
            if client_gone():
                raise ClientGoneError("the client disconnected before its image was decoded")
            return decode_image(
                data,
                declared=declared,
                max_pixels=settings.max_pixels,
                max_scans=settings.max_jpeg_scans,
                max_seconds=settings.max_decode_seconds,
                stop=client_gone,
            )

        return decode

    async def _on_pool(
        self,
        data: bytes,
        declared: ImageFormat | None,
        run: Callable[[DecodedImage], T],
        client_gone: Callable[[], bool] = never_gone,
    ) -> T:
        """Decode the upload and `run` on it, on the bounded inference pool.

        A runtime failure becomes a 503 for this request and leaves the service up.
        """
        decode = self._decode_job(data, declared, client_gone)

        def job() -> T:
            image = decode()
            with _runtime_failures("this image"):
                return run(image)

        return await self.scheduler.run(job)

    async def predict(
        self, data: bytes, declared: ImageFormat | None, client_gone: Callable[[], bool] = never_gone
    ) -> Prediction:
        """Decode and predict one upload on the bounded inference pool.

        Raises:
            RequestError: A bad upload (4xx), a full queue (503), a runtime failure (503), or the
                client gone before its work started (499, never sent).
        """
        if self.batcher is None:
            prediction = await self._on_pool(
                data, declared, lambda image: self.predict_batch([image])[0], client_gone
            )
        else:
            # One slot for the whole request: decoded on the pool, then in the next batch of the models.
            async with self.scheduler.admitted():
                image = await self.scheduler.execute(self._decode_job(data, declared, client_gone))
                if client_gone():
                    raise ClientGoneError("the client disconnected before its image reached the models")
                with _runtime_failures("this batch"):
                    prediction = await self.batcher.submit(image)
        self.refuse_out_of_distribution(prediction)
        return prediction

    def refuse_out_of_distribution(self, prediction: Prediction) -> None:
        """With `reject_out_of_distribution`, refuse an image the input check flags.

        Raises:
            OutOfDistributionError: The image is out of distribution and the server refuses those.
        """
        check = prediction.input_check
        if self.settings.reject_out_of_distribution and not check.in_distribution:
            raise OutOfDistributionError(
                f"the input check ({check.method}) scores this image {check.score:.1f}, above its "
                f"threshold {check.threshold:.1f}: it does not look like the frontal chest radiographs "
                "the models were trained on, and this server refuses such images"
            )

    def predict_batch(self, images: list[DecodedImage]) -> list[Prediction]:
        """One forward pass of every model over `images` (blocking), recorded in the metrics."""
        predictions = self.predictor.predict(images)
        self.metrics.observe_batch(predictions)
        return predictions

    async def explain(
        self,
        data: bytes,
        declared: ImageFormat | None,
        *,
        method: ExplanationMethod,
        target: str,
        models: Sequence[str],
        max_evals: int,
        include_image: bool = False,
        overlays: bool = True,
        max_side: int | None = None,
        client_gone: Callable[[], bool] = never_gone,
    ) -> RenderedExplanation:
        """Predict one upload with explanation maps, and render each map as base64 PNGs.

        The SHAP time limit starts when the job starts, not while it waits in the queue. The
        maps, overlays and image are rendered with their longer side at most `max_side`, which
        bounds the answer's size and the request's memory whatever the upload's size.
        """

        def run(image: DecodedImage) -> RenderedExplanation:
            budget = ShapBudget.starting_now(max_evals, self.settings.shap_time_limit_seconds)
            started = time.perf_counter()
            result = self.predictor.explain(
                image, method=method, target=target, models=models, shap_budget=budget, max_side=max_side
            )
            explained = time.perf_counter()
            self.metrics.observe_batch([result.prediction])
            self.refuse_out_of_distribution(result.prediction)
            height, width = display_size(image.size, max_side)
            shown = resize_gray(image.pixels, height, width)
            pngs = render_all_base64(shown, result.all_maps, threads=self.render_threads, overlays=overlays)
            image_png = base64_text(encode_png(shown)) if include_image else None
            timings = {"explain": explained - started, "render": time.perf_counter() - explained}
            return RenderedExplanation(result, pngs, image_png, timings)

        return await self._on_pool(data, declared, run, client_gone)

    async def analyse_dicom(
        self, data: bytes, *, overlay: bool
    ) -> tuple[Prediction, npt.NDArray[np.uint8] | None]:
        """Predict one DICOM instance on the pool; with `overlay`, also the ensemble Grad-CAM overlay.

        Returns:
            The prediction and the overlay's RGB pixels at the image's size (None without
            `overlay`, or when no model gives Grad-CAM maps).
        """

        def run(image: DecodedImage) -> tuple[Prediction, npt.NDArray[np.uint8] | None]:
            models = self.predictor.gradcam_models()
            if not (overlay and models):
                predictions = self.predictor.predict([image])
                self.metrics.observe_batch(predictions)
                self.refuse_out_of_distribution(predictions[0])
                return predictions[0], None
            result = self.predictor.explain(image, method="gradcam", target="predicted", models=models)
            self.metrics.observe_batch([result.prediction])
            self.refuse_out_of_distribution(result.prediction)
            return result.prediction, overlay_rgb(image.pixels, result.ensemble)

        return await self._on_pool(data, ImageFormat.DICOM, run)
