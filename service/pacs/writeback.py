"""Writing one analysis back to the PACS: one `WRITE_BACK` entry per kind of result object.

Each entry says which setting switches it on, whether it needs the Grad-CAM overlay, and how it
is built from the source instance and the prediction. The route, the API schema and the answer's
`kind` read this table; a new kind of object is an entry here and its builder in `results.py`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pydicom

from service.core.config import Settings
from service.inference.predictor import Prediction
from service.pacs.client import PacsClient
from service.pacs.results import (
    SC_SOP_CLASS,
    WrittenObject,
    build_secondary_capture,
    build_structured_report,
    identity,
)

logger = logging.getLogger(__name__)

Overlay = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class WriteBackObject:
    """One kind of object written back for each analysed instance.

    Attributes:
        kind: Its name in `/pacs/analyze` and STOW-RS answers (`written[].kind`).
        description: What it is, for the API schema.
        enabled: Whether the settings ask for it.
        needs_overlay: Whether it is built from the ensemble Grad-CAM overlay (the analysis then
            computes one).
        build: (source instance, prediction, overlay or None) → the dataset to store.
        sop_class_uid: Its SOP class, by which a stored object is recognised.
    """

    kind: str
    description: str
    enabled: Callable[[Settings], bool]
    needs_overlay: bool
    build: Callable[[pydicom.Dataset, Prediction, Overlay | None], pydicom.Dataset]
    sop_class_uid: str


def _secondary_capture(
    source: pydicom.Dataset, _prediction: Prediction, overlay: Overlay | None
) -> pydicom.Dataset:
    if overlay is None:
        raise ValueError("a Secondary Capture needs the overlay")
    return build_secondary_capture(source, overlay)


#: The objects written back, in the order they are stored (the SR first).
WRITE_BACK: dict[str, WriteBackObject] = {
    entry.kind: entry
    for entry in (
        WriteBackObject(
            "structured_report",
            "a DICOM Comprehensive SR with every model's and ensemble's answer",
            lambda settings: settings.pacs_write_sr,
            needs_overlay=False,
            build=lambda source, prediction, _overlay: build_structured_report(source, prediction),
            sop_class_uid=pydicom.uid.ComprehensiveSRStorage,
        ),
        WriteBackObject(
            "secondary_capture",
            "the ensemble Grad-CAM overlay as an RGB Secondary Capture",
            lambda settings: settings.pacs_write_secondary_capture,
            needs_overlay=True,
            build=_secondary_capture,
            sop_class_uid=SC_SOP_CLASS,
        ),
    )
}


def overlay_wanted(settings: Settings) -> bool:
    """Whether any object the settings ask for is built from the Grad-CAM overlay."""
    return any(entry.needs_overlay and entry.enabled(settings) for entry in WRITE_BACK.values())


def kind_of(written: WrittenObject) -> str:
    """The `kind` of a written object, from its SOP class."""
    for entry in WRITE_BACK.values():
        if entry.sop_class_uid == written.sop_class_uid:
            return entry.kind
    raise ValueError(f"no write-back object has SOP class {written.sop_class_uid}")


def write_back(
    client: PacsClient,
    settings: Settings,
    source: pydicom.Dataset,
    prediction: Prediction,
    overlay: Overlay | None,
) -> list[WrittenObject]:
    """Build what the settings ask for and store it in the source's study, in one STOW-RS request.

    An object built from the overlay is skipped when there is none (no model gives Grad-CAM maps).

    Returns:
        The identities of the written objects (SR first), empty when all are switched off.

    Raises:
        PacsUnavailableError, PacsTimeoutError: The PACS did not store them; nothing is half-written
            on our side, and the caller reports the failure.
    """
    objects = [
        entry.build(source, prediction, overlay)
        for entry in WRITE_BACK.values()
        if entry.enabled(settings) and (overlay is not None or not entry.needs_overlay)
    ]
    client.store(objects)
    written = [identity(dataset) for dataset in objects]
    logger.info("wrote %d result object(s) back to the PACS", len(written))
    return written
