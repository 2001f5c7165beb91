"""A headless Chromium (Debian's package, driven by Selenium) that cannot reach the internet.

Every name but the loopback address resolves to nothing, so a page that needs a CDN fails here as
it would on an offline hospital network; the browser's request log and console are kept so that a
test can also assert that no outside URL was even asked for and no policy was violated.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

SCREENSHOTS = Path(os.environ.get("XRAY_SCREENSHOT_DIR", "runs/screenshots"))


def _browser() -> tuple[str, str] | None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or (
        "/usr/lib/chromium/chromedriver" if Path("/usr/lib/chromium/chromedriver").exists() else None
    )
    return (chromium, driver) if chromium and driver else None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A 1280×900 offline headless Chromium, shared by a module's tests."""
    found = _browser()
    if found is None:
        reason = "Chromium and chromedriver are not installed (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--window-size=1280,900",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--disable-background-networking",
        "--disable-component-update",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(found[1]), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def requested_urls(browser: Any) -> dict[str, str | None]:
    """The URLs the page asked for since the last call, each with the reason it was blocked, if it was.

    The performance log is drained. A request the Content-Security-Policy refuses never leaves the
    browser; Chromium still reports it, with the blocked reason `csp`.
    """
    urls: dict[str, str | None] = {}
    ids: dict[str, str] = {}
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        params = message["params"]
        if message["method"] == "Network.requestWillBeSent":
            ids[params["requestId"]] = params["request"]["url"]
            urls[params["request"]["url"]] = None
        elif message["method"] == "Network.loadingFailed" and params["requestId"] in ids:
            urls[ids[params["requestId"]]] = params.get("blockedReason")
    return urls


def console_errors(browser: Any) -> list[str]:
    """The console's errors since the last call (Content-Security-Policy violations among them)."""
    return [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


def screenshot(browser: Any, name: str) -> Path:
    """Save a PNG of the viewport under `SCREENSHOTS` and return its path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOTS / name
    assert browser.save_screenshot(str(shot))
    assert shot.read_bytes().startswith(b"\x89PNG")
    return shot
