"""RS-485 wired parking detectors: poll Modbus RTU units and turn register values into spot states.

Owns one serial bus (via serial_link) and one small RTU master for the two
functions detectors use (read holding/input registers). It never raises for
bus trouble: it counts per unit, logs, and marks silent units `unknown`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from drivers.serial_link import Backoff, SerialConnection, SerialLink

log = logging.getLogger(__name__)

FUNCTION_CODES: Final[dict[str, int]] = {"holding": 3, "input": 4}

EXCEPTION_NAMES: Final[dict[int, str]] = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    6: "server device busy",
    11: "gateway target device failed to respond",
}

Status = Literal["free", "occupied", "unknown"]


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE: Final = _crc_table()


def crc16(data: bytes) -> int:
    """Modbus CRC-16 (poly 0xA001 reflected, init 0xFFFF); sent low byte first."""
    crc = 0xFFFF
    for b in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ b) & 0xFF]
    return crc


def encode_read_request(unit: int, function: int, address: int, count: int = 1) -> bytes:
    if not 1 <= unit <= 247:
        raise ValueError(f"Modbus unit {unit} out of range 1..247")
    if function not in (3, 4):
        raise ValueError(f"function {function}: only 3 (holding) and 4 (input) are polled")
    if not 0 <= address <= 0xFFFF or not 1 <= count <= 125:
        raise ValueError(f"register {address} / count {count} out of range")
    pdu = bytes([unit, function]) + address.to_bytes(2, "big") + count.to_bytes(2, "big")
    return pdu + crc16(pdu).to_bytes(2, "little")


class RtuError(Exception):
    """A reply that cannot be used. `kind` names the counter it lands in.

    `skipped` is how many received bytes were noise around (or instead of) the reply,
    `stray` how many sat on the line before the request went out.
    """

    kind = "frame_errors"
    skipped = 0
    stray = 0


class RtuTimeout(RtuError):
    kind = "timeouts"


class RtuCrcError(RtuError):
    kind = "crc_errors"


class RtuException(RtuError):
    kind = "exceptions"

    def __init__(self, unit: int, function: int, code: int) -> None:
        self.code = code
        name = EXCEPTION_NAMES.get(code, "unknown exception")
        super().__init__(
            f"unit {unit} answered function {function} with exception {code} ({name}); "
            "check the unit's register map against `register`/`function` in the config"
        )


def decode_read_reply(frame: bytes, unit: int, function: int, count: int) -> list[int]:
    """Check one complete reply frame and return its register values."""
    body, crc = frame[:-2], int.from_bytes(frame[-2:], "little")
    if crc16(body) != crc:
        raise RtuCrcError(
            f"unit {unit}: CRC mismatch (got {crc:04x}, computed {crc16(body):04x}) in "
            f"{frame.hex()}; line noise or wrong baud rate/termination on the RS-485 bus"
        )
    if frame[0] != unit:
        raise RtuError(
            f"reply from unit {frame[0]} while asking unit {unit}: two units share an id?"
        )
    if frame[1] == function | 0x80:
        raise RtuException(unit, function, frame[2])
    if frame[1] != function or frame[2] != 2 * count:
        raise RtuError(
            f"unit {unit}: unexpected reply header {frame[:3].hex()} for function {function}, "
            f"{count} register(s)"
        )
    return [int.from_bytes(frame[3 + 2 * i : 5 + 2 * i], "big") for i in range(count)]


@dataclass(frozen=True, slots=True)
class RtuReply:
    values: list[int]
    skipped: int = 0  # noise bytes received around the reply and dropped
    stray: int = 0  # bytes found on the line before the request (late answers, noise)


@dataclass(frozen=True, slots=True)
class _Scan:
    start: int | None  # offset of a complete reply to this request whose CRC checks out
    length: int  # length of that reply
    waiting: bool  # a reply may still complete: a header is there, its tail is not
    bad_crc: bytes | None  # the first complete candidate that failed its CRC


def _scan(buf: bytes | bytearray, unit: int, function: int, count: int) -> _Scan:
    """Hunt `buf` for the reply to (unit, function, count), skipping whatever precedes it.

    RTU has no start byte, so every offset whose header fits this request is a
    candidate and only the CRC decides. Headers that cannot belong to this request
    (another unit, another function, a byte count that does not match) are noise.
    """
    normal = 5 + 2 * count
    waiting = False
    bad_crc: bytes | None = None
    size = len(buf)
    for i in range(size):
        if buf[i] != unit:
            continue
        if i + 1 >= size:
            waiting = True
            break
        fc = buf[i + 1]
        if fc == function | 0x80:
            n = 5
        elif fc == function:
            if i + 2 >= size:
                waiting = True
                continue
            if buf[i + 2] != 2 * count:
                continue
            n = normal
        else:
            continue
        if i + n > size:
            waiting = True
            continue
        frame = bytes(buf[i : i + n])
        if crc16(frame[:-2]) == int.from_bytes(frame[-2:], "little"):
            return _Scan(i, n, False, None)
        if bad_crc is None:
            bad_crc = frame
    return _Scan(None, 0, waiting, bad_crc)


def _failure(buf: bytes | bytearray, scan: _Scan, unit: int, function: int, count: int,
             reply_timeout: float) -> RtuError:
    """Name what the line brought instead of a reply (and pick the counter it lands in)."""
    if not buf:
        return RtuTimeout(f"unit {unit}: no reply within {reply_timeout}s")
    if scan.bad_crc is not None:
        try:
            decode_read_reply(scan.bad_crc, unit, function, count)
        except RtuError as exc:
            return exc
    # A well-formed reply from another id is worth naming: two units share an address.
    n = 5 + 2 * count
    for other in range(len(buf)):
        frame = bytes(buf[other : other + n])
        if (len(frame) == n and frame[0] != unit and frame[1] == function
                and frame[2] == 2 * count
                and crc16(frame[:-2]) == int.from_bytes(frame[-2:], "little")):
            return RtuError(
                f"reply from unit {frame[0]} while asking unit {unit}: two units share an id?"
            )
    shown = bytes(buf[:32]).hex() + ("..." if len(buf) > 32 else "")
    if scan.waiting:
        return RtuError(
            f"unit {unit}: incomplete reply ({len(buf)} bytes: {shown}) after {reply_timeout}s"
        )
    return RtuError(
        f"unit {unit}: no valid reply in {len(buf)} bytes of line noise ({shown}); "
        "check RS-485 termination, biasing and the baud rate"
    )


#: Bytes of unmatched noise kept while hunting for a reply; older ones are dropped.
_MAX_HUNT: Final = 512


async def read_registers(
    conn: SerialConnection,
    unit: int,
    function: int,
    address: int,
    count: int,
    reply_timeout: float,
    monotonic: Callable[[], float] = time.monotonic,
    *,
    quiet: float = 0.05,
) -> RtuReply:
    """One request/reply transaction on the bus. Raises an RtuError subclass on failure.

    Noise before, after or instead of the reply is skipped and counted in `skipped`.
    Once bytes have come and none of them can still become the reply, the line gets
    `quiet` seconds to bring more before the transaction is given up (so a corrupt
    reply fails fast instead of waiting out the whole `reply_timeout`).
    """
    # A late reply to an earlier request must not pass for this one.
    stray = conn.discard_input()
    conn.write(encode_read_request(unit, function, address, count))
    deadline = monotonic() + reply_timeout
    buf = bytearray()
    dropped = 0
    while True:
        scan = _scan(buf, unit, function, count)
        if scan.start is not None:
            frame = bytes(buf[scan.start : scan.start + scan.length])
            skipped = dropped + len(buf) - scan.length
            try:
                values = decode_read_reply(frame, unit, function, count)
            except RtuError as exc:  # an exception response: valid, but no value
                exc.skipped, exc.stray = skipped, stray
                raise
            return RtuReply(values, skipped, stray)
        left = deadline - monotonic()
        settled = bool(buf) and not scan.waiting
        wait = min(left, quiet) if settled else left
        data = await conn.read(wait) if wait > 0 else b""
        if not data and (left <= 0 or settled):
            failure = _failure(buf, scan, unit, function, count, reply_timeout)
            failure.skipped, failure.stray = dropped + len(buf), stray
            raise failure
        buf += data
        if len(buf) > _MAX_HUNT:
            # A babbling bus must not grow memory; a reply is never this far back.
            cut = len(buf) - _MAX_HUNT
            dropped += cut
            del buf[:cut]


@dataclass(frozen=True, slots=True)
class WiredUnit:
    unit: int
    spot_id: str
    register: int
    occupied_values: tuple[int, ...] = (1,)
    function: Literal["holding", "input"] = "holding"


@dataclass(frozen=True, slots=True)
class WiredReading:
    spot_id: str
    status: Status
    unit: int
    value: int | None
    observed_us: int


@dataclass(slots=True)
class _UnitState:
    status: Status | None = None
    value: int | None = None
    last_ok: float | None = None
    last_error: str | None = None
    counters: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("polls", "ok", "timeouts", "crc_errors", "exceptions", "frame_errors", "noise_bytes"),
            0,
        )
    )


class ModbusPoller:
    """Polls each configured unit every `poll_interval` and reports spot state changes."""

    def __init__(
        self,
        port: str,
        baudrate: int,
        units: Sequence[WiredUnit],
        poll_interval: float,
        timeout: float,
        retries: int,
        unknown_after: float,
        on_reading: Callable[[WiredReading], None],
        clock: Callable[[], float] = time.monotonic,
        wall_clock_us: Callable[[], int] = lambda: time.time_ns() // 1000,
        *,
        link: SerialLink | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        for u in units:
            if u.function not in FUNCTION_CODES:
                raise ValueError(
                    f"modbus unit {u.unit} ({u.spot_id}): function {u.function!r}, "
                    "expected 'holding' or 'input'"
                )
        if poll_interval <= 0 or timeout <= 0 or retries < 0 or unknown_after <= 0:
            raise ValueError(
                "modbus: poll_interval, timeout and unknown_after must be > 0, retries >= 0"
            )
        self.units = list(units)
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.retries = retries
        self.unknown_after = unknown_after
        self.on_reading = on_reading
        self.clock = clock
        self.wall_clock_us = wall_clock_us
        self.link = link or SerialLink(port, baudrate, backoff=backoff, name="modbus")
        # Modbus RTU wants >= 3.5 character times of silence between frames
        # (11 bits per character; fixed 1.75 ms above 19200 baud).
        self.frame_gap = max(0.00175, 3.5 * 11 / baudrate)
        # How long a line that brought only noise gets to bring the real reply. USB
        # adapters deliver in bursts (an FTDI latency timer is 16 ms), so not 3.5 chars.
        self.quiet = min(timeout, max(0.05, 20 * 11 / baudrate))
        self.stray_bytes = 0  # bytes on the bus before a request: late replies, noise
        self._state = {(u.unit, u.register, u.function): _UnitState() for u in self.units}
        self._started: float | None = None
        self.callback_errors = 0

    def _emit(self, u: WiredUnit, st: _UnitState, status: Status, value: int | None) -> None:
        changed = status != st.status
        st.status, st.value = status, value
        if not changed:
            return
        reading = WiredReading(u.spot_id, status, u.unit, value, self.wall_clock_us())
        try:
            self.on_reading(reading)
        except Exception:
            # A consumer bug must not stop the bus being polled.
            self.callback_errors += 1
            log.exception("modbus: on_reading failed for spot %s", u.spot_id)

    def _check_unknown(self) -> None:
        now = self.clock()
        for u in self.units:
            st = self._state[(u.unit, u.register, u.function)]
            since = st.last_ok if st.last_ok is not None else self._started
            if since is not None and now - since >= self.unknown_after and st.status != "unknown":
                log.warning(
                    "modbus: unit %d (spot %s) silent for %.1fs: marking unknown (last error: %s)",
                    u.unit,
                    u.spot_id,
                    now - since,
                    st.last_error,
                )
                self._emit(u, st, "unknown", None)

    async def _poll_unit(self, conn: SerialConnection, u: WiredUnit) -> None:
        st = self._state[(u.unit, u.register, u.function)]
        fc = FUNCTION_CODES[u.function]
        for attempt in range(self.retries + 1):
            st.counters["polls"] += 1
            try:
                reply = await read_registers(
                    conn, u.unit, fc, u.register, 1, self.timeout, self.clock, quiet=self.quiet
                )
            except RtuError as exc:
                st.counters[exc.kind] += 1
                st.counters["noise_bytes"] += exc.skipped
                self.stray_bytes += exc.stray
                st.last_error = str(exc)
                log.debug("modbus %s attempt %d: %s", self.link.port, attempt + 1, exc)
                await asyncio.sleep(self.frame_gap)
                continue
            (value,) = reply.values
            st.counters["noise_bytes"] += reply.skipped
            self.stray_bytes += reply.stray
            st.counters["ok"] += 1
            st.last_ok = self.clock()
            self.link.mark_healthy()
            status: Status = "occupied" if value in u.occupied_values else "free"
            self._emit(u, st, status, value)
            await asyncio.sleep(self.frame_gap)
            return

    async def _poll_forever(self) -> None:
        while True:
            async with self.link.session() as conn:
                while True:
                    cycle_start = self.clock()
                    for u in self.units:
                        await self._poll_unit(conn, u)
                    self._check_unknown()
                    await asyncio.sleep(max(0.0, self.poll_interval - (self.clock() - cycle_start)))

    async def _watch_unknown(self) -> None:
        # Runs beside the poller so units still turn `unknown` while the adapter
        # is unplugged and the poller waits in its reconnect backoff.
        step = min(self.poll_interval, self.unknown_after / 4)
        while True:
            await asyncio.sleep(step)
            self._check_unknown()

    async def run(self) -> None:
        self._started = self.clock()
        tasks = [
            asyncio.create_task(self._poll_forever(), name=f"modbus-poll {self.link.port}"),
            asyncio.create_task(self._watch_unknown(), name=f"modbus-watch {self.link.port}"),
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t

    def health(self) -> dict[str, Any]:
        now = self.clock()
        units = []
        for u in self.units:
            st = self._state[(u.unit, u.register, u.function)]
            units.append(
                {
                    "unit": u.unit,
                    "spot_id": u.spot_id,
                    "register": u.register,
                    "function": u.function,
                    "status": st.status,
                    "value": st.value,
                    "seconds_since_ok": None if st.last_ok is None else round(now - st.last_ok, 3),
                    "last_error": st.last_error,
                    **st.counters,
                }
            )
        return {
            "kind": "modbus",
            **self.link.health(),
            "callback_errors": self.callback_errors,
            "stray_bytes": self.stray_bytes,
            "units": units,
        }
