"""Schemathesis against the service's own OpenAPI document, on a real server.

Every operation is called with inputs generated from the document; each answer must match the
document (status code, content type, response schema) and never be an undocumented 5xx.
Schemathesis' pytest plugin is not used (it does not support this pytest); its strategies and
checks are driven by Hypothesis directly, one run per operation.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.factories import default_specs, gradient, png_bytes, write_models_dir
from tests.live_server import LiveServer, live_server

pytestmark = pytest.mark.slow

#: The service runs with a key, so that the document's security schemes are exercised too:
#: schemathesis also sends each authenticated case without it and expects the 401.
KEY = "schemathesis-key-0123456789"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    folder = write_models_dir(Path(tmp_path_factory.mktemp("schemathesis")) / "models", default_specs())
    with live_server(folder, api_key=KEY) as started:
        # The first SHAP call in a process compiles shap's numba code (seconds); the service does
        # it in the background after readiness. Wait for it, so timings below are the service's.
        status, _, _ = started.request(
            "POST",
            "/explain?method=shap&max_evals=10",
            png_bytes(gradient()),
            {"Content-Type": "image/png", "X-API-Key": KEY},
        )
        assert status == 200
        yield started


def test_every_operation_conforms_to_its_document(server: LiveServer) -> None:
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {operation.path for operation in operations} >= {
        "/predict",
        "/explain",
        "/models",
        "/health/ready",
    }
    for operation in operations:

        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def conforms(case: schemathesis.Case) -> None:
            # A `format: binary` body cannot say "a radiograph", so schema-valid random bytes are
            # rightly refused (400): the positive-data check does not apply to image uploads.
            excluded = [positive_data_acceptance]
            if case.operation.path.startswith("/pacs"):
                # No PACS here: 501 is this route's documented answer (status conformance still
                # checks that it is documented).
                excluded.append(not_a_server_error)
            case.call_and_validate(
                base_url=server.url, headers={"X-API-Key": KEY}, excluded_checks=excluded, timeout=60
            )

        conforms()
