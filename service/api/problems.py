"""The one place where errors become RFC 9457 `application/problem+json` responses."""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from service.errors import AuthenticationError
from xray.contract.errors import ClientGoneError, RequestError

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
#: Problem `type` URIs are this prefix plus the error's slug, for example
#: `urn:xray-triage:problem:invalid-image`; clients branch on them, not on `detail`.
TYPE_PREFIX = "urn:xray-triage:problem:"


def problem_response(
    request: Request,
    *,
    status: int,
    slug: str,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """Build a problem+json response that carries the request's id."""
    body = {
        "type": TYPE_PREFIX + slug,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
    }
    request_id = getattr(request.state, "request_id", None)
    if request_id:
        body["request_id"] = request_id
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


async def _request_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestError)
    headers: dict[str, str] = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, AuthenticationError):
        headers["WWW-Authenticate"] = 'Bearer realm="xray"'
    if exc.status >= 500:
        logger.warning("answered %d %s: %s", exc.status, exc.slug, exc.detail)
    return problem_response(
        request, status=exc.status, slug=exc.slug, title=exc.title, detail=exc.detail, headers=headers
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for error in exc.errors():
        where = ".".join(str(item) for item in error.get("loc", ()))
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return problem_response(
        request,
        status=422,
        slug="invalid-parameters",
        title="Invalid request parameters",
        detail="; ".join(parts) or "invalid request",
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return problem_response(
        request,
        status=exc.status_code,
        slug=_phrase(exc.status_code).lower().replace(" ", "-"),
        title=_phrase(exc.status_code),
        detail=str(exc.detail),
        headers=dict(exc.headers) if exc.headers else None,
    )


async def _client_disconnected(request: Request, exc: Exception) -> Response:
    # The client's doing, not a fault of the service: no traceback, and counted apart from 5xx.
    logger.info("the client disconnected before its request was read")
    # Never sent (the client has gone): the status the access log and the metrics record.
    return Response(status_code=ClientGoneError.status)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    # A bug of ours: log the traceback, tell the client nothing internal.
    logger.error("unhandled error", exc_info=exc)
    return problem_response(
        request,
        status=500,
        slug="internal-error",
        title="Internal server error",
        detail="an unexpected error occurred; it has been logged with this request's id",
    )


def install_problem_handlers(app: FastAPI) -> None:
    """Map every error the app can raise to a problem+json response."""
    app.add_exception_handler(RequestError, _request_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ClientDisconnect, _client_disconnected)
    app.add_exception_handler(Exception, _unexpected_error)
