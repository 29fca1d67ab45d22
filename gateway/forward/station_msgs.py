"""Basics Station LNS messages <-> Semtech rxpk/txpk: pure translation, no sockets.

Uplinks become ``updf``/``jreq``/``propdf`` with the field encodings Basics Station uses
(DevAddr and MIC as signed 32-bit integers, hex strings, EUIs as ``01-02-...``); a
``router_config`` becomes the DR table and the NetID/JoinEUI filters; a ``dnmsg`` becomes the
txpk for RX1 and the one for RX2. ``xtime`` is the 32-bit concentrator counter (``tmst``)
extended to 48 bits, with a session byte and the local gateway's index (the rctx) on top,
so a downlink names the packet forwarder that heard the device and a stale one is refused.
"""

from __future__ import annotations

import base64
import binascii
import math
import random
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from gateway.clocksteps import Step
from gateway.forward.base import net_id_matches

#: EU868 data rates as Basics Station writes them, [SF, BW kHz, downlink only]; SF 0 is FSK.
#: Used until a router_config names the region's own table.
EU868_DRS: Final[tuple[tuple[int, int, int], ...]] = (
    (12, 125, 0), (11, 125, 0), (10, 125, 0), (9, 125, 0), (8, 125, 0), (7, 125, 0), (7, 250, 0), (0, 0, 0))
#: Downlink transmit power (dBm) when the router_config gives no max_eirp: EU868's 14 dBm
#: default that most network servers plan with.
DEFAULT_TX_POWER: Final = 14
_MASK48: Final = (1 << 48) - 1
_DATR = re.compile(r"SF(\d{1,2})BW(\d{3})")
_EUI = re.compile(r"[0-9A-Fa-f]{2}(?:[-:]?[0-9A-Fa-f]{2}){7}")

# LoRaWAN MHDR frame types (the top three bits)
_JREQ, _JACC, _UNCONF_UP, _UNCONF_DN, _CONF_UP, _CONF_DN, _REJOIN, _PROP = range(8)


def eui_str(eui: int) -> str:
    """``B8-27-EB-FF-FE-00-00-01``: the form Basics Station writes EUIs in."""
    return "-".join(f"{(eui >> s) & 0xFF:02X}" for s in range(56, -8, -8))


def parse_eui_str(value: Any, field_name: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 64:
        return value
    if isinstance(value, str) and _EUI.fullmatch(value):
        return int(re.sub("[-:]", "", value), 16)
    raise ValueError(f"{field_name} {value!r} is not an EUI (e.g. \"00-00-00-00-00-00-00-01\")")


def _signed32(b: bytes) -> int:
    return int(struct.unpack("<i", b)[0])


@dataclass(frozen=True, slots=True)
class RouterConfig:
    """What a ``router_config`` sets that matters here; ``raw`` is kept for persistence."""

    region: str
    drs: tuple[tuple[int, int, int], ...]
    net_ids: tuple[int, ...] | None  # None: no NetID filter
    join_euis: tuple[tuple[int, int], ...] | None  # None: no JoinEUI filter
    max_eirp: float | None
    raw: Mapping[str, Any]
    # uplink channel frequencies (Hz) of the server's plan; empty: it named none
    upchannels: frozenset[int] = frozenset()

    @classmethod
    def parse(cls, msg: Mapping[str, Any]) -> RouterConfig:
        """Checks what we use; a ValueError names the field."""
        drs: list[tuple[int, int, int]] = []
        raw_drs = msg.get("DRs")
        if raw_drs is not None:
            if not isinstance(raw_drs, list) or len(raw_drs) > 16:
                raise ValueError("router_config.DRs must be a list of at most 16 [SF, BW, dnonly] rows")
            for i, row in enumerate(raw_drs):
                if (not isinstance(row, list) or len(row) != 3
                        or not all(isinstance(v, int) and not isinstance(v, bool) for v in row)):
                    raise ValueError(f"router_config.DRs[{i}] {row!r} is not [SF, BW, dnonly]")
                drs.append((row[0], row[1], row[2]))
        net_ids: tuple[int, ...] | None = None
        if msg.get("NetID") is not None:
            raw_ids = msg["NetID"]
            if not isinstance(raw_ids, list) or not all(isinstance(n, int) and 0 <= n < 1 << 24 for n in raw_ids):
                raise ValueError(f"router_config.NetID {raw_ids!r} is not a list of 24-bit NetIDs")
            net_ids = tuple(raw_ids)
        join_euis: tuple[tuple[int, int], ...] | None = None
        raw_join = msg.get("JoinEui", msg.get("JoinEUI"))
        if raw_join is not None:
            if not isinstance(raw_join, list):
                raise ValueError("router_config.JoinEui must be a list of [begin, end] ranges")
            ranges = []
            for i, pair in enumerate(raw_join):
                if (not isinstance(pair, list) or len(pair) != 2
                        or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair)):
                    raise ValueError(f"router_config.JoinEui[{i}] {pair!r} is not [begin, end]")
                ranges.append((pair[0] & (2**64 - 1), pair[1] & (2**64 - 1)))  # int64 on the wire
            join_euis = tuple(ranges)
        chans = msg.get("upchannels")
        upchannels = frozenset(c[0] for c in chans if isinstance(c, list) and c and isinstance(c[0], int)) \
            if isinstance(chans, list) else frozenset()
        region = msg.get("region", "")
        eirp = msg.get("max_eirp")
        return cls(region=str(region)[:32], drs=tuple(drs) or EU868_DRS, net_ids=net_ids,
                   join_euis=join_euis or None,
                   max_eirp=float(eirp) if isinstance(eirp, (int, float)) and not isinstance(eirp, bool)
                   and math.isfinite(eirp) else None,
                   raw={k: v for k, v in msg.items() if k != "MuxTime"},  # MuxTime: a clock, not config
                   upchannels=upchannels)

    def summary(self) -> dict[str, Any]:
        """For the status page."""
        return {"region": self.region, "DRs": len(self.drs), "upchannels": sorted(self.upchannels),
                "NetID": None if self.net_ids is None else [f"{n:06X}" for n in self.net_ids],
                "JoinEui": None if self.join_euis is None
                else [[eui_str(a), eui_str(b)] for a, b in self.join_euis]}


def up_dr(datr: Any, modu: Any, drs: Sequence[tuple[int, int, int]]) -> int | None:
    """The uplink DR index of an rxpk's ``datr`` in the region's table, None if it has none."""
    if modu == "FSK":
        want = (0, 0)
    else:
        m = _DATR.fullmatch(str(datr))
        if m is None:
            return None
        want = (int(m[1]), int(m[2]))
    for i, (sf, bw, dnonly) in enumerate(drs):
        if (sf, bw if sf else 0) == want and not dnonly:
            return i
    return None


def dn_datr(dr: int, drs: Sequence[tuple[int, int, int]]) -> dict[str, Any]:
    """txpk modulation fields for a downlink DR index; ValueError when the table has none."""
    if not 0 <= dr < len(drs) or drs[dr][0] < 0:
        raise ValueError(f"DR {dr} is not defined in the router_config's DRs")
    sf, bw, _ = drs[dr]
    if sf == 0:
        return {"modu": "FSK", "datr": 50000, "fdev": 25000}
    return {"modu": "LORA", "datr": f"SF{sf}BW{bw}", "codr": "4/5", "ipol": True}


def uplink_message(phy: bytes, config: RouterConfig | None) -> tuple[dict[str, Any] | None, str]:
    """The frame fields of ``updf``/``jreq``/``propdf``; (None, reason) if not sent."""
    if not phy:
        return None, "empty"
    mhdr = phy[0]
    ftype = mhdr >> 5
    if (len(phy) < 12 and ftype != _PROP) or mhdr & 0x1F:
        return None, "not_lorawan"  # too short, or RFU/Major bits set
    if ftype == _PROP:
        return {"msgtype": "propdf", "FRMPayload": phy.hex().upper()}, ""
    if ftype in (_JREQ, _REJOIN):
        if len(phy) != 23:
            return None, "not_lorawan"
        join_eui = int.from_bytes(phy[1:9], "little")
        if config is not None and config.join_euis is not None and not any(
                a <= join_eui <= b for a, b in config.join_euis):
            return None, "filtered_join_eui"
        return {"msgtype": "jreq" if ftype == _JREQ else "rejoin", "MHdr": mhdr,
                "JoinEui": eui_str(join_eui), "DevEui": eui_str(int.from_bytes(phy[9:17], "little")),
                "DevNonce": int.from_bytes(phy[17:19], "little"), "MIC": _signed32(phy[19:23])}, ""
    if ftype not in (_UNCONF_UP, _CONF_UP):
        return None, "downlink_frame"  # another gateway's downlink, heard: no use to the server
    fopts_len = phy[5] & 0x0F
    port_at = 8 + fopts_len
    if port_at > len(phy) - 4:
        return None, "not_lorawan"
    dev_addr = int.from_bytes(phy[1:5], "little")
    if config is not None and config.net_ids is not None and not any(
            net_id_matches(dev_addr, n) for n in config.net_ids):
        return None, "filtered_net_id"
    has_port = port_at < len(phy) - 4
    return {"msgtype": "updf", "MHdr": mhdr, "DevAddr": _signed32(phy[1:5]), "FCtrl": phy[5],
            "FCnt": int.from_bytes(phy[6:8], "little"), "FOpts": phy[8:port_at].hex().upper(),
            "FPort": phy[port_at] if has_port else -1,
            "FRMPayload": phy[port_at + 1:len(phy) - 4].hex().upper() if has_port else "",
            "MIC": _signed32(phy[-4:])}, ""


class XtimeClock:
    """One local packet forwarder's 32-bit ``tmst`` counter as Basics Station ``xtime``.

    Bits 62..56 carry ``rctx`` (the gateway's index under its router), 55..48 a session byte
    (never 0) and 47..0 the counter extended across its 71.6-minute wrap. The wrap count
    comes from the receive times: the extended value must be within ``tolerance`` of the
    last one plus the wall-clock time between them, else the concentrator restarted and a
    new session begins (downlinks for the old one are refused, as a station does).
    """

    TOLERANCE_US: Final = 2_000_000  # plus 200 ppm of the gap: crystal drift and NTP slew

    def __init__(self, rctx: int, rng: random.Random | None = None) -> None:
        self.rctx = rctx & 0x7F
        self._rng = rng or random.Random()
        self.session = self._new_session(0)
        self._ref: tuple[int, int] | None = None  # (extended counter, received_us)
        self.restarts = 0

    def _new_session(self, old: int) -> int:
        s = old
        while s == old:
            s = self._rng.randrange(1, 256)
        return s

    def _xtime(self, ext: int) -> int:
        return (self.rctx << 56) | (self.session << 48) | (ext & _MASK48)

    def to_xtime(self, tmst: int, received_us: int) -> int:
        tmst &= 0xFFFFFFFF
        if self._ref is None:
            self._ref = (tmst, received_us)
            return self._xtime(tmst)
        ref_ext, ref_us = self._ref
        gap = received_us - ref_us
        expected = ref_ext + gap
        delta = (tmst - expected) & 0xFFFFFFFF
        if delta >= 1 << 31:
            delta -= 1 << 32
        if abs(delta) > self.TOLERANCE_US + abs(gap) // 5000:
            if gap < 0:  # a frame from before the last restart: session 0 matches no downlink
                return (self.rctx << 56) | (tmst & _MASK48)
            self.session = self._new_session(self.session)
            self.restarts += 1
            self._ref = (tmst, received_us)
            return self._xtime(tmst)
        ext = expected + delta
        if gap >= 0:
            self._ref = (ext, received_us)
        return self._xtime(max(ext, 0))

    def follow_step(self, step: Step) -> None:
        """The wall clock stepped: the reference receive time moves with it (when it was taken
        before the step), so the next frame is not "years later" or "years earlier"."""
        if self._ref is not None:
            self._ref = (self._ref[0], step.apply(self._ref[1]))

    def to_tmst(self, xtime: int) -> int | None:
        """The counter value for a downlink ``xtime``; None if it is from another session."""
        if (xtime >> 48) & 0xFF != self.session:
            return None
        return xtime & 0xFFFFFFFF


def id6(eui: int) -> str:
    """The ID6 form Basics Station sends its router id in (``b827:ebff:fe00:1``, ``::1``)."""
    g = [(eui >> s) & 0xFFFF for s in (48, 32, 16, 0)]
    if not g[0] and not g[1]:
        return f"::{g[3]:x}" if not g[2] else f"::{g[2]:x}:{g[3]:x}"
    if not g[2] and not g[3]:
        return f"{g[0]:x}::" if not g[1] else f"{g[0]:x}:{g[1]:x}::"
    if not g[1] and not g[2]:
        return f"{g[0]:x}::{g[3]:x}"
    return ":".join(f"{x:x}" for x in g)


def rctx_of(xtime: int) -> int:
    return (xtime >> 56) & 0x7F


@dataclass(frozen=True, slots=True)
class Attempt:
    """One way to send a dnmsg: the txpk, and what dntxed reports if it went out."""

    window: str  # "RX1", "RX2", "C", "B"
    txpk: dict[str, Any]
    dr: int
    freq_hz: int
    xtime: int


def _int(msg: Mapping[str, Any], key: str, lo: int, hi: int, default: int | None = None) -> int:
    v = msg.get(key, default)
    if v is None:
        raise ValueError(f"dnmsg.{key} is missing")
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ValueError(f"dnmsg.{key} {v!r} is not an integer in {lo}..{hi}")
    return v


def dnmsg_attempts(msg: Mapping[str, Any], config: RouterConfig | None, clock: XtimeClock | None,
                   ) -> list[Attempt]:
    """RX1 then RX2 (class A), or the one class B/C transmission; ValueError says why none."""
    drs = config.drs if config is not None else EU868_DRS
    pdu_hex = msg.get("pdu")
    if not isinstance(pdu_hex, str) or len(pdu_hex) > 2 * 255:
        raise ValueError("dnmsg.pdu must be a hex string of at most 255 bytes")
    try:
        pdu = binascii.unhexlify(pdu_hex)
    except (binascii.Error, ValueError):
        raise ValueError("dnmsg.pdu is not hex") from None
    dclass = _int(msg, "dC", 0, 2, 0)
    rx_delay = max(1, _int(msg, "RxDelay", 0, 15, 1))
    power = DEFAULT_TX_POWER
    if config is not None and config.max_eirp is not None:
        power = min(power, int(config.max_eirp))
    base = {"rfch": 0, "powe": power, "size": len(pdu), "data": base64.b64encode(pdu).decode("ascii"),
            "ncrc": True}
    windows: list[tuple[str, int, int, int]] = []  # (window, DR, Hz, µs after the uplink)
    if "RX1DR" in msg or "RX1Freq" in msg:
        windows.append(("RX1", _int(msg, "RX1DR", 0, 15), _int(msg, "RX1Freq", 1, 10**10), rx_delay * 10**6))
    if "RX2DR" in msg or "RX2Freq" in msg:
        windows.append(("RX2", _int(msg, "RX2DR", 0, 15), _int(msg, "RX2Freq", 1, 10**10),
                        (rx_delay + 1) * 10**6))
    if not windows:
        raise ValueError("dnmsg has neither RX1DR/RX1Freq nor RX2DR/RX2Freq")
    xtime = msg.get("xtime") or 0
    if not isinstance(xtime, int) or isinstance(xtime, bool) or xtime < 0:
        raise ValueError(f"dnmsg.xtime {xtime!r} is not a non-negative integer")
    out: list[Attempt] = []
    if dclass == 1:  # class B ping slot: GPS time, the forwarder needs a GPS fix
        gps = _int(msg, "gpstime", 1, 2**63)
        name, dr, hz, _ = windows[0]
        txpk = {**base, **dn_datr(dr, drs), "freq": hz / 1e6, "tmms": gps // 1000}
        return [Attempt("B", txpk, dr, hz, 0)]
    if xtime == 0:
        if dclass != 2:
            raise ValueError("dnmsg for a class A device without xtime: no uplink to answer")
        name, dr, hz, _ = windows[-1]  # class C without a reference: now, on RX2's channel
        return [Attempt("C", {**base, **dn_datr(dr, drs), "freq": hz / 1e6, "imme": True}, dr, hz, 0)]
    if clock is None:
        raise ValueError(f"dnmsg.xtime {xtime:#x}: rctx {rctx_of(xtime)} names no local gateway")
    for name, dr, hz, after in windows:
        tx_xtime = xtime + after
        tmst = clock.to_tmst(tx_xtime)
        if tmst is None:
            raise ValueError(f"dnmsg.xtime {xtime:#x} is from an earlier concentrator session "
                             "(restart); the uplink it answers is gone")
        out.append(Attempt(name, {**base, **dn_datr(dr, drs), "freq": hz / 1e6, "tmst": tmst}, dr, hz,
                           tx_xtime))
    return out
