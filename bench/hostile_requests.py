"""Hostile requests against `xray serve`: answers, time, memory, and `/health/live` meanwhile.

    python -m bench.hostile_requests --models-dir models --dicom ../shared/data/dicom

Starts `xray serve` with an API key. For each attack, the payload is built first (building it
would otherwise load the same CPUs), then a separate process polls `/health/live` every 20 ms
while one request carries the attack. Prints, per attack: the status, the seconds it took, the
server's peak resident growth, the bytes answered and the slowest `/health/live` answer (target:
under 100 ms). The first row, `idle`, is the poller's own floor with no attack. The compressed-DICOM
attacks need the sample DICOMs of the data folder (`--dicom`) and are left out without them.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.report import publish
from bench.server import Server
from tests.factories import jpeg_bytes

KEY = "k" * 32

#: A process that polls /health/live until SIGTERM, then prints its slowest answer in seconds.
_POLLER = """
import http.client, signal, sys, time
port, worst = int(sys.argv[1]), 0.0
def stop(*_):
    print(worst, flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
while True:
    started = time.perf_counter()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        connection.request("GET", "/health/live")
        connection.getresponse().read()
        connection.close()
    except OSError:
        pass
    worst = max(worst, time.perf_counter() - started)
    time.sleep(0.02)
"""

Send = Callable[[], tuple[Any, int]]


def _post(server: Server, path: str, body: bytes, content_type: str, key: bool = True) -> Send:
    def send() -> tuple[Any, int]:
        status, _, answer = server.request(
            "POST", path, body, content_type, extra_headers={"X-API-Key": KEY} if key else None
        )
        return status, len(answer)

    return send


def _patched_dicom(path: Path, width: int, height: int, marker: bytes, offset: int, layout: str) -> bytes:
    """A real compressed DICOM whose codestream header declares another size than Rows x Columns."""
    import pydicom
    from pydicom import encaps

    dataset = pydicom.dcmread(path)
    frame = bytearray(next(encaps.generate_frames(dataset.PixelData, number_of_frames=1)))
    at = frame.index(marker) + offset
    struct.pack_into(layout, frame, at, *((width, height) if layout == ">II" else (height, width)))
    dataset.PixelData = encaps.encapsulate([bytes(frame)])
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _progressive_jpeg(pixels: np.ndarray, extra_scans: int) -> bytes:
    """A progressive JPEG whose last scan is repeated `extra_scans` times."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", progressive=True)
    data = buffer.getvalue()
    last = data.rindex(b"\xff\xda")
    return data[:-2] + data[last:-2] * extra_scans + b"\xff\xd9"


def _header(server: Server, mebibytes: int) -> Send:
    def send() -> tuple[Any, int]:
        with socket.create_connection(("127.0.0.1", server.port), timeout=300) as connection:
            head = b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * (mebibytes << 20) + b"\r\n\r\n"
            with contextlib.suppress(OSError):
                connection.sendall(head)
            answer = b""
            with contextlib.suppress(OSError):
                while part := connection.recv(65536):
                    answer += part
            return answer[9:12].decode(errors="replace"), len(answer)

    return send


def _stow_of_junk(parts: int) -> bytes:
    part = b"--bnd\r\nContent-Type: application/dicom\r\n\r\njunk\r\n"
    return part * parts + b"--bnd--\r\n"


#: (file, declared width, declared height, marker, offset of the size after it, struct layout)
_PATCHED_DICOMS = {
    "JPEG 2000 DICOM, SIZ says 60000²": (
        "JPEG2000__RG1_J2KI.dcm",
        60000,
        60000,
        b"\xff\x4f\xff\x51",
        8,
        ">II",
    ),
    "JPEG-LS DICOM, SOF says 20000²": ("JPEGLSLossless__RG2_JLSL.dcm", 20000, 20000, b"\xff\xf7", 5, ">HH"),
    "JPEG Lossless DICOM, SOF says 20000²": (
        "JPEGLosslessSV1__RG2_JPLL.dcm",
        20000,
        20000,
        b"\xff\xc3",
        5,
        ">HH",
    ),
}


def attacks(server: Server, dicom: Path | None) -> dict[str, Callable[[], Send]]:
    """Attack name → a builder of its request (called before the measurement starts)."""
    noise = np.random.default_rng(1)
    stow = 'multipart/related; type="application/dicom"; boundary=bnd'
    huge_json = b'{"study_instance_uid": "' + b"1" * 200_000_000 + b'"}'
    table: dict[str, Callable[[], Send]] = {
        "idle (no request: the poller's floor)": lambda: lambda: (time.sleep(1.0), ("-", 0))[1],
        "progressive JPEG, 256², 1000 scans": lambda: _post(
            server,
            "/predict",
            _progressive_jpeg(noise.integers(0, 256, (256, 256), np.uint8), 1000),
            "image/jpeg",
        ),
        "progressive JPEG, 6300², 100 cheap scans": lambda: _post(
            server, "/predict", _progressive_jpeg(np.full((6300, 6300), 128, np.uint8), 94), "image/jpeg"
        ),
        "/pacs/analyze, 200 MB JSON, no key": lambda: _post(
            server, "/pacs/analyze", huge_json, "application/json", key=False
        ),
        "STOW-RS, 100,000 junk parts": lambda: _post(
            server, "/dicom-web/studies", _stow_of_junk(100_000), stow
        ),
        "request head of 60 MiB": lambda: _header(server, 60),
        "/explain, 6324² JPEG (40 MP)": lambda: _post(
            server,
            "/explain",
            jpeg_bytes(noise.integers(0, 256, (6324, 6324), np.uint8), quality=30),
            "image/jpeg",
        ),
    }
    if dicom is not None:
        for name, (file, width, height, marker, offset, layout) in _PATCHED_DICOMS.items():
            table[name] = (
                lambda file=file, width=width, height=height, marker=marker, offset=offset, layout=layout: (
                    _post(
                        server,
                        "/predict",
                        _patched_dicom(dicom / file, width, height, marker, offset, layout),
                        "application/dicom",
                    )
                )
            )
    return table


def measure(server: Server, name: str, send: Send) -> dict[str, Any]:
    """Run one attack while polling /health/live from another process."""
    poller = subprocess.Popen(
        [sys.executable, "-c", _POLLER, str(server.port)], stdout=subprocess.PIPE, text=True
    )
    time.sleep(0.3)
    before = peak = server.rss_mb()
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, server.rss_mb())
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    started = time.perf_counter()
    try:
        status, size = send()
    except OSError as exc:
        status, size = type(exc).__name__, 0
    seconds = time.perf_counter() - started
    done.set()
    watcher.join()
    poller.terminate()
    worst = float(poller.communicate()[0].split()[-1] or 0.0)
    return {
        "attack": name,
        "status": status,
        "seconds": round(seconds, 2),
        "rss_peak_growth_mb": peak - before,
        "response_bytes": size,
        "health_live_worst_ms": round(1000 * worst, 1),
    }


def main() -> None:
    """Run every attack once and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--dicom", type=Path, help="the data's sample DICOM folder (../shared/data/dicom)")
    parser.add_argument("--json", type=Path, default=Path("runs/bench/hostile_requests.json"))
    args = parser.parse_args()
    dicom = args.dicom if args.dicom and args.dicom.is_dir() else None
    server = Server(args.models_dir, api_key=KEY, log_level="ERROR")
    try:
        server.settled_rss_mb()  # after the background SHAP warm-up, which holds the GIL a while
        rows = [measure(server, name, build()) for name, build in attacks(server, dicom).items()]
    finally:
        server.stop()
    publish(f"Hostile requests against xray serve ({os.cpu_count()} CPUs), one at a time", rows, args.json)


if __name__ == "__main__":
    main()
