"""TEKZITEL TEKZIPARK radar/magnetic parking sensor.

Port 1: status flags, temperature, parking id, then optional BLE beacon RSSI and
16-bit beacon ids; port 2: the same flags plus magnetometer deflection/baseline.
"""

from __future__ import annotations

from gateway.parking import Decoded


def _flags(status: int) -> dict[str, object]:
    # The codec reports flags as 0/1 numbers, not booleans; dashboards key on that.
    return {
        "occupied": (status & 0x80) >> 7,
        "keepAlive": status & 0x01,
        "reset": (status & 0x02) >> 1,
        "No_Beacon": (status & 0x04) >> 2,
        "Radar": (status & 0x08) >> 3,
        "Obstruction": (status & 0x10) >> 4,
        "Good_Battery": (status & 0x20) >> 5,
    }


def _put_signed(data: dict[str, object], key: str, payload: bytes, index: int) -> None:
    # A missing byte is undefined upstream, and JSON drops undefined members.
    if index < len(payload):
        raw = payload[index]
        data[key] = raw - 0x100 if raw > 0x7F else raw


def _put_unsigned(data: dict[str, object], key: str, payload: bytes, index: int) -> None:
    if index < len(payload):
        data[key] = payload[index]
    else:
        data.pop(key, None)


_DEFLECTION_KEYS = (
    "Deflection_X",
    "Deflection_Y",
    "Deflection_Z",
    "Baseline_X",
    "Baseline_Y",
    "Baseline_Z",
)


def decode_tekzipark(fport: int, payload: bytes) -> Decoded:
    if fport not in (1, 2):
        return {"errors": ["unknown FPort"]}
    n = len(payload)
    data = _flags(payload[0] if n else 0)
    _put_signed(data, "Temperature", payload, 1)
    _put_unsigned(data, "Parking_ID", payload, 2)
    if fport == 1:
        if n > 3:
            data["Beacon_RSSI"] = payload[3] - 0x100 if payload[3] > 0x7F else payload[3]
            # Beacon ids are big-endian pairs; a dangling odd byte keeps a zero low byte.
            data["Beacons"] = [
                payload[i] << 8 | (payload[i + 1] if i + 1 < n else 0) for i in range(4, n, 2)
            ]
        return {"data": data}
    for offset, key in enumerate(_DEFLECTION_KEYS, start=3):
        _put_signed(data, key, payload, offset)
    _put_unsigned(data, "Fault_Code", payload, 9)
    # Port 2 reuses the name: byte 10 replaces the flag bit, and a short frame
    # leaves it undefined (so the member disappears).
    _put_unsigned(data, "Obstruction", payload, 10)
    _put_unsigned(data, "D_Reflection", payload, 11)
    return {"data": data}
