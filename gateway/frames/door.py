"""The door's checks of a packet forwarder's rxpk and stat objects: bounds and plausibility.

The pure-Python reference; the compiled module answers the usual rxpk in C and hands every
other one to these functions, so both give the same answer word for word. Never does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

#: What a packet forwarder's objects can need, with room to spare: rxpk and stat are flat
#: (sx1302_hal's `rsig` list of objects is the deepest, at 3 levels), strings are short.
#: Anything beyond is hostile or broken, and once stored it could not be encoded by every
#: backend: refused at the door, counted.
MAX_DEPTH: Final = 4
MAX_STRING: Final = 512
MAX_ITEMS: Final = 64


#: rxpk fields that forwarders turn into numbers of their own (Hz, dBm, SF, bandwidth): a
#: value no radio reports would overflow them (a frequency of 6.9e14 MHz is 6.9e20 Hz).
_LORA_DATR = re.compile(r"SF([5-9]|1[0-2])BW(125|250|500|203|406|812|1625)")
_RANGES = {"freq": (0.0, 10_000.0), "rssi": (-300.0, 300.0), "rssis": (-300.0, 300.0),
           "lsnr": (-1000.0, 1000.0), "tmms": (0.0, float(1 << 53))}


def implausible(rxpk: Mapping[str, Any]) -> str | None:
    """Why an rxpk's radio figures cannot be real, or None."""
    for key, (lo, hi) in _RANGES.items():
        v = rxpk.get(key)
        if v is not None and not (isinstance(v, int | float) and not isinstance(v, bool)
                                  and lo <= v <= hi):
            return f"{key} {v!r} outside {lo:g}..{hi:g}"
    datr = rxpk.get("datr")
    if isinstance(datr, str) and datr.startswith("SF") and not _LORA_DATR.fullmatch(datr):
        return f"datr {datr[:32]!r} is no LoRa data rate"
    if isinstance(datr, int | float) and not isinstance(datr, bool) and not 0 <= datr < 1 << 32:
        return f"datr {datr!r} outside 0..2^32"
    return None


def out_of_bounds(obj: Any, depth: int = 0) -> str | None:
    """Why a packet-forwarder object is too deep, too long or too large, or None when it fits."""
    if depth > MAX_DEPTH:
        return f"nested deeper than {MAX_DEPTH} levels"
    if isinstance(obj, str):
        return f"a string of {len(obj)} characters (at most {MAX_STRING})" if len(obj) > MAX_STRING else None
    if isinstance(obj, dict):
        if len(obj) > MAX_ITEMS:
            return f"an object of {len(obj)} keys (at most {MAX_ITEMS})"
        for k, v in obj.items():
            if len(k) > MAX_STRING:
                return f"a key of {len(k)} characters (at most {MAX_STRING})"
            kind = type(v)
            if kind is str:  # the usual cases inline: this runs for every rxpk
                if len(v) > MAX_STRING:
                    return f"a string of {len(v)} characters (at most {MAX_STRING})"
                continue
            if kind is float or kind is bool or v is None:
                continue
            if kind is int:
                if not -(1 << 63) <= v < 1 << 64:  # JSON encoders (orjson) stop at 64 bits
                    return f"an integer of {v.bit_length()} bits (at most 64)"
                continue
            why = out_of_bounds(v, depth + 1)
            if why is not None:
                return why
        return None
    if isinstance(obj, int) and not isinstance(obj, bool) and not -(1 << 63) <= obj < 1 << 64:
        return f"an integer of {obj.bit_length()} bits (at most 64)"
    if isinstance(obj, list):
        if len(obj) > MAX_ITEMS:
            return f"a list of {len(obj)} items (at most {MAX_ITEMS})"
        for v in obj:
            why = out_of_bounds(v, depth + 1)
            if why is not None:
                return why
    return None


def rxpk_door(fields: Mapping[str, Any]) -> tuple[str, str] | None:
    """(counter, why) when an rxpk's fields cannot pass the door, else None: ``out_of_bounds``
    (too deep, long or large to store) is checked before ``implausible`` (radio figures no
    radio reports)."""
    why = out_of_bounds(fields)
    if why is not None:
        return "out_of_bounds", why
    why = implausible(fields)
    if why is not None:
        return "implausible", why
    return None

