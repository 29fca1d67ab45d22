"""Milesight EM400-MUD ultrasonic distance sensor (used in its parking-lot mode).

The payload is a chain of ``channel id, channel type, value`` items; decoding stops
at the first pair it does not know, exactly as the vendor codec does.
"""

from __future__ import annotations

from gateway.parking import Decoded, js_number


def _u16le(payload: bytes, index: int) -> int:
    # Upstream adds the bytes of a slice that may be short: a missing high byte
    # counts as 0 and a missing low byte makes NaN, which its "& 0xffff" turns into 0.
    n = len(payload)
    if index >= n:
        return 0
    high = payload[index + 1] if index + 1 < n else 0
    return (high << 8) + payload[index]


def _i16le(payload: bytes, index: int) -> int:
    value = _u16le(payload, index)
    return value - 0x10000 if value > 0x7FFF else value


def decode_em400_mud(fport: int, payload: bytes) -> Decoded:
    del fport  # the codec reads every port alike
    data: dict[str, object] = {}
    n = len(payload)
    i = 0
    while i < n:
        channel = payload[i]
        kind = payload[i + 1] if i + 1 < n else None
        i += 2
        if channel == 0x01 and kind == 0x75:
            if i < n:
                data["battery"] = payload[i]
            else:
                data.pop("battery", None)  # undefined overwrites, then vanishes in JSON
            i += 1
        elif channel == 0x03 and kind == 0x67:
            data["temperature"] = js_number(_i16le(payload, i) / 10)
            i += 2
        elif channel == 0x04 and kind == 0x82:
            data["distance"] = _u16le(payload, i)
            i += 2
        elif channel == 0x05 and kind == 0x00:
            data["position"] = "normal" if i < n and payload[i] == 0 else "tilt"
            i += 1
        elif channel == 0x83 and kind == 0x67:
            data["temperature"] = js_number(_i16le(payload, i) / 10)
            data["temperature_abnormal"] = not (i + 2 < n and payload[i + 2] == 0)
            i += 3
        elif channel == 0x84 and kind == 0x82:
            data["distance"] = _u16le(payload, i)
            data["distance_alarming"] = not (i + 2 < n and payload[i + 2] == 0)
            i += 3
        else:
            break
    return {"data": data}
