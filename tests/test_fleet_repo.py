"""Fleet repository (operator side of issue 11): what `schwebe fleet` writes is a TUF
repository that python-tuf's ngclient accepts, with keys 0600 and checked configs."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
from tuf.api import exceptions
from tuf.ngclient import FetcherInterface, Updater

from gateway.fleet import FleetError
from gateway.fleet.configs import set_config
from gateway.fleet.repo import Repository
from gateway.remote.sealed import gateway_keypair, open_sealed, seal

EUI = "b827ebfffe000001"
CONFIG = f'[gateway]\neui = "{EUI}"\n'


class FileFetcher(FetcherInterface):
    """Test-local: serves file:// URLs like a static server (404 for a missing file)."""

    def _fetch(self, url: str) -> Iterator[bytes]:
        p = Path(urlparse(url).path)
        if not p.exists():
            raise exceptions.DownloadHTTPError(f"404 {url}", 404)
        yield p.read_bytes()


def updater(repo: Path, client: Path) -> Updater:
    (client / "dl").mkdir(parents=True, exist_ok=True)
    return Updater(metadata_dir=str(client), metadata_base_url=(repo / "metadata").as_uri() + "/",
                   target_base_url=(repo / "targets").as_uri() + "/", target_dir=str(client / "dl"),
                   fetcher=FileFetcher(), bootstrap=(repo / "metadata" / "1.root.json").read_bytes())


def test_init_publish_is_accepted_by_ngclient(tmp_path: Path) -> None:
    repo = Repository.init(tmp_path / "repo", thresholds={"targets": 2})
    cfg = tmp_path / "gw.toml"
    cfg.write_text(CONFIG)
    v = set_config(repo, cfg, EUI)
    first = repo.publish()
    up = updater(tmp_path / "repo", tmp_path / "client")
    up.refresh()
    info = up.get_targetinfo(f"configs/{EUI}.toml")
    assert info is not None and info.custom == {"version": v}
    assert Path(up.download_target(info)).read_text() == CONFIG
    second = repo.publish()
    assert (second.targets, second.snapshot, second.timestamp) == (
        first.targets + 1, first.snapshot + 1, first.timestamp + 1)
    up2 = updater(tmp_path / "repo", tmp_path / "client")
    up2.refresh()
    for key in (tmp_path / "repo" / "keys").glob("*.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    assert len(list((tmp_path / "repo" / "keys").glob("targets*.key"))) == 2


def test_set_config_refuses_invalid_names_key_path(tmp_path: Path) -> None:
    repo = Repository.init(tmp_path / "repo")
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[buffer]\nmax_sise = \"1MiB\"\n")
    with pytest.raises(FleetError, match=r"buffer\.max_sise: unknown key"):
        set_config(repo, cfg, None)
    cfg.write_text(CONFIG)  # a config for every gateway naming one gateway
    with pytest.raises(FleetError, match=r"gateway\.eui must be left out"):
        set_config(repo, cfg, None)
    assert repo.targets() == {} and repo.config_version == 0
    assert list((tmp_path / "repo" / "targets").rglob("*.toml")) == []


def test_secrets_must_be_sealed_and_never_land_in_clear(tmp_path: Path) -> None:
    repo = Repository.init(tmp_path / "repo")
    secret = "s3cret-broker-password-XYZ"
    body = CONFIG + '[[forward.mqtt]]\nname = "city"\nurl = "mqtt://broker.example.org"\npassword = "{}"\n'
    cfg = tmp_path / "gw.toml"
    cfg.write_text(body.format(secret))
    with pytest.raises(FleetError, match=r"forward\.mqtt\[0\]\.password: seal it"):
        set_config(repo, cfg, EUI)
    pub = gateway_keypair(tmp_path / "gwdata")
    sealed = seal(pub, secret)
    cfg.write_text(body.format(sealed))
    set_config(repo, cfg, EUI)
    repo.publish()
    for f in (tmp_path / "repo").rglob("*"):
        if f.is_file():
            assert secret.encode() not in f.read_bytes(), f
    key = tmp_path / "gwdata" / "remote" / "gateway.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert open_sealed(key, sealed) == secret
