"""Domain exceptions of the service.

The inference layer raises these; `service.api.problems` maps them, in one place, to RFC 9457
`application/problem+json` responses. Nothing here imports the web framework, so the offline
command line (`xray predict`) uses the same exceptions and messages.

Two families:

* `StartupError`: the artifacts cannot be served (bad manifest, missing or corrupt file, a model
  that does not match its manifest entry). Start-up stops with the message.
* `RequestError`: one request cannot be answered; each subclass carries its HTTP status and a
  stable problem `type` slug that clients can branch on.
"""

from __future__ import annotations


class XrayError(Exception):
    """Base class of every error this package raises on purpose."""


class StartupError(XrayError):
    """The service cannot start with the configured artifacts."""


class ManifestError(StartupError):
    """`manifest.json` is missing, is not valid JSON, or breaks the artifact contract."""


class ModelFileError(StartupError):
    """A model file named by the manifest is missing or unreadable."""


class ChecksumMismatchError(StartupError):
    """A model file's sha256 differs from the one recorded in the manifest."""


class ModelLoadError(StartupError):
    """onnxruntime cannot load a model, or the graph does not match its manifest entry."""


class ProviderUnavailableError(StartupError):
    """A requested execution provider is missing and strict providers were asked for."""


class RequestError(XrayError):
    """An error answered to the client with an HTTP status.

    Attributes:
        status: The HTTP status code.
        slug: The stable, machine-readable problem type (the end of the `type` URI).
        title: A short, human-readable summary that does not change between occurrences.
        retry_after: Seconds after which the client may retry (503 only), or None.
    """

    status: int = 400
    slug: str = "bad-request"
    title: str = "Bad request"

    def __init__(self, detail: str, *, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after


class InvalidImageError(RequestError):
    """The upload is empty, truncated, or not a decodable image."""

    status = 400
    slug = "invalid-image"
    title = "The upload is not a decodable image"


class ClientGoneError(RequestError):
    """The client disconnected before its work started: the work is skipped, nothing is sent."""

    status = 499  # nginx's "client closed request": never sent, counted apart from the 5xx
    slug = "client-closed-request"
    title = "The client closed the request"


class AuthenticationError(RequestError):
    """The API key is missing or wrong."""

    status = 401
    slug = "unauthorized"
    title = "Missing or invalid API key"


class PayloadTooLargeError(RequestError):
    """Too many bytes or parts, more pixels than the limit, or a decode that ran past its time limit."""

    status = 413
    slug = "payload-too-large"
    title = "The upload exceeds a size limit"


class UnsupportedMediaTypeError(RequestError):
    """The media type (declared or sniffed) is not one the service reads."""

    status = 415
    slug = "unsupported-media-type"
    title = "Unsupported media type"


class InvalidParametersError(RequestError):
    """A query parameter or form field is missing or has a wrong value."""

    status = 422
    slug = "invalid-parameters"
    title = "Invalid request parameters"


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


class InferenceFailedError(RequestError):
    """The runtime failed on one request; the service itself stays up."""

    status = 503
    slug = "inference-failed"
    title = "Inference failed"


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
