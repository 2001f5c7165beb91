"""The layers of docs/architecture.md hold: `lint-imports` (import-linter) over the three packages."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [str(LINT_IMPORTS), "--no-cache"]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_the_code_keeps_the_documented_layers() -> None:
    result = _lint(REPO)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 broken" in result.stdout


def test_an_import_against_the_layers_is_caught(tmp_path: Path) -> None:
    # A copy of the packages where the contract reaches up into the service, as dicom.py and
    # preprocessing.py once did to each other.
    for package in ("xray", "service", "training"):
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    images = tmp_path / "xray" / "contract" / "images.py"
    images.write_text(images.read_text() + "\nimport service.api.app  # noqa: E402\n")
    result = _lint(tmp_path, {**os.environ, "PYTHONPATH": str(tmp_path)})
    assert result.returncode != 0
    assert "BROKEN" in result.stdout
    assert "xray.contract.images -> service.api.app" in result.stdout
