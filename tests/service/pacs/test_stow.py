"""STOW-RS request parsing and response building (PS3.18 10.5)."""

from __future__ import annotations

import pytest

from service.pacs.stow import CANNOT_UNDERSTAND, Outcome, response, split_parts
from xray.contract.errors import InvalidParametersError, UnsupportedMediaTypeError

RELATED = 'multipart/related; type="application/dicom"; boundary=b0'


def test_parts_are_split_on_the_boundary_with_preamble_and_epilogue_ignored() -> None:
    body = (
        b"preamble\r\n--b0\r\nContent-Type: application/dicom\r\n\r\nFIRST\r\n"
        b"--b0\r\n\r\nSECOND--b0 is not a delimiter here\r\n--b0--\r\nepilogue"
    )
    assert split_parts(body, RELATED) == [b"FIRST", b"SECOND--b0 is not a delimiter here"]


def test_part_bytes_are_kept_exactly_even_with_crlf_inside() -> None:
    payload = b"\x00\r\n\r\n\xff" * 10
    body = b"--b0\r\nContent-Type: application/dicom\r\n\r\n" + payload + b"\r\n--b0--"
    assert split_parts(body, RELATED) == [payload]


@pytest.mark.parametrize(
    ("content_type", "error"),
    [
        ("application/dicom", UnsupportedMediaTypeError),
        ('multipart/related; type="application/dicom+json"; boundary=b0', UnsupportedMediaTypeError),
        ('multipart/related; type="application/dicom"', InvalidParametersError),
    ],
)
def test_wrong_request_media_types_are_refused(content_type: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        split_parts(b"--b0\r\n\r\nx\r\n--b0--", content_type)


def test_a_part_of_another_type_and_an_empty_request_are_refused() -> None:
    with pytest.raises(UnsupportedMediaTypeError):
        split_parts(b"--b0\r\nContent-Type: image/jpeg\r\n\r\nx\r\n--b0--", RELATED)
    with pytest.raises(InvalidParametersError):
        split_parts(b"--b0--", RELATED)


def test_response_status_and_sequences() -> None:
    ok, bad = Outcome("1.2.3", "1.2.3.4"), Outcome("1.2.3", "1.2.3.5", CANNOT_UNDERSTAND)
    assert response([ok])[0] == 200
    assert response([ok, bad])[0] == 202
    status, body = response([bad])
    assert status == 409
    assert "00081199" not in body
    assert body["00081198"]["Value"][0]["00081197"] == {"vr": "US", "Value": [CANNOT_UNDERSTAND]}
    assert body["00081198"]["Value"][0]["00081155"] == {"vr": "UI", "Value": ["1.2.3.5"]}
    unknown = response([Outcome(None, None, CANNOT_UNDERSTAND)])[1]
    assert unknown["00081198"]["Value"][0]["00081155"] == {"vr": "UI"}
