"""Logging set-up for the service and the command line.

Log lines carry request ids, routes, statuses and timings, never file names, DICOM attributes or
other patient data: callers pass only those fields.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
#: Libraries that read or write DICOM and quote attribute values (a patient's name, an invalid UID)
#: in their log messages and warnings.
_DICOM_LIBRARIES = ("pydicom", "highdicom")


def withhold_if_dicom(record: logging.LogRecord) -> logging.LogRecord:
    """Replace the text of a DICOM library's log record or warning, which may quote header values.

    What remains says which library spoke and at what level, so that an operator sees that
    something was reported, never what: no value from a DICOM header reaches a log. The traceback
    goes too (a decoder's exception quotes what it read). Other records are returned unchanged.
    """
    if record.name == "py.warnings":
        text = record.getMessage()
        library = next(
            (name for name in _DICOM_LIBRARIES if f"/{name}/" in text or f"\\{name}\\" in text), None
        )
        if library is None:
            return record
        kind = next((word.rstrip(":") for word in text.split() if word.endswith("Warning:")), "warning")
    elif record.name.split(".")[0] in _DICOM_LIBRARIES:
        library, kind = record.name.split(".")[0], record.levelname.lower()
    else:
        return record
    record.msg = "%s %s withheld: its text may quote DICOM header values"
    record.args = (library, kind)
    record.exc_info = record.exc_text = record.stack_info = None
    return record


def withhold_dicom_values() -> None:
    """Route warnings through logging, and rewrite the DICOM libraries' records as they are made.

    At record creation rather than as a logger's filter: a filter on `pydicom` does not see the
    records of `pydicom.pixels.decoders.base` and other child loggers, and a handler's filter
    would miss handlers added later. Idempotent.
    """
    logging.captureWarnings(True)
    current = logging.getLogRecordFactory()
    if getattr(current, "_withholds_dicom", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return withhold_if_dicom(current(*args, **kwargs))

    factory._withholds_dicom = True  # type: ignore[attr-defined]  # marks it for idempotence
    logging.setLogRecordFactory(factory)


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
