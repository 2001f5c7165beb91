"""The serving use cases: what the HTTP routes ask of the loaded models, off the event loop.

`InferenceService` holds the running service's long-lived objects (settings, models, pools, queue,
batcher, metrics, readiness), created once in the app's lifespan. Each use case decodes the
upload on the bounded job pool and runs the models there or in the next micro-batch; the routes
only translate HTTP to these calls and back. Nothing here calls back into the API layer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from service.core.concurrency import ServicePools
from service.core.config import Settings
from service.errors import OutOfDistributionError
from service.inference.batcher import MicroBatcher
from service.inference.explanations import Explainer, ExplanationRequest, RenderedExplanation
from service.inference.metrics import Metrics
from service.inference.predictor import Prediction, Predictor
from service.inference.rendering import base64_text
from service.inference.scheduler import InferenceScheduler
from service.inference.shap import ExplanationUnavailableError
from xray.contract.decoders import ImageFormat, never_gone
from xray.contract.errors import ClientGoneError, InferenceFailedError, RequestError
from xray.contract.images import DecodedImage
from xray.contract.preprocessing import decode_image

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
class EncodedExplanation:
    """An explanation with its PNGs as base64 text, as /explain answers it."""

    rendered: RenderedExplanation
    pngs: dict[str, tuple[str, str | None]]
    image_png: str | None


@dataclass
class Readiness:
    """Whether warm-up has passed, or why it failed."""

    ready: bool = False
    error: str | None = None


@dataclass
class InferenceService:
    """The service's long-lived objects and its use cases."""

    settings: Settings
    predictor: Predictor
    pools: ServicePools
    metrics: Metrics
    readiness: Readiness = field(default_factory=Readiness)
    scheduler: InferenceScheduler = field(init=False)
    explainer: Explainer = field(init=False)
    batcher: MicroBatcher[DecodedImage, Prediction] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        settings = self.settings
        self.scheduler = InferenceScheduler(self.pools.jobs, max_pending=settings.max_queue)
        self.explainer = Explainer(
            self.predictor, shap_time_limit=settings.shap_time_limit_seconds, render_pool=self.pools.render
        )
        if settings.batch_max_size > 1:
            self.batcher = MicroBatcher(
                self.predict_batch,
                executor=self.pools.batches,
                max_size=settings.batch_max_size,
                max_wait=settings.batch_max_wait_ms / 1000,
                max_waiting=settings.max_queue,
            )

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
        started = time.perf_counter()
        try:
            # After readiness: /predict and Grad-CAM need none of it, and it takes seconds.
            await asyncio.to_thread(self.explainer.warm_up)
        except ExplanationUnavailableError:
            logger.info("shap is not installed: SHAP explanations answer 501")
        except Exception:
            logger.exception("SHAP warm-up failed; SHAP requests will pay their own start-up")
        else:
            logger.info("SHAP warm-up took %.1fs", time.perf_counter() - started)

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
        """Decode the upload and `run` on it, on the bounded job pool.

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
        """Decode and predict one upload.

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

    def _answered(self, prediction: Prediction) -> None:
        """Record one explained image's answer, and refuse it if the server refuses its kind."""
        self.metrics.observe_batch([prediction])
        self.refuse_out_of_distribution(prediction)

    async def explain(
        self,
        data: bytes,
        declared: ImageFormat | None,
        request: ExplanationRequest,
        client_gone: Callable[[], bool] = never_gone,
    ) -> EncodedExplanation:
        """Predict one upload with explanation maps, drawn as base64 PNGs.

        The SHAP time limit starts when the job starts, not while it waits in the queue. The
        maps, overlays and image are drawn with their longer side at most `request.max_side`,
        which bounds the answer's size and the request's memory whatever the upload's size.
        """

        def run(image: DecodedImage) -> EncodedExplanation:
            rendered = self.explainer.explain(image, request, before_render=self._answered)
            pngs = {
                name: (base64_text(heat), None if overlay is None else base64_text(overlay))
                for name, (heat, overlay) in rendered.pngs.items()
            }
            image_png = None if rendered.image_png is None else base64_text(rendered.image_png)
            return EncodedExplanation(rendered, pngs, image_png)

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
            if not overlay:
                (prediction,) = self.predictor.predict([image])
                self._answered(prediction)
                return prediction, None
            return self.explainer.overlay(image, before_render=self._answered)

        return await self._on_pool(data, ImageFormat.DICOM, run)
