"""`GET /`: the page for clinicians and integrators; `/docs` and `/redoc`: the API documentation.

All of it is served from the package, assets under `/static`, so that it works on a hospital
network without internet: Swagger UI and ReDoc come from the `fastapi-offline` distribution's copy
(under `/static/vendor`) instead of FastAPI's default CDN.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

from xray.contract.decoders import MEDIA_TYPES, SUFFIXES

STATIC = Path(__file__).resolve().parents[2] / "web" / "static"

#: Everything the page needs comes from the service itself; images are data: URLs.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)

#: Sent with the page and with every static file, so that `/static/index.html` is under the same
#: policy as `/`, and no file of ours can be framed or sniffed into another type.
SECURITY_HEADERS = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Content-Type-Options": "nosniff"}

#: ReDoc styles itself with styled-components, which writes <style> elements at run time with no
#: nonce in the standalone bundle, and runs its search index in a worker made from a blob: its page
#: alone may do both. Scripts, connections and framing stay exactly as strict as the page's.
REDOC_CONTENT_SECURITY_POLICY = (
    CONTENT_SECURITY_POLICY.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")
    + "; worker-src 'self' blob:"
)
REDOC_SECURITY_HEADERS = {**SECURITY_HEADERS, "Content-Security-Policy": REDOC_CONTENT_SECURITY_POLICY}

router = APIRouter(tags=["page"])


def _html(name: str, headers: dict[str, str] = SECURITY_HEADERS) -> FileResponse:
    return FileResponse(STATIC / name, media_type="text/html", headers=headers)


@functools.cache
def _page() -> str:
    """index.html with its file chooser's filter filled from the decoders' table."""
    accept = ",".join([*SUFFIXES, *MEDIA_TYPES])
    return (STATIC / "index.html").read_text(encoding="utf-8").replace("{{ACCEPT}}", accept)


@router.get("/", include_in_schema=False)
async def page() -> HTMLResponse:
    """The single page (no authentication: it holds no data; its API calls send the key)."""
    return HTMLResponse(_page(), headers=SECURITY_HEADERS)


@router.get("/docs", include_in_schema=False)
async def swagger_ui() -> FileResponse:
    """Swagger UI over `/openapi.json`, with no outside URL."""
    return _html("docs.html")


@router.get("/redoc", include_in_schema=False)
async def redoc() -> FileResponse:
    """ReDoc over `/openapi.json`, with no outside URL."""
    return _html("redoc.html", REDOC_SECURITY_HEADERS)


class _SecuredStaticFiles(StaticFiles):
    """Static files answered with the page's security headers."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        """The file (or its 304/404), with `SECURITY_HEADERS`."""
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        return response


def static_files() -> StaticFiles:
    """The page's CSS and JavaScript, shipped with the package (no CDN)."""
    return _SecuredStaticFiles(directory=STATIC)


def vendor_files() -> StaticFiles:
    """Swagger UI's and ReDoc's bundles, from the installed `fastapi_offline` distribution.

    Located without importing it (only its data is used, not its FastAPI wrapper).
    """
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("fastapi-offline is not installed: /docs and /redoc need its assets")
    return _SecuredStaticFiles(directory=Path(next(iter(spec.submodule_search_locations))) / "static")
