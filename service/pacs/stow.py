"""STOW-RS (PS3.18 10.5) as the receiving side: the multipart/related request and the response.

The request is `multipart/related; type="application/dicom"; boundary=…`, one DICOM instance per
part. The response is an `application/dicom+json` dataset with the Referenced SOP Sequence
(0008,1199) for the instances accepted and the Failed SOP Sequence (0008,1198), each failure with
its Failure Reason (0008,1197). Status: 200 when all were accepted, 202 when some failed, 409 when
none was accepted.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from email.message import Message
from typing import Any

import pydicom

from xray.contract.errors import InvalidParametersError, PayloadTooLargeError, UnsupportedMediaTypeError

DICOM_JSON = "application/dicom+json"

#: Failure reasons of PS3.18 Table 10.5.3-1 / PS3.4 Annex GG used here.
SOP_CLASS_NOT_SUPPORTED = 0x0122
CANNOT_UNDERSTAND = 0xC000
OUT_OF_RESOURCES = 0xA700
STUDY_MISMATCH = 0xA900  # "Data Set does not match SOP Class" is the nearest code for a wrong study


@dataclass(frozen=True)
class Part:
    """One part of the request: its DICOM bytes and, when readable, its header and identity."""

    data: bytes
    sop_class_uid: str | None
    sop_instance_uid: str | None
    study_instance_uid: str | None
    header: pydicom.Dataset | None = None  # read without pixels; the written results copy from it


@dataclass(frozen=True)
class Outcome:
    """What happened to one instance: accepted (reason None) or failed with a reason code."""

    sop_class_uid: str | None
    sop_instance_uid: str | None
    reason: int | None = None


def _parameters(content_type: str) -> tuple[str, dict[str, str]]:
    message = Message()
    message["Content-Type"] = content_type
    params = {key.lower(): str(value) for key, value in message.get_params(failobj=[])[1:]}
    return message.get_content_type(), params


def _part_content_type(headers: str) -> str:
    for line in headers.split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-type":
            return value.strip()
    return "application/dicom"  # PS3.18 lets a part omit it when the request's type says it


def read_parts(body: bytes, content_type: str, max_parts: int) -> list[Part]:
    """Split a STOW-RS body into at most `max_parts` parts and read each one's identity.

    Raises:
        PayloadTooLargeError: More than `max_parts` parts.
        UnsupportedMediaTypeError, InvalidParametersError: See `split_parts`.
    """
    return [identify(data) for data in split_parts(body, content_type, max_parts=max_parts)]


def split_parts(body: bytes, content_type: str, *, max_parts: int | None = None) -> list[bytes]:
    """The DICOM parts of a STOW-RS request body.

    Raises:
        UnsupportedMediaTypeError: Not `multipart/related` with `type="application/dicom"`.
        InvalidParametersError: No boundary, or no part.
        PayloadTooLargeError: More than `max_parts` parts (counted before any is parsed).
    """
    media, params = _parameters(content_type)
    if media != "multipart/related" or params.get("type", "application/dicom").lower() != "application/dicom":
        raise UnsupportedMediaTypeError(
            'STOW-RS takes multipart/related; type="application/dicom" (one DICOM instance per part), '
            f"got {content_type!r}"
        )
    boundary = params.get("boundary")
    if not boundary:
        raise InvalidParametersError("the multipart/related content type has no boundary")
    # A delimiter is CRLF "--" boundary at the start of a line (RFC 2046 5.1.1); the CRLF before it
    # belongs to the delimiter, not to the part, and the first one may open the body.
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    body = b"\r\n" + body
    # Each part opens with a delimiter, and the close delimiter is one more: count before splitting.
    if max_parts is not None and body.count(delimiter) - 1 > max_parts:
        raise PayloadTooLargeError(
            f"the request has more than {max_parts} parts; send the instances in several requests"
        )
    sections = body.split(delimiter)
    parts = []
    # sections[0] is the preamble; the close delimiter is followed by "--", then the epilogue.
    for section in sections[1:]:
        if section.startswith(b"--"):
            break
        line_end = section.find(b"\r\n")
        if line_end < 0:
            raise InvalidParametersError("a multipart delimiter line is not terminated by CRLF")
        rest = section[line_end + 2 :]
        if rest.startswith(b"\r\n"):  # no part headers
            headers, content = "", rest[2:]
        else:
            header_end = rest.find(b"\r\n\r\n")
            if header_end < 0:
                raise InvalidParametersError("a multipart part has no header/body separator")
            headers, content = rest[:header_end].decode("latin-1"), rest[header_end + 4 :]
        part_type = _part_content_type(headers)
        if _parameters(part_type)[0] != "application/dicom":
            raise UnsupportedMediaTypeError(f"a part is {part_type!r}; STOW-RS parts are application/dicom")
        parts.append(content)
    if not parts:
        raise InvalidParametersError("the STOW-RS request holds no DICOM part")
    return parts


def identify(data: bytes) -> Part:
    """Read the identity of one part without decoding its pixels (None where unreadable)."""
    try:
        dataset = pydicom.dcmread(io.BytesIO(data), force=True, stop_before_pixels=True)
        return Part(
            data=data,
            sop_class_uid=str(dataset.get("SOPClassUID", "")) or None,
            sop_instance_uid=str(dataset.get("SOPInstanceUID", "")) or None,
            study_instance_uid=str(dataset.get("StudyInstanceUID", "")) or None,
            header=dataset,
        )
    except Exception:  # noqa: BLE001 - any unreadable part is a per-instance failure, not a 500
        return Part(data=data, sop_class_uid=None, sop_instance_uid=None, study_instance_uid=None)


def _uid(value: str | None) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}


def response(outcomes: list[Outcome], *, retrieve_url: str | None = None) -> tuple[int, dict[str, Any]]:
    """The HTTP status and the DICOM JSON body of the STOW-RS response."""
    accepted = [o for o in outcomes if o.reason is None]
    failed = [o for o in outcomes if o.reason is not None]
    body: dict[str, Any] = {}
    if retrieve_url:
        body["00081190"] = {"vr": "UR", "Value": [retrieve_url]}
    if failed:
        body["00081198"] = {
            "vr": "SQ",
            "Value": [
                {
                    "00081150": _uid(o.sop_class_uid),
                    "00081155": _uid(o.sop_instance_uid),
                    "00081197": {"vr": "US", "Value": [o.reason]},
                }
                for o in failed
            ],
        }
    if accepted:
        body["00081199"] = {
            "vr": "SQ",
            "Value": [
                {"00081150": _uid(o.sop_class_uid), "00081155": _uid(o.sop_instance_uid)} for o in accepted
            ],
        }
    status = 200 if not failed else 202 if accepted else 409
    return status, body
