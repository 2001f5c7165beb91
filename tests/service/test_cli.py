"""`xray predict` and `xray serve` from the command line."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.factories import gradient, png_bytes
from xray.cli import main


def test_predict_prints_the_same_json_as_the_api(
    client: TestClient, models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "chest.png"
    image.write_bytes(png_bytes(gradient()))
    assert main(["predict", "--models-dir", str(models_dir), str(image), str(image)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    offline = json.loads(lines[0])
    online = client.post("/predict", content=image.read_bytes(), headers={"Content-Type": "image/png"}).json()
    offline.pop("request_id")
    online.pop("request_id")
    assert offline == online


def test_predict_reports_bad_files_and_exits_1(
    models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    good.write_bytes(png_bytes(gradient()))
    bad.write_bytes(b"not an image")
    assert (
        main(["predict", "--models-dir", str(models_dir), str(bad), str(good), str(tmp_path / "absent.png")])
        == 1
    )
    captured = capsys.readouterr()
    assert len(captured.out.strip().splitlines()) == 1
    assert "bad.png: the upload is not a PNG, JPEG or DICOM image" in captured.err
    assert "absent.png" in captured.err


def test_predict_with_a_broken_manifest_exits_2(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert main(["predict", "--models-dir", str(tmp_path), "x.png"]) == 2
    assert "no model manifest" in caplog.text


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def xray(*args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "xray", *args],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_serve_refuses_a_wrong_sha256_naming_the_file(models_dir: Path) -> None:
    manifest = models_dir / "manifest.json"
    document = json.loads(manifest.read_text())
    document["models"][0]["sha256"] = "0" * 64
    manifest.write_text(json.dumps(document))
    process = xray("serve", "--models-dir", str(models_dir), "--port", str(free_port()))
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 2
    assert "scratch.onnx has sha256" in output


@pytest.mark.slow
def test_serve_answers_over_http_and_stops_on_sigterm(models_dir: Path) -> None:
    port = free_port()
    process = xray("serve", "--port", str(port), XRAY_MODELS_DIR=str(models_dir))
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health/ready", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.1)
        request = urllib.request.Request(
            f"{base}/predict", data=png_bytes(gradient()), headers={"Content-Type": "image/png"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body = json.load(response)
        assert body["ensembles"]["classic"]["label"] == "tuberculosis"
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    # uvicorn re-raises the signal once its graceful shutdown is done, so -SIGTERM is a clean exit.
    assert process.returncode in (0, -signal.SIGTERM), output
    assert "POST /predict 200" in output
    assert "Application shutdown complete" in output


def test_the_service_and_its_command_line_never_import_tensorflow() -> None:
    probe = (
        "import sys; from xray.cli import build_parser; build_parser(); import service.api.app; "
        "print(sorted(m for m in ('tensorflow', 'keras', 'tf2onnx', 'sklearn') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "[]"


def test_explain_writes_heatmaps_overlays_and_the_prediction(
    make_models, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.factories import ModelSpec

    models = make_models(
        [
            ModelSpec(
                "scratch", weights=[-1.0, 2.0, 3.0], bias=[0.0, 0.0, 0.0], height=64, width=64, with_maps=True
            )
        ],
        order=["scratch"],
    )
    image = tmp_path / "chest.png"
    image.write_bytes(png_bytes(gradient(100, 80)))
    out = tmp_path / "out"
    assert (
        main(
            [
                "explain",
                "--models-dir",
                str(models),
                "--out",
                str(out),
                "--target",
                "tuberculosis",
                str(image),
            ]
        )
        == 0
    )
    folder = out / "chest"
    assert capsys.readouterr().out.strip() == str(folder)
    for name in ("scratch", "ensemble"):
        for kind in ("heatmap", "overlay"):
            assert (folder / f"{name}-gradcam-{kind}.png").read_bytes().startswith(b"\x89PNG")
    assert json.loads((folder / "prediction.json").read_text())["models"]["scratch"]["label"] in {
        "normal",
        "pneumonia",
        "tuberculosis",
    }
    assert (
        main(["explain", "--models-dir", str(models), "--out", str(out), "--target", "covid", str(image)])
        == 2
    )


def test_version_names_the_package_and_the_models_it_would_serve(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XRAY_MODELS_DIR", str(models_dir))
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    printed = capsys.readouterr().out
    assert printed.startswith("xray-triage ")
    for name in ("scratch", "inception_resnet_v2", "efficientnet_v2_b2"):
        assert f"{name} 1.0.0-test" in printed
    monkeypatch.setenv("XRAY_MODELS_DIR", str(models_dir / "absent"))
    with pytest.raises(SystemExit):
        main(["--version"])
    assert "none loadable" in capsys.readouterr().out  # still answers, saying why there are no models


@pytest.mark.parametrize("command", ["predict", "explain", "serve", "train", "fit-input-check"])
def test_every_help_shows_the_defaults(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "default:" in text
    assert "default: None" not in text
