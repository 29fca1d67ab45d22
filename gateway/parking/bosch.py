"""Bosch TPS110 parking lot sensor, the firmware 0.29 codec.

Ports: 1 status, 2 heartbeat (with temperature), 3 startup, 4 device information,
5 device usage, 6 debug. Unknown ports give empty data, as upstream.
"""

from __future__ import annotations

from typing import Final

from gateway.parking import Decoded, int32, version_text

_RESET_CAUSES: Final = (None, "watchdog", "power on", "system request", "other")


def _byte(payload: bytes, index: int) -> int:
    """A byte where JS bitwise operators see a missing one as 0."""
    return payload[index] if index < len(payload) else 0


def _startup(payload: bytes) -> Decoded:
    # Three 4-byte debug records; a code is 12 bits, zero meaning "no record".
    codes = []
    for offset in (0, 4, 8):
        code = (_byte(payload, offset + 1) & 0xF) << 8 | _byte(payload, offset)
        if code:
            codes.append(code)
    data: dict[str, object] = {
        "type": "startup",
        "debugCodes": codes,
        "firmwareVersion": version_text(payload, 12),
    }
    if len(payload) > 15 and payload[15] < len(_RESET_CAUSES) and payload[15]:
        data["resetCause"] = _RESET_CAUSES[payload[15]]
    data["occupied"] = bool(_byte(payload, 16) & 1)
    return {"data": data}


def decode_tps110(fport: int, payload: bytes) -> Decoded:
    if fport == 1:
        return {"data": {"type": "parking status", "occupied": bool(_byte(payload, 0) & 1)}}
    if fport == 2:
        data: dict[str, object] = {"type": "heartbeat", "occupied": bool(_byte(payload, 0) & 1)}
        if len(payload) >= 2:
            raw = payload[1]
            data["temperature"] = raw - 0x100 if raw & 0x80 else raw
        return {"data": data}
    if fport == 3:
        return _startup(payload)
    if fport == 4:
        return {"data": {"type": "device information", "bytes": list(payload)}}
    if fport == 5:
        return {"data": {"type": "device usage", "bytes": list(payload)}}
    if fport == 6:
        return {
            "data": {
                "type": "debug",
                # Little-endian seconds, through JS's signed 32-bit OR.
                "timestamp": int32(
                    _byte(payload, 3) << 24
                    | _byte(payload, 2) << 16
                    | _byte(payload, 1) << 8
                    | _byte(payload, 0)
                ),
                "debugCode": (_byte(payload, 5) & 0xF) << 8 | _byte(payload, 4),
                "sequenceNumber": _byte(payload, 9) << 8 | _byte(payload, 8),
            }
        }
    return {"data": {}}
