"""Schwebe side by side with the gateways people would pick instead, on the same traffic.

Contenders: Schwebe (`schwebe run`: packet-forwarder source, durable buffer, MQTT out);
ThingsBoard IoT Gateway (PyPI `thingsboard-gateway`, socket connector in UDP mode, sqlite
storage, MQTT out), stock and with the two fixes in tests/bench/peers/tb/launch.py; Node-RED
(npm `node-red`: udp in -> function -> mqtt out, QoS 1). Their configurations are the files in
tests/bench/peers/ (ports filled in at run time). Each runs in its own environment, made by
`make bench-peers`.

The traffic is `schwebe simulate --no-duty-cycle` (parking sensors, Semtech UDP, up to 8 rxpk
per datagram). A counting subscriber on the same mosquitto counts unique uplinks (PHYPayloads)
per simulated gateway EUI, so batching differences do not matter; every phase uses its own EUI.
The subscriber also answers ThingsBoard's session-limits request as the platform would.

Per contender and repetition (contenders alternated, order rotated each repetition):
  cost      500 frames/s for --cost-seconds: CPU per 10 000 delivered frames, bytes written
            (/proc/<pid>/io write_bytes) per delivered frame, then the peak RSS (VmHWM)
  ladder    --ladder rates for --step-seconds each; "sustained" is the rate the sender really
            gave (sent / step) at the highest step with >= 99.9 % delivered (the ladder stops at
            the first step that loses more)
  outage    100 frames/s: 3 s, then the broker is stopped for --outage-seconds, restarted, and
            8 s more; lost = sent - delivered after the drain; also the seconds from the broker's
            return to the first uplink delivered after it
  kill      500 frames/s for --kill-seconds; SIGKILL the moment the sender stops, restart on
            the same data, lost = sent - delivered after the drain; once with a healthy broker
            (what is in flight inside), once with the broker down from before the first frame
            until after the restart (everything received is held: the durable buffer's case)
Each phase starts the contender anew (fresh data directory; the kill phase restarts it on its
own), so a backlog left by one phase cannot pass for another's deliveries.

Run: make bench-peers   (or .venv/bin/python tests/bench/bench_peers.py --tb-python
     .venv-tb/bin/python --node-red .bench-peers/node-red/node_modules/node-red/red.js)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway import frames  # noqa: E402
from tests.mosquitto import Mosquitto  # noqa: E402

PEERS = ROOT / "tests" / "bench" / "peers"
PROBE_EUI = 0xB827EBFFFE00FFFF
PHY_RE = re.compile(rb'"(?:phyPayload|data)"\s*:\s*"([A-Za-z0-9+/=]+)"')
EUI_RE = re.compile(r"([0-9a-f]{16})")
CONTENDERS = ("schwebe", "tb-stock", "tb-fixed", "node-red")
CLOSED_PORT = "http://127.0.0.1:9"  # ThingsBoard's update check goes nowhere


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- the counting subscriber -----------------------------------------------------------------
class Counter:
    """Unique uplinks per gateway EUI, from every contender's message shape."""

    def __init__(self, broker: Mosquitto, name: str) -> None:
        self.seen: dict[str, set[bytes]] = defaultdict(set)
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-count-{name}",
                                  clean_session=False)
        self.client.reconnect_delay_set(0.05, 0.5)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()
        if not self.ready.wait(10):
            raise RuntimeError("counting subscriber did not connect")

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        client.subscribe("#", qos=1)
        self.ready.set()

    def _on_message(self, client: mqtt.Client, _: Any, msg: mqtt.MQTTMessage) -> None:
        topic, payload = msg.topic, msg.payload
        if topic.startswith("v1/devices/me/rpc/request/"):
            # ThingsBoard asks the platform for its session limits and waits for the answer.
            req = json.loads(payload)
            if req.get("method") == "getSessionLimits":
                answer = {"maxPayloadSize": 65536, "maxInflightMessages": 100,
                          "rateLimits": {"messages": "", "telemetryMessages": "",
                                         "telemetryDataPoints": ""}}
                client.publish("v1/devices/me/rpc/response/" + topic.rsplit("/", 1)[1],
                               json.dumps(answer), qos=1)
            return
        with self.lock:
            if topic == "v1/gateway/telemetry":
                for device, entries in json.loads(payload).items():
                    eui = device.removeprefix("gw-")
                    for entry in entries:
                        phy = (entry.get("values") or {}).get("phy")
                        if phy:
                            self.seen[eui].add(phy.encode())
                return
            m = EUI_RE.search(topic)
            if m and topic.endswith("/event/up"):
                for phy in PHY_RE.findall(payload):
                    self.seen[m.group(1)].add(phy)

    def count(self, eui: int) -> int:
        with self.lock:
            return len(self.seen.get(f"{eui:016x}", ()))

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


# ---- contenders ------------------------------------------------------------------------------
@dataclass
class Contender:
    name: str
    work: Path
    udp: int
    broker: Mosquitto
    args: argparse.Namespace
    proc: subprocess.Popen[bytes] | None = None
    log: Any = None

    def fill(self, template: Path, dest: Path, **extra: str) -> None:
        text = template.read_text()
        text = text.replace('"@UDP_PORT@"', str(self.udp)).replace("@UDP_PORT@", str(self.udp))
        text = text.replace('"@MQTT_PORT@"', str(self.broker.port)).replace("@MQTT_PORT@", str(self.broker.port))
        for k, v in extra.items():
            text = text.replace(f"@{k}@", v)
        dest.write_text(text)

    def prepare(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        if self.name == "schwebe":
            self.fill(PEERS / "schwebe.toml", self.work / "schwebe.toml", DATA_DIR=str(self.work / "data"),
                      WEB_PORT=str(free_tcp_port()))
        elif self.name.startswith("tb-"):
            conf = self.work / "config"
            conf.mkdir(exist_ok=True)
            self.fill(PEERS / "tb" / "tb_gateway.json", conf / "tb_gateway.json")
            self.fill(PEERS / "tb" / f"socket-{self.name[3:]}.json", conf / "socket.json")
            shutil.copy(PEERS / "tb" / "logs.json", conf / "logs.json")
            (self.work / "logs").mkdir(exist_ok=True)
            (self.work / "data").mkdir(exist_ok=True)
        else:
            self.fill(PEERS / "node-red" / "flows.json", self.work / "flows.json")
            shutil.copy(PEERS / "node-red" / "settings.js", self.work / "settings.js")

    def start(self) -> None:
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        if self.name == "schwebe":
            cmd = [sys.executable, "-m", "gateway.cli", "run", "--config", str(self.work / "schwebe.toml")]
        elif self.name.startswith("tb-"):
            env.update(TB_GW_CONFIG_DIR=str(self.work / "config"), HTTPS_PROXY=CLOSED_PORT,
                       HTTP_PROXY=CLOSED_PORT, https_proxy=CLOSED_PORT, http_proxy=CLOSED_PORT,
                       NO_PROXY="127.0.0.1,localhost")
            cmd = [self.args.tb_python, str(PEERS / "tb" / "launch.py"), self.name[3:]]
        else:
            cmd = [self.args.node, self.args.node_red, "-u", str(self.work), "-s",
                   str(self.work / "settings.js")]
        self.log = open(self.work / "stdout.log", "ab")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(cmd, cwd=self.work if self.name != "schwebe" else ROOT,
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def pids(self) -> list[int]:
        """The process and its descendants (ThingsBoard or node may fork helpers)."""
        assert self.proc is not None
        out = [self.proc.pid]
        for pid in out:
            try:
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                continue
            out.extend(int(c) for c in children)
        return out

    def cpu_seconds(self) -> float:
        total = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def write_bytes(self) -> int:
        total = 0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/io").read_text().splitlines():
                    if line.startswith("write_bytes:"):
                        total += int(line.split()[1])
            except OSError:
                pass
        return total

    def peak_rss_mib(self) -> float:
        total = 0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1])
            except OSError:
                pass
        return total / 1024

    def wait_ready(self, counter: Counter, timeout: float = 90.0) -> float:
        """Seconds until a probe uplink comes out at the broker."""
        t0 = time.monotonic()
        before = counter.count(PROBE_EUI)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            n = 0
            while time.monotonic() - t0 < timeout:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited ({self.proc.returncode}); see {self.work}/stdout.log")
                phy = bytes([0x40, 1, 2, 3, 4, 0, n & 0xFF, (n >> 8) & 0xFF, 1, 0xAA]) + os.urandom(8)
                rx = {"tmst": n, "freq": 868.1, "chan": 0, "rfch": 0, "stat": 1, "modu": "LORA",
                      "datr": "SF7BW125", "codr": "4/5", "rssi": -70, "lsnr": 7.0,
                      "size": len(phy), "data": frames.b64encode(phy)}
                s.sendto(frames.encode_push_data(n & 0xFFFF, PROBE_EUI, [rx]), ("127.0.0.1", self.udp))
                n += 1
                deadline = time.monotonic() + 0.5
                while time.monotonic() < deadline:
                    if counter.count(PROBE_EUI) > before:
                        return time.monotonic() - t0
                    time.sleep(0.02)
        raise RuntimeError(f"{self.name} delivered nothing within {timeout:.0f} s; see {self.work}/stdout.log")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self.log:
            self.log.close()
            self.log = None


def simulate(udp: int, rate: float, seconds: float, eui: int, seed: int) -> int:
    """Run `schwebe simulate` and return the number of uplinks it sent."""
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "simulate", "--to", f"127.0.0.1:{udp}", "--rate", str(rate),
         "--duration", str(seconds), "--no-duty-cycle", "--sensors", "200", "--seed", str(seed),
         "--gateway-eui", f"{eui:016x}", "--stat-interval", "3600", "--keepalive", "3600"],
        cwd=ROOT, capture_output=True, text=True, check=True)
    m = re.search(r"sent (\d+) uplinks", out.stdout)
    if not m:
        raise RuntimeError(f"schwebe simulate printed no count: {out.stdout!r} {out.stderr!r}")
    return int(m.group(1))


def drain(counter: Counter, eui: int, sent: int, stall: float, cap: float) -> int:
    """Wait until every uplink arrived, or no new one for `stall` s, or `cap` s passed."""
    t0 = last_change = time.monotonic()
    last = counter.count(eui)
    while last < sent and time.monotonic() - last_change < stall and time.monotonic() - t0 < cap:
        time.sleep(0.1)
        now = counter.count(eui)
        if now != last:
            last, last_change = now, time.monotonic()
    return last


@dataclass
class Run:
    contender: str
    figures: dict[str, Any] = field(default_factory=dict)


class Slot:
    """One contender, one repetition: all phases on one broker."""

    def __init__(self, name: str, rep: int, args: argparse.Namespace, base: Path) -> None:
        self.name, self.rep, self.args = name, rep, args
        self.base = base / f"{name}-{rep}"
        self.broker = Mosquitto(self.base / "mosquitto")
        self.eui_seq = 0

    def next_eui(self) -> int:
        self.eui_seq += 1
        return 0xB827EBFFFE000000 | (self.rep << 8) | self.eui_seq

    def contender(self, phase: str) -> Contender:
        c = Contender(self.name, self.base / phase, free_udp_port(), self.broker, self.args)
        c.prepare()
        return c

    def run(self) -> dict[str, Any]:
        self.broker.start()
        counter = Counter(self.broker, f"{self.name}-{self.rep}")
        fig: dict[str, Any] = {}
        try:
            fig.update(self.phase_cost_and_ladder(counter))
            fig.update(self.phase_outage(counter))
            fig.update(self.phase_kill(counter))
        finally:
            counter.close()
            self.broker.stop()
        return fig

    def phase_cost_and_ladder(self, counter: Counter) -> dict[str, Any]:
        a = self.args
        c = self.contender("load")
        c.start()
        try:
            fig: dict[str, Any] = {"startup_s": round(c.wait_ready(counter), 2)}
            eui = self.next_eui()
            cpu0, wb0 = c.cpu_seconds(), c.write_bytes()
            sent = simulate(c.udp, 500, a.cost_seconds, eui, seed=self.rep * 100 + 1)
            got = drain(counter, eui, sent, stall=a.stall, cap=a.drain_cap)
            cpu, wb = c.cpu_seconds() - cpu0, c.write_bytes() - wb0
            fig.update(cost_sent=sent, cost_delivered=got,
                       cpu_s_per_10k=cpu / got * 10_000 if got else None,
                       bytes_per_frame=wb / got if got else None)
            sustained = 0
            for rate in a.ladder:
                eui = self.next_eui()
                sent = simulate(c.udp, rate, a.step_seconds, eui, seed=self.rep * 100 + 2 + int(rate))
                got = drain(counter, eui, sent, stall=a.stall, cap=a.drain_cap)
                fig.setdefault("ladder", []).append([rate, sent, got])
                if got < 0.999 * sent:
                    break
                sustained = rate
            fig["sustained_fps"] = sustained
            fig["peak_rss_mib"] = round(c.peak_rss_mib(), 1)
            return fig
        finally:
            c.stop()

    def phase_outage(self, counter: Counter) -> dict[str, Any]:
        a = self.args
        c = self.contender("outage")
        c.start()
        try:
            c.wait_ready(counter)
            eui = self.next_eui()
            result: dict[str, int] = {}
            sender = threading.Thread(target=lambda: result.update(
                sent=simulate(c.udp, 100, a.outage_seconds + 11, eui, seed=self.rep * 100 + 90)))
            sender.start()
            time.sleep(3)  # 3 s of traffic through, then the outage, then 8 s after it
            self.broker.stop()
            time.sleep(a.outage_seconds)
            held = counter.count(eui)
            self.broker.start()
            back = time.monotonic()
            resumed = None  # seconds from the broker's return to the first uplink delivered since
            while sender.is_alive() or (resumed is None and time.monotonic() - back < a.outage_seconds + 15):
                if resumed is None and counter.count(eui) > held:
                    resumed = round(time.monotonic() - back, 1)
                time.sleep(0.05)
            sender.join()
            got = drain(counter, eui, result["sent"], stall=max(a.stall, 5), cap=a.outage_seconds + 15)
            return {"outage_sent": result["sent"], "outage_lost": result["sent"] - got,
                    "outage_resumed_s": resumed}
        finally:
            c.stop()

    def phase_kill(self, counter: Counter) -> dict[str, Any]:
        """SIGKILL mid-stream, twice: with a healthy broker (what is in flight inside the
        contender at that moment) and with the broker down (everything received is still held:
        the case a durable buffer exists for). The kill comes the moment the sender stops."""
        a = self.args
        fig: dict[str, Any] = {}
        for key, broker_down in (("kill", False), ("kill_backlog", True)):
            c = self.contender(key)
            c.start()
            try:
                c.wait_ready(counter)
                eui = self.next_eui()
                if broker_down:
                    self.broker.stop()
                sent = simulate(c.udp, 500, a.kill_seconds, eui, seed=self.rep * 100 + 91 + broker_down)
                c.stop(signal.SIGKILL)
                c.start()
                if broker_down:
                    time.sleep(1)  # restarted before the broker comes back, as after a power cut
                    self.broker.start()
                c.wait_ready(counter)
                got = drain(counter, eui, sent, stall=max(a.stall, 5), cap=a.drain_cap + 10)
                fig.update({f"{key}_sent": sent, f"{key}_lost": sent - got})
            finally:
                c.stop()
        return fig


# ---- report ----------------------------------------------------------------------------------
METRICS = (
    ("sustained_fps", "sustained frames/s before loss", "{:.0f}"),
    ("cpu_s_per_10k", "CPU s per 10 000 frames (at 500/s)", "{:.2f}"),
    ("peak_rss_mib", "peak RSS MiB", "{:.0f}"),
    ("bytes_per_frame", "bytes written per frame (at 500/s)", "{:.0f}"),
    ("outage_lost", "lost, broker down {outage} s (at 100/s)", "{:.0f}"),
    ("outage_resumed_s", "s from the broker's return to the next delivery", "{:.1f}"),
    ("kill_lost", "lost, SIGKILL + restart, broker up", "{:.0f}"),
    ("kill_backlog_lost", "lost, SIGKILL + restart, broker down", "{:.0f}"),
)
LOSSES = ("outage_lost", "kill_lost", "kill_backlog_lost")
COST = ("cpu_s_per_10k", "bytes_per_frame")
# What a contender cannot do, whatever the numbers say: the cell says "cannot" and why.
CANNOT = {
    ("node-red", "bytes_per_frame"): "no disk buffer, in-flight messages live in memory",
}


def median(runs: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def sustained(fig: dict[str, Any], step_seconds: float) -> float:
    """Frames/s the sender really gave at the highest rate delivered whole (it may give less than
    asked at the top of the ladder: it shares the cores too); 0 when the first rate lost."""
    best = 0.0
    for _rate, sent, got in fig.get("ladder", ()):
        if got < 0.999 * sent:
            break
        best = sent / step_seconds
    return best


def cell(name: str, key: str, runs: list[dict[str, Any]], base: float | None, fmt: str,
         args: Any) -> str:
    """One table cell: the median, its ratio to Schwebe's, and what the number leaves out."""
    if (name, key) in CANNOT:
        return f"cannot ({CANNOT[(name, key)]})"
    if key == "sustained_fps":
        ladder = [float(r) for r in args.ladder]
        top = median(runs, key) or 0
        if top == 0:
            return f"< {ladder[0]:.0f} (lost at the lowest rate asked)"
        v = median([{"s": sustained(r, args.step_seconds)} for r in runs], "s") or 0
        if top >= ladder[-1]:
            return f">= {v:.0f} (no loss at the top step, {ladder[-1]:.0f} asked)"
        return f"{v:.0f}"
    v = median(runs, key)
    if v is None:
        return "n/a"
    out = fmt.format(v)
    if key in LOSSES:
        sent = median(runs, key.replace("lost", "sent"))
        return out + (f" of {sent:.0f}" if sent else "")
    if name != "schwebe" and base and key != "outage_resumed_s":
        out += f" ({v / base:.1f}x)"
    if key in COST:
        sent, got = median(runs, "cost_sent"), median(runs, "cost_delivered")
        if sent and got is not None and got < 0.999 * sent:
            out += f" (per delivered frame; delivered {got:.0f} of {sent:.0f})"
    return out


def table(results: dict[str, list[dict[str, Any]]], args: Any) -> str:
    """The Markdown table of medians, as the README shows it."""
    names = [n for n in CONTENDERS if n in results]
    lines = [f"| figure (median of {args.repeat}) | " + " | ".join(names) + " |",
             "|---" * (len(names) + 1) + "|"]
    for key, label, fmt in METRICS:
        base = median(results.get("schwebe", []), key)
        cells = [cell(n, key, results[n], base, fmt, args) for n in names]
        lines.append(f"| {label.format(outage=f'{args.outage_seconds:g}')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tb-python", default=str(ROOT / ".venv-tb" / "bin" / "python"))
    ap.add_argument("--node", default=shutil.which("node") or "/usr/bin/node")
    ap.add_argument("--node-red", default=str(ROOT / ".bench-peers" / "node-red" / "node_modules" / "node-red" / "red.js"))
    ap.add_argument("--contenders", default=",".join(CONTENDERS))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cost-seconds", type=float, default=5.0)
    ap.add_argument("--step-seconds", type=float, default=3.0)
    ap.add_argument("--ladder", default="1000,2000,4000,8000")
    ap.add_argument("--outage-seconds", type=float, default=10.0)
    ap.add_argument("--kill-seconds", type=float, default=3.0)
    ap.add_argument("--stall", type=float, default=3.0, help="drain: stop after this long without progress")
    ap.add_argument("--drain-cap", type=float, default=15.0)
    ap.add_argument("--results", default=str(PEERS / "results.json"))
    ap.add_argument("--plot", default=str(ROOT / "docs" / "peers.png"))
    args = ap.parse_args()
    # Stopped by SIGTERM or Ctrl-C (even when started in the background, where SIGINT comes
    # ignored): unwind, so that every contender and broker started so far is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    args.ladder = [float(r) for r in args.ladder.split(",")]
    # The peers run in their own work directories: paths given relative to here must hold there.
    args.tb_python, args.node_red = os.path.abspath(args.tb_python), os.path.abspath(args.node_red)
    names = [n for n in args.contenders.split(",") if n]
    base = Path(tempfile.mkdtemp(prefix="schwebe-peers-", dir=ROOT))  # on disk: write_bytes counts
    results: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    t0 = time.monotonic()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start "
          "(sender, broker and contender share them)", flush=True)
    try:
        for rep in range(args.repeat):
            order = names[rep % len(names):] + names[:rep % len(names)]
            for name in order:
                t = time.monotonic()
                fig = Slot(name, rep, args, base).run()
                results[name].append(fig)
                print(f"rep {rep + 1} {name:9} {time.monotonic() - t:5.0f} s  " + json.dumps(
                    {k: (round(v, 2) if isinstance(v, float) else v) for k, v in fig.items()}), flush=True)
    finally:
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(base, ignore_errors=True)
    out = table(results, args)
    print()
    print(out)
    print(f"\nwall time {time.monotonic() - t0:.0f} s")
    kept = ("repeat", "cost_seconds", "step_seconds", "ladder", "outage_seconds", "kill_seconds",
            "stall", "drain_cap")
    machine = {"cpus": os.cpu_count(), "loadavg_at_end": os.getloadavg(),
               "wall_s": round(time.monotonic() - t0), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    Path(args.results).write_text(json.dumps({"args": {k: getattr(args, k) for k in kept}, "machine": machine,
                                              "runs": results, "table": out}, indent=1) + "\n")
    if os.path.exists(args.tb_python):
        subprocess.run([args.tb_python, str(PEERS / "plot.py"), args.results, args.plot], check=False)


if __name__ == "__main__":
    main()
