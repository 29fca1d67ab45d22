"""A serial port that comes back by itself: open, read, write, and reopen with backoff.

Shared by the RS-485 (Modbus RTU) and GNSS drivers. A USB adapter can be pulled
and plugged back at any time; this room turns that into a counted, logged
reconnect and guarantees the file descriptor is closed when a session ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import serial
import serial_asyncio_fast

log = logging.getLogger(__name__)


class SerialLinkLost(ConnectionError):
    """The port went away under us (device unplugged, read error)."""


class Backoff:
    """Exponential backoff with jitter, so a fleet of gateways does not retry in step."""

    def __init__(
        self,
        initial: float = 0.5,
        maximum: float = 30.0,
        factor: float = 2.0,
        jitter: float = 0.5,
        rng: random.Random | None = None,
    ) -> None:
        if initial <= 0 or maximum < initial or factor < 1 or not 0 <= jitter < 1:
            raise ValueError(
                f"backoff: need 0 < initial <= maximum, factor >= 1, 0 <= jitter < 1; "
                f"got initial={initial} maximum={maximum} factor={factor} jitter={jitter}"
            )
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.jitter = jitter
        self._rng = rng or random.Random()
        self.attempt = 0

    def next_delay(self) -> float:
        base = min(self.maximum, self.initial * self.factor**self.attempt)
        self.attempt += 1
        # Take up to `jitter` off the base, never add: the maximum stays a promise.
        return base * (1.0 - self.jitter * self._rng.random())

    def reset(self) -> None:
        self.attempt = 0


class _BufferProtocol(asyncio.Protocol):
    """Collects bytes in one buffer; drivers frame them (RTU frames, NMEA lines) themselves."""

    def __init__(self, max_buffer: int) -> None:
        self.buffer = bytearray()
        self.max_buffer = max_buffer
        self.overflowed = 0
        self.lost: BaseException | None = None
        self.event = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > self.max_buffer:
            # A reader that fell behind (or a babbling device) must not grow memory:
            # keep the newest bytes, the framers resynchronise on their own.
            self.overflowed += len(self.buffer) - self.max_buffer
            del self.buffer[: len(self.buffer) - self.max_buffer]
        self.event.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or SerialLinkLost("port closed")
        self.event.set()


class SerialConnection:
    """One open session on the port. Reads raise SerialLinkLost once the device is gone."""

    def __init__(self, port: str, transport: asyncio.Transport, protocol: _BufferProtocol) -> None:
        self.port = port
        self._transport = transport
        self._protocol = protocol

    async def read(self, wait: float | None = None) -> bytes:
        """Return whatever bytes are buffered, waiting up to `wait` seconds for some (b"" if none)."""
        proto = self._protocol
        if not proto.buffer and proto.lost is None:
            proto.event.clear()
            if wait is None:
                await proto.event.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proto.event.wait(), wait)
        if proto.buffer:
            data = bytes(proto.buffer)
            proto.buffer.clear()
            return data
        if proto.lost is not None:
            raise SerialLinkLost(f"{self.port}: {proto.lost}") from proto.lost
        return b""

    def discard_input(self) -> int:
        """Drop bytes nobody asked for (a late answer, line noise); return how many."""
        n = len(self._protocol.buffer)
        self._protocol.buffer.clear()
        return n

    def write(self, data: bytes) -> None:
        if self._protocol.lost is not None or self._transport.is_closing():
            raise SerialLinkLost(f"{self.port}: write on a closed port")
        self._transport.write(data)

    @property
    def overflowed(self) -> int:
        return self._protocol.overflowed

    def close(self) -> None:
        """Close the file descriptor now, not in some later executor job.

        pyserial-asyncio-fast closes the port from a background task; a task that
        was cancelled must not leave the device open (the next session or another
        tool would find it locked), so the fd is closed synchronously here.
        """
        ser: Any = getattr(self._transport, "serial", None)
        self._transport.abort()
        if ser is not None:
            with contextlib.suppress(Exception):
                ser.close()


Opener = Callable[[str, int, Callable[[], asyncio.Protocol]], Awaitable[tuple[Any, Any]]]


async def _open_pyserial(
    port: str, baudrate: int, factory: Callable[[], asyncio.Protocol]
) -> tuple[Any, Any]:
    loop = asyncio.get_running_loop()
    return await serial_asyncio_fast.create_serial_connection(
        loop, factory, port, baudrate=baudrate, exclusive=True
    )


class SerialLink:
    """Opens `port` on demand, retrying with backoff; counts and reports what happened."""

    def __init__(
        self,
        port: str,
        baudrate: int,
        *,
        backoff: Backoff | None = None,
        max_buffer: int = 4096,
        opener: Opener | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        name: str = "serial",
    ) -> None:
        self.port = port
        self.baudrate = baudrate
        self.backoff = backoff or Backoff()
        self._max_buffer = max_buffer
        self._opener = opener or _open_pyserial
        self._sleep = sleep
        self._clock = clock
        self.name = name
        self.connected = False
        self.opens = 0
        self.open_failures = 0
        self.disconnects = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self._pending_failure = False
        self._consecutive_failures = 0

    def _note_error(self, message: str) -> None:
        self.last_error = message
        self.last_error_at = self._clock()

    async def _open_once(self) -> SerialConnection:
        protocol = _BufferProtocol(self._max_buffer)
        transport, _ = await self._opener(self.port, self.baudrate, lambda: protocol)
        return SerialConnection(self.port, transport, protocol)

    async def open(self) -> SerialConnection:
        """Open the port, waiting with backoff for as long as it takes (cancel to give up)."""
        while True:
            if self._pending_failure:
                delay = self.backoff.next_delay()
                log.debug("%s %s: retrying in %.2fs", self.name, self.port, delay)
                await self._sleep(delay)
            try:
                conn = await self._open_once()
            except (OSError, serial.SerialException, ValueError) as exc:
                self.open_failures += 1
                self._consecutive_failures += 1
                self._pending_failure = True
                self._note_error(f"open failed: {exc}")
                # First failure loudly, then every 10th: an unplugged adapter must not
                # flood the journal with one line per second for days.
                level = logging.WARNING if self._consecutive_failures % 10 == 1 else logging.DEBUG
                log.log(
                    level,
                    "%s: cannot open %s (%s); attempt %d, retrying with backoff. "
                    "Check the cable/adapter and the port in the config.",
                    self.name,
                    self.port,
                    exc,
                    self._consecutive_failures,
                )
                continue
            self.opens += 1
            self.connected = True
            self._consecutive_failures = 0
            log.info("%s: opened %s at %d baud", self.name, self.port, self.baudrate)
            return conn

    def mark_healthy(self) -> None:
        """Call after valid traffic: the next loss starts backing off from the beginning."""
        self.backoff.reset()
        self._pending_failure = False

    def mark_lost(self, exc: BaseException) -> None:
        self.disconnects += 1
        self._pending_failure = True
        self._note_error(f"connection lost: {exc}")
        log.warning("%s: lost %s (%s); reopening with backoff", self.name, self.port, exc)

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[SerialConnection]:
        """Open (with retries), yield the connection, and always close it on the way out.

        A SerialLinkLost or OSError raised inside the block is recorded and swallowed,
        so callers can simply loop `while True: async with link.session() as conn: ...`.
        """
        conn = await self.open()
        try:
            yield conn
        except (SerialLinkLost, OSError, serial.SerialException) as exc:
            self.mark_lost(exc)
        finally:
            conn.close()
            self.connected = False

    def health(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "baudrate": self.baudrate,
            "connected": self.connected,
            "opens": self.opens,
            "open_failures": self.open_failures,
            "disconnects": self.disconnects,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
        }
