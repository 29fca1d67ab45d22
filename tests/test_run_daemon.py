"""`schwebe run` as systemd runs it: READY over NOTIFY_SOCKET, SIGTERM loses nothing received."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from gateway import frames

REPO = Path(__file__).resolve().parent.parent
EUI = 0xB827EBFFFE000001


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def push_data(token: int, n: int) -> bytes:
    rxpk = [{"tmst": 1000 + i, "freq": 868.1, "chan": 0, "rfch": 0, "stat": 1, "modu": "LORA",
             "datr": "SF7BW125", "codr": "4/5", "rssi": -60, "lsnr": 7.5, "size": 13,
             "data": base64.b64encode(bytes([0x40, token & 0xFF, i, 0, 0x26, 0, 1, 0, 1,
                                             0xAA, 0xBB, 0xCC, 0xDD])).decode()}
            for i in range(n)]
    return frames.encode_push_data(token, EUI, rxpk)


def test_run_notifies_ready_and_sigterm_keeps_every_received_frame(tmp_path: Path) -> None:
    udp_port, web_port = free_port(socket.SOCK_DGRAM), free_port()
    data_dir = tmp_path / "data"
    # no forwarder can deliver (the LNS is not there): everything must wait in the buffer
    cfg = tmp_path / "schwebe.toml"
    cfg.write_text(f"""
[gateway]
eui = "b827ebfffe000001"
data_dir = "{data_dir}"
[[sources.gwmp]]
bind = "127.0.0.1:{udp_port}"
[[forward.gwmp]]
name = "lns"
server = "127.0.0.1:{free_port(socket.SOCK_DGRAM)}"
[buffer]
commit_interval = "5s"
min_free = "1MiB"
[web]
bind = "127.0.0.1:{web_port}"
""")
    notify_path = str(tmp_path / "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(30)
    env = {**os.environ, "NOTIFY_SOCKET": notify_path}
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO, env=env)
    try:
        assert notify.recv(4096).decode().startswith("READY=1")
        # READY means bound: the UDP port answers at once
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as fwd:
            fwd.settimeout(5)
            for token in range(20):
                fwd.sendto(push_data(token, 5), ("127.0.0.1", udp_port))
                ack = fwd.recv(64)
                assert ack[3] == frames.PUSH_ACK and ack[1:3] == token.to_bytes(2, "little")
        # the web page answers, with a login for everything but /healthz
        import urllib.error
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/healthz", timeout=5) as r:
            assert json.loads(r.read())["ok"] is True
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{web_port}/api/status", timeout=5)
            raise AssertionError("status page answered without a login")
        except urllib.error.HTTPError as exc:
            assert exc.code == 401
        # within the 5 s commit interval: these 100 frames exist only in memory now
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "Traceback" not in err
        # stderr is a pipe, so the log is JSON lines (as journald gets it); it names the parser
        parser_lines = [rec for rec in map(json.loads, filter(None, err.splitlines()))
                        if rec.get("msg") == "frame parser"]
        assert [rec["implementation"] for rec in parser_lines] == [frames.IMPLEMENTATION], err
        states = []
        notify.settimeout(0.5)
        while True:
            try:
                states.append(notify.recv(4096).decode())
            except TimeoutError:
                break
        assert any(s.startswith("STOPPING=1") for s in states)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        notify.close()
    exported = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "buffer", "export", "--data-dir", str(data_dir),
         "--kind", "uplink"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert exported.returncode == 0, exported.stderr
    uplinks = [json.loads(line) for line in exported.stdout.splitlines()]
    assert len(uplinks) == 100
    assert {u["body"]["rxpk"]["tmst"] for u in uplinks} == set(range(1000, 1005))


# --------------------------------------------------------------------- a component that cannot start

MINIMAL = """
[gateway]
eui = "b827ebfffe000001"
data_dir = "{data_dir}"
[[sources.gwmp]]
bind = "127.0.0.1:{udp_port}"
[buffer]
min_free = "1MiB"
[web]
bind = "127.0.0.1:{web_port}"
"""


def assert_one_line_failure(res: subprocess.CompletedProcess[str], expected: str) -> None:
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr and "ExceptionGroup" not in res.stderr, res.stderr
    plain = [line for line in res.stderr.splitlines() if not line.startswith("{")]
    assert plain == [plain[0]] and plain[0].startswith("schwebe: cannot start "), res.stderr
    assert expected in plain[0], plain[0]
    assert "address already in use" in plain[0].lower(), plain[0]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args],
                          capture_output=True, text=True, timeout=60, cwd=REPO)


def test_run_with_the_web_port_taken_says_so_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        cfg = tmp_path / "schwebe.toml"
        cfg.write_text(MINIMAL.format(data_dir=tmp_path / "data", udp_port=0, web_port=port))
        res = run_cli("run", "--config", str(cfg))
    assert_one_line_failure(res, f'cannot start web (web.bind = "127.0.0.1:{port}"): ')


def test_run_with_the_gwmp_port_taken_says_so_in_one_line(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        cfg = tmp_path / "schwebe.toml"
        cfg.write_text(MINIMAL.format(data_dir=tmp_path / "data", udp_port=port,
                                      web_port=free_port()))
        res = run_cli("run", "--config", str(cfg))
    assert_one_line_failure(res, f'cannot start gwmp:0 (sources.gwmp[0].bind = "127.0.0.1:{port}"): ')
    # the key is named once, and no "[Errno N]" a technician cannot use
    assert res.stderr.count("sources.gwmp") == 1 and "Errno" not in res.stderr
    assert "address already in use" in res.stderr


def test_demo_with_the_web_port_taken_says_so_in_one_line() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        res = run_cli("demo", "--port", str(port))
    assert_one_line_failure(res, f'cannot start web (web.bind = "127.0.0.1:{port}"): ')
    assert "Schwebe demo is running" not in res.stdout  # no banner for a demo that is not running


def test_demo_with_an_impossible_port_is_a_config_error() -> None:
    res = run_cli("demo", "--port", "99999")
    assert res.returncode == 2
    assert "web.bind: bad port in '127.0.0.1:99999'" in res.stderr
    assert "Traceback" not in res.stderr
