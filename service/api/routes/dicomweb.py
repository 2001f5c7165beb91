"""The DICOMweb door: STOW-RS in (`/dicom-web/studies`) and analysis of PACS studies (`/pacs/analyze`).

Both analyse each single-frame grayscale image as `/predict` does and, when a PACS is configured,
write a Structured Report and the Grad-CAM overlay (Secondary Capture) back into new series of
the image's study. An instance that is not an analysable image is reported per instance (a STOW
failure reason, or `skipped`); a PACS that is down, slow or refuses the credentials fails the
request with 502/504, so a router or caller retries and nothing is silently dropped.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import TypeVar

import pydicom
from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from service.api.deps import ReadyStateDep, SettingsDep, require_api_key
from service.api.routes._openapi import problems
from service.api.schemas import (
    AnalyzedInstance,
    AnalyzeRequest,
    AnalyzeResponse,
    PredictResponse,
    SkippedInstance,
    WrittenObjectInfo,
)
from service.api.uploads import read_capped
from service.core.config import Settings
from service.inference.predictor import Prediction
from service.inference.serving import InferenceService
from service.pacs import stow
from service.pacs.client import InstanceQuery, PacsClient, encode
from service.pacs.results import WrittenObject
from service.pacs.writeback import kind_of, overlay_wanted, write_back
from xray.contract.decoders.dicom import UnsupportedDicomError
from xray.contract.errors import PayloadTooLargeError, RequestError

logger = logging.getLogger(__name__)

T = TypeVar("T")

router = APIRouter(tags=["dicomweb"], dependencies=[Depends(require_api_key)])

#: Per-instance problems: the client's data, not the service or the PACS.
_INSTANCE_STATUSES = {400, 413, 415, 422}


def _reason(exc: RequestError) -> int:
    if isinstance(exc, UnsupportedDicomError):
        return stow.SOP_CLASS_NOT_SUPPORTED
    if isinstance(exc, PayloadTooLargeError):
        return stow.OUT_OF_RESOURCES
    return stow.CANNOT_UNDERSTAND


def _info(written: WrittenObject) -> WrittenObjectInfo:
    return WrittenObjectInfo(kind=kind_of(written), **vars(written))


async def _pacs_call(state: InferenceService, operation: str, call: Callable[[], T]) -> T:
    """Run a blocking PACS call off the event loop and count its outcome."""
    counter = state.metrics.pacs_operations
    try:
        result = await asyncio.to_thread(call)
    except RequestError as exc:
        counter.labels(operation=operation, outcome=exc.slug).inc()
        raise
    counter.labels(operation=operation, outcome="ok").inc()
    return result


async def _analyse_and_write(
    state: InferenceService,
    settings: Settings,
    client: PacsClient | None,
    data: bytes,
    source: pydicom.Dataset,
) -> tuple[Prediction, list[WrittenObject]]:
    with_overlay = client is not None and overlay_wanted(settings)
    prediction, overlay = await state.analyse_dicom(data, overlay=with_overlay)
    if client is None:
        return prediction, []
    written = await _pacs_call(
        state, "store", functools.partial(write_back, client, settings, source, prediction, overlay)
    )
    return prediction, written


@router.post(
    "/dicom-web/studies",
    responses={
        200: {"description": "Every instance was analysed", "content": {stow.DICOM_JSON: {}}},
        202: {"description": "Some instances failed (Failed SOP Sequence)", "content": {stow.DICOM_JSON: {}}},
        409: {"description": "No instance could be analysed", "content": {stow.DICOM_JSON: {}}},
        **problems(401, 413, 415, 422, 503),
        502: {"description": "The PACS did not take the results"},
        504: {"description": "The PACS did not answer in time"},
    },
    summary="STOW-RS: receive DICOM instances and analyse each",
)
@router.post("/dicom-web/studies/{study_instance_uid}", include_in_schema=False)
async def store_instances(
    request: Request, state: ReadyStateDep, settings: SettingsDep, study_instance_uid: str | None = None
) -> JSONResponse:
    """Analyse each instance of a `multipart/related; type="application/dicom"` request (PS3.18 10.5).

    With `XRAY_PACS_URL` set, the results are written back to that PACS; the response is the
    STOW-RS `application/dicom+json` dataset of referenced and failed instances.
    """
    body = await read_capped(request, settings.max_upload_bytes)
    # Splitting and parsing every part is CPU work: off the event loop, and the parts counted first.
    parts = await asyncio.to_thread(
        stow.read_parts, body, request.headers.get("content-type", ""), settings.max_stow_parts
    )
    client = PacsClient.from_settings(settings) if settings.pacs_url else None
    outcomes = []
    for part in parts:
        if part.header is None or part.sop_instance_uid is None:  # not a readable DICOM dataset at all
            outcomes.append(stow.Outcome(part.sop_class_uid, None, stow.CANNOT_UNDERSTAND))
            continue
        if study_instance_uid is not None and part.study_instance_uid != study_instance_uid:
            outcomes.append(stow.Outcome(part.sop_class_uid, part.sop_instance_uid, stow.STUDY_MISMATCH))
            continue
        try:
            await _analyse_and_write(state, settings, client, part.data, part.header)
        except RequestError as exc:
            if exc.status not in _INSTANCE_STATUSES:
                raise
            logger.info("STOW-RS instance refused: %s", exc.detail)
            outcomes.append(stow.Outcome(part.sop_class_uid, part.sop_instance_uid, _reason(exc)))
            continue
        outcomes.append(stow.Outcome(part.sop_class_uid, part.sop_instance_uid))
    status, document = stow.response(outcomes)
    return JSONResponse(document, status_code=status, media_type=stow.DICOM_JSON)


def _analyze_request(body: bytes) -> AnalyzeRequest:
    try:
        return AnalyzeRequest.model_validate_json(body)
    except ValidationError as exc:
        # Answered like a declared body's errors (one 422 mapping), at most five: the body is hostile.
        errors = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()[:5]]
        raise RequestValidationError(errors) from None


@router.post(
    "/pacs/analyze",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": AnalyzeRequest.model_json_schema()}},
        }
    },
    response_model=AnalyzeResponse,
    responses={
        **problems(401, 413, 422, 503),
        404: {"description": "The study, series or instance is not in the PACS"},
        501: {"description": "No PACS is configured"},
        502: {"description": "The PACS is unreachable, refused the credentials, or failed"},
        504: {"description": "The PACS did not answer in time"},
    },
    summary="Fetch a study (or series, or instance) from the PACS, analyse it, write the results back",
)
async def analyze(request: Request, state: ReadyStateDep, settings: SettingsDep) -> AnalyzeResponse:
    """Retrieve the instances over WADO-RS, analyse each image, and STOW the SR and overlay back.

    The body is read here, after the API key was checked (a declared body parameter would be read
    and parsed before any dependency), and only up to `XRAY_MAX_JSON_BYTES`.
    """
    query = _analyze_request(await read_capped(request, settings.max_json_bytes))
    client = PacsClient.from_settings(settings)
    instances = InstanceQuery(query.study_instance_uid, query.series_instance_uid, query.sop_instance_uid)
    datasets = await _pacs_call(state, "retrieve", functools.partial(client.retrieve, instances))
    analysed, skipped = [], []
    for dataset in datasets:
        series, sop = str(dataset.get("SeriesInstanceUID", "")), str(dataset.get("SOPInstanceUID", ""))
        try:
            prediction, written = await _analyse_and_write(state, settings, client, encode(dataset), dataset)
        except RequestError as exc:
            if exc.status not in _INSTANCE_STATUSES:
                raise
            skip = SkippedInstance(series_instance_uid=series, sop_instance_uid=sop, detail=exc.detail)
            skipped.append(skip)
            continue
        analysed.append(
            AnalyzedInstance(
                series_instance_uid=series,
                sop_instance_uid=sop,
                prediction=PredictResponse.from_prediction(prediction, request.state.request_id),
                written=[_info(item) for item in written],
            )
        )
    return AnalyzeResponse(
        request_id=request.state.request_id,
        study_instance_uid=query.study_instance_uid,
        instances=analysed,
        skipped=skipped,
    )
