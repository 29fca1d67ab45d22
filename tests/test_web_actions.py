"""Technician actions on a real daemon: check each backend step by step, download the buffer,
see the running config with secrets masked, restart a forwarder; each needs a technician's
page session (and its CSRF token for a change)."""

from __future__ import annotations

import asyncio
import base64 as b64
import json
import socket
import time
from pathlib import Path

import aiohttp
import pytest

from gateway import frames
from gateway.web.auth import hash_password
from tests.helpers.daemon import Daemon, free_port
from tests.mosquitto import Mosquitto, mosquitto  # noqa: F401
from tests.test_web_login import jar_session, log_in

PASSWORD = "a long technician password"


async def test_technician_checks_backends_downloads_the_buffer_and_restarts_a_forwarder(
        tmp_path: Path, mosquitto: Mosquitto) -> None:  # noqa: F811
    udp, web = free_port(socket.SOCK_DGRAM), free_port()
    dead = free_port()
    config = tmp_path / "schwebe.toml"
    config.write_text(f"""
[gateway]
eui = "b827ebfffe000001"
data_dir = "{tmp_path / 'data'}"
[[sources.gwmp]]
bind = "127.0.0.1:{udp}"
[[forward.mqtt]]
name = "city"
url = "{mosquitto.url}"
password = "broker-secret-never-shown"
username = "gw"
[[forward.http]]
name = "platform"
url = "http://127.0.0.1:{dead}/ingest"
[[forward.gwmp]]
name = "lns"
server = "lns.invalid:1700"
[[forward.file]]
name = "archive"
path = "{tmp_path / 'archive.jsonl'}"
[web]
bind = "127.0.0.1:{web}"
[[web.users]]
name = "tech"
role = "technician"
password_hash = "{hash_password(PASSWORD)}"
""")
    config.chmod(0o600)
    gw = Daemon(config, web)
    base = f"http://127.0.0.1:{web}"
    try:
        deadline = time.monotonic() + 30
        async with jar_session() as s:
            while True:
                try:
                    csrf = await log_in(s, base, "tech", PASSWORD)
                    break
                except (aiohttp.ClientError, AssertionError):
                    assert time.monotonic() < deadline and gw.proc.poll() is None, gw.output()[-2000:]
                    await asyncio.sleep(0.3)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as pf:
                for i in range(5):
                    phy = bytes([0x40, 1, 2, 3, 4, 0, i, 0, 1, 9, 9, 9, 9])
                    rxpk = [{"tmst": i, "freq": 868.1, "chan": 0, "rfch": 0, "stat": 1, "modu": "LORA",
                             "datr": "SF7BW125", "codr": "4/5", "rssi": -60, "lsnr": 7.5,
                             "size": len(phy), "data": b64.b64encode(phy).decode()}]
                    pf.sendto(frames.encode_push_data(i, 0xB827EBFFFE000001, rxpk), ("127.0.0.1", udp))

            # a change without the session's CSRF token is refused
            async with s.post(base + "/api/actions/check") as r:
                assert r.status == 403
            async with s.post(base + "/api/actions/check", headers={"X-CSRF-Token": csrf}) as r:
                assert r.status == 200
                results = {x["name"]: x for x in (await r.json())["results"]}
            steps = {n: {st["step"]: st["ok"] for st in x["steps"]} for n, x in results.items()}
            assert steps["city"] == {"dns": True, "tcp": True, "mqtt": True} and results["city"]["ok"]
            assert steps["platform"] == {"dns": True, "tcp": False}  # nobody listens
            assert "refused" in results["platform"]["steps"][1]["detail"].lower() \
                or "failed" in results["platform"]["steps"][1]["detail"].lower()
            assert steps["lns"] == {"dns": False}  # the name does not resolve
            assert steps["archive"] == {"writable": True}
            assert "broker-secret" not in json.dumps(results)

            # the buffer, as the backends still owe it (the HTTP platform is down)
            deadline = time.monotonic() + 20
            while True:
                async with s.get(base + "/api/buffer/export") as r:
                    assert r.status == 200
                    assert "attachment" in r.headers["Content-Disposition"]
                    lines = [json.loads(x) for x in (await r.text()).splitlines()]
                if len([x for x in lines if x["kind"] == "uplink"]) == 5 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
            assert sorted(x["body"]["rxpk"]["tmst"] for x in lines if x["kind"] == "uplink") == list(range(5))

            async with s.get(base + "/api/config/running") as r:
                text = await r.text()
            assert "broker-secret-never-shown" not in text and json.loads(text)["forward"]["mqtt"][0]["password"] == "***"

            async with s.post(base + "/api/actions/restart", json={"forwarder": "city"},
                              headers={"X-CSRF-Token": csrf}) as r:
                assert r.status == 200
            async with s.post(base + "/api/actions/restart", json={"forwarder": "nope"},
                              headers={"X-CSRF-Token": csrf}) as r:
                assert r.status == 404
            deadline = time.monotonic() + 20
            while True:  # the new connection is up again, and it was a new one
                async with s.get(base + "/api/status") as r:
                    city = (await r.json())["forwarders"]["city"]
                if city["connected"] or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            assert city["connected"] and city["connects"] == 1 and city["acked"] == 0
            assert "forwarder restarted from the page" in gw.output()

        # without a login nothing of this answers
        async with aiohttp.ClientSession() as anon:
            async with anon.get(base + "/api/buffer/export") as r:
                assert r.status == 401
            async with anon.get(base + "/api/config/running") as r:
                assert r.status == 401
        assert '"user": "tech"' in gw.output()  # who did it is logged
    finally:
        gw.stop()


def test_page_over_tls_with_the_gateways_own_pinned_certificate(tmp_path: Path) -> None:
    """[web] tls = true: the daemon makes its certificate on first start (key 0600), logs its
    fingerprint, `schwebe web cert` prints the same, a client pinning that certificate talks
    to the page, and a restart keeps it."""
    import ssl
    import stat
    import subprocess
    import sys
    import urllib.error
    import urllib.request

    from tests.helpers.daemon import REPO

    web = free_port()
    config = tmp_path / "schwebe.toml"
    config.write_text(f"""
[gateway]
eui = "b827ebfffe000001"
data_dir = "{tmp_path / 'data'}"
[web]
bind = "127.0.0.1:{web}"
tls = true
[[web.users]]
name = "tech"
role = "technician"
password_hash = "{hash_password(PASSWORD)}"
""")
    cert = tmp_path / "data" / "web" / "cert.pem"
    fingerprints = []
    for _ in range(2):  # first start makes it, the second keeps it
        seen = len(config.with_suffix(".log").read_text()) if config.with_suffix(".log").exists() else 0
        gw = Daemon(config, web)
        try:
            deadline = time.monotonic() + 20
            while "certificate_sha256" not in gw.output()[seen:]:
                assert time.monotonic() < deadline and gw.proc.poll() is None, gw.output()[-2000:]
                time.sleep(0.2)
            pinned = ssl.create_default_context(cafile=str(cert))
            pinned.check_hostname = False  # pinned by the certificate itself, not a name
            with urllib.request.urlopen(f"https://127.0.0.1:{web}/healthz", context=pinned, timeout=5) as r:
                assert r.status == 200
            line = [x for x in gw.output()[seen:].splitlines() if "certificate_sha256" in x][-1]
            fingerprints.append(json.loads(line)["certificate_sha256"])
            with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
                urllib.request.urlopen(f"https://127.0.0.1:{web}/healthz", timeout=5)  # not trusted
        finally:
            gw.stop()
    assert fingerprints[0] == fingerprints[1]
    assert stat.S_IMODE((tmp_path / "data" / "web" / "key.pem").stat().st_mode) == 0o600
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "web", "cert", "--config", str(config)],
                         capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert out.split()[0] == fingerprints[0]

