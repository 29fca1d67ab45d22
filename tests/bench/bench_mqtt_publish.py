"""QoS 1 publish of uplink records to a real mosquitto: the old aiomqtt path against its replacements.

Paths, same messages (ChirpStack JSON of uplink records, made once up front), batches acked as a whole:
  aiomqtt     the forwarder before issue 7: one aiomqtt ``publish()`` per message, gather per batch
  paho-batch  option (a): paho's ``publish()`` under aiomqtt's connection, one future per batch
              resolved from paho's ``on_publish``
  wire        option (b): ``gateway.forward.mqtt_wire.MqttConnection.publish_many``
  forwarder   the whole new ``MqttForwarder.send`` (CBOR decode + ChirpStack JSON + wire)
Run: .venv/bin/python tests/bench/bench_mqtt_publish.py [-n 20000] [--batch 500] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import aiomqtt  # noqa: E402

from gateway.config import MqttForward  # noqa: E402
from gateway.forward.mqtt import MqttForwarder  # noqa: E402
from gateway.forward.mqtt_wire import MqttConnection  # noqa: E402
from gateway.records import Record, make_record  # noqa: E402
from tests.mosquitto import Mosquitto  # noqa: E402

GW = 0xB827EBFFFE000001
PHY = bytes.fromhex("40a1b2c3d480010001") + bytes(range(20))
Msg = tuple[str, bytes, bool]


def _records(n: int) -> list[tuple[int, Record]]:
    out = []
    for i in range(n):
        rxpk = {"time": "2026-11-25T10:00:00.000001Z", "tmst": 1000 + i, "freq": 868.1, "chan": 2, "rfch": 1,
                "stat": 1, "modu": "LORA", "datr": "SF7BW125", "codr": "4/5", "rssi": -57, "lsnr": 9.5,
                "size": len(PHY), "data": base64.b64encode(PHY).decode()}
        out.append((i + 1, make_record("uplink", "gwmp", {"gateway_eui": f"{GW:016x}", "rxpk": rxpk})))
    return out


def _broker_cpu(broker: Mosquitto) -> float:
    assert broker.proc is not None
    with open(f"/proc/{broker.proc.pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _batches(msgs: list[Any], size: int) -> list[list[Any]]:
    return [msgs[i:i + size] for i in range(0, len(msgs), size)]


async def run_aiomqtt(broker: Mosquitto, msgs: list[Msg], batch: int, inflight: int) -> Callable[[], Awaitable[None]]:
    client = aiomqtt.Client(broker.host, broker.port, identifier="bench-aiomqtt", max_inflight_messages=inflight)
    client.pending_calls_threshold = 1 << 30
    await client.__aenter__()

    async def go() -> None:
        try:
            for b in _batches(msgs, batch):
                await asyncio.gather(*(client.publish(t, p, qos=1, retain=r, timeout=60) for t, p, r in b))
        finally:
            await client.__aexit__(None, None, None)
    return go


async def run_paho_batch(broker: Mosquitto, msgs: list[Msg], batch: int, inflight: int) -> Callable[[], Awaitable[None]]:
    client = aiomqtt.Client(broker.host, broker.port, identifier="bench-paho", max_inflight_messages=inflight)
    await client.__aenter__()
    paho = client._client
    waiting: dict[int, list[Any]] = {}  # mid -> [left, future] shared by the batch

    def on_publish(_c: Any, _u: Any, mid: int, _rc: Any, _p: Any) -> None:
        entry = waiting.pop(mid, None)
        if entry is not None:
            entry[0] -= 1
            if not entry[0]:
                entry[1].set_result(None)

    paho.on_publish = on_publish
    loop = asyncio.get_running_loop()

    async def go() -> None:
        try:
            for b in _batches(msgs, batch):
                entry: list[Any] = [len(b), loop.create_future()]
                for t, p, r in b:
                    info = paho.publish(t, p, 1, r)
                    if info.rc:
                        raise RuntimeError(f"paho publish rc {info.rc}")
                    if info.is_published():  # acked before we looked
                        entry[0] -= 1
                    else:
                        waiting[info.mid] = entry
                if entry[0]:
                    await entry[1]
        finally:
            await client.__aexit__(None, None, None)
    return go


async def run_wire(broker: Mosquitto, msgs: list[Msg], batch: int, inflight: int) -> Callable[[], Awaitable[None]]:
    conn = await MqttConnection.open(broker.host, broker.port, client_id="bench-wire", max_inflight=inflight)

    async def go() -> None:
        try:
            for b in _batches(msgs, batch):
                await conn.publish_many(b)
        finally:
            await conn.close()
    return go


async def run_forwarder(broker: Mosquitto, records: list[tuple[int, Record]], batch: int,
                        inflight: int) -> Callable[[], Awaitable[None]]:
    fwd = MqttForwarder(MqttForward(name="bench", url=broker.url, topic_prefix="bench"), gateway_eui=GW,
                        max_inflight=inflight)
    await fwd.connect()

    async def go() -> None:
        try:
            for b in _batches(records, batch):
                await fwd.send(b)
        finally:
            await fwd.close()
    return go


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--inflight", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    records = _records(args.n)
    probe = MqttForwarder(MqttForward(name="bench", url="mqtt://127.0.0.1", topic_prefix="bench"), gateway_eui=GW)
    msgs: list[Msg] = [m for _, r in records if (m := probe.message_for(r)) is not None]
    print(f"{args.n} uplinks, {len(msgs[0][1])}-byte payloads, batch {args.batch}, in flight {args.inflight}, "
          f"best of {args.rounds} rounds (interleaved)")
    paths: dict[str, Callable[[Mosquitto], Awaitable[Callable[[], Awaitable[None]]]]] = {
        "aiomqtt": lambda b: run_aiomqtt(b, msgs, args.batch, args.inflight),
        "paho-batch": lambda b: run_paho_batch(b, msgs, args.batch, args.inflight),
        "wire": lambda b: run_wire(b, msgs, args.batch, args.inflight),
        "forwarder": lambda b: run_forwarder(b, records, args.batch, args.inflight),
    }
    results: dict[str, list[tuple[float, float, float]]] = {k: [] for k in paths}
    with tempfile.TemporaryDirectory() as d:
        broker = Mosquitto(Path(d) / "mosq")
        broker.conf.write_text(broker.conf.read_text().replace("persistence true", "persistence false"))
        broker.start()
        try:
            for _ in range(args.rounds):
                for name, make in paths.items():
                    go = await make(broker)
                    w0, c0, b0 = time.perf_counter(), time.process_time(), _broker_cpu(broker)
                    await go()
                    w, c, bc = time.perf_counter() - w0, time.process_time() - c0, _broker_cpu(broker) - b0
                    results[name].append((args.n / w, c / args.n * 1e6, bc / args.n * 1e6))
        finally:
            broker.stop()
    base = max(r[0] for r in results["aiomqtt"])
    base_cpu = min(r[1] for r in results["aiomqtt"])
    print(f"{'path':<11} {'msgs/s':>9} {'CPU us/msg':>11} {'broker us/msg':>14} {'x speed':>8} {'x CPU':>6}")
    for name, rs in results.items():
        rate, cpu = max(r[0] for r in rs), min(r[1] for r in rs)
        broker_cpu = statistics.median(r[2] for r in rs)
        print(f"{name:<11} {rate:>9.0f} {cpu:>11.1f} {broker_cpu:>14.1f} {rate / base:>8.2f} {base_cpu / cpu:>6.2f}")


if __name__ == "__main__":
    asyncio.run(main())
