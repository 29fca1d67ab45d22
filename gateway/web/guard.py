"""The page's connections bounded: how many at once, how long one may take to ask.

aiohttp limits neither, so 200 slow-header clients could hold the port as long as they
liked; `_Guarded` wraps aiohttp's protocol for each connection with `ConnectionGuard`.
"""

from __future__ import annotations

import asyncio
from typing import Any

#: A connection must send a whole request head within this (slow-header clients are cut off).
HEADER_TIMEOUT_S = 10.0
#: An idle kept-alive connection is closed after this.
KEEPALIVE_S = 15.0
#: Connections at once: a phone opens a handful; more is someone holding sockets.
MAX_CONNECTIONS = 64


class ConnectionGuard:
    """Bounds the page's connections: how many at once, and how long one may take to say
    what it wants. aiohttp has no limit on either, so 200 slow-header clients could hold
    the port for as long as they liked."""

    def __init__(self) -> None:
        self.open: dict[asyncio.BaseTransport, None] = {}  # oldest first
        self._served: set[asyncio.BaseTransport] = set()
        self.refused = 0
        self.timed_out = 0

    def opened(self, transport: asyncio.BaseTransport) -> bool:
        if len(self.open) >= MAX_CONNECTIONS:
            # full: the oldest connection that never sent a request makes room, so a crowd
            # of slow clients cannot keep the technician's phone out
            silent = next((t for t in self.open if t not in self._served), None)
            if silent is None:
                self.refused += 1
                return False
            self.timed_out += 1
            self.open.pop(silent)
            silent.close()
        self.open[transport] = None
        asyncio.get_running_loop().call_later(HEADER_TIMEOUT_S, self._deadline, transport)
        return True

    def request_seen(self, transport: asyncio.BaseTransport | None) -> None:
        if transport is not None:
            self._served.add(transport)

    def closed(self, transport: asyncio.BaseTransport) -> None:
        self.open.pop(transport, None)
        self._served.discard(transport)

    def _deadline(self, transport: asyncio.BaseTransport) -> None:
        if transport in self.open and transport not in self._served:
            self.timed_out += 1
            transport.close()


class _Guarded(asyncio.Protocol):
    """aiohttp's protocol for one connection, with the guard's bounds around it."""

    def __init__(self, inner: Any, guard: ConnectionGuard) -> None:
        self._inner = inner
        self._guard = guard
        self._made = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        if not self._guard.opened(transport):
            assert isinstance(transport, asyncio.Transport)
            transport.abort()
            return
        self._made = True
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._made:
            self._guard.closed(self._transport)
            self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        result: bool | None = self._inner.eof_received()
        return result

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()
