"""Parking sensors at the edge: one decoder module per vendor, a registry by model id.

The decoders reproduce what the LoRaWAN Device Repository codecs return from
``decodeUplink`` after a JSON round trip; the helpers below carry the few
JavaScript value rules (numbers, ``undefined``) that make that output what it is.
"""

from __future__ import annotations

import math
from typing import Any

#: The ``decodeUplink`` result after a JSON round trip: ``{"data": {...}}`` and/or
#: ``{"errors": [...]}`` / ``{"warnings": [...]}``.
Decoded = dict[str, Any]


def js_number(value: float) -> int | float | None:
    """A JS number as JSON carries it: integral values print without ``.0``, NaN as null."""
    if value != value or math.isinf(value):  # JSON.stringify writes NaN and Infinity as null
        return None
    as_int = int(value)
    return as_int if as_int == value else value


def js_text(byte: int | None) -> str:
    """A byte as JS string concatenation renders it (a missing byte is ``undefined``)."""
    return "undefined" if byte is None else str(byte)


def version_text(payload: bytes, start: int) -> str:
    """``a.b.c`` from three bytes, as the codecs build firmware versions by concatenation."""
    n = len(payload)
    if n >= start + 3:
        return f"{payload[start]}.{payload[start + 1]}.{payload[start + 2]}"
    parts = [js_text(payload[i] if i < n else None) for i in range(start, start + 3)]
    return ".".join(parts)


def int32(value: int) -> int:
    """The result of a JS bitwise OR/shift: a signed 32-bit integer."""
    value &= 0xFFFFFFFF
    return value - 0x1_0000_0000 if value & 0x8000_0000 else value
