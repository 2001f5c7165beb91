"""`POST /explain`: the `/predict` answer plus Grad-CAM maps per model and for the ensemble."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request

from service.api.deps import ReadyStateDep, UploadDep, require_api_key
from service.api.routes._openapi import IMAGE_REQUEST_BODY, problems
from service.api.schemas import ExplainResponse

router = APIRouter(tags=["inference"], dependencies=[Depends(require_api_key)])


@router.post(
    "/explain",
    response_model=ExplainResponse,
    response_model_exclude_none=True,
    responses=problems(400, 401, 413, 415, 422, 503),
    openapi_extra=IMAGE_REQUEST_BODY,
    summary="Classify one radiograph and show where each model looked",
)
async def explain(
    request: Request,
    state: ReadyStateDep,
    upload: UploadDep,
    method: Annotated[Literal["gradcam"], Query(description="Explanation method.")] = "gradcam",
    target: Annotated[
        str, Query(description="`predicted` (the classic ensemble's label) or a class.")
    ] = "predicted",
    models: Annotated[str | None, Query(description="Comma-separated models; default: all.")] = None,
) -> ExplainResponse:
    """Grad-CAM (Selvaraju et al.) maps from the same forward pass as the probabilities.

    Each map is normalised to [0, 1] and upsampled to the submitted image's size; the `ensemble`
    map is the models' maps weighted by each model's probability of the target class.
    """
    predictor = state.predictor
    names = [name.strip() for name in models.split(",") if name.strip()] if models is not None else None
    chosen = predictor.explanation_request(target, names)
    result, pngs = await state.explain_gradcam(upload.data, upload.declared, target=target, models=chosen)
    layers = {
        name: model.entry.gradcam.layer if model.entry.gradcam else None
        for name, model in predictor.models.items()
    }
    return ExplainResponse.from_gradcam(result, pngs, layers, request.state.request_id)
