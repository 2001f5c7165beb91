"""The page at `/` in a real headless Chromium (Debian's package, driven by Selenium).

A real radiograph is uploaded through the file input; the labels and probabilities the page
shows must be the `/predict` answer for the same file; an overlay is toggled; a screenshot is
saved. A bad file must show the service's problem detail.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.factories import pixel_specs, png_bytes
from tests.live_server import LiveServer, live_server
from tests.service.web.conftest import screenshot

pytestmark = [pytest.mark.slow]

SPECS = pixel_specs(with_maps=True)


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
        assert block.find_element(By.CSS_SELECTOR, ".label").get_attribute("data-label") == result["label"]
        shown_values = {
            cell.get_attribute("data-label"): float(cell.get_attribute("data-value"))
            for cell in block.find_elements(By.CSS_SELECTOR, ".probability")
        }
        assert shown_values == pytest.approx(result["probabilities"], abs=1e-9)
    cascade = find(By.CSS_SELECTOR, '.decision[data-predictor="confidence"] .label').text
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

    screenshot(browser, "page-result.png")
    # At 1280×900 the decision, its uncertainty and what each ensemble means are seen without scrolling.
    for name in ("classic", "confidence"):
        block = find(By.CSS_SELECTOR, f'.decision[data-predictor="{name}"]')
        bottom = browser.execute_script(  # type: ignore[attr-defined]
            "return arguments[0].getBoundingClientRect().bottom + window.scrollY;", block
        )
        assert bottom <= browser.execute_script("return window.innerHeight;")  # type: ignore[attr-defined]
        assert block.find_element(By.CSS_SELECTOR, ".what").text  # one sentence on what it is
    what = {
        name: find(By.CSS_SELECTOR, f'.decision[data-predictor="{name}"] .what').text
        for name in expected["ensembles"]
    }
    assert "mean" in what["classic"]
    assert "first one that is sure enough" in what["confidence"]


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
    label = find(By.CSS_SELECTOR, '.decision[data-predictor="classic"] .label')
    assert "line-through" in label.value_of_css_property("text-decoration")
    assert "not like the training radiographs" in label.text
    screenshot(browser, "page-out-of-distribution.png")


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
    screenshot(browser, "page-error.png")
