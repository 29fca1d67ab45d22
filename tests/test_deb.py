"""The Debian package in a throwaway Debian 12 root: install, upgrade, remove, purge.

Building the package takes about two minutes (a fresh venv from PyPI wheels, the Cython
parser compiled), so these run with -m slow; `SCHWEBE_DEB=path.deb` reuses a built one.
The unit file checks at the bottom need no package and run in the default suite.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers.debroot import REPO, Booted, Root, base_root, need, throwaway
from tests.test_run_daemon import push_data

DEPLOY = REPO / "deploy"
UPGRADE = "0.1.0+upgrade1"


def _version(deb: Path) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="session")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.environ.get("SCHWEBE_DEB"):
        return Path(os.environ["SCHWEBE_DEB"])
    need("dpkg-deb")
    out = tmp_path_factory.mktemp("deb")
    proc = subprocess.run([str(DEPLOY / "build-deb.sh"), "--fast", "--out", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return Path(proc.stdout.strip().splitlines()[-1])


def _repack(deb: Path, version: str, work: Path) -> Path:
    """The same build as another version in its own release slot (an upgrade without a
    second two-minute build): slot directory, shebangs, venv config, postinst, control."""
    old = _version(deb)
    tree = work / "tree"
    subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True)
    (tree / "opt/schwebe/releases" / old).rename(tree / "opt/schwebe/releases" / version)
    slot = tree / "opt/schwebe/releases" / version
    for f in [*(slot / "bin").iterdir(), slot / "pyvenv.cfg", tree / "DEBIAN/postinst"]:
        if f.is_symlink() or not f.is_file():
            continue
        data = f.read_bytes()
        if b"\0" not in data:
            f.write_bytes(data.replace(f"releases/{old}".encode(), f"releases/{version}".encode())
                          .replace(f"VERSION={old}\n".encode(), f"VERSION={version}\n".encode()))
    control = tree / "DEBIAN/control"
    control.write_text(control.read_text().replace(f"Version: {old}", f"Version: {version}"))
    out = work / f"schwebe_{version}_amd64.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "-b", str(tree), str(out)],
                   check=True, capture_output=True)
    shutil.rmtree(tree)
    return out


@pytest.fixture(scope="session")
def deb_next(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _repack(deb, UPGRADE, tmp_path_factory.mktemp("deb-next"))


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Root]:
    if os.geteuid() != 0:
        # .ci/run runs this module with sudo before `make test-slow`, which then skips it
        pytest.skip("needs root (dpkg --root, chroot, mount): sudo .venv/bin/python -m pytest -m slow tests/test_deb.py")
    if not os.environ.get("SCHWEBE_DEB_BASE"):
        need("debootstrap")
    yield from throwaway(base_root(), tmp_path / "root")


def _install(root: Root, deb: Path) -> None:
    proc = root.dpkg("-i", str(deb))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _free_port_udp() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tree_digest(top: Path) -> dict[str, str]:
    return {str(p.relative_to(top)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(top.rglob("*"))
            # the lock and SQLite's shared-memory index are made anew by whoever opens them
            if p.is_file() and p.name != "lock" and not p.name.endswith(("-shm", "-wal"))}


def _run_demo(root: Root, seconds: float) -> None:
    """The packaged daemon, as the schwebe user, on the data directory the package made:
    simulated sensors fill the buffer and the spot table; SIGTERM ends it cleanly."""
    root.mount_api()
    port = _free_port()
    proc = root.popen("/usr/bin/schwebe", "demo", "--data-dir", "/var/lib/schwebe",
                      "--port", str(port), user="schwebe")
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    if json.loads(r.read()).get("ok"):
                        break
            except OSError:
                pass
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "the packaged demo never answered /healthz"
            time.sleep(0.3)
        time.sleep(seconds)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out


def _buffer_cursors(root: Root) -> dict[str, int]:
    """Where each forwarder stands in the buffer, as the installed release reads it."""
    proc = root.run("/usr/bin/schwebe", "buffer", "inspect", "--data-dir", "/var/lib/schwebe",
                    "--json", user="schwebe")
    return {name: c["low"] for name, c in json.loads(proc.stdout)["cursors"].items()}


@pytest.mark.slow
def test_install_makes_a_runnable_gateway(root: Root, deb: Path) -> None:
    _install(root, deb)
    version = _version(deb)
    # the slot layout: the venv in releases/<version>, `current` naming it, /usr/bin/schwebe through it
    assert os.readlink(root.p("/opt/schwebe/current")) == f"releases/{version}"
    assert os.readlink(root.p("/usr/bin/schwebe")) == "/opt/schwebe/current/bin/schwebe"
    assert root.run("/usr/bin/schwebe", "--version").stdout.strip().endswith(version.split("+")[0])
    # the compiled parser, built for this architecture, is what runs
    root.run("/opt/schwebe/current/bin/python", "-c", "import gateway.frames._frames_c")
    # the system user, in dialout for the serial adapters, with no login shell
    uid = root.ids("passwd", "schwebe")
    gid = root.ids("group", "schwebe")
    assert "schwebe" in root.group_members("dialout")
    assert root.p("/etc/passwd").read_text().split(f"schwebe:x:{uid}:")[1].split("\n")[0] \
        .endswith("/usr/sbin/nologin")
    # config root:schwebe 0640 (the service reads it, others cannot), a conffile
    st = root.p("/etc/schwebe/schwebe.toml").stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, gid, 0o640)
    assert "/etc/schwebe/schwebe.toml" in root.p("/var/lib/dpkg/info/schwebe.conffiles").read_text()
    st = root.p("/var/lib/schwebe").stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (uid, gid, 0o750)
    assert root.p("/usr/share/doc/schwebe/README.md").read_text().startswith("# Schwebe")
    # the shipped config validates as the service user would read it
    root.run("/usr/bin/schwebe", "config", "validate", "/etc/schwebe/schwebe.toml", user="schwebe")
    # and the units verify against the installed files
    need("systemd-analyze")

    def verify(unit: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["systemd-analyze", "verify", f"--root={root.path}", unit],
                              capture_output=True, text=True)

    proc = verify("schwebe.service")
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr
    # the radio units name binaries this package does not ship: verify says so until
    # they are installed where the README says
    forwarders = {"schwebe-lora-pkt-fwd.service": "/opt/sx1302_hal/bin/lora_pkt_fwd",
                  "schwebe-concentratord.service": "/usr/bin/chirpstack-concentratord-sx1302"}
    for unit, binary in forwarders.items():
        assert binary in verify(unit).stderr
        root.p(binary).parent.mkdir(parents=True, exist_ok=True)
        root.p(binary).write_text("#!/bin/sh\n")
        root.p(binary).chmod(0o755)
        proc = verify(unit)
        assert proc.returncode == 0 and not proc.stderr.strip(), (unit, proc.stderr)


@pytest.mark.slow
def test_upgrade_keeps_config_buffer_spot_state_and_keys(root: Root, deb: Path,
                                                         deb_next: Path) -> None:
    _install(root, deb)
    # the admin's edit, the gateway's key pair, a buffer and spot state written by the daemon
    conf = root.p("/etc/schwebe/schwebe.toml")
    edited = conf.read_text().replace('eui = "b827ebfffe000001"', 'eui = "b827ebfffe00abcd"')
    assert edited != conf.read_text()
    conf.write_text(edited)
    pubkey = root.run("/usr/bin/schwebe", "config", "pubkey", "--config", "/etc/schwebe/schwebe.toml", user="schwebe").stdout
    _run_demo(root, 4)
    before = _tree_digest(root.p("/var/lib/schwebe"))
    assert {"buffer.sqlite3", "parking-spots.json", "remote/gateway.key"} <= set(before), before
    cursors = _buffer_cursors(root)
    assert cursors["local-sink"] > 0, cursors

    proc = root.dpkg("-i", str(deb_next))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "schwebe.toml" not in proc.stdout  # no conffile question: the edit is simply kept
    assert conf.read_text() == edited
    assert _tree_digest(root.p("/var/lib/schwebe")) == before
    # the new release runs, reads the old buffer and keeps the same key
    assert os.readlink(root.p("/opt/schwebe/current")) == f"releases/{UPGRADE}"
    assert not root.p(f"/opt/schwebe/releases/{_version(deb)}").exists()
    assert _buffer_cursors(root) == cursors
    assert root.run("/usr/bin/schwebe", "config", "pubkey", "--config", "/etc/schwebe/schwebe.toml", user="schwebe").stdout == pubkey


@pytest.mark.slow
def test_remove_keeps_data_and_purge_deletes_it(root: Root, deb: Path) -> None:
    _install(root, deb)
    root.run("/usr/bin/schwebe", "config", "pubkey", "--config", "/etc/schwebe/schwebe.toml", user="schwebe")
    key = root.p("/var/lib/schwebe/remote/gateway.key").read_bytes()

    proc = root.dpkg("-r", "schwebe")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not root.p("/usr/bin/schwebe").is_symlink()
    assert not root.p("/opt/schwebe").exists()
    assert root.p("/etc/schwebe/schwebe.toml").exists()
    assert root.p("/var/lib/schwebe/remote/gateway.key").read_bytes() == key

    proc = root.dpkg("-P", "schwebe")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not root.p("/etc/schwebe").exists()
    assert not root.p("/var/lib/schwebe").exists()
    # the user stays (Debian's practice: files it owned may live on elsewhere)
    assert root.ids("passwd", "schwebe") > 0


@pytest.mark.slow
def test_self_update_under_systemd_confirms_a_good_release_and_rolls_back_a_broken_one(
        root: Root, deb: Path, tmp_path: Path) -> None:
    """The packaged unit under systemd as PID 1: the daemon finds a release (the same build
    repacked as another version) in an HTTPS repository made with `schwebe fleet`, stages it
    and exits 75; systemd restarts it through `ExecStartPre=-+... update apply`, which switches
    as root; the release confirms in its window and stages the next one, whose daemon exits 1;
    that one is rolled back at its fourth start. Then `apt remove` takes every slot."""
    need("systemd-nspawn")
    need("nsenter")
    from tests.test_remote_config import HttpsRepo
    from tests.test_update import CRASHES, cli, make_deb

    _install(root, deb)
    v1 = _version(deb)
    v2, v3 = f"{v1}+update2", f"{v1}+update3"
    work = tmp_path / "debs"
    work.mkdir()
    good = _repack(deb, v2, work)
    broken = make_deb(work, v3, CRASHES)  # a schwebe package whose daemon exits 1 at once
    fleet = tmp_path / "fleet"
    assert cli("fleet", "init", str(fleet))[0] == 0
    shutil.copy(fleet / "metadata/1.root.json", root.p("/etc/schwebe/root.json"))
    https = HttpsRepo(tmp_path, fleet)
    shutil.copy(https.cert, root.p("/etc/schwebe/fleet-ca.pem"))
    conf = "/etc/schwebe/schwebe.toml"
    root.p(conf).write_text(f"""
[gateway]
eui = "b827ebfffe000001"
data_dir = "/var/lib/schwebe"
[[sources.gwmp]]
bind = "127.0.0.1:{_free_port_udp()}"
[web]
bind = "127.0.0.1:{_free_port()}"
[remote_config]
root = "/etc/schwebe/root.json"
repository = "{https.url}"
ca = "/etc/schwebe/fleet-ca.pem"
poll_interval = "10s"
confirm_window = "2s"
""")

    def release(deb_file: Path) -> None:
        assert cli("fleet", "release", str(fleet), str(deb_file))[0] == 0
        assert cli("fleet", "publish", str(fleet))[0] == 0

    def current() -> str:
        return os.readlink(root.p("/opt/schwebe/current"))

    release(good)
    root.run("/usr/bin/systemctl", "enable", "schwebe.service")
    box = Booted(root, root.work / "boot.log")

    def status() -> dict[str, object]:
        out = box.ns("/usr/bin/schwebe", "update", "status", "--config", conf, check=False).stdout
        return json.loads(out) if out.strip() else {}

    try:
        _wait_for(lambda: current() == f"releases/{v2}" and status().get("outcome") == "confirmed",
                  f"{v2} never ran and confirmed", 60)
        assert os.readlink(root.p("/opt/schwebe/confirmed")) == f"releases/{v1}"  # until the next start
        release(broken)
        _wait_for(lambda: status().get("outcome") == "rolled-back", f"{v3} was not rolled back", 90)
        st = status()
        assert (st["running"], st["version"], st["trying"]) == (v2, v3, None), st
        assert "did not confirm within 3 starts" in str(st["reason"]), st
        assert current() == os.readlink(root.p("/opt/schwebe/confirmed")) == f"releases/{v2}"
        assert sorted(p.name for p in root.p("/opt/schwebe/releases").iterdir()) == sorted([v1, v2])
        _wait_for(lambda: box.show("schwebe", "ActiveState")["ActiveState"] == "active",
                  f"{v2} is not running again", 30)
        journal = box.ns("journalctl", "-u", "schwebe", "--no-pager", "-o", "cat").stdout
        assert "status=75/TEMPFAIL" in journal and f"trying {v3} (start 3)" in journal, journal[-4000:]
    finally:
        box.poweroff()
        https.close()
    # apt remove takes the self-updated slots, the links and the update state with it
    proc = root.dpkg("-r", "schwebe")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not root.p("/opt/schwebe").exists()


def _wait_for(check: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.5)


@pytest.mark.slow
def test_service_under_systemd_survives_kill_hang_and_reboot(root: Root, deb: Path) -> None:
    """The packaged unit under systemd as PID 1, hardening and all: READY, frames forwarded,
    kill -9 restarted, a hung event loop killed by the watchdog and restarted, and up again
    after a reboot with its data."""
    need("systemd-nspawn")
    need("nsenter")
    _install(root, deb)
    udp, web = _free_port_udp(), _free_port()
    root.p("/etc/schwebe/schwebe.toml").write_text(f"""
[gateway]
eui = "b827ebfffe000001"
data_dir = "/var/lib/schwebe"
[[sources.gwmp]]
bind = "127.0.0.1:{udp}"
[[forward.file]]
name = "local"
path = "/var/lib/schwebe/forwarded.jsonl"
start = "oldest"
[web]
bind = "127.0.0.1:{web}"
""")
    root.run("/usr/bin/systemctl", "enable", "schwebe.service")
    forwarded = root.p("/var/lib/schwebe/forwarded.jsonl")
    # the offered journald drop-in; /var/log/journal exists, so without it logs would persist
    dropin = root.p("/etc/systemd/journald.conf.d/schwebe.conf")
    dropin.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(root.p("/usr/share/doc/schwebe/examples/schwebe-journald.conf"), dropin)
    root.p("/var/log/journal").mkdir(parents=True, exist_ok=True)

    def lines() -> int:
        return len(forwarded.read_text().splitlines()) if forwarded.exists() else 0

    def send(token: int) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            s.sendto(push_data(token, 3), ("127.0.0.1", udp))
            assert s.recv(64)[3] == 1  # PUSH_ACK: the daemon is serving

    box = Booted(root, root.work / "boot.log")
    try:
        st = box.show("schwebe", "ActiveState", "MainPID", "NRestarts", "User")
        assert (st["ActiveState"], st["NRestarts"]) == ("active", "0"), st
        send(1)
        _wait_for(lambda: lines() >= 3, "frames never reached the file forwarder", 30)

        pid = st["MainPID"]
        box.ns("systemctl", "kill", "-s", "KILL", "schwebe")

        def restarted() -> bool:
            now = box.show("schwebe", "MainPID", "ActiveState")
            return now["ActiveState"] == "active" and now["MainPID"] not in ("0", pid)

        _wait_for(restarted, "no restart after kill -9", 30)
        assert box.show("schwebe", "NRestarts")["NRestarts"] == "1"
        send(2)
        # forwarded before the hang: what sits in the commit interval dies with a killed process
        _wait_for(lambda: lines() >= 6, "frames not forwarded after the restart", 30)

        # a hung loop: stopped, it stops pinging the watchdog (WatchdogSec=30s)
        box.ns("systemctl", "kill", "-s", "STOP", "schwebe")
        _wait_for(lambda: box.show("schwebe", "NRestarts")["NRestarts"] == "2",
                  "the watchdog never restarted a hung daemon", 60)
        journal = box.ns("journalctl", "-u", "schwebe", "--no-pager").stdout
        assert "Watchdog timeout" in journal
        _wait_for(lambda: box.show("schwebe", "ActiveState")["ActiveState"] == "active",
                  "not active after the watchdog restart", 30)
        send(3)
        _wait_for(lambda: lines() >= 9, "frames lost across the restarts", 30)
        # the daemon's logs are in the journal, and the journal in RAM only
        assert '"msg": "ready"' in journal
        assert not [p for p in root.p("/var/log/journal").rglob("*") if p.is_file()]
        assert box.ns("sh", "-c", "ls /run/log/journal/*/system.journal").returncode == 0
    finally:
        box.poweroff()

    box = Booted(root, root.work / "boot2.log")  # the reboot
    try:
        st = box.show("schwebe", "ActiveState", "NRestarts")
        assert st == {"ActiveState": "active", "NRestarts": "0"}, st
        send(4)
        _wait_for(lambda: lines() >= 12, "nothing forwarded after the reboot", 30)
    finally:
        box.poweroff()


# The unit files themselves: no package needed.

def _unit(name: str) -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for line in (DEPLOY / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            k, v = line.split("=", 1)
            keys.setdefault(k, []).append(v)
    return keys


def test_service_exposure_is_below_two() -> None:
    need("systemd-analyze")
    proc = subprocess.run(["systemd-analyze", "security", "--offline=yes",
                           str(DEPLOY / "schwebe.service")], capture_output=True, text=True)
    m = re.search(r"Overall exposure level for schwebe\.service: (\d+\.\d+) (\w+)", proc.stdout)
    assert m, proc.stdout[-2000:] + proc.stderr
    assert float(m.group(1)) < 2.0 and m.group(2) == "OK", m.group(0)


def test_service_start_limit_paces_but_never_gives_up() -> None:
    """Restart=always with a start limit that cannot trip at the restart spacing: a gateway
    in a crash loop (bad config, dead card) keeps trying every RestartSec by itself."""
    u = _unit("schwebe.service")
    assert u["Restart"] == ["always"]
    spacing = float(u["RestartSec"][0].rstrip("s"))
    interval = float(u["StartLimitIntervalSec"][0].rstrip("s"))
    burst = int(u["StartLimitBurst"][0])
    assert spacing >= 1 and interval / spacing + 1 < burst
    assert u["ExecStart"][0].startswith("/usr/bin/schwebe run --config /etc/schwebe/schwebe.toml")
    assert u["CapabilityBoundingSet"] == [""] and u["DevicePolicy"] == ["closed"]
    assert u["SystemCallFilter"][0] == "@system-service"


def test_packet_forwarder_feeds_the_example_config() -> None:
    """lora_pkt_fwd's EU868 config sends to the port the shipped schwebe.toml listens on."""
    import tomllib

    conf = json.loads((DEPLOY / "packet-forwarder/global_conf.json").read_text())
    gw = conf["gateway_conf"]
    bind = tomllib.loads((DEPLOY / "schwebe.example.toml").read_text())["sources"]["gwmp"][0]["bind"]
    assert bind == f"{gw['server_address']}:{gw['serv_port_up']}" == "127.0.0.1:1700"
    sx = conf["SX130x_conf"]
    freqs = sorted(sx[f"radio_{c['radio']}"]["freq"] + c["if"]
                   for k, c in sx.items() if k.startswith("chan_multiSF_"))
    assert freqs == [867100000, 867300000, 867500000, 867700000, 867900000,
                     868100000, 868300000, 868500000]


def test_udev_rules_name_the_adapters_the_docs_promise() -> None:
    rules = (DEPLOY / "udev/60-schwebe.rules").read_text()
    assert 'SYMLINK+="schwebe-rs485"' in rules and 'SYMLINK+="schwebe-gnss"' in rules
