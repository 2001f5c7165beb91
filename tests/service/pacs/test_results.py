"""The SR and Secondary Capture written back: content, references, patient/study attributes."""

from __future__ import annotations

import io

import numpy as np
import pydicom

from service.inference.predictor import Prediction
from service.pacs.results import SC_SOP_CLASS, build_secondary_capture, build_structured_report
from tests.factories import dicom_bytes
from xray.contract.ensembles import Decision
from xray.contract.input_check import CheckResult

CLASSES = ("normal", "pneumonia", "tuberculosis")


def source(**attributes: object) -> pydicom.Dataset:
    dataset = pydicom.dcmread(io.BytesIO(dicom_bytes(np.zeros((8, 6), np.uint16))))
    for keyword, value in attributes.items():
        if value is None:
            delattr(dataset, keyword)
        else:
            setattr(dataset, keyword, value)
    return dataset


def prediction(check: CheckResult | None = None) -> Prediction:
    def decision(p: list[float], **extra: object) -> Decision:
        probabilities = np.asarray(p)
        return Decision(probabilities, int(probabilities.argmax()), float(probabilities.max()), **extra)  # type: ignore[arg-type]

    reasons = () if check is None or check.in_distribution else ("out_of_distribution",)
    return Prediction(
        classes=CLASSES,
        models={"scratch": decision([0.1, 0.6, 0.3])},
        ensembles={
            "classic": decision([0.1, 0.6, 0.3]).with_reasons(*reasons),
            "confidence": decision([0.1, 0.6, 0.3], decided_by="classic").with_reasons(
                "low_confidence", *reasons
            ),
        },
        model_versions={"scratch": "2.0.0"},
        **({"input_check": check} if check is not None else {}),  # type: ignore[arg-type]
    )


def containers(report: pydicom.Dataset, code: str) -> list[pydicom.Dataset]:
    return [
        item
        for item in report.ContentSequence
        if item.ValueType == "CONTAINER" and item.ConceptNameCodeSequence[0].CodeValue == code
    ]


def texts(container: pydicom.Dataset) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for child in container.ContentSequence:
        if child.ValueType == "TEXT":
            found.setdefault(child.ConceptNameCodeSequence[0].CodeValue, []).append(child.TextValue)
    return found


def test_sr_is_in_a_new_series_of_the_study_and_references_the_image() -> None:
    image = source()
    report = build_structured_report(image, prediction())
    assert report.StudyInstanceUID == image.StudyInstanceUID
    assert report.SeriesInstanceUID != image.SeriesInstanceUID
    assert report.PatientID == image.PatientID
    assert report.CompletionFlag == "COMPLETE"
    assert report.VerificationFlag == "UNVERIFIED"  # a machine's result, never verified by a person
    (evidence,) = report.CurrentRequestedProcedureEvidenceSequence
    assert evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == (
        image.SOPInstanceUID
    )
    texts = [item.TextValue for item in report.ContentSequence if item.ValueType == "TEXT"]
    assert any("not for clinical use" in text for text in texts)


def test_sr_carries_full_precision_probabilities_per_predictor() -> None:
    report = build_structured_report(source(), prediction())
    assert len(containers(report, "MODEL")) == 1
    assert len(containers(report, "ENSEMBLE")) == 2
    numbers = [child for child in containers(report, "MODEL")[0].ContentSequence if child.ValueType == "NUM"]
    assert [n.MeasuredValueSequence[0].FloatingPointValue for n in numbers] == [0.1, 0.6, 0.3]
    assert [n.ConceptNameCodeSequence[0].CodeValue for n in numbers] == [f"P-{c}" for c in CLASSES]


def test_sr_carries_the_input_check_and_the_reasons_for_uncertainty() -> None:
    flagged = CheckResult(in_distribution=False, score=12.5, threshold=7.25, method="mahalanobis")
    report = build_structured_report(source(), prediction(flagged))
    (check,) = containers(report, "INPUTCHECK")
    assert texts(check) == {"INDIST": ["false"], "CHECKMETHOD": ["mahalanobis"]}
    numbers = {
        child.ConceptNameCodeSequence[0].CodeValue: child.MeasuredValueSequence[0].FloatingPointValue
        for child in check.ContentSequence
        if child.ValueType == "NUM"
    }
    assert numbers == {"CHECKSCORE": 12.5, "CHECKTHRESHOLD": 7.25}
    classic, cascade = containers(report, "ENSEMBLE")
    assert texts(classic)["UNCERTAIN"] == ["true"]
    assert texts(classic)["REASON"] == ["out_of_distribution"]
    assert texts(cascade)["REASON"] == ["low_confidence", "out_of_distribution"]


def test_sr_of_models_without_an_input_check_says_so_and_has_no_score() -> None:
    report = build_structured_report(source(), prediction())
    (check,) = containers(report, "INPUTCHECK")
    assert texts(check) == {"INDIST": ["true"], "CHECKMETHOD": ["none"]}
    assert not [child for child in check.ContentSequence if child.ValueType == "NUM"]
    classic, _ = containers(report, "ENSEMBLE")
    assert "REASON" not in texts(classic)


def test_missing_type2_patient_attributes_do_not_stop_the_write_back() -> None:
    image = source(PatientID=None, PatientName=None)
    report = build_structured_report(image, prediction())
    assert report.PatientID == ""
    assert "PatientID" not in image  # the source itself is left as it was


def test_secondary_capture_is_rgb_at_the_image_size_with_the_source_orientation() -> None:
    image = source(PatientOrientation=["P", "F"])
    overlay = np.random.default_rng(0).integers(0, 256, (8, 6, 3), dtype=np.uint8)
    capture = build_secondary_capture(image, overlay)
    assert capture.SOPClassUID == SC_SOP_CLASS
    assert (capture.Rows, capture.Columns, capture.SamplesPerPixel) == (8, 6, 3)
    np.testing.assert_array_equal(capture.pixel_array, overlay)
    assert list(capture.PatientOrientation) == ["P", "F"]
    assert capture.SourceImageSequence[0].ReferencedSOPInstanceUID == image.SOPInstanceUID
    assert build_secondary_capture(source(), overlay).PatientOrientation == ""  # unknown, not guessed
