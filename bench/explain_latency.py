"""Latency of /predict, /explain?method=gradcam and /explain?method=shap over real HTTP.

    python -m bench.explain_latency --models-dir models --image ../shared/data/cxr/images/normal/x.jpg

Starts `xray serve` on a free loopback port, sends each request `--repeat` times from one client
(after two warm-up requests), and prints a Markdown table of median and p90 latency, and the
ratio to /predict. Writes JSON too.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from bench.report import publish
from bench.server import Server


def _post(server: Server, path: str, body: bytes, content_type: str) -> tuple[float, dict[str, float]]:
    """Wall-clock seconds of one request, and the server's own phases from `Server-Timing` (ms)."""
    started = time.perf_counter()
    status, headers, _ = server.request("POST", path, body, content_type)
    elapsed = time.perf_counter() - started
    if status != 200:
        raise RuntimeError(f"{path}: HTTP {status}")
    phases = {}
    for part in headers.get("server-timing", "").split(","):
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
    server = Server(args.models_dir)
    try:
        # The service compiles shap (numba) in the background after readiness; a first SHAP
        # request waits for that, so nothing below is measured beside the compiler.
        _post(server, "/explain?method=shap&max_evals=10", body, content_type)
        cases = [
            ("/predict", "/predict", args.repeat),
            ("/explain gradcam", "/explain?method=gradcam", args.repeat),
            ("/explain gradcam, heatmaps only", "/explain?method=gradcam&overlays=false", args.repeat),
            (
                f"/explain shap ({args.shap_evals} evals)",
                f"/explain?method=shap&max_evals={args.shap_evals}",
                args.shap_repeat,
            ),
        ]  # fmt: skip
        rows: list[dict[str, float | int | str]] = []
        for name, path, repeat in cases:
            for _ in range(2):
                _post(server, path, body, content_type)
            results = [_post(server, path, body, content_type) for _ in range(repeat)]
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
        server.stop()
    for row in rows:
        row["vs_predict"] = round(float(row["median_ms"]) / float(rows[0]["median_ms"]), 2)
    publish(
        f"Latency, one client, {os.cpu_count()} CPUs, models in {args.models_dir}, image {args.image.name}",
        rows,
        args.json,
    )


if __name__ == "__main__":
    main()
