"""Time-on-air and EU868 duty-cycle accounting for the gateway's own downlinks.

The Semtech packet forwarder transmits whatever it is told; this room decides
whether a transmission still fits the sub-band's share of the last hour. It
never sends anything itself and never reads configuration on its own.
"""

from __future__ import annotations

import base64
import binascii
import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

#: txpk_ack-style error names. TX_FREQ is the Semtech forwarder's own; the
#: duty-cycle one is ChirpStack's (gw.proto TxAckStatus) so an LNS that knows
#: concentratord understands it.
OK: Final = "NONE"
TX_FREQ: Final = "TX_FREQ"
DUTY_CYCLE_OVERFLOW: Final = "DUTY_CYCLE_OVERFLOW"
#: A txpk whose airtime cannot be computed (ours, as the GWMP server's other refusals).
BAD_TXPK: Final = "BAD_TXPK"

#: LoRa preamble of LoRaWAN (regional parameters) and FSK preamble/sync sizes
#: that lora_pkt_fwd uses when a txpk gives none.
LORA_PREAMBLE_SYMBOLS: Final = 8
FSK_PREAMBLE_BYTES: Final = 5
FSK_SYNC_WORD_BYTES: Final = 3


class AirtimeError(ValueError):
    """A txpk (or datr/codr string) from which no time on air can be computed."""


# --------------------------------------------------------------------------- time on air


def parse_datr(datr: str) -> tuple[int, int]:
    """``"SF7BW125"`` -> ``(7, 125_000)``. Raises AirtimeError naming the bad text."""
    text = datr.strip().upper()
    if not text.startswith("SF") or "BW" not in text:
        raise AirtimeError(f"datr {datr!r} is not a LoRa data rate like 'SF7BW125'")
    sf_text, _, bw_text = text[2:].partition("BW")
    try:
        sf = int(sf_text)
        bw_khz = float(bw_text)
    except ValueError:
        raise AirtimeError(
            f"datr {datr!r}: spreading factor and bandwidth must be numbers"
        ) from None
    if not 5 <= sf <= 12:
        raise AirtimeError(f"datr {datr!r}: spreading factor {sf} outside SF5..SF12")
    if bw_khz not in (7.8, 10.4, 15.6, 20.8, 31.25, 41.7, 62.5, 125.0, 250.0, 500.0, 812.5, 1625.0):
        raise AirtimeError(f"datr {datr!r}: bandwidth {bw_text} kHz is not a LoRa bandwidth")
    return sf, round(bw_khz * 1000)


#: The HAL also accepts the reduced-fraction spellings of 4/6 and 4/8.
_CODR: Final[dict[str, int]] = {"4/5": 1, "4/6": 2, "2/3": 2, "4/7": 3, "4/8": 4, "1/2": 4}


def parse_codr(codr: str) -> int:
    """``"4/5"`` -> 1 ... ``"4/8"`` -> 4 (the CR in the Semtech formula)."""
    try:
        return _CODR[codr.strip()]
    except KeyError:
        raise AirtimeError(
            f"codr {codr!r} is not a LoRa coding rate (4/5, 4/6, 4/7, 4/8)"
        ) from None


def lora_time_on_air(
    payload_len: int,
    sf: int,
    bw_hz: int,
    cr: int = 1,
    *,
    preamble: int = LORA_PREAMBLE_SYMBOLS,
    explicit_header: bool = True,
    crc: bool = True,
    low_data_rate: bool | None = None,
) -> float:
    """Seconds on air of one LoRa frame (Semtech AN1200.13 / SX127x datasheet formula).

    ``low_data_rate`` defaults to what the SX1301/2 HAL does: on for SF11 and
    SF12 at 125 kHz, where a symbol lasts longer than 16 ms.
    """
    if payload_len < 0 or payload_len > 255:
        raise AirtimeError(f"payload length {payload_len} outside 0..255 bytes")
    if not 1 <= cr <= 4:
        raise AirtimeError(f"coding rate index {cr} outside 1..4 (4/5..4/8)")
    if low_data_rate is None:
        low_data_rate = bw_hz == 125_000 and sf >= 11
    t_sym = (1 << sf) / bw_hz
    de = 1 if low_data_rate else 0
    ih = 0 if explicit_header else 1
    numerator = 8 * payload_len - 4 * sf + 28 + (16 if crc else 0) - 20 * ih
    symbols = 8 + max(math.ceil(numerator / (4 * (sf - 2 * de))) * (cr + 4), 0)
    return (preamble + 4.25) * t_sym + symbols * t_sym


def fsk_time_on_air(
    payload_len: int,
    bitrate: float,
    *,
    preamble_bytes: int = FSK_PREAMBLE_BYTES,
    sync_word_bytes: int = FSK_SYNC_WORD_BYTES,
    crc: bool = True,
) -> float:
    """Seconds on air of one FSK frame: preamble, sync word, length byte, payload, CRC-16."""
    if bitrate <= 0:
        raise AirtimeError(f"FSK bit rate {bitrate} must be positive")
    total = preamble_bytes + sync_word_bytes + 1 + payload_len + (2 if crc else 0)
    return 8 * total / bitrate


def _txpk_size(txpk: Mapping[str, Any]) -> int:
    size = txpk.get("size")
    if isinstance(size, int) and not isinstance(size, bool):
        return size
    data = txpk.get("data")
    if isinstance(data, str):
        try:
            return len(base64.b64decode(data + "=" * (-len(data) % 4), validate=False))
        except (binascii.Error, ValueError):
            raise AirtimeError("txpk 'data' is not base64 and no 'size' is given") from None
    raise AirtimeError("txpk has neither an integer 'size' nor base64 'data'")


def txpk_time_on_air(txpk: Mapping[str, Any]) -> float:
    """Seconds on air of a GWMP ``txpk``, with the packet forwarder's own defaults.

    CRC counts unless ``ncrc`` is true (the forwarder's default; also the longer,
    safer estimate), the header is explicit unless ``nhdr`` is true.
    """
    modu = str(txpk.get("modu", "LORA")).upper()
    size = _txpk_size(txpk)
    crc = not bool(txpk.get("ncrc", False))
    prea = txpk.get("prea")
    if modu == "LORA":
        datr = txpk.get("datr")
        if not isinstance(datr, str):
            raise AirtimeError("LoRa txpk needs 'datr' as a string like 'SF9BW125'")
        sf, bw = parse_datr(datr)
        codr = txpk.get("codr", "4/5")
        cr = parse_codr(codr if isinstance(codr, str) else "")
        return lora_time_on_air(
            size,
            sf,
            bw,
            cr,
            preamble=int(prea) if isinstance(prea, int) else LORA_PREAMBLE_SYMBOLS,
            explicit_header=not bool(txpk.get("nhdr", False)),
            crc=crc,
        )
    if modu == "FSK":
        datr = txpk.get("datr")
        if not isinstance(datr, (int, float)) or isinstance(datr, bool):
            raise AirtimeError("FSK txpk needs 'datr' as a bit rate number")
        return fsk_time_on_air(
            size,
            float(datr),
            preamble_bytes=int(prea) if isinstance(prea, int) else FSK_PREAMBLE_BYTES,
            crc=crc,
        )
    raise AirtimeError(f"txpk modulation {modu!r} is neither LORA nor FSK")


def txpk_bandwidth_hz(txpk: Mapping[str, Any]) -> int:
    """Occupied bandwidth of a txpk (LoRa from datr; FSK ~ 2 x fdev + bit rate, Carson)."""
    if str(txpk.get("modu", "LORA")).upper() == "LORA":
        datr = txpk.get("datr")
        return parse_datr(datr)[1] if isinstance(datr, str) else 0
    fdev = txpk.get("fdev", 0)
    datr = txpk.get("datr", 0)
    if isinstance(fdev, (int, float)) and isinstance(datr, (int, float)):
        return int(2 * fdev + datr)
    return 0


# --------------------------------------------------------------------------- duty cycle


@dataclass(frozen=True, slots=True)
class Band:
    """A regulatory sub-band: ``lo_hz <= f < hi_hz`` may transmit ``duty`` of the window."""

    lo_hz: int
    hi_hz: int
    duty: float

    def __post_init__(self) -> None:
        if not self.lo_hz < self.hi_hz:
            raise ValueError(
                f"band {self.lo_hz}-{self.hi_hz} Hz: lower edge must be below upper edge"
            )
        if not 0.0 < self.duty <= 1.0:
            raise ValueError(f"band {self.lo_hz}-{self.hi_hz} Hz: duty {self.duty} outside (0, 1]")

    def label(self) -> str:
        return f"{self.lo_hz / 1e6:.3f}-{self.hi_hz / 1e6:.3f} MHz"


#: EU868 sub-bands as in Semtech LoRaMac-node RegionEU868 (ETSI EN 300 220).
#: Data, not policy: configuration may pass another table.
EU868_BANDS: Final[tuple[Band, ...]] = (
    Band(863_000_000, 865_000_000, 0.001),
    Band(865_000_000, 868_000_000, 0.01),
    Band(868_000_000, 868_600_000, 0.01),
    Band(868_700_000, 869_200_000, 0.001),
    Band(869_400_000, 869_650_000, 0.10),
    Band(869_700_000, 870_000_000, 0.01),
)


def eu868_bands() -> tuple[Band, ...]:
    """The default EU868 table (a function so callers never share a mutable default)."""
    return EU868_BANDS


@dataclass(frozen=True, slots=True)
class Verdict:
    """Answer of :meth:`DutyCycleLimiter.check`: ``error`` is ``"NONE"`` when allowed."""

    error: str
    detail: str = ""
    band: Band | None = None
    wait_s: float = 0.0  # how long until the same transmission would fit

    @property
    def ok(self) -> bool:
        return self.error == OK


@dataclass(slots=True)
class _Usage:
    band: Band
    entries: deque[tuple[float, float]] = field(default_factory=deque)  # (start, airtime)
    used_s: float = 0.0


class DutyCycleLimiter:
    """Airtime per sub-band over a sliding window (an hour by default).

    ``check`` only looks; ``record`` books a transmission; ``acquire`` does both
    at once so two concurrent downlinks cannot both squeeze into the last slot.
    """

    def __init__(
        self,
        bands: Sequence[Band] = EU868_BANDS,
        window: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window <= 0:
            raise ValueError(f"duty-cycle window {window} s must be positive")
        self._usage = [_Usage(b) for b in bands]
        self._window = window
        self._clock = clock

    @property
    def window(self) -> float:
        return self._window

    def _find(self, freq_hz: float, bandwidth_hz: float) -> _Usage | None:
        # The whole channel must sit inside one band: a 125 kHz channel centred
        # on a band edge would leak into the neighbour's allowance.
        half = bandwidth_hz / 2
        for u in self._usage:
            lo, hi = u.band.lo_hz, u.band.hi_hz
            if lo <= freq_hz - half and freq_hz + half <= hi and freq_hz < hi:
                return u
        return None

    def _expire(self, u: _Usage, now: float) -> None:
        horizon = now - self._window
        while u.entries and u.entries[0][0] <= horizon:
            _, airtime = u.entries.popleft()
            u.used_s -= airtime
        if not u.entries:
            u.used_s = 0.0  # drop accumulated float error when idle

    def check(self, freq_hz: float, airtime_s: float, bandwidth_hz: float = 0.0) -> Verdict:
        """Would a transmission of ``airtime_s`` at ``freq_hz`` stay within its band's limit?"""
        u = self._find(freq_hz, bandwidth_hz)
        if u is None:
            return Verdict(
                TX_FREQ,
                f"{freq_hz / 1e6:.4f} MHz (bandwidth {bandwidth_hz / 1e3:g} kHz) lies in no "
                "configured duty-cycle sub-band; use a channel of the regional plan",
            )
        now = self._clock()
        self._expire(u, now)
        allowance = u.band.duty * self._window
        if u.used_s + airtime_s <= allowance + 1e-9:
            return Verdict(OK, band=u.band)
        # Earliest time enough old transmissions have left the window.
        need = u.used_s + airtime_s - allowance
        freed = 0.0
        wait = self._window
        for start, air in u.entries:
            freed += air
            if freed >= need - 1e-9:
                wait = start + self._window - now
                break
        return Verdict(
            DUTY_CYCLE_OVERFLOW,
            f"sub-band {u.band.label()} ({u.band.duty:.1%}): {u.used_s:.3f} s used of "
            f"{allowance:.3f} s in the last {self._window:g} s, {airtime_s:.3f} s more would "
            f"exceed it; retry in {max(wait, 0.0):.1f} s or use another sub-band",
            band=u.band,
            wait_s=max(wait, 0.0),
        )

    def record(self, freq_hz: float, airtime_s: float, bandwidth_hz: float = 0.0) -> None:
        """Book a transmission that happened (or is about to) on ``freq_hz``."""
        u = self._find(freq_hz, bandwidth_hz)
        if u is None:
            return
        now = self._clock()
        self._expire(u, now)
        u.entries.append((now, airtime_s))
        u.used_s += airtime_s

    def acquire(self, freq_hz: float, airtime_s: float, bandwidth_hz: float = 0.0) -> Verdict:
        """Check and, when allowed, record in one step."""
        verdict = self.check(freq_hz, airtime_s, bandwidth_hz)
        if verdict.ok:
            self.record(freq_hz, airtime_s, bandwidth_hz)
        return verdict

    def release(self, freq_hz: float, airtime_s: float, bandwidth_hz: float = 0.0) -> None:
        """Give back the most recent booking of ``airtime_s`` (the radio did not send it)."""
        u = self._find(freq_hz, bandwidth_hz)
        if u is None:
            return
        for i in range(len(u.entries) - 1, -1, -1):
            if u.entries[i][1] == airtime_s:
                del u.entries[i]
                u.used_s = max(u.used_s - airtime_s, 0.0)
                return

    def usage(self) -> list[dict[str, Any]]:
        """Per band: edges, limit and airtime used in the current window (for health pages)."""
        now = self._clock()
        out: list[dict[str, Any]] = []
        for u in self._usage:
            self._expire(u, now)
            out.append(
                {
                    "band": u.band.label(),
                    "duty": u.band.duty,
                    "used_s": round(u.used_s, 6),
                    "allowance_s": u.band.duty * self._window,
                    "transmissions": len(u.entries),
                }
            )
        return out


class GatewayDutyCycles:
    """One :class:`DutyCycleLimiter` per gateway EUI, made on first use, all alike.

    The duty-cycle limit binds each radio: two packet forwarders behind one
    server (or one concentratord next to them) each have their own hour's budget.
    """

    def __init__(
        self,
        bands: Sequence[Band] = EU868_BANDS,
        window: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window <= 0:  # here, not at the first downlink
            raise ValueError(f"duty-cycle window {window} s must be positive")
        self._bands = tuple(bands)
        self._window = window
        self._clock = clock
        self._limiters: dict[int, DutyCycleLimiter] = {}

    def for_gateway(self, gateway_eui: int) -> DutyCycleLimiter:
        limiter = self._limiters.get(gateway_eui)
        if limiter is None:
            limiter = DutyCycleLimiter(self._bands, self._window, self._clock)
            self._limiters[gateway_eui] = limiter
        return limiter

    def book(self, gateway_eui: int, freq_hz: int, txpk: Mapping[str, Any]) -> Booking:
        """Book a txpk's airtime on that gateway's budget, or raise :class:`DutyCycleRefused`
        (BAD_TXPK, TX_FREQ, DUTY_CYCLE_OVERFLOW) with a detail for the operator."""
        try:
            airtime, bandwidth = txpk_time_on_air(txpk), txpk_bandwidth_hz(txpk)
        except AirtimeError as exc:
            raise DutyCycleRefused(BAD_TXPK, f"txpk: {exc}") from exc
        limiter = self.for_gateway(gateway_eui)
        verdict = limiter.acquire(freq_hz, airtime, bandwidth)
        if not verdict.ok:
            raise DutyCycleRefused(verdict.error, f"gateway {gateway_eui:016x}: {verdict.detail}")
        return Booking(limiter, freq_hz, airtime, bandwidth)

    def usage(self) -> dict[str, list[dict[str, Any]]]:
        """Per gateway EUI (16 hex digits): its per-band usage, as :meth:`DutyCycleLimiter.usage`."""
        return {f"{eui:016x}": lim.usage() for eui, lim in sorted(self._limiters.items())}


@dataclass(frozen=True, slots=True)
class Booking:
    """Airtime booked for one downlink; ``release`` gives it back when the radio refused it."""

    limiter: DutyCycleLimiter
    freq_hz: int
    airtime_s: float
    bandwidth_hz: float

    def release(self) -> None:
        self.limiter.release(self.freq_hz, self.airtime_s, self.bandwidth_hz)


class DutyCycleRefused(Exception):
    """A downlink the duty-cycle check turned down: ``error`` is its TX_ACK-style name."""

    def __init__(self, error: str, detail: str) -> None:
        super().__init__(detail)
        self.error = error
        self.detail = detail
