"""A spawned training process ends with the `xray train` that started it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def sleep_after_writing_pid(path: str) -> None:
    """Run in the spawned process: say who it is, then outlast any test."""
    Path(path).write_text(str(os.getpid()))
    time.sleep(600)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_a_killed_parent_takes_its_training_process_with_it(tmp_path: Path) -> None:
    marker = tmp_path / "child.pid"
    script = (
        "from training.workflow import in_fresh_process\n"
        "from tests.training.test_runtime import sleep_after_writing_pid\n"
        f"in_fresh_process(sleep_after_writing_pid, {str(marker)!r})\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        while not marker.is_file() or not marker.read_text():
            assert time.monotonic() < deadline, "the spawned process never started"
            assert parent.poll() is None, "the parent ended early"
            time.sleep(0.2)
        child = int(marker.read_text())
        assert _alive(child)
        parent.send_signal(signal.SIGKILL)  # as a lost session or an OOM kill ends it: no clean-up
        parent.wait()
        deadline = time.monotonic() + 30
        while _alive(child):
            assert time.monotonic() < deadline, "the training process outlived its parent"
            time.sleep(0.2)
    finally:
        if parent.poll() is None:
            parent.kill()
