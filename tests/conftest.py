"""Shared fixtures: tiny ONNX models, the app built from test settings, the real data's location."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import hypothesis
import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.core.config import Settings
from tests.factories import ModelSpec, default_specs, write_models_dir
from tests.orthanc import Orthanc, find_orthanc, running_orthanc

REPO = Path(__file__).resolve().parents[1]

# Locally each run explores new examples; in CI the examples are fixed, so that a landing is not
# decided by luck (a failure found locally is kept in .hypothesis/ and replayed first).
hypothesis.settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    hypothesis.settings.load_profile("ci")


def shared_data_dir() -> Path:
    """`XRAY_DATA_DIR`, else `../shared/data` beside the checkout."""
    configured = os.environ.get("XRAY_DATA_DIR")
    return Path(configured) if configured else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder; tests that use it are skipped with the reason when it is absent."""
    folder = shared_data_dir()
    if not (folder / "cxr" / "labels.csv").is_file():
        pytest.skip(f"real data not found at {folder} (set XRAY_DATA_DIR to the shared data folder)")
    return folder


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    """Three constant-probability models and their manifest."""
    return write_models_dir(tmp_path / "models", default_specs())


@pytest.fixture
def make_models(tmp_path: Path) -> Callable[..., Path]:
    """Write custom models: `make_models([ModelSpec(...)], order=..., tau=..., abstain_below=...)`."""
    counter = iter(range(1000))

    def make(specs: list[ModelSpec], **manifest: object) -> Path:
        return write_models_dir(tmp_path / f"models-{next(counter)}", specs, **manifest)  # type: ignore[arg-type]

    return make


def wait_ready(client: TestClient, timeout: float = 20.0) -> None:
    """Poll /health/ready until 200 (warm-up runs in the background)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get("/health/ready").status_code == 200:
            return
        time.sleep(0.01)
    raise AssertionError("the service did not become ready")


@pytest.fixture
def make_client() -> Iterator[Callable[..., TestClient]]:
    """Build a started, ready TestClient from a models folder and setting overrides."""
    clients: list[TestClient] = []

    def make(folder: Path, *, ready: bool = True, **overrides: object) -> TestClient:
        settings = Settings(models_dir=folder, **overrides)  # type: ignore[arg-type]
        client = TestClient(create_app(settings), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        if ready:
            wait_ready(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient], models_dir: Path) -> TestClient:
    """The service on the three default constant models, ready."""
    return make_client(models_dir)


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """A real Orthanc with DICOMweb on loopback (skipped, with the reason, when not installed)."""
    found = find_orthanc()
    if found is None:
        reason = "Orthanc or its DICOMweb plugin is not installed (apt-get install orthanc orthanc-dicomweb)"
        if os.environ.get("CI"):  # .ci/run installs them: in CI their absence is a failure, not a skip
            pytest.fail(reason)
        pytest.skip(reason)
    with running_orthanc(tmp_path_factory.mktemp("orthanc"), *found) as server:
        yield server
