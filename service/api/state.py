"""What the running service holds: settings, the loaded models, the queue, metrics, readiness."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from service.api.metrics import Metrics
from service.core.config import Settings
from service.errors import InferenceFailedError, RequestError
from service.inference.predictor import Prediction, Predictor
from service.inference.preprocessing import ImageFormat, decode_image
from service.inference.scheduler import InferenceScheduler

logger = logging.getLogger(__name__)


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

    async def warm_up(self) -> None:
        """Run the warm-up inference off the event loop, then mark the service ready."""
        try:
            await asyncio.to_thread(self.predictor.warm_up)
        except Exception as exc:
            self.readiness.error = f"warm-up failed: {exc}"
            logger.exception("warm-up failed; the service stays unready")
            return
        self.readiness.ready = True
        self.metrics.ready.set(1)
        logger.info("all models warmed up; ready")

    async def predict(self, data: bytes, declared: ImageFormat | None) -> Prediction:
        """Decode and predict one upload on the bounded inference pool.

        Raises:
            RequestError: A bad upload (4xx), a full queue (503), or a runtime failure (503).
        """

        def job() -> Prediction:
            image = decode_image(data, declared=declared, max_pixels=self.settings.max_pixels)
            try:
                predictions = self.predictor.predict([image])
            except RequestError:
                raise
            except Exception as exc:
                logger.exception("inference failed for one request")
                raise InferenceFailedError(
                    "the model runtime failed on this image; the service is still up, retry or report it",
                    retry_after=1,
                ) from exc
            self.metrics.observe_batch(predictions)
            return predictions[0]

        return await self.scheduler.run(job)
