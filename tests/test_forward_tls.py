"""TLS for the MQTT and HTTP forwarders against real servers: CA and client certificates,
username/password and bearer token; a wrong CA or a wrong password is a clear, counted error.

Certificates are made per test with ``cryptography`` in tmp_path; mosquitto requires a
client certificate and a password; the aiohttp webhook requires a client certificate.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import ipaddress
import json
import ssl
import subprocess
import warnings
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.buffer import Buffer
from gateway.config import HttpForward, MqttForward
from gateway.forward.base import DeliveryLoop
from gateway.forward.http import HttpForwarder
from gateway.forward.mqtt import MqttForwarder
from gateway.records import make_record
from tests.mosquitto import Mosquitto, mosquitto_binary

GW = 0xB827EBFFFE000001
GW_HEX = f"{GW:016x}"


# --------------------------------------------------------------------------- certificates

def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


def _write_cert(cert: x509.Certificate, path: Path) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


class Pki:
    """A CA with a server certificate for 127.0.0.1 and a client certificate for the gateway."""

    def __init__(self, d: Path, label: str = "ca") -> None:
        d.mkdir(parents=True, exist_ok=True)
        now = dt.datetime.now(dt.UTC)
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca_cert = (
            x509.CertificateBuilder().subject_name(_name(f"Schwebe test {label}"))
            .issuer_name(_name(f"Schwebe test {label}")).public_key(self.ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.ca_key.public_key()), critical=False)
            .sign(self.ca_key, hashes.SHA256())
        )
        self.ca = d / f"{label}.pem"
        _write_cert(self.ca_cert, self.ca)
        self.server_cert, self.server_key = self._leaf(d, "server", server=True)
        self.client_cert, self.client_key = self._leaf(d, GW_HEX, server=False)

    def _leaf(self, d: Path, cn: str, *, server: bool) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        b = (
            x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(self.ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        )
        if server:
            b = b.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
        cert = b.sign(self.ca_key, hashes.SHA256())
        cert_path, key_path = d / f"{cn}.crt", d / f"{cn}.key"
        _write_cert(cert, cert_path)
        _write_key(key, key_path)
        return cert_path, key_path


# --------------------------------------------------------------------------- helpers

async def _until(cond: Any, timeout: float = 10.0, what: str = "condition") -> None:  # noqa: ASYNC109
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        await asyncio.sleep(0.02)


@pytest.fixture
def buffer(tmp_path: Path):
    buf = Buffer(tmp_path / "buf.sqlite3", max_bytes=16 << 20, commit_interval=0.1)
    buf.open()
    yield buf
    buf.close()


def _parking(i: int) -> Any:
    return make_record("parking", "sim", {"spot_id": f"spot-{i}", "status": "occupied",
                                          "observed_at": "2026-11-25T10:00:00Z", "device": "70b3d50000000001",
                                          "data": {}})


async def _deliver(buffer: Buffer, fwd: Any, n: int) -> DeliveryLoop:
    buffer.register(fwd.name, start="oldest")
    for i in range(n):
        buffer.append(_parking(i))
    return DeliveryLoop(buffer, fwd, backoff_base=0.05, backoff_cap=0.2)


# --------------------------------------------------------------------------- MQTT over TLS

@pytest.fixture
def tls_broker(tmp_path: Path):
    mosquitto_binary()
    pki = Pki(tmp_path / "pki")
    pw = tmp_path / "passwd"
    pw.write_text("")
    subprocess.run(["mosquitto_passwd", "-b", str(pw), "gw1", "right-password"], check=True,
                   capture_output=True)
    # A second listener, TLS only, client certificate and password both required. The plain
    # listener the helper opens stays for the test's own subscriber.
    from tests.mosquitto import _free_port

    tls_port = _free_port()
    broker = Mosquitto(tmp_path / "mosquitto", extra_config=(
        # Started as root, mosquitto drops to user "mosquitto", who cannot read tmp_path.
        "user root\n"
        f"password_file {pw}\n"
        f"listener {tls_port} 127.0.0.1\n"
        f"cafile {pki.ca}\ncertfile {pki.server_cert}\nkeyfile {pki.server_key}\n"
        "require_certificate true\n"
    ))
    broker.conf.write_text(broker.conf.read_text().replace("allow_anonymous true\n", "allow_anonymous false\n")
                           + "allow_anonymous false\n")
    broker.start()
    try:
        yield broker, tls_port, pki, tmp_path
    finally:
        broker.stop()


def _mqtt_cfg(port: int, pki: Pki, **kw: Any) -> MqttForward:
    base: dict[str, Any] = {"name": "city", "url": f"mqtts://127.0.0.1:{port}", "topic_prefix": "eu868",
                            "username": "gw1", "password": "right-password", "ca_file": pki.ca,
                            "cert_file": pki.client_cert, "key_file": pki.client_key}
    base.update(kw)
    return MqttForward(**base)


async def _subscribe(broker: Mosquitto, pki: Pki, port: int, got: list[Any], ready: asyncio.Event) -> None:
    import aiomqtt

    ctx = ssl.create_default_context(cafile=str(pki.ca))
    ctx.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    async with aiomqtt.Client("127.0.0.1", port, identifier="tls-sub", username="gw1",
                              password="right-password", tls_context=ctx) as c:
        await c.subscribe("eu868/parking/+/state", qos=1)
        ready.set()
        async for m in c.messages:
            got.append((str(m.topic), json.loads(bytes(m.payload))))  # type: ignore[arg-type]


@pytest.mark.mosquitto
async def test_mqtt_over_tls_with_client_certificate_and_password_delivers(tls_broker, buffer: Buffer) -> None:
    broker, port, pki, _ = tls_broker
    got: list[Any] = []
    ready = asyncio.Event()
    sub = asyncio.create_task(_subscribe(broker, pki, port, got, ready))
    await asyncio.wait_for(ready.wait(), 10)
    fwd = MqttForwarder(_mqtt_cfg(port, pki), gateway_eui=GW)
    loop = await _deliver(buffer, fwd, 5)
    task = asyncio.create_task(loop.run())
    try:
        await _until(lambda: len(got) == 5, what="5 parking states over TLS")
        assert fwd.health()["tls"] is True
        assert loop.health()["connected"] is True and not loop.errors
    finally:
        task.cancel()
        sub.cancel()
        await asyncio.gather(task, sub, return_exceptions=True)
    assert sorted(t for t, _ in got) == [f"eu868/parking/spot-{i}/state" for i in range(5)]


def _resource_warnings() -> list[str]:
    """ResourceWarnings of objects freed now (an unclosed socket of a failed handshake)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    return [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]


@pytest.mark.mosquitto
@pytest.mark.parametrize(("case", "kind", "expect"), [
    ("wrong_ca", "tls", "certificate verify failed"),
    ("wrong_password", "auth", "not authorized"),
    # TLS 1.3: the broker's refusal comes after our side of the handshake, as an alert.
    # Usually read as the broker's TLS alert; sometimes the reset comes first (then a hint).
    ("no_client_cert", "tls", "set cert_file and key_file"),
])
async def test_mqtt_tls_misconfiguration_is_a_counted_error_and_nothing_is_acked(
    tls_broker, buffer: Buffer, case: str, kind: str, expect: str
) -> None:
    _, port, pki, tmp = tls_broker
    if case == "wrong_ca":
        other = Pki(tmp / "other", label="other-ca")
        cfg = _mqtt_cfg(port, pki, ca_file=other.ca)
    elif case == "wrong_password":
        cfg = _mqtt_cfg(port, pki, password="wrong")
    else:
        cfg = _mqtt_cfg(port, pki, cert_file=None, key_file=None)
    fwd = MqttForwarder(cfg, gateway_eui=GW)
    loop = await _deliver(buffer, fwd, 3)
    task = asyncio.create_task(loop.run())
    t0 = asyncio.get_running_loop().time()
    try:
        # With no client certificate the broker's TLS 1.3 alert or its reset may win the race:
        # either way it is counted at once, with the hint (kind "tls" or "connect").
        kinds = {kind, "connect"} if case == "no_client_cert" else {kind}
        await _until(lambda: sum(loop.errors.values()) >= 2 and bool(kinds & set(loop.errors)),
                     timeout=10, what=f"two failures, of kind {' or '.join(sorted(kinds))}, counted")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    # Told within a second or two, not after a 10 s CONNACK timeout.
    assert asyncio.get_running_loop().time() - t0 < 5.0
    assert _resource_warnings() == []
    health = loop.health()
    assert health["connected"] is False and health["acked"] == 0
    assert health["lag_records"] == 3
    assert set(health["errors"]) <= kinds
    assert sum(health["backend"]["errors"].get(k, 0) for k in kinds) >= 1
    assert f"127.0.0.1:{port}" in health["last_error"]
    assert expect in health["last_error"].lower()
    assert "right-password" not in health["last_error"] and "wrong" not in health["last_error"].split(":")[0]


@pytest.mark.parametrize(("backend", "key", "problem"), [
    ("mqtt", "ca_file", "missing"), ("mqtt", "cert_file", "missing"), ("mqtt", "key_file", "missing"),
    ("mqtt", "ca_file", "not_pem"), ("http", "ca_file", "missing"), ("http", "cert_file", "not_pem"),
])
async def test_unusable_tls_file_is_a_config_error_naming_the_key_and_path(
    tmp_path: Path, buffer: Buffer, backend: str, key: str, problem: str
) -> None:
    pki = Pki(tmp_path / "pki")
    bad = tmp_path / f"bad-{key}.pem"
    if problem == "not_pem":
        bad.write_text("this is not a certificate\n")
    fwd: Any = (MqttForwarder(_mqtt_cfg(1, pki, **{key: bad}), gateway_eui=GW) if backend == "mqtt"
                else HttpForwarder(_http_cfg("https://127.0.0.1:1/in", pki, **{key: bad}), gateway_eui=GW))
    loop = await _deliver(buffer, fwd, 1)
    task = asyncio.create_task(loop.run())
    try:
        await _until(lambda: loop.errors.get("tls_config", 0) >= 1, what="tls_config error")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    # The technician reads which key of which section, and which file, to fix.
    assert f"forward.{backend} {fwd.name}: {key} {bad}" in str(loop.last_error)
    if problem == "missing":
        assert f"{key} {bad}: No such file or directory" in str(loop.last_error)
    assert fwd.health()["errors"] == {"tls_config": loop.errors["tls_config"]}


# --------------------------------------------------------------------------- HTTP with mutual TLS

@pytest.fixture
async def mtls_hook(tmp_path: Path):
    pki = Pki(tmp_path / "pki")
    batches: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer hook-token":
            return web.Response(status=401, text="bad token")
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        cn = dict(x[0] for x in peer["subject"])["commonName"] if peer else None
        batches.append({"cn": cn, "body": await request.json()})
        return web.Response(status=204)

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
    ctx.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    ctx.verify_mode = ssl.CERT_REQUIRED
    app = web.Application()
    app.router.add_post("/in", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port = runner.addresses[0][1]
    yield f"https://127.0.0.1:{port}/in", pki, batches
    await runner.cleanup()


def _http_cfg(url: str, pki: Pki, **kw: Any) -> HttpForward:
    base: dict[str, Any] = {"name": "hook", "url": url, "token": "hook-token", "ca_file": pki.ca,
                            "cert_file": pki.client_cert, "key_file": pki.client_key, "timeout": 5.0}
    base.update(kw)
    return HttpForward(**base)


async def test_http_mutual_tls_and_bearer_token_deliver(mtls_hook, buffer: Buffer) -> None:
    url, pki, batches = mtls_hook
    fwd = HttpForwarder(_http_cfg(url, pki), gateway_eui=GW)
    loop = await _deliver(buffer, fwd, 4)
    task = asyncio.create_task(loop.run())
    try:
        await _until(lambda: loop.acked == 4, what="4 records acked over mTLS")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert {b["cn"] for b in batches} == {GW_HEX}  # the server saw our client certificate
    assert sum(len(b["body"]["records"]) for b in batches) == 4


@pytest.mark.parametrize("case", ["no_client_cert", "wrong_ca"])
async def test_http_tls_refusal_is_counted_and_nothing_is_acked(tmp_path: Path, mtls_hook, buffer: Buffer,
                                                                case: str) -> None:
    url, pki, batches = mtls_hook
    if case == "no_client_cert":
        # aiohttp sees the server's TLS 1.3 refusal only as a reset: counted as a connection
        # error, with a hint at the certificate.
        cfg = _http_cfg(url, pki, cert_file=None, key_file=None)
        kind, expect = "connection", "set cert_file and key_file"
    else:
        cfg = _http_cfg(url, pki, ca_file=Pki(tmp_path / "other", label="other-ca").ca)
        kind, expect = "tls", "certificate verify failed"
    fwd = HttpForwarder(cfg, gateway_eui=GW)
    loop = await _deliver(buffer, fwd, 2)
    task = asyncio.create_task(loop.run())
    try:
        await _until(lambda: loop.errors.get(kind, 0) >= 2, what=f"{kind} errors counted")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert _resource_warnings() == []
    assert batches == [] and loop.acked == 0
    assert loop.health()["lag_records"] == 2
    assert set(loop.errors) == {kind} and fwd.health()["errors"][kind] >= 2
    assert expect in str(loop.last_error).lower()
    assert "hook-token" not in str(loop.last_error)
