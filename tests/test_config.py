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
    assert cfg.parking.heartbeat_timeout == 7200.0 and cfg.parking.closed_spots == ()


def test_closed_spots_are_a_list_of_spot_ids() -> None:
    cfg = load_config_text(MINIMAL + '\n[parking]\nclosed_spots = ["a:1", "a:2"]\n')
    assert cfg.parking.closed_spots == ("a:1", "a:2")


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
        # the host of every host:port is checked, not only the port
        (MINIMAL + "[web]\nbind = \"999.999.1.1:18089\"\n", "web.bind: bad host in '999.999.1.1:18089'"),
        (MINIMAL + "[web]\nbind = \"not a host:80\"\n", "web.bind: bad host in 'not a host:80'"),
        (MINIMAL + "[[sources.gwmp]]\nbind = \"[::1:1700\"\n", "sources.gwmp[0].bind: bad host in '[::1:1700'"),
        (MINIMAL + "[[sources.gwmp]]\nbind = \"-lead.example:1700\"\n", "sources.gwmp[0].bind: bad host"),
        (MINIMAL + "[[forward.gwmp]]\nname = \"lns\"\nserver = \"lns_.example.org:1700\"\n",
         "forward.gwmp[0].server: bad host in 'lns_.example.org:1700'"),
        (MINIMAL + "[[sources.gwmp]]\nallowed_hosts = [\"gw.local\"]\n",
         "sources.gwmp[0].allowed_hosts[0]: not an IP address: 'gw.local'"),
        # past the packet forwarder's 100 ms wait for a PUSH_ACK
        (MINIMAL + "[[sources.gwmp]]\nread_tick = \"150ms\"\n",
         "sources.gwmp[0].read_tick: 150 ms out of range 0..100 ms"),
        # numbers that mean nothing at zero or below
        (MINIMAL + "[[sources.modbus]]\nport = \"/dev/x\"\nbaudrate = -5\n",
         "sources.modbus[0].baudrate: -5 is not a standard baud rate"),
        (MINIMAL + "[[sources.modbus]]\nport = \"/dev/x\"\nbaudrate = 96000\n",
         "sources.modbus[0].baudrate: 96000 is not a standard baud rate"),
        (MINIMAL + "[sources.gnss]\nport = \"/dev/x\"\nbaudrate = 0\n", "sources.gnss.baudrate: 0 is not"),
        (MINIMAL + "[[sources.modbus]]\nport = \"/dev/x\"\npoll_interval = \"0s\"\n",
         "sources.modbus[0].poll_interval: '0s' must be more than zero"),
        (MINIMAL + "[[sources.modbus]]\nport = \"/dev/x\"\ntimeout = \"0ms\"\n",
         "sources.modbus[0].timeout: '0ms' must be more than zero"),
        (MINIMAL + "[[sources.modbus]]\nport = \"/dev/x\"\nretries = -1\n",
         "sources.modbus[0].retries: -1 out of range"),
        (MINIMAL + "[buffer]\nmax_bytes = \"0B\"\n", "buffer.max_bytes: '0B' must be more than zero"),
        (MINIMAL + "[buffer]\nmax_age.stats = \"0s\"\n", "buffer.max_age.stats: '0s' must be more than zero"),
        (MINIMAL + "[parking]\nheartbeat_timeout = \"0h\"\n", "parking.heartbeat_timeout: '0h' must be more"),
        (MINIMAL + "[[forward.http]]\nname = \"p\"\nurl = \"https://x\"\ntimeout = \"0s\"\n",
         "forward.http[0].timeout: '0s' must be more than zero"),
        (MINIMAL + "[[forward.mqtt]]\nname = \"m\"\nurl = \"mqtt://\"\n", "forward.mqtt[0].url: 'mqtt://' has no host"),
        (MINIMAL + "[[forward.mqtt]]\nname = \"m\"\nurl = \"mqtt://b\"\nkeepalive = \"1d\"\n",
         "forward.mqtt[0].keepalive: 86400 s is over MQTT's limit"),
        (MINIMAL + "[[forward.http]]\nname = \"p\"\nurl = \"http://bad host/x\"\n",
         "forward.http[0].url: 'http://bad host/x': 'bad host' is neither"),
        (MINIMAL + "[[forward.ngsi_ld]]\nname = \"c\"\nurl = \"http://cb:99999\"\n",
         "forward.ngsi_ld[0].url: 'http://cb:99999': Port out of range"),
        (MINIMAL + "[[sources.concentratord]]\nevent_url = \"tcp://999.1.1.1:5555\"\n",
         "sources.concentratord[0].event_url: bad host in '999.1.1.1:5555'"),
        (MINIMAL + "[[sources.modbus]]\nport = \"/dev/x\"\n[[sources.modbus.devices]]\nunit = 1\n"
         "spot_id = \"s\"\nregister = 70000\n", "sources.modbus[0].devices[0].register: 70000 out of range"),
    ],
)
def test_errors_name_the_key_path_and_value(text: str, expected: str) -> None:
    found = problems(text)
    assert any(expected in p for p in found), found


@pytest.mark.parametrize(
    ("line", "key", "expected"),
    [
        ('bind = "127.0.0.1:1700"', "bind", ("127.0.0.1", 1700)),
        ('bind = "[::1]:1700"', "bind", ("::1", 1700)),
        ('bind = "0.0.0.0:0"', "bind", ("0.0.0.0", 0)),
        ('bind = "localhost:1700"', "bind", ("localhost", 1700)),
        ('bind = "gw-01.lamp.city.example.:1700"', "bind", ("gw-01.lamp.city.example.", 1700)),
        # canonical text, as the socket layer reports a peer
        ('allowed_hosts = ["192.0.2.1", "0:0::1"]', "allowed_hosts", ("192.0.2.1", "::1")),
        # dense traffic read on a tick (the default 20 ms), or never ("0s")
        ('bind = "127.0.0.1:1700"', "read_tick", 0.02),
        ('read_tick = "0s"', "read_tick", 0.0),
        ('read_tick = "5ms"', "read_tick", 0.005),
    ],
)
def test_good_hosts_pass(line: str, key: str, expected: object) -> None:
    cfg = load_config_text(MINIMAL + f"[[sources.gwmp]]\n{line}\n")
    assert getattr(cfg.sources.gwmp[0], key) == expected


def test_zero_is_allowed_where_it_means_something() -> None:
    cfg = load_config_text(MINIMAL + '[buffer]\nmin_free = "0B"\n[[forward.gwmp]]\nname = "l"\n'
                           'server = "lns.example.org:1700"\nmax_replay_age = "0s"\n'
                           '[[sources.modbus]]\nport = "/dev/x"\nbaudrate = 19200\nretries = 0\n')
    assert cfg.buffer.min_free == 0 and cfg.forward.gwmp[0].max_replay_age == 0
    assert cfg.sources.modbus[0].baudrate == 19200


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


@pytest.mark.parametrize("bind", ["999.999.1.1:18089", "not a host:80"])
def test_cli_validate_bad_host_exits_2_without_traceback(tmp_path: Path, bind: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(MINIMAL + f'[web]\nbind = "{bind}"\n')
    res = run_cli("config", "validate", str(bad))
    assert res.returncode == 2
    assert f"web.bind: bad host in {bind!r}" in res.stderr
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


PARKING_DEV = ('[[parking.devices]]\ndev_eui = "70b3d5e75e000001"\nmodel = "nwave/nps405"\n'
               'spot_id = "s1"\n')


def test_parking_device_location_and_site_for_the_fiware_model() -> None:
    cfg = load_config_text(MINIMAL + PARKING_DEV + 'location = [7.1507, 51.2562]\n'
                           'parking_site = "urn:ngsi-ld:OnStreetParking:wuppertal:1"\n')
    dev = cfg.parking.devices[0]
    assert dev.location == (7.1507, 51.2562) and dev.parking_site == "urn:ngsi-ld:OnStreetParking:wuppertal:1"
    assert load_config_text(MINIMAL + PARKING_DEV).parking.devices[0].location is None  # optional


@pytest.mark.parametrize(("line", "expected"), [
    ("location = [51.2562, 97.1507]", "parking.devices[0].location: [51.2562, 97.1507] is not [longitude, latitude]"),
    ("location = [7.15]", "parking.devices[0].location: [7.15] is not [longitude, latitude]"),
    ("location = [181, 0]", "parking.devices[0].location: [181.0, 0.0] is not [longitude, latitude]"),
    ('location = "7.15,51.25"', "parking.devices[0].location: expected an array"),
    ('location = [7, "north"]', "parking.devices[0].location[1]: expected a number"),
    ('parking_site = "Friedrich-Ebert-Str"', "parking.devices[0].parking_site: 'Friedrich-Ebert-Str' is not an entity id URI"),
    ('parking_site = "urn:x y"', "parking.devices[0].parking_site: 'urn:x y' is not an entity id URI"),
])
def test_bad_parking_location_or_site_is_named(line: str, expected: str) -> None:
    assert any(p.startswith(expected) for p in problems(MINIMAL + PARKING_DEV + line + "\n")), \
        problems(MINIMAL + PARKING_DEV + line + "\n")


def test_http_put_aside_file_cap() -> None:
    cfg = load_config_text(MINIMAL + '[[forward.http]]\nname = "h"\nurl = "https://x.example/in"\n'
                           'dead_letter_max = "1MiB"\n')
    assert cfg.forward.http[0].dead_letter_max == 2**20
    assert load_config_text(MINIMAL + '[[forward.http]]\nname = "h"\nurl = "https://x.example/in"\n'
                            ).forward.http[0].dead_letter_max == 16 * 2**20


GWMP_FWD = '[[forward.gwmp]]\nname = "lns"\nserver = "lns.example.org:1700"\n'


def test_gwmp_eui_map_as_inline_or_sub_table_any_eui_spelling() -> None:
    inline = load_config_text(MINIMAL + GWMP_FWD + 'eui_map = { "b827ebfffe000001" = "0016c001ff10a235", '
                              '"B8:27:EB:FF:FE:00:00:02" = "00-16-C0-01-FF-10-A2-36" }\n')
    table = load_config_text(MINIMAL + GWMP_FWD + '[forward.gwmp.eui_map]\nb827ebfffe000001 = "0016c001ff10a235"\n'
                             '"b8-27-eb-ff-fe-00-00-02" = "0016c001ff10a236"\n')
    expected = {0xB827EBFFFE000001: 0x0016C001FF10A235, 0xB827EBFFFE000002: 0x0016C001FF10A236}
    assert inline.forward.gwmp[0].eui_map == table.forward.gwmp[0].eui_map == expected
    assert load_config_text(MINIMAL + GWMP_FWD).forward.gwmp[0].eui_map == {}  # pass-through


@pytest.mark.parametrize(("lines", "expected"), [
    ('eui_map = { "b827ebfffe00001" = "0016c001ff10a235" }',
     "forward.gwmp[0].eui_map.b827ebfffe00001: not an EUI-64: 'b827ebfffe00001'"),
    ('eui_map = { "b827ebfffe000001" = "0016c001ff10a2zz" }',
     "forward.gwmp[0].eui_map.b827ebfffe000001: not an EUI-64: '0016c001ff10a2zz'"),
    ('eui_map = { "b827ebfffe000001" = 5 }',
     "forward.gwmp[0].eui_map.b827ebfffe000001: expected a string, got an integer"),
    ('eui_map = ["b827ebfffe000001"]', "forward.gwmp[0].eui_map: expected a table, got ['b827ebfffe000001']"),
    ('eui_map = { "b827ebfffe000001" = "0016c001ff10a235", "b827ebfffe000002" = "0016C001FF10A235" }',
     'forward.gwmp[0].eui_map.b827ebfffe000002: "0016c001ff10a235" is already the server EUI of b827ebfffe000001'),
    ('eui_map = { "b827ebfffe000001" = "0016c001ff10a235", "B827EBFFFE000001" = "0016c001ff10a236" }',
     "forward.gwmp[0].eui_map.B827EBFFFE000001: 'B827EBFFFE000001' is the same key as 'b827ebfffe000001'"),
    ('gateway_eui = "0016c001ff10a235"\neui_map = { "b827ebfffe000001" = "0016c001ff10a235" }',
     'forward.gwmp[0].eui_map.b827ebfffe000001: "0016c001ff10a235" is this server\'s gateway_eui'),
])
def test_bad_gwmp_eui_map_is_named(lines: str, expected: str) -> None:
    found = problems(MINIMAL + GWMP_FWD + lines + "\n")
    assert any(p.startswith(expected) for p in found), found


def test_gwmp_eui_map_is_bounded_by_the_socket_cap() -> None:
    entries = ", ".join(f'"b827ebfffe{i:06x}" = "0016c001ff{i:06x}"' for i in range(65))
    assert any(p.startswith("forward.gwmp[0].eui_map: 65 gateways, at most 64")
               for p in problems(MINIMAL + GWMP_FWD + f"eui_map = {{ {entries} }}\n"))


def test_validate_warns_about_configs_that_load_but_cannot_work(tmp_path: Path) -> None:

    cfg = tmp_path / "schwebe.toml"
    cfg.write_text("""
[gateway]
eui = "b827ebfffe000001"
data_dir = "relative/data"
[[parking.devices]]
dev_eui = "70b3d5e75e000001"
model = "nwave/nps405"
spot_id = "city:spot:1"
""")
    res = subprocess.run([sys.executable, "-m", "gateway.cli", "config", "validate", str(cfg)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr  # it loads: warnings, not errors
    warnings = [line for line in res.stderr.splitlines() if ": warning: " in line]
    assert len(warnings) == 3, res.stderr
    assert any('gateway.data_dir = "relative/data"' in w for w in warnings)
    assert any("web.password_hash: not set" in w and "401" in w for w in warnings)
    assert any("parking.devices[0] (dev_eui 70b3d5e75e000001): no keys" in w for w in warnings)
    assert "3 warning(s)" in res.stdout
    # the same file with everything set: no warning at all
    cfg.write_text(cfg.read_text().replace('"relative/data"', f'"{tmp_path}/data"')
                   + 'app_key = "000102030405060708090a0b0c0d0e0f"\n[web]\nusername = "admin"\n'
                     'password_hash = "' + _a_password_hash() + '"\n')
    res = subprocess.run([sys.executable, "-m", "gateway.cli", "config", "validate", str(cfg)],
                         capture_output=True, text=True, timeout=60)
    assert (res.returncode, res.stderr) == (0, ""), res.stderr
    assert res.stdout.strip() == f"{cfg}: ok"


def _a_password_hash() -> str:
    from gateway.web.auth import hash_password

    return hash_password("correct horse battery")


def test_example_config_documents_log_and_open_read_only() -> None:
    text = (Path(__file__).resolve().parent.parent / "deploy" / "schwebe.example.toml").read_text()
    assert "[log]" in text and "open_read_only" in text


def test_url_credentials_never_echoed_and_not_beside_a_token() -> None:
    with pytest.raises(ConfigError) as exc:
        load_config_text("""
[gateway]
eui = "b827ebfffe000001"
data_dir = "/tmp/x"
[[forward.http]]
name = "p"
url = "https://city:hunter2@platform.example.org/ingest?api_key=SECRETKEY"
token = "abc"
[[forward.http]]
name = "q"
url = "ftp://me:pw@platform.example.org/?k=TOPSECRET"
""")
    text = "\\n".join(exc.value.problems)
    assert "credentials in the URL and a token" in text
    assert "must start with" in text
    assert "hunter2" not in text and "SECRETKEY" not in text and "TOPSECRET" not in text
    assert ":pw@" not in text


@pytest.mark.parametrize("value", ["correct horse battery staple",
                                   "scrypt$1024$8$1$" + "00" * 16 + "$" + "11" * 32,
                                   "scrypt$16384$8$1$zz$11"])
def test_password_hash_must_be_a_strong_scrypt_hash_and_is_never_echoed(value: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config_text(f"""
[gateway]
eui = "b827ebfffe000001"
data_dir = "/tmp/x"
[web]
password_hash = "{value}"
""")
    text = "\\n".join(exc.value.problems)
    assert text.startswith("web.password_hash: ") and "hash-password" in text
    assert value not in text


def test_a_real_password_hash_passes() -> None:
    from gateway.web.auth import hash_password

    load_config_text(f"""
[gateway]
eui = "b827ebfffe000001"
data_dir = "/tmp/x"
[web]
password_hash = "{hash_password('correct horse battery')}"
""")


def test_a_huge_invalid_value_is_cut_in_the_error() -> None:
    with pytest.raises(ConfigError) as exc:
        load_config_text('[gateway]\neui = "' + "x" * 10_000_000 + '"\ndata_dir = "/tmp/x"\n')
    [problem] = exc.value.problems
    assert problem.startswith("gateway.eui: ") and len(problem) < 400 and "cut" in problem
