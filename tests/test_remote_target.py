"""What a pushed config may say and how it meets the on-site file (gateway/remote/target.py)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config_text
from gateway.remote.sealed import gateway_keypair, key_path, seal
from gateway.remote.target import gateway_config, operator_check

SITE = """
[gateway]
eui = "b827ebfffe000001"
data_dir = "{data}"
[[sources.gwmp]]
bind = "127.0.0.1:1700"
[[sources.modbus]]
port = "/dev/schwebe-rs485"
[[sources.modbus.devices]]
unit = 1
spot_id = "site:1"
[[forward.mqtt]]
name = "city"
url = "mqtt://broker.example.org"
[remote_config]
root = "/etc/schwebe/root.json"
mqtt = "city"
"""


def site(tmp_path: Path) -> tuple[object, dict[str, object]]:
    text = SITE.replace("{data}", str(tmp_path))
    return load_config_text(text), tomllib.loads(text)


def test_tables_left_out_stay_as_on_site_and_the_site_keeps_its_identity(tmp_path: Path) -> None:
    local, data = site(tmp_path)
    pushed = '[[forward.mqtt]]\nname = "city"\nurl = "mqtts://new-broker.example.org"\n'
    cfg = gateway_config(pushed, local, data, key_path(tmp_path), source="v2")  # type: ignore[arg-type]
    assert cfg.forward.mqtt[0].url == "mqtts://new-broker.example.org"  # replaced
    assert cfg.sources.modbus[0].port == "/dev/schwebe-rs485"  # the lamp post's hardware
    assert cfg.gateway.eui == 0xB827EBFFFE000001 and cfg.gateway.data_dir == tmp_path
    assert cfg.remote_config.mqtt == "city"
    # a table the target names replaces the site's whole table: no sources at all
    cfg = gateway_config("[sources]\n", local, data, key_path(tmp_path), source="v3")  # type: ignore[arg-type]
    assert cfg.sources.gwmp == () and cfg.sources.modbus == ()


@pytest.mark.parametrize(("pushed", "problem"), [
    ('[gateway]\neui = "0000000000000002"\n', "for another gateway"),
    ('[gateway]\ndata_dir = "/tmp/elsewhere"\n', "data_dir is set on site only"),
    ('[remote_config]\nroot = "/tmp/evil-root.json"\n', "[remote_config] is set on site only"),
    ("[buffer]\nmax_sise = 1\n", "buffer.max_sise: unknown key"),
    ("not toml = = 1", "not valid TOML"),
])
def test_what_a_target_may_not_say(tmp_path: Path, pushed: str, problem: str) -> None:
    local, data = site(tmp_path)
    with pytest.raises(ConfigError) as err:
        gateway_config(pushed, local, data, key_path(tmp_path), source="v9")  # type: ignore[arg-type]
    assert problem in " ".join(err.value.problems)


def test_sealed_secrets_are_opened_only_by_their_gateway(tmp_path: Path) -> None:
    local, data = site(tmp_path)
    pub = gateway_keypair(tmp_path)
    other = gateway_keypair(tmp_path / "other")
    pushed = '[[forward.mqtt]]\nname = "city"\nurl = "mqtt://b.example.org"\npassword = "{}"\n'
    cfg = gateway_config(pushed.format(seal(pub, "pw-for-me")), local, data, key_path(tmp_path),
                         source="v4")  # type: ignore[arg-type]
    assert cfg.forward.mqtt[0].password == "pw-for-me"
    with pytest.raises(ConfigError, match=r"forward\.mqtt\[0\]\.password: sealed value is not for this gateway"):
        gateway_config(pushed.format(seal(other, "pw")), local, data, key_path(tmp_path), source="v5")  # type: ignore[arg-type]
    # the operator validates the same target without the key: the sealed value stays sealed
    checked = operator_check(pushed.format(seal(pub, "pw")), source="x", eui=None)
    assert checked.forward.mqtt[0].password.startswith("enc:v1:")  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="must be left out"):
        operator_check('[gateway]\neui = "b827ebfffe000001"\n', source="x", eui=None)
