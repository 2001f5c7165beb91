"""Domain exceptions of the contract: what reading a bundle or an image can go wrong with.

`service.api.problems` maps them, in one place, to RFC 9457 `application/problem+json`
responses; nothing here imports a web framework, so the offline command line and training use
the same exceptions and messages.

Two families:

* `StartupError`: the artifacts cannot be served (bad manifest, missing or corrupt file, a model
  that does not match its manifest entry). Start-up stops with the message; never raised while
  a request is served.
* `RequestError`: one request cannot be answered; each subclass carries its HTTP status and a
  stable problem `type` slug that clients can branch on. The service adds its own
  (`service.errors`).
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


class InferenceFailedError(RequestError):
    """The runtime failed on one request; the service itself stays up."""

    status = 503
    slug = "inference-failed"
    title = "Inference failed"
