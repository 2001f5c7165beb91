"""The write-back table: which objects a setting asks for, in which order, and how they are named."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from service.core.config import Settings
from service.pacs.results import identity
from service.pacs.writeback import WRITE_BACK, kind_of, overlay_wanted, write_back
from tests.service.pacs.test_results import prediction, source


class RecordingClient:
    """A PACS client that keeps what it is asked to store."""

    def __init__(self) -> None:
        self.stored: list[list[pydicom.Dataset]] = []

    def store(self, objects: list[pydicom.Dataset]) -> None:
        self.stored.append(objects)


OVERLAY = np.zeros((8, 6, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("sr", "capture", "overlay", "kinds"),
    [
        (True, True, True, ["structured_report", "secondary_capture"]),
        (True, True, False, ["structured_report"]),  # no model gives maps: nothing to capture
        (False, True, True, ["secondary_capture"]),
        (True, False, True, ["structured_report"]),
        (False, False, True, []),
    ],
)
def test_the_settings_choose_the_objects_in_the_tables_order(
    sr: bool, capture: bool, overlay: bool, kinds: list[str]
) -> None:
    settings = Settings(pacs_write_sr=sr, pacs_write_secondary_capture=capture)
    client = RecordingClient()
    written = write_back(client, settings, source(), prediction(), OVERLAY if overlay else None)  # type: ignore[arg-type]
    assert [kind_of(item) for item in written] == kinds
    assert [identity(dataset) for dataset in client.stored[0]] == written
    assert overlay_wanted(settings) is capture


def test_every_entry_is_told_apart_by_its_sop_class() -> None:
    classes = [entry.sop_class_uid for entry in WRITE_BACK.values()]
    assert len(set(classes)) == len(classes)
    assert list(WRITE_BACK) == ["structured_report", "secondary_capture"]
