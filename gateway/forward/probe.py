"""A technician's connectivity check: for each backend, the steps a connection takes, each
with its own result (name lookup, TCP, TLS, the protocol's own answer), so a phone at the
lamp post says which step fails (DNS, a firewall, a certificate, the server's login)."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from gateway.app import describe_error
from gateway.config import (
    FileForward,
    ForwardCommon,
    GwmpForward,
    HttpForward,
    MqttForward,
    NgsiLdForward,
)
from gateway.config_values import safe_url
from gateway.forward.tls import client_tls_context

TIMEOUT = 5.0


class _Steps:
    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []

    async def run(self, step: str, action: Callable[[], Awaitable[str]]) -> bool:
        t0 = time.monotonic()
        try:
            detail = await asyncio.wait_for(action(), TIMEOUT)
            ok = True
        except TimeoutError:
            detail, ok = f"no answer within {TIMEOUT:g} s", False
        except (OSError, ssl.SSLError, ValueError, aiohttp.ClientError) as exc:
            detail, ok = describe_error(exc)[:200], False
        self.steps.append({"step": step, "ok": ok, "detail": detail,
                           "ms": round((time.monotonic() - t0) * 1000, 1)})
        return ok


async def _dns(host: str) -> str:
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return ", ".join(sorted({str(i[4][0]) for i in infos})[:3])


async def _tcp(host: str, port: int, tls: ssl.SSLContext | None = None) -> str:
    _r, w = await asyncio.open_connection(host, port, ssl=tls, server_hostname=host if tls else None)
    peer = w.get_extra_info("peername")
    version = w.get_extra_info("ssl_object").version() if tls else None
    w.close()
    return f"connected to {peer[0]}:{peer[1]}" + (f", {version}" if version else "")


async def probe(fcfg: ForwardCommon, *, gateway_eui: int) -> dict[str, Any]:
    """The steps for one backend; ``ok`` when every step passed."""
    s = _Steps()
    target = ""
    if isinstance(fcfg, MqttForward | HttpForward | NgsiLdForward):
        target = safe_url(fcfg.url)
        parts = urlsplit(fcfg.url)
        host = parts.hostname or ""
        secure = parts.scheme in ("https", "mqtts", "ssl", "tls")
        port = parts.port or {"https": 443, "http": 80, "mqtts": 8883, "ssl": 8883,
                              "tls": 8883}.get(parts.scheme, 1883)
        tls = None
        if secure:
            tls = client_tls_context(f"forward.{fcfg.name}", ca_file=getattr(fcfg, "ca_file", None),
                                     cert_file=getattr(fcfg, "cert_file", None),
                                     key_file=getattr(fcfg, "key_file", None))
        if await s.run("dns", lambda: _dns(host)) and await s.run("tcp", lambda: _tcp(host, port)):
            if tls is not None:
                await s.run("tls", lambda: _tcp(host, port, tls))
            if isinstance(fcfg, MqttForward):
                await s.run("mqtt", lambda: _mqtt(fcfg, host, port, tls, gateway_eui))
            else:
                await s.run("http", lambda: _http(fcfg.url, tls))
    elif isinstance(fcfg, GwmpForward):
        host, port = fcfg.server
        target = f"udp://{host}:{port}"
        if await s.run("dns", lambda: _dns(host)):
            await s.run("pull_ack", lambda: _pull(host, port, gateway_eui))
    elif isinstance(fcfg, FileForward):
        target = str(fcfg.path)
        await s.run("writable", lambda: _writable(fcfg))
    else:
        target = str(getattr(fcfg, "uri", ""))
        s.steps.append({"step": "not probed", "ok": True, "ms": 0.0,
                        "detail": "see its state under Forwarders"})
    return {"name": fcfg.name, "target": target, "ok": all(x["ok"] for x in s.steps),
            "steps": s.steps}


async def _mqtt(fcfg: MqttForward, host: str, port: int, tls: ssl.SSLContext | None,
                eui: int) -> str:
    from gateway.forward.mqtt_wire import MqttConnection, MqttWireError

    try:
        conn = await MqttConnection.open(
            host, port, client_id=f"schwebe-check-{eui:016x}-{secrets.token_hex(2)}",
            username=fcfg.username, password=fcfg.password, ssl_context=tls, timeout=TIMEOUT)
    except MqttWireError as exc:
        raise ValueError(str(exc)) from None
    await conn.close()
    return "CONNACK: the broker accepted the login"


async def _http(url: str, tls: ssl.SSLContext | None) -> str:
    async with (aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session,
                session.head(url, ssl=tls if tls is not None else False,
                             allow_redirects=False) as r):
        return f"HTTP {r.status} (the server answers)"


async def _pull(host: str, port: int, eui: int) -> str:
    """PULL_DATA as a packet forwarder would send it; the network server's PULL_ACK."""
    loop = asyncio.get_running_loop()
    token = secrets.token_bytes(2)
    got: asyncio.Future[bytes] = loop.create_future()

    class Proto(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            if data[1:4] == token + b"\x04" and not got.done():
                got.set_result(data)

        def error_received(self, exc: Exception) -> None:
            if not got.done():
                got.set_exception(exc)

    transport, _ = await loop.create_datagram_endpoint(Proto, remote_addr=(host, port))
    try:
        transport.sendto(b"\x02" + token + b"\x02" + eui.to_bytes(8, "big"))
        await got
    finally:
        transport.close()
    return "PULL_ACK: the network server answers"


async def _writable(fcfg: FileForward) -> str:
    parent = fcfg.path.parent
    if not os.access(parent, os.W_OK):
        raise OSError(f"{parent}: not writable by this user")
    return f"{parent} is writable"
