"""Request heads are bounded in `xray serve`'s HTTP protocol: 431 past the limits, the rest unchanged."""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.factories import default_specs, png_bytes
from tests.live_server import LiveServer, live_server


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    from tests.factories import write_models_dir

    folder = write_models_dir(tmp_path_factory.mktemp("models"), default_specs())
    with live_server(folder, max_header_bytes="8192", max_headers="20") as server:
        yield server


def _raw(server: LiveServer, head: bytes, chunk: int = 65536) -> bytes:
    """Send a raw request head (in chunks) and return what the server answers before closing."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as connection:
        try:
            for start in range(0, len(head), chunk):
                connection.sendall(head[start : start + chunk])
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before reading everything: what we expect
        answer = b""
        try:
            while part := connection.recv(65536):
                answer += part
        except ConnectionResetError:
            pass
    return answer


def _live_within(server: LiveServer, seconds: float) -> bool:
    started = time.perf_counter()
    status = server.request("GET", "/health/live")[0]
    return status == 200 and time.perf_counter() - started < seconds


def test_a_long_header_is_refused_431_before_it_is_buffered(served: LiveServer) -> None:
    head = b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 5_000_000 + b"\r\n\r\n"
    answer = _raw(served, head)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert b"request-header-fields-too-large" in answer
    assert _live_within(served, 1.0)


def test_too_many_header_lines_are_refused_431(served: LiveServer) -> None:
    lines = b"".join(b"X-H%d: v\r\n" % index for index in range(50))
    answer = _raw(served, b"GET /health/live HTTP/1.1\r\nHost: x\r\n" + lines + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]


def test_ordinary_requests_and_keep_alive_still_work(served: LiveServer) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
    try:
        for _ in range(3):  # three heads near the limit on one connection: each is counted alone
            connection.request("GET", "/health/live", headers={"X-Padding": "p" * 6000})
            response = connection.getresponse()
            assert response.status == 200
            response.read()
    finally:
        connection.close()


def test_a_request_with_a_body_larger_than_the_head_limit_is_not_refused(served: LiveServer) -> None:
    image = png_bytes(np.random.default_rng(0).integers(0, 256, (200, 200), dtype=np.uint8))
    assert len(image) > 8192  # the body does not count against the head's limit
    status, _, _ = served.request("POST", "/predict", image, {"Content-Type": "image/png"})
    assert status == 200


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lengths=st.lists(st.integers(0, 3000), min_size=0, max_size=30))
def test_any_head_is_answered_or_refused_by_its_size_and_line_count(
    served: LiveServer, lengths: list[int]
) -> None:
    lines = [b"Host: x"] + [b"X-H%d: %s" % (index, b"v" * length) for index, length in enumerate(lengths)]
    head = b"GET /health/live HTTP/1.1\r\n" + b"".join(line + b"\r\n" for line in lines) + b"\r\n"
    answer = _raw(served, head.replace(b"Host: x", b"Host: x\r\nConnection: close", 1))
    too_large = len(head) + len(b"Connection: close\r\n") > 8192 or len(lines) + 1 > 20
    assert answer.startswith(b"HTTP/1.1 431" if too_large else b"HTTP/1.1 200"), (len(head), len(lines))
