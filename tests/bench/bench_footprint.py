"""The daemon's footprint on a gateway: RSS, CPU share and bytes written at 1, 10 and 100
frames/s, and start to READY with a 10-million-record backlog (README "Deploy").

The real `schwebe run` (one GWMP source, the durable buffer, an MQTT forwarder to a real
mosquitto that acknowledges), fed PUSH_DATA at a steady rate from this process. Per rate:
VmRSS and VmHWM from /proc/<pid>/status at the end, CPU share = the daemon's utime+stime over
wall time (% of one core), bytes written = /proc/<pid>/io write_bytes, scaled to one hour.
Start to READY: the backlog is written with the Buffer API into data_dir first (forwarder
cursor at the oldest record), then the time from spawning the daemon to READY=1 on its
NOTIFY_SOCKET. Data directory on the repository's disk (a tmpfs would count 0 bytes).
The repository's sources are byte-compiled first, as the .deb ships them.
Run: .venv/bin/python tests/bench/bench_footprint.py [--rates 1,10,100] [--seconds 60]
     [--backlog 10000000] [--schwebe /usr/bin/schwebe]
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway import frames  # noqa: E402
from gateway.buffer import Buffer  # noqa: E402
from gateway.records import make_record  # noqa: E402
from tests.mosquitto import Mosquitto  # noqa: E402

PF_EUI = 0xAA555A0000000101
TICK = os.sysconf("SC_CLK_TCK")


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])  # kB
    raise RuntimeError(key)


def write_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError("no write_bytes")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def config(work: Path, udp: int, web: int, broker_url: str) -> Path:
    cfg = work / "schwebe.toml"
    cfg.write_text(f"""
[gateway]
eui = "b827ebfffe000001"
data_dir = "{work / 'data'}"
[[sources.gwmp]]
bind = "127.0.0.1:{udp}"
[[forward.mqtt]]
name = "broker"
url = "{broker_url}"
[buffer]
max_bytes = "4GiB"
min_free = "64MiB"
[web]
bind = "127.0.0.1:{web}"
[log]
level = "warning"
""")
    return cfg


def spawn(cmd: list[str], cfg: Path, notify: str | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ}
    if notify:
        env["NOTIFY_SOCKET"] = notify
    return subprocess.Popen([*cmd, "run", "--config", str(cfg)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=ROOT, env=env)


def wait_ready(work: Path, cmd: list[str], cfg: Path) -> tuple[subprocess.Popen[bytes], float]:
    path = str(work / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(120)
    try:
        t0 = time.monotonic()
        proc = spawn(cmd, cfg, path)
        while not sock.recv(4096).startswith(b"READY=1"):
            pass
        return proc, time.monotonic() - t0
    finally:
        sock.close()
        os.unlink(path)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_rate(cmd: list[str], rate: float, seconds: float, work: Path) -> dict[str, float]:
    broker = Mosquitto(work / "mosquitto")
    broker.start()
    udp, web = free_port(socket.SOCK_DGRAM), free_port()
    cfg = config(work, udp, web, broker.url)
    proc, ready = wait_ready(work, cmd, cfg)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    n = 0

    def send_for(duration: float) -> None:
        nonlocal n
        t0 = time.monotonic()
        while (elapsed := time.monotonic() - t0) < duration:
            due = int(elapsed * rate) + 1
            while n < due:
                phy = bytes([0x40, n & 0xFF, 1, 2, 0x26, 0, n & 0xFF, (n >> 8) & 0xFF, 1,
                             0xAA, 0xBB, 0xCC, 0xDD, 1, 2, 3, 4])
                rx = {"tmst": n, "freq": 868.1, "chan": 0, "rfch": 0, "stat": 1,
                      "modu": "LORA", "datr": "SF7BW125", "codr": "4/5", "rssi": -70,
                      "lsnr": 7.0, "size": len(phy), "data": frames.b64encode(phy)}
                sock.sendto(frames.encode_push_data(n & 0xFFFF, PF_EUI, [rx]), ("127.0.0.1", udp))
                n += 1
            time.sleep(min(0.05, 1 / rate))

    try:
        send_for(min(10.0, seconds / 3))  # warm-up: store, cursors, first pages exist
        cpu0, wb0, t0 = cpu_seconds(proc.pid), write_bytes(proc.pid), time.monotonic()
        send_for(seconds)
        wall = time.monotonic() - t0
        return {"ready_s": ready,
                "rss_mib": proc_status(proc.pid, "VmRSS") / 1024,
                "hwm_mib": proc_status(proc.pid, "VmHWM") / 1024,
                "cpu_pct": 100 * (cpu_seconds(proc.pid) - cpu0) / wall,
                "mb_per_h": (write_bytes(proc.pid) - wb0) / wall * 3600 / 1e6,
                "numpy": float("numpy" in Path(f"/proc/{proc.pid}/maps").read_text())}
    finally:
        sock.close()
        stop(proc)
        broker.stop()


def run_backlog(cmd: list[str], records: int, work: Path) -> tuple[float, float, float]:
    data = work / "data"
    data.mkdir()
    body = {"gateway_eui": "b827ebfffe000001", "rxpk": {"data": "QAEjRWeAAQABqrvM3e7/" * 3, "rssi": -97}}
    t0 = time.monotonic()
    b = Buffer(data / "buffer.sqlite3", max_bytes=1 << 40, memory_reserve_bytes=1 << 30)
    b.open()
    b.register("broker", start="oldest")
    for start in range(0, records, 100_000):
        for i in range(start, min(records, start + 100_000)):
            b.append(make_record("uplink", "gwmp", body, received_us=1_767_225_600_000_000 + i))
        b.commit()
    b.close()
    fill = time.monotonic() - t0
    # the broker is down: nothing drains while READY is timed
    cfg = config(work, free_port(socket.SOCK_DGRAM), free_port(),
                 f"mqtt://127.0.0.1:{free_port()}")
    proc, ready = wait_ready(work, cmd, cfg)
    try:
        rss = proc_status(proc.pid, "VmRSS") / 1024
    finally:
        stop(proc)
    return fill, ready, rss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rates", default="1,10,100")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--backlog", type=int, default=10_000_000)
    ap.add_argument("--schwebe", default=f"{shlex.quote(sys.executable)} -m gateway.cli",
                    help="the command that runs schwebe (default: this interpreter)")
    args = ap.parse_args()
    cmd = shlex.split(args.schwebe)
    if args.schwebe == ap.get_default("schwebe"):
        # Byte-compile as the .deb does (deploy/mkvenv.sh): with PYTHONDONTWRITEBYTECODE set
        # (as on the development machine) every start would compile the sources again, which
        # leaves ~1.3 MiB more resident than a gateway has.
        subprocess.run([sys.executable, "-m", "compileall", "-q", "gateway", "drivers"],
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    print(f"{'frames/s':>9} {'RSS MiB':>8} {'peak MiB':>9} {'CPU %':>6} {'MB/h':>7} {'READY s':>8} numpy")
    for rate in (float(r) for r in args.rates.split(",") if r):
        work = Path(tempfile.mkdtemp(prefix="schwebe-foot-", dir=ROOT))
        try:
            r = run_rate(cmd, rate, args.seconds, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(f"{rate:>9g} {r['rss_mib']:>8.1f} {r['hwm_mib']:>9.1f} {r['cpu_pct']:>6.2f} "
              f"{r['mb_per_h']:>7.2f} {r['ready_s']:>8.2f} {'yes' if r['numpy'] else 'no'}", flush=True)
    if args.backlog:
        work = Path(tempfile.mkdtemp(prefix="schwebe-foot-", dir=ROOT))
        try:
            fill, ready, rss = run_backlog(cmd, args.backlog, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(f"backlog {args.backlog} records (written in {fill:.0f} s): start to READY "
              f"{ready:.2f} s, RSS at READY {rss:.1f} MiB", flush=True)


if __name__ == "__main__":
    main()
