"""Loading the training stack quietly, and saying once which devices it found.

TensorFlow's native libraries write to the process's standard error directly: at import, lines
about oneDNN and "Could not find cuda drivers"; on a machine without an NVIDIA driver, a
`failed call to cuInit ... UNKNOWN ERROR (303)` at every device query. None of them is a fault.
The training commands therefore import the stack with file descriptor 2 captured (what it wrote
goes to the DEBUG log), ask native code to log only what is fatal when no driver is present, and
log one line naming the devices found instead.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

MISSING = "the training commands need the `training` extra: pip install -e '.[training]'"
#: Where an NVIDIA kernel driver shows itself; without one, no GPU can be found.
NVIDIA_DRIVER_PATHS = (Path("/proc/driver/nvidia"), Path("/dev/nvidiactl"))


def nvidia_driver_present() -> bool:
    """Whether an NVIDIA kernel driver is loaded on this machine."""
    return any(path.exists() for path in NVIDIA_DRIVER_PATHS)


@contextlib.contextmanager
def native_stderr_to_debug() -> Iterator[None]:
    """Send what native code writes on descriptor 2 meanwhile to the DEBUG log, line by line."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            for line in sink.read().decode(errors="replace").splitlines():
                if line.strip():
                    logger.debug("native: %s", line)


def load_training_stack(*, announce: bool = True) -> None:
    """Import TensorFlow, Keras and tf2onnx quietly; with `announce`, log the devices in one line.

    A user's own `TF_CPP_MIN_LOG_LEVEL` is kept.

    Raises:
        SystemExit: The `training` extra is not installed.
    """
    # 3: fatal only, where no driver means every CUDA message is the same non-event; else
    # 1: warnings and errors (a GPU machine's real CUDA problems stay visible).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1" if nvidia_driver_present() else "3")
    try:
        with native_stderr_to_debug():
            import keras  # noqa: F401
            import tensorflow  # noqa: F401
            import tf2onnx  # noqa: F401
    except ImportError as exc:
        raise SystemExit(f"{MISSING} ({exc})") from exc
    if announce:
        from training.precision import detect_accelerators

        with native_stderr_to_debug():
            devices = detect_accelerators()
        driver = "" if nvidia_driver_present() else " (no NVIDIA driver on this machine)"
        logger.info("devices: %s%s", ", ".join(device.name for device in devices), driver)


#: prctl's option asking the kernel for a signal when the parent dies (linux/prctl.h).
_PR_SET_PDEATHSIG = 1


def end_with_parent(parent: int) -> None:
    """Have this process killed (SIGTERM) when `parent` dies, on Linux; elsewhere, nothing.

    A spawned training process would otherwise outlive an interrupted `xray train`, and go on
    writing the run's checkpoints beside the `--resume` that follows.
    """
    name = ctypes.util.find_library("c")
    if not sys.platform.startswith("linux") or name is None:
        return
    ctypes.CDLL(name, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it died before the request was made
        os.kill(os.getpid(), signal.SIGTERM)


def worker_initializer(level: str, parent: int) -> None:
    """A spawned training process: ends with `parent`, logs at its level, loads the stack quietly."""
    from service.core.logging import configure_logging

    end_with_parent(parent)
    configure_logging(level)
    load_training_stack(announce=False)
