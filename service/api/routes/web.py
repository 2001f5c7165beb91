"""`GET /`: the page for clinicians and integrators, and its static assets under `/static`."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

STATIC = Path(__file__).resolve().parents[2] / "web" / "static"

#: Everything the page needs comes from the service itself; images are data: URLs.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)

#: Sent with the page and with every static file, so that `/static/index.html` is the same page
#: under the same policy as `/`, and no file of ours can be framed or sniffed into another type.
SECURITY_HEADERS = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Content-Type-Options": "nosniff"}

router = APIRouter(tags=["page"])


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    """The single page (no authentication: it holds no data; its API calls send the key)."""
    return FileResponse(
        STATIC / "index.html",
        media_type="text/html",
        headers=SECURITY_HEADERS,
    )


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
