"""Liveness and readiness probes (no authentication: orchestrators call them)."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import ReadyStateDep
from service.api.routes._openapi import problems
from service.api.schemas import LiveResponse, ReadyResponse

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live", response_model=LiveResponse, summary="The process is up")
async def live() -> LiveResponse:
    """Answer 200 while the process serves HTTP, even before the models are ready."""
    return LiveResponse(status="live")


@router.get("/ready", response_model=ReadyResponse, responses=problems(503), summary="Ready for traffic")
async def ready(state: ReadyStateDep) -> ReadyResponse:
    """Answer 200 once every model is loaded and the warm-up inference passed, else 503."""
    return ReadyResponse(
        status="ready", models={name: model.provider for name, model in state.predictor.models.items()}
    )
