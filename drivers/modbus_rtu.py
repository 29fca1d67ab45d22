"""Modbus RTU framing: CRC-16, read-request encoding, reply decoding and one read transaction.

A reply is hunted through line noise and every failure becomes an `RtuError` whose
`kind` names the counter it lands in. It never keeps per-unit state or decides spot states.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from drivers.serial_link import SerialConnection

FUNCTION_CODES: Final[dict[str, int]] = {"holding": 3, "input": 4}

EXCEPTION_NAMES: Final[dict[int, str]] = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    6: "server device busy",
    11: "gateway target device failed to respond",
}


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
