"""Self-update with A/B rollback: the state machine on a fake /opt/schwebe under tmp_path.

Real parts: repositories made with `schwebe fleet init/release/publish`, real .deb files made
with dpkg-deb from a tiny tree (a real package layout; ``bin/schwebe`` is a script so a release
can be broken on purpose), the daemon's staging code downloading through ngclient, and the
root step `schwebe update apply` as systemd runs it before each start. A start of the daemon is
emulated as systemd does it: the root step, then ``current/bin/schwebe run``, killed at the
start timeout when it hangs.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest

from gateway.cli.main import main
from gateway.config import load_config
from gateway.fleet.mqtt import mirror_files
from gateway.fleet.repo import Repository
from gateway.remote.fetchers import FilesFetcher
from gateway.update import KILL_AT_ENV
from gateway.update.files import DaemonFiles, load_state
from gateway.update.slots import Site, Slots
from gateway.update.stage import Releases
from tests.helpers.daemon import REPO
from tests.mosquitto import Mosquitto, mosquitto  # noqa: F401

EUI = "b827ebfffe000001"
ARCH = "amd64"  # the packages made here; the root step and the daemon are told so

GOOD = """#!/bin/sh
# a release that works: as the daemon does after its confirm window, it says confirmed
[ "$1" = run ] || exit 0
# (the gateway's data dir is beside opt/: <tmp>/opt/releases/<v>/bin/schwebe, <tmp>/data)
printf '{"version": "@V@", "outcome": "confirmed", "reason": null, "at": 1}' > "$(dirname "$0")/../../../../data/update/verdict.json"
"""
CRASHES = "#!/bin/sh\n[ \"$1\" = run ] || exit 0\necho 'Traceback: ImportError' >&2\nexit 1\n"
HANGS = "#!/bin/sh\n[ \"$1\" = run ] || exit 0\nexec sleep 60\n"


def make_deb(out: Path, version: str, script: str, *, package: str = "schwebe",
             slot: bool = True, arch: str = ARCH) -> Path:
    """A real Debian package of the layout `make deb` builds, with a script as bin/schwebe."""
    tree = out / f"tree-{package}-{version}"
    shutil.rmtree(tree, ignore_errors=True)
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: {version}\nArchitecture: {arch}\n"
        "Maintainer: t <t@example.org>\nDescription: test release\n")
    bindir = tree / "opt/schwebe/releases" / version / "bin"
    if not slot:
        bindir = tree / "usr/bin"
    bindir.mkdir(parents=True)
    (bindir / "schwebe").write_text(script.replace("@V@", version))
    (bindir / "schwebe").chmod(0o755)
    (bindir.parent / "lib").mkdir()
    (bindir.parent / "lib" / "payload.txt").write_text(f"release {version}\n" * 100)
    deb = out / f"{package}_{version}_{arch}.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "--build", str(tree), str(deb)],
                   check=True, capture_output=True)
    return deb


def cli(*args: str) -> tuple[int, str, str]:
    """`schwebe ...` in this process (a subprocess start costs ~0.4 s)."""
    out, err = io.StringIO(), io.StringIO()
    old = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        rc = main(list(args))
    finally:
        sys.stdout, sys.stderr = old
    return rc, out.getvalue(), err.getvalue()


class Gateway:
    """One gateway: its on-site config, data dir, /opt/schwebe, and the operator's repository."""

    def __init__(self, tmp: Path, *, first: str = "1.0", eui: str = EUI, repo: Path | None = None) -> None:
        self.tmp = tmp
        self.eui = eui
        self.opt = tmp / "opt"
        self.data = tmp / "data"
        self.repo = repo or tmp / "fleet"
        self.debs = tmp / "debs"
        self.debs.mkdir(parents=True)
        if repo is None:
            rc, _, err = cli("fleet", "init", str(self.repo))
            assert rc == 0, err
        self.config = tmp / "schwebe.toml"
        self.config.write_text(f"""
[gateway]
eui = "{eui}"
data_dir = "{self.data}"
[remote_config]
root = "{self.repo}/metadata/1.root.json"
repository = "https://config.example.org/fleet/"
install_dir = "{self.opt}"
""")
        (self.data / "update").mkdir(parents=True)
        # the package as postinst leaves it: the slot, `current` (and no update state yet)
        deb = self.deb(first)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp / "x")], check=True)
        (self.opt / "releases").mkdir(parents=True)
        os.rename(tmp / "x/opt/schwebe/releases" / first, self.opt / "releases" / first)
        os.symlink(f"releases/{first}", self.opt / "current")

    def deb(self, version: str, script: str = GOOD) -> Path:
        return make_deb(self.debs, version, script)

    def release(self, version: str, script: str = GOOD, *extra: str) -> None:
        """What the operator does: fleet release, fleet publish."""
        rc, out, err = cli("fleet", "release", str(self.repo), *extra, str(self.deb(version, script)))
        assert rc == 0 and out.strip() == version, err
        rc, _, err = cli("fleet", "publish", str(self.repo))
        assert rc == 0, err

    def releases(self, running: str | None = None) -> Releases:
        return Releases(load_config(self.config), arch=ARCH, version=running or self.current())

    def stage(self) -> bool:
        """The daemon's check, over the repository's files as a web server would serve them."""
        files = {p.relative_to(self.repo).as_posix(): p.read_bytes() for p in self.repo.rglob("*")
                 if p.is_file() and p.relative_to(self.repo).parts[0] in ("metadata", "targets")}
        return asyncio.run(self.releases().check(FilesFetcher(files, "repository"), "https://x/",
                                                 self.data / "remote", (frozenset({"city"}), frozenset())))

    def slots(self, max_starts: int = 3) -> Slots:
        return Slots(Site(install_dir=self.opt, data_dir=self.data,
                          trusted_root=self.repo / "metadata/1.root.json", eui=int(self.eui, 16), arch=ARCH),
                     max_starts=max_starts)

    def current(self) -> str:
        return Path(os.readlink(self.opt / "current")).name

    def link(self, name: str) -> str | None:
        try:
            return Path(os.readlink(self.opt / name)).name
        except FileNotFoundError:
            return None

    def start(self, timeout: float = 0.5) -> int | None:
        """One start as systemd makes it: the root step, then the daemon of `current`.
        None: it hung and was killed at the start timeout."""
        self.slots().apply()
        try:
            return subprocess.run([str(self.opt / "current/bin/schwebe"), "run"], timeout=timeout,
                                  capture_output=True).returncode
        except subprocess.TimeoutExpired:
            return None

    def slot_names(self) -> list[str]:
        return sorted(p.name for p in (self.opt / "releases").iterdir())

    def status(self) -> dict[str, Any]:
        return self.releases().public()


@pytest.fixture
def gw(tmp_path: Path) -> Gateway:
    return Gateway(tmp_path)


def test_fleet_release_refuses_what_is_not_a_schwebe_package_and_publishes_the_rest(gw: Gateway) -> None:
    text = gw.tmp / "notes.deb"
    text.write_text("not a package\n")
    other = make_deb(gw.debs, "2.0", GOOD, package="chirpstack")
    (gw.tmp / "odd").mkdir()
    no_slot = make_deb(gw.tmp / "odd", "2.0", GOOD, slot=False)
    for path, problem in ((text, "not a Debian package (no ar archive header"),
                          (other, "a package of 'chirpstack', not of 'schwebe'"),
                          (no_slot, "has no /opt/schwebe/releases/2.0/bin/schwebe"),
                          (gw.tmp / "missing.deb", "cannot read")):
        rc, _, err = cli("fleet", "release", str(gw.repo), str(path))
        assert rc == 1 and problem in err and str(path) in err, err
    assert Repository.open(gw.repo).targets() == {}

    gw.release("2.0")
    gw.release("2.1", GOOD, "--gateway", EUI)
    targets = json.loads(max((gw.repo / "metadata").glob("*.targets.json"),
                             key=lambda p: int(p.name.split(".")[0])).read_text())["signed"]["targets"]
    assert targets["releases/all/schwebe_amd64.deb"]["custom"] == {
        "version": "2.0", "arch": "amd64", "package": "schwebe_2.0_amd64.deb"}
    assert targets[f"releases/{EUI}/schwebe_amd64.deb"]["custom"]["version"] == "2.1"
    # packages are not carried as retained MQTT messages; the metadata naming them is
    assert not [rel for rel in mirror_files(Repository.open(gw.repo)) if "releases" in rel]
    # the same package for another gateway: one file, hard-linked (a wave of hundreds)
    deb = gw.debs / "schwebe_2.1_amd64.deb"
    assert cli("fleet", "release", str(gw.repo), "--gateway", "b827ebfffe000099", str(deb))[0] == 0
    mine, other = (next((gw.repo / "targets/releases" / e).glob("*.deb")) for e in (EUI, "b827ebfffe000099"))
    assert mine.samefile(other)
    # a gateway takes its own release before the fleet's
    assert gw.stage()
    assert DaemonFiles(gw.data).staged() is not None
    assert DaemonFiles(gw.data).staged()["version"] == "2.1"  # type: ignore[index]


def test_a_good_release_runs_beside_the_old_one_is_confirmed_and_the_oldest_pruned(gw: Gateway) -> None:
    gw.release("2.0")
    assert gw.stage()
    assert gw.status()["staged"] == "2.0"
    assert not gw.stage(), "the same release is staged once"
    assert gw.start() == 0  # the root step installs it, the release confirms itself
    assert gw.current() == "2.0" and gw.link("confirmed") == "1.0"
    st = gw.status()
    assert (st["running"], st["trying"], st["staged"], st["outcome"]) == ("2.0", None, None, "confirmed")
    gw.slots().apply()  # the next start records it
    assert gw.link("confirmed") == "2.0" and gw.slot_names() == ["1.0", "2.0"]
    state = load_state(gw.opt)
    assert state is not None and (state.running, state.previous, state.outcome) == ("2.0", "1.0", "confirmed")

    gw.release("3.0")
    assert gw.stage()
    assert gw.start() == 0
    gw.slots().apply()
    assert gw.current() == gw.link("confirmed") == "3.0"
    assert gw.slot_names() == ["2.0", "3.0"], "one back is kept, older ones pruned"
    rc, out, _ = cli("update", "status", "--config", str(gw.config))
    assert rc == 0 and json.loads(out)["outcome"] == "confirmed" and json.loads(out)["version"] == "3.0"


@pytest.mark.parametrize("script", [CRASHES, HANGS], ids=["exits-1", "hangs-never-ready"])
def test_a_broken_release_is_rolled_back_by_itself(gw: Gateway, script: str) -> None:
    gw.release("2.0", script)
    assert gw.stage()
    outcomes = [gw.start() for _ in range(3)]
    assert outcomes == ([1, 1, 1] if script == CRASHES else [None, None, None])
    assert gw.current() == "2.0", "three starts on trial"
    assert gw.start() == 0, "the fourth start is the old release again"
    assert gw.current() == gw.link("confirmed") == "1.0"
    assert gw.slot_names() == ["1.0"]
    st = gw.status()
    assert st["outcome"] == "rolled-back" and st["version"] == "2.0" and st["trying"] is None
    assert "did not confirm within 3 starts" in st["reason"] and "back to 1.0" in st["reason"]
    assert not gw.stage(), "a release rolled back is never tried again"
    gw.release("2.1")  # the operator's fix
    assert gw.stage() and gw.start() == 0 and gw.current() == "2.1"


def test_a_release_that_fails_its_window_asks_and_is_rolled_back_at_the_next_start(gw: Gateway) -> None:
    gw.release("2.0")
    assert gw.stage()
    gw.slots().apply()
    assert gw.current() == "2.0"
    files = DaemonFiles(gw.data)
    files.verdict.write_text(json.dumps({"version": "2.0", "outcome": "rolled-back", "at": 1,
                                         "reason": "release 2.0 rolled back: forwarder city cannot deliver"}))
    assert gw.status()["outcome"] == "rolled-back"
    gw.slots().apply()
    assert gw.current() == "1.0"
    assert gw.status()["reason"] == "release 2.0 rolled back: forwarder city cannot deliver; back to 1.0"


def test_the_root_step_installs_only_what_tuf_signed(gw: Gateway, tmp_path: Path) -> None:
    files = DaemonFiles(gw.data)
    gw.release("2.0")
    # the daemon's file changed after staging (a compromised daemon, a bad card)
    assert gw.stage()
    with files.package("2.0", ARCH).open("r+b") as f:
        f.seek(-10, os.SEEK_END)
        f.write(b"0123456789")
    gw.slots().apply()
    st = gw.status()
    assert gw.current() == "1.0" and st["outcome"] == "refused" and "tampered" in st["reason"]
    assert files.staged() is None and not (gw.opt / "releases/2.0").exists()

    # a package signed by a repository this gateway does not trust, staged with its metadata
    stranger = Gateway(tmp_path / "stranger")
    stranger.release("2.5")
    assert stranger.stage()
    shutil.copytree(stranger.data / "update", gw.data / "update", dirs_exist_ok=True)
    gw.slots().apply()
    st = gw.status()
    assert gw.current() == "1.0" and st["outcome"] == "refused" and st["version"] == "2.5"
    assert "signatures below threshold or from an untrusted key" in st["reason"], st

    # a request that claims another version than the signed target says
    gw.release("2.6")
    assert gw.stage()
    shutil.copy(files.package("2.6", ARCH), files.package("2.7", ARCH))
    files.request.write_text(json.dumps({"version": "2.7", "target": "releases/all/schwebe_amd64.deb"}))
    gw.slots().apply()
    assert gw.current() == "1.0" and "signed metadata says 2.6" in gw.status()["reason"]

    # what a compromised daemon could plant for root: a FIFO (must not hang the start) and a
    # link to somewhere else (root's clean-up must not follow it)
    gw.release("2.8")
    assert gw.stage()
    files.package("2.8", ARCH).unlink()
    os.mkfifo(files.package("2.8", ARCH))
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "metadata").mkdir(parents=True)
    (elsewhere / "precious").write_text("keep\n")
    (elsewhere / "metadata" / "precious").write_text("keep\n")
    os.rename(files.staged_dir, tmp_path / "staged.real")
    os.symlink(tmp_path / "staged.real", files.staged_dir)
    files.request.write_text(json.dumps({"version": "2.8", "target": "releases/all/schwebe_amd64.deb"}))
    gw.slots().apply()
    assert gw.current() == "1.0" and "not a regular file" in gw.status()["reason"], gw.status()
    os.unlink(files.staged_dir)
    os.symlink(elsewhere, files.staged_dir)
    files.request.write_text(json.dumps({"version": "2.9", "target": "releases/all/schwebe_amd64.deb"}))
    gw.slots().apply()
    assert (elsewhere / "precious").exists() and (elsewhere / "metadata" / "precious").exists()
    assert files.staged() is None


INSTALL_STEPS = ["verified", "unpacked", "slot-ready", "trying", "switched"]
TRIAL_STEPS = ["counted", "confirm-link", "confirmed", "rolled-back", "flipped-back"]


@pytest.mark.parametrize("step", INSTALL_STEPS + TRIAL_STEPS)
def test_power_cut_at_every_step_leaves_a_runnable_release(gw: Gateway, step: str) -> None:
    gw.release("2.0")
    assert gw.stage()
    if step in TRIAL_STEPS:
        gw.slots().apply()  # 2.0 on trial, start 1
        files = DaemonFiles(gw.data)
        if step in ("confirm-link", "confirmed"):
            files.verdict.write_text('{"version": "2.0", "outcome": "confirmed", "at": 1}')
        elif step in ("rolled-back", "flipped-back"):
            files.verdict.write_text('{"version": "2.0", "outcome": "rolled-back", "at": 1, "reason": "x"}')
    apply = [sys.executable, "-m", "gateway.cli", "update", "apply", "--config", str(gw.config)]
    cut = subprocess.run(apply, cwd=REPO, env={**os.environ, KILL_AT_ENV: step}, capture_output=True)
    assert cut.returncode == -9, cut.stderr.decode()[-2000:]
    assert gw.current() in ("1.0", "2.0")
    assert (gw.opt / "current/bin/schwebe").is_file(), "current names a complete slot"
    done = subprocess.run(apply, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    st = load_state(gw.opt)
    assert st is not None
    if step in ("rolled-back", "flipped-back"):
        assert (gw.current(), st.running, st.trying, st.outcome) == ("1.0", "1.0", None, "rolled-back")
        assert gw.slot_names() == ["1.0"]
    elif step in ("confirm-link", "confirmed"):
        assert (gw.current(), gw.link("confirmed"), st.running, st.outcome) == ("2.0", "2.0", "2.0", "confirmed")
    else:  # the install finished: 2.0 on trial, and it runs
        assert (gw.current(), st.trying) == ("2.0", "2.0"), (step, st)
        assert st.starts == (3 if step == "counted" else 2 if step in ("switched", "trying") else 1)
        assert DaemonFiles(gw.data).staged() is None
        assert not (gw.opt / ".unpack").exists()
        if step != "counted":  # (a third start would be its last: counted is about counting)
            assert gw.start() == 0 and gw.status()["outcome"] == "confirmed"


def test_an_apt_install_over_a_self_updated_release_is_adopted(gw: Gateway) -> None:
    gw.release("2.0")
    assert gw.stage() and gw.start() == 0
    gw.slots().apply()
    assert gw.link("confirmed") == "2.0"
    # apt install schwebe_4.0: dpkg unpacks the slot, postinst moves both links
    deb = gw.deb("4.0")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(gw.tmp / "apt")], check=True)
    os.rename(gw.tmp / "apt/opt/schwebe/releases/4.0", gw.opt / "releases/4.0")
    for name in ("current", "confirmed"):
        os.symlink("releases/4.0", gw.opt / f".{name}.new")
        os.replace(gw.opt / f".{name}.new", gw.opt / name)
    gw.slots().apply()
    st = load_state(gw.opt)
    assert st is not None and (gw.current(), st.running, st.trying) == ("4.0", "4.0", None)


class Emulated:
    """Gateways on a real broker whose daemon is emulated (a checkout's daemon cannot change
    its version): on a notification each runs the real staging code against the repository,
    then starts as systemd would (root step, then its release's bin/schwebe) until nothing is
    on trial, and keeps its update state retained as the daemon does."""

    def __init__(self, broker: Mosquitto, gateways: list[Gateway]) -> None:
        self.gws = {g.eui: g for g in gateways}
        self.work: queue.Queue[str | None] = queue.Queue()
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2)
        self.c.on_message = self._on_message
        self.c.connect(broker.host, broker.port)
        self.c.subscribe([("eu868/gateway/+/command/config", 1), ("eu868/fleet/notify", 1)])
        self.c.loop_start()
        for g in gateways:
            self.report(g)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        if msg.topic.endswith("/fleet/notify"):
            for e in self.gws:
                self.work.put(e)
        else:
            self.work.put(msg.topic.split("/")[2])

    def report(self, g: Gateway) -> None:
        st = {"eui": g.eui, **g.status()}
        self.c.publish(f"eu868/gateway/{g.eui}/state/update", json.dumps(st), qos=1, retain=True).wait_for_publish(5)

    def _run(self) -> None:
        while (eui := self.work.get()) is not None:
            g = self.gws[eui]
            if not g.stage():
                continue
            for _ in range(5):
                g.start()
                if g.status()["trying"] is None:
                    break
            g.slots().apply()
            self.report(g)

    def close(self) -> None:
        self.work.put(None)
        self.thread.join(30)
        self.c.loop_stop()
        self.c.disconnect()


def test_a_release_in_waves_stops_at_the_first_rollback(tmp_path: Path, mosquitto: Mosquitto) -> None:  # noqa: F811
    repo = tmp_path / "fleet"
    assert cli("fleet", "init", str(repo))[0] == 0
    euis = ["b827ebfffe0000a1", "b827ebfffe0000b2", "b827ebfffe0000c3"]
    gws = [Gateway(tmp_path / e, eui=e, repo=repo) for e in euis]
    fleet = Emulated(mosquitto, gws)

    def rollout(deb: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gateway.cli", "fleet", "rollout", str(repo), "--mqtt",
                               mosquitto.url, "--waves", "1,2,100%", "--timeout", "30", str(deb)],
                              cwd=REPO, capture_output=True, text=True, timeout=120)

    try:
        r = rollout(gws[0].deb("2.0", CRASHES))
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert f"{euis[0]} rolled-back: release 2.0 did not confirm within 3 starts" in r.stderr, r.stderr
        assert [g.current() for g in gws] == ["1.0"] * 3  # b and c never saw it
        assert [g.status()["outcome"] for g in gws] == ["rolled-back", None, None]

        r = rollout(gws[0].deb("2.1"))
        assert r.returncode == 0, (r.stdout, r.stderr)
        assert "wave 1: 1 gateway(s) run release 2.1" in r.stdout and "wave 3: 3 gateway(s)" in r.stdout
        assert [(g.current(), g.link("confirmed")) for g in gws] == [("2.1", "2.1")] * 3
        book = json.loads((repo / "fleet.json").read_text())
        assert book["rollout_releases"] == [] and set(book["targets"]) == {"releases/all/schwebe_amd64.deb"}
    finally:
        fleet.close()
