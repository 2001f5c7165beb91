"""Writing one analysis back to the PACS: the SR and the overlay Secondary Capture, each optional."""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt
import pydicom

from service.core.config import Settings
from service.inference.predictor import Prediction
from service.pacs.client import PacsClient
from service.pacs.results import WrittenObject, build_secondary_capture, build_structured_report, identity

logger = logging.getLogger(__name__)


def write_back(
    client: PacsClient,
    settings: Settings,
    source: pydicom.Dataset,
    prediction: Prediction,
    overlay: npt.NDArray[np.uint8] | None,
) -> list[WrittenObject]:
    """Build what the settings ask for and store it in the source's study, in one STOW-RS request.

    Returns:
        The identities of the written objects (SR first), empty when both are switched off.

    Raises:
        PacsUnavailableError, PacsTimeoutError: The PACS did not store them; nothing is half-written
            on our side, and the caller reports the failure.
    """
    objects: list[pydicom.Dataset] = []
    if settings.pacs_write_sr:
        objects.append(build_structured_report(source, prediction))
    if settings.pacs_write_secondary_capture and overlay is not None:
        objects.append(build_secondary_capture(source, overlay))
    client.store(objects)
    written = [identity(dataset) for dataset in objects]
    logger.info("wrote %d result object(s) back to the PACS", len(written))
    return written
