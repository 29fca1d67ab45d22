"""Record bodies <-> the JSON layout of the ChirpStack MQTT forwarder (`gw.proto`'s JSON mapping).

Uplink and stats records become `gw.UplinkFrame` / `gw.GatewayStats` objects, a
`gw.DownlinkFrame` item becomes a Semtech txpk, a txpk_ack becomes `gw.DownlinkTxAck`.
Pure functions over dicts: no sockets, no clocks; built by hand (not via protobuf) for speed.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
import zlib
from datetime import UTC, datetime
from typing import Any, Final

import cbor2
import orjson

from gateway import frames
from gateway.records import iso_us

#: Semtech ``codr`` -> chirpstack ``common.CodeRate`` enum name.
_CODE_RATES: Final[dict[str, str]] = {
    "4/5": "CR_4_5", "4/6": "CR_4_6", "2/3": "CR_4_6", "4/7": "CR_4_7", "4/8": "CR_4_8",
    "1/2": "CR_4_8", "1/4": "CR_1_4", "1/6": "CR_1_6", "2/6": "CR_2_6", "3/8": "CR_3_8",
    "5/6": "CR_5_6", "4/5LI": "CR_LI_4_5", "4/6LI": "CR_LI_4_6", "4/8LI": "CR_LI_4_8",
}
_CODE_RATES_BACK: Final[dict[str, str]] = {
    "CR_4_5": "4/5", "CR_4_6": "4/6", "CR_4_7": "4/7", "CR_4_8": "4/8",
    "CR_LI_4_5": "4/5LI", "CR_LI_4_6": "4/6LI", "CR_LI_4_8": "4/8LI",
}
_NUMBER: Final = (int, float)  # isinstance with a tuple: the same test as int | float, quicker
_CRC_STATUS: Final[dict[int, str]] = {1: "CRC_OK", -1: "BAD_CRC", 0: "NO_CRC"}
_DATR_RE: Final = re.compile(r"^SF(\d{1,2})BW(\d{2,4})$")
#: txpk_ack errors with a namesake in chirpstack's ``gw.TxAckStatus``.
_TX_ACK_STATUS: Final[frozenset[str]] = frozenset({
    "TOO_LATE", "TOO_EARLY", "COLLISION_PACKET", "COLLISION_BEACON", "TX_FREQ", "TX_POWER",
    "GPS_UNLOCKED", "QUEUE_FULL", "DUTY_CYCLE_OVERFLOW",
})


class DownlinkError(ValueError):
    """A DownlinkFrame that cannot become a txpk; the message names the JSON path."""


def _duration(seconds_ms: float) -> str:
    """Milliseconds -> protobuf Duration JSON (``"12.345s"``)."""
    return f"{seconds_ms / 1000:.3f}s"


def _parse_duration(text: Any, where: str) -> float:
    """Protobuf Duration JSON (``"1s"``, ``"0.5s"``) -> seconds."""
    if not isinstance(text, str) or not text.endswith("s"):
        raise DownlinkError(f"{where}: expected a duration like \"1s\", got {text!r}")
    try:
        return float(text[:-1])
    except ValueError:
        raise DownlinkError(f"{where}: expected a duration like \"1s\", got {text!r}") from None


def modulation(rxpk: dict[str, Any]) -> dict[str, Any]:
    """Semtech ``modu``/``datr``/``codr`` -> chirpstack ``Modulation`` JSON ({} if unknown)."""
    modu = rxpk.get("modu")
    datr = rxpk.get("datr")
    if modu == "LORA" and isinstance(datr, str):
        codr = rxpk.get("codr")
        lora = _lora(datr, codr if isinstance(codr, str) else None)
        return {} if lora is None else {"lora": dict(lora)}  # a copy: the cached one is shared
    if modu == "FSK" and isinstance(datr, int | float):
        return {"fsk": {"datarate": int(datr)}}
    return {}


@functools.lru_cache(maxsize=256)
def _lora(datr: str, codr: str | None) -> dict[str, Any] | None:
    # A gateway hears a handful of data rates: the regex and ints once per rate, not per frame.
    m = _DATR_RE.match(datr)
    if not m:
        return None
    lora: dict[str, Any] = {"bandwidth": int(m.group(2)) * 1000, "spreadingFactor": int(m.group(1))}
    if codr is not None and codr in _CODE_RATES:
        lora["codeRate"] = _CODE_RATES[codr]
    return lora


def uplink_id(received_us: int, data_b64: str) -> int:
    """A 32-bit id stable across re-sends of one record, so consumers can deduplicate."""
    return zlib.crc32(f"{received_us}:{data_b64}".encode()) & 0xFFFFFFFF


def uplink_frame(body: dict[str, Any], received_us: int, *, replay: bool = False) -> dict[str, Any]:
    """An ``uplink`` record body -> the JSON form of ``gw.UplinkFrame``."""
    rxpk: dict[str, Any] = body["rxpk"]
    get = rxpk.get  # every frame on the MQTT path comes here: each field read once
    data = str(get("data", ""))
    rx: dict[str, Any] = {
        "gatewayId": str(body["gateway_eui"]),
        "uplinkId": uplink_id(received_us, data),
    }
    t = get("time")
    if isinstance(t, str) and t:
        rx["gwTime"] = t if t.endswith("Z") or "+" in t[10:] else t + "Z"
    else:
        # lora_pkt_fwd writes "time" only with a GPS fix; without one the receive time on our
        # clock stands in (as concentratord does with the system clock).
        rx["gwTime"] = iso_us(received_us)
    tmms = get("tmms")
    if isinstance(tmms, _NUMBER) and not isinstance(tmms, bool):
        rx["timeSinceGpsEpoch"] = _duration(tmms)
    rssi = get("rssi")
    if isinstance(rssi, _NUMBER):
        rx["rssi"] = int(rssi)
    lsnr = get("lsnr")
    if isinstance(lsnr, _NUMBER):
        rx["snr"] = float(lsnr)
    chan = get("chan")
    if isinstance(chan, int):
        rx["channel"] = chan
    rfch = get("rfch")
    if isinstance(rfch, int):
        rx["rfChain"] = rfch
    tmst = get("tmst")
    if isinstance(tmst, int) and not isinstance(tmst, bool):
        # ChirpStack's own UDP bridge puts the concentrator counter here (4 bytes, big-endian);
        # a downlink's "delay" timing is relative to it.
        rx["context"] = base64.b64encode((tmst & 0xFFFFFFFF).to_bytes(4, "big")).decode()
    stat = get("stat")
    if isinstance(stat, int) and stat in _CRC_STATUS:
        rx["crcStatus"] = _CRC_STATUS[stat]
    if replay:
        rx["metadata"] = {"replay": "true"}
    freq = get("freq")
    tx: dict[str, Any] = {"frequency": round(float(freq) * 1e6) if isinstance(freq, _NUMBER) else 0}
    mod = modulation(rxpk)
    if mod:
        tx["modulation"] = mod
    return {"phyPayload": data, "txInfo": tx, "rxInfo": rx}


def uplink_message(body: bytes, received_us: int, default_eui: str, *,
                   replay: bool = False) -> tuple[str, bytes]:
    """An ``uplink`` record's CBOR body -> (gateway EUI for the topic, ``gw.UplinkFrame`` JSON).

    The compiled build answers most bodies in one pass (``frames.uplink_json_fast``); what it
    leaves, and every body in the twin, takes the general path below: the same bytes either
    way (tests/test_uplink_json.py). Raises what cbor2 and :func:`uplink_frame` raise.
    """
    fast: tuple[str, bytes] | None = frames.uplink_json_fast(body, received_us, replay)
    if fast is not None:
        return fast
    decoded = cbor2.loads(body)
    eui = str(decoded.get("gateway_eui") or default_eui)
    return eui, orjson.dumps(uplink_frame(decoded, received_us, replay=replay))


def _stat_time(text: Any) -> str | None:
    """``"2014-01-12 08:59:28 GMT"`` (Semtech) -> RFC 3339 UTC, or None when unreadable."""
    if not isinstance(text, str):
        return None
    for fmt in ("%Y-%m-%d %H:%M:%S %Z", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            continue
    return None


def gateway_stats(body: dict[str, Any]) -> dict[str, Any]:
    """A ``stats`` record body -> the JSON form of ``gw.GatewayStats``."""
    stat: dict[str, Any] = body["stat"]
    out: dict[str, Any] = {"gatewayId": str(body["gateway_eui"])}
    t = _stat_time(stat.get("time"))
    if t is not None:
        out["time"] = t
    if isinstance(stat.get("lati"), int | float) and isinstance(stat.get("long"), int | float):
        loc = {"latitude": float(stat["lati"]), "longitude": float(stat["long"])}
        if isinstance(stat.get("alti"), int | float):
            loc["altitude"] = float(stat["alti"])
        out["location"] = loc
    for ours, theirs in (("rxnb", "rxPacketsReceived"), ("rxok", "rxPacketsReceivedOk"),
                         ("dwnb", "txPacketsReceived"), ("txnb", "txPacketsEmitted")):
        v = stat.get(ours)
        if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
            out[theirs] = v
    return out


def conn_state(gateway_eui: str, online: bool) -> dict[str, Any]:
    """The JSON form of ``gw.ConnState`` (published retained on ``.../state/conn``)."""
    return {"gatewayId": gateway_eui, "state": "ONLINE" if online else "OFFLINE"}


def txpk_from_item(item: dict[str, Any], where: str = "items[0]") -> dict[str, Any]:
    """One ``gw.DownlinkFrameItem`` JSON -> a Semtech txpk (raises DownlinkError)."""
    phy_b64 = item.get("phyPayload")
    if not isinstance(phy_b64, str):
        raise DownlinkError(f"{where}.phyPayload: missing (base64 PHYPayload expected)")
    try:
        phy = base64.b64decode(phy_b64, validate=True)
    except (binascii.Error, ValueError):
        raise DownlinkError(f"{where}.phyPayload: not valid base64") from None
    tx = item.get("txInfo")
    if not isinstance(tx, dict):
        raise DownlinkError(f"{where}.txInfo: missing")
    freq = tx.get("frequency")
    if not isinstance(freq, int) or isinstance(freq, bool) or freq <= 0:
        raise DownlinkError(f"{where}.txInfo.frequency: expected Hz as a positive integer, got {freq!r}")
    txpk: dict[str, Any] = {
        "freq": freq / 1e6, "rfch": 0, "powe": int(tx.get("power", 14)),
        "size": len(phy), "data": base64.b64encode(phy).decode(),
    }
    mod = tx.get("modulation") or {}
    if "lora" in mod:
        lora = mod["lora"]
        sf, bw = lora.get("spreadingFactor"), lora.get("bandwidth")
        if not isinstance(sf, int) or not isinstance(bw, int):
            raise DownlinkError(f"{where}.txInfo.modulation.lora: spreadingFactor and bandwidth required")
        txpk.update(modu="LORA", datr=f"SF{sf}BW{bw // 1000}",
                    codr=_CODE_RATES_BACK.get(str(lora.get("codeRate", "CR_4_5")), "4/5"),
                    ipol=bool(lora.get("polarizationInversion", False)))
        if lora.get("preamble"):
            txpk["prea"] = int(lora["preamble"])
        if lora.get("noCrc"):
            txpk["ncrc"] = True
    elif "fsk" in mod:
        fsk = mod["fsk"]
        txpk.update(modu="FSK", datr=int(fsk.get("datarate", 0)), fdev=int(fsk.get("frequencyDeviation", 0)))
    else:
        raise DownlinkError(f"{where}.txInfo.modulation: lora or fsk required")
    timing = tx.get("timing") or {}
    if "immediately" in timing:
        txpk["imme"] = True
    elif "delay" in timing:
        ctx_b64 = tx.get("context")
        try:
            ctx = base64.b64decode(ctx_b64 or "", validate=True)
        except (binascii.Error, ValueError):
            ctx = b""
        if len(ctx) < 4:
            raise DownlinkError(f"{where}.txInfo.context: the uplink's 4-byte counter is needed for delay timing")
        delay_s = _parse_duration(timing["delay"].get("delay", "0s"), f"{where}.txInfo.timing.delay.delay")
        txpk["tmst"] = (int.from_bytes(ctx[:4], "big") + round(delay_s * 1e6)) & 0xFFFFFFFF
    elif "gpsEpoch" in timing:
        s = _parse_duration(timing["gpsEpoch"].get("timeSinceGpsEpoch"),
                            f"{where}.txInfo.timing.gpsEpoch.timeSinceGpsEpoch")
        txpk["tmms"] = round(s * 1000)
    else:
        raise DownlinkError(f"{where}.txInfo.timing: immediately, delay or gpsEpoch required")
    return txpk


def tx_ack_status(txpk_ack: dict[str, Any]) -> str:
    """A GwmpServer txpk_ack -> chirpstack ``gw.TxAckStatus`` name."""
    err = str(txpk_ack.get("error", "NONE"))
    if err in ("NONE", "OK", ""):
        return "OK"
    return err if err in _TX_ACK_STATUS else "INTERNAL_ERROR"


def downlink_tx_ack(gateway_eui: str, downlink_id: int, statuses: list[str]) -> dict[str, Any]:
    """The JSON form of ``gw.DownlinkTxAck`` (published on ``.../event/ack``)."""
    return {"gatewayId": gateway_eui, "downlinkId": downlink_id,
            "items": [{"status": s} for s in statuses]}
