"""Config: the file operators push to hundreds of gateways; every mistake is named."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import (
    ConfigError,
    load_config,
    load_config_text,
    parse_duration,
    parse_size,
    redacted,
)

REPO = Path(__file__).resolve().parent.parent
MINIMAL = '[gateway]\neui = "b827ebfffe000001"\ndata_dir = "/tmp/x"\n'


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load_config_text(text)
    return exc.value.problems


def test_example_config_in_deploy_is_valid() -> None:
    cfg = load_config(REPO / "deploy" / "schwebe.example.toml")
    assert cfg.gateway.eui == 0xB827EBFFFE000001
    assert cfg.sources.gwmp[0].bind == ("127.0.0.1", 1700)
    assert cfg.buffer.max_bytes == 256 * 2**20
    assert [f.name for f in cfg.forwarders] == ["lns", "city-broker", "data-platform", "context-broker"]


def test_defaults_serve_most_cities() -> None:
    cfg = load_config_text(MINIMAL)
    assert cfg.buffer.commit_interval == 1.0
    assert cfg.buffer.synchronous == "normal"
    assert cfg.web.open_read_only is False  # a login is asked for by default


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (MINIMAL + "[buffer]\nmax_byts = \"1MiB\"\n", "buffer.max_byts: unknown key"),
        (MINIMAL + "[buffer]\nmax_bytes = \"lots\"\n", "buffer.max_bytes: not a size: 'lots'"),
        (MINIMAL + "[buffer]\ncommit_interval = \"1 fortnight\"\n", "buffer.commit_interval: not a duration"),
        (MINIMAL + "[buffer]\nmax_bytes = 5\n", "buffer.max_bytes: expected a string, got an integer"),
        (MINIMAL + "[[sources.gwmp]]\nbind = \"127.0.0.1:99999\"\n", "sources.gwmp[0].bind: bad port"),
        ('[gateway]\neui = "xyz"\n', "gateway.eui: not an EUI-64: 'xyz'"),
        ("[buffer]\n", "gateway: required key is missing"),
        (MINIMAL + "[[forward.http]]\nname = \"p\"\nurl = \"ftp://x\"\n", "forward.http[0].url: 'ftp://x' must start with"),
        (MINIMAL + "[[forward.http]]\nname = \"p\"\nurl = \"http://x\"\nformat = \"xml\"\n", "forward.http[0].format: 'xml' is not one of"),
        (MINIMAL + "[[forward.file]]\nname = \"a\"\n[[forward.file]]\nname = \"a\"\n", "forward.file[1].name: 'a' is already used"),
        (MINIMAL + "[[sources.modbus]]\nport = \"/dev/x\"\n[[sources.modbus.devices]]\nunit = 300\nspot_id = \"s\"\n",
         "sources.modbus[0].devices[0].unit: 300 out of range"),
        ("[gateway\n", "not valid TOML"),
        (MINIMAL + "[web]\nbind = \"0.0.0.0:8080\"\nopen_read_only = true\n",
         "web.open_read_only: only allowed with a loopback bind"),
    ],
)
def test_errors_name_the_key_path_and_value(text: str, expected: str) -> None:
    found = problems(text)
    assert any(expected in p for p in found), found


def test_every_problem_is_reported_at_once() -> None:
    found = problems(MINIMAL + "[buffer]\nmax_bytes = \"x\"\ncommit_interval = \"y\"\nfoo = 1\n")
    assert len(found) == 3


def test_secrets_are_never_echoed() -> None:
    text = MINIMAL + (
        '[[parking.devices]]\ndev_eui = "70b3d5ffff000001"\nmodel = "nwave/nps405"\n'
        'spot_id = "s"\napp_key = "not-hex-SECRETVALUE"\n'
    )
    found = problems(text)
    assert any("parking.devices[0].app_key" in p for p in found)
    assert not any("SECRETVALUE" in p for p in found)
    ok = load_config_text(MINIMAL + '[web]\nmetrics_token = "tok-SECRET"\n')
    assert "tok-SECRET" not in repr(redacted(ok))


def test_units() -> None:
    assert parse_duration("250ms") == 0.25
    assert parse_duration("7d") == 7 * 86400
    assert parse_size("256MiB") == 268435456
    assert parse_size("2GB") == 2_000_000_000


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args],
                          capture_output=True, text=True, timeout=60, cwd=REPO)


def test_cli_validate_bad_file_exits_2_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(MINIMAL + "[web]\nbind = \"0.0.0.0:8o80\"\n")
    res = run_cli("config", "validate", str(bad))
    assert res.returncode == 2
    assert "web.bind" in res.stderr and "8o80" in res.stderr
    assert "Traceback" not in res.stderr


def test_cli_validate_good_file(tmp_path: Path) -> None:
    res = run_cli("config", "validate", str(REPO / "deploy" / "schwebe.example.toml"))
    assert res.returncode == 0, res.stderr


def test_cli_run_with_bad_config_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[gateway]\neui = 1\n")
    res = run_cli("run", "--config", str(bad))
    assert res.returncode == 2
    assert "gateway.eui: expected a string" in res.stderr
    assert "Traceback" not in res.stderr


def test_cli_missing_file_exits_2(tmp_path: Path) -> None:
    res = run_cli("config", "validate", str(tmp_path / "nope.toml"))
    assert res.returncode == 2
    assert "cannot read" in res.stderr


def test_run_warns_when_a_config_with_secrets_is_world_readable(tmp_path: Path) -> None:
    cfg = tmp_path / "s.toml"
    # an unusable data_dir stops the daemon right after the check, which is all we need here
    cfg.write_text(MINIMAL.replace("/tmp/x", "/proc/nope") + '[web]\nmetrics_token = "t0ken-value"\n')
    cfg.chmod(0o644)
    res = run_cli("run", "--config", str(cfg))
    assert "readable by every user" in res.stderr and "chmod 600" in res.stderr
    assert "t0ken-value" not in res.stderr
    cfg.chmod(0o600)
    res = run_cli("run", "--config", str(cfg))
    assert "readable by every user" not in res.stderr
