"""FastAPI dependencies: the service state, readiness, authentication and uploads."""

from __future__ import annotations

import asyncio
import hmac
import threading
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from service.api.uploads import Upload, read_image_upload
from service.core.config import Settings
from service.errors import AuthenticationError, NotReadyError
from service.inference.metrics import Metrics
from service.inference.serving import InferenceService


def get_settings(request: Request) -> Settings:
    """The app's settings (available before the models are loaded)."""
    settings: Settings = request.app.state.settings
    return settings


def get_metrics(request: Request) -> Metrics:
    """The app's metrics registry (available before the models are loaded)."""
    metrics: Metrics = request.app.state.metrics
    return metrics


def get_state(request: Request) -> InferenceService:
    """The loaded service, whether or not warm-up has passed.

    Raises:
        NotReadyError: The models are not loaded yet.
    """
    state: InferenceService | None = getattr(request.app.state, "xray", None)
    if state is None:
        raise NotReadyError("the models are not loaded yet", retry_after=5)
    return state


def get_ready_state(state: Annotated[InferenceService, Depends(get_state)]) -> InferenceService:
    """The loaded service, only once warm-up has passed.

    Raises:
        NotReadyError: Warm-up has not passed (yet, or at all).
    """
    if not state.readiness.ready:
        detail = state.readiness.error or "the models are warming up"
        raise NotReadyError(detail, retry_after=5)
    return state


#: The two ways to send the key, declared as security schemes so that the OpenAPI document (and
#: the Authorize button of `/docs`) says which operations need one. Neither refuses by itself
#: (`auto_error=False`): without `XRAY_API_KEY` no key is needed, and `require_api_key` decides.
_KEY_HEADER = APIKeyHeader(
    name="X-API-Key", scheme_name="apiKey", auto_error=False, description="The key of `XRAY_API_KEY`."
)
_BEARER = HTTPBearer(
    scheme_name="bearer", auto_error=False, description="`Authorization: Bearer <XRAY_API_KEY>`."
)


def require_api_key(
    settings: Annotated[Settings, Depends(get_settings)],
    header_key: Annotated[str | None, Security(_KEY_HEADER)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)],
) -> None:
    """Check the API key when one is configured, in constant time.

    Raises:
        AuthenticationError: The key is missing or wrong.
    """
    if settings.api_key is None:
        return
    supplied = [key for key in (header_key, bearer.credentials.strip() if bearer else None) if key]
    if not supplied:
        raise AuthenticationError(
            "an API key is required: `Authorization: Bearer <key>` or `X-API-Key: <key>`"
        )
    expected = settings.api_key.get_secret_value().encode("utf-8")
    # Both ways may be sent at once; then both must hold the key, so that a wrong credential is
    # never hidden behind a right one.
    if not all(hmac.compare_digest(key.encode("utf-8"), expected) for key in supplied):
        raise AuthenticationError("the API key is not valid")


async def _watch_disconnect(request: Request, gone: threading.Event) -> None:
    # Once the body is read, the next ASGI message is the client's disconnect (or none at all).
    while (await request.receive())["type"] != "http.disconnect":
        pass
    gone.set()


async def get_upload(
    request: Request, settings: Annotated[Settings, Depends(get_settings)]
) -> AsyncIterator[Upload]:
    """The uploaded image, read with the configured byte limit, watched for its client leaving.

    A client that disconnects while its image waits for a worker has its decoding and inference
    skipped (`Upload.client_gone`): an abandoned request no longer costs the models' time.
    """
    upload = await read_image_upload(request, settings.max_upload_bytes)
    gone = threading.Event()
    watcher = asyncio.create_task(_watch_disconnect(request, gone))
    try:
        yield replace(upload, client_gone=gone.is_set)
    finally:
        watcher.cancel()


StateDep = Annotated[InferenceService, Depends(get_state)]
ReadyStateDep = Annotated[InferenceService, Depends(get_ready_state)]
UploadDep = Annotated[Upload, Depends(get_upload)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
