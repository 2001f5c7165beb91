"""Resident memory of `xray serve` before and after load: does it grow, and does it keep growing?

    python -m bench.memory_growth --models-dir models --image examples/chest.jpg

Starts `xray serve`, sends a few requests and waits until the resident size has settled (the
SHAP warm-up loads its libraries in the background after readiness), sends the bad-input corpus
of the tests three times, then `--clients` concurrent clients of `/predict` for `--seconds`,
twice, and waits `--settle` seconds after each (the service trims its heap once idle). Prints the
resident size at each point and the growth (target: under 10 %; the second load should add
nothing: a plateau, not a leak). Writes JSON too.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.report import publish
from bench.server import Server, throughput


def main() -> None:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--image", type=Path, default=Path("examples/chest.jpg"))
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--settle", type=float, default=8.0)
    parser.add_argument("--json", type=Path, default=Path("runs/bench/memory_growth.json"))
    args = parser.parse_args()
    from tests.service.api.test_bad_input_corpus import CORPUS

    body = args.image.read_bytes()
    server = Server(args.models_dir)
    try:
        for _ in range(30):
            server.request("POST", "/predict", body)
        rows = [
            {
                "point": "ready, after 30 requests, settled",
                "rss_mb": server.settled_rss_mb(),
                "requests_per_s": "—",
            }
        ]
        for _ in range(3):
            for _name, bad, content_type, _status, _slug in CORPUS:
                server.request("POST", "/predict", bad, content_type or "application/octet-stream")
        rows.append(
            {"point": "after the bad-input corpus x3", "rss_mb": server.rss_mb(), "requests_per_s": "—"}
        )
        for turn in ("first", "second"):
            rate = throughput(server, body, args.clients, args.seconds)
            time.sleep(args.settle)
            rows.append(
                {
                    "point": f"{turn} load ({args.clients} clients, {args.seconds:g} s), then idle",
                    "rss_mb": server.rss_mb(),
                    "requests_per_s": round(rate, 1),
                }
            )
    finally:
        server.stop()
    start = rows[0]["rss_mb"]
    for row in rows:
        row["growth_vs_ready"] = f"{100 * (int(row['rss_mb']) / int(start) - 1):+.1f} %"
    publish(f"Resident memory of xray serve, models in {args.models_dir}", rows, args.json)


if __name__ == "__main__":
    main()
