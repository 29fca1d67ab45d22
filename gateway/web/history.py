"""The page's pictures: a bounded in-memory history sampled by the daemon.

Every `interval` seconds the daemon hands in cumulative frame counts per
concentrator, the buffer's depth, each forwarder's lag and each gateway's downlink
airtime (duty cycle); the last hour is
kept (`keep` samples). Radio quality (RSSI/SNR per spreading factor) is a
sample of uplinks, at most `radio_per_s` a second, the last `radio_keep` kept,
so a busy gateway pays a bounded cost for it on the radio path.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Final

from gateway.records import Record

#: Series names kept at most (spoofed gateway EUIs must not grow the history).
MAX_SERIES: Final = 16
_SF = re.compile(r"SF(\d+)")


class History:
    def __init__(self, *, interval: float = 10.0, keep: int = 360, radio_keep: int = 600,
                 radio_per_s: float = 5.0, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self.monotonic = monotonic
        self._t: deque[float] = deque(maxlen=keep)
        self._frames: dict[str, deque[float | None]] = {}
        self._buffer: deque[float | None] = deque(maxlen=keep)
        self._lag: dict[str, deque[float | None]] = {}
        self._airtime: dict[str, deque[float | None]] = {}
        self._last_counts: dict[str, int] = {}
        self._last_t: float | None = None
        self._radio: deque[tuple[float, int, float, float]] = deque(maxlen=radio_keep)
        self._radio_gap = 1.0 / radio_per_s
        self._radio_next = 0.0
        self.keep = keep

    # ------------------------------------------------------------------ input

    def sample(self, frames: Mapping[str, int], buffer_records: int,
               lag_s: Mapping[str, float | None],
               airtime_pct: Mapping[str, float] | None = None) -> None:
        """One point: cumulative frames per concentrator, buffer depth, lag per forwarder,
        downlink airtime per gateway (% of its busiest band's allowance)."""
        now = self.clock()
        self._t.append(now)
        for table in (self._frames, self._lag, self._airtime):
            for series in table.values():
                series.append(None)  # every series gets one point per sample
        # The rate's interval by the monotonic clock: a wall clock stepped back would make it
        # negative (a spike of millions of frames/min), stepped forwards years long.
        mono = self.monotonic()
        minutes = None if self._last_t is None else max(1e-6, (mono - self._last_t) / 60)
        self._last_t = mono
        for eui, total in frames.items():
            before = self._last_counts.get(eui)
            frames_series = self._series(self._frames, eui)
            if frames_series is None:
                continue
            self._last_counts[eui] = total
            if before is not None and minutes is not None:
                frames_series[-1] = round(max(0, total - before) / minutes, 1)
        self._buffer.append(float(buffer_records))
        for name, lag in lag_s.items():
            lag_series = self._series(self._lag, name)
            if lag_series is not None and lag is not None:
                lag_series[-1] = round(float(lag), 1)
        for eui, pct in (airtime_pct or {}).items():
            air_series = self._series(self._airtime, eui)
            if air_series is not None:
                air_series[-1] = round(float(pct), 2)

    def _series(self, table: dict[str, deque[float | None]], name: str) -> deque[float | None] | None:
        series = table.get(name)
        if series is None:
            if len(table) >= MAX_SERIES:
                return None
            # a new series starts with gaps for the samples before it
            series = table[name] = deque([None] * len(self._t), maxlen=self.keep)
        return series

    def observe(self, record: Record) -> None:
        """An uplink on the radio path: sampled for the RSSI/SNR picture (cheap when skipped)."""
        if record.kind != "uplink":
            return
        now = self.monotonic()
        if now < self._radio_next:
            return
        self._radio_next = now + self._radio_gap
        body = record.decoded()
        rxpk = body.get("rxpk") if isinstance(body, dict) else None
        if not isinstance(rxpk, dict):
            return
        sf = _SF.match(str(rxpk.get("datr", "")))
        rssi, snr = rxpk.get("rssi"), rxpk.get("lsnr")
        if sf and isinstance(rssi, int | float) and isinstance(snr, int | float):
            self._radio.append((record.received_us / 1e6, int(sf.group(1)), float(rssi), float(snr)))

    # ------------------------------------------------------------------ output

    def view(self) -> dict[str, Any]:
        return {
            "interval_s": self.interval,
            "t": list(self._t),
            "frames_per_min": {k: list(v) for k, v in self._frames.items()},
            "buffer_records": list(self._buffer),
            "forwarder_lag_s": {k: list(v) for k, v in self._lag.items()},
            "airtime_pct": {k: list(v) for k, v in self._airtime.items()},
            "radio": [{"t": t, "sf": sf, "rssi": rssi, "snr": snr} for t, sf, rssi, snr in self._radio],
        }
