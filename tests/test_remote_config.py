"""Remote configuration end to end: a repository made with the fleet tools, served over HTTPS
(self-signed certificate made here) and mirrored on a real mosquitto, a real daemon applying,
confirming, rolling back and refusing, with every frame of the meantime counted at the broker."""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest

from gateway import frames
from gateway.fleet.configs import set_config
from gateway.fleet.repo import Repository
from gateway.remote.sealed import seal
from tests.helpers.daemon import REPO, Daemon, free_port
from tests.helpers.tls import self_signed
from tests.mosquitto import Mosquitto, mosquitto  # noqa: F401

EUI = "b827ebfffe000001"
PREFIX = "eu868"


# --------------------------------------------------------------------------- parts


class HttpsRepo:
    """The repository directory served over HTTPS by a separate process."""

    def __init__(self, tmp: Path, served: Path) -> None:
        self.cert, key = self_signed(tmp / "tls")
        self.port = free_port()
        self.requests = tmp / "https-requests.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.helpers.static_https", str(served), str(self.port),
             str(self.cert), str(key), str(self.requests)],
            stdout=subprocess.PIPE, text=True, cwd=REPO)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/"

    def log(self) -> list[str]:
        return self.requests.read_text().splitlines() if self.requests.exists() else []

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        if self.proc.stdout:
            self.proc.stdout.close()


class Broker:
    """A subscriber counting uplinks and keeping retained config states, plus a publisher."""

    def __init__(self, broker: Mosquitto) -> None:
        self.uplinks: set[str] = set()
        self.states: dict[str, dict[str, Any]] = {}
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2)
        self.c.on_message = self._on_message
        self.c.connect(broker.host, broker.port)
        self.c.subscribe([(f"{PREFIX}/gateway/+/event/up", 1), (f"{PREFIX}/gateway/+/state/config", 1)])
        self.c.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        if msg.topic.endswith("/event/up"):
            self.uplinks.add(json.loads(msg.payload)["phyPayload"])
        elif msg.payload:
            self.states[msg.topic.split("/")[2]] = json.loads(msg.payload)

    def notify(self, eui: str = EUI) -> None:
        self.c.publish(f"{PREFIX}/gateway/{eui}/command/config", b'{"version": 0}', qos=1).wait_for_publish(5)

    def mirror(self, repo: Path) -> None:
        """The repository as retained messages (what `schwebe fleet publish --mqtt` does)."""
        files = sorted(p for p in repo.rglob("*") if p.is_file() and p.parts[-2] != "keys"
                       and p.relative_to(repo).parts[0] in ("metadata", "targets"))
        files.sort(key=lambda p: p.name == "timestamp.json")  # the timestamp last
        for p in files:
            rel = p.relative_to(repo).as_posix()
            self.c.publish(f"{PREFIX}/fleet/{rel}", p.read_bytes(), qos=1, retain=True).wait_for_publish(5)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


class Radio:
    """A packet forwarder sending one uplink every 50 ms, each with its own payload."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sent: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            i = 0
            while not self._stop.is_set():
                phy = bytes([0x40, 1, 2, 3, 4, 0, i & 0xFF, i >> 8, 1]) + i.to_bytes(4, "big")
                data = base64.b64encode(phy).decode()
                rxpk = [{"tmst": i, "freq": 868.1, "chan": 0, "rfch": 0, "stat": 1, "modu": "LORA",
                         "datr": "SF7BW125", "codr": "4/5", "rssi": -60, "lsnr": 7.5,
                         "size": len(phy), "data": data}]
                s.sendto(frames.encode_push_data(i & 0xFFFF, int(EUI, 16), rxpk), ("127.0.0.1", self.port))
                self.sent.append(data)
                i += 1
                time.sleep(0.05)

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join()
        return self.sent


def target(broker_url: str, extra: str = "") -> str:
    """A config target: no eui, no data_dir, no [remote_config] (the site sets those)."""
    return f"""
[[sources.gwmp]]
bind = "127.0.0.1:{{udp}}"
[[forward.mqtt]]
name = "city"
url = "{broker_url}"
[web]
bind = "127.0.0.1:{{web}}"
open_read_only = true
{extra}
"""


class Site:
    """One gateway on site: its config file, its repository, its ports."""

    def __init__(self, tmp: Path, broker: Mosquitto, *, https: bool = True,
                 confirm_window: str = "3s") -> None:
        self.tmp = tmp
        self.udp, self.web = free_port(socket.SOCK_DGRAM), free_port()
        self.data = tmp / "data"
        self.repo_dir = tmp / "repo"
        self.repo = Repository.init(self.repo_dir)
        self.repo.publish()
        self.served = tmp / "served"
        self.serve_copy()
        self.https = HttpsRepo(tmp, self.served) if https else None
        self.broker = broker
        repository = f'repository = "{self.https.url}"\nca = "{self.https.cert}"' if self.https else ""
        self.config = tmp / "schwebe.toml"
        self.config.write_text(f"""
[gateway]
eui = "{EUI}"
data_dir = "{self.data}"
{self.fill(target(broker.url))}
[remote_config]
root = "{self.repo_dir}/metadata/1.root.json"
{repository}
mqtt = "city"
poll_interval = "10s"
confirm_window = "{confirm_window}"
""")

    def fill(self, text: str) -> str:
        return text.replace("{udp}", str(self.udp)).replace("{web}", str(self.web))

    def serve_copy(self) -> None:
        """What the web server serves: a copy of metadata/ and targets/ (as `rsync` would)."""
        for sub in ("metadata", "targets"):
            shutil.copytree(self.repo_dir / sub, self.served / sub, dirs_exist_ok=True)

    def push(self, text: str, *, eui: str | None = None) -> int:
        f = self.tmp / "push.toml"
        f.write_text(self.fill(text))
        version = set_config(self.repo, f, eui)
        self.repo.publish()
        self.serve_copy()
        return version

    def close(self) -> None:
        if self.https:
            self.https.close()


def remote(status: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = status["remote_config"]
    return result


@pytest.fixture
def site(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[Site]:  # noqa: F811
    s = Site(tmp_path, mosquitto)
    yield s
    s.close()


# --------------------------------------------------------------------------- tests


def test_https_push_confirms_and_a_broken_config_rolls_back_losing_no_frame(site: Site) -> None:
    listener = Broker(site.broker)
    gw = Daemon(site.config, site.web)
    try:
        gw.wait("forwarder connected", lambda s: s["forwarders"]["city"]["connected"])
        assert remote(gw.status())["state"] == "none"
        pid = gw.status()["gateway"]["pid"]

        # v1: a second forwarder (hot: the UDP source keeps its socket) and a sealed token
        pubkey = subprocess.run([sys.executable, "-m", "gateway.cli", "config", "pubkey", "--config",
                                 str(site.config)], capture_output=True, text=True, cwd=REPO,
                                check=True).stdout.strip()
        token = "metrics-token-not-in-clear-4711"
        archive = site.data / "archive.jsonl"
        v1 = site.push(target(site.broker.url, f"""metrics_token = "{seal(pubkey, token)}"
[[forward.file]]
name = "archive"
path = "{archive}"
"""))
        radio = Radio(site.udp)
        listener.notify()
        st = gw.wait("v1 confirmed", lambda s: remote(s)["state"] == "confirmed", 30)
        assert remote(st)["version"] == v1 and remote(st)["source"] == "https"
        assert "archive" in st["forwarders"] and st["gateway"]["pid"] == pid
        # the sealed token was opened on the gateway: /metrics asks for it and answers to it
        with pytest.raises(urllib.error.HTTPError, match="401"):
            urllib.request.urlopen(f"http://127.0.0.1:{site.web}/metrics", timeout=5)
        req = urllib.request.Request(f"http://127.0.0.1:{site.web}/metrics",
                                     headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=5) as r:
            assert b"schwebe_remote_config_version 1" in r.read()

        # v2 points the MQTT forwarder at a dead broker: rolled back within the window
        dead = f"mqtt://127.0.0.1:{free_port()}"
        v2 = site.push(target(dead, f'[[forward.file]]\nname = "archive"\npath = "{archive}"\n'))
        listener.notify()
        gw.wait("v2 confirming", lambda s: remote(s)["state"] == "confirming" and remote(s)["version"] == v2, 20)
        t0 = time.monotonic()
        st = gw.wait("v2 rolled back", lambda s: remote(s)["state"] == "rolled-back", 20)
        assert time.monotonic() - t0 < 3 + 3, "not rolled back within the confirm window"
        r = remote(st)
        assert r["version"] == v2 and r["last_confirmed"] == v1
        assert "forwarder city cannot deliver" in r["reason"] and f"back to version {v1}" in r["reason"]
        gw.wait("city delivering again", lambda s: s["forwarders"]["city"]["connected"], 20)
        time.sleep(1)
        sent = radio.stop()
        deadline = time.monotonic() + 30
        while set(sent) - listener.uplinks and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not set(sent) - listener.uplinks, f"{len(set(sent) - listener.uplinks)} of {len(sent)} frames lost"
        assert listener.states[EUI]["state"] == "rolled-back"  # retained on the broker
        assert gw.status()["gateway"]["pid"] == pid
        # the same broken version is never tried again; `schwebe config status` says the same
        listener.notify()
        time.sleep(2)
        assert remote(gw.status())["state"] == "rolled-back"
        out = subprocess.run([sys.executable, "-m", "gateway.cli", "config", "status", "--config",
                              str(site.config)], capture_output=True, text=True, cwd=REPO)
        assert out.returncode == 1 and json.loads(out.stdout)["state"] == "rolled-back"
        # the sealed secret never shows in clear: not in the log, the status, the page
        page = urllib.request.urlopen(f"http://127.0.0.1:{site.web}/", timeout=5).read().decode()
        for where in (gw.output(), json.dumps(gw.status()), page,
                      (site.data / "remote" / "confirmed.toml").read_text()):
            assert token not in where
        # conditional polling: an unchanged timestamp.json is answered 304
        assert any(line.startswith("GET /metadata/timestamp.json") for line in site.https.log())  # type: ignore[union-attr]
    finally:
        gw.stop()
        listener.close()
