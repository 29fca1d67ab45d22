"""GNSS receiver over serial: NMEA 0183 GGA and RMC into a position, fix quality and clock offset.

Feeds the status page and `stat`-like health (`GnssReader.stat()`: lati/long/alti
in the Semtech packet forwarder's vocabulary). Every line is checksum-validated
and length-bounded; noise is counted and skipped, never fatal.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from drivers.serial_link import Backoff, SerialLink

log = logging.getLogger(__name__)

#: NMEA 0183 caps a sentence at 82 characters including `$` and CR LF.
MAX_SENTENCE: Final = 80


class NmeaError(ValueError):
    """A line that is not a usable sentence; `kind` is the counter, `offset` the byte index."""

    def __init__(self, kind: str, offset: int, message: str) -> None:
        super().__init__(f"{message} (at byte {offset})")
        self.kind = kind
        self.offset = offset


def parse_sentence(line: bytes) -> tuple[str, str, list[str]]:
    """Validate one line (without CR LF) and return (talker, type, fields)."""
    if not line.startswith(b"$"):
        raise NmeaError("garbage", 0, "line does not start with '$'")
    star = line.rfind(b"*")
    if star < 0 or len(line) - star != 3:
        raise NmeaError("garbage", max(star, 0), "no '*hh' checksum at the end of the line")
    try:
        text = line[1:star].decode("ascii")
        expected = int(line[star + 1 :], 16)
    except (UnicodeDecodeError, ValueError):
        raise NmeaError("garbage", 1, "non-ASCII bytes or a non-hex checksum") from None
    computed = 0
    for b in line[1:star]:
        computed ^= b
    if computed != expected:
        raise NmeaError(
            "checksum_errors",
            star + 1,
            f"checksum {expected:02X} does not match computed {computed:02X}",
        )
    fields = text.split(",")
    address = fields[0]
    if len(address) != 5 or not address.isalnum():
        raise NmeaError("garbage", 1, f"bad address field {address!r}")
    return address[:2], address[2:], fields[1:]


def _coord(value: str, hemi: str, degree_digits: int, where: str) -> float | None:
    if not value:
        return None
    try:
        degrees = int(value[:degree_digits])
        minutes = float(value[degree_digits:])
    except ValueError:
        raise NmeaError("garbage", 0, f"bad {where} {value!r}") from None
    out = degrees + minutes / 60.0
    if hemi in ("S", "W"):
        out = -out
    elif hemi not in ("N", "E"):
        raise NmeaError("garbage", 0, f"bad {where} hemisphere {hemi!r}")
    return out


def _time_of_day(value: str) -> dt.time | None:
    if len(value) < 6:
        return None
    try:
        frac = float(value[6:]) if len(value) > 6 else 0.0
        return dt.time(
            int(value[0:2]), int(value[2:4]), int(value[4:6]), min(999_999, round(frac * 1e6))
        )
    except ValueError:
        raise NmeaError("garbage", 0, f"bad UTC time {value!r}") from None


def _num(value: str, cast: Callable[[str], Any], where: str) -> Any:
    if not value:
        return None
    try:
        return cast(value)
    except ValueError:
        raise NmeaError("garbage", 0, f"bad {where} {value!r}") from None


@dataclass(frozen=True, slots=True)
class GnssFix:
    lat: float | None = None
    lon: float | None = None
    altitude: float | None = None  # metres above mean sea level (GGA)
    fix_quality: int = 0  # GGA: 0 none, 1 GPS, 2 DGPS, 4 RTK fixed, 5 RTK float, 6 dead reckoning
    valid: bool = False  # RMC status A
    satellites: int | None = None
    hdop: float | None = None
    utc: dt.datetime | None = None  # GNSS time of the latest RMC (has the date)
    time_offset: float | None = None  # GNSS UTC minus the system clock, seconds
    talker: str | None = None
    observed_at: float | None = None  # system clock when the sentence arrived

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["utc"] = self.utc.isoformat() if self.utc else None
        return out

    def as_stat(self) -> dict[str, Any] | None:
        """The fix in the Semtech packet forwarder's `stat` vocabulary, or None without a fix.

        `lati`/`long` in degrees with 5 decimals and `alti` in whole metres, as
        lora_pkt_fwd prints them; `time` as its `"2014-01-12 08:59:28 GMT"`. Our
        `time` is the GNSS time the fix describes (the system clock at reception
        when no RMC date came yet), so a wrong system clock cannot hide in it;
        `time_offset` says how far the system clock is off.
        """
        if self.fix_quality <= 0 or self.lat is None or self.lon is None:
            return None
        when = self.utc
        if when is None and self.observed_at is not None:
            when = dt.datetime.fromtimestamp(self.observed_at, dt.UTC)
        out: dict[str, Any] = {}
        if when is not None:
            out["time"] = when.strftime("%Y-%m-%d %H:%M:%S GMT")
        out["lati"] = round(self.lat, 5)
        out["long"] = round(self.lon, 5)
        if self.altitude is not None:
            out["alti"] = round(self.altitude)
        out["fix_quality"] = self.fix_quality
        out["satellites"] = self.satellites
        out["hdop"] = self.hdop
        out["time_offset"] = self.time_offset
        return out


class GnssReader:
    """Reads NMEA lines from `port` and keeps the latest fix; calls `on_fix` after GGA/RMC."""

    def __init__(
        self,
        port: str,
        baudrate: int,
        on_fix: Callable[[GnssFix], None] | None,
        clock: Callable[[], float] = time.time,
        *,
        link: SerialLink | None = None,
        backoff: Backoff | None = None,
        max_sentence: int = MAX_SENTENCE,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.on_fix = on_fix
        self.clock = clock
        # How long ago the receiver last spoke is a duration: a wall clock set back (say, by
        # this very receiver's time reaching NTP) must not keep an old position "current".
        self.monotonic = monotonic
        self._heard: float | None = None
        self.link = link or SerialLink(port, baudrate, backoff=backoff, name="gnss")
        self.max_sentence = max_sentence
        self.fix = GnssFix()
        self.counters = dict.fromkeys(
            ("sentences", "gga", "rmc", "ignored", "checksum_errors", "garbage", "overlong"), 0
        )
        self.last_error: str | None = None
        self.callback_errors = 0
        self._line = bytearray()
        self._skipping = False

    def feed(self, data: bytes) -> None:
        """Split raw bytes into lines, bounded; handle each complete one."""
        for chunk in data.splitlines(keepends=True):
            ended = chunk.endswith((b"\n", b"\r"))
            body = chunk.rstrip(b"\r\n")
            if not self._skipping:
                self._line += body
                if len(self._line) > self.max_sentence:
                    # Overlong: drop it and everything up to the next line end, so a
                    # receiver babbling without newlines cannot grow memory.
                    self.counters["overlong"] += 1
                    self.last_error = f"line longer than {self.max_sentence} bytes dropped"
                    self._line.clear()
                    self._skipping = True
            if ended:
                if not self._skipping and self._line:
                    self.handle_line(bytes(self._line))
                self._line.clear()
                self._skipping = False

    def handle_line(self, line: bytes) -> None:
        try:
            talker, kind, fields = parse_sentence(line)
            if kind == "GGA":
                self._gga(talker, fields)
            elif kind == "RMC":
                self._rmc(talker, fields)
            else:
                self.counters["ignored"] += 1
                return
        except NmeaError as exc:
            self.counters[exc.kind] += 1
            self.last_error = f"{self.link.port}: {exc}: {line[:40]!r}"
            log.debug("gnss %s", self.last_error)
            return
        self.counters["sentences"] += 1
        self.link.mark_healthy()
        if self.on_fix is not None:
            try:
                self.on_fix(self.fix)
            except Exception:
                self.callback_errors += 1
                log.exception("gnss: on_fix failed")

    def _gga(self, talker: str, f: list[str]) -> None:
        if len(f) < 9:
            raise NmeaError("garbage", 0, f"GGA with {len(f)} fields, need at least 9")
        _time_of_day(f[0])
        quality = _num(f[5], int, "GGA fix quality") or 0
        self.fix = dataclasses.replace(
            self.fix,
            lat=_coord(f[1], f[2], 2, "latitude") if quality else None,
            lon=_coord(f[3], f[4], 3, "longitude") if quality else None,
            altitude=_num(f[8], float, "altitude") if quality else None,
            fix_quality=quality,
            satellites=_num(f[6], int, "satellite count"),
            hdop=_num(f[7], float, "HDOP"),
            talker=talker,
            observed_at=self.clock(),
        )
        self._heard = self.monotonic()
        self.counters["gga"] += 1

    def _rmc(self, talker: str, f: list[str]) -> None:
        if len(f) < 9:
            raise NmeaError("garbage", 0, f"RMC with {len(f)} fields, need at least 9")
        now = self.clock()
        tod = _time_of_day(f[0])
        valid = f[1] == "A"
        utc = None
        if tod is not None and len(f[8]) == 6:
            try:
                day, month, yy = int(f[8][0:2]), int(f[8][2:4]), int(f[8][4:6])
                # Two-digit year: NMEA receivers in service today report 20xx.
                date = dt.date(2000 + yy, month, day)
            except ValueError:
                raise NmeaError("garbage", 0, f"bad RMC date {f[8]!r}") from None
            utc = dt.datetime.combine(date, tod, dt.UTC)
        changes: dict[str, Any] = {"valid": valid, "talker": talker, "observed_at": now}
        if valid:
            changes["lat"] = _coord(f[2], f[3], 2, "latitude")
            changes["lon"] = _coord(f[4], f[5], 3, "longitude")
        if utc is not None and valid:
            # Sentences leave the receiver some 10-500 ms after the second they
            # describe, so this offset is coarse: good to spot a wrong system clock.
            changes["utc"] = utc
            changes["time_offset"] = round(utc.timestamp() - now, 3)
        self.fix = dataclasses.replace(self.fix, **changes)
        self._heard = self.monotonic()
        self.counters["rmc"] += 1

    def stat(self, max_age: float | None = 10.0) -> dict[str, Any] | None:
        """`stat`-like health of the latest fix: `{"time", "lati", "long", "alti",
        "fix_quality", "satellites", "hdop", "time_offset"}`, or None when there is no
        valid fix or the last GGA/RMC is older than `max_age` seconds (receiver gone quiet).
        """
        fix = self.fix
        if max_age is not None and (
            self._heard is None or self.monotonic() - self._heard > max_age
        ):
            return None
        return fix.as_stat()

    async def run(self) -> None:
        while True:
            async with self.link.session() as conn:
                self._line.clear()
                self._skipping = True  # the first partial line after (re)open is unusable
                while True:
                    self.feed(await conn.read())

    def health(self) -> dict[str, Any]:
        return {
            "kind": "gnss",
            **self.link.health(),
            **self.counters,
            "last_error": self.last_error or self.link.last_error,
            "callback_errors": self.callback_errors,
            "fix": self.fix.as_dict(),
        }
