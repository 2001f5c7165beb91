"""OpenAPI fragments shared by the routes that take an image."""

from __future__ import annotations

from typing import Any

from service.api.schemas import Problem

_BINARY = {"schema": {"type": "string", "format": "binary"}}

#: The request body of /predict (and later /explain): raw image or multipart field `file`.
IMAGE_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A chest radiograph as PNG, JPEG or DICOM: the raw body with its media type, "
        "or the multipart/form-data field `file`.",
        "content": {
            "image/png": _BINARY,
            "image/jpeg": _BINARY,
            "application/dicom": _BINARY,
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
        },
    }
}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for problem+json errors."""
    descriptions = {
        400: "Undecodable upload, or not an image",
        401: "Missing or wrong API key",
        413: "Too many bytes or pixels",
        415: "Unsupported media type",
        422: "Invalid parameters, or an explanation beyond the server's budget",
        501: "The explanation method is not installed on this server",
        503: "Not ready, overloaded, or inference failed (see Retry-After)",
    }
    return {
        status: {
            "description": descriptions[status],
            "content": {"application/problem+json": {"schema": Problem.model_json_schema()}},
        }
        for status in statuses
    }


def server_timing(seconds: dict[str, float]) -> str:
    """A `Server-Timing` header value (W3C) with each phase's duration in milliseconds.

    Lets a client or a benchmark see where a request's time went (model inference, Grad-CAM map
    work, PNG rendering) without trusting only its own wall clock.
    """
    return ", ".join(f"{name};dur={1000 * value:.2f}" for name, value in seconds.items())
