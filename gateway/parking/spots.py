"""Spot state: what each parking spot is (free, occupied, unknown, closed), since when, and how fresh.

Sensors (radio or wired) report into it; the status page, API and forwarders only read it.
It never decodes a frame and never touches a file: its owner persists the state it exports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal, cast

from gateway.clocksteps import Step
from gateway.records import iso_us as iso_us  # spots and their records share one format

Status = Literal["free", "occupied", "unknown", "closed"]
STATUSES: Final[tuple[str, ...]] = ("free", "occupied", "unknown", "closed")
STATE_VERSION: Final = 1


WIRED_PREFIX = "modbus:"  # device of a spot fed by an RS-485 detector (drivers.modbus)


@dataclass(slots=True)
class Spot:
    spot_id: str
    status: str = "unknown"
    changed_us: int | None = None  # when status last changed; None: never heard
    heartbeat_us: int | None = None  # last report of any kind from its sensor
    device: str | None = None  # DevEUI hex or "modbus:<unit>"
    battery: float | None = None
    battery_unit: str | None = None
    rssi: float | None = None
    snr: float | None = None
    category: str | None = None
    reported: str | None = None  # what the sensor last said (kept while the spot is closed)

    def view(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "changed_at": None if self.changed_us is None else iso_us(self.changed_us),
            "last_heartbeat": None if self.heartbeat_us is None else iso_us(self.heartbeat_us),
            "device": self.device,
            "battery": self.battery,
            "battery_unit": self.battery_unit,
            "rssi": self.rssi,
            "snr": self.snr,
            "category": self.category,
        }

    def to_state(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "changed_us": self.changed_us,
            "heartbeat_us": self.heartbeat_us,
            "device": self.device,
            "battery": self.battery,
            "battery_unit": self.battery_unit,
            "rssi": self.rssi,
            "snr": self.snr,
            "category": self.category,
            "reported": self.reported,
        }


class SpotTable:
    """All known spots. ``report`` and ``sweep`` say whether a parking record is due."""

    def __init__(self) -> None:
        self.spots: dict[str, Spot] = {}
        self.dirty = False
        # Spots an operator closed (config): their sensors still report (heartbeat, battery),
        # but the status stays ``closed`` until the closure is lifted.
        self.closed: frozenset[str] = frozenset()

    def ensure(self, spot_id: str, *, category: str | None = None) -> Spot:
        spot = self.spots.get(spot_id)
        if spot is None:
            spot = self.spots[spot_id] = Spot(spot_id, category=category)
            self.dirty = True
        elif category is not None and spot.category != category:
            spot.category = category
            self.dirty = True
        return spot

    def report(
        self,
        spot_id: str,
        status: str | None,
        observed_us: int,
        *,
        device: str,
        battery: float | None = None,
        battery_unit: str | None = None,
        rssi: float | None = None,
        snr: float | None = None,
    ) -> bool:
        """Apply one sensor report; True when the status changed.

        ``status`` None is a heartbeat: the sensor is alive but said nothing about the spot.
        Battery and signal keep their last known value when a report lacks them.
        """
        if status is not None and status not in STATUSES:
            raise ValueError(
                f"spot {spot_id}: status {status!r} is not one of {', '.join(STATUSES)}"
            )
        spot = self.spots.get(spot_id)
        if spot is None:
            spot = self.ensure(spot_id)
        self.dirty = True
        spot.heartbeat_us = observed_us
        spot.device = device
        if battery is not None:
            spot.battery, spot.battery_unit = battery, battery_unit
        if rssi is not None:
            spot.rssi = rssi
        if snr is not None:
            spot.snr = snr
        if status is not None:
            spot.reported = status
        if spot_id in self.closed or status is None or status == spot.status:
            return False
        spot.status = status
        spot.changed_us = observed_us
        return True

    def sweep(self, now_us: int, timeout_us: int) -> list[Spot]:
        """Spots whose sensor has been silent longer than ``timeout_us`` become ``unknown``.

        Closed spots stay closed (a closure is an operator's fact, not a sensor's), and a spot
        never heard from has no heartbeat to miss. Wired detectors (device ``modbus:<unit>``)
        are left alone: they are polled, report only changes, and their driver marks a unit
        that stops answering ``unknown`` itself (``sources.modbus.unknown_after``); a bay
        that stays occupied all night is not a silent sensor.
        """
        expired: list[Spot] = []
        limit = now_us - timeout_us
        for spot in self.spots.values():
            if (
                spot.heartbeat_us is not None
                and spot.heartbeat_us < limit
                and spot.status not in ("unknown", "closed")
                and not (spot.device or "").startswith(WIRED_PREFIX)
            ):
                spot.status = "unknown"
                spot.changed_us = now_us
                expired.append(spot)
        if expired:
            self.dirty = True
        return expired

    def restamp(self, step: Step, run_from_us: int) -> int:
        """The wall clock stepped: move the times this process took before the step (from
        ``run_from_us`` on, old scale, outside the step's new-scale window); times loaded from
        an earlier run keep theirs. Returns how many spots changed."""
        old_end = step.hi_us - step.delta_us  # the old scale ends where the new one starts
        n = 0
        for spot in self.spots.values():
            before = (spot.heartbeat_us, spot.changed_us)
            if spot.heartbeat_us is not None and run_from_us <= spot.heartbeat_us <= old_end:
                spot.heartbeat_us = step.apply(spot.heartbeat_us)
            if spot.changed_us is not None and run_from_us <= spot.changed_us <= old_end:
                spot.changed_us = step.apply(spot.changed_us)
            if (spot.heartbeat_us, spot.changed_us) != before:
                n += 1
        if n:
            self.dirty = True
        return n

    def set_closures(self, closed: frozenset[str], now_us: int) -> list[Spot]:
        """Apply an operator's closures: listed spots become ``closed``; spots no longer listed
        return to what their sensor last said (``unknown`` if it never said). Returns the
        spots whose status changed."""
        self.closed = closed
        changed: list[Spot] = []
        for sid in closed:
            spot = self.ensure(sid)
            if spot.status != "closed":
                spot.status, spot.changed_us = "closed", now_us
                changed.append(spot)
        for spot in self.spots.values():
            if spot.status == "closed" and spot.spot_id not in closed:
                spot.status, spot.changed_us = spot.reported or "unknown", now_us
                changed.append(spot)
        if changed:
            self.dirty = True
        return changed

    def view(self) -> dict[str, dict[str, Any]]:
        return {sid: spot.view() for sid, spot in self.spots.items()}

    def to_state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "spots": {sid: spot.to_state() for sid, spot in self.spots.items()},
        }

    def load_state(self, state: Any) -> list[str]:
        """Restore :meth:`to_state` output; one note per spot entry ignored.

        Raises ValueError when the document as a whole is unusable.
        """
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise ValueError(f"not a version {STATE_VERSION} spot state document")
        entries = state.get("spots")
        if not isinstance(entries, dict):
            raise ValueError("spot state has no 'spots' object")
        notes: list[str] = []
        for sid, entry in entries.items():
            try:
                self.spots[sid] = _spot_from_state(sid, entry, self.spots.get(sid))
            except (TypeError, ValueError) as exc:
                notes.append(f"spot {sid}: {exc}")
        return notes


def _opt(entry: dict[str, Any], key: str, kinds: type | tuple[type, ...]) -> Any:
    value = entry.get(key)
    if value is not None and (not isinstance(value, kinds) or isinstance(value, bool)):
        raise ValueError(f"{key} has the wrong type ({type(value).__name__})")
    return value


def _spot_from_state(sid: str, entry: Any, current: Spot | None) -> Spot:
    if not isinstance(entry, dict):
        raise ValueError("entry is not an object")
    status = entry.get("status")
    if status not in STATUSES:
        raise ValueError(f"status {status!r} is not one of {', '.join(STATUSES)}")
    num = (int, float)
    return Spot(
        sid,
        status=status,
        changed_us=_opt(entry, "changed_us", int),
        heartbeat_us=_opt(entry, "heartbeat_us", int),
        device=_opt(entry, "device", str),
        battery=_opt(entry, "battery", num),
        battery_unit=_opt(entry, "battery_unit", str),
        rssi=_opt(entry, "rssi", num),
        snr=_opt(entry, "snr", num),
        # The config's category is current; the saved one only fills in for wired spots.
        category=current.category if current is not None else _opt(entry, "category", str),
        reported=_reported(entry),
    )


def _reported(entry: dict[str, Any]) -> str | None:
    value = _opt(entry, "reported", str)
    if value is not None and value not in STATUSES:
        raise ValueError(f"reported {value!r} is not one of {', '.join(STATUSES)}")
    return cast("str | None", value)
