"""Nwave decoders: NPS310 and NPS405 parking sensors, NCC405 car counter.

Port map shared by the family: 1 status (or counter), 2 heartbeat, 3 startup,
6 debug, 10 tag registration (NPS405). Unknown ports give empty data, as upstream.
"""

from __future__ import annotations

from typing import Final

from gateway.parking import Decoded, int32, js_number, version_text

# Index = reset cause byte; None entries are causes the codec leaves undefined.
_RESET_NPS310: Final = (None, "watchdog", "power_on", "user_request", "brownout", "other")
_RESET_G4: Final = (
    "rejoining_lorawan_network",
    "watchdog",
    "power_on",
    "user_request",
    None,
    None,
    "brownout",
    "other",
)


def _byte(payload: bytes, index: int) -> int:
    """A byte where JS bitwise operators see a missing one as 0."""
    return payload[index] if index < len(payload) else 0


def _reset_cause(data: dict[str, object], table: tuple[str | None, ...], payload: bytes) -> None:
    code = payload[3] if len(payload) > 3 else None
    if code is not None and code < len(table) and table[code] is not None:
        data["reset_cause"] = table[code]


def _startup(payload: bytes, table: tuple[str | None, ...], with_occupancy: bool) -> Decoded:
    data: dict[str, object] = {"type": "startup", "firmware_version": version_text(payload, 0)}
    _reset_cause(data, table, payload)
    if with_occupancy:
        data["occupied"] = bool(_byte(payload, 4) & 1)
    return {"data": data}


def _debug(payload: bytes) -> Decoded:
    return {"data": {"type": "debug", "bytes": list(payload)}}


def decode_nps310sm(fport: int, payload: bytes) -> Decoded:
    if fport == 1:
        return {"data": {"type": "parking_status", "occupied": bool(_byte(payload, 0) & 1)}}
    if fport == 2:
        return {"data": {"type": "heartbeat", "occupied": bool(_byte(payload, 0) & 1)}}
    if fport == 3:
        return _startup(payload, _RESET_NPS310, with_occupancy=True)
    if fport == 6:
        return _debug(payload)
    return {"data": {}}


def _previous_state(compressed: int) -> tuple[int, int | None, bool]:
    """Duration of the previous state in minutes, its error bound, and the overflow flag.

    The sensor squeezes minutes into 7 bits: exact below 90, 5-minute steps to 240,
    hourly steps to 660, and 127 meaning "longer than that".
    """
    if compressed < 90:
        return compressed, 0, False
    if compressed < 120:
        return 90 + (compressed - 90) * 5, 4, False
    if compressed < 127:
        return 240 + (compressed - 120) * 60, 59, False
    return 660, None, True


def _with_previous_state(data: dict[str, object], status_byte: int) -> None:
    duration, error, overflow = _previous_state((status_byte >> 1) & 0x7F)
    data["previous_state_duration"] = duration
    data["previous_state_duration_error"] = error
    data["previous_state_duration_overflow"] = overflow


def _battery_mv(payload: bytes, index: int) -> int | None:
    return 2500 + payload[index] * 4 if index < len(payload) else None


def _nps405_heartbeat(payload: bytes) -> Decoded:
    status = _byte(payload, 0)
    data: dict[str, object] = {
        "type": "heartbeat",
        "occupied": bool(status & 1),
        "hw_health_status": status & 0x7F,
    }
    millivolts = _battery_mv(payload, 1)
    data["battery_voltage"] = None if millivolts is None else js_number(millivolts / 1000)
    if len(payload) > 2:
        raw = payload[2]
        temperature = (raw - 256 if raw > 127 else raw) / 2 + 10
        data["temperature"] = js_number(temperature)
        # Lithium cells sag in the cold, so the health thresholds drop below -5 °C.
        critical, low = (2900, 3000) if temperature >= -5 else (2800, 2900)
        if millivolts is not None:
            if millivolts >= low:
                data["battery_health"] = "normal"
            elif millivolts >= critical:
                data["battery_health"] = "low"
            else:
                data["battery_health"] = "critical"
    else:
        data["temperature"] = None  # undefined / 2 + 10 is NaN, which JSON writes as null
    return {"data": data}


def _tag_id(payload: bytes, start: int) -> str:
    value = int32(
        _byte(payload, start) << 24
        | _byte(payload, start + 1) << 16
        | _byte(payload, start + 2) << 8
        | _byte(payload, start + 3)
    )
    # Number.prototype.toString(16) keeps the sign of the 32-bit result.
    return f"-{-value:X}" if value < 0 else f"{value:X}"


def _nps405_registration(payload: bytes) -> Decoded:
    status = _byte(payload, 0)
    data: dict[str, object] = {"type": "user_registration"}
    if status & 1:
        data["occupied"] = True
        _with_previous_state(data, status)
    else:
        data["occupied"] = None
        data["previous_state_duration"] = None
        data["previous_state_duration_error"] = None
        data["previous_state_duration_overflow"] = None
    if len(payload) >= 6:
        # Newer firmware puts the tag's battery (decivolts) before the tag id; the
        # six-byte length is what tells the two layouts apart.
        data["tag_battery_voltage"] = js_number(payload[1] / 10)
        data["tag_id"] = _tag_id(payload, 2)
    else:
        data["tag_id"] = _tag_id(payload, 1)
    return {"data": data}


def decode_nps405(fport: int, payload: bytes) -> Decoded:
    if fport == 1:
        status = _byte(payload, 0)
        data: dict[str, object] = {"type": "parking_status", "occupied": bool(status & 1)}
        _with_previous_state(data, status)
        return {"data": data}
    if fport == 2:
        return _nps405_heartbeat(payload)
    if fport == 3:
        return _startup(payload, _RESET_G4, with_occupancy=True)
    if fport == 6:
        return _debug(payload)
    if fport == 10:
        return _nps405_registration(payload)
    return {"data": {}}


def decode_ncc405(fport: int, payload: bytes) -> Decoded:
    if fport == 1:
        return {
            "data": {
                "type": "counter_update",
                "counter_value": _byte(payload, 0) << 8 | _byte(payload, 1),
            }
        }
    if fport == 2:
        now_mv = _battery_mv(payload, 1)
        mean_mv = _battery_mv(payload, 2)
        return {
            "data": {
                "type": "heartbeat",
                "hw_health_status": _byte(payload, 0) & 0x7F,
                "battery_voltage": None if now_mv is None else js_number(now_mv / 1000),
                "battery_voltage_mean_24h": None if mean_mv is None else js_number(mean_mv / 1000),
            }
        }
    if fport == 3:
        return _startup(payload, _RESET_G4, with_occupancy=False)
    if fport == 6:
        return _debug(payload)
    return {"data": {}}
