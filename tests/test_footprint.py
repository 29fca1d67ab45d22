"""`schwebe run` on a plain configuration loads only what that job needs (README "Deploy",
Footprint): heavy packages for other jobs stay out of a gateway's memory.

The daemon is the real one (gateway.cli.main, a real GWMP socket, a real mosquitto), started
through a three-line wrapper that writes sys.modules at exit, after it has received frames,
forwarded them and shut down on SIGTERM: pure-Python packages (tuf) do not show in
/proc/<pid>/maps, so the maps check alone would miss them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from tests.mosquitto import Mosquitto, mosquitto  # noqa: F401 - a fixture
from tests.test_run_daemon import REPO, free_port, push_data

#: Not needed without parking keys, [remote_config], concentratord or batch tools:
#: cryptography ~8 MiB resident, numpy ~11 MiB, the others a few MiB each.
FORBIDDEN = ("numpy", "cryptography", "nacl", "tuf", "zmq", "grpc", "google.protobuf",
             "chirpstack_api", "gateway.frames.lorawan", "gateway.remote.sealed")

WRAPPER = """
import atexit, sys
atexit.register(lambda: open(OUT, "w").write("\\n".join(sorted(sys.modules))))
from gateway.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_plain_run_loads_no_heavy_package_it_does_not_need(
        tmp_path: Path, mosquitto: Mosquitto) -> None:  # noqa: F811 - the fixture
    udp_port, web_port = free_port(socket.SOCK_DGRAM), free_port()
    cfg = tmp_path / "schwebe.toml"
    cfg.write_text(f"""
[gateway]
eui = "b827ebfffe000001"
data_dir = "{tmp_path / 'data'}"
[[sources.gwmp]]
bind = "127.0.0.1:{udp_port}"
[[forward.mqtt]]
name = "broker"
url = "{mosquitto.url}"
[buffer]
min_free = "1MiB"
[web]
bind = "127.0.0.1:{web_port}"
""")
    modules_file = tmp_path / "modules.txt"
    notify_path = str(tmp_path / "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(30)
    code = WRAPPER.replace("OUT", repr(str(modules_file)))
    proc = subprocess.Popen([sys.executable, "-c", code, "run", "--config", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            cwd=REPO, env={**os.environ, "NOTIFY_SOCKET": notify_path})
    try:
        assert notify.recv(4096).decode().startswith("READY=1")
        # frames through the whole path (parse, buffer, MQTT) before looking
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as fwd:
            fwd.settimeout(5)
            for token in range(5):
                fwd.sendto(push_data(token, 3), ("127.0.0.1", udp_port))
                assert fwd.recv(64)[1:3] == token.to_bytes(2, "little")
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        notify.close()
    modules = set(modules_file.read_text().split())
    assert "gateway.pipeline" in modules and "aiohttp" in modules  # the wrapper saw the daemon
    loaded = sorted(m for m in modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN))
    assert loaded == [], f"schwebe run on a plain config imported {loaded}"
    mapped = sorted({f for f in ("numpy", "cryptography", "nacl", "zmq", "grpc")
                     if f"/{f}/" in maps})
    assert mapped == [], f"shared libraries of {mapped} are mapped into the daemon"
