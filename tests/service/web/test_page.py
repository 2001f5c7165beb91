"""The page at `/` in a real headless Chromium (Debian's package, driven by Selenium).

A real radiograph is uploaded through the file input; the labels and probabilities the page
shows must be the `/predict` answer for the same file; an overlay is toggled; a screenshot is
saved. A bad file must show the service's problem detail.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.factories import pixel_specs, png_bytes
from tests.live_server import LiveServer, live_server

pytestmark = [pytest.mark.slow]

SPECS = pixel_specs(with_maps=True)
SCREENSHOTS = Path(os.environ.get("XRAY_SCREENSHOT_DIR", "runs/screenshots"))


def _browser() -> tuple[str, str] | None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or (
        "/usr/lib/chromium/chromedriver" if Path("/usr/lib/chromium/chromedriver").exists() else None
    )
    return (chromium, driver) if chromium and driver else None


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
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
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1100"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(found[1]), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def server(make_models: Callable[..., Path]) -> Iterator[LiveServer]:
    with live_server(make_models(SPECS)) as started:
        yield started


def _upload(browser: object, server: LiveServer, path: Path) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{server.url}/")  # type: ignore[attr-defined]
    browser.find_element(By.ID, "file").send_keys(str(path.resolve()))  # type: ignore[attr-defined]


def test_a_real_radiograph_shows_the_predict_answer_and_its_overlays(
    browser: object, server: LiveServer, shared_data: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as shown
    from selenium.webdriver.support.ui import WebDriverWait

    image = next((shared_data / "cxr" / "images" / "pneumonia").glob("*.jpg"))
    _upload(browser, server, image)
    WebDriverWait(browser, 60).until(shown.visibility_of_element_located((By.ID, "results")))
    status, _, content = server.request(
        "POST", "/predict", image.read_bytes(), {"Content-Type": "image/jpeg"}
    )
    assert status == 200
    expected = json.loads(content)

    find = browser.find_element  # type: ignore[attr-defined]
    for name, result in (*expected["models"].items(), *expected["ensembles"].items()):
        block = find(By.CSS_SELECTOR, f'.decision[data-predictor="{name}"]')
        assert block.find_element(By.CSS_SELECTOR, "h4.label").get_attribute("data-label") == result["label"]
        shown_values = {
            cell.get_attribute("data-label"): float(cell.get_attribute("data-value"))
            for cell in block.find_elements(By.CSS_SELECTOR, ".probability")
        }
        assert shown_values == pytest.approx(result["probabilities"], abs=1e-9)
    cascade = find(By.CSS_SELECTOR, '.decision[data-predictor="confidence"] h4').text
    assert f"decided by {expected['ensembles']['confidence']['decided_by']}" in cascade
    assert "Not for clinical use" in find(By.CSS_SELECTOR, ".notice").text

    overlay = find(By.ID, "overlay")
    assert overlay.get_attribute("data-model") == "ensemble"
    ensemble_src = overlay.get_attribute("src")
    find(By.CSS_SELECTOR, 'label[for="overlay-scratch"]').click()
    assert overlay.get_attribute("data-model") == "scratch"
    assert overlay.get_attribute("src") != ensemble_src
    browser.execute_script(  # type: ignore[attr-defined]
        "const s = document.getElementById('opacity'); s.value = 25; s.dispatchEvent(new Event('input'));"
    )
    assert float(overlay.value_of_css_property("opacity")) == pytest.approx(0.25)
    assert find(By.ID, "radiograph").get_attribute("naturalWidth") != "0"
    assert not find(By.ID, "out-of-distribution").is_displayed()  # models without a check never flag

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOTS / "page-result.png"
    assert browser.save_screenshot(str(shot))  # type: ignore[attr-defined]
    assert shot.read_bytes().startswith(b"\x89PNG")


def test_an_image_unlike_a_chest_radiograph_is_shown_unmistakably(
    browser: object, make_models: Callable[..., Path], tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as shown
    from selenium.webdriver.support.ui import WebDriverWait

    blank = tmp_path / "blank.png"
    blank.write_bytes(png_bytes(np.zeros((48, 40), np.uint8)))
    folder = make_models(pixel_specs(with_maps=True, with_features=True), input_check_threshold=1.0)
    with live_server(folder) as checked:
        _upload(browser, checked, blank)
        banner = WebDriverWait(browser, 60).until(
            shown.visibility_of_element_located((By.ID, "out-of-distribution"))
        )
        status, _, content = checked.request(
            "POST", "/predict", blank.read_bytes(), {"Content-Type": "image/png"}
        )
    assert status == 200
    check = json.loads(content)["input_check"]
    assert check["in_distribution"] is False
    assert "does not look like a frontal chest radiograph" in banner.text
    assert f"{check['score']:.1f}" in banner.text
    find = browser.find_element  # type: ignore[attr-defined]
    assert banner.get_attribute("role") == "alert"
    assert "ood" in find(By.ID, "results").get_attribute("class").split()
    label = find(By.CSS_SELECTOR, '.decision[data-predictor="classic"] h4')
    assert "line-through" in label.value_of_css_property("text-decoration")
    assert "not like the training radiographs" in label.text
    browser.save_screenshot(str(SCREENSHOTS / "page-out-of-distribution.png"))  # type: ignore[attr-defined]


def test_a_bad_file_shows_the_service_error(browser: object, server: LiveServer, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as shown
    from selenium.webdriver.support.ui import WebDriverWait

    bad = tmp_path / "not-an-xray.png"
    bad.write_bytes(b"this is text, not a PNG")
    _upload(browser, server, bad)
    error = WebDriverWait(browser, 30).until(shown.visibility_of_element_located((By.ID, "error")))
    status, _, content = server.request("POST", "/predict", bad.read_bytes(), {"Content-Type": "image/png"})
    assert status == 400
    assert json.loads(content)["detail"] in error.text
    assert browser.find_element(By.ID, "results").is_displayed() is False  # type: ignore[attr-defined]
    browser.save_screenshot(str(SCREENSHOTS / "page-error.png"))  # type: ignore[attr-defined]
