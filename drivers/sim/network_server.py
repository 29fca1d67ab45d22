"""The demo's network server: answers a gateway's Semtech UDP traffic and its devices' joins.

`schwebe demo` has no real network server, yet half its simulated sensors use OTAA. This
stand-in acks PUSH_DATA and PULL_DATA like any network server and, for the devices whose
AppKey it holds (a join server's job), answers each genuine JoinRequest with a JoinAccept as a
PULL_RESP. That accept travels the gateway's real downlink path (duty cycle, TX_ACK) to the
simulated packet forwarder, and edge parking learns the session from it as it would in the
field. Demo and tests only: it keeps no state worth keeping and verifies nothing else.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
from dataclasses import dataclass
from typing import Any, Final, cast

from gateway import frames
from gateway.frames import build, lorawan

log = logging.getLogger("drivers.sim.network_server")

# EU868 RX2 (869.525 MHz, the 10 % sub-band): a demo with a hundred joins at once stays inside
# the duty cycle there, where RX1 on the uplink's 1 % channel would not.
RX2_FREQ: Final = 869.525
RX2_DATR: Final = "SF9BW125"
JOIN_ACCEPT_DELAY_US: Final = 6_000_000  # JOIN_ACCEPT_DELAY2


@dataclass(slots=True)
class NetworkServerCounters:
    push_data: int = 0
    join_requests: int = 0
    join_accepts: int = 0
    tx_acks: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"push_data": self.push_data, "join_requests": self.join_requests,
                "join_accepts": self.join_accepts, "tx_acks": self.tx_acks}


class SimNetworkServer(asyncio.DatagramProtocol):
    """A Semtech-UDP network server stand-in with a join server for ``app_keys`` (DevEUI -> key)."""

    name = "sim:network-server"

    def __init__(self, bind: tuple[str, int], app_keys: dict[int, bytes], *, net_id: int = 0,
                 seed: int = 1) -> None:
        self.bind = bind
        self.app_keys = app_keys
        self.net_id = net_id
        self._rng = random.Random(seed)
        self._pull_addr: Any = None
        self._transport: asyncio.DatagramTransport | None = None
        self._token = 0
        self.counters = NetworkServerCounters()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=self.bind)

    async def run(self) -> None:
        await asyncio.Event().wait()

    async def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        assert self._transport is not None
        try:
            pkt = frames.parse_gwmp(data)
        except frames.FrameError:
            return
        if pkt.identifier == frames.PULL_DATA:
            self._pull_addr = addr
            self._transport.sendto(frames.encode_pull_ack(pkt.token, pkt.version), addr)
        elif pkt.identifier == frames.TX_ACK:
            self.counters.tx_acks += 1
        elif pkt.identifier == frames.PUSH_DATA:
            self.counters.push_data += 1
            self._transport.sendto(frames.encode_push_ack(pkt.token, pkt.version), addr)
            for rx in (pkt.body or {}).get("rxpk", ()):
                if isinstance(rx, dict):
                    self._maybe_join(rx)

    def _maybe_join(self, rx: dict[str, Any]) -> None:
        try:
            phy = frames.b64decode_tolerant(rx["data"])
        except (frames.FrameError, KeyError, TypeError):
            return
        if len(phy) != 23 or phy[0] >> 5 != 0:  # not a JoinRequest
            return
        self.counters.join_requests += 1
        dev_eui = int.from_bytes(phy[9:17], "little")
        app_key = self.app_keys.get(dev_eui)
        if app_key is None or lorawan.join_request_mic(app_key, phy[:-4]) != phy[-4:]:
            return
        if self._pull_addr is None or self._transport is None:
            return  # no downlink path yet: the device asks again
        dev_addr = (self.net_id & 0x7F) << 25 | self._rng.randrange(1, 1 << 25)
        accept = build.build_join_accept(app_key, join_nonce=self._rng.randrange(1 << 24),
                                         net_id=self.net_id, dev_addr=dev_addr)
        tmst = rx.get("tmst")
        txpk: dict[str, Any] = {
            "imme": not isinstance(tmst, int), "freq": RX2_FREQ, "rfch": 0, "powe": 14,
            "modu": "LORA", "datr": RX2_DATR, "codr": "4/5", "ipol": True,
            "size": len(accept), "data": base64.b64encode(accept).decode(),
        }
        if isinstance(tmst, int):
            txpk["tmst"] = (tmst + JOIN_ACCEPT_DELAY_US) & 0xFFFFFFFF
        self._token = (self._token + 1) & 0xFFFF
        self._transport.sendto(frames.encode_pull_resp(self._token, txpk), self._pull_addr)
        self.counters.join_accepts += 1
