"""Network-server forwarder over the LoRa Basics Station LNS protocol (websocket over TLS).

Each local packet forwarder is one station (router) to the server, with its own websocket:
discovery at ``{uri}/router-info``, then the traffic socket it names, ``version`` up and
``router_config`` down. Uplinks go up as ``updf``/``jreq``/``propdf``; a batch counts as
delivered when the server answers a websocket ping sent after it (TCP keeps order, so it
has read everything before). Replays older than ``max_replay_age`` are dropped (counted);
later ones carry their original ``rxtime``. ``dnmsg`` downlinks go to the packet forwarder
that heard the device (its index is the xtime's rctx), RX1 first, RX2 if RX1 is refused
(too late, duty cycle...), ``dntxed`` back when the TX_ACK says sent. ``runcmd`` and
``rmtsh`` are refused: no remote shell on a city gateway.

Each router's ``router_config`` history is kept in the data directory: a frame is judged
(NetID/JoinEUI filters, DR table) by the configuration in force when it was heard, so
frames heard after a restart while the server is unreachable are filtered as a running
station would have filtered them (Basics Station itself forgets it, issue #10).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import aiohttp
import cbor2

from gateway.clocksteps import StepWatch
from gateway.config import StationForward
from gateway.forward.base import Broken, Forwarder, ForwarderError, SendResult
from gateway.forward.mqtt import DownlinkRelay
from gateway.forward.station_creds import Credentials, load_credentials
from gateway.forward.station_link import discover, handshake, open_ws
from gateway.forward.station_msgs import (
    EU868_DRS,
    RouterConfig,
    dnmsg_attempts,
    eui_str,
    rctx_of,
    up_dr,
    uplink_message,
)
from gateway.forward.station_router import HISTORY, Router, load_history, save_history
from gateway.records import Record, now_us

log = logging.getLogger(__name__)

NATURAL_KINDS: Final = ("uplink",)
#: Traffic-socket failures before discovery is asked again (Basics Station: 1, 2, 4, 8, 16 s).
MUXS_RETRIES: Final = 5
#: dnmsg being relayed at once (each waits for its TX_ACK, RX2 one second later at most).
MAX_PENDING_DOWNLINKS: Final = 64


class StationForwarder(Forwarder):
    def __init__(
        self,
        cfg: StationForward,
        *,
        gateway_eui: int,
        relays: Sequence[DownlinkRelay] = (),
        late_after: float = 10.0,
        clock_us: Callable[[], int] = now_us,
        rng: random.Random | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(cfg.name, kinds=cfg.kinds or NATURAL_KINDS, dev_addr_prefixes=cfg.dev_addr_prefixes,
                         net_ids=cfg.net_ids)
        self.cfg = cfg
        self.section = f"forward.station {cfg.name}"
        self.fallback_router = cfg.gateway_eui if cfg.gateway_eui is not None else gateway_eui
        self.relays = list(relays)
        self.late_after = late_after
        self.clock_us = clock_us
        # xtime extends the concentrator's counter by the receive times: a step of the wall
        # clock must move the reference (gateway/clocksteps.py), or frames after a step back
        # get no usable xtime until the clock catches up.
        self._watch = StepWatch(lambda: clock_us() / 1e6, monotonic)
        self._watch.check()
        self.rng = rng or random.Random()
        self._routers: dict[int, Router] = {}
        self._loaded = False
        for local, router in cfg.eui_map.items():
            self._router(router).rctx(local, self.rng)
        self._session: aiohttp.ClientSession | None = None
        self._creds: Credentials | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._warned: set[str] = set()
        self.counters: dict[str, int] = {"sent": 0, "replayed": 0, "replay_expired": 0, "bad_record": 0,
                                         "downlinks": 0, "dntxed": 0, "rx2_used": 0, "refused_commands": 0}
        self.errors: dict[str, int] = {}

    def _count(self, key: str, table: dict[str, int] | None = None) -> None:
        t = self.errors if table is None else table
        t[key] = t.get(key, 0) + 1

    # ---- routers and their saved router_config ----------------------------------------
    def _router(self, router_id: int) -> Router:
        r = self._routers.get(router_id)
        if r is None:
            r = self._routers[router_id] = Router(router_id)
            if self._loaded:
                self._load(r)
        return r

    def router_for(self, local: int | None) -> Router:
        if local is not None and local in self.cfg.eui_map:
            return self._router(self.cfg.eui_map[local])
        if local is None or self.cfg.gateway_eui is not None:
            return self._router(self.fallback_router)
        if local not in self._routers and len(self._routers) >= self.cfg.MAX_GATEWAYS:
            self._count("too_many_gateways")
            return self._router(self.fallback_router)
        return self._router(local)  # pass-through: the packet forwarder's own EUI is its router id

    def _config_path(self, r: Router) -> Path | None:
        if self.data_dir is None:
            return None
        return Path(self.data_dir) / f"station-{self.name}-{r.router_id:016x}.router_config.json"

    def _load(self, r: Router) -> None:
        path = self._config_path(r)
        if path is None or r.history:
            return
        try:
            r.history = load_history(path)
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self._count("saved_router_config_unusable")
            log.warning("%s: saved router_config %s unusable (%s); waiting for the server's", self.section,
                        path, exc)
            return
        r.config_source = "saved" if r.history else "none"

    def _load_all(self) -> None:
        if not self._loaded:
            self._loaded = True
            for r in self._routers.values():
                self._load(r)

    def _apply_config(self, r: Router, msg: dict[str, Any]) -> None:
        cfg = RouterConfig.parse(msg)
        r.config_source = "server"
        if r.history and r.history[-1][1].raw == cfg.raw:
            return  # the same as before: keeps its time in force, and the flash a write
        r.history = [*r.history, (self.clock_us(), cfg)][-HISTORY:]
        path = self._config_path(r)
        if path is None:
            return
        try:
            save_history(path, r.history)
        except OSError as exc:
            self._count("router_config_not_saved")
            log.warning("%s: cannot save router_config to %s: %s", self.section, path, exc)

    # ---- connection --------------------------------------------------------------------
    async def connect(self) -> None:
        self._load_all()
        try:
            self._creds = load_credentials(self.cfg, self.section)
        except ValueError as exc:
            raise ForwarderError("credentials", str(exc)) from exc
        for warning in self._creds.warnings:
            if warning not in self._warned:
                self._warned.add(warning)
                log.warning("%s", warning)
        self.broken = Broken()
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.cfg.timeout))
        if not self._routers and self.cfg.gateway_eui is not None:
            self._router(self.fallback_router)
        # Pass-through routers appear with their first uplink; until one has, nothing has
        # answered, so the page must not say "connected" yet.
        self.connect_confirms = bool(self._routers)
        try:
            for r in list(self._routers.values()):
                await self._open(r)
        except BaseException:
            await self.close()
            raise

    async def _ws(self, url: str, what: str) -> aiohttp.ClientWebSocketResponse:
        assert self._session is not None and self._creds is not None
        return await open_ws(self._session, self._creds, url, f"{self.section}: {what}", self.cfg.timeout)

    async def _discover(self, r: Router) -> str:
        assert self._session is not None and self._creds is not None
        return await discover(self._session, self._creds, self.cfg.uri, r.router_id, self.section,
                              self.cfg.timeout)

    async def _open(self, r: Router) -> None:
        if r.ws is not None and not r.ws.closed:
            return
        if r.muxs_uri is None or r.muxs_failures >= MUXS_RETRIES:
            r.muxs_uri, r.muxs_failures = await self._discover(r), 0
        try:
            ws = await self._ws(r.muxs_uri, "traffic socket")
        except ForwarderError:
            r.muxs_failures += 1
            raise
        try:
            config = await handshake(ws, f"{self.section}: router {eui_str(r.router_id)}", self.cfg.timeout)
        except ForwarderError:
            r.muxs_failures += 1
            raise
        try:
            self._apply_config(r, config)
        except ValueError as exc:
            await ws.close()
            raise ForwarderError("router_config", f"{self.section}: router {eui_str(r.router_id)}: {exc}") from exc
        self._muxtime(r, config)
        r.muxs_failures = 0
        r.ws = ws
        await ws.send_str(json.dumps({"msgtype": "timesync", "txtime": time.monotonic_ns() // 1000}))
        r.reader = asyncio.create_task(self._read(r, ws), name=f"station-reader:{self.name}:{r.router_id:016x}")
        r.keepalive = asyncio.create_task(self._keepalive(r, ws), name=f"station-ping:{self.name}:{r.router_id:016x}")

    async def _keepalive(self, r: Router, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Ping while idle; no pong within ``timeout``: the connection counts as broken."""
        broken = self.broken
        while r.ws is ws:
            await asyncio.sleep(self.cfg.keepalive)
            if r.ws is not ws or r.pings:
                continue  # a batch is waiting for its own pong: that one tells
            try:
                await r.ping(ws, self.cfg.timeout)
            except (TimeoutError, aiohttp.ClientError, OSError, ConnectionError, ForwarderError):
                if r.ws is ws:
                    self._count("keepalive_timeout")
                    log.warning("%s: router %s: no answer to a ping within %gs; reconnecting", self.section,
                                eui_str(r.router_id), self.cfg.timeout)
                    if broken is not None:
                        broken.set()
                return

    def _muxtime(self, r: Router, msg: dict[str, Any]) -> None:
        mt = msg.get("MuxTime")
        if isinstance(mt, (int, float)) and not isinstance(mt, bool):
            r.muxtime = (float(mt), time.monotonic())

    async def close(self) -> None:
        for r in self._routers.values():
            ws, r.ws = r.ws, None
            for task in (r.reader, r.keepalive):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
            r.reader = r.keepalive = None
            if ws is not None:
                with contextlib.suppress(Exception):
                    await ws.close()
            r.fail_pings(ForwarderError("closed", "connection closed"))
        for t in list(self._tasks):
            t.cancel()
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # ---- receive path ------------------------------------------------------------------
    async def _read(self, r: Router, ws: aiohttp.ClientWebSocketResponse) -> None:
        broken = self.broken
        try:
            while True:
                msg = await ws.receive()
                if msg.type == aiohttp.WSMsgType.PING:
                    with contextlib.suppress(ConnectionError, aiohttp.ClientError):
                        await ws.pong(msg.data)
                elif msg.type == aiohttp.WSMsgType.PONG:
                    r.pong(msg.data)
                elif msg.type == aiohttp.WSMsgType.TEXT:
                    self._message(r, msg.data)
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    self._count("binary_message")  # rmtsh data: there is no remote shell here
                else:
                    break  # CLOSE, CLOSED, ERROR
        finally:
            if r.ws is ws:
                log.warning("%s: traffic socket of router %s closed (%s)", self.section,
                            eui_str(r.router_id), ws.close_code)
                if broken is not None:
                    broken.set()
                r.fail_pings(ForwarderError("connection_lost", "traffic socket closed"))

    def _message(self, r: Router, text: str) -> None:
        try:
            msg = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: nested past Python's limit
            self._count("malformed_message")
            return
        if not isinstance(msg, dict):
            self._count("malformed_message")
            return
        self._muxtime(r, msg)
        kind = msg.get("msgtype")
        if kind == "router_config":
            try:
                self._apply_config(r, msg)
            except ValueError as exc:
                self._count("bad_router_config")
                log.warning("%s: router %s: %s; keeping the previous one", self.section, eui_str(r.router_id), exc)
        elif kind == "dnmsg":
            if len(self._tasks) >= MAX_PENDING_DOWNLINKS:
                self._count("dnmsg_overload")  # a radio sends one at a time; this many is a runaway server
                return
            task = asyncio.create_task(self._downlink(r, msg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif kind == "timesync":
            tx, gps = msg.get("txtime"), msg.get("gpstime")
            if isinstance(tx, int) and isinstance(gps, int):
                mid = (tx + time.monotonic_ns() // 1000) // 2
                r.gps_offset_us = gps - mid
        elif kind in ("runcmd", "rmtsh"):
            self.counters["refused_commands"] += 1
            log.warning("%s: the server sent %s to router %s; refused: no remote commands or shell run on "
                        "this gateway", self.section, kind, eui_str(r.router_id))
        elif kind == "error":
            log.warning("%s: the server reports an error for router %s: %s", self.section, eui_str(r.router_id),
                        str(msg.get("error"))[:200])
        else:
            self._count(f"unsupported_{str(kind)[:20]}")

    async def _downlink(self, r: Router, msg: dict[str, Any]) -> None:
        self.counters["downlinks"] += 1
        r.counters["dnmsg"] += 1
        raw_xtime, raw_rctx = msg.get("xtime"), msg.get("rctx")
        xtime = raw_xtime if isinstance(raw_xtime, int) else 0
        rctx = raw_rctx if isinstance(raw_rctx, int) else rctx_of(xtime)
        local = r.locals[rctx] if 0 <= rctx < len(r.locals) else None
        config = r.history[-1][1] if r.history else None
        try:
            attempts = dnmsg_attempts(msg, config, r.clocks.get(local) if xtime else None)
        except ValueError as exc:
            self._count("dnmsg_refused")
            log.warning("%s: router %s: %s; not sent", self.section, eui_str(r.router_id), exc)
            return
        for attempt in attempts:
            ack: dict[str, Any] = {"error": "UNKNOWN_GATEWAY"}
            try:
                for relay in self.relays:
                    ack = await relay.send_downlink(local, attempt.txpk)
                    if ack.get("error") != "UNKNOWN_GATEWAY":
                        break
            except Exception:  # a relay bug must not end the websocket's reader
                self._count("relay_failed")
                log.exception("%s: router %s: relaying a downlink failed", self.section, eui_str(r.router_id))
                return
            error = str(ack.get("error", "NONE"))
            self._count(error, self.counters)
            if error == "TIMEOUT":
                return  # no TX_ACK: it may have gone out, so RX2 would send it twice; no dntxed either
            if error == "NONE":
                if attempt.window == "RX2":
                    self.counters["rx2_used"] += 1
                await self._dntxed(r, msg, attempt)
                return
            if error == "UNKNOWN_GATEWAY":
                log.warning("%s: no local packet forwarder for router %s takes downlinks", self.section,
                            eui_str(r.router_id))
                return

    async def _dntxed(self, r: Router, msg: dict[str, Any], attempt: Any) -> None:
        if "DevEui" not in msg or r.ws is None:
            return
        diid = msg.get("diid", msg.get("seqno", 0))
        with contextlib.suppress(Exception):
            await r.ws.send_str(json.dumps({
                "msgtype": "dntxed", "seqno": diid, "diid": diid, "DR": attempt.dr, "Freq": attempt.freq_hz,
                "DevEui": msg["DevEui"], "rctx": rctx_of(attempt.xtime), "xtime": attempt.xtime,
                "txtime": time.time(), "gpstime": 0}))
            self.counters["dntxed"] += 1
            r.counters["dntxed"] += 1

    # ---- uplinks -----------------------------------------------------------------------
    def _parse(self, record: Record) -> tuple[int | None, dict[str, Any], bytes] | None:
        try:
            body = cbor2.loads(record.body)
            rxpk = body["rxpk"]
            phy = base64.b64decode(rxpk["data"], validate=True)
            local: int | None = int(str(body["gateway_eui"]), 16) if "gateway_eui" in body else None
        except (KeyError, TypeError, ValueError, binascii.Error, cbor2.CBORDecodeError):
            return None
        return local, rxpk, phy

    def _uplink(self, r: Router, local: int | None, rxpk: dict[str, Any], phy: bytes,
                received_us: int) -> dict[str, Any] | str:
        """The message for one frame, or the reason it is not sent."""
        config = r.config_at(received_us)
        msg, reason = uplink_message(phy, config)
        if msg is None:
            return reason
        dr = up_dr(rxpk.get("datr"), rxpk.get("modu"), config.drs if config else EU868_DRS)
        freq = rxpk.get("freq")
        if dr is None or not isinstance(freq, (int, float)) or not math.isfinite(freq):
            return "unknown_dr"
        freq_hz = round(float(freq) * 1e6)
        if config is not None and config.upchannels and freq_hz not in config.upchannels:
            # sent all the same, but the packet forwarder listens where the server does not plan
            self._count("off_plan_channel", self.counters)
        rctx = r.rctx(local, self.rng)
        tmst = rxpk.get("tmst")
        xtime = r.clocks[local].to_xtime(tmst, received_us) if isinstance(tmst, int) and local in r.clocks else 0
        tmms = rxpk.get("tmms")
        ref = 0.0
        if r.muxtime is not None:
            ref = r.muxtime[0] + time.monotonic() - r.muxtime[1]
        rssi, snr = rxpk.get("rssi", 0), rxpk.get("lsnr", 0.0)
        if not isinstance(snr, (int, float)) or not math.isfinite(snr):
            snr = 0.0  # JSON has no NaN: a strict server would drop the whole message
        msg.update({"RefTime": ref, "DR": dr, "Freq": freq_hz, "upinfo": {
            "rctx": rctx, "xtime": xtime, "gpstime": tmms * 1000 if isinstance(tmms, int) else 0,
            "rssi": int(rssi) if isinstance(rssi, (int, float)) and math.isfinite(rssi) else 0,
            "snr": float(snr), "rxtime": received_us / 1e6}})
        return msg

    async def send(self, records: list[tuple[int, Record]]) -> SendResult:
        if self._session is None:
            raise ForwarderError("disconnected", f"{self.section}: not connected")
        step = self._watch.check()
        if step is not None:
            for r in self._routers.values():
                for clock in r.clocks.values():
                    clock.follow_step(step)
        now = self.clock_us()
        acked: list[int] = []
        frames: list[tuple[int, Record, Router, int | None, dict[str, Any], bytes]] = []
        for seq, record in records:
            if (now - record.received_us) / 1e6 > self.cfg.max_replay_age:
                self.counters["replay_expired"] += 1
                acked.append(seq)
                continue
            parsed = self._parse(record)
            if parsed is None:
                self._count("bad_record")
                acked.append(seq)
                continue
            local, rxpk, phy = parsed
            frames.append((seq, record, self.router_for(local), local, rxpk, phy))
        for r in {id(f[2]): f[2] for f in frames}.values():
            await self._open(r)  # a router forwarded for the first time: its router_config first
        out: dict[int, list[tuple[int, str]]] = {}
        for seq, record, r, local, rxpk, phy in frames:
            msg = self._uplink(r, local, rxpk, phy, record.received_us)
            if isinstance(msg, str):
                self._count(msg, self.counters if msg.startswith("filtered") else None)
                acked.append(seq)
                continue
            if (now - record.received_us) / 1e6 > self.late_after:
                self.counters["replayed"] += 1
            r.counters[msg["msgtype"]] = r.counters.get(msg["msgtype"], 0) + 1
            out.setdefault(r.router_id, []).append((seq, json.dumps(msg, separators=(",", ":"))))
        for router_id, items in out.items():
            r = self._routers[router_id]
            ws = r.ws
            if ws is None or ws.closed:
                raise ForwarderError("disconnected", f"{self.section}: router {eui_str(router_id)} not connected")
            try:
                for _, text in items:
                    await ws.send_str(text)
                await r.ping(ws, self.cfg.timeout)
            except (TimeoutError, aiohttp.ClientError, OSError, ConnectionError) as exc:
                raise ForwarderError("no_pong", f"{self.section}: router {eui_str(router_id)}: the server did "
                                     f"not confirm {len(items)} messages within {self.cfg.timeout:g}s "
                                     f"({type(exc).__name__})") from exc
            acked.extend(seq for seq, _ in items)
            self.counters["sent"] += len(items)
        return SendResult(frozenset(acked))

    def health(self) -> dict[str, Any]:
        return {"uri": self.cfg.uri, "auth": None if self._creds is None else self._creds.mode,
                **self.counters, "errors": dict(self.errors),
                "routers": {f"{rid:016x}": r.health() for rid, r in self._routers.items()}}
