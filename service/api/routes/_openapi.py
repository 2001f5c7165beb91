"""What the routes that take an image share: OpenAPI fragments and the JSON response."""

from __future__ import annotations

from typing import Any

from fastapi import Response

from service.api.schemas import PredictResponse, Problem
from xray.contract.decoders import DECODERS, accepted_labels

_BINARY = {"schema": {"type": "string", "format": "binary"}}

#: The request body of /predict and /explain: a raw image of any container of
#: `xray.contract.decoders.DECODERS`, or the multipart field `file`.
IMAGE_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": f"A chest radiograph as {accepted_labels()}: the raw body with its media type, "
        "or the multipart/form-data field `file`.",
        "content": {
            **{decoder.media_types[0]: _BINARY for decoder in DECODERS.values()},
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


def json_body(body: PredictResponse, timings: dict[str, float]) -> Response:
    """The response of an image route, serialised once by pydantic's own JSON encoder.

    Returning a `Response` skips FastAPI's second validation of the model and its stdlib
    `json.dumps`, which took 3 ms on the 1.3 MB of base64 PNGs of an /explain answer; the
    routes still declare their `response_model`, so the OpenAPI document is unchanged.
    """
    return Response(
        body.to_json(), media_type="application/json", headers={"Server-Timing": server_timing(timings)}
    )
