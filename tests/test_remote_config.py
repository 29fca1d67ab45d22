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
                 confirm_window: str = "3s", thresholds: dict[str, int] | None = None) -> None:
        self.tmp = tmp
        self.udp, self.web = free_port(socket.SOCK_DGRAM), free_port()
        self.data = tmp / "data"
        self.repo_dir = tmp / "repo"
        self.repo = Repository.init(self.repo_dir, thresholds=thresholds)
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

    def push_unchecked(self, path: str, data: bytes) -> int:
        """A target the operator tools would refuse (to see that the gateway refuses it too)."""
        version = self.repo.bump_version()
        self.repo.add_target(path, data, version)
        self.repo.save()
        self.repo.publish()
        self.serve_copy()
        return version

    def close(self) -> None:
        if self.https:
            self.https.close()


def gateway_pubkey(config: Path) -> str:
    """What an operator asks the gateway for before sealing its secrets."""
    return subprocess.run([sys.executable, "-m", "gateway.cli", "config", "pubkey", "--config",
                           str(config)], capture_output=True, text=True, cwd=REPO,
                          check=True).stdout.strip()


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
        pubkey = gateway_pubkey(site.config)
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
        requests = site.https.log()  # type: ignore[union-attr]
        assert "GET /metadata/timestamp.json 304" in requests
        # the rolled-back version's target was downloaded once, not at every later check
        assert len([r for r in requests if r.startswith("GET /targets/")]) == 2
    finally:
        gw.stop()
        listener.close()


ARCHIVE = '[[forward.file]]\nname = "archive"\npath = "{data}/archive.jsonl"\n'


def test_every_bad_push_is_refused_with_a_reason_and_the_running_config_kept(
        tmp_path: Path, mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    site = Site(tmp_path, mosquitto, thresholds={"targets": 2})
    listener = Broker(site.broker)
    gw = Daemon(site.config, site.web)
    good = target(site.broker.url, ARCHIVE.replace("{data}", str(site.data)))
    seen: list[str] = []

    def refused(contains: str) -> dict[str, Any]:
        listener.notify()
        st = gw.wait(f"refused: {contains}", lambda s: remote(s)["state"] == "refused"
                     and contains in (remote(s)["reason"] or "") and remote(s)["reason"] not in seen, 20)
        seen.append(remote(st)["reason"])
        # the running config is untouched: still version 1, both forwarders there, delivering
        assert remote(st)["last_confirmed"] == v1 and "archive" in st["forwarders"]
        assert st["forwarders"]["city"]["connected"]
        assert "\n" not in remote(st)["reason"] and contains in gw.output()  # one line, logged
        return st

    try:
        gw.wait("forwarder connected", lambda s: s["forwarders"]["city"]["connected"])
        v1 = site.push(good)
        listener.notify()
        gw.wait("v1 confirmed", lambda s: remote(s)["state"] == "confirmed", 30)
        old_timestamp = (site.served / "metadata" / "timestamp.json").read_bytes()

        # tampered target: the served bytes differ from the signed hash and length
        site.push(good + "# v2\n")
        sha = site.repo.targets()["configs/all.toml"]["sha256"]
        with (site.served / "targets" / "configs" / f"{sha}.all.toml").open("a") as f:
            f.write("[[forward.file]]\nname = \"leak\"\npath = \"/tmp/leak\"\n")
        refused("tampered")

        # one signature where the targets role needs two
        signers = site.repo._signers
        monkeypatch.setattr(site.repo, "_signers",
                            lambda role: signers(role)[:1] if role == "targets" else signers(role))
        site.push(good + "# v3\n")
        refused("signatures below threshold")
        monkeypatch.undo()

        # metadata signed by keys the gateway's root does not name
        other = Repository.init(tmp_path / "other")
        (tmp_path / "o.toml").write_text(site.fill(good))
        set_config(other, tmp_path / "o.toml", None)
        other.publish()
        other.publish()
        other.publish()
        for name in ("timestamp.json", "2.snapshot.json", "2.targets.json"):
            shutil.copy(tmp_path / "other" / "metadata" / name, site.served / "metadata" / name)
        refused("timestamp was signed by 0/1 keys")  # none of the keys it trusts
        site.serve_copy()

        # expired metadata (signed by the right keys, but its time is over)
        from datetime import UTC, datetime, timedelta

        stale = Repository.open(site.repo_dir, now=lambda: datetime.now(UTC) - timedelta(days=3))
        (tmp_path / "s.toml").write_text(site.fill(good + "# v5\n"))
        set_config(stale, tmp_path / "s.toml", None)
        stale.publish()
        site.serve_copy()
        refused("expired")
        site.repo = Repository.open(site.repo_dir)

        # an older timestamp replayed after a newer one was seen
        v1 = site.push(good + "# newer\n")
        listener.notify()
        gw.wait("newer confirmed", lambda s: remote(s)["state"] == "confirmed"
                and remote(s)["version"] == v1, 20)
        (site.served / "metadata" / "timestamp.json").write_bytes(old_timestamp)
        refused("replayed older metadata")
        site.serve_copy()

        # a config that fails the gateway's own validation
        site.push_unchecked("configs/all.toml", b"[buffer]\nmax_sise = 1\n")
        refused("buffer.max_sise: unknown key")

        # a config naming another gateway, in this gateway's own target
        site.push_unchecked(f"configs/{EUI}.toml", site.fill(good).encode()
                            + b'[gateway]\neui = "0000000000000002"\n')
        refused("for another gateway")
        site.repo.remove_target(f"configs/{EUI}.toml")

        # an oversized target (the operator tools refuse it too: patched away here)
        import gateway.fleet.repo as repo_module

        monkeypatch.setattr(repo_module, "MAX_TARGET", 8 << 20)
        site.push_unchecked("configs/all.toml", site.fill(good).encode() + b"#" * (1100 << 10))
        refused("oversized target")
        monkeypatch.undo()

        # and after all that a good config still goes through
        v = site.push(good + "# fine again\n")
        listener.notify()
        gw.wait("good config confirmed", lambda s: remote(s)["state"] == "confirmed"
                and remote(s)["version"] == v, 30)
    finally:
        gw.stop()
        listener.close()
        site.close()


def test_a_repository_that_never_answers_is_refused_in_time(tmp_path: Path) -> None:
    from gateway.remote import client
    from gateway.remote.fetchers import HttpsFetcher

    repo = Repository.init(tmp_path / "repo")
    with socket.socket() as stalled:  # accepts connections (backlog), never answers
        stalled.bind(("127.0.0.1", 0))
        stalled.listen(8)
        port = stalled.getsockname()[1]
        t0 = time.monotonic()
        with pytest.raises(client.Refused, match="repository timed out"):
            client.check(fetcher=HttpsFetcher(timeout=1.0), base_url=f"https://127.0.0.1:{port}/",
                         state_dir=tmp_path / "state", trusted_root=repo.path / "metadata" / "1.root.json",
                         eui=int(EUI, 16))
        assert time.monotonic() - t0 < 5


@pytest.mark.parametrize("step", ["candidate-written", "staged", "confirming", "applied",
                                  "window-passed", "promoted"])
def test_kill_9_at_every_apply_step_leaves_a_loadable_consistent_config(
        tmp_path: Path, mosquitto: Mosquitto, step: str) -> None:  # noqa: F811
    from gateway.remote.manager import KILL_AT_ENV

    site = Site(tmp_path, mosquitto, confirm_window="1s")
    listener = Broker(site.broker)
    gw = Daemon(site.config, site.web, env={KILL_AT_ENV: step})
    try:
        gw.wait("forwarder connected", lambda s: s["forwarders"]["city"]["connected"])
        v1 = site.push(target(site.broker.url, ARCHIVE.replace("{data}", str(site.data))))
        listener.notify()
        assert gw.proc.wait(20) == -9  # killed itself at the step
        gw.stop()
        gw = Daemon(site.config, site.web)  # as systemd would start it again
        st = gw.wait("daemon up again", lambda s: s["forwarders"]["city"]["connected"])
        r = remote(st)
        if step in ("candidate-written", "staged"):
            # never ran: dropped, fetched again and tried as if for the first time
            assert r["state"] in ("none", "staged", "confirming", "confirmed"), r
            listener.notify()
            st = gw.wait("confirmed after all", lambda s: remote(s)["state"] == "confirmed", 20)
            assert remote(st)["version"] == v1 and "archive" in st["forwarders"]
        elif step == "promoted":
            # the window had passed and the file was promoted: it is the confirmed config
            assert r["state"] == "confirmed" and r["version"] == v1 and "archive" in st["forwarders"], r
        else:
            # stopped while confirming: back to the on-site file, that version never again
            assert r["state"] == "rolled-back" and r["version"] == v1, r
            assert "restarted before version 1 was confirmed" in r["reason"]
            assert "archive" not in st["forwarders"]
            listener.notify()
            time.sleep(1.5)
            assert remote(gw.status())["state"] == "rolled-back"
        assert not (site.data / "remote" / "candidate.toml").exists() or remote(gw.status())["state"] in ("staged", "confirming")
    finally:
        gw.stop()
        listener.close()
        site.close()


def test_broker_only_city_mqtt_mirror_and_an_on_site_bundle(tmp_path: Path, mosquitto: Mosquitto) -> None:  # noqa: F811
    """No web server of the city's: the repository rides on the broker as retained messages.
    A change outside the forwarders (closed spots) restarts the components in-process; an
    operator on site uploads a bundle, verified against the same root."""
    import io
    import tarfile

    from gateway.web.auth import hash_password

    site = Site(tmp_path, mosquitto, https=False)
    listener = Broker(site.broker)
    gw = Daemon(site.config, site.web)
    try:
        st = gw.wait("forwarder connected", lambda s: s["forwarders"]["city"]["connected"])
        sealed = seal(gateway_pubkey(site.config), hash_password("a long test password"))
        login = f'username = "operator"\npassword_hash = "{sealed}"\n'
        pid = st["gateway"]["pid"]
        v1 = site.push(target(site.broker.url, login + '[parking]\nclosed_spots = ["roadworks:1"]\n'))
        listener.mirror(site.repo_dir)  # no notification needed: the new timestamp is one
        st = gw.wait("v1 confirmed", lambda s: remote(s)["state"] == "confirmed", 30)
        assert remote(st)["version"] == v1 and remote(st)["source"] == "mqtt"
        assert st["gateway"]["pid"] == pid and "parking" in remote(st)["history"][-1]["changes"]
        assert listener.states[EUI]["state"] == "confirmed"

        # on site: a bundle of the repository, uploaded with the operator's login
        v2 = site.push(target(site.broker.url, login + ARCHIVE.replace("{data}", str(site.data))))
        blob = io.BytesIO()
        with tarfile.open(fileobj=blob, mode="w") as tar:
            for sub in ("metadata", "targets"):
                tar.add(site.repo_dir / sub, arcname=sub)
        auth = "Basic " + base64.b64encode(b"operator:a long test password").decode()
        url = f"http://127.0.0.1:{site.web}/api/config/bundle"
        req = urllib.request.Request(url, data=blob.getvalue(), method="POST", headers={
            "Content-Type": "application/x-tar", "Authorization": auth})
        with urllib.request.urlopen(req, timeout=30) as r:
            answer = json.load(r)
        assert answer["state"] in ("confirming", "confirmed") and answer["version"] == v2
        st = gw.wait("v2 confirmed", lambda s: remote(s)["state"] == "confirmed"
                     and remote(s)["version"] == v2, 30)
        assert remote(st)["source"] == "bundle" and "archive" in st["forwarders"]
        # a form post from another site cannot upload (only a raw tar body is taken): with
        # Basic, a body a cross-site form can send is refused as a CSRF attempt (403)
        req = urllib.request.Request(url, data=b"a=1", method="POST", headers={
            "Content-Type": "application/x-www-form-urlencoded", "Authorization": auth})
        with pytest.raises(urllib.error.HTTPError, match="403"):
            urllib.request.urlopen(req, timeout=10)
        # without the login: refused
        req = urllib.request.Request(url, data=blob.getvalue(), method="POST",
                                     headers={"Content-Type": "application/x-tar"})
        with pytest.raises(urllib.error.HTTPError, match="401"):
            urllib.request.urlopen(req, timeout=10)
        # a bundle that is not one: refused with the reason, running config kept
        req = urllib.request.Request(url, data=b"not a tar" * 100, method="POST", headers={
            "Content-Type": "application/x-tar", "Authorization": auth})
        with pytest.raises(urllib.error.HTTPError, match="422") as err:
            urllib.request.urlopen(req, timeout=10)
        assert "not a bundle" in json.load(err.value)["reason"]
        assert remote(gw.status())["last_confirmed"] == v2
    finally:
        gw.stop()
        listener.close()
        site.close()


def test_rollout_in_waves_across_three_real_gateways(tmp_path: Path, mosquitto: Mosquitto) -> None:  # noqa: F811
    """Three `schwebe run` gateways on one broker, `schwebe fleet rollout --waves 1,2,100%`:
    the first gateway undoes a config that breaks its archive and the later waves never see
    it; the fixed config then reaches all three, each confirming in its wave."""

    def fleet(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gateway.cli", "fleet", *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)

    assert fleet("init", "repo").returncode == 0
    euis = ["b827ebfffe0000a1", "b827ebfffe0000b2", "b827ebfffe0000c3"]
    gateways: list[Daemon] = []
    archive_a = tmp_path / "a" / "archive.jsonl"
    try:
        for eui in euis:
            udp, web = free_port(socket.SOCK_DGRAM), free_port()
            # gateway a keeps an archive of its own, which works; b and c have none
            own = (f'[[forward.file]]\nname = "archive"\npath = "{archive_a}"\n'
                   if eui == euis[0] else "")
            config = tmp_path / f"{eui}.toml"
            config.write_text(f"""
[gateway]
eui = "{eui}"
data_dir = "{tmp_path / eui}"
[[sources.gwmp]]
bind = "127.0.0.1:{udp}"
[[forward.mqtt]]
name = "city"
url = "{mosquitto.url}"
{own}
[web]
bind = "127.0.0.1:{web}"
open_read_only = true
[remote_config]
root = "{tmp_path}/repo/metadata/root.json"
mqtt = "city"
confirm_window = "2s"
""")
            gateways.append(Daemon(config, web))
        for gw in gateways:
            gw.wait("connected", lambda s: s["forwarders"]["city"]["connected"])
            if gw is gateways[0]:
                gw.wait("archive open", lambda s: s["forwarders"]["archive"]["connected"])

        # the fleet config names the forward table (so it replaces the site's): its archive
        # path cannot be created
        fleet_cfg = (f'[[forward.mqtt]]\nname = "city"\nurl = "{mosquitto.url}"\n'
                     '[[forward.file]]\nname = "archive"\npath = "{}"\n')
        (tmp_path / "broken.toml").write_text(fleet_cfg.format("/proc/no-such-dir/archive.jsonl"))
        r = fleet("rollout", "repo", "--mqtt", mosquitto.url, "--waves", "1,2,100%",
                  "--timeout", "40", "broken.toml")
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert f"{euis[0]} rolled-back" in r.stderr and "forwarder archive cannot deliver" in r.stderr
        st = gateways[0].wait("a rolled back", lambda s: s["remote_config"]["state"] == "rolled-back")
        assert st["forwarders"]["archive"]["backend"]["path"] == str(archive_a)
        time.sleep(2)
        for gw in gateways[1:]:  # the second wave was never started
            r2 = gw.status()["remote_config"]
            assert r2["state"] == "none" and r2["version"] is None, r2

        (tmp_path / "fixed.toml").write_text(fleet_cfg.format(tmp_path / "fleet-archive.jsonl"))
        r = fleet("rollout", "repo", "--mqtt", mosquitto.url, "--waves", "1,2,100%",
                  "--timeout", "60", "fixed.toml")
        assert r.returncode == 0, (r.stdout, r.stderr)
        r = fleet("status", "--mqtt", mosquitto.url, "--json")
        rows = {row["eui"]: row for row in json.loads(r.stdout)}
        assert [rows[e]["state"] for e in euis] == ["confirmed"] * 3, rows
        for gw in gateways:
            st = gw.status()
            assert st["forwarders"]["archive"]["connected"] and st["remote_config"]["state"] == "confirmed"
    finally:
        for gw in gateways:
            gw.stop()
