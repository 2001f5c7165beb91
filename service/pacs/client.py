"""The configured PACS over DICOMweb: WADO-RS to fetch instances, STOW-RS to write results back.

Every failure of the PACS becomes a domain error with a clear status: unreachable or refusing
the credentials → 502, too slow → 504, the asked-for study not there → 404. Calls are blocking
(`requests` under dicomweb-client) and are run off the event loop by the routes.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import pydicom
import requests
from dicomweb_client import DICOMwebClient

from service.core.config import Settings
from service.errors import NotFoundInPacsError, PacsNotConfiguredError, PacsTimeoutError, PacsUnavailableError

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Ask for each instance in the transfer syntax it is stored in ("*"): the service decodes
#: compressed syntaxes itself, and a PACS that cannot transcode would otherwise refuse.
_ANY_TRANSFER_SYNTAX = (("application/dicom", "*"),)


@dataclass(frozen=True)
class InstanceQuery:
    """Which instances to fetch: a study, optionally narrowed to a series or one instance."""

    study_instance_uid: str
    series_instance_uid: str | None = None
    sop_instance_uid: str | None = None


@contextmanager
def _pacs_errors(action: str) -> Iterator[None]:
    """Translate `requests` failures into the service's PACS errors, naming `action`."""
    try:
        yield
    except requests.Timeout as exc:
        raise PacsTimeoutError(f"the PACS did not answer in time while {action}") from exc
    except requests.ConnectionError as exc:
        raise PacsUnavailableError(f"the PACS could not be reached while {action}") from exc
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status in (401, 403):
            raise PacsUnavailableError(
                f"the PACS refused the service's credentials (HTTP {status}) while {action}"
            ) from exc
        if status == 404:
            raise NotFoundInPacsError(f"not found in the PACS while {action}") from exc
        raise PacsUnavailableError(f"the PACS answered HTTP {status} while {action}") from exc
    except requests.RequestException as exc:
        raise PacsUnavailableError(f"the PACS request failed while {action}: {type(exc).__name__}") from exc


class PacsClient:
    """One DICOMweb endpoint with its credentials and timeout."""

    def __init__(self, url: str, *, session: requests.Session, timeout: float) -> None:
        """Wrap the DICOMweb root `url`, authenticating through `session`."""
        self.url = url.rstrip("/")
        self._client = DICOMwebClient(self.url, session=session, timeout=timeout)
        # dicomweb-client retries failed calls 5 times with exponential back-off (30 s for a PACS
        # that is down) and on exceptions too; the caller gets a clear 502/504 at once instead
        # and retries when it chooses to.
        self._client.set_http_retry_params(retry=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> PacsClient:
        """The PACS of `XRAY_PACS_URL` with basic or bearer auth.

        Raises:
            PacsNotConfiguredError: No PACS URL is set.
        """
        if not settings.pacs_url:
            raise PacsNotConfiguredError("this service has no PACS configured (set XRAY_PACS_URL)")
        session = requests.Session()
        if settings.pacs_token is not None:
            session.headers["Authorization"] = f"Bearer {settings.pacs_token.get_secret_value()}"
        elif settings.pacs_username is not None:
            password = settings.pacs_password.get_secret_value() if settings.pacs_password else ""
            session.auth = (settings.pacs_username, password)
        return cls(settings.pacs_url, session=session, timeout=settings.pacs_timeout_seconds)

    def _call(self, action: str, call: Callable[[], T]) -> T:
        with _pacs_errors(action):
            return call()

    def retrieve(self, query: InstanceQuery) -> list[pydicom.Dataset]:
        """Fetch the instances of a study, a series or one instance (WADO-RS).

        Raises:
            NotFoundInPacsError: Nothing matches.
            PacsUnavailableError, PacsTimeoutError: The PACS failed.
        """
        study, series, sop = query.study_instance_uid, query.series_instance_uid, query.sop_instance_uid
        action = f"retrieving study {study}"
        if sop is not None:
            if series is None:
                series = self._series_of(study, sop)
            instance = self._call(
                action,
                lambda: self._client.retrieve_instance(study, series, sop, media_types=_ANY_TRANSFER_SYNTAX),
            )
            datasets = [instance]
        elif series is not None:
            datasets = self._call(
                action, lambda: self._client.retrieve_series(study, series, media_types=_ANY_TRANSFER_SYNTAX)
            )
        else:
            datasets = self._call(
                action, lambda: self._client.retrieve_study(study, media_types=_ANY_TRANSFER_SYNTAX)
            )
        if not datasets:
            raise NotFoundInPacsError(f"no instances in the PACS for study {study}")
        logger.info("retrieved %d instance(s) from the PACS", len(datasets))
        return datasets

    def _series_of(self, study: str, sop: str) -> str:
        """The series of an instance given without one (QIDO-RS)."""
        found = self._call(
            f"looking up instance {sop}",
            lambda: self._client.search_for_instances(study, search_filters={"SOPInstanceUID": sop}),
        )
        series: list[str] = [
            match["0020000E"]["Value"][0] for match in found if match.get("0020000E", {}).get("Value")
        ]
        if not series:
            raise NotFoundInPacsError(f"instance {sop} is not in study {study} in the PACS")
        return series[0]

    def store(self, datasets: Sequence[pydicom.Dataset]) -> None:
        """Write `datasets` to the PACS (STOW-RS), all of one study.

        Raises:
            PacsUnavailableError, PacsTimeoutError: The PACS failed or refused some of them.
        """
        if not datasets:
            return
        study = str(datasets[0].StudyInstanceUID)
        files = [as_file_dataset(dataset) for dataset in datasets]
        response = self._call(
            f"storing {len(datasets)} result(s) in study {study}",
            lambda: self._client.store_instances(files, study_instance_uid=study),
        )
        failed = response.get("FailedSOPSequence") if response is not None else None
        if failed:
            raise PacsUnavailableError(f"the PACS refused {len(failed)} of the {len(datasets)} result(s)")


def as_file_dataset(dataset: pydicom.Dataset) -> pydicom.FileDataset:
    """`dataset` with a preamble and file meta, as dicomweb-client needs to encode it (Part 10)."""
    if isinstance(dataset, pydicom.FileDataset) and dataset.preamble is not None:
        return dataset
    return pydicom.FileDataset(
        "", pydicom.Dataset(dataset), file_meta=dataset.file_meta, preamble=b"\0" * 128
    )


def encode(dataset: pydicom.Dataset) -> bytes:
    """A retrieved instance as Part 10 bytes, for the same decoder as an upload."""
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, as_file_dataset(dataset), enforce_file_format=True)
    return buffer.getvalue()
