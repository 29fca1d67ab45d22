"""RS-485 wired parking detectors: poll Modbus RTU units and turn register values into spot states.

Owns one serial bus (via serial_link) and speaks to it through modbus_rtu (read
holding/input registers). It never raises for bus trouble: it counts per unit,
logs, and marks silent units `unknown`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from drivers.modbus_rtu import FUNCTION_CODES, RtuError, read_registers
from drivers.serial_link import Backoff, SerialConnection, SerialLink

log = logging.getLogger(__name__)

Status = Literal["free", "occupied", "unknown"]


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
