"""The service's own request errors: authentication, readiness, load, the input check, the PACS.

The contract's errors (`xray.contract.errors`) are their base; `service.api.problems` maps both
to `application/problem+json` in one place.
"""

from __future__ import annotations

from xray.contract.errors import RequestError


class AuthenticationError(RequestError):
    """The API key is missing or wrong."""

    status = 401
    slug = "unauthorized"
    title = "Missing or invalid API key"


class OutOfDistributionError(RequestError):
    """The input check finds the image unlike the training radiographs, and the server refuses those."""

    status = 422
    slug = "out-of-distribution"
    title = "The image does not look like a frontal chest radiograph"


class NotReadyError(RequestError):
    """The models are not loaded or warmed up yet."""

    status = 503
    slug = "not-ready"
    title = "The service is not ready"


class OverloadedError(RequestError):
    """The inference queue is full; the client should retry after `retry_after` seconds."""

    status = 503
    slug = "overloaded"
    title = "The service is overloaded"


class PacsNotConfiguredError(RequestError):
    """A PACS operation was asked of a service started without `XRAY_PACS_URL`."""

    status = 501
    slug = "pacs-not-configured"
    title = "No PACS is configured"


class PacsUnavailableError(RequestError):
    """The PACS could not be reached, refused the credentials, or answered with an error."""

    status = 502
    slug = "pacs-unavailable"
    title = "The PACS did not accept the request"


class PacsTimeoutError(RequestError):
    """The PACS did not answer within `XRAY_PACS_TIMEOUT_SECONDS`."""

    status = 504
    slug = "pacs-timeout"
    title = "The PACS did not answer in time"


class NotFoundInPacsError(RequestError):
    """The requested study, series or instance is not in the PACS."""

    status = 404
    slug = "not-found-in-pacs"
    title = "Not found in the PACS"
