"""uvicorn's httptools protocol, writing each response in one ``send()`` instead of two.

uvicorn writes a response's status line and headers when the app sends
``http.response.start``, and the body when it sends ``http.response.body``: two system calls
and two TCP segments for every answer, though the app sends both messages in the same turn of
the event loop (Starlette's ``Response`` does; so does the hot path's lane). Measured served
(strace -c): two ``write`` calls and one ``read`` a /validate; the second write was a fifth of
the request's system time and woke the client twice.

``CoalescingTransport`` holds a write until the end of the current loop turn (``call_soon``)
and joins whatever else is written in that turn: the body goes out with its headers in one
``send()``. Nothing waits longer than the turn it was written in; ``close``, ``write_eof``,
``set_protocol`` and the peer's half-close (``eof_received``) flush first, ``abort`` drops
what is held (as the transport drops its own buffer); flow control is the real transport's
(its buffer size counts what is held too).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CoalescingTransport:
    """A write-side wrapper of an ``asyncio.Transport``: writes made in one loop turn go out
    joined, at the end of that turn."""

    __slots__ = ("_flush_handle", "_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes | bytearray | memoryview] = []
        self._flush_handle: asyncio.Handle | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        self._held.append(data)
        if self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write what is held now."""
        handle, self._flush_handle = self._flush_handle, None
        if handle is not None:
            handle.cancel()
        held, self._held = self._held, []
        if not held:
            return
        if self._transport.is_closing():
            return  # the peer left or the transport aborted: the data has nowhere to go
        self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = []
        handle, self._flush_handle = self._flush_handle, None
        if handle is not None:
            handle.cancel()
        self._transport.abort()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.flush()
        self._transport.set_protocol(protocol)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(len(data) for data in self._held)

    def __getattr__(self, name: str) -> Any:
        # is_closing, get_extra_info, pause_reading, resume_reading, set_write_buffer_limits,
        # get_protocol, ...: the transport's own.
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """``serve``'s HTTP protocol: uvicorn's, on a ``CoalescingTransport``."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._coalescing = CoalescingTransport(transport, self.loop)
        wrapped: Any = self._coalescing
        super().connection_made(wrapped)

    def eof_received(self) -> None:
        # The peer half-closed (it may, after its request): the loop closes the transport when
        # this returns, so what this turn wrote goes out first, as it would have unheld.
        self._coalescing.flush()
        super().eof_received()
