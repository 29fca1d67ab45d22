"""Decode + occupancy per uplink, per model, in µs: through the registry and with the
decoder looked up once per device (what the spot tracker does). Prints ratios; never asserts.

Run: .venv/bin/python tests/bench/bench_decoders.py
"""

from __future__ import annotations

import timeit
from collections.abc import Callable

from gateway.parking.encode import encode_status
from gateway.parking.registry import decode_uplink, decoder_for, list_models, parking_status

TARGET_US = 5.0


Frames = list[tuple[int, bytes]]


def _via_registry(model: str, frames: Frames) -> None:
    for fport, payload in frames:
        parking_status(model, decode_uplink(model, fport, payload))


def _cached(model: str, frames: Frames) -> None:
    decode = decoder_for(model)
    for fport, payload in frames:
        parking_status(model, decode(fport, payload))


def _per_uplink_us(run: Callable[[str, Frames], None], model: str, frames: Frames) -> float:
    rounds = 20000
    best = min(timeit.repeat(lambda: run(model, frames), number=rounds, repeat=5))
    return best / rounds / len(frames) * 1e6


def main() -> None:
    print(f"{'model':26} {'registry µs':>12} {'cached µs':>10} {'ratio':>6}  target {TARGET_US} µs")
    for model in list_models():
        frames = [
            encode_status(model, occ, heartbeat=hb) for occ in (True, False) for hb in (False, True)
        ]
        registry_us = _per_uplink_us(_via_registry, model, frames)
        cached_us = _per_uplink_us(_cached, model, frames)
        print(f"{model:26} {registry_us:12.2f} {cached_us:10.2f} {registry_us / cached_us:6.2f}")


if __name__ == "__main__":
    main()
