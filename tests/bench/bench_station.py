"""Basics Station forwarder: uplink records to ``updf`` over TLS to the stand-in LNS, per batch
confirmed by a ping/pong, against the translation alone (CBOR decode + frame fields + JSON).

Run: .venv/bin/python tests/bench/bench_station.py [-n 20000] [--batch 500]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway.config import load_config_text  # noqa: E402
from gateway.forward.station import StationForwarder  # noqa: E402
from gateway.records import make_record  # noqa: E402
from tests.helpers.station_lns import EU868_ROUTER_CONFIG, Pki, StationLns  # noqa: E402

GW = 0xB827EBFFFE000001
PHY = bytes.fromhex("4034120126800100") + bytes.fromhex("01") + bytes(range(20)) + bytes(4)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=500)
    args = ap.parse_args()
    now = time.time_ns() // 1000
    records = [(i, make_record("uplink", "gwmp", {"gateway_eui": f"{GW:016x}", "rxpk": {
        "tmst": 1000 + i * 1000, "freq": 868.1, "datr": "SF7BW125", "modu": "LORA", "rssi": -57, "lsnr": 9.5,
        "data": base64.b64encode(PHY).decode()}}, received_us=now + i)) for i in range(args.n)]
    with tempfile.TemporaryDirectory() as d:
        pki = Pki(Path(d))
        lns = StationLns(pki)
        lns.routers[GW] = dict(EU868_ROUTER_CONFIG)
        await lns.start()
        cfg = load_config_text(f'[gateway]\neui = "{GW:016x}"\n[[forward.station]]\nname = "b"\nuri = "{lns.uri}"\n'
                               f'trust = "{pki.trust}"\n').forward.station[0]
        fwd = StationForwarder(cfg, gateway_eui=GW)
        await fwd.connect()
        t0 = time.perf_counter()
        for i in range(0, args.n, args.batch):
            await fwd.send(records[i:i + args.batch])
        total = time.perf_counter() - t0
        r = fwd._routers[GW]  # translation alone, on the same router state
        t0 = time.perf_counter()
        for _, rec in records:
            parsed = fwd._parse(rec)
            assert parsed is not None
            json.dumps(fwd._uplink(r, parsed[0], parsed[1], parsed[2], rec.received_us), separators=(",", ":"))
        translate = time.perf_counter() - t0
        await fwd.close()
        await lns.stop()
        assert len(lns.of(GW, "updf")) == args.n
    print(f"{args.n} uplinks, batches of {args.batch}, TLS loopback to the stand-in LNS (which parses and "
          f"shape-checks each message in the same process):")
    print(f"  send, confirmed: {total:.2f} s = {args.n / total:,.0f} uplinks/s")
    print(f"  translation alone: {translate / args.n * 1e6:.1f} µs per uplink "
          f"({translate / total:.0%} of the send time)")


if __name__ == "__main__":
    asyncio.run(main())
