"""`/docs` and `/redoc` render from the package alone, in a browser that cannot reach the internet."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.factories import pixel_specs, write_models_dir
from tests.live_server import LiveServer, live_server
from tests.service.web.conftest import console_errors, requested_urls, screenshot

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    folder = write_models_dir(tmp_path_factory.mktemp("models"), pixel_specs())
    with live_server(folder) as started:
        yield started


@pytest.mark.parametrize(
    ("path", "rendered"),
    [
        ("/docs", ".opblock-summary-path"),  # one row per operation in Swagger UI
        ("/redoc", "[data-section-id^='operation/']"),  # one section per operation in ReDoc
    ],
)
def test_the_api_documentation_renders_offline(
    browser: Any, server: LiveServer, path: str, rendered: str
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    requested_urls(browser), console_errors(browser)  # drain what earlier tests left
    browser.get(f"{server.url}{path}")
    WebDriverWait(browser, 60).until(lambda b: len(b.find_elements(By.CSS_SELECTOR, rendered)) >= 5)
    operations = " ".join(element.text for element in browser.find_elements(By.CSS_SELECTOR, rendered))
    for operation in ("/predict", "/explain", "/dicom-web/studies", "/pacs/analyze", "/models"):
        assert operation in operations
    screenshot(browser, f"docs-{path.strip('/')}.png")
    outside = {
        url: blocked
        for url, blocked in requested_urls(browser).items()
        if not url.startswith((server.url, "data:", "blob:"))
    }
    # ReDoc's footer asks for its maker's logo on a CDN; the policy refuses it before it leaves.
    assert {url: blocked for url, blocked in outside.items() if blocked != "csp"} == {}
    assert set(outside) <= {"https://cdn.redoc.ly/redoc/logo-mini.svg"}
    violations = [error for error in console_errors(browser) if "Content Security Policy" in error]
    assert [error for error in violations if "logo-mini.svg" not in error] == []


@pytest.mark.parametrize(
    "path", ["/docs", "/static/docs.js", "/static/vendor/swagger-ui-bundle.js", "/redoc"]
)
def test_the_documentation_is_served_under_the_page_policy(server: LiveServer, path: str) -> None:
    from service.api.routes.web import CONTENT_SECURITY_POLICY

    status, headers, _ = server.request("GET", path)
    assert status == 200
    policy = headers["content-security-policy"]
    if path == "/redoc":  # the relaxations: ReDoc's run-time <style> elements and search worker
        policy = policy.replace("style-src 'self' 'unsafe-inline'", "style-src 'self'")
        policy = policy.removesuffix("; worker-src 'self' blob:")
    assert policy == CONTENT_SECURITY_POLICY
    assert "script-src 'self';" in policy
    assert "frame-ancestors 'none'" in policy


def test_the_packaged_documentation_names_no_outside_url() -> None:
    static = Path(__file__).resolve().parents[3] / "service" / "web" / "static"
    for page in ("docs.html", "redoc.html", "docs.js"):
        assert "http" not in (static / page).read_text()
