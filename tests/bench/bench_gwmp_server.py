"""GWMP server throughput: datagrams/s and CPU per datagram, compiled codec vs Python twin.

Two figures per implementation, each measured in a fresh interpreter so the codec switch
(SCHWEBE_NO_EXTENSIONS) takes effect:
  handler  - datagram_received() called directly (no kernel), CPU µs per datagram
  loopback - a sender process blasts UDP at the server process for a few seconds;
             received/sent and the server's CPU µs per datagram (kernel work included)
Run: .venv/bin/python tests/bench/bench_gwmp_server.py [--seconds 3] [--rate 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
EUI = 0xB827EBFFFE000001


def _pool(rxpk_per_datagram: int) -> list[bytes]:
    import base64

    from gateway import frames

    phy = bytes.fromhex("40a1b2c3d400010001112233aabbccdd")
    out = []
    for i in range(512):
        rx = [
            {
                "time": "2024-05-01T10:00:00.000000Z",
                "tmst": 1000 + i,
                "chan": j % 8,
                "rfch": 0,
                "freq": 868.1,
                "stat": 1,
                "modu": "LORA",
                "datr": "SF7BW125",
                "codr": "4/5",
                "rssi": -70 - j,
                "lsnr": 7.5,
                "size": len(phy),
                "data": base64.b64encode(phy).decode(),
            }
            for j in range(rxpk_per_datagram)
        ]
        out.append(frames.encode_push_data(i, EUI, rx))
    return out


class _NullTransport:
    def sendto(self, data: bytes, addr: Any = None) -> None:
        pass

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 0)


def child_handler(rxpk_per_datagram: int, n: int) -> dict[str, Any]:
    from drivers.gwmp_server import GwmpServer
    from gateway import frames

    records = []
    server = GwmpServer(bind=("127.0.0.1", 0), on_uplink=records.append)
    server.connection_made(_NullTransport())  # type: ignore[arg-type]
    pool = _pool(rxpk_per_datagram)
    addr = ("127.0.0.1", 40000)
    t0 = time.process_time()
    for i in range(n):
        server.datagram_received(pool[i & 511], addr)
    cpu = time.process_time() - t0
    return {
        "impl": frames.IMPLEMENTATION,
        "us_per_datagram": cpu / n * 1e6,
        "us_per_rxpk": cpu / (n * rxpk_per_datagram) * 1e6,
        "records": len(records),
    }


async def _serve(seconds: float, port_file: str) -> dict[str, Any]:
    from drivers.gwmp_server import GwmpServer
    from gateway import frames

    count = [0]
    server = GwmpServer(
        bind=("127.0.0.1", 0), on_uplink=lambda r: count.__setitem__(0, count[0] + 1)
    )
    await server.start()
    await asyncio.to_thread(Path(port_file).write_text, str(server.bound_address[1]))
    t0 = time.process_time()
    await asyncio.sleep(seconds + 1.5)
    cpu = time.process_time() - t0
    h = server.health()
    await server.stop()
    return {
        "impl": frames.IMPLEMENTATION,
        "cpu_s": cpu,
        "datagrams": h["datagrams"],
        "acked": h["outcomes"].get("acked", 0),
        "rcvbuf": h["rcvbuf"],
    }


def loopback(
    env: dict[str, str], seconds: float, rate: float, rxpk_per_datagram: int
) -> dict[str, Any]:
    port_file = f"/tmp/bench_gwmp_port_{os.getpid()}"
    with subprocess.Popen(
        [sys.executable, __file__, "--child-serve", str(seconds), port_file],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        deadline = time.monotonic() + 10
        while not Path(port_file).exists() or not Path(port_file).read_text():
            if time.monotonic() > deadline:
                raise RuntimeError("server child did not start")
            time.sleep(0.05)
        port = int(Path(port_file).read_text())
        sys.path.insert(0, str(ROOT))
        pool = _pool(rxpk_per_datagram)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect(("127.0.0.1", port))
        sent = 0
        start = time.monotonic()
        while (now := time.monotonic()) - start < seconds:
            due = int((now - start) * rate)
            while sent < due:
                sock.send(pool[sent & 511])
                sent += 1
            time.sleep(0.001)
        sock.close()
        out, _ = proc.communicate(timeout=30)
    Path(port_file).unlink(missing_ok=True)
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    result["sent"] = sent
    result["us_cpu_per_datagram"] = result["cpu_s"] / max(result["datagrams"], 1) * 1e6
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rate", type=float, default=20000.0)
    ap.add_argument("--n", type=int, default=50000)
    ap.add_argument("--child-handler", nargs=2, type=int)
    ap.add_argument("--child-serve", nargs=2)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.child_handler:
        print(json.dumps(child_handler(*args.child_handler)))
        return
    if args.child_serve:
        print(json.dumps(asyncio.run(_serve(float(args.child_serve[0]), args.child_serve[1]))))
        return

    impls = {"default": {}, "python-twin": {"SCHWEBE_NO_EXTENSIONS": "1"}}
    print(
        f"GWMP server bench: {args.n} datagrams through the handler; "
        f"{args.rate:g} datagrams/s for {args.seconds:g} s over loopback"
    )
    handler: dict[tuple[str, int], dict[str, Any]] = {}
    for label, extra in impls.items():
        env = {**os.environ, **extra, "PYTHONPATH": str(ROOT)}
        for per in (1, 8):
            out = subprocess.run(
                [sys.executable, __file__, "--child-handler", str(per), str(args.n)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            r = json.loads(out.strip().splitlines()[-1])
            handler[(label, per)] = r
            print(
                f"  handler  {label:12s} ({r['impl']:6s}) {per} rxpk/datagram: "
                f"{r['us_per_datagram']:7.1f} µs CPU/datagram, {r['us_per_rxpk']:6.1f} µs/rxpk, "
                f"=> {1e6 / r['us_per_datagram']:8.0f} datagrams/s per core"
            )
    for per in (1, 8):
        a, b = handler[("default", per)], handler[("python-twin", per)]
        print(
            f"  ratio python-twin/default at {per} rxpk: {b['us_per_datagram'] / a['us_per_datagram']:.2f}x"
        )
    for label, extra in impls.items():
        env = {**os.environ, **extra, "PYTHONPATH": str(ROOT)}
        r = loopback(env, args.seconds, args.rate, 1)
        print(
            f"  loopback {label:12s} ({r['impl']:6s}): sent {r['sent']}, received {r['datagrams']} "
            f"({100 * r['datagrams'] / max(r['sent'], 1):.2f} %), acked {r['acked']}, "
            f"{r['us_cpu_per_datagram']:.1f} µs server CPU/datagram, rcvbuf {r['rcvbuf']}"
        )


if __name__ == "__main__":
    main()
