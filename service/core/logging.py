"""Logging set-up for the service and the command line.

Log lines carry request ids, routes, statuses and timings, never file names, DICOM attributes or
other patient data: callers pass only those fields.
"""

from __future__ import annotations

import logging
import sys

_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


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
