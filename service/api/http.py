"""The HTTP/1.1 protocol `xray serve` runs: uvicorn's httptools protocol with bounded request heads.

httptools accumulates a header value however long it grows, and nothing upstream of the app
limits it: a 60 MiB header stalled the event loop for 1.7 s, four of 200 MiB took minutes and
868 MB. Here the bytes of a request head (request line and headers) are counted as they arrive,
before the parser buffers them, and so are the header lines; past either limit the connection is
answered 431 (RFC 6585) and closed, and the parser never sees the rest.
"""

from __future__ import annotations

import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_HEAD_END = b"\r\n\r\n"


class _HeadersTooLargeError(Exception):
    """Raised inside a parser callback to stop parsing an over-long head."""


class BoundedHeadersProtocol(HttpToolsProtocol):
    """httptools' protocol, refusing request heads over `max_head_bytes` or `max_headers` lines."""

    max_head_bytes = 32 * 1024
    max_headers = 100

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """See uvicorn's `HttpToolsProtocol`."""
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0
        self._header_lines = 0
        self._tail = b""
        self._refused = False

    def data_received(self, data: bytes) -> None:
        """Count the head's bytes before the parser buffers them; refuse past the limit."""
        if self._refused:
            return
        if self._in_head:
            # Where this chunk's part of the head ends (the terminator may straddle two chunks).
            window = self._tail + data
            end = window.find(_HEAD_END)
            self._head_bytes += len(data) if end < 0 else max(0, end + len(_HEAD_END) - len(self._tail))
            self._tail = window[-(len(_HEAD_END) - 1) :]
            if self._head_bytes > self.max_head_bytes:
                self._refuse(f"the request head exceeds {self.max_head_bytes} bytes")
                return
        super().data_received(data)

    def on_message_begin(self) -> None:
        """A new request: its head is counted from zero."""
        super().on_message_begin()
        self._header_lines = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        """Count the header lines."""
        self._header_lines += 1
        if self._header_lines > self.max_headers:
            raise _HeadersTooLargeError
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        """The head is over: the body's bytes are not counted."""
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        """The next bytes on this connection begin the next request's head."""
        super().on_message_complete()
        self._in_head, self._head_bytes, self._tail = True, 0, b""

    def send_400_response(self, msg: str) -> None:
        """Answer a parser error as uvicorn does; 431 when the error was our header-count limit."""
        if self._header_lines > self.max_headers:
            self._refuse(f"the request has more than {self.max_headers} header lines")
            return
        super().send_400_response(msg)

    def _refuse(self, detail: str) -> None:
        self._refused = True
        body = json.dumps(
            {
                "type": "urn:xray-triage:problem:request-header-fields-too-large",
                "title": "Request header fields too large",
                "status": 431,
                "detail": detail,
            }
        ).encode()
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/problem+json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n"
            b"connection: close\r\n\r\n" + body
        )
        self.transport.close()


def bounded_headers_protocol(max_head_bytes: int, max_headers: int) -> type[BoundedHeadersProtocol]:
    """The protocol class with these limits, for `uvicorn.run(http=...)`."""
    return type(
        "BoundedHeadersProtocol",
        (BoundedHeadersProtocol,),
        {"max_head_bytes": max_head_bytes, "max_headers": max_headers},
    )
