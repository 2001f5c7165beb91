"""`POST /predict`: every model's probabilities and both ensembles for one radiograph."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from service.api.deps import ReadyStateDep, UploadDep, require_api_key
from service.api.routes._openapi import IMAGE_REQUEST_BODY, json_body, problems
from service.api.schemas import PredictResponse

router = APIRouter(tags=["inference"], dependencies=[Depends(require_api_key)])


@router.post(
    "/predict",
    response_model=PredictResponse,
    response_model_exclude_none=True,
    responses=problems(400, 401, 413, 415, 422, 503),
    openapi_extra=IMAGE_REQUEST_BODY,
    summary="Classify one chest radiograph",
)
async def predict(request: Request, state: ReadyStateDep, upload: UploadDep) -> Response:
    """Run the three models and both ensembles on one image.

    Decoding and inference run on the bounded inference pool, never on the event loop.
    """
    prediction = await state.predict(upload.data, upload.declared, upload.client_gone)
    return json_body(
        PredictResponse.from_prediction(prediction, request.state.request_id),
        {"inference": prediction.inference_seconds},
    )
