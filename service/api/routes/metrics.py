"""`GET /metrics`: Prometheus text exposition (no authentication: Prometheus scrapes it)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from service.api.deps import MetricsDep
from service.inference.metrics import CONTENT_TYPE

router = APIRouter(tags=["observability"])


@router.get("/metrics", response_class=Response, summary="Prometheus metrics")
async def metrics(registry: MetricsDep) -> Response:
    """Every metric of docs/api.md in the Prometheus text format."""
    return Response(registry.render(), media_type=CONTENT_TYPE)
