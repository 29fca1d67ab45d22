"""`schwebe fleet` against a real mosquitto: the retained mirror of the repository, gateway
states in `fleet status`, and rollouts in waves to three stand-in gateways.

The stand-ins are small asyncio MQTT clients in this test: on a notification they refresh
with python-tuf's ngclient through a tiny fetcher that reads the retained mirror (as the
gateway's MQTT fetcher does), then report confirmed or rolled-back as a gateway would.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tuf.api import exceptions
from tuf.ngclient import FetcherInterface, Updater

from gateway.cli.main import main
from gateway.fleet.configs import set_config
from gateway.fleet.repo import Repository
from gateway.forward.mqtt_wire import MqttConnection
from tests.mosquitto import Mosquitto, _free_port, mosquitto, mosquitto_binary  # noqa: F401
from tests.test_forward_tls import Pki

PREFIX = "city"
A, B, C = "b827ebfffe00000a", "b827ebfffe00000b", "b827ebfffe00000c"
GOOD = '[log]\nlevel = "info"\n'
BAD = '[log]\nlevel = "debug"\n'  # stands in for a config that breaks a forwarder


def in_process(args: list[str], cwd: Path) -> tuple[int, str, str]:
    """`schwebe ARGS` in this process (a subprocess start costs ~0.4 s on a loaded machine)."""
    out, err = io.StringIO(), io.StringIO()
    before = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(args)
    finally:
        os.chdir(before)
    return rc, out.getvalue(), err.getvalue()


async def fleet(*args: str, cwd: Path, subprocess_: bool = False) -> tuple[int, str, str]:
    """`schwebe fleet ARGS` from a worker thread, or as a process of its own (``subprocess_``)."""
    if not subprocess_:
        return await asyncio.to_thread(in_process, ["fleet", *args], cwd)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "fleet", *args, cwd=cwd,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def connect(broker: Mosquitto, **kw: Any) -> MqttConnection:
    return await MqttConnection.open(broker.host, broker.port, client_id=f"t-{secrets.token_hex(4)}",
                                     max_payload=2 << 20, **kw)


async def retained(broker: Mosquitto, pattern: str) -> dict[str, bytes]:
    """What a fresh subscriber gets: the broker's retained messages under ``pattern``."""
    got: dict[str, bytes] = {}
    marker = f"test/sync/{secrets.token_hex(4)}"
    end = asyncio.Event()

    def take(topic: str, payload: bytes) -> None:
        got[topic] = payload
        if topic == marker:
            end.set()

    conn = await connect(broker, on_message=take)
    try:
        await conn.subscribe(pattern)
        await conn.subscribe(marker)
        await conn.publish(marker, b"end")
        await asyncio.wait_for(end.wait(), 10)
    finally:
        await conn.close()
    got.pop(marker)
    return got


def make_repo(tmp_path: Path) -> Repository:
    repo = Repository.init(tmp_path / "repo")
    (tmp_path / "all.toml").write_text(GOOD)
    set_config(repo, tmp_path / "all.toml", None)
    repo.publish()
    return repo


# ---- mirror ------------------------------------------------------------------------------------
def mirrored(repo_dir: Path, *rels: str) -> dict[str, bytes]:
    """The retained messages that mirror ``rels`` of the repository: topic -> the file's bytes."""
    return {f"{PREFIX}/fleet/{rel}": (repo_dir / rel).read_bytes() for rel in rels}


async def test_mirror_retains_what_gateways_need_and_clears_the_rest(tmp_path: Path, mosquitto: Mosquitto) -> None:  # noqa: F811
    repo = make_repo(tmp_path)
    (tmp_path / "own.toml").write_text(BAD)
    set_config(repo, tmp_path / "own.toml", A)
    notes: list[tuple[str, bytes]] = []
    noted = asyncio.Event()

    def note(topic: str, payload: bytes) -> None:
        notes.append((topic, payload))
        noted.set()

    listener = await connect(mosquitto, on_message=note)
    await listener.subscribe(f"{PREFIX}/fleet/notify")
    await listener.subscribe(f"{PREFIX}/gateway/+/command/config")

    url = f"mqtt://operator:s3cr3t-pw@{mosquitto.host}:{mosquitto.port}"  # anonymous broker ignores it
    rc, out, err = await fleet("publish", "repo", "--mqtt", url, "--prefix", PREFIX, cwd=tmp_path)
    assert rc == 0, err
    assert "s3cr3t-pw" not in out + err and "***@" in out
    configs = sorted(p.relative_to(repo.path).as_posix() for p in (repo.path / "targets").rglob("*.toml"))
    own_rel = next(r for r in configs if r.endswith(f".{A}.toml"))
    all_rel = next(r for r in configs if r.endswith(".all.toml"))
    on_broker = await retained(mosquitto, f"{PREFIX}/fleet/#")
    # every file of the last publish ngclient asks for, byte for byte; the first publish's
    # snapshot and targets (still on disk for web clients mid-update) are of no use to a gateway
    assert on_broker == mirrored(repo.path, "metadata/1.root.json", "metadata/timestamp.json",
                                 "metadata/2.snapshot.json", "metadata/2.targets.json", own_rel, all_rel)
    assert (repo.path / "metadata" / "1.targets.json").exists()
    async with asyncio.timeout(5):
        while len(notes) < 2:
            noted.clear()
            await noted.wait()
    # the broadcast, and A (it has a config of its own) on its command topic
    assert sorted(notes) == [(f"{PREFIX}/fleet/notify", b'{"version": 2}'),
                             (f"{PREFIX}/gateway/{A}/command/config", b'{"version": 2}')]

    # the gateway's own config goes: its file leaves the directory and the broker
    repo = Repository.open(repo.path)
    repo.remove_target(f"configs/{A}.toml", delete=True)
    repo.save()
    rc, out, err = await fleet("publish", "repo", "--mqtt", mosquitto.url, "--prefix", PREFIX, cwd=tmp_path)
    assert rc == 0, err
    # new targets/snapshot/timestamp sent, root and the unchanged all.toml not again; A's
    # config and the superseded snapshot and targets cleared
    assert "3 file(s) sent, 2 unchanged, 3 cleared" in out, out
    on_broker = await retained(mosquitto, f"{PREFIX}/fleet/#")
    assert on_broker == mirrored(repo.path, "metadata/1.root.json", "metadata/timestamp.json",
                                 "metadata/3.snapshot.json", "metadata/3.targets.json", all_rel)
    await listener.close()

    mosquitto.stop()  # signing does not depend on the broker; the operator learns it was not pushed
    rc, out, err = await fleet("publish", "repo", "--mqtt", mosquitto.url, "--prefix", PREFIX, cwd=tmp_path)
    assert rc == 1 and "published: targets version 4" in out
    assert err.startswith("schwebe fleet publish: signed in repo but not mirrored: MQTT broker mqtt://127.0.0.1:")


# ---- status ------------------------------------------------------------------------------------
def state(eui: str, version: int | None, st: str, reason: str | None = None) -> bytes:
    return json.dumps({"eui": eui, "version": version, "state": st, "reason": reason,
                       "source": "mqtt", "at": "2026-12-04T05:00:00Z"}).encode()


async def test_status_table_and_exit_codes(tmp_path: Path, mosquitto: Mosquitto) -> None:  # noqa: F811
    conn = await connect(mosquitto)
    topic = f"{PREFIX}/gateway/{{}}/state/config"
    await conn.publish_many([(topic.format(B), state(B, 4, "confirmed"), True),
                             (topic.format(A), state(A, 4, "confirmed"), True)])
    args = ("status", "--mqtt", mosquitto.url, "--prefix", PREFIX)
    rc, out, err = await fleet(*args, cwd=tmp_path)
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["EUI", "VERSION", "STATE", "SOURCE", "AT", "REASON"]
    assert [ln.split()[:3] for ln in lines[1:]] == [[A, "4", "confirmed"], [B, "4", "confirmed"]]

    # --wait: B has not yet confirmed 5 -> exit 2 naming it; then it does -> exit 0
    await conn.publish(topic.format(A), state(A, 5, "confirmed"), retain=True)
    rc, out, err = await fleet(*args, "--wait", "5", "--timeout", "1", cwd=tmp_path)
    assert rc == 2 and f"no answer for version 5 within 1s from {B}" in err
    waiting = asyncio.create_task(fleet(*args, "--wait", "5", "--timeout", "30", cwd=tmp_path, subprocess_=True))
    await asyncio.sleep(1.5)
    assert not waiting.done()
    await conn.publish(topic.format(B), state(B, 5, "confirmed"), retain=True)
    rc, out, err = await waiting
    assert rc == 0, err
    assert [ln.split()[:3] for ln in out.splitlines()[1:]] == [[A, "5", "confirmed"], [B, "5", "confirmed"]]

    # one rolled back: exit 1, the reason in the table and the JSON
    why = "forwarder city could not deliver for 60s"
    await conn.publish(topic.format(B), state(B, 6, "rolled-back", why), retain=True)
    rc, out, err = await fleet(*args, cwd=tmp_path)
    assert rc == 1 and why in out and f"{B} rolled-back" in err
    rc, out, err = await fleet(*args, "--json", cwd=tmp_path)
    assert rc == 1
    rows = json.loads(out)
    assert rows[1] == {"eui": B, "version": 6, "state": "rolled-back", "reason": why,
                       "source": "mqtt", "at": "2026-12-04T05:00:00Z", "last_confirmed": None}
    await conn.close()

    rc, out, err = await fleet("status", "--mqtt", mosquitto.url, "--prefix", "elsewhere", cwd=tmp_path)
    assert rc == 1 and "no gateway has reported under elsewhere/gateway/+/state/config" in err
    mosquitto.stop()
    rc, out, err = await fleet("status", "--mqtt", f"mqtt://op:hunter2@127.0.0.1:{mosquitto.port}", cwd=tmp_path)
    assert rc == 1 and len(err.splitlines()) == 1 and "hunter2" not in err
    assert f"MQTT broker mqtt://***@127.0.0.1:{mosquitto.port}" in err


# ---- rollout -----------------------------------------------------------------------------------
class MirrorFetcher(FetcherInterface):
    """ngclient's requests served from the retained mirror (runs in a worker thread)."""

    def __init__(self, broker: Mosquitto, loop: asyncio.AbstractEventLoop) -> None:
        self.broker, self.loop = broker, loop

    def _fetch(self, url: str) -> Iterator[bytes]:
        topic = f"{PREFIX}/fleet/" + url.removeprefix("mqtt:///")
        found = asyncio.run_coroutine_threadsafe(retained(self.broker, topic), self.loop).result(20)
        if topic not in found:
            raise exceptions.DownloadHTTPError(f"404 {url}", 404)
        yield found[topic]


class StandIn:
    """A gateway as far as the rollout sees it: state messages, notifications, TUF refresh."""

    def __init__(self, eui: str, broker: Mosquitto, root: bytes, workdir: Path, *, refuse: bytes = b"",
                 report_returned: bool = False) -> None:
        self.eui, self.broker, self.root, self.workdir, self.refuse = eui, broker, root, workdir, refuse
        self.report_returned = report_returned  # rolled-back names the version it went back to
        self.running = GOOD.encode()
        self.version: int | None = None
        self.notified: list[int] = []
        self.offered: list[str] = []
        self.refreshes = 0
        self.conn: MqttConnection | None = None
        self.task: asyncio.Task[None] | None = None
        self.wake = asyncio.Event()

    async def start(self) -> None:
        self.conn = await connect(self.broker, on_message=self._on_message)
        await self.report(None, "none")
        await self.conn.subscribe(f"{PREFIX}/gateway/{self.eui}/command/config")
        await self.conn.subscribe(f"{PREFIX}/fleet/notify")
        self.task = asyncio.create_task(self._loop())

    def _on_message(self, topic: str, payload: bytes) -> None:
        if topic.endswith("/command/config"):
            self.notified.append(json.loads(payload)["version"])
        self.wake.set()

    async def report(self, version: int | None, st: str, reason: str | None = None) -> None:
        assert self.conn is not None
        await self.conn.publish(f"{PREFIX}/gateway/{self.eui}/state/config",
                                state(self.eui, version, st, reason), retain=True)

    def _refresh(self, loop: asyncio.AbstractEventLoop) -> tuple[str, int, bytes]:
        self.refreshes += 1
        where = self.workdir / f"r{self.refreshes}"
        (where / "dl").mkdir(parents=True)
        up = Updater(metadata_dir=str(where), metadata_base_url="mqtt:///metadata/",
                     target_base_url="mqtt:///targets/", target_dir=str(where / "dl"),
                     fetcher=MirrorFetcher(self.broker, loop), bootstrap=self.root)
        up.refresh()
        info = up.get_targetinfo(f"configs/{self.eui}.toml") or up.get_targetinfo("configs/all.toml")
        assert info is not None
        return info.path, int(info.custom["version"]), Path(up.download_target(info)).read_bytes()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.wake.wait()
            self.wake.clear()
            path, version, data = await asyncio.to_thread(self._refresh, loop)
            self.offered.append(path)
            if data == self.refuse:
                await self.report(self.version if self.report_returned else version, "rolled-back",
                                  "forwarder city could not deliver within the window")
            else:
                self.running, self.version = data, version
                await self.report(version, "confirmed")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.conn is not None:
            await self.conn.close()


async def fleet_of_three(tmp_path: Path, broker: Mosquitto, refuse: bytes = b"",
                         report_returned: bool = False) -> list[StandIn]:
    repo = make_repo(tmp_path)
    root = (repo.path / "metadata" / "1.root.json").read_bytes()
    await fleet("publish", "repo", "--mqtt", broker.url, "--prefix", PREFIX, cwd=tmp_path)
    gws = [StandIn(e, broker, root, tmp_path / e, refuse=refuse if e == A else b"",
                   report_returned=report_returned) for e in (C, A, B)]
    for g in gws:
        await g.start()
    return sorted(gws, key=lambda g: g.eui)


def signed_targets(repo_dir: Path) -> set[str]:
    """Every target name any published targets metadata ever named."""
    names: set[str] = set()
    for f in (repo_dir / "metadata").glob("*.targets.json"):
        names |= set(json.loads(f.read_text())["signed"]["targets"])
    return names


@pytest.mark.parametrize("report_returned", [False, True], ids=["names-new-version", "names-old-version"])
async def test_rollout_stops_before_the_second_wave_when_a_first_wave_gateway_rolls_back(
        tmp_path: Path, mosquitto: Mosquitto, report_returned: bool) -> None:  # noqa: F811
    (tmp_path / "new.toml").write_text(BAD)
    gws = await fleet_of_three(tmp_path, mosquitto, refuse=BAD.encode(), report_returned=report_returned)
    try:
        rc, out, err = await fleet("rollout", "repo", "--mqtt", mosquitto.url, "--prefix", PREFIX,
                                   "--waves", "1,2,100%", "--timeout", "20", "new.toml", cwd=tmp_path)
        assert rc == 1, (out, err)
        assert f"stopped in wave 1: {A} rolled-back: forwarder city could not deliver" in err
        a, b, c = gws
        assert a.notified == [2] and a.offered == [f"configs/{A}.toml"]
        assert b.notified == c.notified == [] and b.offered == c.offered == []
        signed = signed_targets(tmp_path / "repo")
        assert f"configs/{A}.toml" in signed
        assert f"configs/{B}.toml" not in signed and f"configs/{C}.toml" not in signed
        on_broker = await retained(mosquitto, f"{PREFIX}/fleet/targets/#")
        assert not any(B in t or C in t for t in on_broker)
        all_toml = [p for t, p in on_broker.items() if t.endswith(".all.toml")]
        assert all_toml == [GOOD.encode()]  # the fleet-wide config never became the new one
        assert (b.running, c.running) == (GOOD.encode(), GOOD.encode())
        if report_returned:
            return
        # fixed and run again: A (with the target the stopped rollout left) is taken back
        fixed = '[log]\nlevel = "warning"\n'
        (tmp_path / "fixed.toml").write_text(fixed)
        rc, out, err = await fleet("rollout", "repo", "--mqtt", mosquitto.url, "--prefix", PREFIX,
                                   "--waves", "1,100%", "--timeout", "20", "fixed.toml", cwd=tmp_path)
        assert rc == 0, (out, err)
        assert "keeps its own" not in out and f"wave 1: version 3 published to 1 gateway(s): {A}" in out
        assert all(g.running == fixed.encode() for g in gws)
        repo = Repository.open(tmp_path / "repo")
        assert set(repo.targets()) == {"configs/all.toml"} and repo.book["rollout_targets"] == []
    finally:
        for g in gws:
            await g.stop()


async def test_clean_rollout_ends_with_all_three_confirmed(tmp_path: Path, mosquitto: Mosquitto) -> None:  # noqa: F811
    new = '[log]\nlevel = "warning"\n'
    (tmp_path / "new.toml").write_text(new)
    gws = await fleet_of_three(tmp_path, mosquitto)
    try:
        rc, out, err = await fleet("rollout", "repo", "--mqtt", mosquitto.url, "--prefix", PREFIX,
                                   "--waves", "1,2,100%", "--timeout", "20", "new.toml", cwd=tmp_path)
        assert rc == 0, (out, err)
        rc, status, err = await fleet("status", "--mqtt", mosquitto.url, "--prefix", PREFIX, "--json",
                                      cwd=tmp_path)
    finally:
        for g in gws:
            await g.stop()
    assert "wave 1: version 2 published to 1 gateway(s): " + A in out
    assert "wave 2: version 2 published to 1 gateway(s): " + B in out
    assert "wave 3: version 2 published to configs/all.toml for every gateway" in out
    assert rc == 0
    assert [(s["eui"], s["version"], s["state"]) for s in json.loads(status)] == [
        (A, 2, "confirmed"), (B, 2, "confirmed"), (C, 2, "confirmed")]
    a, b, c = gws
    assert a.offered[0] == f"configs/{A}.toml" and b.offered[0] == f"configs/{B}.toml"
    assert set(c.offered) == {"configs/all.toml"}
    assert all(g.running == new.encode() for g in gws)
    # the wave targets are gone: from the repository, its signed targets and the broker
    repo = Repository.open(tmp_path / "repo")
    assert set(repo.targets()) == {"configs/all.toml"} and repo.book["rollout_targets"] == []
    assert not list((tmp_path / "repo" / "targets" / "configs").glob(f"*.{A}.toml"))
    on_broker = await retained(mosquitto, f"{PREFIX}/fleet/targets/#")
    assert not any(A in t or B in t for t in on_broker)


async def test_rollout_times_out_naming_the_silent_gateway(tmp_path: Path, mosquitto: Mosquitto) -> None:  # noqa: F811
    repo = make_repo(tmp_path)
    (tmp_path / "own.toml").write_text(BAD)
    set_config(repo, tmp_path / "own.toml", A)  # A has a config of its own: left out
    conn = await connect(mosquitto)
    for eui in (A, B):
        await conn.publish(f"{PREFIX}/gateway/{eui}/state/config", state(eui, 1, "confirmed"), retain=True)
    await conn.close()
    rc, out, err = await fleet("rollout", str(repo.path), "--mqtt", mosquitto.url, "--prefix", PREFIX,
                               "--waves", "100%", "--timeout", "1", "all.toml", cwd=tmp_path)
    assert rc == 2
    assert f"{A} keeps its own configs/{A}.toml" in out and "to 1 gateway(s)" in out
    assert f"no confirmation within 1s from {B} (confirmed version 1)." in err


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[Mosquitto, int, Any]]:
    """mosquitto with a TLS listener (test CA) and a password file; nothing anonymous."""
    mosquitto_binary()
    pki = Pki(tmp_path / "pki")
    pw = tmp_path / "passwd"
    pw.write_text("")
    subprocess.run(["mosquitto_passwd", "-b", str(pw), "ops", "p@ss word"], check=True, capture_output=True)
    tls_port = _free_port()
    broker = Mosquitto(tmp_path / "mosquitto", extra_config=(
        f"password_file {pw}\nlistener {tls_port} 127.0.0.1\n"
        f"cafile {pki.ca}\ncertfile {pki.server_cert}\nkeyfile {pki.server_key}\n"))
    broker.conf.write_text(broker.conf.read_text().replace("allow_anonymous true\n", "allow_anonymous false\n"))
    broker.start()
    try:
        yield broker, tls_port, pki
    finally:
        broker.stop()


async def test_status_over_tls_with_password_in_the_url(tmp_path: Path, tls_broker: Any) -> None:
    broker, tls_port, pki = tls_broker
    conn = await connect(broker, username="ops", password="p@ss word")
    await conn.publish(f"{PREFIX}/gateway/{A}/state/config", state(A, 3, "confirmed"), retain=True)
    await conn.close()
    url = f"mqtts://ops:p%40ss%20word@127.0.0.1:{tls_port}"
    rc, out, err = await fleet("status", "--mqtt", url, "--prefix", PREFIX, "--ca", str(pki.ca), cwd=tmp_path)
    assert rc == 0, err
    assert out.splitlines()[1].split()[:3] == [A, "3", "confirmed"]
    rc, out, err = await fleet("status", "--mqtt", url.replace("word@", "wort@"), "--prefix", PREFIX,
                               "--ca", str(pki.ca), cwd=tmp_path)
    assert rc == 1 and "check username/password" in err and "wort" not in err
    rc, out, err = await fleet("status", "--mqtt", url, "--prefix", PREFIX, cwd=tmp_path)  # no --ca
    assert rc == 1 and "certificate verify failed" in err and "check --ca" in err, err


# ---- with a real gateway -------------------------------------------------------------------------
def test_operator_tools_drive_a_real_gateway_over_mqtt(tmp_path: Path, mosquitto: Mosquitto) -> None:  # noqa: F811
    """fleet init/seal/set-config/publish --mqtt/status --wait/rollout/bundle against `schwebe run`
    with `[remote_config] mqtt` only: the broker is the gateway's only way to the repository,
    apart from the technician's upload."""
    import base64
    import urllib.request

    from gateway.web.auth import hash_password
    from tests.helpers.daemon import Daemon, free_port

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        if stdin is not None:  # seal reads its secret from stdin
            return subprocess.run([sys.executable, "-m", "gateway.cli", *args], cwd=tmp_path, input=stdin,
                                  capture_output=True, text=True, timeout=90)
        rc, out, err = in_process(list(args), tmp_path)
        return subprocess.CompletedProcess(list(args), rc, out, err)

    eui = "b827ebfffe000001"
    udp, web = free_port(socket.SOCK_DGRAM), free_port()
    assert run("fleet", "init", "repo").returncode == 0

    def target(broker_url: str, password_hash: str, extra: str = "") -> str:
        return (f'[[sources.gwmp]]\nbind = "127.0.0.1:{udp}"\n[[forward.mqtt]]\nname = "city"\n'
                f'url = "{broker_url}"\n[web]\nbind = "127.0.0.1:{web}"\nopen_read_only = true\n'
                f'username = "operator"\npassword_hash = "{password_hash}"\n{extra}')

    pw_hash = hash_password("a long operator password")
    site = tmp_path / "schwebe.toml"
    site.write_text(f'[gateway]\neui = "{eui}"\ndata_dir = "{tmp_path / "data"}"\n'
                    f'[remote_config]\nroot = "{tmp_path}/repo/metadata/root.json"\nmqtt = "city"\n'
                    f'confirm_window = "2s"\n{target(mosquitto.url, pw_hash)}')
    site.chmod(0o600)
    gw = Daemon(site, web)
    try:
        gw.wait("forwarder connected", lambda s: s["forwarders"]["city"]["connected"])
        # the login's hash is a secret: sealed to this gateway's key before it goes anywhere
        pubkey = run("config", "pubkey", "--config", str(site)).stdout.strip()
        sealed = run("fleet", "seal", pubkey, stdin=pw_hash).stdout.strip()
        assert sealed.startswith("enc:v1:")
        (tmp_path / "all.toml").write_text(target(mosquitto.url, sealed))
        assert run("fleet", "set-config", "repo", "--all", "all.toml").stdout == "1\n"
        r = run("fleet", "publish", "repo", "--mqtt", mosquitto.url)
        assert r.returncode == 0, r.stderr
        r = run("fleet", "status", "--mqtt", mosquitto.url, "--wait", "1", "--timeout", "30")
        assert r.returncode == 0, (r.stdout, r.stderr)
        assert r.stdout.splitlines()[1].split()[:3] == [eui, "1", "confirmed"]
        assert " mqtt " in r.stdout.splitlines()[1]

        # a config whose forwarder cannot reach its broker: the gateway undoes it, the rollout stops
        (tmp_path / "broken.toml").write_text(target(f"mqtt://127.0.0.1:{free_port()}", sealed))
        r = run("fleet", "rollout", "repo", "--mqtt", mosquitto.url, "--waves", "100%", "--timeout", "40",
                "broken.toml")
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert f"stopped in wave 1: {eui} rolled-back: version 2 rolled back: forwarder city cannot deliver" \
            in r.stderr
        r = run("fleet", "status", "--mqtt", mosquitto.url, "--json")
        assert r.returncode == 1
        [row] = json.loads(r.stdout)
        assert (row["version"], row["state"], row["source"], row["last_confirmed"]) == (2, "rolled-back", "mqtt", 1)

        # on site: the technician brings this gateway's bundle and uploads it with the login
        (tmp_path / "own.toml").write_text(target(mosquitto.url, sealed, '[parking]\nclosed_spots = ["roadworks:1"]\n'))
        assert run("fleet", "set-config", "repo", "--gateway", eui, "own.toml").stdout == "3\n"
        assert run("fleet", "publish", "repo").returncode == 0
        r = run("fleet", "bundle", "repo", "--gateway", eui, "-o", "site.tar")
        assert r.returncode == 0, r.stderr
        auth = "Basic " + base64.b64encode(b"operator:a long operator password").decode()
        req = urllib.request.Request(f"http://127.0.0.1:{web}/api/config/bundle", method="POST",
                                     data=(tmp_path / "site.tar").read_bytes(),
                                     headers={"Content-Type": "application/x-tar", "Authorization": auth})
        with urllib.request.urlopen(req, timeout=30) as answer:
            assert json.load(answer)["version"] == 3
        st = gw.wait("bundle confirmed", lambda s: s["remote_config"]["state"] == "confirmed"
                     and s["remote_config"]["version"] == 3, 30)
        assert st["remote_config"]["source"] == "bundle"
    finally:
        gw.stop()


async def test_ctrl_c_during_a_rollout_says_what_stays(tmp_path: Path, mosquitto: Mosquitto) -> None:  # noqa: F811
    make_repo(tmp_path)
    conn = await connect(mosquitto)
    await conn.publish(f"{PREFIX}/gateway/{A}/state/config", state(A, 1, "confirmed"), retain=True)
    await conn.close()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "fleet", "rollout", "repo", "--mqtt", mosquitto.url,
        "--prefix", PREFIX, "--waves", "100%", "all.toml", cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    async with asyncio.timeout(30):
        while b"waiting for 1 confirmation" not in await proc.stdout.readline():
            pass
    proc.send_signal(signal.SIGINT)
    err = (await asyncio.wait_for(proc.stderr.read(), 30)).decode()
    assert await proc.wait() == 130
    assert "interrupted; what was published stays published" in err and "Traceback" not in err
