"""A stand-in LoRa Basics Station network server (LNS) for tests, written from the protocol docs.

aiohttp websocket server, optionally TLS (server certificate, optionally requiring a client
certificate) and a token check on the ``Authorization`` header: ``/router-info`` discovery,
then ``/traffic/{router}``: waits for ``version``, answers ``router_config``, records every
message and checks its shape strictly (keys, types, encodings); violations are collected in
``violations`` and the fixture using it fails the test on any.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import re
import ssl
import time
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

EU868_ROUTER_CONFIG: dict[str, Any] = {
    "msgtype": "router_config", "region": "EU868", "hwspec": "sx1301/1", "NetID": None, "JoinEui": None,
    "freq_range": [863000000, 870000000], "max_eirp": 16.0, "protocol": 1,
    "DRs": [[12, 125, 0], [11, 125, 0], [10, 125, 0], [9, 125, 0], [8, 125, 0], [7, 125, 0], [7, 250, 0],
            [0, 0, 0]] + [[-1, 0, 0]] * 8,
    "upchannels": [[868100000, 0, 5], [868300000, 0, 5], [868500000, 0, 5]],
    "sx1301_conf": [{"radio_0": {"enable": True, "freq": 868475000}}], "bcning": None,
}

_HEX = re.compile(r"(?:[0-9A-F]{2})*")
_EUI = re.compile(r"[0-9A-F]{2}(?:-[0-9A-F]{2}){7}")
_ID6 = re.compile(r"[0-9a-f:]{2,39}")
_I32 = (-(2**31), 2**31 - 1)
_UPINFO = {"rctx": int, "xtime": int, "gpstime": int, "rssi": int, "snr": float, "rxtime": float}
_RADIO = {"RefTime": float, "DR": int, "Freq": int, "upinfo": dict}
SHAPES: dict[str, dict[str, Any]] = {
    "version": {"station": str, "firmware": str, "package": str, "model": str, "protocol": int, "features": str},
    "updf": {"MHdr": int, "DevAddr": int, "FCtrl": int, "FCnt": int, "FOpts": "hex", "FPort": int,
             "FRMPayload": "hex", "MIC": int, **_RADIO},
    "jreq": {"MHdr": int, "JoinEui": "eui", "DevEui": "eui", "DevNonce": int, "MIC": int, **_RADIO},
    "propdf": {"FRMPayload": "hex", **_RADIO},
    "dntxed": {"seqno": int, "diid": int, "DR": int, "Freq": int, "DevEui": "eui", "rctx": int, "xtime": int,
               "txtime": float, "gpstime": int},
    "timesync": {"txtime": int},
}


def check_shape(msg: Any) -> list[str]:
    """What is wrong with one station -> LNS message (empty: nothing)."""
    if not isinstance(msg, dict) or msg.get("msgtype") not in SHAPES:
        return [f"unknown message {str(msg)[:80]}"]
    kind = msg["msgtype"]
    shape = SHAPES[kind]
    bad = [f"{kind}: missing {k}" for k in shape if k not in msg]
    bad += [f"{kind}: unexpected {k}" for k in msg if k not in shape and k != "msgtype"]
    for k, want in shape.items():
        v = msg.get(k)
        if k not in msg:
            continue
        if want == "hex" and not (isinstance(v, str) and _HEX.fullmatch(v)):
            bad.append(f"{kind}.{k} {v!r} is not upper-case hex")
        elif want == "eui" and not (isinstance(v, str) and _EUI.fullmatch(v)):
            bad.append(f"{kind}.{k} {v!r} is not an EUI string")
        elif isinstance(want, type) and (not isinstance(v, want) or isinstance(v, bool)):
            bad.append(f"{kind}.{k} {v!r} is not {want.__name__}")
    if kind in ("updf", "jreq") and isinstance(msg.get("MIC"), int) and not _I32[0] <= msg["MIC"] <= _I32[1]:
        bad.append(f"{kind}.MIC out of int32")
    if kind == "updf":
        if isinstance(msg.get("DevAddr"), int) and not _I32[0] <= msg["DevAddr"] <= _I32[1]:
            bad.append("updf.DevAddr out of int32")
        if isinstance(msg.get("FPort"), int) and not -1 <= msg["FPort"] <= 255:
            bad.append("updf.FPort out of -1..255")
    if isinstance(msg.get("upinfo"), dict):
        up = msg["upinfo"]
        bad += [f"{kind}.upinfo: missing {k}" for k in _UPINFO if k not in up]
        bad += [f"{kind}.upinfo.{k} {up[k]!r} is not {t.__name__}" for k, t in _UPINFO.items()
                if k in up and (not isinstance(up[k], t) or isinstance(up[k], bool))]
    return bad


# --------------------------------------------------------------------------- certificates

def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class Pki:
    """A CA, a server certificate for 127.0.0.1 and client certificates (one may be expired)."""

    def __init__(self, d: Path, label: str = "ca") -> None:
        d.mkdir(parents=True, exist_ok=True)
        self.dir = d
        now = dt.datetime.now(dt.UTC)
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca_cert = (
            x509.CertificateBuilder().subject_name(_name(f"Schwebe LNS {label}")).issuer_name(_name(f"Schwebe LNS {label}"))
            .public_key(self.ca_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=2)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.ca_key.public_key()), critical=False)
            .sign(self.ca_key, hashes.SHA256()))
        self.trust = d / f"{label}.trust"
        self.trust.write_bytes(self.ca_cert.public_bytes(serialization.Encoding.PEM))
        self.server_crt, self.server_key = self.leaf("server", server=True)

    def leaf(self, cn: str, *, server: bool = False, expired: bool = False) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        end = now - dt.timedelta(days=1) if expired else now + dt.timedelta(days=1)
        b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(self.ca_cert.subject)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - dt.timedelta(days=2)).not_valid_after(end)
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()), critical=False)
             .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                                   else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
        if server:
            b = b.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
        cert = b.sign(self.ca_key, hashes.SHA256())
        crt, k = self.dir / f"{cn}.crt", self.dir / f"{cn}.key"
        crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
        k.chmod(0o600)
        return crt, k


# --------------------------------------------------------------------------- the server

class StationLns:
    """The LNS. ``routers``: router id (int) -> router_config to send; others are refused."""

    def __init__(self, pki: Pki | None = None, *, client_certs: bool = False, token: str | None = None) -> None:
        self.pki, self.client_certs, self.token = pki, client_certs, token
        self.routers: dict[int, dict[str, Any]] = {}
        self.discoveries: list[Any] = []
        self.messages: dict[int, list[dict[str, Any]]] = {}
        self.violations: list[str] = []
        self.refused: list[str] = []
        self.sockets: dict[int, web.WebSocketResponse] = {}
        self.port = 0
        self._runner: web.AppRunner | None = None
        self.got = asyncio.Event()
        self.stall_next = False  # the next traffic socket is never read from (a hung server)
        self.traffic_down = False  # traffic sockets answered 503 (discovery still works)

    @property
    def uri(self) -> str:
        return f"{'wss' if self.pki else 'ws'}://127.0.0.1:{self.port}"

    def _ssl(self) -> ssl.SSLContext | None:
        if self.pki is None:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.pki.server_crt, self.pki.server_key)
        if self.client_certs:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(self.pki.trust)
        return ctx

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/router-info", self._info)
        app.router.add_get("/traffic/{router}", self._traffic)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self._ssl(), reuse_address=True)
        await site.start()
        if not self.port:
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        for ws in list(self.sockets.values()):
            await ws.close()
        self.sockets.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _authorized(self, request: web.Request) -> bool:
        if self.token is None:
            return True
        if request.headers.get("Authorization") == self.token:
            return True
        self.refused.append(f"{request.path}: bad token")
        return False

    async def _info(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            raise web.HTTPUnauthorized(text="token rejected")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        msg = await ws.receive_json(timeout=5)
        self.discoveries.append(msg)
        router = msg.get("router") if isinstance(msg, dict) else None
        if set(msg) != {"router"} or not isinstance(router, str) or not _ID6.fullmatch(router):
            self.violations.append(f"router-info request {msg!r} is not {{\"router\": ID6}}")
        rid = _from_id6(router) if isinstance(router, str) else -1
        if rid in self.routers:
            await ws.send_json({"router": router, "muxs": "muxs-::0", "uri": f"{self.uri}/traffic/{rid:016x}"})
        else:
            await ws.send_json({"router": router, "error": "Router not provisioned"})
        await ws.close()
        return ws

    async def _traffic(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            raise web.HTTPUnauthorized(text="token rejected")
        if self.traffic_down:
            raise web.HTTPServiceUnavailable(text="muxs down")
        rid = int(request.match_info["router"], 16)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        first = await ws.receive_json(timeout=5)
        self.violations += check_shape(first)
        if first.get("msgtype") != "version" or first.get("protocol") != 2:
            self.violations.append(f"first message is not version protocol 2: {first!r}")
        self.sockets[rid] = ws
        await ws.send_json({**self.routers[rid], "MuxTime": time.time()})
        if self.stall_next:
            self.stall_next = False
            for _ in range(1200):  # nothing read, no ping answered, until the client leaves (<= 60 s)
                if request.transport is None or request.transport.is_closing():
                    break
                await asyncio.sleep(0.05)
            return ws
        async for m in ws:
            if m.type != WSMsgType.TEXT:
                continue
            msg = json.loads(m.data)
            self.violations += check_shape(msg)
            self.messages.setdefault(rid, []).append(msg)
            self.got.set()
            if msg.get("msgtype") == "timesync":
                await ws.send_json({"msgtype": "timesync", "txtime": msg["txtime"], "gpstime": 1_400_000_000_000_000})
        if self.sockets.get(rid) is ws:
            del self.sockets[rid]
        return ws

    def of(self, rid: int, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages.get(rid, []) if m.get("msgtype") == kind]

    async def send(self, rid: int, msg: dict[str, Any]) -> None:
        await self.sockets[rid].send_json(msg)


def _from_id6(s: str) -> int:
    head, sep, tail = s.partition("::")
    hs = [int(g, 16) for g in head.split(":") if g]
    ts = [int(g, 16) for g in tail.split(":") if g]
    groups = hs + [0] * (4 - len(hs) - len(ts)) + ts if sep else hs
    if len(groups) != 4:
        return -1
    return (groups[0] << 48) | (groups[1] << 32) | (groups[2] << 16) | groups[3]
