"""The application factory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from service import __version__
from service.api.middleware import REQUEST_ID_HEADER, RequestContextMiddleware
from service.api.problems import install_problem_handlers
from service.api.routes import dicomweb, explain, health, metrics, models, predict, web
from service.core.concurrency import ConcurrencyPlan, ServicePools
from service.core.config import Settings
from service.core.logging import withhold_dicom_values
from service.core.memory import glibc_malloc_trim, trim_heap_when_idle
from service.inference.metrics import Metrics
from service.inference.predictor import Predictor, load_predictor
from service.inference.serving import InferenceService

logger = logging.getLogger(__name__)

DESCRIPTION = """\
Chest X-ray triage: per-model probabilities for **normal**, **pneumonia** and **tuberculosis**,
a `classic` (mean) and a `confidence` (cascade) ensemble, each flagged `uncertain` below the
manifest's threshold.

**Not for clinical use.** A research and integration tool; every result needs a clinician's review.
"""


def create_app(settings: Settings | None = None, *, predictor: Predictor | None = None) -> FastAPI:
    """Build the FastAPI application.

    The models are loaded once, in the lifespan (or passed in, already loaded, by `xray serve`
    so that start-up errors reach the terminal before the server binds). A problem with the
    manifest or a model file stops start-up; the warm-up inference then runs in the background
    and `/health/ready` answers 200 only after it passes.

    Args:
        settings: The configuration; read from the environment when omitted.
        predictor: Already loaded models; loaded from `settings.models_dir` when omitted.
    """
    settings = settings or Settings()
    withhold_dicom_values()  # whoever configured logging, no DICOM header value may reach it
    registry = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loaded = predictor if predictor is not None else await asyncio.to_thread(load_predictor, settings)
        # This app's pools, planned from its settings (the models' own pool came with them).
        pools = ServicePools(ConcurrencyPlan.from_settings(settings, len(loaded.models)))
        state = InferenceService(settings=settings, predictor=loaded, pools=pools, metrics=registry)
        scheduler = state.scheduler
        for model in loaded.models.values():
            registry.model_info.labels(
                model=model.name, version=model.entry.version, provider=model.provider
            ).set(1)
        registry.track_queue(lambda: scheduler.pending, scheduler.capacity)
        app.state.xray = state
        warm_up = asyncio.create_task(state.warm_up())
        background = [warm_up]
        trim = glibc_malloc_trim()
        if trim is not None:
            background.append(
                asyncio.create_task(
                    trim_heap_when_idle(
                        pending=lambda: scheduler.pending, completed=lambda: scheduler.completed, trim=trim
                    )
                )
            )
        try:
            yield
        finally:
            state.readiness.ready = False
            registry.ready.set(0)
            for task in background:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            # uvicorn has stopped accepting and drained the open requests by now; let any job
            # still on the pool finish rather than cut it off.
            await asyncio.to_thread(pools.shutdown, wait=True)
            if predictor is None:  # loaded here, so closed here; `xray serve` closes its own
                loaded.close()
            logger.info("shut down")

    app = FastAPI(
        title="Chest X-ray triage service",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served by routes/web.py from the package, not from a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.metrics = registry
    install_problem_handlers(app)
    if settings.cors_origins:  # off unless origins are configured
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", REQUEST_ID_HEADER],
            expose_headers=[REQUEST_ID_HEADER, "Retry-After"],
        )
    app.add_middleware(RequestContextMiddleware, metrics=registry)
    for module in (predict, explain, dicomweb, models, health, metrics, web):
        app.include_router(module.router)
    app.mount("/static/vendor", web.vendor_files(), name="vendor")  # before /static, which would shadow it
    app.mount("/static", web.static_files(), name="static")
    return app
