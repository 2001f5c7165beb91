"""A bounded coverage-guided run of `fuzz/decoders.py` (atheris): no crash in 5,000 executions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_atheris_finds_no_crash_in_the_decoders(tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    command = [sys.executable, "fuzz/decoders.py", "-atheris_runs=5000", "-max_len=4096", str(tmp_path)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Done 5000" in result.stderr
    assert len(list(tmp_path.iterdir())) > 4  # the fuzzer grew the corpus beyond the seeds
