"""The README opens with the two commands a new user runs, and CI runs the second one."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def first_code_block() -> list[str]:
    lines = (REPO / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("```"))
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("```"))
    assert start < 5, "the commands must be the README's first lines"
    return lines[start + 1 : end]


def test_readme_opens_with_serve_and_test_commands() -> None:
    serve, test = first_code_block()
    assert serve.endswith("xray serve")
    assert "pytest" in test


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    _, test = first_code_block()
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert test in ci


def test_every_setting_is_documented_in_the_readme() -> None:
    from service.core.config import Settings

    text = (REPO / "README.md").read_text()
    missing = [name for name in Settings.model_fields if f"XRAY_{name.upper()}" not in text]
    assert not missing, missing
