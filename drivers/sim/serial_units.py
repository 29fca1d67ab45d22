"""Simulated serial devices on pseudo-terminals: a Modbus RTU detector bus and an NMEA receiver.

Tests and `schwebe demo` use them in place of an RS-485 adapter and a GNSS
module. `port` is what a driver opens; `unplug()`/`replug()` make the device
node vanish and come back the way a USB adapter does.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import time
import tty
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from drivers.modbus_rtu import FUNCTION_CODES, crc16


class _PtyDevice:
    """Owns the master side of a pty and, optionally, a stable symlink naming its slave."""

    def __init__(self, link_path: str | None = None) -> None:
        self.link_path = link_path
        self._master: int | None = None
        self._slave: int | None = None
        self.slave_name: str | None = None

    @property
    def port(self) -> str:
        if self.link_path is not None:
            return self.link_path
        if self.slave_name is None:
            raise RuntimeError("simulated device not started: call start() first")
        return self.slave_name

    @property
    def plugged(self) -> bool:
        return self._master is not None

    def _open_pty(self) -> None:
        master, slave = os.openpty()
        # Raw mode before anyone opens the slave: no echo, no CR/LF translation,
        # so bytes go through the way they would on a UART.
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self.slave_name = os.ttyname(slave)
        if self.link_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.link_path)
            os.symlink(self.slave_name, self.link_path)
        asyncio.get_running_loop().add_reader(master, self._on_readable)

    async def start(self) -> None:
        self._open_pty()

    def unplug(self) -> None:
        """Close the pty (readers of the slave get EIO) and remove the device node."""
        if self._master is not None:
            asyncio.get_running_loop().remove_reader(self._master)
            os.close(self._master)
        if self._slave is not None:
            os.close(self._slave)
        self._master = self._slave = None
        if self.link_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.link_path)

    def replug(self) -> None:
        """A new pty behind the same link path, like an adapter enumerated again."""
        self.unplug()
        self._open_pty()

    async def close(self) -> None:
        self.unplug()

    def _write(self, data: bytes) -> int:
        if self._master is None:
            return 0
        try:
            return os.write(self._master, data)
        except (BlockingIOError, OSError):
            # Nobody reading and the pty buffer is full: a real UART drops too.
            return 0

    def _on_readable(self) -> None:
        if self._master is None:
            return
        try:
            data = os.read(self._master, 4096)
        except BlockingIOError:
            return
        except OSError:
            # EIO: no process holds the slave open right now; wait for one.
            return
        self.on_data(data)

    def on_data(self, data: bytes) -> None:
        """Bytes the driver wrote to the slave side."""


@dataclass(frozen=True, slots=True)
class LineFault:
    """What RS-485 line noise does to one reply (applied in this order: truncate, inside, ...).

    A long unterminated cable, a contactor switching next to it or a second master
    produce exactly these: bytes before or after a frame, a frame cut short, or
    bytes landing inside one.
    """

    before: bytes = b""  # garbage ahead of the reply
    stutter: int = 0  # the first n bytes of the reply go out twice (a false start)
    inside: tuple[int, bytes] | None = None  # these bytes inserted at this offset
    truncate: int | None = None  # only the first n bytes of the reply go out
    after: bytes = b""  # garbage right behind the reply

    def apply(self, reply: bytes) -> bytes:
        frame = reply[: self.truncate] if self.truncate is not None else reply
        if self.inside is not None:
            at, junk = self.inside
            frame = frame[:at] + junk + frame[at:]
        return self.before + reply[: self.stutter] + frame + self.after


class SimModbusUnit(_PtyDevice):
    """Answers Modbus RTU function 3 (holding) and 4 (input) reads for one or more unit ids.

    `corrupt_crc` and `silent` hold unit ids that answer with a broken CRC or not
    at all; `set_register` changes what a detector reports; `inject` puts line
    noise on a unit's next replies and `write_noise` on the idle bus.
    """

    def __init__(self, link_path: str | None = None, units: Iterable[int] = (1,)) -> None:
        super().__init__(link_path)
        self.units = set(units)
        self.registers: dict[tuple[int, int, int], int] = {}
        self.corrupt_crc: set[int] = set()
        self.silent: set[int] = set()
        self.requests = 0
        self.bad_requests = 0
        self.faults_sent = 0
        self._faults: dict[int, deque[LineFault]] = {}
        self._rx = bytearray()

    def set_register(self, unit: int, address: int, value: int, function: str = "holding") -> None:
        self.registers[(unit, FUNCTION_CODES[function], address)] = value & 0xFFFF

    def inject(self, unit: int, fault: LineFault, times: int = 1) -> None:
        """Mangle `unit`'s next `times` replies with `fault` (queued after earlier ones)."""
        self._faults.setdefault(unit, deque()).extend([fault] * times)

    def clear_faults(self) -> None:
        self._faults.clear()

    def pending_faults(self, unit: int) -> int:
        return len(self._faults.get(unit, ()))

    def write_noise(self, data: bytes) -> None:
        """Bytes on the bus that answer nobody (a babbling node, a switching spike)."""
        self._write(data)

    def on_data(self, data: bytes) -> None:
        self._rx += data
        # Requests for functions 3/4 are exactly 8 bytes; anything else is noise to us.
        while len(self._rx) >= 8:
            frame = bytes(self._rx[:8])
            if crc16(frame[:6]) != int.from_bytes(frame[6:8], "little"):
                self.bad_requests += 1
                del self._rx[:1]  # hunt for the next frame start
                continue
            del self._rx[:8]
            self.requests += 1
            self._answer(frame)

    def _answer(self, frame: bytes) -> None:
        unit, fc = frame[0], frame[1]
        address = int.from_bytes(frame[2:4], "big")
        count = int.from_bytes(frame[4:6], "big")
        if unit not in self.units or unit in self.silent:
            return
        if fc not in (3, 4):
            body = bytes([unit, fc | 0x80, 1])
        else:
            values = [self.registers.get((unit, fc, address + i)) for i in range(count)]
            if any(v is None for v in values):
                body = bytes([unit, fc | 0x80, 2])  # illegal data address
            else:
                payload = b"".join(int(v or 0).to_bytes(2, "big") for v in values)
                body = bytes([unit, fc, len(payload)]) + payload
        crc = crc16(body)
        if unit in self.corrupt_crc:
            crc ^= 0x5A5A
        reply = body + crc.to_bytes(2, "little")
        queue = self._faults.get(unit)
        if queue:
            reply = queue.popleft().apply(reply)
            self.faults_sent += 1
        self._write(reply)


def nmea_sentence(body: str) -> bytes:
    """`GPGGA,...` -> `$GPGGA,...*hh\\r\\n` with its checksum."""
    checksum = 0
    for ch in body.encode("ascii"):
        checksum ^= ch
    return f"${body}*{checksum:02X}\r\n".encode("ascii")


def _nmea_coord(value: float, lat: bool) -> tuple[str, str]:
    hemi = ("N" if value >= 0 else "S") if lat else ("E" if value >= 0 else "W")
    value = abs(value)
    degrees = int(value)
    minutes = (value - degrees) * 60.0
    text = f"{degrees:02d}{minutes:07.4f}" if lat else f"{degrees:03d}{minutes:07.4f}"
    return text, hemi


class SimNmeaReceiver(_PtyDevice):
    """Writes GGA and RMC once per `interval`, like a GNSS module at 1 Hz."""

    def __init__(
        self,
        link_path: str | None = None,
        *,
        lat: float = 51.2562,
        lon: float = 7.1508,
        altitude: float = 152.3,
        satellites: int = 9,
        hdop: float = 0.9,
        quality: int = 1,
        talker: str = "GN",
        interval: float = 1.0,
        garbage_every: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(link_path)
        self.lat, self.lon, self.altitude = lat, lon, altitude
        self.satellites, self.hdop, self.quality = satellites, hdop, quality
        self.talker = talker
        self.interval = interval
        self.garbage_every = garbage_every
        self.clock = clock
        self.time_offset = 0.0  # seconds GNSS time runs ahead of `clock`
        self.sent = 0
        self._task: asyncio.Task[None] | None = None

    def sentences(self) -> bytes:
        now = dt.datetime.fromtimestamp(self.clock() + self.time_offset, dt.UTC)
        hms = now.strftime("%H%M%S.") + f"{now.microsecond // 10000:02d}"
        lat, ns = _nmea_coord(self.lat, lat=True)
        lon, ew = _nmea_coord(self.lon, lat=False)
        gga = (
            f"{self.talker}GGA,{hms},{lat},{ns},{lon},{ew},{self.quality},"
            f"{self.satellites:02d},{self.hdop:.1f},{self.altitude:.1f},M,47.0,M,,"
        )
        status = "A" if self.quality > 0 else "V"
        rmc = (
            f"{self.talker}RMC,{hms},{status},{lat},{ns},{lon},{ew},0.02,,"
            f"{now.strftime('%d%m%y')},,,A"
        )
        return nmea_sentence(gga) + nmea_sentence(rmc)

    def write_raw(self, data: bytes) -> None:
        self._write(data)

    async def _run(self) -> None:
        while True:
            if self.plugged:
                self.sent += 1
                if self.garbage_every and self.sent % self.garbage_every == 0:
                    self._write(b"\x00\xff~~line noise~~\xfe\r\n")
                self._write(self.sentences())
            await asyncio.sleep(self.interval)

    async def start(self) -> None:
        await super().start()
        self._task = asyncio.create_task(self._run(), name="sim-nmea")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.unplug()
