"""`xray serve` in a subprocess, for the benchmarks that measure real HTTP."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path


class Server:
    """`xray serve` in a subprocess on a free loopback port."""

    def __init__(self, models_dir: Path, **settings: str) -> None:
        """Start it and wait until /health/ready answers 200."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        env = {**os.environ, "XRAY_MODELS_DIR": str(models_dir), "XRAY_LOG_LEVEL": "WARNING"}
        env |= {f"XRAY_{key.upper()}": value for key, value in settings.items()}
        command = [sys.executable, "-m", "xray", "serve", "--port", str(self.port)]
        self.process = subprocess.Popen(command, env=env)
        deadline = time.monotonic() + 300
        while True:
            try:
                status, _, _ = self.request("GET", "/health/ready")
                if status == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("the server did not become ready")
            time.sleep(0.2)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str = "image/jpeg",
        extra_headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """One request on a fresh connection: status, headers (lower-case names), body."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        try:
            sent = {"Content-Type": content_type, **(extra_headers or {})}
            connection.request(method, path, body=body, headers=sent)
            response = connection.getresponse()
            headers = {name.lower(): value for name, value in response.getheaders()}
            return response.status, headers, response.read()
        finally:
            connection.close()

    def rss_mb(self) -> int:
        """The server's resident memory now (VmRSS), MB."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
        raise RuntimeError("no VmRSS")

    def settled_rss_mb(self, quiet_seconds: float = 5.0) -> int:
        """Wait until the resident size has moved by at most 2 MB for `quiet_seconds`; return it.

        After readiness the service still warms SHAP up in the background (imports shap, numba
        and llvmlite, and compiles): measuring beside that measures the compiler.
        """
        since, previous = time.monotonic(), self.rss_mb()
        while time.monotonic() - since < quiet_seconds:
            time.sleep(1.0)
            now = self.rss_mb()
            if abs(now - previous) > 2:
                since = time.monotonic()
            previous = now
        return previous

    def peak_rss_mb(self) -> float:
        """The server's peak resident memory (VmHWM), MB."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        """SIGTERM, then wait."""
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)


def throughput(server: Server, body: bytes, clients: int, seconds: float) -> float:
    """Requests per second of /predict with `clients` concurrent closed-loop clients."""
    stop = time.monotonic() + seconds
    counts = [0] * clients

    def client(index: int) -> None:
        while time.monotonic() < stop:
            status, _, _ = server.request("POST", "/predict", body)
            if status == 200:
                counts[index] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - started)
