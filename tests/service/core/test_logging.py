"""No value from a DICOM header reaches a log: the DICOM libraries' messages are withheld."""

from __future__ import annotations

import io
import logging
import warnings

import numpy as np
import pydicom
import pytest

from service.core.logging import configure_logging
from service.pacs.results import build_structured_report
from tests.factories import dicom_bytes
from tests.service.pacs.test_results import prediction

SECRETS = ("SMITHSECRET", "SECRETUID", "1234567890123456789")


def test_writing_back_a_dataset_with_odd_values_logs_none_of_them(caplog: pytest.LogCaptureFixture) -> None:
    level = logging.getLogger().level
    configure_logging("DEBUG")
    source = pydicom.dcmread(io.BytesIO(dicom_bytes(np.zeros((8, 6), np.uint16))))
    source.PatientName = "SMITHSECRET"  # a single component: highdicom warns, quoting it
    source.StudyID = "1234567890123456789"  # too long for SH: pydicom warns, quoting its length
    source.add_new((0x0008, 0x1155), "UI", "1.2.abc.SECRETUID")  # an invalid UID: pydicom quotes it
    try:
        with caplog.at_level(logging.DEBUG), warnings.catch_warnings():
            warnings.simplefilter("always")
            # pytest swaps the warnings' display per test; route them to logging again, as the
            # service does once (captureWarnings is a no-op while it believes it is already on).
            logging.captureWarnings(False)
            logging.captureWarnings(True)
            build_structured_report(source, prediction())
    finally:
        logging.getLogger().setLevel(level)
    texts = [record.getMessage() for record in caplog.records]
    assert any("withheld" in text for text in texts)  # the libraries did speak
    for secret in SECRETS:
        assert not [text for text in texts if secret in text], secret
    withheld = [record for record in caplog.records if "withheld" in record.getMessage()]
    assert {record.name for record in withheld} >= {"py.warnings", "pydicom"}


def test_a_decoder_s_error_from_a_child_logger_is_withheld_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    configure_logging(logging.getLevelName(logging.getLogger().level))
    with caplog.at_level(logging.DEBUG):
        try:
            raise RuntimeError("could not decode SMITHSECRET")
        except RuntimeError:
            logging.getLogger("pydicom.pixels.decoders.base").exception("decoding %s failed", "SECRETUID")
        logging.getLogger("xray.contract.decoders.dicom").info("ours, kept: %s", "as written")
    decoder, ours = caplog.records
    assert decoder.getMessage() == "pydicom error withheld: its text may quote DICOM header values"
    assert decoder.exc_info is None
    assert ours.getMessage() == "ours, kept: as written"
    assert not [secret for secret in SECRETS if secret in caplog.text]
