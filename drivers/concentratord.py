"""ChirpStack concentratord over ZeroMQ: uplinks and stats in, downlinks and configuration out.

Converts concentratord's protobuf events into the same Semtech-style `rxpk` /
`stat` shapes the UDP packet forwarder source produces, so the rest of the
gateway sees one shape. Downlinks come in as Semtech `txpk` dicts, like those the
GWMP server relays (`send_downlink(gateway_eui, txpk)`), pass the same per-gateway
EU868 duty-cycle check and answer in TX_ACK error names. Needs the optional extra
`schwebe[concentratord]`.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import importlib
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from drivers.dutycycle import (
    BAD_TXPK,
    Booking,
    DutyCycleRefused,
    GatewayDutyCycles,
)

log = logging.getLogger(__name__)

_CODE_RATES: Final[dict[str, str]] = {
    "CR_4_5": "4/5",
    "CR_4_6": "4/6",
    "CR_4_7": "4/7",
    "CR_4_8": "4/8",
    "CR_LI_4_5": "4/5LI",
    "CR_LI_4_6": "4/6LI",
    "CR_LI_4_8": "4/8LI",
}


#: Our own txpk_ack errors, the same names the GWMP server uses for the same situations.
UNKNOWN_GATEWAY: Final = "UNKNOWN_GATEWAY"
TIMEOUT: Final = "TIMEOUT"
SEND_FAILED: Final = "SEND_FAILED"

#: The HAL's other spellings of 4/6 and 4/8 (lora_pkt_fwd accepts both).
_CODR_ALIASES: Final[dict[str, str]] = {"2/3": "4/6", "1/2": "4/8"}


class ConcentratordUnavailable(ImportError):
    """pyzmq or chirpstack-api is not installed."""


def _load() -> tuple[Any, Any, Any]:
    try:
        zmq = importlib.import_module("zmq")
        zmq_asyncio = importlib.import_module("zmq.asyncio")
        gw = importlib.import_module("chirpstack_api.gw.gw_pb2")
    except ImportError as exc:
        raise ConcentratordUnavailable(
            f"ChirpStack concentratord support needs pyzmq and chirpstack-api ({exc}); "
            "install the extra: pip install 'schwebe[concentratord]', or remove "
            "[[sources.concentratord]] from the config"
        ) from exc
    return zmq, zmq_asyncio, gw


def _iso(ts: Any) -> str | None:
    if not ts.seconds and not ts.nanos:
        return None
    t = dt.datetime.fromtimestamp(ts.seconds, dt.UTC).replace(microsecond=ts.nanos // 1000)
    return t.isoformat().replace("+00:00", "Z")


def uplink_to_rxpk(gw: Any, frame: Any) -> dict[str, Any]:
    """gw.UplinkFrame -> {"gateway_eui", "rxpk"} in the Semtech forwarder's field names."""
    tx, rx = frame.tx_info, frame.rx_info
    rxpk: dict[str, Any] = {}
    time_iso = _iso(rx.gw_time)
    if time_iso is not None:
        rxpk["time"] = time_iso
    if rx.HasField("time_since_gps_epoch"):
        d = rx.time_since_gps_epoch
        rxpk["tmms"] = d.seconds * 1000 + d.nanos // 1_000_000
    if len(rx.context) == 4:
        # concentratord puts the concentrator's 32-bit µs counter here, big-endian.
        rxpk["tmst"] = int.from_bytes(rx.context, "big")
    rxpk["freq"] = round(tx.frequency / 1e6, 6)
    rxpk["chan"] = rx.channel
    rxpk["rfch"] = rx.rf_chain
    rxpk["stat"] = {gw.CRC_OK: 1, gw.BAD_CRC: -1}.get(rx.crc_status, 0)
    which = tx.modulation.WhichOneof("parameters")
    if which == "lora":
        lora = tx.modulation.lora
        rxpk["modu"] = "LORA"
        rxpk["datr"] = f"SF{lora.spreading_factor}BW{lora.bandwidth // 1000}"
        rxpk["codr"] = _CODE_RATES.get(gw.CodeRate.Name(lora.code_rate), "OFF")
    elif which == "fsk":
        rxpk["modu"] = "FSK"
        rxpk["datr"] = tx.modulation.fsk.datarate
    else:
        rxpk["modu"] = which.upper() if which else "UNKNOWN"
    rxpk["rssi"] = rx.rssi
    rxpk["lsnr"] = round(rx.snr, 1)
    rxpk["size"] = len(frame.phy_payload)
    rxpk["data"] = base64.b64encode(frame.phy_payload).decode("ascii")
    return {"gateway_eui": rx.gateway_id.lower(), "rxpk": rxpk}


def stats_to_stat(frame: Any) -> dict[str, Any]:
    """gw.GatewayStats -> {"gateway_eui", "stat"} in the Semtech `stat` field names."""
    stat: dict[str, Any] = {}
    if frame.HasField("time"):
        stat["time"] = dt.datetime.fromtimestamp(frame.time.seconds, dt.UTC).strftime(
            "%Y-%m-%d %H:%M:%S GMT"
        )
    if frame.HasField("location"):
        stat["lati"] = frame.location.latitude
        stat["long"] = frame.location.longitude
        stat["alti"] = round(frame.location.altitude)
    stat["rxnb"] = frame.rx_packets_received
    stat["rxok"] = frame.rx_packets_received_ok
    stat["rxfw"] = frame.rx_packets_received_ok
    stat["dwnb"] = frame.tx_packets_received
    stat["txnb"] = frame.tx_packets_emitted
    gateway_eui = frame.gateway_id or frame.gateway_id_legacy.hex()
    return {"gateway_eui": gateway_eui.lower(), "stat": stat}


def _parse_datr(datr: Any, where: str) -> tuple[int, int]:
    text = str(datr).upper()
    if not text.startswith("SF") or "BW" not in text:
        raise ValueError(f"{where}: datr {datr!r} is not like 'SF7BW125'")
    sf, bw = text[2:].split("BW", 1)
    return int(sf), int(bw) * 1000


def txpk_to_downlink(
    gw: Any, txpk: Mapping[str, Any], gateway_id: str, downlink_id: int
) -> Any:
    """A Semtech `txpk` dict -> gw.DownlinkFrame, as lora_pkt_fwd would transmit it.

    LoRa or FSK; `imme`, else `tmst` (concentrator counter), else `tmms` (GPS time).
    Raises ValueError naming the offending field.
    """
    try:
        phy = base64.b64decode(txpk["data"], validate=True)
        freq_hz = round(float(txpk["freq"]) * 1e6)
        power = int(txpk.get("powe", 14))
        antenna = int(txpk.get("rfch", 0))
    except (KeyError, ValueError, TypeError) as exc:
        raise ValueError(f"txpk: need valid 'data' (base64) and 'freq' (MHz): {exc}") from None
    tx_info = gw.DownlinkTxInfo(frequency=freq_hz, power=power, board=0, antenna=antenna)
    modu = str(txpk.get("modu", "LORA")).upper()
    if modu == "LORA":
        sf, bw = _parse_datr(txpk.get("datr"), "txpk")
        codr = str(txpk.get("codr", "4/5"))
        code_rate = {v: k for k, v in _CODE_RATES.items()}.get(_CODR_ALIASES.get(codr, codr))
        if code_rate is None:
            raise ValueError(f"txpk.codr {codr!r}: expected one of 4/5, 4/6, 4/7, 4/8")
        lora = tx_info.modulation.lora
        lora.bandwidth = bw
        lora.spreading_factor = sf
        lora.code_rate = gw.CodeRate.Value(code_rate)
        # lora_pkt_fwd leaves polarity as is unless the txpk says otherwise
        lora.polarization_inversion = bool(txpk.get("ipol", False))
        lora.no_crc = bool(txpk.get("ncrc", False))
        if "prea" in txpk:
            lora.preamble = int(txpk["prea"])
    elif modu == "FSK":
        try:
            tx_info.modulation.fsk.datarate = int(txpk["datr"])
            tx_info.modulation.fsk.frequency_deviation = int(txpk.get("fdev", 0))
        except (KeyError, ValueError, TypeError):
            raise ValueError("txpk: an FSK downlink needs 'datr' as a bit rate number") from None
    else:
        raise ValueError(f"txpk.modu {modu!r}: expected LORA or FSK")
    if txpk.get("imme"):
        tx_info.timing.immediately.SetInParent()
    elif "tmst" in txpk:
        # concentratord counts from the 4-byte context plus the delay; a txpk already
        # carries the absolute counter value, so the delay is zero.
        tx_info.context = (int(txpk["tmst"]) & 0xFFFFFFFF).to_bytes(4, "big")
        tx_info.timing.delay.delay.SetInParent()
    elif "tmms" in txpk:
        tmms = int(txpk["tmms"])  # milliseconds since the GPS epoch
        gps = tx_info.timing.gps_epoch.time_since_gps_epoch
        gps.seconds, gps.nanos = tmms // 1000, (tmms % 1000) * 1_000_000
    else:
        raise ValueError("txpk: need 'imme': true, a 'tmst' or a 'tmms'")
    frame = gw.DownlinkFrame(downlink_id=downlink_id, gateway_id=gateway_id)
    frame.items.add(phy_payload=phy, tx_info=tx_info)
    return frame


def ack_error(statuses: list[str]) -> str:
    """concentratord's per-item TxAckStatus names -> one Semtech txpk_ack error.

    Several items are alternatives (RX1, RX2): one OK means it went out. Otherwise
    the first item that was tried (not IGNORED) gives the reason; the Semtech names
    (TOO_LATE, TOO_EARLY, COLLISION_PACKET, COLLISION_BEACON, TX_FREQ, TX_POWER,
    GPS_UNLOCKED) are the same in both vocabularies, ChirpStack's extra ones
    (QUEUE_FULL, DUTY_CYCLE_OVERFLOW, INTERNAL_ERROR) pass unchanged.
    """
    if "OK" in statuses:
        return "NONE"
    tried = [s for s in statuses if s != "IGNORED"]
    return tried[0] if tried else "INTERNAL_ERROR"


class ConcentratordSource:
    """SUB to concentratord's events, REQ for its commands; reconnects are ZeroMQ's job."""

    def __init__(
        self,
        event_url: str,
        command_url: str,
        on_uplink: Callable[[dict[str, Any]], None],
        on_stats: Callable[[dict[str, Any]], None],
        *,
        command_timeout: float = 3.0,
        clock: Callable[[], float] = time.time,
        duty_cycle: GatewayDutyCycles | None = None,
        on_downlink_observed: Callable[[int, Mapping[str, Any]], None] | None = None,
        name: str = "concentratord",
    ) -> None:
        self._zmq, self._zmq_asyncio, self._gw = _load()
        self.event_url = event_url
        self.command_url = command_url
        self.on_uplink = on_uplink
        self.on_stats = on_stats
        self.command_timeout = command_timeout
        self.clock = clock
        self.name = name  # the supervisor's component name
        self._duty = duty_cycle
        self._on_downlink_observed = on_downlink_observed
        self._ctx = self._zmq_asyncio.Context()
        self._req: Any = None
        self._lock = asyncio.Lock()
        self._closed = False
        self.gateway_id: str | None = None
        self.connected = False
        self.counters = dict.fromkeys(
            (
                "uplinks",
                "stats",
                "unknown_events",
                "malformed_events",
                "callback_errors",
                "commands",
                "command_timeouts",
                "downlinks",
                "downlink_errors",
            ),
            0,
        )
        # txpk_ack error -> count, for downlinks through send_downlink (refusals included)
        self.downlink_acks: dict[str, int] = {}
        self.last_event_at: float | None = None
        self.last_error: str | None = None

    # --- events ----------------------------------------------------------------

    def handle_event(self, frames: list[bytes]) -> None:
        """One message from the event socket, in either wire format concentratord has used.

        Current concentratord (v4.4+) publishes one frame holding a gw.Event; earlier
        v4 releases sent two frames, the event name (`up`, `stats`) then the payload.
        """
        gw = self._gw
        try:
            if len(frames) == 1:
                event = gw.Event.FromString(frames[0])
                which = event.WhichOneof("event")
                kind = {"uplink_frame": "up", "gateway_stats": "stats"}.get(which or "", which)
                payload = event.uplink_frame if kind == "up" else event.gateway_stats
            elif len(frames) == 2:
                kind = frames[0].decode("ascii", "replace")
                msg_type = {"up": gw.UplinkFrame, "stats": gw.GatewayStats}.get(kind)
                payload = msg_type.FromString(frames[1]) if msg_type is not None else None
            else:
                raise ValueError(f"{len(frames)} frames, expected 1 or 2")
        except Exception as exc:  # protobuf raises DecodeError, a bare Exception subclass
            self.counters["malformed_events"] += 1
            self.last_error = f"event from {self.event_url}: cannot decode ({exc})"
            log.warning("concentratord: %s", self.last_error)
            return
        self.last_event_at = self.clock()
        if kind not in ("up", "stats") or payload is None:
            self.counters["unknown_events"] += 1
            return
        try:
            if kind == "up":
                record = uplink_to_rxpk(gw, payload)
                self.gateway_id = self.gateway_id or record["gateway_eui"] or None
                self.counters["uplinks"] += 1
                self.on_uplink(record)
            else:
                record = stats_to_stat(payload)
                self.gateway_id = self.gateway_id or record["gateway_eui"] or None
                self.counters["stats"] += 1
                self.on_stats(record)
        except Exception:
            self.counters["callback_errors"] += 1
            log.exception("concentratord: handling %s event failed", kind)

    async def run(self) -> None:
        zmq = self._zmq
        sub = self._ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        # ZeroMQ reconnects on its own; cap its interval so a restarted
        # concentratord is picked up within seconds, with no storm.
        sub.setsockopt(zmq.RECONNECT_IVL, 100)
        sub.setsockopt(zmq.RECONNECT_IVL_MAX, 5000)
        try:
            sub.connect(self.event_url)
            self.connected = True
            while True:
                frames = await sub.recv_multipart()
                self.handle_event(list(frames))
        finally:
            self.connected = False
            sub.close(linger=0)
            self._close_req()

    # --- commands --------------------------------------------------------------

    def _close_req(self) -> None:
        if self._req is not None:
            self._req.close(linger=0)
            self._req = None

    async def _command(self, command: Any, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        """Send one gw.Command and return the reply bytes (REQ/REP, one at a time)."""
        zmq = self._zmq
        wait = self.command_timeout if timeout is None else timeout
        async with self._lock:
            if self._req is None:
                self._req = self._ctx.socket(zmq.REQ)
                self._req.setsockopt(zmq.LINGER, 0)
                self._req.connect(self.command_url)
            self.counters["commands"] += 1
            try:
                await self._req.send(command.SerializeToString())
                reply: bytes = await asyncio.wait_for(self._req.recv(), wait)
            except (TimeoutError, zmq.ZMQError) as exc:
                # A REQ socket that missed its reply is stuck in the wrong state:
                # throw it away and start a fresh one next time.
                self._close_req()
                self.counters["command_timeouts"] += 1
                self.last_error = (
                    f"command to {self.command_url}: no reply within {wait:g}s "
                    f"({exc or type(exc).__name__}); is concentratord running?"
                )
                raise TimeoutError(self.last_error) from None
            return reply

    async def get_gateway_id(self, timeout: float | None = None) -> str:  # noqa: ASYNC109
        gw = self._gw
        reply = await self._command(
            gw.Command(get_gateway_id=gw.GetGatewayIdRequest()), timeout
        )
        self.gateway_id = gw.GetGatewayIdResponse.FromString(reply).gateway_id.lower()
        return self.gateway_id

    async def send_downlink_frame(
        self, downlink: Any, timeout: float | None = None  # noqa: ASYNC109
    ) -> dict[str, Any]:
        """Send a txpk-like dict or a gw.DownlinkFrame as is (no duty-cycle check).

        Returns {"downlink_id", "txpk_ack": {"error": "NONE" | reason}, "items"};
        reasons as :func:`ack_error`. Raises TimeoutError when concentratord is silent.
        """
        gw = self._gw
        if isinstance(downlink, Mapping):
            gateway_id = self.gateway_id or await self.get_gateway_id(timeout)
            downlink = txpk_to_downlink(gw, downlink, gateway_id, secrets.randbits(32))
        reply = await self._command(gw.Command(send_downlink_frame=downlink), timeout)
        ack = gw.DownlinkTxAck.FromString(reply)
        statuses = [gw.TxAckStatus.Name(i.status) for i in ack.items]
        error = ack_error(statuses)
        self.counters["downlinks"] += 1
        if error != "NONE":
            self.counters["downlink_errors"] += 1
        return {"downlink_id": ack.downlink_id, "txpk_ack": {"error": error}, "items": statuses}

    def _answer(self, error: str, detail: str | None = None) -> dict[str, Any]:
        self.downlink_acks[error] = self.downlink_acks.get(error, 0) + 1
        return {"error": error} if detail is None else {"error": error, "detail": detail}

    async def send_downlink(
        self,
        gateway_eui: int | None,
        txpk: Mapping[str, Any],
        timeout: float | None = None,  # noqa: ASYNC109 - per-call ack wait, as GwmpServer's
    ) -> dict[str, Any]:
        """The downlink relay (same contract as ``GwmpServer.send_downlink``).

        ``txpk`` goes out as a gw.DownlinkFrame if ``gateway_eui`` is this
        concentratord's gateway (or None: any). Returns ``{"error": "NONE"}`` when
        concentratord accepted it, else its reason (TOO_LATE, TX_FREQ, ...) or ours:
        UNKNOWN_GATEWAY (another gateway: try the next relay), DUTY_CYCLE_OVERFLOW or
        TX_FREQ (EU868 check, nothing sent), BAD_TXPK, TIMEOUT (no answer), with a
        ``detail`` for the operator.
        """
        gw = self._gw
        wait = self.command_timeout if timeout is None else timeout
        if self._closed:
            return self._answer(SEND_FAILED, "concentratord source is stopped")
        gateway_id = self.gateway_id
        if gateway_id is None:
            try:
                gateway_id = await self.get_gateway_id(wait)
            except TimeoutError as exc:
                if gateway_eui is not None:
                    # Cannot tell whether it is ours; the next relay may know it.
                    return self._answer(UNKNOWN_GATEWAY, f"{exc}; its gateway id is unknown")
                return self._answer(TIMEOUT, str(exc))
        eui = int(gateway_id, 16)
        if gateway_eui is not None and gateway_eui != eui:
            return self._answer(
                UNKNOWN_GATEWAY,
                f"gateway {gateway_eui:016x} is not behind concentratord {self.command_url} "
                f"(that is {gateway_id})",
            )
        try:
            frame = txpk_to_downlink(gw, txpk, gateway_id, secrets.randbits(32))
        except ValueError as exc:
            return self._answer(BAD_TXPK, str(exc))
        booking: Booking | None = None
        if self._duty is not None:
            try:
                booking = self._duty.book(eui, frame.items[0].tx_info.frequency, txpk)
            except DutyCycleRefused as exc:
                return self._answer(exc.error, exc.detail)
        try:
            reply = await self._command(gw.Command(send_downlink_frame=frame), wait)
        except TimeoutError as exc:
            # The airtime stays booked and the observer hears of it: it may have gone out.
            self._observed(eui, txpk)
            return self._answer(TIMEOUT, str(exc))
        except self._zmq.ZMQError as exc:
            if booking is not None:
                booking.release()
            return self._answer(SEND_FAILED, f"command to {self.command_url}: {exc}")
        try:
            ack = gw.DownlinkTxAck.FromString(reply)
            statuses = [gw.TxAckStatus.Name(i.status) for i in ack.items]
        except Exception as exc:  # protobuf's DecodeError; an unknown enum value is ValueError
            self.last_error = f"downlink ack from {self.command_url}: cannot decode ({exc})"
            self._observed(eui, txpk)
            return self._answer(SEND_FAILED, self.last_error)
        error = ack_error(statuses)
        self.counters["downlinks"] += 1
        if error != "NONE":
            self.counters["downlink_errors"] += 1
            if booking is not None:
                booking.release()  # concentratord refused it: nothing went on air
            return self._answer(error, f"concentratord answered {', '.join(statuses) or 'no items'}")
        self._observed(eui, txpk)
        return self._answer(error)

    def _observed(self, eui: int, txpk: Mapping[str, Any]) -> None:
        if self._on_downlink_observed is None:
            return
        try:
            self._on_downlink_observed(eui, txpk)
        except Exception:  # an observer must not cost the downlink
            self.counters["callback_errors"] += 1
            log.exception("concentratord: downlink observer raised")

    async def send_config(self, config: Any) -> dict[str, Any]:
        """Send a gw.GatewayConfiguration (channel plan); concentratord answers empty on success."""
        gw = self._gw
        if not isinstance(config, gw.GatewayConfiguration):
            raise TypeError("send_config: pass a chirpstack_api.gw.GatewayConfiguration")
        await self._command(gw.Command(set_gateway_configuration=config))
        return {"ok": True, "version": config.version}

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._close_req()
        self._ctx.term()

    async def stop(self) -> None:
        """The supervisor's shutdown hook (run() has been cancelled by then)."""
        self.close()

    def health(self) -> dict[str, Any]:
        return {
            "kind": "concentratord",
            "event_url": self.event_url,
            "command_url": self.command_url,
            "connected": self.connected,
            "gateway_id": self.gateway_id,
            "last_event_at": self.last_event_at,
            "last_error": self.last_error,
            **self.counters,
            "downlink_acks": dict(self.downlink_acks),
            "duty_cycle": None if self._duty is None else self._duty.usage(),
        }
