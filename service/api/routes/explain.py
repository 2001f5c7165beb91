"""`POST /explain`: the `/predict` answer plus Grad-CAM or SHAP maps per model and for the ensemble."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response

from service.api.deps import ReadyStateDep, UploadDep, require_api_key
from service.api.routes._openapi import IMAGE_REQUEST_BODY, json_body, problems
from service.api.schemas import ExplainResponse
from service.inference.explanations import ExplanationRequest
from xray.contract.errors import InvalidParametersError

router = APIRouter(tags=["inference"], dependencies=[Depends(require_api_key)])


@router.post(
    "/explain",
    response_model=ExplainResponse,
    response_model_exclude_none=True,
    responses=problems(400, 401, 413, 415, 422, 501, 503),
    openapi_extra=IMAGE_REQUEST_BODY,
    summary="Classify one radiograph and show where each model looked",
)
async def explain(
    request: Request,
    state: ReadyStateDep,
    upload: UploadDep,
    method: Annotated[Literal["gradcam", "shap"], Query(description="Explanation method.")] = "gradcam",
    target: Annotated[
        str, Query(description="`predicted` (the classic ensemble's label) or a class.")
    ] = "predicted",
    models: Annotated[str | None, Query(description="Comma-separated models; default: all.")] = None,
    max_evals: Annotated[
        int | None,
        Query(ge=10, description="SHAP evaluations per model (default and maximum: server settings)."),
    ] = None,
    include_image: Annotated[
        bool, Query(description="Also return the decoded radiograph (`image_png`), e.g. to display a DICOM.")
    ] = False,
    max_side: Annotated[
        int | None,
        Query(
            ge=64,
            description="Longest side of the returned maps, overlays and image, in pixels (the image's "
            "aspect kept, never enlarged); default and maximum: the server's `XRAY_EXPLAIN_MAX_SIDE`.",
        ),
    ] = None,
    overlays: Annotated[
        bool,
        Query(
            description="Return `overlay_png` per map (default). `false`: heatmaps only, for clients "
            "that draw the overlay themselves; the answer then costs little more than /predict."
        ),
    ] = True,
) -> Response:
    """Grad-CAM (Selvaraju et al.) or SHAP (Lundberg & Lee) maps for the target class.

    Grad-CAM comes from the same forward pass as the probabilities. SHAP (Partition explainer,
    blurred-image masker) costs up to `max_evals` model evaluations per model and is stopped at
    the server's time limit. Each map is normalised to [0, 1] and upsampled to the submitted
    image's size; the `ensemble` map is the models' maps weighted by each model's probability of
    the target class.
    """
    settings = state.settings
    if max_side is not None and max_side > settings.explain_max_side:
        raise InvalidParametersError(
            f"max_side {max_side} is above this server's limit of {settings.explain_max_side} pixels"
        )
    evals = max_evals if max_evals is not None else settings.shap_default_evals
    if method == "shap" and evals > settings.shap_max_evals:
        raise InvalidParametersError(
            f"max_evals {evals} is above this server's SHAP budget of {settings.shap_max_evals} evaluations"
        )
    chosen = state.explainer.models_for(target, models.split(",") if models is not None else None, method)
    explained = await state.explain(
        upload.data,
        upload.declared,
        ExplanationRequest(
            method=method,
            target=target,
            models=tuple(chosen),
            max_evals=evals,
            max_side=max_side or settings.explain_max_side,
            overlays=overlays,
            include_image=include_image,
        ),
        upload.client_gone,
    )
    rendered = explained.rendered
    result = rendered.result
    layers = {
        name: model.entry.gradcam.layer if model.entry.gradcam and method == "gradcam" else None
        for name, model in state.predictor.models.items()
    }
    body = ExplainResponse.from_explanation(
        result, explained.pngs, layers, request.state.request_id, explained.image_png
    )
    return json_body(body, {"inference": result.prediction.inference_seconds, **rendered.timings})
