"""Logging: readable lines on a terminal, JSON lines otherwise (journald); never a secret."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import pty
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import frames
from gateway.config import load_config_text
from gateway.logs import JsonFormatter, TextFormatter, setup_logging

REPO = Path(__file__).resolve().parent.parent
log = logging.getLogger("schwebe.test")


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def emit_sample() -> None:
    log.info("uplink stored", extra={"fields": {"seq": 42, "kind": "uplink"}})
    try:
        raise RuntimeError("disk on fire")
    except RuntimeError:
        log.exception("commit failed", extra={"fields": {"component": "buffer"}})


def test_a_pipe_gets_json_lines_with_the_fields() -> None:
    stream = io.StringIO()  # not a terminal, as under systemd
    setup_logging("info", "auto", stream=stream)
    emit_sample()
    lines = stream.getvalue().splitlines()
    first = json.loads(lines[0])
    assert set(first) == {"ts", "level", "logger", "msg", "seq", "kind"}
    assert first["level"] == "info" and first["logger"] == "schwebe.test"
    assert first["msg"] == "uplink stored" and first["seq"] == 42 and first["kind"] == "uplink"
    assert first["ts"].endswith("Z") and "T" in first["ts"]  # UTC, ISO 8601
    # a traceback travels inside its record: every line of the output stays one JSON object
    assert len(lines) == 2
    second = json.loads(lines[1])
    assert second["level"] == "error" and second["component"] == "buffer"
    assert "RuntimeError: disk on fire" in second["exc"]


def test_a_terminal_gets_readable_lines() -> None:
    master, slave = pty.openpty()
    try:
        with open(slave, "w", closefd=False) as tty:
            assert tty.isatty()
            setup_logging("info", "auto", stream=tty)
            log.info("uplink stored", extra={"fields": {"seq": 42, "kind": "uplink"}})
            tty.flush()
        out = os.read(master, 4096).decode()
    finally:
        os.close(master)
        os.close(slave)
    line = out.splitlines()[0]
    assert not line.startswith("{")
    assert "INFO" in line and "schwebe.test: uplink stored" in line
    assert line.endswith("seq=42 kind=uplink")


def test_the_config_can_force_either_format() -> None:
    stream = io.StringIO()
    setup_logging("info", "text", stream=stream)
    log.info("hello")
    assert "INFO    schwebe.test: hello" in stream.getvalue()
    stream = io.StringIO()
    setup_logging("warning", "json", stream=stream)
    log.info("not shown at warning level")
    log.warning("shown")
    assert [json.loads(x)["msg"] for x in stream.getvalue().splitlines()] == ["shown"]


SECRETS = {
    "metrics_token": "tok-SECRET-metrics-1234",
    "mqtt_password": "pw-SECRET-mqtt-5678",
    "http_token": "tok-SECRET-http-9012",
    "nwk_s_key": "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
    "app_s_key": "a1b2c3d4e5f60718293a4b5c6d7e8f90",
    "app_key": "00112233445566778899aabbccddeeff",
}


def secret_config(data_dir: Path, udp_port: int, web_port: int, dead_port: int) -> str:
    return f"""
[gateway]
eui = "b827ebfffe000001"
data_dir = "{data_dir}"
[log]
level = "debug"
[[sources.gwmp]]
bind = "127.0.0.1:{udp_port}"
[[forward.mqtt]]
name = "broker"
url = "mqtt://127.0.0.1:{dead_port}"
username = "gw"
password = "{SECRETS['mqtt_password']}"
[[forward.http]]
name = "hook"
url = "http://127.0.0.1:{dead_port}/in"
token = "{SECRETS['http_token']}"
[[parking.devices]]
dev_eui = "70b3d57ed00b0001"
model = "nwave/nps405"
spot_id = "spot-1"
dev_addr = "260b1b01"
nwk_s_key = "{SECRETS['nwk_s_key']}"
app_s_key = "{SECRETS['app_s_key']}"
[[parking.devices]]
dev_eui = "70b3d57ed00b0002"
model = "nwave/nps405"
spot_id = "spot-2"
app_key = "{SECRETS['app_key']}"
[web]
bind = "127.0.0.1:{web_port}"
metrics_token = "{SECRETS['metrics_token']}"
"""


def assert_no_secret(text: str) -> None:
    for name, value in SECRETS.items():
        assert value not in text, f"{name} appears in the log"
        assert value.upper() not in text, f"{name} appears in the log"
        if len(value) == 32:  # a key: also as Python would print the bytes
            assert repr(bytes.fromhex(value)) not in text, f"{name} appears in the log"


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()])
def test_logging_the_whole_config_shows_no_secret(formatter: logging.Formatter) -> None:
    cfg = load_config_text(secret_config(Path("/tmp/x"), 1700, 8080, 1))
    record = logging.LogRecord("schwebe", logging.INFO, __file__, 1, "config: %r", (cfg,), None)
    record.fields = {"forwarders": cfg.forwarders, "devices": cfg.parking.devices}
    out = formatter.format(record)
    assert "spot-1" in out and "broker" in out  # the config really is in there
    assert_no_secret(out)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_daemon_logs_no_secret_even_at_debug_level(tmp_path: Path) -> None:
    udp_port = free_port(socket.SOCK_DGRAM)
    cfg = tmp_path / "schwebe.toml"
    cfg.write_text(secret_config(tmp_path / "data", udp_port, free_port(), free_port()))
    cfg.chmod(0o600)
    notify_path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(notify_path)
        notify.settimeout(30)
        proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", "--config", str(cfg)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                                env={**os.environ, "NOTIFY_SOCKET": notify_path})
        try:
            assert notify.recv(4096).decode().startswith("READY=1")
            # an uplink from the ABP sensor (bad MIC) and one from an unknown device
            rxpk = [{"tmst": 1, "freq": 868.1, "chan": 0, "rfch": 0, "stat": 1, "modu": "LORA",
                     "datr": "SF7BW125", "codr": "4/5", "rssi": -60, "lsnr": 7.5, "size": 13,
                     "data": base64.b64encode(bytes.fromhex(phy)).decode()}
                    for phy in ("40011b0b2600010001aabbccdd", "40ffffff2600010001aabbccdd")]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as fwd:
                fwd.settimeout(5)
                fwd.sendto(frames.encode_push_data(1, 0xB827EBFFFE000001, rxpk),
                           ("127.0.0.1", udp_port))
                fwd.recv(64)
            notify.settimeout(1.5)  # let the forwarders fail to connect a few times
            with pytest.raises(TimeoutError):
                notify.recv(4096)
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, err
    assert '"level": "debug"' in err  # debug lines really were written
    assert "broker" in err or "hook" in err  # and the failing forwarders said something
    assert_no_secret(err)
