"""`GET /models`: what is loaded, where it runs, and the ensemble settings."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from service.api.deps import StateDep, require_api_key
from service.api.routes._openapi import problems
from service.api.schemas import ModelsResponse

router = APIRouter(tags=["models"], dependencies=[Depends(require_api_key)])


@router.get("/models", response_model=ModelsResponse, responses=problems(401, 503), summary="Loaded models")
async def models(state: StateDep) -> ModelsResponse:
    """Per model: name, version, sha256, input size and the execution provider in use."""
    return ModelsResponse.from_predictor(state.predictor)
