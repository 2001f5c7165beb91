"""`docs/api.md`'s reference tables are the code's: regenerated, they are unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.api import reference
from service.core.config import Settings

API_DOC = Path(__file__).resolve().parents[3] / "docs" / "api.md"


def test_the_api_document_is_current() -> None:
    text = API_DOC.read_text()
    assert reference.render(text) == text, "run: python -m service.api.reference docs/api.md"


def test_it_names_every_operation_setting_problem_and_manifest_field() -> None:
    from service.api.app import create_app
    from xray.contract.errors import RequestError

    text = API_DOC.read_text()
    document = create_app(Settings()).openapi()
    for path, operations in document["paths"].items():
        for method in operations:
            assert f"`{method.upper()} {path}`" in text
    for name in Settings.model_fields:
        assert f"`XRAY_{name.upper()}`" in text
    for error in reference._subclasses(RequestError):
        assert f"`{error.slug}`" in text
    for field in ("models[].temperature", "ensembles.abstain_below", "input_check.threshold"):
        assert f"`{field}`" in text


def test_operations_that_need_the_key_say_so_in_the_openapi_document() -> None:
    from service.api.app import create_app

    document = create_app(Settings()).openapi()
    assert set(document["components"]["securitySchemes"]) == {"apiKey", "bearer"}
    paths = document["paths"].items()
    secured = {path for path, ops in paths if any("security" in op for op in ops.values())}
    assert secured == {"/predict", "/explain", "/dicom-web/studies", "/pacs/analyze", "/models"}


def test_a_stale_document_fails_the_check(tmp_path: Path) -> None:
    stale = tmp_path / "api.md"
    stale.write_text(API_DOC.read_text().replace("| `XRAY_MAX_PIXELS` |", "| `XRAY_MAX_PIXELZ` |"))
    assert reference.main(["--check", str(stale)]) == 1
    assert reference.main([str(stale)]) == 0
    assert reference.main(["--check", str(stale)]) == 0
    assert stale.read_text() == API_DOC.read_text()


def test_a_document_must_hold_every_block_and_only_known_ones() -> None:
    with pytest.raises(ValueError, match="no block for"):
        reference.render("<!-- reference:endpoints -->\n<!-- /reference:endpoints -->\n")
    with pytest.raises(ValueError, match="unknown reference block"):
        reference.render("<!-- reference:nonsense -->\n<!-- /reference:nonsense -->\n")
