"""The same work warm and after a sleep: why the daemon reads dense traffic on a tick.

The packet-forwarder path's compiled calls for one datagram (``decode_push_data`` and
``uplink_records``, 8 rxpk) timed back to back in a loop, then with a sleep before each datagram
as the daemon sleeps between datagrams at 250 a second. The difference is what a wake-up costs
beyond the work itself: caches and predictors refilled after the CPU ran something else.
Alternated rounds, medians, the ratio printed; nothing else should run meanwhile.

Run: .venv/bin/python tests/bench/bench_cold.py [--datagrams 500] [--sleep-ms 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gateway import frames
from gateway.records import Record
from tests.bench.bench_end_to_end import PF_EUI, Frames

EUI = f"{PF_EUI:016x}"


def one(data: bytes) -> None:
    push = frames.decode_push_data(data)
    frames.uplink_records(push.rxpk, EUI, 255, Record, "gwmp:0", 1_764_842_400_000_000)


def timed(datagrams: list[bytes], sleep_s: float) -> float:
    """ns per rxpk for the calls alone (the sleep is outside the clock)."""
    total = 0
    for d in datagrams:
        if sleep_s:
            time.sleep(sleep_s)
        t0 = time.perf_counter_ns()
        one(d)
        total += time.perf_counter_ns() - t0
    return total / (8 * len(datagrams))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datagrams", type=int, default=500)
    ap.add_argument("--sleep-ms", type=float, default=4.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    rx = Frames().take(8 * args.datagrams)
    datagrams = [frames.encode_push_data(i & 0xFFFF, PF_EUI, rx[j:j + 8])
                 for i, j in enumerate(range(0, len(rx), 8))]
    timed(datagrams, 0)  # warm up
    warm, cold = [], []
    for _ in range(args.rounds):
        warm.append(timed(datagrams, 0))
        cold.append(timed(datagrams, args.sleep_ms / 1000))
    w, c = statistics.median(warm), statistics.median(cold)
    print(f"decode_push_data + uplink_records, 8 rxpk a datagram, {frames.IMPLEMENTATION} build:")
    print(f"  back to back              {w:8.0f} ns/rxpk  (rounds: {', '.join(f'{x:.0f}' for x in warm)})")
    print(f"  after a {args.sleep_ms:g} ms sleep each   {c:8.0f} ns/rxpk  (rounds: {', '.join(f'{x:.0f}' for x in cold)})")
    print(f"  cold / warm               {c / w:8.1f}x")


if __name__ == "__main__":
    main()
