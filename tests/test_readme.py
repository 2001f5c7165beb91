"""The README works as written: its first two lines, and every shell example that can run offline.

Every command of every `bash` block of the README is either run here, against the bundled models
and the sample radiograph, with its answer checked, or listed in `NOT_RUN` with the reason. A new
example that is neither fails the test, so the README cannot grow an example nobody ran.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.live_server import LiveServer, live_server

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SAMPLE = REPO / "examples" / "chest.jpg"
README_URL = "http://127.0.0.1:8000"

#: Commands not run here, each with the reason.
NOT_RUN = {
    r"^python3\.11 -m venv ": "the first two lines install from the package index: .ci/run runs the second "
    "verbatim, and the first one's `xray serve` is what every other example here talks to",
    r"^pip install ": "installs from the package index (the test environment has the extras)",
}


def first_code_block() -> list[str]:
    lines = README.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("```"))
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("```"))
    assert start < 5, "the commands must be the README's first lines"
    return lines[start + 1 : end]


def readme_commands() -> list[str]:
    """Every command of the README's `bash` blocks, continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.DOTALL):
        for command in block.replace("\\\n", " ").splitlines():
            command = command.split("  #")[0].strip()
            if command and not command.startswith("#"):
                commands.append(" ".join(command.split()))
    return commands


def test_readme_opens_with_serve_and_test_commands() -> None:
    serve, test = first_code_block()
    assert serve.endswith("xray serve")
    assert '".[cpu,explain]"' in serve  # a service that does all it documents: SHAP included
    assert "pytest" in test


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    _, test = first_code_block()
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert test in ci


def test_the_readme_links_to_files_that_exist() -> None:
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", README.read_text()):
        assert (REPO / target).exists(), target


# What each runnable example must answer. Keys match the command after the URL and /tmp/ paths
# were rewritten to the test's; values check the command's standard output.
def _json(output: str) -> dict[str, object]:
    answer = json.loads(output)
    assert isinstance(answer, dict)
    return answer


def _a_prediction(output: str) -> None:
    answer = _json(output)
    assert set(answer["ensembles"]) == {"classic", "confidence"}  # type: ignore[arg-type]
    assert set(answer["models"]) == {"scratch", "inception_resnet_v2", "efficientnet_v2_b2"}  # type: ignore[arg-type]
    assert answer["input_check"]["in_distribution"] is True  # type: ignore[index]  # a real chest radiograph


def _heatmaps_only(output: str) -> None:
    _a_prediction(output)
    maps = _json(output)["explanations"]
    assert set(maps) == {"scratch", "inception_resnet_v2", "efficientnet_v2_b2", "ensemble"}  # type: ignore[arg-type]
    assert all("heatmap_png" in item and "overlay_png" not in item for item in maps.values())  # type: ignore[attr-defined]


def _the_models(output: str) -> None:
    assert {model["name"] for model in _json(output)["models"]} == {  # type: ignore[attr-defined]
        "scratch",
        "inception_resnet_v2",
        "efficientnet_v2_b2",
    }


CHECKS: dict[str, Callable[[str], None]] = {
    r"^curl -s -H 'Content-Type: image/jpeg' --data-binary @examples/chest\.jpg \S+/predict$": _a_prediction,
    r"^curl -s -F file=@examples/chest\.jpg '\S+/explain\?overlays=false'$": _heatmaps_only,
    r"^curl -s \S+/models$": _the_models,
    r"^xray predict --pretty examples/chest\.jpg$": _a_prediction,
    r"^xray explain examples/chest\.jpg --out \S+$": lambda output: None,  # files checked below
}


def _run(command: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        ["bash", "-c", command], cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result.stdout


def _rewrite(command: str, server: LiveServer, tmp: Path, data: Path) -> str:
    return (
        command.replace(README_URL, server.url)
        .replace("/tmp/", f"{tmp}/")
        .replace("../shared/data", str(data))
    )


def _serve_arguments(command: str) -> list[str]:
    """`xray serve …` as the arguments of `live_server`, less the port (the test picks a free one)."""
    words = shlex.split(command)
    assert words[:2] == ["xray", "serve"], command
    arguments = words[2:]
    if "--port" in arguments:
        index = arguments.index("--port")
        del arguments[index : index + 2]
    return arguments


@pytest.mark.slow
def test_every_example_of_the_readme_runs_as_written(tmp_path: Path) -> None:
    from tests.conftest import shared_data_dir

    data = shared_data_dir()
    if not (data / "cxr" / "labels.csv").is_file():
        reason = f"the README's training example needs the data at {data} (set XRAY_DATA_DIR)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    commands = readme_commands()
    skipped = [c for c in commands if any(re.search(pattern, c) for pattern in NOT_RUN)]
    runnable = [c for c in commands if c not in skipped]
    ran: list[str] = []
    with live_server() as server:  # the first line's `xray serve`: the bundled models
        for command in runnable:
            rewritten = _rewrite(command, server, tmp_path, data)
            if command.startswith("xray serve"):
                continue  # served below, after the training that makes its models
            if command.startswith("xray train"):
                _run(rewritten)  # its models are served and asked below
                ran.append(command)
                continue
            check = next((check for pattern, check in CHECKS.items() if re.search(pattern, command)), None)
            assert check is not None, (
                f"the README's example `{command}` is neither checked here nor in NOT_RUN"
            )
            check(_run(rewritten))
            ran.append(command)

    explained = tmp_path / "xray-explain" / "chest"  # `xray explain`: one folder per file
    assert {path.name for path in explained.glob("*.png")} == {
        f"{name}-gradcam-{kind}.png"
        for name in ("scratch", "inception_resnet_v2", "efficientnet_v2_b2", "ensemble")
        for kind in ("heatmap", "overlay")
    }
    _a_prediction((explained / "prediction.json").read_text())

    for command in (c for c in runnable if c.startswith("xray serve")):
        arguments = _serve_arguments(_rewrite(command, server, tmp_path, data))
        with live_server(arguments=arguments) as trained:
            status, _, body = trained.request(
                "POST", "/predict", SAMPLE.read_bytes(), {"Content-Type": "image/jpeg"}
            )
            assert status == 200, body
            assert set(json.loads(body)["ensembles"]) == {"classic", "confidence"}
        ran.append(command)
    assert sorted(ran) == sorted(runnable)
