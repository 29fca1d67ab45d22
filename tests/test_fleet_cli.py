"""`schwebe fleet` from the command line, as an operator runs it (subprocesses of
``python -m gateway.cli``): init prints the root and keeps keys 0600, set-config refuses
what a gateway would refuse, publish signs what ngclient accepts, seal makes a value only
the gateway opens, a bundle is verified by ngclient straight from its tar."""

from __future__ import annotations

import io
import json
import stat
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

import pytest
from tuf.api import exceptions
from tuf.ngclient import FetcherInterface, Updater

from gateway.cli.main import main
from gateway.fleet import FleetError
from gateway.fleet.bundle import make_bundle
from gateway.fleet.repo import Repository
from gateway.remote.sealed import gateway_keypair, open_sealed

EUI = "b827ebfffe000001"
OTHER = "b827ebfffe000002"
ALL_TOML = '[log]\nlevel = "info"\n'
OWN_TOML = f'[gateway]\neui = "{EUI}"\n[log]\nlevel = "debug"\n'


def fleet(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", "fleet", *args], cwd=cwd, input=stdin,
                          capture_output=True, text=True, timeout=60)


Runner = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Runner:
    """The same command line in this process (the subprocess start costs ~0.4 s a call)."""
    def run(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        monkeypatch.chdir(cwd)
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin or ""))
        capsys.readouterr()
        rc = main(["fleet", *args])
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), rc, out, err)
    return run


class DirFetcher(FetcherInterface):
    """Serves file:// URLs like a static web server (404 for a missing file)."""

    def _fetch(self, url: str) -> Iterator[bytes]:
        p = Path(urlparse(url).path)
        if not p.exists():
            raise exceptions.DownloadHTTPError(f"404 {url}", 404)
        yield p.read_bytes()


class TarFetcher(FetcherInterface):
    """Serves ngclient's requests from an on-site bundle, as the gateway's upload does."""

    def __init__(self, tar: Path) -> None:
        with tarfile.open(tar) as t:
            self.files = {m.name: t.extractfile(m).read() for m in t.getmembers()  # type: ignore[union-attr]
                          if m.isfile()}

    def _fetch(self, url: str) -> Iterator[bytes]:
        name = url.removeprefix("bundle:///")
        if name not in self.files:
            raise exceptions.DownloadHTTPError(f"404 {url}", 404)
        yield self.files[name]


def client(root: bytes, where: Path, fetcher: FetcherInterface, base: str) -> Updater:
    (where / "dl").mkdir(parents=True)
    return Updater(metadata_dir=str(where), metadata_base_url=f"{base}/metadata/",
                   target_base_url=f"{base}/targets/", target_dir=str(where / "dl"),
                   fetcher=fetcher, bootstrap=root)


def test_init_set_config_publish_end_to_end(tmp_path: Path) -> None:
    offline = tmp_path / "usb"
    r = fleet("init", "repo", "--threshold", "targets=2", "--keys-dir", f"root={offline}",
              "--expiry", "timestamp=2d", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    repo = tmp_path / "repo"
    root = (repo / "metadata" / "1.root.json").read_bytes()
    assert r.stdout.encode() == root  # `fleet init DIR > root.json` gives the file to install
    assert "[remote_config] root" in r.stderr and "repo/metadata/root.json" in r.stderr
    keys = sorted(p.name for p in (repo / "keys").glob("*.key"))
    assert keys == ["snapshot.key", "targets.2.key", "targets.key", "timestamp.key"]
    assert [p.name for p in offline.glob("*.key")] == ["root.key"]  # the root key where asked
    for key in [*(repo / "keys").glob("*.key"), offline / "root.key"]:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key

    (tmp_path / "all.toml").write_text(ALL_TOML)
    (tmp_path / "own.toml").write_text(OWN_TOML)
    r = fleet("set-config", "repo", "--all", "all.toml", cwd=tmp_path)
    assert (r.returncode, r.stdout) == (0, "1\n"), r.stderr
    r = fleet("set-config", "repo", "--gateway", EUI.upper(), "own.toml", cwd=tmp_path)
    assert (r.returncode, r.stdout) == (0, "2\n"), r.stderr
    r = fleet("publish", "repo", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "targets version 1" in r.stdout and "configs/all.toml: config version 1" in r.stdout

    base = (repo).as_uri()
    up = client(root, tmp_path / "gw1", DirFetcher(), base)
    up.refresh()
    own = up.get_targetinfo(f"configs/{EUI}.toml")
    assert own is not None and own.custom == {"version": 2}
    assert Path(up.download_target(own)).read_text() == OWN_TOML
    shared = up.get_targetinfo("configs/all.toml")
    assert shared is not None and shared.custom == {"version": 1}
    # timestamp signed for the --expiry asked (2 days), not the 1-day default
    ts = json.loads((repo / "metadata" / "timestamp.json").read_text())["signed"]
    left = datetime.fromisoformat(ts["expires"].replace("Z", "+00:00")) - datetime.now(UTC)
    assert timedelta(days=1, hours=23) < left <= timedelta(days=2)


def test_errors_are_one_line_naming_what_and_where(tmp_path: Path, cli: Runner) -> None:
    assert cli("init", "repo", cwd=tmp_path).returncode == 0
    r = cli("init", "repo", cwd=tmp_path)
    assert r.returncode == 1 and "repo already holds a repository" in r.stderr
    assert len(r.stderr.splitlines()) == 1

    (tmp_path / "bad.toml").write_text('[buffer]\nmax_sise = "1MiB"\n')
    r = cli("set-config", "repo", "--all", "bad.toml", cwd=tmp_path)
    assert r.returncode == 1 and "bad.toml: not published" in r.stderr
    assert "buffer.max_sise: unknown key" in r.stderr
    (tmp_path / "own.toml").write_text(OWN_TOML)
    r = cli("set-config", "repo", "--all", "own.toml", cwd=tmp_path)  # names one gateway
    assert r.returncode == 1 and "gateway.eui must be left out" in r.stderr
    r = cli("set-config", "repo", "--gateway", OTHER, "own.toml", cwd=tmp_path)
    assert r.returncode == 1 and "for another gateway" in r.stderr
    assert json.loads((tmp_path / "repo" / "fleet.json").read_text())["config_version"] == 0

    r = cli("set-config", "nowhere", "--all", "own.toml", cwd=tmp_path)
    assert r.returncode == 1 and "nowhere: no fleet.json here" in r.stderr
    assert len(r.stderr.splitlines()) == 1
    r = cli("set-config", "repo", "--gateway", "12:34", "own.toml", cwd=tmp_path)
    assert r.returncode == 1 and "'12:34' is not 16 hex digits" in r.stderr
    r = cli("init", "r2", "--threshold", "owner=2", cwd=tmp_path)
    assert r.returncode == 1 and "--threshold owner=2" in r.stderr
    r = cli("publish", "repo", "--mqtt", "http://op:hunter2@broker", cwd=tmp_path)
    assert r.returncode == 1 and "not a broker URL" in r.stderr and "hunter2" not in r.stderr
    r = cli("bundle", "repo", "--gateway", EUI, "-o", "b.tar", cwd=tmp_path)
    assert r.returncode == 1 and "nothing published yet" in r.stderr


def test_seal_makes_a_value_only_the_gateway_opens(tmp_path: Path, cli: Runner) -> None:
    pub = gateway_keypair(tmp_path / "gw")
    r = cli("seal", pub, cwd=tmp_path, stdin="broker-pass-123\n")
    assert r.returncode == 0, r.stderr
    value = r.stdout.strip()
    assert value.startswith("enc:v1:") and "broker-pass-123" not in r.stdout + r.stderr
    assert open_sealed(tmp_path / "gw" / "remote" / "gateway.key", value) == "broker-pass-123"
    r = cli("seal", "bm90IGEga2V5", cwd=tmp_path, stdin="x")
    assert r.returncode == 1 and "PUBKEY: public key is 9 bytes" in r.stderr

    # a sealed secret passes set-config; the same secret in clear is refused
    assert cli("init", "repo", cwd=tmp_path).returncode == 0
    body = '[[forward.mqtt]]\nname = "city"\nurl = "mqtt://broker.example.org"\npassword = "{}"\n'
    (tmp_path / "c.toml").write_text(body.format("broker-pass-123"))
    r = cli("set-config", "repo", "--gateway", EUI, "c.toml", cwd=tmp_path)
    assert r.returncode == 1 and "forward.mqtt[0].password: seal it" in r.stderr
    (tmp_path / "c.toml").write_text(body.format(value))
    assert cli("set-config", "repo", "--gateway", EUI, "c.toml", cwd=tmp_path).returncode == 0


@pytest.mark.parametrize("own", [True, False], ids=["own-config", "fleet-wide"])
def test_bundle_is_verified_by_ngclient_from_the_tar(tmp_path: Path, own: bool, cli: Runner) -> None:
    assert cli("init", "repo", cwd=tmp_path).returncode == 0
    (tmp_path / "all.toml").write_text(ALL_TOML)
    (tmp_path / "own.toml").write_text(OWN_TOML)
    assert cli("set-config", "repo", "--all", "all.toml", cwd=tmp_path).returncode == 0
    assert cli("set-config", "repo", "--gateway", EUI, "own.toml", cwd=tmp_path).returncode == 0
    assert cli("publish", "repo", cwd=tmp_path).returncode == 0
    # stored but not published: a bundle carries only what is signed
    (tmp_path / "all2.toml").write_text('[log]\nlevel = "warning"\n')
    assert cli("set-config", "repo", "--all", "all2.toml", cwd=tmp_path).returncode == 0
    eui = EUI if own else OTHER
    r = cli("bundle", "repo", "--gateway", eui, "-o", "site.tar", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    with tarfile.open(tmp_path / "site.tar") as t:
        names = t.getnames()
    assert names[:4] == ["metadata/1.root.json", "metadata/timestamp.json",
                         "metadata/1.snapshot.json", "metadata/1.targets.json"]
    assert all(n.startswith("targets/configs/") for n in names[4:])
    assert len(names) == (6 if own else 5)

    root = (tmp_path / "repo" / "metadata" / "1.root.json").read_bytes()
    up = client(root, tmp_path / "gw", TarFetcher(tmp_path / "site.tar"), "bundle://")
    up.refresh()
    name = f"configs/{eui}.toml" if own else "configs/all.toml"
    info = up.get_targetinfo(name)
    assert info is not None
    assert Path(up.download_target(info)).read_text() == (OWN_TOML if own else ALL_TOML)

    # an expired timestamp would be refused at the gateway: refused here already
    later = datetime.now(UTC) + timedelta(days=2)
    with pytest.raises(FleetError, match=r"timestamp\.json expired at .*: run schwebe fleet publish"):
        make_bundle(Repository.open(tmp_path / "repo"), eui, tmp_path / "late.tar", now=later)
    assert not (tmp_path / "late.tar").exists()

    # a bundle whose config was swapped is refused by the same check
    tampered = tmp_path / "tampered.tar"
    with tarfile.open(tmp_path / "site.tar") as src, tarfile.open(tampered, "w") as dst:
        for m in src.getmembers():
            data = src.extractfile(m).read()  # type: ignore[union-attr]
            if m.name.startswith("targets/"):
                data = data.replace(b"info", b"warn").replace(b"debug", b"error")  # same length
            dst.addfile(m, io.BytesIO(data))
    up = client(root, tmp_path / "gw2", TarFetcher(tampered), "bundle://")
    up.refresh()
    info = up.get_targetinfo(name)
    assert info is not None
    with pytest.raises(exceptions.LengthOrHashMismatchError):
        up.download_target(info)


def test_waves_are_cumulative_counts_or_shares_ending_at_100_percent() -> None:
    from gateway.fleet.rollout import parse_waves, plan_waves

    fleet40 = [f"{i:016x}" for i in range(40)]
    assert [len(w) for w in plan_waves(parse_waves("1,10%,100%"), fleet40)] == [1, 3, 36]
    # 10% of three is less than the first wave: that wave adds no one and is left out
    assert plan_waves(parse_waves("1,10%,100%"), ["a", "b", "c"]) == [["a"], ["b", "c"]]
    # a first wave larger than the fleet: the final wave still switches to all.toml
    assert plan_waves(parse_waves("5,100%"), ["a", "b"]) == [["a", "b"], []]
    for bad, why in [("1,50%", "the last wave must be 100%"), ("0,100%", "'0' is neither"),
                     ("x,100%", "'x' is neither"), ("1,150%", "'150%' is neither")]:
        with pytest.raises(FleetError, match=why):
            parse_waves(bad)


def test_a_mirror_too_big_for_the_gateways_is_warned_about() -> None:
    from gateway.fleet.mqtt import mirror_warning
    from gateway.remote.manager import MIRROR_FILES

    small = {f"targets/configs/{i:064x}.{i:016x}.toml": b"x" for i in range(MIRROR_FILES)}
    assert mirror_warning(small) is None
    big = {**small, "metadata/timestamp.json": b"{}"}
    why = mirror_warning(big)
    assert why is not None and f"holds {MIRROR_FILES + 1} files" in why and "[remote_config] repository" in why
