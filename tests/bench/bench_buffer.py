"""Buffer benchmark: append and drain rates, RSS while a backlog grows, start-up time, flash wear.

Plain script (not collected by pytest). Prints figures and NORMAL-vs-FULL ratios; asserts nothing.
    .venv/bin/python tests/bench/bench_buffer.py --records 2000000 [--dir /tmp]
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gateway.buffer import Buffer
from gateway.records import Record, make_record

BODY = {"gateway_eui": "b827ebfffe000001", "rxpk": {"data": "QAEjRWeAAQABqrvM3e7/" * 3, "rssi": -97}}


def rec(i: int) -> Record:
    return make_record("uplink", "gwmp", BODY, received_us=1_767_225_600_000_000 + i)


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def write_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def bench_append_drain(d: Path, n: int, sync: str) -> tuple[float, float, float]:
    b = Buffer(d / f"ad-{sync}.sqlite3", max_bytes=1 << 40, synchronous=sync, memory_reserve_bytes=1 << 30)
    b.open()
    records = [rec(i) for i in range(n)]
    t0 = time.perf_counter()
    for r in records:
        b.append(r)
    t1 = time.perf_counter()
    b.commit()
    t2 = time.perf_counter()
    b.register("f", start="oldest")
    got = 0
    t3 = time.perf_counter()
    while (batch := b.take("f", 1000, 1 << 20)) is not None:
        got += len(batch.records)
        b.ack("f", batch)
    b.commit()  # the range delete of everything drained
    t4 = time.perf_counter()
    assert got == n, (got, n)
    b.close()
    return n / (t1 - t0), n / (t2 - t0), n / (t4 - t3)


def bench_backlog(d: Path, n: int, chunk: int) -> None:
    path = d / "backlog.sqlite3"
    b = Buffer(path, max_bytes=1 << 40, memory_reserve_bytes=1 << 30)
    b.open()
    b.register("f")  # a forwarder that is down: nothing drains
    base = None
    t0 = time.perf_counter()
    for start in range(0, n, chunk):
        for i in range(start, min(n, start + chunk)):
            b.append(rec(i))
        b.commit()
        if base is None:
            gc.collect()
            base = rss_kib()
    fill = time.perf_counter() - t0
    gc.collect()
    grown = rss_kib() - (base or 0)
    print(f"backlog    {n} records in {fill:.1f}s ({n / fill:,.0f}/s with commits of {chunk}); "
          f"RSS growth after the first chunk: {grown / 1024:.1f} MiB; file {path.stat().st_size / 2**20:.0f} MiB")
    b.close()
    t0 = time.perf_counter()
    b = Buffer(path, max_bytes=1 << 40)
    b.open()
    b.register("f")
    st = b.stats()
    t1 = time.perf_counter()
    batch = b.take("f", 1000, 1 << 20)
    t2 = time.perf_counter()
    assert st["records"] == n and batch is not None and len(batch.records) == 1000
    print(f"start-up   open + register + stats with {n} records: {t1 - t0:.3f}s; first take {t2 - t1:.4f}s")
    b.close()


def bench_wear(d: Path, rate: int, seconds: int, sync: str, real_time: bool = False) -> float:
    """Steady state at `rate` records/s, one commit per second, forwarder keeping up.

    Simulated seconds run back to back (quick); ``real_time`` waits out each second, so the
    kernel writes dirty pages back as it would on a gateway and a page rewritten after its
    write-back counts again (the honest figure for an SD card, and the slower one to get).
    """
    b = Buffer(d / f"wear-{rate}-{sync}.sqlite3", max_bytes=1 << 40, synchronous=sync)
    b.open()
    b.register("f")
    payload = 0
    i = 0
    for _ in range(30):  # warm-up: schema, first pages
        for _ in range(rate):
            b.append(rec(i))
            i += 1
        b.commit()
    w0 = write_bytes()
    t0 = time.monotonic()
    for sec in range(seconds):
        if real_time:
            time.sleep(max(0.0, t0 + sec - time.monotonic()))
        for _ in range(rate):
            r = rec(i)
            payload += len(r.body)
            b.append(r)
            i += 1
        while (batch := b.take("f", 1000, 1 << 20)) is not None:
            b.ack("f", batch)
        b.commit()
    w1 = write_bytes()
    b.close()
    per = (w1 - w0) / (rate * seconds)
    mode = "real time" if real_time else "simulated"
    print(f"wear {sync:<6} {rate:>5} rec/s over {seconds} s ({mode}): {per:8.0f} bytes written per record, "
          f"write amplification {(w1 - w0) / payload:6.1f}x (body {payload // (rate * seconds)} B)")
    return per


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=2_000_000, help="backlog size for RSS / start-up")
    ap.add_argument("--rate-records", type=int, default=500_000, help="records for append/drain rates")
    ap.add_argument("--chunk", type=int, default=10_000,
                    help="records per commit while the backlog grows (10 000 = 10 k records/s at 1 s)")
    ap.add_argument("--only-backlog", action="store_true", help="skip the rate and wear runs")
    ap.add_argument("--dir", default=None, help="directory on the device to measure (default: tmp)")
    ap.add_argument("--real-time", type=int, default=0, metavar="SECONDS",
                    help="only the wear runs, NORMAL and FULL, each rate for SECONDS of wall time")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        d = Path(tmp)
        if args.only_backlog:
            bench_backlog(d, args.records, args.chunk)
            return
        if args.real_time:
            for sync in ("NORMAL", "FULL"):
                for rate in (10, 100, 1000):
                    bench_wear(d, rate, args.real_time, sync, real_time=True)
            return
        res = {}
        for sync in ("NORMAL", "FULL"):
            a, ac, dr = bench_append_drain(d, args.rate_records, sync)
            res[sync] = (a, ac, dr)
            print(f"rates {sync:<6} append {a:,.0f}/s; append+commit {ac:,.0f}/s; drain (batches of 1000, ack, delete) {dr:,.0f}/s")
        print(f"ratio NORMAL/FULL: append+commit {res['NORMAL'][1] / res['FULL'][1]:.2f}, drain {res['NORMAL'][2] / res['FULL'][2]:.2f}")
        wear = {}
        for sync in ("NORMAL", "FULL"):
            for rate, secs in ((10, 600), (100, 300), (1000, 120)):
                wear[(sync, rate)] = bench_wear(d, rate, secs, sync)
        for rate in (10, 100, 1000):
            print(f"ratio FULL/NORMAL bytes per record at {rate}/s: {wear[('FULL', rate)] / max(1.0, wear[('NORMAL', rate)]):.2f}")
        bench_backlog(d, args.records, args.chunk)


if __name__ == "__main__":
    main()
