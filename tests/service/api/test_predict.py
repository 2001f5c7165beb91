"""POST /predict: the answer on every accepted input, and every error status of docs/api.md."""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.inference import serving as state_module
from tests.factories import dicom_bytes, gradient, jpeg_bytes, pixel_specs, png_bytes
from xray.contract.model import GraphOutputs, OnnxModel

PROBLEM = "application/problem+json"


def on_request_path() -> bool:
    """Whether the models are being run for a request, on the service's inference threads.

    The SHAP warm-up that follows readiness runs the models too, on another thread; a test that
    patches the runtime must leave those calls alone.
    """
    return threading.current_thread().name.startswith(("xray-infer", "xray-models", "xray-model-run"))


def assert_problem(response, status: int, slug: str) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status
    assert body["type"] == f"urn:xray-triage:problem:{slug}"
    assert body["title"]
    assert body["detail"]
    return body


def post_in_background(client: TestClient, statuses: list[int]) -> threading.Thread:
    """Start a thread that POSTs a gradient PNG to /predict and appends its status."""
    thread = threading.Thread(
        target=lambda: statuses.append(
            client.post(
                "/predict", content=png_bytes(gradient()), headers={"Content-Type": "image/png"}
            ).status_code
        )
    )
    thread.start()
    return thread


def upload_then_leave(client: TestClient, body: bytes, *, declared_length: int, more_body: bool) -> None:
    """POST `body` to /predict as a raw ASGI client that disconnects right after sending it."""
    messages = iter([{"type": "http.request", "body": body, "more_body": more_body}])

    async def receive() -> dict[str, object]:
        return next(messages, {"type": "http.disconnect"})  # then the client is gone

    async def send(message: dict[str, object]) -> None:
        pass

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/predict",
        "raw_path": b"/predict",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"image/png"), (b"content-length", str(declared_length).encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    client.portal.call(client.app, scope, receive, send)  # type: ignore[union-attr, arg-type]


class TestAnswer:
    def test_raw_png_gets_every_model_and_both_ensembles(self, client: TestClient) -> None:
        response = client.post(
            "/predict", content=png_bytes(gradient()), headers={"Content-Type": "image/png"}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["classes"] == ["normal", "pneumonia", "tuberculosis"]
        assert set(body["models"]) == {"scratch", "inception_resnet_v2", "efficientnet_v2_b2"}
        scratch = body["models"]["scratch"]
        assert scratch["label"] == "tuberculosis"
        assert scratch["confidence"] == pytest.approx(0.7, abs=1e-6)
        assert scratch["probabilities"] == pytest.approx(
            {"normal": 0.1, "pneumonia": 0.2, "tuberculosis": 0.7}, abs=1e-6
        )
        classic = body["ensembles"]["classic"]
        assert classic["probabilities"] == pytest.approx(
            {"normal": 0.3, "pneumonia": 1 / 3, "tuberculosis": 11 / 30}, abs=1e-6
        )
        assert classic["label"] == "tuberculosis"
        assert classic["uncertain"] is True
        cascade = body["ensembles"]["confidence"]
        assert cascade["decided_by"] == "classic"
        assert cascade["uncertain"] is True
        assert body["model_versions"] == {name: "1.0.0-test" for name in body["models"]}
        assert "dicom" not in body
        assert body["request_id"] == response.headers["x-request-id"]

    @pytest.mark.parametrize(
        "image",
        [
            png_bytes(gradient()),
            png_bytes(np.stack([gradient()] * 3, axis=-1)),
            png_bytes(
                np.concatenate([np.stack([gradient()] * 3, -1), np.full((48, 40, 1), 200, np.uint8)], -1)
            ),
            jpeg_bytes(gradient()),
        ],
        ids=["gray-png", "rgb-png", "rgba-png", "jpeg"],
    )
    def test_multipart_upload(self, client: TestClient, image: bytes) -> None:
        response = client.post("/predict", files={"file": ("xray", image, "application/octet-stream")})
        assert response.status_code == 200, response.text
        assert response.json()["ensembles"]["classic"]["label"] == "tuberculosis"

    def test_16bit_png(self, client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
        # What the models were given: the service's decode of the upload, caught on its way.
        decoded: list[np.ndarray] = []
        original = state_module.decode_image

        def watched(data: bytes, **kwargs: object) -> object:
            image = original(data, **kwargs)  # type: ignore[arg-type]
            decoded.append(image.pixels)
            return image

        monkeypatch.setattr(state_module, "decode_image", watched)
        buffer = io.BytesIO()
        Image.fromarray(gradient().astype(np.uint16) * 257).save(buffer, format="PNG")
        response = client.post("/predict", content=buffer.getvalue(), headers={"Content-Type": "image/png"})
        assert response.status_code == 200
        # The 16-bit image holds an 8-bit one times 257: the models saw exactly the 8-bit array.
        (pixels,) = decoded
        assert pixels.dtype == np.uint8
        np.testing.assert_array_equal(pixels, gradient())

    def test_dicom_answer_carries_only_its_uids(self, client: TestClient) -> None:
        data = dicom_bytes(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64))
        response = client.post("/predict", content=data, headers={"Content-Type": "application/dicom"})
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body["dicom"]) == {"study_instance_uid", "series_instance_uid", "sop_instance_uid"}
        assert "Synthetic" not in response.text
        assert "SYNTHETIC-0001" not in response.text

    def test_dicom_as_a_multipart_dcm_file(self, client: TestClient) -> None:
        data = dicom_bytes(np.arange(32 * 32, dtype=np.uint16).reshape(32, 32), preamble=False)
        response = client.post("/predict", files={"file": ("image.dcm", data, "application/octet-stream")})
        assert response.status_code == 200, response.text
        assert "dicom" in response.json()

    def test_incoming_request_id_is_echoed_only_when_plain(self, client: TestClient) -> None:
        headers = {"Content-Type": "image/png", "X-Request-ID": "ris-42.a_b"}
        assert (
            client.post("/predict", content=png_bytes(gradient()), headers=headers).json()["request_id"]
            == "ris-42.a_b"
        )
        headers["X-Request-ID"] = "Doe^John 1970-01-01"
        echoed = client.post("/predict", content=png_bytes(gradient()), headers=headers).json()["request_id"]
        assert "Doe" not in echoed


class TestInputCheck:
    """The input check in every answer, its reasons, and the refusal a server can be set to."""

    def test_every_answer_says_whether_the_image_looks_like_the_training_images(
        self, make_client: Callable[..., TestClient], make_models: Callable[..., Path]
    ) -> None:
        client = make_client(make_models(pixel_specs(with_features=True), input_check_threshold=1.0))
        usual = client.post("/predict", content=png_bytes(gradient()), headers={"Content-Type": "image/png"})
        assert usual.status_code == 200, usual.text
        check = usual.json()["input_check"]
        assert check["in_distribution"] is True
        assert check["method"] == "mahalanobis"
        assert check["threshold"] == 1.0
        assert check["score"] < 1.0
        blank = client.post(
            "/predict", content=png_bytes(np.zeros((48, 40), np.uint8)), headers={"Content-Type": "image/png"}
        )
        body = blank.json()
        assert body["input_check"]["in_distribution"] is False
        assert body["input_check"]["score"] == pytest.approx(34.0, rel=1e-4)
        for ensemble in body["ensembles"].values():
            assert ensemble["uncertain"] is True
            assert "out_of_distribution" in ensemble["uncertain_reasons"]
            assert ensemble["label"] in body["classes"]  # the labels are still given, for a human to judge

    def test_models_without_a_check_answer_with_method_none(self, client: TestClient) -> None:
        body = client.post(
            "/predict", content=png_bytes(gradient()), headers={"Content-Type": "image/png"}
        ).json()
        assert body["input_check"] == {
            "in_distribution": True,
            "score": 0.0,
            "threshold": 0.0,
            "method": "none",
        }
        assert body["ensembles"]["classic"]["uncertain_reasons"] == ["low_confidence", "models_disagree"]

    def test_a_server_set_to_reject_answers_422_out_of_distribution(
        self, make_client: Callable[..., TestClient], make_models: Callable[..., Path]
    ) -> None:
        client = make_client(
            make_models(pixel_specs(with_maps=True, with_features=True), input_check_threshold=1.0),
            reject_out_of_distribution=True,
        )
        blank = png_bytes(np.zeros((48, 40), np.uint8))
        for path in ("/predict", "/explain"):
            response = client.post(path, content=blank, headers={"Content-Type": "image/png"})
            body = assert_problem(response, 422, "out-of-distribution")
            assert "threshold" in body["detail"]
        usual = client.post("/explain", content=png_bytes(gradient()), headers={"Content-Type": "image/png"})
        assert usual.status_code == 200, usual.text
        assert usual.json()["input_check"]["in_distribution"] is True


class TestErrors:
    @pytest.mark.parametrize(
        ("content", "content_type"),
        [
            (b"this is not an image", "image/png"),
            (png_bytes(gradient())[:50], "image/png"),
            (b"\xff\xd8\xff\xe0garbage", "image/jpeg"),
            (b"\x00" * 300, "application/dicom"),
        ],
        ids=["text-as-png", "truncated-png", "broken-jpeg", "zeros-as-dicom"],
    )
    def test_400_undecodable(self, client: TestClient, content: bytes, content_type: str) -> None:
        assert_problem(
            client.post("/predict", content=content, headers={"Content-Type": content_type}),
            400,
            "invalid-image",
        )

    def test_400_empty_body(self, client: TestClient) -> None:
        assert_problem(
            client.post("/predict", content=b"", headers={"Content-Type": "image/png"}), 400, "invalid-image"
        )

    def test_400_dicom_without_pixels(self, client: TestClient) -> None:
        response = client.post(
            "/predict", content=dicom_bytes(None), headers={"Content-Type": "application/dicom"}
        )
        assert_problem(response, 400, "unsupported-dicom")

    def test_400_malformed_multipart(self, client: TestClient) -> None:
        response = client.post(
            "/predict",
            content=b"--x\r\nnonsense",
            headers={"Content-Type": "multipart/form-data; boundary=x"},
        )
        assert response.status_code in (400, 422)
        assert response.headers["content-type"].startswith(PROBLEM)

    def test_413_declared_length(self, make_client: Callable[..., TestClient], models_dir: Path) -> None:
        client = make_client(models_dir, max_upload_bytes=1000)
        body = assert_problem(
            client.post("/predict", content=b"\0" * 5000, headers={"Content-Type": "image/png"}),
            413,
            "payload-too-large",
        )
        assert "1000" in body["detail"]

    def test_413_streamed_body_is_cut_while_reading(
        self, make_client: Callable[..., TestClient], models_dir: Path
    ) -> None:
        client = make_client(models_dir, max_upload_bytes=1000)
        sent = []

        def chunks() -> Iterator[bytes]:
            for _ in range(100):
                sent.append(1)
                yield b"\0" * 100

        response = client.post("/predict", content=chunks(), headers={"Content-Type": "image/png"})
        assert_problem(response, 413, "payload-too-large")

    def test_413_multipart_file_over_the_limit(
        self, make_client: Callable[..., TestClient], models_dir: Path
    ) -> None:
        client = make_client(models_dir, max_upload_bytes=1000)
        response = client.post("/predict", files={"file": ("x.png", b"\0" * 5000, "image/png")})
        assert_problem(response, 413, "payload-too-large")

    def test_413_too_many_pixels(self, make_client: Callable[..., TestClient], models_dir: Path) -> None:
        client = make_client(models_dir, max_pixels=1000)
        response = client.post(
            "/predict", content=png_bytes(gradient(48, 40)), headers={"Content-Type": "image/png"}
        )
        assert_problem(response, 413, "payload-too-large")

    @pytest.mark.parametrize("content_type", ["text/plain", "image/gif", "application/octet-stream", None])
    def test_415_unsupported_media_type(self, client: TestClient, content_type: str | None) -> None:
        headers = {"Content-Type": content_type} if content_type else {}
        response = client.post("/predict", content=png_bytes(gradient()), headers=headers)
        assert_problem(response, 415, "unsupported-media-type")

    def test_415_gif_inside_multipart(self, client: TestClient) -> None:
        buffer = io.BytesIO()
        Image.fromarray(gradient()).save(buffer, format="GIF")
        response = client.post("/predict", files={"file": ("x.gif", buffer.getvalue(), "image/gif")})
        assert_problem(response, 415, "unsupported-media-type")

    def test_422_multipart_without_the_file_field(self, client: TestClient) -> None:
        response = client.post("/predict", files={"image": ("x.png", png_bytes(gradient()), "image/png")})
        assert_problem(response, 422, "invalid-parameters")

    def test_503_when_overloaded_with_retry_after(
        self, make_client: Callable[..., TestClient], models_dir: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        client = make_client(models_dir, max_queue=1)
        started, release = threading.Event(), threading.Event()
        original = OnnxModel.run_outputs

        def slow_run(self: OnnxModel, batch: np.ndarray, **asked: bool) -> GraphOutputs:
            if not on_request_path():
                return original(self, batch, **asked)
            started.set()
            release.wait(10)
            return original(self, batch, **asked)

        monkeypatch.setattr(OnnxModel, "run_outputs", slow_run)
        results: list[int] = []
        busy = post_in_background(client, results)
        assert started.wait(10)
        refused = client.post(
            "/predict", content=png_bytes(gradient()), headers={"Content-Type": "image/png"}
        )
        release.set()
        busy.join(10)
        assert_problem(refused, 503, "overloaded")
        assert int(refused.headers["retry-after"]) >= 1
        assert results == [200]

    def test_503_when_the_runtime_fails_and_the_service_stays_up(
        self, client: TestClient, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        original = OnnxModel.run_outputs
        calls = {"n": 0}

        def flaky(self: OnnxModel, batch: np.ndarray, **asked: bool) -> GraphOutputs:
            if not on_request_path():
                return original(self, batch, **asked)
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : simulated")
            return original(self, batch, **asked)

        monkeypatch.setattr(OnnxModel, "run_outputs", flaky)
        failed = client.post("/predict", content=png_bytes(gradient()), headers={"Content-Type": "image/png"})
        body = assert_problem(failed, 503, "inference-failed")
        assert "simulated" not in body["detail"]
        assert failed.headers["retry-after"] == "1"
        after = client.post("/predict", content=png_bytes(gradient()), headers={"Content-Type": "image/png"})
        assert after.status_code == 200
        assert client.get("/health/ready").status_code == 200

    def test_a_client_that_disconnects_mid_upload_is_counted_apart_and_logged_without_a_traceback(
        self, client: TestClient, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.INFO):
            upload_then_leave(client, png_bytes(gradient())[:20], declared_length=100000, more_body=True)
        assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
        metrics = client.get("/metrics").text
        assert 'xray_requests_total{endpoint="/predict",status="499"} 1.0' in metrics
        assert 'status="500"' not in metrics

    @pytest.mark.parametrize("batch_max_size", [1, 8])
    def test_a_request_whose_client_left_while_queued_is_never_decoded(
        self,
        make_client: Callable[..., TestClient],
        models_dir: Path,
        monkeypatch: pytest.MonkeyPatch,
        batch_max_size: int,
    ) -> None:
        client = make_client(models_dir, inference_workers=1, batch_max_size=batch_max_size)
        started, release = threading.Event(), threading.Event()
        decoded: list[int] = []
        original = state_module.decode_image

        def slow_decode(data: bytes, **kwargs: object) -> object:
            decoded.append(len(data))
            if len(decoded) == 1:  # the first request holds the only worker
                started.set()
                release.wait(10)
            return original(data, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(state_module, "decode_image", slow_decode)
        statuses: list[int] = []
        first = post_in_background(client, statuses)
        assert started.wait(10)
        body = png_bytes(gradient(40, 32))
        abandoned = threading.Thread(
            target=lambda: upload_then_leave(client, body, declared_length=len(body), more_body=False)
        )
        abandoned.start()
        time.sleep(0.3)  # the abandoned request is queued behind the first, its client already gone
        release.set()
        first.join(10)
        abandoned.join(10)
        assert statuses == [200]
        assert decoded == [len(png_bytes(gradient()))]  # the abandoned image was never decoded
        assert 'xray_requests_total{endpoint="/predict",status="499"} 1.0' in client.get("/metrics").text

    def test_404_and_405_are_problems_too(self, client: TestClient) -> None:
        assert_problem(client.get("/nope"), 404, "not-found")
        assert_problem(client.get("/predict"), 405, "method-not-allowed")


def test_concurrent_requests_share_a_micro_batch_with_the_same_answers(
    make_client: Callable[..., TestClient], make_models: Callable[..., Path]
) -> None:
    folder = make_models(pixel_specs())
    images = [png_bytes((gradient(50 + 7 * i, 60) * (0.3 + 0.1 * i)).astype(np.uint8)) for i in range(6)]
    alone = make_client(folder, batch_max_size=1)
    expected = [
        alone.post("/predict", content=image, headers={"Content-Type": "image/png"}).json()
        for image in images
    ]
    # A long wait makes the six concurrent requests certain to meet in the service's batches.
    batched = make_client(folder, batch_max_size=8, batch_max_wait_ms=300)
    answers: dict[int, dict[str, object]] = {}

    def send(index: int) -> None:
        response = batched.post("/predict", content=images[index], headers={"Content-Type": "image/png"})
        answers[index] = response.json()

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(images))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for index, body in answers.items():
        for name, result in body["models"].items():  # type: ignore[attr-defined]
            for label, probability in result["probabilities"].items():
                assert probability == pytest.approx(
                    expected[index]["models"][name]["probabilities"][label], abs=1e-6
                )
    metrics = batched.get("/metrics").text
    batches = float(
        next(line.split()[-1] for line in metrics.splitlines() if line.startswith("xray_batch_size_count"))
    )
    images_seen = float(
        next(line.split()[-1] for line in metrics.splitlines() if line.startswith("xray_batch_size_sum"))
    )
    assert images_seen == len(images)
    assert batches < images_seen  # some requests shared a forward pass
