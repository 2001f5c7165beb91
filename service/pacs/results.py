"""The analysis of one image as DICOM objects a PACS stores: a Structured Report and a Secondary Capture.

Both go into new series of the analysed image's study and copy its patient and study
attributes (highdicom does this from the evidence / reference dataset), so a viewer shows them
next to the radiograph. The SR is a Comprehensive SR whose content tree carries every model's
calibrated class probabilities, the input check (whether the image looks like the chest
radiographs the models learnt from, its score and threshold) and both ensembles' decisions with
their `uncertain` flag and its reasons, referencing the analysed image. Concepts without a
standard code use the private coding scheme `99XRAY` (PS3.16 8.1: designators starting with "99"
are private).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import highdicom as hd
import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.uid import generate_uid

from service.inference.predictor import Prediction

SCHEME = "99XRAY"
SC_SOP_CLASS = pydicom.uid.SecondaryCaptureImageStorage
MANUFACTURER = "xray-triage"
#: Series numbers of the written series, high so they sort after the acquisition's own.
SR_SERIES_NUMBER = 9901
SC_SERIES_NUMBER = 9902
DISCLAIMER = "Research software, not for clinical use: every result needs review by a qualified clinician."


def _code(value: str, meaning: str) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(value=value, scheme_designator=SCHEME, meaning=meaning)


REPORT_TITLE = _code("TRIAGE", "Chest X-ray triage result")
MODEL_RESULT = _code("MODEL", "Model result")
ENSEMBLE_RESULT = _code("ENSEMBLE", "Ensemble result")
PREDICTOR_NAME = _code("NAME", "Predictor name")
MODEL_VERSION = _code("VERSION", "Model version")
PREDICTED_CLASS = _code("LABEL", "Predicted class")
UNCERTAIN = _code("UNCERTAIN", "Uncertain")
DECIDED_BY = _code("DECIDEDBY", "Decided by")
UNCERTAIN_REASON = _code("REASON", "Reason for uncertainty")
INPUT_CHECK = _code("INPUTCHECK", "Input check")
IN_DISTRIBUTION = _code("INDIST", "Looks like a frontal chest radiograph")
CHECK_METHOD = _code("CHECKMETHOD", "Input check method")
CHECK_SCORE = _code("CHECKSCORE", "Input check score")
CHECK_THRESHOLD = _code("CHECKTHRESHOLD", "Input check threshold")
COMMENT = _code("COMMENT", "Comment")
SOURCE_IMAGE = hd.sr.CodedConcept(value="121112", scheme_designator="DCM", meaning="Source of Measurement")
NO_UNITS = hd.sr.CodedConcept(value="1", scheme_designator="UCUM", meaning="no units")


def _text(name: hd.sr.CodedConcept, value: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(name=name, value=value, relationship_type="CONTAINS")


def _number(name: hd.sr.CodedConcept, value: float) -> hd.sr.NumContentItem:
    return hd.sr.NumContentItem(name=name, value=value, unit=NO_UNITS, relationship_type="CONTAINS")


def probability_concept(label: str) -> hd.sr.CodedConcept:
    """The concept of one class's probability, e.g. `P-pneumonia` "Probability of pneumonia"."""
    return _code(f"P-{label}", f"Probability of {label}")


#: Patient and study attributes copied into the written objects. Type 2 in both IODs: present,
#: possibly empty. Real files often lack some (the CR test chest has no PatientID), and highdicom
#: reads them from the source, so a missing one is added empty rather than failing the write.
_TYPE2_PATIENT_STUDY = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)


def _complete(source: pydicom.Dataset) -> pydicom.Dataset:
    """A copy of `source` with the Type 2 patient and study attributes present."""
    completed = pydicom.Dataset()
    for element in source:  # a new dict of the same elements: the source is left untouched
        completed.add(element)
    completed.file_meta = getattr(source, "file_meta", pydicom.dataset.FileMetaDataset())
    for keyword in _TYPE2_PATIENT_STUDY:
        if keyword not in completed:
            setattr(completed, keyword, "")
    return completed


@dataclass(frozen=True)
class WrittenObject:
    """The identity of one object written back."""

    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str


def _result_container(
    concept: hd.sr.CodedConcept,
    name: str,
    probabilities: dict[str, float],
    label: str,
    extra: list[hd.sr.ContentItem],
) -> hd.sr.ContainerContentItem:
    container = hd.sr.ContainerContentItem(name=concept, relationship_type="CONTAINS")
    items: list[hd.sr.ContentItem] = [_text(PREDICTOR_NAME, name), _text(PREDICTED_CLASS, label)]
    items += [_number(probability_concept(cls), value) for cls, value in probabilities.items()]
    container.ContentSequence = hd.sr.ContentSequence([*items, *extra])
    return container


def _input_check_container(prediction: Prediction) -> hd.sr.ContainerContentItem:
    """The input check: in distribution or not, its method, and (for a fitted check) score and threshold."""
    check = prediction.input_check
    container = hd.sr.ContainerContentItem(name=INPUT_CHECK, relationship_type="CONTAINS")
    items: list[hd.sr.ContentItem] = [
        _text(IN_DISTRIBUTION, str(check.in_distribution).lower()),
        _text(CHECK_METHOD, check.method),
    ]
    if math.isfinite(check.threshold):
        items += [_number(CHECK_SCORE, check.score), _number(CHECK_THRESHOLD, check.threshold)]
    container.ContentSequence = hd.sr.ContentSequence(items)
    return container


def build_structured_report(
    source: pydicom.Dataset, prediction: Prediction, *, series_instance_uid: str | None = None
) -> pydicom.Dataset:
    """A Comprehensive SR with the prediction, referencing `source`, in a new series of its study.

    Args:
        source: The analysed image's dataset (its patient, study and SOP identity are used).
        prediction: The service's answer for that image.
        series_instance_uid: The new series; a fresh UID by default.
    """
    classes = prediction.classes
    root = hd.sr.ContainerContentItem(name=REPORT_TITLE)
    items: list[hd.sr.ContentItem] = [
        hd.sr.ImageContentItem(
            name=SOURCE_IMAGE,
            referenced_sop_class_uid=source.SOPClassUID,
            referenced_sop_instance_uid=source.SOPInstanceUID,
            relationship_type="CONTAINS",
        ),
        _text(COMMENT, DISCLAIMER),
    ]
    items.append(_input_check_container(prediction))
    for name, decision in prediction.models.items():
        probabilities = dict(zip(classes, map(float, decision.probabilities), strict=True))
        version = _text(MODEL_VERSION, prediction.model_versions[name])
        items.append(
            _result_container(MODEL_RESULT, name, probabilities, classes[decision.label_index], [version])
        )
    for name, decision in prediction.ensembles.items():
        probabilities = dict(zip(classes, map(float, decision.probabilities), strict=True))
        extra: list[hd.sr.ContentItem] = [_text(UNCERTAIN, str(decision.uncertain).lower())]
        extra += [_text(UNCERTAIN_REASON, reason) for reason in decision.uncertain_reasons]
        if decision.decided_by is not None:
            extra.append(_text(DECIDED_BY, decision.decided_by))
        items.append(
            _result_container(ENSEMBLE_RESULT, name, probabilities, classes[decision.label_index], extra)
        )
    root.ContentSequence = hd.sr.ContentSequence(items)
    return hd.sr.ComprehensiveSR(
        evidence=[_complete(source)],
        content=root,
        series_instance_uid=series_instance_uid or generate_uid(),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        series_description="AI triage (research, not for clinical use)",
    )


def build_secondary_capture(
    source: pydicom.Dataset, overlay: npt.NDArray[np.uint8], *, series_instance_uid: str | None = None
) -> pydicom.Dataset:
    """An RGB Secondary Capture of the Grad-CAM overlay, in a new series of `source`'s study.

    Args:
        source: The analysed image's dataset.
        overlay: The (rows, columns, 3) overlay at the image's size.
        series_instance_uid: The new series; a fresh UID by default.
    """
    image = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=_complete(source),
        pixel_array=np.ascontiguousarray(overlay, dtype=np.uint8),
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        # highdicom insists on an orientation here; the true one is set just below.
        patient_orientation=("L", "F"),
        series_instance_uid=series_instance_uid or generate_uid(),
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        transfer_syntax_uid=pydicom.uid.ExplicitVRLittleEndian,
    )
    image.SeriesDescription = "AI triage Grad-CAM overlay (research, not for clinical use)"
    image.BurnedInAnnotation = "NO"
    image.ImageType = ["DERIVED", "SECONDARY"]
    reference = pydicom.Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    image.SourceImageSequence = [reference]  # the radiograph this overlay was computed from
    # The overlay has the source's geometry, so it has the source's orientation: copied as it is,
    # or empty (Type 2: unknown) when the source does not say, never guessed.
    image.PatientOrientation = source.get("PatientOrientation", "")
    return image


def identity(dataset: pydicom.Dataset) -> WrittenObject:
    """The UIDs of a written object."""
    return WrittenObject(
        series_instance_uid=str(dataset.SeriesInstanceUID),
        sop_instance_uid=str(dataset.SOPInstanceUID),
        sop_class_uid=str(dataset.SOPClassUID),
    )
