"""End to end: simulated packet forwarder -> gateway (GwmpServer, SQLite buffer, MQTT + LNS forwarders)
-> real mosquitto -> subscriber counting unique uplinks. Throughput steps, CPU per frame, RSS, latency.

Four processes so each one's CPU is its own: this script (sender, orchestration), the gateway
(the real ``Gateway(cfg)`` daemon), a subscriber + UDP network-server stand-in, and mosquitto.
Run: .venv/bin/python tests/bench/bench_end_to_end.py [--rates 2000,5000,10000,15000] [--seconds 5]

`--daemon` instead runs the real `schwebe run` (its own process, as systemd would start it) and
takes its CPU from /proc/<pid>/stat (utime + stime) over each step's window after a warm-up,
for the compiled build and the twin (SCHWEBE_NO_EXTENSIONS=1) alternated, `--repeat` times:
medians per frame. `--daemon-profile FILE` cProfiles one compiled daemon run instead.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import multiprocessing as mp
import os
import resource
import selectors
import socket
import struct
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from gateway import frames  # noqa: E402
from gateway.frames import build as lorawan_build  # noqa: E402
from tests.mosquitto import Mosquitto  # noqa: E402

GW_EUI = 0xB827EBFFFE000001
PF_EUI = 0xAA555A0000000101
PREFIX = "bench"
NWK = bytes(range(16))
APP = bytes(range(16, 32))


# --------------------------------------------------------------------------- gateway process

def _gateway_main(conn: Connection, cfg_text: str, profile: str | None = None) -> None:
    import logging

    logging.basicConfig(level=logging.WARNING)
    if not profile:
        asyncio.run(_gateway(conn, cfg_text))
        return
    import cProfile

    prof = cProfile.Profile()
    prof.runcall(asyncio.run, _gateway(conn, cfg_text))
    prof.dump_stats(profile)


async def _gateway(conn: Connection, cfg_text: str) -> None:
    from gateway.config import load_config_text
    from gateway.pipeline import Gateway
    from gateway.records import now_us

    gw = Gateway(load_config_text(cfg_text))
    lat: dict[str, list[int]] = {"mqtt": [], "lns": []}

    def instrument(name: str, fwd: Any) -> None:
        orig = fwd.send

        async def timed(records: Any) -> Any:
            result = await orig(records)
            # MQTT: send() returns when every PUBACK is in. LNS: the PUSH_DATA left at
            # last_push_sent_us (send() itself then waits for the PUSH_ACK).
            t = now_us() if name == "mqtt" else fwd.last_push_sent_us
            lat[name].extend(t - r.received_us for _, r in records)
            return result

        fwd.send = timed

    for fwd in gw.forwarders:
        instrument("lns" if fwd.name == "lns" else "mqtt", fwd)
    serve = asyncio.create_task(gw.serve(install_signals=False))
    await gw.supervisor.ready.wait()
    conn.send(gw.sources[0].bound_address)
    loop = asyncio.get_running_loop()
    while True:
        fut: asyncio.Future[None] = loop.create_future()
        loop.add_reader(conn.fileno(), lambda f=fut: f.done() or f.set_result(None))
        await fut
        loop.remove_reader(conn.fileno())
        cmd = conn.recv()
        if cmd == "stats":
            src = gw.sources[0].health()
            conn.send({"cpu_s": time.process_time(),
                       "rss_peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                       "received": gw.metrics.total("records_received"),
                       "acked": {n: d.acked for n, d in gw.deliveries.items()},
                       "lag": {n: d.health()["lag_records"] for n, d in gw.deliveries.items()},
                       "errors": {n: d.errors for n, d in gw.deliveries.items()},
                       "source": {k: src[k] for k in ("dropped", "rcvbuf") if k in src}})
        elif cmd == "latency":
            conn.send(lat)
            lat = {"mqtt": [], "lns": []}
        elif cmd == "stop":
            gw.supervisor.request_stop()
            await serve
            conn.send("stopped")
            return


# --------------------------------------------------------------------------- subscriber + LNS

def _utf8(s: str) -> bytes:
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def _sub_main(conn: Connection, host: str, port: int, lns_sock: socket.socket) -> None:
    """Raw MQTT subscriber (QoS 0, no executor) and a PUSH_ACK/PULL_ACK network-server stand-in."""
    s = socket.create_connection((host, port))
    body = _utf8("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 600) + _utf8("bench-sub")
    s.sendall(b"\x10" + bytes([len(body)]) + body)
    assert s.recv(4)[:1] == b"\x20"
    sub = struct.pack("!H", 1) + _utf8(f"{PREFIX}/gateway/+/event/up") + b"\x00"
    s.sendall(b"\x82" + bytes([len(sub)]) + sub)
    seen_mqtt: dict[str, float] = {}
    seen_lns: dict[str, float] = {}
    buf = bytearray()
    sel = selectors.DefaultSelector()
    sel.register(s, selectors.EVENT_READ, "mqtt")
    sel.register(lns_sock, selectors.EVENT_READ, "lns")
    sel.register(conn, selectors.EVENT_READ, "ctl")
    while True:
        for key, _ in sel.select():
            if key.data == "ctl":
                cmd = conn.recv()
                if cmd == "count":
                    conn.send((len(seen_mqtt), len(seen_lns)))
                elif cmd == "times":
                    conn.send((seen_mqtt, seen_lns))
                else:
                    return
            elif key.data == "lns":
                data, addr = lns_sock.recvfrom(65535)
                now = time.time()
                pkt = frames.parse_gwmp(data)
                if pkt.identifier == frames.PUSH_DATA:
                    for r in (pkt.body or {}).get("rxpk", []):
                        seen_lns.setdefault(r["data"], now)
                    lns_sock.sendto(frames.encode_push_ack(pkt.token, pkt.version), addr)
                elif pkt.identifier == frames.PULL_DATA:
                    lns_sock.sendto(frames.encode_pull_ack(pkt.token, pkt.version), addr)
            else:
                chunk = s.recv(1 << 20)
                if not chunk:
                    return
                now = time.time()
                buf += chunk
                pos = 0
                while True:
                    if len(buf) - pos < 2:
                        break
                    mult, n, i = 1, 0, pos + 1
                    while i < len(buf):
                        b = buf[i]
                        n += (b & 0x7F) * mult
                        mult *= 128
                        i += 1
                        if not b & 0x80:
                            break
                    else:
                        break
                    if len(buf) - i < n:
                        break
                    if buf[pos] >> 4 == 3:  # PUBLISH, QoS 0
                        tlen = struct.unpack_from("!H", buf, i)[0]
                        payload = bytes(buf[i + 2 + tlen:i + n])
                        seen_mqtt.setdefault(orjson.loads(payload)["phyPayload"], now)
                    pos = i + n
                del buf[:pos]


# --------------------------------------------------------------------------- sender

class Frames:
    """Real LoRaWAN 1.0 data uplinks (MIC, encrypted payload), unique by (DevAddr, FCnt)."""

    def __init__(self) -> None:
        self.n = 0

    def take(self, count: int) -> list[dict[str, Any]]:
        out = []
        for _ in range(count):
            dev, fcnt = divmod(self.n, 60000)
            phy = lorawan_build.build_data_uplink(dev_addr=0x26010000 + dev % 4096 + (dev // 4096 << 12),
                                            fcnt=fcnt, fport=2, payload=bytes([1, self.n & 0xFF, 0x42]),
                                            nwk_s_key=NWK, app_s_key=APP)
            self.n += 1
            out.append({"tmst": self.n & 0xFFFFFFFF, "freq": 868.1, "chan": 0, "rfch": 0, "stat": 1,
                        "modu": "LORA", "datr": "SF7BW125", "codr": "4/5", "rssi": -60, "lsnr": 7.5,
                        "size": len(phy), "data": base64.b64encode(phy).decode()})
        return out


def send_paced(sock: socket.socket, addr: Any, datagrams: list[tuple[bytes, list[str]]], rate_dgram: float,
               sent_at: dict[str, float] | None = None) -> float:
    """Send datagrams at ``rate_dgram``/s in 1 ms slices; returns the achieved duration."""
    t0 = time.perf_counter()
    i = 0
    while i < len(datagrams):
        due = min(len(datagrams), int((time.perf_counter() - t0) * rate_dgram) + 1)
        while i < due:
            data, ids = datagrams[i]
            sock.sendto(data, addr)
            if sent_at is not None:
                now = time.time()
                for x in ids:
                    sent_at[x] = now
            i += 1
        time.sleep(0.001)
    return time.perf_counter() - t0


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


# --------------------------------------------------------------------------- orchestration

def config(data_dir: Path, broker: Mosquitto, lns_port: int | None) -> str:
    lns = f'\n[[forward.gwmp]]\nname = "lns"\nserver = "127.0.0.1:{lns_port}"\n' if lns_port else ""
    return f"""
[gateway]
eui = "{GW_EUI:016x}"
data_dir = "{data_dir}"

[[sources.gwmp]]
bind = "127.0.0.1:0"

[[forward.mqtt]]
name = "mqtt"
url = "{broker.url}"
topic_prefix = "{PREFIX}"
{lns}
[web]
bind = "127.0.0.1:0"
open_read_only = true
"""


def start_gateway(cfg_text: str, profile: str | None = None) -> tuple[mp.process.BaseProcess, Connection, Any]:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_gateway_main, args=(child, cfg_text, profile), daemon=True)
    proc.start()
    if not parent.poll(30):
        raise RuntimeError("gateway process did not become ready in 30 s")
    return proc, parent, parent.recv()


def ask(conn: Connection, cmd: str) -> Any:
    conn.send(cmd)
    return conn.recv()


def wait_drained(sub: Connection, want: int, idle_s: float = 3.0, limit_s: float = 60.0) -> tuple[int, float]:
    """Poll the subscriber until it has ``want`` uplinks or nothing new came for ``idle_s``."""
    t0 = time.perf_counter()
    last, last_change = -1, t0
    while True:
        got = ask(sub, "count")[0]
        now = time.perf_counter()
        if got != last:
            last, last_change = got, now
        if got >= want or now - last_change > idle_s or now - t0 > limit_s:
            return got, (now - t0) if got >= want else float("inf")
        time.sleep(0.02)


def _proc_cpu_s(pid: int) -> tuple[float, float]:
    """(utime, stime) of a process (all its threads) from /proc/<pid>/stat, in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state is fields[0]
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def _http_json(port: int, path: str) -> Any:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return orjson.loads(r.read())


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def daemon_step(work: Path, broker: Mosquitto, sub: Connection, gen: Frames, rate: int, seconds: float,
                per_datagram: int, twin: bool, profile: str | None = None,
                callgrind: Path | None = None) -> tuple[float, float, int, float]:
    """One `schwebe run` at ``rate`` frames/s: (user and system CPU µs per frame over the
    window, frames lost at the subscriber, the times it went to sleep per frame: voluntary
    context switches from /proc/<pid>/status, each a wake-up on cold caches after). ``callgrind``: the daemon runs under valgrind's
    callgrind, its counters zeroed after the warm-up and dumped after the window's drain
    into that file (the window's instructions: `_callgrind_instructions`)."""
    import shutil
    import signal
    import subprocess

    data_dir = work / f"daemon-{time.monotonic_ns()}"
    udp, web = _free_port(socket.SOCK_DGRAM), _free_port(socket.SOCK_STREAM)
    cfg_text = config(data_dir, broker, None).replace('bind = "127.0.0.1:0"', f'bind = "127.0.0.1:{udp}"', 1)
    cfg_text = cfg_text.replace('bind = "127.0.0.1:0"', f'bind = "127.0.0.1:{web}"', 1)
    cfg = work / f"{data_dir.name}.toml"
    cfg.write_text(cfg_text)
    env = {**os.environ, "SCHWEBE_NO_EXTENSIONS": "1" if twin else "0"}
    cmd = [sys.executable, "-m", "gateway.cli", "run", "--config", str(cfg)]
    if profile:
        cmd = [sys.executable, "-m", "cProfile", "-o", profile, "-m", "gateway.cli", "run", "--config", str(cfg)]
    if callgrind is not None:
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={callgrind}", *cmd]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT, env=env)
    pf = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    addr = ("127.0.0.1", udp)
    k = per_datagram
    try:
        deadline = time.monotonic() + (300 if callgrind is not None else 30)
        while True:
            try:
                if _http_json(web, "/api/status")["forwarders"]["mqtt"]["connected"]:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("daemon did not come up in 30 s")
            time.sleep(0.2)

        def datagrams(count: int) -> list[tuple[bytes, list[str]]]:
            rx = gen.take(count)
            return [(frames.encode_push_data(i & 0xFFFF, PF_EUI, rx[i:i + k]), []) for i in range(0, count, k)]

        warm = datagrams(int(rate * min(2.0, seconds / 2)))
        window = datagrams(int(rate * seconds))
        before_sub = ask(sub, "count")[0]
        send_paced(pf, addr, warm, rate / k)  # the first commits, pages and connections exist
        if callgrind is not None:
            time.sleep(2.0)  # the warm-up drained: its work is not the window's
            subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True, stdout=subprocess.DEVNULL)
        user0, sys0 = _proc_cpu_s(proc.pid)
        sleeps0 = _voluntary_switches(proc.pid)
        send_paced(pf, addr, window, rate / k)
        want = before_sub + int(rate * min(2.0, seconds / 2)) + int(rate * seconds)
        got, _ = wait_drained(sub, want, idle_s=2.0, limit_s=30.0)
        user1, sys1 = _proc_cpu_s(proc.pid)
        sleeps = _voluntary_switches(proc.pid) - sleeps0
        if callgrind is not None:
            subprocess.run(["callgrind_control", "-d", "window", str(proc.pid)], check=True,
                           stdout=subprocess.DEVNULL)
        sent = int(rate * seconds)
        return (user1 - user0) / sent * 1e6, (sys1 - sys0) / sent * 1e6, want - got, sleeps / sent
    finally:
        pf.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        shutil.rmtree(data_dir, ignore_errors=True)


def _voluntary_switches(pid: int) -> int:
    """Every thread's voluntary context switches (the times they went to sleep)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                total += int(line.split()[1])
    return total


def _callgrind_instructions(out: Path) -> int:
    """Instructions in the dump callgrind_control -d wrote (``<out>.1``: part 1)."""
    for line in Path(f"{out}.1").read_text().splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise RuntimeError(f"no summary line in {out}.1")


def daemon_callgrind(args: argparse.Namespace, work: Path, broker: Mosquitto, sub: Connection,
                     gen: Frames) -> None:
    """Instructions per frame of `schwebe run` over a fixed window: what CPU time cannot give
    on a shared machine, a count that does not move with the neighbours (cache misses and the
    kernel are not in it). Compiled build; valgrind slows the daemon ~50x, so a low rate."""
    rate = int(args.rates.split(",")[0])
    out = work / "callgrind.out"
    daemon_step(work, broker, sub, gen, rate, args.seconds, args.per_datagram, False, callgrind=out)
    n = int(rate * args.seconds)
    ins = _callgrind_instructions(out)
    print(f"schwebe run under callgrind, {rate} frames/s for {args.seconds:g} s, {args.per_datagram} rxpk "
          f"per PUSH_DATA: {ins / 1e6:.1f} M instructions in the window (and its drain), "
          f"{ins / n / 1000:.1f} k per frame")


def daemon_main(args: argparse.Namespace) -> None:
    import statistics

    rates = [int(r) for r in args.rates.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench-daemon-"))
    broker = Mosquitto(work / "mosquitto")
    broker.start()
    lns_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    lns_sock.bind(("127.0.0.1", 0))
    ctx = mp.get_context("spawn")
    sub, sub_child = ctx.Pipe()
    subp = ctx.Process(target=_sub_main, args=(sub_child, broker.host, broker.port, lns_sock), daemon=True)
    subp.start()
    time.sleep(0.5)
    gen = Frames()
    try:
        if args.daemon_callgrind:
            daemon_callgrind(args, work, broker, sub, gen)
            return
        if args.daemon_profile:
            user, system, lost, _ = daemon_step(work, broker, sub, gen, rates[0], args.seconds,
                                                args.per_datagram, False, args.daemon_profile)
            import pstats

            print(f"schwebe run at {rates[0]} frames/s under cProfile: {user + system:.1f} µs/frame "
                  f"(user {user:.1f}, system {system:.1f}), lost {lost}")
            pstats.Stats(args.daemon_profile).sort_stats("tottime").print_stats(30)
            return
        print(f"schwebe run, {args.per_datagram} rxpk per PUSH_DATA, one MQTT forwarder, {args.seconds:g} s "
              f"windows, median of {args.repeat} (gateway CPU from /proc/<pid>/stat, utime + stime)")
        print(f"{'frames/s':>9} {'cython µs/frame':>16} {'(user+sys)':>12} {'twin µs/frame':>14} "
              f"{'twin/cython':>12} {'lost':>6} {'sleeps/frame':>13}")
        for rate in rates:
            res: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
            sleeps: list[float] = []
            lost = 0
            for _ in range(args.repeat):
                for twin in (False, True):
                    user, system, n_lost, n_sleeps = daemon_step(work, broker, sub, gen, rate, args.seconds,
                                                                 args.per_datagram, twin)
                    res[twin].append((user, system))
                    lost += n_lost
                    if not twin:
                        sleeps.append(n_sleeps)
            c = statistics.median(u + s for u, s in res[False])
            t = statistics.median(u + s for u, s in res[True])
            cu = statistics.median(u for u, _ in res[False])
            cs = statistics.median(s for _, s in res[False])
            print(f"{rate:>9} {c:>16.1f} {f'{cu:.0f}+{cs:.0f}':>12} {t:>14.1f} {t / c:>11.2f}x {lost:>6} "
                  f"{statistics.median(sleeps):>13.3f}   "
                  f"(cython runs: {', '.join(f'{u + s:.0f}' for u, s in res[False])})", flush=True)
    finally:
        sub.send("quit")
        subp.join(5)
        broker.stop()
        import shutil

        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="2000,5000,10000,15000,20000", help="offered frames/s steps")
    ap.add_argument("--seconds", type=float, default=5.0, help="duration of each throughput step")
    ap.add_argument("--latency-seconds", type=float, default=20.0, help="duration of the latency run")
    ap.add_argument("--latency-rate", type=float, default=100.0, help="frames/s of the latency run")
    ap.add_argument("--latency-per-datagram", type=int, default=1, help="rxpk per PUSH_DATA in the latency run")
    ap.add_argument("--per-datagram", type=int, default=8, help="rxpk per PUSH_DATA in the throughput steps")
    ap.add_argument("--profile", metavar="FILE", help="cProfile the gateway during the throughput steps "
                    "into FILE (pstats) and print the top functions")
    ap.add_argument("--daemon", action="store_true", help="CPU per frame of the real `schwebe run` "
                    "(compiled and twin) at --rates, --per-datagram rxpk per PUSH_DATA")
    ap.add_argument("--repeat", type=int, default=3, help="--daemon: runs per build and rate (medians)")
    ap.add_argument("--daemon-profile", metavar="FILE", help="--daemon: one compiled run under cProfile")
    ap.add_argument("--daemon-callgrind", action="store_true",
                    help="instructions per frame of one compiled `schwebe run` under valgrind's callgrind "
                         "(deterministic; use a low rate such as --rates 200 --seconds 10)")
    args = ap.parse_args()
    if args.daemon or args.daemon_profile or args.daemon_callgrind:
        daemon_main(args)
        return
    rates = [int(r) for r in args.rates.split(",")]

    work = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    broker = Mosquitto(work / "mosquitto")
    broker.start()
    lns_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    lns_sock.bind(("127.0.0.1", 0))
    lns_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    ctx = mp.get_context("spawn")
    sub, sub_child = ctx.Pipe()
    subp = ctx.Process(target=_sub_main, args=(sub_child, broker.host, broker.port, lns_sock), daemon=True)
    subp.start()
    time.sleep(0.5)
    pf = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    gen = Frames()
    rows: list[tuple[Any, ...]] = []
    try:
        # ---- throughput steps (MQTT only: the 10 000/s target is for the broker path)
        proc, gw, addr = start_gateway(config(work / "data1", broker, None), args.profile)
        base = ask(gw, "stats")
        for rate in rates:
            count = int(rate * args.seconds)
            rx = gen.take(count)
            k = args.per_datagram
            dgrams = [(frames.encode_push_data(i & 0xFFFF, PF_EUI, rx[i:i + k]), []) for i in range(0, count, k)]
            before_sub = ask(sub, "count")[0]
            dur = send_paced(pf, addr, dgrams, rate / k)
            got, drain = wait_drained(sub, before_sub + count)
            st = ask(gw, "stats")
            cpu = st["cpu_s"] - base["cpu_s"]
            received = st["received"] - base["received"]
            rows.append((rate, count / dur, received, got - before_sub, count - (got - before_sub),
                         drain, cpu / max(1, received) * 1e6, st["rss_peak_kib"] / 1024, st["source"]))
            base = st
        ask(gw, "stop")
        proc.join(10)

        # ---- latency at 100 frames/s (--latency-rate), one rxpk per PUSH_DATA, MQTT + LNS forwarders
        proc, gw, addr = start_gateway(config(work / "data2", broker, lns_sock.getsockname()[1]))
        time.sleep(1.0)  # both forwarders connected
        ask(gw, "latency")
        lrate, lk = args.latency_rate, args.latency_per_datagram
        count = int(lrate * args.latency_seconds)
        rx = gen.take(count)
        dgrams = [(frames.encode_push_data(i & 0xFFFF, PF_EUI, rx[j:j + lk]), [r["data"] for r in rx[j:j + lk]])
                  for i, j in enumerate(range(0, count, lk))]
        sent_at: dict[str, float] = {}
        send_paced(pf, addr, dgrams, lrate / lk, sent_at)
        time.sleep(1.0)
        lat = ask(gw, "latency")
        seen_mqtt, seen_lns = ask(sub, "times")
        wire_mqtt = [(seen_mqtt[x] - t) * 1e3 for x, t in sent_at.items() if x in seen_mqtt]
        wire_lns = [(seen_lns[x] - t) * 1e3 for x, t in sent_at.items() if x in seen_lns]
        ask(gw, "stop")
        proc.join(10)
    finally:
        sub.send("quit")
        subp.join(5)
        broker.stop()

    print(f"\nEnd to end on {os.cpu_count()} cores, {args.per_datagram} rxpk per PUSH_DATA, "
          f"{args.seconds:g} s per step (CPU and RSS: the gateway process only)\n")
    print(f"{'offered/s':>10} {'achieved/s':>10} {'received':>9} {'at sub':>8} {'lost':>6} "
          f"{'drain s':>8} {'CPU us/fr':>9} {'RSS MiB':>8}  source")
    best = 0
    for rate, achieved, received, got, lost, drain, cpu_us, rss, src in rows:
        ok = lost == 0 and drain <= 1.0 + args.seconds * 0.2
        best = rate if ok else best
        print(f"{rate:>10} {achieved:>10.0f} {received:>9} {got:>8} {lost:>6} {drain:>8.2f} "
              f"{cpu_us:>9.1f} {rss:>8.1f}  {src}")
    print(f"\nmax sustained rate with no loss and drain <= 1 s + 20% of the step: {best} frames/s "
          f"(target >= 10000)")
    print(f"\nlatency at {args.latency_rate:g} frames/s, {args.latency_per_datagram} rxpk per PUSH_DATA, "
          f"{count} frames (ms)          p50      p99      max     n")
    for label, xs in (("receipt -> MQTT PUBACK (in gateway)", [x / 1e3 for x in lat["mqtt"]]),
                      ("receipt -> PUSH_DATA sent (in gateway)", [x / 1e3 for x in lat["lns"]]),
                      ("sender -> subscriber (wire to wire)", wire_mqtt),
                      ("sender -> LNS stand-in (wire to wire)", wire_lns)):
        print(f"  {label:<44} {pct(xs, 50):>8.2f} {pct(xs, 99):>8.2f} {max(xs, default=float('nan')):>8.2f} "
              f"{len(xs):>5}")
    print("targets: PUBACK p99 <= 50 ms, PUSH_DATA p99 <= 5 ms")
    if args.profile:
        import pstats

        print(f"\ngateway profile during the throughput steps ({args.profile}), top 25 by own time:")
        pstats.Stats(args.profile).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
