"""Live frames for the page over Server-Sent Events, bounded per client.

`publish` runs on the radio path: it never awaits and never blocks. Each client
has a queue of `queue_size` events; a client whose queue is full (a phone that
stopped reading, a link too slow for the traffic) is dropped, its connection
aborted, and counted, so it never holds memory or slows anything else. Events
are built only while someone watches.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web

from gateway.records import Record

log = logging.getLogger("schwebe.web")

#: Kernel send buffer of a live stream: a stalled phone holds at most this much there.
SNDBUF: Final = 32 * 1024
KEEPALIVE_S: Final = 15.0
#: How often a quiet stream checks that its login still holds.
CHECK_S: Final = 1.0


@dataclass(eq=False)
class _Client:
    queue: asyncio.Queue[bytes]
    task: asyncio.Task[Any] | None
    transport: asyncio.Transport | None
    dropped: bool = field(default=False)


class LiveFeed:
    def __init__(self, *, max_clients: int = 8, queue_size: int = 256) -> None:
        self.max_clients = max_clients
        self.queue_size = queue_size
        self._clients: list[_Client] = []
        self.sent = 0
        self.dropped_clients = 0
        self.refused_clients = 0

    @property
    def active(self) -> bool:
        return bool(self._clients)

    @property
    def watched(self) -> bool:
        """Someone has the live table open (the radio path skips the tap otherwise)."""
        return bool(self._clients)

    def publish_record(self, record: Record) -> None:
        """The radio path's hook: a frame or a parking change, shown if anyone watches."""
        if not self._clients or record.kind not in ("uplink", "parking"):
            return
        event = frame_event(record)
        if event is not None:
            self.publish(event)

    def publish(self, event: dict[str, Any]) -> None:
        if not self._clients:
            return
        line = b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"
        for client in list(self._clients):
            try:
                client.queue.put_nowait(line)
            except asyncio.QueueFull:
                self._drop(client)

    def _drop(self, client: _Client) -> None:
        # A client that does not keep up loses its stream (the page reconnects and starts
        # afresh); everything else goes on at full speed.
        client.dropped = True
        self._clients.remove(client)
        self.dropped_clients += 1
        if client.transport is not None:
            client.transport.abort()
        if client.task is not None:
            client.task.cancel()
        log.info("live stream dropped: the client did not keep up")

    def close_all(self) -> None:
        """Shutdown: end every stream now (they would otherwise hold the server's shutdown)."""
        for client in list(self._clients):
            self._clients.remove(client)
            if client.transport is not None:
                client.transport.abort()
            if client.task is not None:
                client.task.cancel()

    def stats(self) -> dict[str, int]:
        return {"clients": len(self._clients), "events_sent": self.sent,
                "clients_dropped": self.dropped_clients, "clients_refused": self.refused_clients}

    async def handle(self, request: web.Request, *,
                     allowed: Callable[[], bool] = lambda: True) -> web.StreamResponse:
        """One client's stream. ``allowed`` is asked every second or so: when the login behind
        the stream ends (logout, idle timeout) the stream ends too."""
        if len(self._clients) >= self.max_clients:
            self.refused_clients += 1
            return web.json_response({"error": f"at most {self.max_clients} live streams at once"},
                                     status=503, headers={"Retry-After": "30"})
        transport = request.transport if isinstance(request.transport, asyncio.Transport) else None
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
        client = _Client(asyncio.Queue(self.queue_size), asyncio.current_task(), transport)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-store"})
        await resp.prepare(request)
        self._clients.append(client)
        try:
            await resp.write(b"retry: 3000\n\n")
            quiet = 0.0
            while allowed():
                try:
                    line = await asyncio.wait_for(client.queue.get(), CHECK_S)
                    quiet = 0.0
                except TimeoutError:
                    quiet += CHECK_S
                    if quiet < KEEPALIVE_S:
                        continue
                    line, quiet = b": keepalive\n\n", 0.0
                await resp.write(line)
                self.sent += 1
        except (ConnectionError, RuntimeError):
            pass  # the client went away
        finally:
            if client in self._clients:
                self._clients.remove(client)
        return resp


def frame_event(record: Record) -> dict[str, Any] | None:
    body = record.decoded()
    if not isinstance(body, dict):
        return None
    t = record.received_us / 1e6
    if record.kind == "parking":
        return {"kind": "parking", "t": t, "spot": body.get("spot_id"), "status": body.get("status"),
                "dev_eui": body.get("device")}
    rxpk = body.get("rxpk")
    if not isinstance(rxpk, dict):
        return None
    event: dict[str, Any] = {
        "kind": "uplink", "t": t, "gateway": body.get("gateway_eui"),
        "sf": rxpk.get("datr"), "rssi": rxpk.get("rssi"), "snr": rxpk.get("lsnr"),
        "freq": rxpk.get("freq"),
    }
    event.update(phy_summary(rxpk.get("data")))
    return event


def phy_summary(data: Any) -> dict[str, Any]:
    """DevAddr, FCnt and FPort of a data frame, DevEUI of a join request (LoRaWAN 1.0 layout)."""
    if not isinstance(data, str):
        return {}
    try:
        phy = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return {}
    if not phy:
        return {}
    mtype = phy[0] >> 5
    if mtype == 0 and len(phy) >= 23:  # join request: JoinEUI, DevEUI little-endian
        return {"type": "join", "dev_eui": phy[9:17][::-1].hex()}
    if mtype in (2, 3, 4, 5) and len(phy) >= 12:  # data up/down, unconfirmed/confirmed
        fopts = phy[5] & 0x0F
        out: dict[str, Any] = {"type": "data", "dev_addr": phy[1:5][::-1].hex(),
                               "fcnt": int.from_bytes(phy[6:8], "little")}
        if len(phy) > 8 + fopts + 4:
            out["fport"] = phy[8 + fopts]
        return out
    return {"type": f"mtype {mtype}"}


