"""Latency of /predict, /explain?method=gradcam and /explain?method=shap over real HTTP.

    python -m bench.explain_latency --models-dir models --image ../shared/data/cxr/images/normal/x.jpg

Starts `xray serve` on a free loopback port, sends each request `--repeat` times from one client
(after two warm-up requests), and prints a Markdown table of median and p90 latency, and the
ratio to /predict. Writes JSON too.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bench.report import publish


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _post(url: str, body: bytes, content_type: str) -> tuple[float, dict[str, float]]:
    """Wall-clock seconds of one request, and the server's own phases from `Server-Timing` (ms)."""
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as response:
        response.read()
        if response.status != 200:
            raise RuntimeError(f"{url}: HTTP {response.status}")
        header = response.headers.get("Server-Timing", "")
    elapsed = time.perf_counter() - started
    phases = {}
    for part in header.split(","):
        name, _, duration = part.partition(";dur=")
        if duration:
            phases[name.strip()] = float(duration)
    return elapsed, phases


def main() -> None:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--shap-repeat", type=int, default=3)
    parser.add_argument("--shap-evals", type=int, default=300)
    parser.add_argument("--json", type=Path, default=Path("runs/bench/explain_latency.json"))
    args = parser.parse_args()
    content_type = "application/dicom" if args.image.suffix.lower() == ".dcm" else "image/jpeg"
    if args.image.suffix.lower() == ".png":
        content_type = "image/png"
    body = args.image.read_bytes()
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "XRAY_MODELS_DIR": str(args.models_dir), "XRAY_LOG_LEVEL": "WARNING"}
    server = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--port", str(port)], env=env)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health/ready", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the server did not become ready") from None
                time.sleep(0.2)
        # The service compiles shap (numba) in the background after readiness; a first SHAP
        # request waits for that, so nothing below is measured beside the compiler.
        _post(f"{base}/explain?method=shap&max_evals=10", body, content_type)
        cases = [
            ("/predict", f"{base}/predict", args.repeat),
            ("/explain gradcam", f"{base}/explain?method=gradcam", args.repeat),
            (
                f"/explain shap ({args.shap_evals} evals)",
                f"{base}/explain?method=shap&max_evals={args.shap_evals}",
                args.shap_repeat,
            ),
        ]  # fmt: skip
        rows: list[dict[str, float | int | str]] = []
        for name, url, repeat in cases:
            for _ in range(2):
                _post(url, body, content_type)
            results = [_post(url, body, content_type) for _ in range(repeat)]
            times = sorted(elapsed for elapsed, _ in results)
            row: dict[str, float | int | str] = {
                "request": name,
                "n": repeat,
                "median_ms": round(1000 * statistics.median(times), 1),
                "p90_ms": round(1000 * times[min(len(times) - 1, int(0.9 * len(times)))], 1),
            }
            # The server's phases (median ms): model inference, the whole explain step (forward
            # passes and maps), and PNG rendering.
            for phase in ("inference", "explain", "render"):
                values = [phases[phase] for _, phases in results if phase in phases]
                row[f"server_{phase}_ms"] = round(statistics.median(values), 1) if values else "–"
            rows.append(row)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    for row in rows:
        row["vs_predict"] = round(float(row["median_ms"]) / float(rows[0]["median_ms"]), 2)
    publish(
        f"Latency, one client, {os.cpu_count()} CPUs, models in {args.models_dir}, image {args.image.name}",
        rows,
        args.json,
    )


if __name__ == "__main__":
    main()
