"""`xray serve` as a real process on a free loopback port, for tests that need real HTTP and signals."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.orthanc import free_port

REPO = Path(__file__).resolve().parents[1]


@dataclass
class LiveServer:
    """A running server: its port and process."""

    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        """The server's root URL."""
        return f"http://127.0.0.1:{self.port}"

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """One request on a fresh connection: status, headers, body."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def rss_kb(self) -> int:
        """Resident memory now (VmRSS), kB."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")


@contextmanager
def live_server(
    models_dir: Path | None = None,
    timeout: float = 120,
    *,
    arguments: Sequence[str] = (),
    **settings: str,
) -> Iterator[LiveServer]:
    """Start `xray serve [ARGUMENTS]` (the README's command), wait for /health/ready, SIGTERM it after.

    The port is a free one, given as `XRAY_PORT`: `arguments` must not name another.
    """
    port = free_port()
    env = {**os.environ, "XRAY_HOST": "127.0.0.1", "XRAY_PORT": str(port), "XRAY_LOG_LEVEL": "WARNING"}
    if models_dir is not None:
        env["XRAY_MODELS_DIR"] = str(models_dir)
    env |= {f"XRAY_{key.upper()}": value for key, value in settings.items()}
    process = subprocess.Popen([sys.executable, "-m", "xray", "serve", *arguments], cwd=REPO, env=env)
    server = LiveServer(port, process)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"xray serve exited with {process.returncode}")
            try:
                if server.request("GET", "/health/ready")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"xray serve did not become ready in {timeout} s")
            time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
