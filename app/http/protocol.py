"""`BoundedHttpToolsProtocol`: uvicorn's httptools protocol with limits on a request's head.

uvicorn reads a request line and headers of any size, for as long as a client takes: a 64 MB header was
answered, and four connections that sent 32 MB of an unfinished header and stalled held 191 MB for as
long as they stayed open. Here a connection may send at most HTTP_MAX_HEADER_BYTES before its headers
are complete (431 otherwise) and must complete them within HTTP_HEADER_TIMEOUT_SECONDS of its first byte
(or of connecting; 408 otherwise); either answer closes the connection. The body's time limit is the
app's (`app.http.bodies.read_body`), and the number of connections is uvicorn's `limit_concurrency`.
"""

from __future__ import annotations

import asyncio
from asyncio import TimerHandle
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from app.config import get_settings
from app.errors import PROBLEM_CONTENT_TYPE, HeadersTooLarge, RequestTimeout


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = get_settings()
        self._max_head_bytes = settings.http_max_header_bytes
        self._head_timeout = settings.http_header_timeout_seconds
        self._head_bytes = 0
        self._in_head = True  # waiting for (the rest of) a request line and its headers
        self._head_timer: TimerHandle | None = None
        self._heads_completed = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()  # a connection that never sends a request is closed too

    def data_received(self, data: bytes) -> None:
        was_in_head, heads_before = self._in_head, self._heads_completed
        super().data_received(data)  # may complete a head (the rest of the chunk is then its body)
        in_one_head = was_in_head and self._in_head and self._heads_completed == heads_before
        if in_one_head and not self.transport.is_closing():
            # The whole chunk belongs to one unfinished head, which the parser holds.
            self._head_bytes += len(data)
            if self._head_bytes > self._max_head_bytes:
                self._refuse(
                    HeadersTooLarge(f"The request line and headers exceed {self._max_head_bytes} bytes.")
                )

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_timer is None:
            self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._heads_completed += 1
        self._disarm_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._head_bytes = True, 0  # what comes next is the next request's head

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self._head_timeout, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._in_head or self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a response is still being sent (e.g. an event stream): leave the connection be
        self._refuse(RequestTimeout(f"The request's headers did not arrive within {self._head_timeout:g} s."))

    def _refuse(self, problem: HeadersTooLarge | RequestTimeout) -> None:
        """Answer without the app (there is no complete request to give it) and close the connection."""
        self._disarm_head_timer()
        body = problem.render()
        head = [
            STATUS_LINE[problem.status],
            b"content-type: " + PROBLEM_CONTENT_TYPE.encode() + b"\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()
