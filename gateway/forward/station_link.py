"""Opening websockets to a Basics Station LNS: discovery, the traffic socket's handshake, and
what each failure means for the operator (which credential file, which setting).
"""

from __future__ import annotations

import json
from typing import Any, Final

import aiohttp

from gateway import __version__ as schwebe_version
from gateway.forward.base import ForwarderError
from gateway.forward.station_creds import Credentials, describe_connect_error
from gateway.forward.station_msgs import eui_str, id6

#: Largest message accepted from the server (a router_config with a full channel plan is ~4 KB).
MAX_MESSAGE: Final = 64 << 10


async def open_ws(session: aiohttp.ClientSession, creds: Credentials, url: str, where: str,
                  timeout: float) -> aiohttp.ClientWebSocketResponse:  # noqa: ASYNC109 - the config's
    """A websocket with our credentials; pings are answered by us (we await our own pongs)."""
    try:
        return await session.ws_connect(
            url, ssl=(creds.ssl or True) if url.lower().startswith("wss:") else False,
            headers=creds.headers, autoping=False, max_msg_size=MAX_MESSAGE,
            timeout=aiohttp.ClientWSTimeout(ws_close=timeout))
    except aiohttp.WSServerHandshakeError as exc:
        kind = "refused" if exc.status in (401, 403) else "handshake"
        hint = " (wrong or missing token in key, or a router id the server does not know)" \
            if exc.status in (401, 403) else ""
        raise ForwarderError(kind, f"{where} {url} refused the websocket: HTTP "
                             f"{exc.status} {exc.message}{hint}") from exc
    except aiohttp.ClientConnectorCertificateError as exc:
        raise ForwarderError("tls", f"{where} {url}: {describe_connect_error(exc.certificate_error)}") from exc
    except aiohttp.ClientSSLError as exc:
        inner = exc.os_error if hasattr(exc, "os_error") else exc
        raise ForwarderError("tls", f"{where} {url}: {describe_connect_error(inner)}") from exc
    except aiohttp.ServerDisconnectedError as exc:
        hint = ""
        if creds.mode == "client_cert":
            hint = ("; right after TLS: the server may have refused our client certificate (crt/key): "
                    "is it the one this server issued for this gateway?")
        raise ForwarderError("connect", f"{where} {url}: server disconnected{hint}") from exc
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise ForwarderError("connect", f"{where} {url}: {type(exc).__name__}: {exc}") from exc


async def discover(session: aiohttp.ClientSession, creds: Credentials, uri: str, router_id: int, section: str,
                   timeout: float) -> str:  # noqa: ASYNC109 - the config's
    """``{uri}/router-info``: the traffic socket's uri for this router, or why not."""
    ws = await open_ws(session, creds, uri.rstrip("/") + "/router-info", f"{section}: discovery", timeout)
    try:
        await ws.send_str(json.dumps({"router": id6(router_id)}))
        msg = await ws.receive(timeout)
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise ForwarderError("discovery", f"{section}: no router-info answer for router "
                             f"{eui_str(router_id)}: {describe_connect_error(exc)}") from exc
    finally:
        await ws.close()
    if msg.type != aiohttp.WSMsgType.TEXT:
        raise ForwarderError("discovery", f"{section}: router-info closed without an answer for "
                             f"router {eui_str(router_id)} ({msg.type.name}); check the uri")
    return router_info_uri(msg.data, router_id, section)


def router_info_uri(text: str, router_id: int, section: str) -> str:
    """The traffic socket's uri from the server's router-info answer; ForwarderError says why not."""
    try:
        info = json.loads(text)
    except (ValueError, RecursionError):  # nesting past Python's limit is bad JSON too
        info = None
    if not isinstance(info, dict):
        raise ForwarderError("discovery", f"{section}: router-info answer is not a JSON object")
    if "error" in info or "uri" not in info:
        raise ForwarderError("rejected", f"{section}: the server refused router "
                             f"{eui_str(router_id)}: {str(info.get('error', 'no uri'))[:200]}; is this "
                             "gateway registered there under that EUI?")
    muxs = info["uri"]
    if not isinstance(muxs, str) or not muxs.lower().startswith(("ws://", "wss://")) or len(muxs) > 1024:
        raise ForwarderError("discovery", f"{section}: router-info named {str(muxs)[:100]!r}, not a "
                             "ws:// or wss:// uri")
    return muxs


async def handshake(ws: aiohttp.ClientWebSocketResponse, where: str,
                    timeout: float) -> dict[str, Any]:  # noqa: ASYNC109 - the config's
    """``version`` up, then the server's ``router_config`` (closes the socket on failure)."""
    try:
        await ws.send_str(json.dumps({
            "msgtype": "version", "station": f"schwebe-{schwebe_version}", "firmware": schwebe_version,
            "package": schwebe_version, "model": "schwebe", "protocol": 2, "features": ""}))
        while True:  # the server speaks first with router_config; nothing goes up before it
            msg = await ws.receive(timeout)
            if msg.type == aiohttp.WSMsgType.PING:
                await ws.pong(msg.data)
                continue
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise ForwarderError("no_router_config", f"{where}: traffic socket closed before "
                                     f"router_config ({msg.type.name})")
            try:
                data = json.loads(msg.data)
            except RecursionError:  # nesting past Python's limit
                raise ValueError("router_config nested too deeply") from None
            if isinstance(data, dict) and data.get("msgtype") == "router_config":
                return data
    except TimeoutError:
        await ws.close()
        raise ForwarderError("no_router_config", f"{where}: no router_config within {timeout:g}s") from None
    except (ValueError, aiohttp.ClientError, OSError, ForwarderError) as exc:
        await ws.close()
        if isinstance(exc, ForwarderError):
            raise
        raise ForwarderError("router_config", f"{where}: {exc}") from exc
