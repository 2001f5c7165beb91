r"""The code's layout, measured: the path of one request through the modules, and the longest functions.

    python -m bench.layout --models-dir models --image ../shared/data/cxr/images/normal/x.jpg

Serves the models in this process, waits until they are ready, then sends one request
(`/predict` by default, `--path /explain` for another) while a profiler hook notes every call
into the project's own code, on every thread. It prints:

* the modules the request entered, in the order first entered, with how many separate times
  the path came back into each (a module entered from another module counts once per entry);
* the layers it crossed in order (`service.api → service.inference → …`, repeats collapsed; calls
  on different threads interleave, so this is a time line, not a call chain);
* the thread pools its work ran on (by thread name), and any API-layer code that ran on the
  service's own worker threads (`xray-*`): that is the inference layer calling back into the API;
* the longest functions of the packages, by lines.

The last line is one JSON object with the counts, so that a layout change can be compared
before and after with the same command.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

PACKAGES = ("xray", "service", "training")
ROOT = Path(__file__).resolve().parent.parent


def _layer(module: str) -> str:
    """The layer of a module: its first two dotted parts (`service.api`, `xray.contract`, ...)."""
    return ".".join(module.split(".")[:2])


class CallPath:
    """Records which project modules run, in order, on any thread, while `recording` is set."""

    def __init__(self) -> None:
        self.recording = threading.Event()
        self.entries: list[tuple[str, str]] = []  # (module, thread name), one per entry
        self._last: dict[int, str] = {}
        self._lock = threading.Lock()

    def hook(self, frame: FrameType, event: str, _arg: object) -> None:
        """A `sys.setprofile` function: note calls into project modules."""
        if event != "call" or not self.recording.is_set():
            return
        module = frame.f_globals.get("__name__", "")
        if not module.startswith(PACKAGES) or module.startswith("service.__main__"):
            return
        ident = threading.get_ident()
        caller = frame.f_back.f_globals.get("__name__", "") if frame.f_back is not None else ""
        if caller == module:
            return  # a call inside the module it is already in
        with self._lock:
            self.entries.append((module, threading.current_thread().name))
            self._last[ident] = module


def longest_functions(count: int = 10) -> list[dict[str, Any]]:
    """The `count` longest functions (and methods) of the packages, by lines."""
    rows = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno:
                    rows.append(
                        {
                            "function": f"{path.relative_to(ROOT)}:{node.name}",
                            "lines": node.end_lineno - node.lineno + 1,
                        }
                    )
    return sorted(rows, key=lambda row: -row["lines"])[:count]


def _collapse(items: list[str]) -> Iterator[str]:
    previous = None
    for item in items:
        if item != previous:
            yield item
        previous = item


def trace_request(models_dir: Path, image: Path, path: str) -> dict[str, Any]:
    """Serve `models_dir` in this process and trace one request of `image` to `path`."""
    calls = CallPath()
    sys.setprofile(calls.hook)
    threading.setprofile(calls.hook)
    from fastapi.testclient import TestClient

    from service.api.app import create_app
    from service.core.config import Settings

    app = create_app(Settings(models_dir=models_dir))
    content_type = {".png": "image/png", ".dcm": "application/dicom"}.get(image.suffix.lower(), "image/jpeg")
    body = image.read_bytes()
    with TestClient(app) as client:
        deadline = time.monotonic() + 120
        while client.get("/health/ready").status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("the service did not become ready in 120 s")
            time.sleep(0.2)
        client.post(path, content=body, headers={"content-type": content_type})  # warm path, untraced
        calls.recording.set()
        response = client.post(path, content=body, headers={"content-type": content_type})
        calls.recording.clear()
    sys.setprofile(None)
    threading.setprofile(None)  # type: ignore[arg-type]
    if response.status_code != 200:
        raise RuntimeError(f"{path}: HTTP {response.status_code}")
    modules = [module for module, _ in calls.entries]
    order = list(dict.fromkeys(modules))
    # One entry per arrival from another module; the middleware and metrics plumbing that every
    # request passes are counted like the rest.
    entries = {module: modules.count(module) for module in order}
    layers = list(_collapse([_layer(module) for module in _collapse(modules)]))
    pools = sorted({_pool(thread) for _, thread in calls.entries})
    callbacks = sorted(
        {
            module
            for module, thread in calls.entries
            if module.startswith("service.api") and thread.startswith("xray-")
        }
    )
    return {"modules": entries, "layers": layers, "threads": pools, "api_on_worker_threads": callbacks}


def _pool(thread: str) -> str:
    """A thread's pool: its name without the pool's numbering."""
    return re.sub(r"[-_][0-9a-f]+$", "", thread)


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--path", default="/predict", help="the route to send the image to")
    args = parser.parse_args()
    traced = trace_request(args.models_dir, args.image, args.path)
    out = sys.stdout
    out.write(f"{args.path}: {len(traced['modules'])} project modules entered\n\n")
    out.write("| module | entries |\n|---|---|\n")
    out.writelines(f"| {module} | {count} |\n" for module, count in traced["modules"].items())
    out.write(f"\nlayers, in order: {' → '.join(traced['layers'])}\n")
    out.write(f"threads: {', '.join(traced['threads'])}\n")
    callbacks = ", ".join(traced["api_on_worker_threads"]) or "none"
    out.write(f"API code run on the worker threads: {callbacks}\n\n")
    functions = longest_functions()
    out.write("| longest functions | lines |\n|---|---|\n")
    out.writelines(f"| {row['function']} | {row['lines']} |\n" for row in functions)
    summary = {
        "path": args.path,
        "modules": len(traced["modules"]),
        "module_entries": sum(traced["modules"].values()),
        "layer_changes": len(traced["layers"]) - 1,
        "threads": traced["threads"],
        "api_on_worker_threads": traced["api_on_worker_threads"],
        "longest_function_lines": functions[0]["lines"],
    }
    out.write(json.dumps(summary) + "\n")


if __name__ == "__main__":
    main()
