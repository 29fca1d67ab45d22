"""Realistic uplinks for each model, so the simulator sends the formats the field sends.

``encode_status`` builds an occupancy-change (or, with ``heartbeat=True``, a
heartbeat) frame; it is the inverse of the decoders for the occupancy bit only.
"""

from __future__ import annotations

import struct

from gateway.parking.registry import decoder_for


def _nwave(
    model: str, occupied: bool, heartbeat: bool, minutes: int, battery_v: float, temperature_c: int
) -> tuple[int, bytes]:
    occ = 1 if occupied else 0
    if model == "nwave/ncc405":
        # The counter has no spot: its "status" is a count update or a heartbeat.
        if heartbeat:
            level = max(0, min(255, round((battery_v * 1000 - 2500) / 4)))
            return 2, bytes((0, level, level))
        return 1, struct.pack(">H", minutes & 0xFFFF)
    if heartbeat:
        if model == "nwave/nps310sm":
            return 2, bytes((occ,))
        level = max(0, min(255, round((battery_v * 1000 - 2500) / 4)))
        raw_temp = max(-128, min(127, (temperature_c - 10) * 2)) & 0xFF
        return 2, bytes((occ, level, raw_temp, 0, 0, 0))
    if model == "nwave/nps310sm":
        return 1, bytes((occ,))
    return 1, bytes((_compress_minutes(minutes) << 1 | occ,))


def _compress_minutes(minutes: int) -> int:
    """Inverse of the NPS405's 7-bit duration code (rounded down to its step)."""
    if minutes < 90:
        return max(0, minutes)
    if minutes < 240:
        return 90 + (minutes - 90) // 5
    if minutes < 660:
        return 120 + (minutes - 240) // 60
    return 127


def _bosch(occupied: bool, heartbeat: bool, temperature_c: int) -> tuple[int, bytes]:
    if heartbeat:
        return 2, bytes((1 if occupied else 0, temperature_c & 0xFF))
    return 1, bytes((1 if occupied else 0,))


def _dingtek(
    model: str,
    occupied: bool,
    heartbeat: bool,
    battery_v: float,
    temperature_c: int,
    frame_counter: int,
) -> tuple[int, bytes]:
    # The DO20x sends the same telemetry frame for a change and for its periodic report;
    # only the park alarm nibble carries occupancy.
    park = 0x10 if occupied else 0x00
    centivolts = round(battery_v * 100) & 0xFFFF
    magnet = (120, -80, -11) if occupied else (16, -10, -16)
    if model == "dingtek/do200":
        body = struct.pack(">HBBHhhhH", 0, park, 0, centivolts, *magnet, frame_counter & 0xFFFF)
        return 3, bytes((0x80, 0x00, 0x02, 0x01, 21)) + body + b"\x00\x81"
    device_type = 0x31 if model == "dingtek/do201" else 0x32
    level = 300 if occupied else 1716  # mm to the nearest surface: a car is close
    body = struct.pack(
        ">HBBHhhhbBH",
        level,
        park,
        0,
        centivolts,
        *magnet,
        temperature_c,
        45,
        frame_counter & 0xFFFF,
    )
    return 3, bytes((0x80, 0x00, device_type, 0x02, 23)) + body + b"\x00\x81"


def _tekzipark(occupied: bool, heartbeat: bool, temperature_c: int) -> tuple[int, bytes]:
    status = (0x80 if occupied else 0) | (0x01 if heartbeat else 0) | 0x20  # battery good
    return 1, bytes((status, temperature_c & 0xFF, 7))


def _em400(occupied: bool, battery_pct: int, temperature_c: int) -> tuple[int, bytes]:
    distance_mm = 800 if occupied else 2600  # ceiling mount above the bay
    return 85, (
        bytes((0x01, 0x75, battery_pct))
        + bytes((0x03, 0x67))
        + struct.pack("<h", temperature_c * 10)
        + bytes((0x84, 0x82))
        + struct.pack("<H", distance_mm)
        + bytes((1 if occupied else 0,))
        + bytes((0x05, 0x00, 0x00))
    )


def encode_status(
    model: str,
    occupied: bool,
    *,
    heartbeat: bool = False,
    minutes: int = 5,
    battery_v: float = 3.6,
    battery_pct: int = 92,
    temperature_c: int = 12,
    frame_counter: int = 0,
) -> tuple[int, bytes]:
    """(FPort, FRMPayload) of an occupancy change or heartbeat as ``model`` sends it.

    ``minutes`` is the time spent in the previous state (NPS405) or the count (NCC405).
    Raises :class:`~gateway.parking.registry.UnknownModel` for a model with no decoder.
    """
    decoder_for(model)
    vendor = model.partition("/")[0]
    if vendor == "nwave":
        return _nwave(model, occupied, heartbeat, minutes, battery_v, temperature_c)
    if vendor == "bosch":
        return _bosch(occupied, heartbeat, temperature_c)
    if vendor == "dingtek":
        return _dingtek(model, occupied, heartbeat, battery_v, temperature_c, frame_counter)
    if vendor == "tekzitel":
        return _tekzipark(occupied, heartbeat, temperature_c)
    return _em400(occupied, battery_pct, temperature_c)
