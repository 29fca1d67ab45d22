"""Dingtek DO200, DO201 and DO202 parking sensors (magnetic plus ultrasonic).

Every uplink is on port 3 and framed ``80 <type:2> <kind> <length> ... 81``; the
codecs tell telemetry from parameter packets by total length, so do we.
"""

from __future__ import annotations

from gateway.parking import Decoded, js_number


def _unknown_port() -> Decoded:
    # A fresh dict each time: callers may add to what they get back.
    return {"errors": ["unknown FPort"]}


def _wrong_length() -> Decoded:
    return {"errors": ["wrong length"]}


def _int16(payload: bytes, index: int) -> int:
    value = payload[index] << 8 | payload[index + 1]
    return value - 0x10000 if value > 0x7FFF else value


def _alarms(payload: bytes, data: dict[str, object]) -> None:
    # Each alarm is a nibble: parking (i.e. a vehicle present) | level, magnet | battery.
    data["alarmPark"] = bool(payload[7] >> 4)
    data["alarmLevel"] = bool(payload[7] & 0x0F)
    data["alarmMagnet"] = bool(payload[8] >> 4)
    data["alarmBattery"] = bool(payload[8] & 0x0F)


def _telemetry(payload: bytes, *, level: bool, climate: bool) -> dict[str, object]:
    data: dict[str, object] = {}
    if level:
        data["level"] = payload[5] << 8 | payload[6]
    data["volt"] = js_number((payload[9] << 8 | payload[10]) / 100)
    _alarms(payload, data)
    data["xMagnet"] = _int16(payload, 11)
    data["yMagnet"] = _int16(payload, 13)
    data["zMagnet"] = _int16(payload, 15)
    if climate:
        raw = payload[17]
        data["temperature"] = raw - 256 if raw > 127 else raw
        data["humidity"] = payload[18]
    return data


def _firmware(payload: bytes) -> str:
    return f"{payload[5]}.{payload[6]}"


def decode_do200(fport: int, payload: bytes) -> Decoded:
    if fport != 3:
        return _unknown_port()
    n = len(payload)
    if n == 21:
        data = _telemetry(payload, level=True, climate=False)
        data["Frame_Counter"] = payload[17] << 8 | payload[18]
        return {"data": data}
    if n == 17 and payload[3] == 0x03:
        return {
            "data": {
                "firmware": _firmware(payload),
                "uploadInterval": payload[7],
                "ultraDetectInterval": payload[8],
                "magDetectInterval": payload[9],
                "magThreshold": payload[12] << 8 | payload[13],
            }
        }
    return _wrong_length()


def _decode_do20x(fport: int, payload: bytes, *, level: bool) -> Decoded:
    if fport != 3:
        return _unknown_port()
    n = len(payload)
    if n == 23:
        data = _telemetry(payload, level=level, climate=True)
        data["frameCounter"] = payload[19] << 8 | payload[20]
        return {"data": data}
    if n == 16 and payload[3] == 0x03:
        params: dict[str, object] = {
            "firmware": _firmware(payload),
            "uploadInterval": payload[7],
            "detectInterval": payload[8],
        }
        if level:
            params["levelThreshold"] = payload[9]
        params["magnetThreshold"] = payload[10] << 8 | payload[11]
        params["batteryThreshold"] = payload[12]
        return {"data": params}
    return _wrong_length()


def decode_do201(fport: int, payload: bytes) -> Decoded:
    return _decode_do20x(fport, payload, level=True)


def decode_do202(fport: int, payload: bytes) -> Decoded:
    # The DO202 has no ultrasonic level sensor: same frames, no level fields.
    return _decode_do20x(fport, payload, level=False)
