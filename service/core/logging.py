"""Logging set-up for the service and the command line.

Log lines carry request ids, routes, statuses and timings, never file names, DICOM attributes or
other patient data: callers pass only those fields.
"""

from __future__ import annotations

import logging
import sys

_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
#: Libraries that read or write DICOM and quote attribute values (a patient's name, an invalid UID)
#: in their log messages and warnings.
_DICOM_LIBRARIES = ("pydicom", "highdicom")


class WithholdDicomValues(logging.Filter):
    """Replaces the text of the DICOM libraries' log records and warnings, which may quote header values.

    What remains says which library spoke and at what level, so that an operator sees that
    something was reported, never what: no value from a DICOM header reaches a log.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place (it is always kept)."""
        if record.name == "py.warnings":
            text = record.getMessage()
            library = next(
                (name for name in _DICOM_LIBRARIES if f"/{name}/" in text or f"\\{name}\\" in text), None
            )
            if library is None:
                return True
            kind = next((word.rstrip(":") for word in text.split() if word.endswith("Warning:")), "warning")
        else:
            library, kind = record.name.split(".")[0], record.levelname.lower()
        record.msg = "%s reported a %s; its text is withheld because it may quote DICOM header values"
        record.args = (library, kind)
        return True


def withhold_dicom_values() -> None:
    """Route warnings through logging and filter the DICOM libraries' records there. Idempotent."""
    logging.captureWarnings(True)
    for name in (*_DICOM_LIBRARIES, "py.warnings"):
        logger = logging.getLogger(name)
        if not any(isinstance(existing, WithholdDicomValues) for existing in logger.filters):
            logger.addFilter(WithholdDicomValues())


def configure_logging(level: str = "INFO") -> None:
    """Send the package's logs (and uvicorn's) to stderr at `level`.

    Idempotent: calling it again only changes the level.

    Args:
        level: A logging level name such as "INFO".
    """
    root = logging.getLogger()
    if not any(getattr(handler, "_xray", False) for handler in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT))
        handler._xray = True  # type: ignore[attr-defined]  # marks our handler for idempotence
        root.addHandler(handler)
    root.setLevel(level)
    withhold_dicom_values()
