"""The DICOMweb door against a real Orthanc: pull, push, write-back, and a PACS that fails.

Images go into Orthanc with dicomweb-client, the service is asked to analyse them, and what it
wrote back is found again in Orthanc by QIDO-RS and read with pydicom: the SR's numbers must be
the `/predict` answer for the same file, and both objects must reference the analysed image.
"""

from __future__ import annotations

import io
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from dicomweb_client import DICOMwebClient
from fastapi.testclient import TestClient
from pydicom.uid import generate_uid

from service.pacs.client import encode
from service.pacs.results import SC_SOP_CLASS
from tests.factories import ModelSpec, dicom_bytes, gradient
from tests.orthanc import Orthanc

pytestmark = pytest.mark.slow

SPECS = [
    ModelSpec("scratch", weights=[-1.0, 2.0, 3.0], bias=[0.5, 0.0, 0.0], height=64, width=64, with_maps=True),
    ModelSpec("inception_resnet_v2", weights=[2.0, -1.0, 0.5], bias=[0.0, 0.2, 0.0], with_maps=True),
    ModelSpec("efficientnet_v2_b2", weights=[-2.0, 1.0, 4.0], bias=[1.0, 0.0, 0.0], with_maps=True),
]
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"


def fresh_instance(data: bytes) -> pydicom.FileDataset:
    """A copy of a DICOM file under new study, series and instance UIDs, with a preamble and meta."""
    dataset = pydicom.dcmread(io.BytesIO(data), force=True)
    dataset.StudyInstanceUID, dataset.SeriesInstanceUID = generate_uid(), generate_uid()
    dataset.SOPInstanceUID = generate_uid()
    meta = pydicom.dataset.FileMetaDataset()
    meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    meta.TransferSyntaxUID = dataset.file_meta.get("TransferSyntaxUID", pydicom.uid.ImplicitVRLittleEndian)
    return pydicom.FileDataset("", dataset, file_meta=meta, preamble=b"\0" * 128)


def synthetic_dx() -> pydicom.FileDataset:
    return fresh_instance(dicom_bytes(gradient(96, 80).astype(np.uint16) * 16))


@pytest.fixture
def real_cr(shared_data: Path) -> pydicom.FileDataset:
    """The real Fuji CR chest (MONOCHROME1, no meta header in the original) under fresh UIDs."""
    return fresh_instance((shared_data / "dicom" / "CR-MONO1-10-chest.dcm").read_bytes())


@pytest.fixture(params=["CR-MONO1-10-chest.dcm", "JPEG2000__RG1_J2KI.dcm"])
def real_chest(shared_data: Path, request: pytest.FixtureRequest) -> pydicom.FileDataset:
    """Each real chest: uncompressed MONOCHROME1 without meta, and JPEG 2000 (kept compressed)."""
    return fresh_instance((shared_data / "dicom" / request.param).read_bytes())


def pacs_settings(orthanc: Orthanc, **overrides: Any) -> dict[str, Any]:
    return {
        "pacs_url": orthanc.dicomweb,
        "pacs_username": orthanc.username,
        "pacs_password": orthanc.password,
        **overrides,
    }


@pytest.fixture
def service(
    make_client: Callable[..., TestClient], make_models: Callable[..., Path], orthanc: Orthanc
) -> Callable[..., TestClient]:
    """A service wired to Orthanc; keyword arguments override its settings."""
    folder = make_models(SPECS)
    return lambda **overrides: make_client(folder, **pacs_settings(orthanc, **overrides))


def orthanc_client(orthanc: Orthanc) -> DICOMwebClient:
    return DICOMwebClient(orthanc.dicomweb, session=orthanc.session())


def store_in_orthanc(orthanc: Orthanc, dataset: pydicom.FileDataset) -> None:
    orthanc_client(orthanc).store_instances([dataset])


def written_objects(orthanc: Orthanc, study: str, modality: str) -> list[pydicom.Dataset]:
    """Every instance of `modality` in `study`, found by QIDO-RS and fetched by WADO-RS."""
    client = orthanc_client(orthanc)
    found = client.search_for_instances(study, search_filters={"Modality": modality})
    return [
        client.retrieve_instance(
            study,
            match["0020000E"]["Value"][0],
            match["00080018"]["Value"][0],
            media_types=(("application/dicom", "*"),),
        )
        for match in found
    ]


def sr_values(report: pydicom.Dataset) -> dict[str, dict[str, Any]]:
    """Predictor name → {probabilities, label, and uncertain/decided_by for ensembles} read from the SR."""
    values: dict[str, dict[str, Any]] = {}
    for item in report.ContentSequence:
        if item.ValueType != "CONTAINER":
            continue
        entry: dict[str, Any] = {"probabilities": {}}
        for child in item.ContentSequence:
            meaning = child.ConceptNameCodeSequence[0].CodeMeaning
            if child.ValueType == "NUM":
                measured = child.MeasuredValueSequence[0]
                entry["probabilities"][meaning.removeprefix("Probability of ")] = float(
                    measured.FloatingPointValue
                )
            elif child.ValueType == "TEXT" and meaning == "Reason for uncertainty":
                entry.setdefault("reasons", []).append(child.TextValue)
            elif child.ValueType == "TEXT":
                entry[meaning] = child.TextValue
        values[entry.pop("Predictor name", item.ConceptNameCodeSequence[0].CodeMeaning)] = entry
    return values


def referenced_image(report: pydicom.Dataset) -> str:
    image = next(item for item in report.ContentSequence if item.ValueType == "IMAGE")
    return str(image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)


def assert_sr_matches_predict(report: pydicom.Dataset, predicted: dict[str, Any]) -> None:
    values = sr_values(report)
    for name, result in (*predicted["models"].items(), *predicted["ensembles"].items()):
        assert values[name]["Predicted class"] == result["label"]
        for label, probability in result["probabilities"].items():
            assert values[name]["probabilities"][label] == pytest.approx(probability, abs=1e-12)
    for name in ("classic", "confidence"):
        assert values[name]["Uncertain"] == str(predicted["ensembles"][name]["uncertain"]).lower()
        assert values[name].get("reasons", []) == predicted["ensembles"][name]["uncertain_reasons"]
    check = values["Input check"]
    assert (
        check["Looks like a frontal chest radiograph"]
        == str(predicted["input_check"]["in_distribution"]).lower()
    )
    assert check["Input check method"] == predicted["input_check"]["method"]
    assert values["confidence"]["Decided by"] == predicted["ensembles"]["confidence"]["decided_by"]
    for name, version in predicted["model_versions"].items():
        assert values[name]["Model version"] == version


def assert_written_back(orthanc: Orthanc, source: pydicom.Dataset, predicted: dict[str, Any]) -> None:
    (report,) = written_objects(orthanc, source.StudyInstanceUID, "SR")
    assert report.SOPClassUID == COMPREHENSIVE_SR
    assert report.SeriesInstanceUID != source.SeriesInstanceUID
    assert referenced_image(report) == source.SOPInstanceUID
    assert_sr_matches_predict(report, predicted)
    (capture,) = written_objects(orthanc, source.StudyInstanceUID, "OT")
    assert capture.SOPClassUID == SC_SOP_CLASS
    assert capture.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert capture.SeriesInstanceUID not in (source.SeriesInstanceUID, report.SeriesInstanceUID)
    assert (capture.Rows, capture.Columns, capture.SamplesPerPixel) == (source.Rows, source.Columns, 3)
    assert capture.PhotometricInterpretation == "RGB"


def predict(client: TestClient, dataset: pydicom.FileDataset) -> dict[str, Any]:
    response = client.post("/predict", content=encode(dataset), headers={"Content-Type": "application/dicom"})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def multipart_related(*parts: bytes, boundary: str = "xray-boundary-7") -> tuple[bytes, str]:
    body = b"".join(
        b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + part + b"\r\n"
        for part in parts
    )
    body += b"--" + boundary.encode() + b"--\r\n"
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


@pytest.mark.shared_data
def test_pull_analyses_a_real_study_and_writes_sr_and_overlay_back(
    service: Callable[..., TestClient], orthanc: Orthanc, real_chest: pydicom.FileDataset
) -> None:
    client = service()
    store_in_orthanc(orthanc, real_chest)

    response = client.post("/pacs/analyze", json={"study_instance_uid": real_chest.StudyInstanceUID})

    assert response.status_code == 200, response.text
    body = response.json()
    (instance,) = body["instances"]
    assert instance["sop_instance_uid"] == real_chest.SOPInstanceUID
    assert [item["kind"] for item in instance["written"]] == ["structured_report", "secondary_capture"]
    predicted = predict(client, real_chest)
    assert instance["prediction"]["models"] == predicted["models"]
    assert_written_back(orthanc, real_chest, predicted)
    (report,) = written_objects(orthanc, real_chest.StudyInstanceUID, "SR")
    assert report.SOPInstanceUID == instance["written"][0]["sop_instance_uid"]


@pytest.mark.shared_data
def test_push_analyses_each_stowed_instance_and_writes_back(
    service: Callable[..., TestClient], orthanc: Orthanc, real_cr: pydicom.FileDataset
) -> None:
    client = service()
    body, content_type = multipart_related(encode(real_cr))

    response = client.post("/dicom-web/studies", content=body, headers={"Content-Type": content_type})

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/dicom+json")
    referenced = response.json()["00081199"]["Value"]
    assert referenced[0]["00081155"]["Value"] == [real_cr.SOPInstanceUID]
    assert referenced[0]["00081150"]["Value"] == [real_cr.SOPClassUID]
    assert "00081198" not in response.json()
    assert_written_back(orthanc, real_cr, predict(client, real_cr))


def test_one_instance_by_sop_uid_and_each_write_back_can_be_switched_off(
    service: Callable[..., TestClient], orthanc: Orthanc
) -> None:
    first, second = synthetic_dx(), synthetic_dx()
    second.StudyInstanceUID = first.StudyInstanceUID
    for dataset in (first, second):
        store_in_orthanc(orthanc, dataset)
    client = service(pacs_write_secondary_capture=False)

    response = client.post(
        "/pacs/analyze",
        json={"study_instance_uid": first.StudyInstanceUID, "sop_instance_uid": second.SOPInstanceUID},
    )

    assert response.status_code == 200, response.text
    (instance,) = response.json()["instances"]
    assert instance["sop_instance_uid"] == second.SOPInstanceUID
    assert [item["kind"] for item in instance["written"]] == ["structured_report"]
    assert written_objects(orthanc, first.StudyInstanceUID, "OT") == []
    (report,) = written_objects(orthanc, first.StudyInstanceUID, "SR")
    assert referenced_image(report) == second.SOPInstanceUID


def test_a_study_analysed_twice_skips_the_results_written_the_first_time(
    service: Callable[..., TestClient], orthanc: Orthanc
) -> None:
    dataset = synthetic_dx()
    store_in_orthanc(orthanc, dataset)
    client = service()
    assert (
        client.post("/pacs/analyze", json={"study_instance_uid": dataset.StudyInstanceUID}).status_code == 200
    )

    again = client.post("/pacs/analyze", json={"study_instance_uid": dataset.StudyInstanceUID}).json()

    assert [item["sop_instance_uid"] for item in again["instances"]] == [dataset.SOPInstanceUID]
    assert len(again["skipped"]) == 2  # the SR and the Secondary Capture are not radiographs
    assert all(item["detail"] for item in again["skipped"])


def test_stow_reports_each_failed_instance_with_its_reason(
    make_client: Callable[..., TestClient], make_models: Callable[..., Path]
) -> None:
    client = make_client(make_models(SPECS))  # no PACS: instances are analysed, nothing written
    good = synthetic_dx()
    colour = fresh_instance(dicom_bytes(np.zeros((16, 16, 3), np.uint8)))
    body, content_type = multipart_related(encode(good), encode(colour), b"not a dicom file")

    response = client.post("/dicom-web/studies", content=body, headers={"Content-Type": content_type})

    assert response.status_code == 202, response.text
    document = response.json()
    assert [item["00081155"]["Value"][0] for item in document["00081199"]["Value"]] == [good.SOPInstanceUID]
    failed = document["00081198"]["Value"]
    assert failed[0]["00081155"]["Value"] == [colour.SOPInstanceUID]
    assert failed[0]["00081197"]["Value"] == [0x0122]  # SOP class / image type not supported
    assert failed[1]["00081197"]["Value"] == [0xC000]  # cannot understand


def test_stow_with_nothing_analysable_is_409_and_a_wrong_study_fails_its_instance(
    make_client: Callable[..., TestClient], make_models: Callable[..., Path]
) -> None:
    client = make_client(make_models(SPECS))
    body, content_type = multipart_related(encode(synthetic_dx()))
    response = client.post(
        f"/dicom-web/studies/{generate_uid()}", content=body, headers={"Content-Type": content_type}
    )
    assert response.status_code == 409
    assert response.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xA900]


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("application/dicom", 415),
        ('multipart/related; type="image/jpeg"; boundary=x', 415),
        ('multipart/related; type="application/dicom"', 422),
    ],
)
def test_stow_refuses_what_is_not_a_dicom_multipart(
    make_client: Callable[..., TestClient], make_models: Callable[..., Path], content_type: str, status: int
) -> None:
    client = make_client(make_models(SPECS))
    response = client.post(
        "/dicom-web/studies", content=b"--x\r\n\r\nabc\r\n--x--", headers={"Content-Type": content_type}
    )
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/problem+json")


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP port that accepts connections and never answers: a PACS that hangs."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield f"http://127.0.0.1:{server.getsockname()[1]}/dicom-web"


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/dicom-web"


def test_pacs_failures_are_clear_502_504_404_and_501(
    service: Callable[..., TestClient],
    make_client: Callable[..., TestClient],
    make_models: Callable[..., Path],
    orthanc: Orthanc,
    silent_server: str,
) -> None:
    study = {"study_instance_uid": generate_uid()}
    cases = [
        (service(pacs_url=closed_port_url()), 502, "pacs-unavailable", "could not be reached"),
        (service(pacs_password="wrong"), 502, "pacs-unavailable", "credentials"),
        (service(pacs_url=silent_server, pacs_timeout_seconds=0.5), 504, "pacs-timeout", "in time"),
        (service(), 404, "not-found-in-pacs", "not found"),
        (make_client(make_models(SPECS)), 501, "pacs-not-configured", "XRAY_PACS_URL"),
    ]
    for client, status, slug, words in cases:
        response = client.post("/pacs/analyze", json=study)
        assert response.status_code == status, response.text
        problem = response.json()
        assert problem["type"].endswith(slug)
        assert words in problem["detail"]


def test_push_to_a_pacs_that_is_down_is_502_and_succeeds_when_retried(
    service: Callable[..., TestClient], orthanc: Orthanc
) -> None:
    dataset = synthetic_dx()
    body, content_type = multipart_related(encode(dataset))

    down_service = service(pacs_url=closed_port_url())
    down = down_service.post("/dicom-web/studies", content=body, headers={"Content-Type": content_type})
    assert down.status_code == 502
    assert down.json()["type"].endswith("pacs-unavailable")
    metrics = down_service.get("/metrics").text
    assert 'xray_pacs_operations_total{operation="store",outcome="pacs-unavailable"} 1.0' in metrics

    up_service = service()
    retried = up_service.post("/dicom-web/studies", content=body, headers={"Content-Type": content_type})
    assert retried.status_code == 200
    assert len(written_objects(orthanc, dataset.StudyInstanceUID, "SR")) == 1
    assert 'xray_pacs_operations_total{operation="store",outcome="ok"} 1.0' in up_service.get("/metrics").text


def test_analyze_request_is_validated(service: Callable[..., TestClient]) -> None:
    client = service()
    for body in ({}, {"study_instance_uid": "not-a-uid"}, {"study_instance_uid": "1.2", "extra": 1}):
        response = client.post("/pacs/analyze", json=body)
        assert response.status_code == 422
        assert response.headers["content-type"].startswith("application/problem+json")
