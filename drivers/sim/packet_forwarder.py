"""A stand-in for ``lora_pkt_fwd`` with a car park of simulated sensors behind it.

Speaks GWMP v2 from two UDP sockets (uplink, downlink) like the real forwarder: PUSH_DATA
with plausible rxpk and stat, PULL_DATA keepalives, TX_ACK for every PULL_RESP. Frames are
real LoRaWAN 1.0 (ABP or OTAA, encrypted, MIC'd) carrying each model's real payload format.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from drivers.dutycycle import lora_time_on_air
from gateway import frames
from gateway.frames import build as lorawan_build
from gateway.frames import lorawan
from gateway.parking.encode import encode_status
from gateway.parking.registry import list_models

log = logging.getLogger(__name__)

#: EU868 uplink channels of a typical 8-channel lora_pkt_fwd config: (freq MHz, rfch).
CHANNELS: Final[tuple[tuple[float, int], ...]] = (
    (868.1, 1),
    (868.3, 1),
    (868.5, 1),
    (867.1, 0),
    (867.3, 0),
    (867.5, 0),
    (867.7, 0),
    (867.9, 0),
)
#: Where a settled ADR puts a city's sensors: mostly SF7, a tail to SF12 (cumulative weights).
SF_WEIGHTS: Final[tuple[tuple[int, float], ...]] = (
    (7, 0.5),
    (8, 0.15),
    (9, 0.12),
    (10, 0.1),
    (11, 0.07),
    (12, 0.06),
)
#: A device may use 1 % of the time on the 868.0-868.6 MHz and 865-868 MHz sub-bands.
DEVICE_DUTY: Final = 0.01
#: NetID 0 (experimental): what a private network server hands out.
NET_ID: Final = 0x000000
#: Typical received level (dBm) of a sensor that ADR settled on each spreading factor.
_RSSI_BY_SF: Final[dict[int, tuple[float, float]]] = {
    7: (-100.0, -45.0),
    8: (-105.0, -98.0),
    9: (-109.0, -103.0),
    10: (-112.0, -107.0),
    11: (-115.0, -110.0),
    12: (-118.0, -113.0),
}
JOIN_EUI: Final = 0x70B3D57ED0000000
GATEWAY_POSITION: Final = {"lati": 51.25624, "long": 7.15076, "alti": 160}


@dataclass(slots=True)
class Device:
    """One simulated parking sensor. Keys are random per seed; never log them."""

    dev_eui: int
    model: str
    activation: str  # "ABP" or "OTAA"
    sf: int
    base_rssi: float
    app_key: bytes | None = None
    dev_addr: int | None = None
    nwk_s_key: bytes | None = None
    app_s_key: bytes | None = None
    dev_nonce: int = 0
    fcnt: int = 0
    occupied: bool = False
    next_free: float = 0.0  # monotonic time when its duty cycle lets it talk again
    uplinks: int = 0
    joins: int = 0

    @property
    def joined(self) -> bool:
        return self.dev_addr is not None and self.nwk_s_key is not None

    def describe(self) -> dict[str, Any]:
        """Identity and keys in the config's own spelling, for tests and the demo's config."""
        out: dict[str, Any] = {
            "dev_eui": f"{self.dev_eui:016x}",
            "model": self.model,
            "activation": self.activation,
            "dev_addr": None if self.dev_addr is None else f"{self.dev_addr:08x}",
        }
        if self.activation == "OTAA":
            assert self.app_key is not None
            out["app_key"] = self.app_key.hex()
            out["join_eui"] = f"{JOIN_EUI:016x}"
        if self.nwk_s_key is not None and self.app_s_key is not None:
            out["nwk_s_key"] = self.nwk_s_key.hex()
            out["app_s_key"] = self.app_s_key.hex()
        return out


@dataclass(slots=True)
class SimulatorCounters:
    push_data: int = 0
    pull_data: int = 0
    tx_ack: int = 0
    rxpk: int = 0
    uplinks: int = 0
    joins: int = 0
    stats: int = 0
    push_acked: int = 0
    pull_acked: int = 0
    downlinks: int = 0
    join_accepts: int = 0
    held_by_duty_cycle: int = 0
    unexpected: int = 0
    per_sf: dict[int, int] = field(default_factory=dict)

    @property
    def datagrams(self) -> int:
        return self.push_data + self.pull_data + self.tx_ack

    @property
    def sent(self) -> int:
        return self.rxpk

    @property
    def acked(self) -> int:
        return self.push_acked

    def as_dict(self) -> dict[str, Any]:
        return {
            "datagrams": self.datagrams,
            "push_data": self.push_data,
            "pull_data": self.pull_data,
            "tx_ack": self.tx_ack,
            "rxpk": self.rxpk,
            "uplinks": self.uplinks,
            "joins": self.joins,
            "stats": self.stats,
            "push_acked": self.push_acked,
            "pull_acked": self.pull_acked,
            "downlinks": self.downlinks,
            "join_accepts": self.join_accepts,
            "held_by_duty_cycle": self.held_by_duty_cycle,
            "unexpected": self.unexpected,
            "per_sf": dict(sorted(self.per_sf.items())),
        }


class _Socket(asyncio.DatagramProtocol):
    def __init__(self, sim: Simulator, down: bool) -> None:
        self._sim = sim
        self._down = down

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._sim._received(data, self._down)

    def error_received(self, exc: Exception) -> None:
        # The server is not up yet (ICMP port unreachable): the forwarder keeps trying too.
        log.debug("simulator socket: %s", exc)


class Simulator:
    """``sensors`` simulated devices sending ``rate`` uplinks per second in total to ``target``."""

    def __init__(
        self,
        target: tuple[str, int],
        *,
        sensors: int = 50,
        rate: float = 1.0,
        gateway_eui: int = 0xB827EBFFFE000001,
        seed: int = 1,
        models: Sequence[str] | None = None,
        otaa_share: float = 0.5,
        occupancy_change_share: float = 0.3,
        max_rxpk_per_datagram: int = 8,
        stat_interval: float = 30.0,
        keepalive_interval: float = 10.0,
        device_duty_cycle: bool = True,
        local_join: bool = True,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        tick: float = 0.01,
    ) -> None:
        if sensors < 1:
            raise ValueError(f"--sensors must be at least 1, got {sensors}")
        if rate <= 0:
            raise ValueError(f"--rate must be positive uplinks per second, got {rate}")
        if not 1 <= max_rxpk_per_datagram <= frames.MAX_RXPK:
            raise ValueError(f"max_rxpk_per_datagram must be 1..{frames.MAX_RXPK}")
        self.target = target  # settable until run(): the demo learns the server's port late
        self._rate = rate
        self._eui = gateway_eui
        self._rng = random.Random(seed)
        self._otaa_share = otaa_share
        self._change_share = occupancy_change_share
        self._batch = max_rxpk_per_datagram
        self._stat_interval = stat_interval
        self._keepalive = keepalive_interval
        self._device_duty = device_duty_cycle
        self._local_join = local_join
        self._clock = clock
        self._wall = wall_clock
        self._tick = tick
        all_models = list_models()
        chosen = list(models) if models else all_models
        unknown = [m for m in chosen if m not in all_models]
        if unknown:
            raise ValueError(
                f"unknown sensor model(s) {', '.join(unknown)}; known: {', '.join(all_models)}"
            )
        self._devices = [self._make_device(i, chosen) for i in range(sensors)]
        self._by_addr: dict[int, Device] = {}
        for d in self._devices:
            if d.dev_addr is not None:
                self._by_addr[d.dev_addr] = d
        self.counters = SimulatorCounters()
        self._push_tokens: set[int] = set()
        self._pull_tokens: set[int] = set()
        self._up: asyncio.DatagramTransport | None = None
        self._down: asyncio.DatagramTransport | None = None
        self._drained = asyncio.Event()
        self._tmst_base = self._rng.randrange(1 << 32)  # the concentrator counter starts anywhere
        self._t0 = 0.0
        self._since_stat = {"rxnb": 0, "rxok": 0, "rxfw": 0, "dwnb": 0, "txnb": 0, "push": 0}

    # ------------------------------------------------------------------ devices

    def _make_device(self, index: int, models: Sequence[str]) -> Device:
        rng = self._rng
        # ADR puts weak links on high spreading factors: pick the SF, then a signal level
        # that fits it.
        r = rng.random()
        acc = 0.0
        sf = 12
        for candidate, weight in SF_WEIGHTS:
            acc += weight
            if r < acc:
                sf = candidate
                break
        lo, hi = _RSSI_BY_SF[sf]
        base_rssi = rng.uniform(lo, hi)
        dev = Device(
            dev_eui=0x70B3D5E75E000000 | (index & 0xFFFFFF),
            model=models[index % len(models)],
            activation="OTAA" if rng.random() < self._otaa_share else "ABP",
            sf=sf,
            base_rssi=base_rssi,
            occupied=rng.random() < 0.5,
        )
        if dev.activation == "ABP":
            dev.dev_addr = 0x26000000 | rng.randrange(1 << 24)
            dev.nwk_s_key = rng.randbytes(16)
            dev.app_s_key = rng.randbytes(16)
        else:
            dev.app_key = rng.randbytes(16)
            dev.dev_nonce = rng.randrange(1 << 12)
        return dev

    def legal_rate(self) -> float:
        """Uplinks/s the devices may send in total under their 1 % duty cycle (~20-byte frames)."""
        return sum(DEVICE_DUTY / lora_time_on_air(20, d.sf, 125_000) for d in self._devices)

    def devices(self) -> list[dict[str, Any]]:
        """Every device's identity and keys (ABP session keys, OTAA AppKey and current session)."""
        return [d.describe() for d in self._devices]

    # ------------------------------------------------------------------ frames

    def _frame(self, dev: Device, now: float) -> bytes:
        if dev.activation == "OTAA" and not dev.joined:
            assert dev.app_key is not None
            dev.dev_nonce = (dev.dev_nonce + 1) & 0xFFFF
            dev.joins += 1
            self.counters.joins += 1
            phy = lorawan_build.build_join_request(
                dev.app_key, join_eui=JOIN_EUI, dev_eui=dev.dev_eui, dev_nonce=dev.dev_nonce
            )
            # Without a network server that answers joins (tests, a bare server), accept
            # locally as one would; a real join-accept arriving later replaces it. With one
            # (local_join=False), the device waits for it and asks again when next due.
            if self._local_join:
                self._accept_locally(dev)
            return phy
        heartbeat = self._rng.random() >= self._change_share
        if not heartbeat:
            dev.occupied = not dev.occupied
        fport, payload = encode_status(
            dev.model,
            dev.occupied,
            heartbeat=heartbeat,
            minutes=self._rng.randrange(1, 600),
            battery_v=round(self._rng.uniform(3.3, 3.65), 2),
            battery_pct=self._rng.randrange(40, 100),
            temperature_c=self._rng.randrange(-5, 35),
            frame_counter=dev.fcnt,
        )
        assert dev.dev_addr is not None and dev.nwk_s_key is not None and dev.app_s_key is not None
        phy = lorawan_build.build_data_uplink(
            dev_addr=dev.dev_addr,
            fcnt=dev.fcnt,
            fport=fport,
            payload=payload,
            nwk_s_key=dev.nwk_s_key,
            app_s_key=dev.app_s_key,
        )
        dev.fcnt += 1
        dev.uplinks += 1
        self.counters.uplinks += 1
        return phy

    def _accept_locally(self, dev: Device) -> None:
        assert dev.app_key is not None
        join_nonce = self._rng.randrange(1 << 24)
        keys = lorawan.derive_session_keys_10(
            dev.app_key, join_nonce=join_nonce, net_id=NET_ID, dev_nonce=dev.dev_nonce
        )
        self._set_session(dev, 0x00000000 | self._rng.randrange(1, 1 << 25), keys)

    def _set_session(self, dev: Device, dev_addr: int, keys: lorawan.SessionKeys10) -> None:
        if dev.dev_addr is not None:
            self._by_addr.pop(dev.dev_addr, None)
        dev.dev_addr = dev_addr
        dev.nwk_s_key = keys.nwk_s_key
        dev.app_s_key = keys.app_s_key
        dev.fcnt = 0
        self._by_addr[dev_addr] = dev

    def _rxpk(self, dev: Device, phy: bytes, now: float) -> dict[str, Any]:
        rng = self._rng
        freq, rfch = CHANNELS[rng.randrange(len(CHANNELS))]
        chan = CHANNELS.index((freq, rfch))
        rssi = max(-120.0, min(-40.0, rng.gauss(dev.base_rssi, 3.0)))
        # SNR follows the margin over the noise floor and saturates near +10 dB.
        lsnr = max(-15.0, min(10.0, (rssi + 110.0) * 0.6 + rng.gauss(0.0, 1.5)))
        elapsed_us = int((now - self._t0) * 1e6)
        stamp = datetime.fromtimestamp(self._wall(), UTC)
        return {
            "time": stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "tmst": (self._tmst_base + elapsed_us) & 0xFFFFFFFF,
            "chan": chan,
            "rfch": rfch,
            "freq": freq,
            "stat": 1,
            "modu": "LORA",
            "datr": f"SF{dev.sf}BW125",
            "codr": "4/5",
            "rssi": round(rssi),
            "rssis": round(rssi - rng.uniform(0, 2)),
            "lsnr": round(lsnr, 1),
            "foff": rng.randrange(-2000, 2000),
            "size": len(phy),
            "data": base64.b64encode(phy).decode("ascii"),
        }

    def _due_device(self, now: float) -> Device | None:
        # A few draws: at high load most devices are still in their off-time.
        for _ in range(8):
            dev = self._devices[self._rng.randrange(len(self._devices))]
            if not self._device_duty or dev.next_free <= now:
                return dev
        return None

    # ------------------------------------------------------------------ network

    def _token(self, outstanding: set[int]) -> int:
        token = self._rng.randrange(1 << 16)
        outstanding.add(token)
        if len(outstanding) > 4096:
            # Tokens of datagrams the server never answered: forget the oldest guesswork.
            outstanding.clear()
            outstanding.add(token)
        return token

    def _send_push(self, rxpk: list[dict[str, Any]] | None, stat: dict[str, Any] | None) -> None:
        assert self._up is not None
        token = self._token(self._push_tokens)
        self._up.sendto(frames.encode_push_data(token, self._eui, rxpk, stat))
        self.counters.push_data += 1
        self._since_stat["push"] += 1

    def _send_pull(self) -> None:
        assert self._down is not None
        self._down.sendto(frames.encode_pull_data(self._token(self._pull_tokens), self._eui))
        self.counters.pull_data += 1

    def _received(self, data: bytes, down: bool) -> None:
        try:
            pkt = frames.parse_gwmp(data)
        except frames.FrameError:
            self.counters.unexpected += 1
            return
        if pkt.identifier == frames.PUSH_ACK and pkt.token in self._push_tokens:
            self._push_tokens.discard(pkt.token)
            self.counters.push_acked += 1
            if not self._push_tokens:
                self._drained.set()
            self._since_stat["ack"] = self._since_stat.get("ack", 0) + 1
        elif pkt.identifier == frames.PULL_ACK and pkt.token in self._pull_tokens:
            self._pull_tokens.discard(pkt.token)
            self.counters.pull_acked += 1
        elif pkt.identifier == frames.PULL_RESP and down:
            self._downlink(pkt)
        else:
            self.counters.unexpected += 1

    def _downlink(self, pkt: frames.GwmpPacket) -> None:
        assert self._down is not None
        self.counters.downlinks += 1
        self._since_stat["dwnb"] += 1
        txpk = (pkt.body or {}).get("txpk")
        error = "NONE"
        if not isinstance(txpk, dict):
            error = "TX_FREQ"  # what the forwarder answers a txpk it cannot use
        else:
            self._since_stat["txnb"] += 1
            self._maybe_join_accept(txpk)
        self._down.sendto(frames.encode_tx_ack(pkt.token, self._eui, {"error": error}))
        self.counters.tx_ack += 1

    def _maybe_join_accept(self, txpk: dict[str, Any]) -> None:
        data = txpk.get("data")
        if not isinstance(data, str):
            return
        try:
            phy = frames.b64decode_tolerant(data)
        except frames.FrameError:
            return
        if len(phy) not in (17, 33) or phy[0] >> 5 != 1:
            return
        for dev in self._devices:
            if dev.activation != "OTAA" or dev.app_key is None:
                continue
            plain = lorawan.decrypt_join_accept(dev.app_key, phy[1:])
            body, mic = plain[:-4], plain[-4:]
            if lorawan.join_accept_mic_10(dev.app_key, phy[:1] + body) != mic:
                continue
            join_nonce = int.from_bytes(body[0:3], "little")
            net_id = int.from_bytes(body[3:6], "little")
            dev_addr = int.from_bytes(body[6:10], "little")
            keys = lorawan.derive_session_keys_10(
                dev.app_key, join_nonce=join_nonce, net_id=net_id, dev_nonce=dev.dev_nonce
            )
            self._set_session(dev, dev_addr, keys)
            self.counters.join_accepts += 1
            return

    def _stat(self) -> dict[str, Any]:
        s = self._since_stat
        push = s["push"]
        acked = s.get("ack", 0)
        stat = {
            "time": datetime.fromtimestamp(self._wall(), UTC).strftime("%Y-%m-%d %H:%M:%S GMT"),
            **GATEWAY_POSITION,
            "rxnb": s["rxnb"],
            "rxok": s["rxok"],
            "rxfw": s["rxfw"],
            "ackr": round(100.0 * acked / push, 1) if push else 0.0,
            "dwnb": s["dwnb"],
            "txnb": s["txnb"],
            "temp": round(self._rng.uniform(30.0, 45.0), 1),
        }
        self._since_stat = {"rxnb": 0, "rxok": 0, "rxfw": 0, "dwnb": 0, "txnb": 0, "push": 0}
        return stat

    # ------------------------------------------------------------------ main loop

    async def run(self, duration: float | None = None) -> SimulatorCounters:
        """Send until ``duration`` seconds have passed (forever when None), then wait briefly for acks."""
        loop = asyncio.get_running_loop()
        up_t, _ = await loop.create_datagram_endpoint(
            lambda: _Socket(self, down=False), remote_addr=self.target
        )
        down_t, _ = await loop.create_datagram_endpoint(
            lambda: _Socket(self, down=True), remote_addr=self.target
        )
        self._up, self._down = up_t, down_t
        if self._device_duty and self._rate > 0.8 * self.legal_rate():
            log.warning(
                "simulator: %d sensors may legally send about %.1f uplinks/s in total "
                "(1 %% duty cycle each); asked for %.1f/s, so fewer will go out: "
                "add sensors or switch the per-device duty cycle off",
                len(self._devices),
                self.legal_rate(),
                self._rate,
            )
        self._drained = asyncio.Event()
        try:
            await self._loop(duration)
            # Acks in flight: a real forwarder would not wait, but a summary should be whole.
            if self._push_tokens:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._drained.wait(), 1.0)
        finally:
            self._up.close()
            self._down.close()
        return self.counters

    async def _loop(self, duration: float | None) -> None:
        clock = self._clock
        self._t0 = start = clock()
        end = None if duration is None else start + duration
        next_arrival = start + self._rng.expovariate(self._rate)
        next_stat = start + self._stat_interval
        next_pull = start
        pending: list[dict[str, Any]] = []
        while True:
            now = clock()
            if end is not None and now >= end:
                break
            if now >= next_pull:
                self._send_pull()
                next_pull += self._keepalive
            limit = now if end is None else min(now, end)
            while next_arrival <= limit:
                dev = self._due_device(next_arrival)
                next_arrival += self._rng.expovariate(self._rate)
                if dev is None:
                    self.counters.held_by_duty_cycle += 1
                    continue
                phy = self._frame(dev, now)
                airtime = lora_time_on_air(len(phy), dev.sf, 125_000)
                dev.next_free = now + airtime / DEVICE_DUTY
                pending.append(self._rxpk(dev, phy, now))
                self.counters.rxpk += 1
                self.counters.per_sf[dev.sf] = self.counters.per_sf.get(dev.sf, 0) + 1
                for key in ("rxnb", "rxok", "rxfw"):
                    self._since_stat[key] += 1
                if len(pending) >= self._batch:
                    self._send_push(pending, None)
                    pending = []
            stat = None
            if now >= next_stat:
                stat = self._stat()
                self.counters.stats += 1
                next_stat += self._stat_interval
            if pending or stat is not None:
                self._send_push(pending or None, stat)
                pending = []
            await asyncio.sleep(self._tick)
