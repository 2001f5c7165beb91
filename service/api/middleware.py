"""Request ids, the access log and the request metrics, as one pure ASGI middleware."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.inference.metrics import Metrics

logger = logging.getLogger("service.access")

REQUEST_ID_HEADER = "X-Request-ID"
# A caller's id is echoed only when it is short and plain, so that logs cannot be injected into
# and no free text (which might carry patient data) is repeated.
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestContextMiddleware:
    """Gives each request an id, times it, counts it, and logs one line without patient data."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        """Wrap `app`."""
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = (
            dict(scope.get("headers", [])).get(REQUEST_ID_HEADER.lower().encode(), b"").decode("latin-1")
        )
        request_id = incoming if _SAFE_ID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append(REQUEST_ID_HEADER, request_id)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            # The route template (e.g. /predict), never the raw path: bounded label values.
            endpoint = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.observe_request(endpoint, status, elapsed)
            logger.info(
                "%s %s %d %.1fms request_id=%s",
                scope.get("method"),
                endpoint,
                status,
                elapsed * 1000,
                request_id,
            )
