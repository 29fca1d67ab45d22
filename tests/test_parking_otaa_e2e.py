"""OTAA edge decoding through the whole daemon: the join goes up to a network server and its
accept comes back down the gateway's real downlink path (LNS forwarder -> GWMP server ->
packet forwarder); the gateway derives the session keys from what it saw and decodes data.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from gateway import frames
from gateway.buffer import buffer_path
from gateway.cli.buffer import export_rows
from gateway.config import load_config_text
from gateway.frames import build as B
from gateway.frames import lorawan as L
from gateway.parking.encode import encode_status
from gateway.parking.registry import decoder_for
from gateway.pipeline import Gateway

# The concentrator's packet forwarder reports the gateway's own EUI, as on a real gateway.
GW = 0xB827EBFFFE0000A1
MODEL = "nwave/nps405"
JOIN_EUI = 0x70B3D57ED0000001
NET_ID = 0x000013

DEV_A = 0x70B3D57ED00A0001  # joins through this gateway
KEY_A = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
SPOT_A = "city:parking:spot:A1"
ADDR_A = 0x260B1A01

DEV_B = 0x70B3D57ED00B0002  # its join accept goes down through some other gateway
KEY_B = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
SPOT_B = "city:parking:spot:B7"
ADDR_B = 0x260B1B02


def _config(tmp_path: Path, lns_port: int) -> str:
    return f"""
[gateway]
eui = "{GW:016x}"
data_dir = "{tmp_path / 'data'}"

[buffer]
commit_interval = "20ms"

[[sources.gwmp]]
bind = "127.0.0.1:0"

[[forward.gwmp]]
name = "lns"
server = "127.0.0.1:{lns_port}"
start = "oldest"

# A data platform that is down: the parking records are owed to it, so they stay in the
# buffer (records every backend has are never written), where step 7 reads them.
[[forward.http]]
name = "platform"
url = "http://127.0.0.1:9/ingest"
kinds = ["parking"]
start = "oldest"

[[parking.devices]]
dev_eui = "{DEV_A:016x}"
model = "{MODEL}"
spot_id = "{SPOT_A}"
app_key = "{KEY_A.hex()}"

[[parking.devices]]
dev_eui = "{DEV_B:016x}"
model = "{MODEL}"
spot_id = "{SPOT_B}"
app_key = "{KEY_B.hex()}"

[web]
bind = "127.0.0.1:0"
open_read_only = true
"""


@dataclass
class NetworkServer(asyncio.DatagramProtocol):
    """A Semtech-UDP network server stand-in: acks, and answers join requests it owns.

    It verifies each join request's MIC with the AppKey and sends the join accept back as a
    PULL_RESP (RX1: 5 s after the request, same channel, inverted IQ), as a network server
    with a join server would. Devices not in ``answers`` get no accept from it.
    """

    answers: dict[int, tuple[bytes, int, int]]  # DevEUI -> (AppKey, DevAddr, JoinNonce)
    rxpk: list[dict[str, Any]] = field(default_factory=list)
    join_requests: list[tuple[int, int]] = field(default_factory=list)  # (DevEUI, DevNonce)
    pull_resp_tokens: list[int] = field(default_factory=list)
    tx_acks: list[frames.GwmpPacket] = field(default_factory=list)
    pull_addr: Any = None
    transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        pkt = frames.parse_gwmp(data)
        assert self.transport is not None
        if pkt.identifier == frames.PULL_DATA:
            self.pull_addr = addr
            self.transport.sendto(frames.encode_pull_ack(pkt.token, pkt.version), addr)
        elif pkt.identifier == frames.TX_ACK:
            self.tx_acks.append(pkt)
        elif pkt.identifier == frames.PUSH_DATA:
            self.transport.sendto(frames.encode_push_ack(pkt.token, pkt.version), addr)
            for rx in (pkt.body or {}).get("rxpk", []):
                self.rxpk.append(rx)
                self._maybe_join(rx)

    def _maybe_join(self, rx: dict[str, Any]) -> None:
        phy = base64.b64decode(rx["data"])
        if phy[0] >> 5 != 0:  # not a JoinRequest
            return
        dev_eui = int.from_bytes(phy[9:17], "little")
        dev_nonce = int.from_bytes(phy[17:19], "little")
        self.join_requests.append((dev_eui, dev_nonce))
        if dev_eui not in self.answers:
            return
        app_key, dev_addr, join_nonce = self.answers[dev_eui]
        assert L.join_request_mic(app_key, phy[:-4]) == phy[-4:], "join request MIC"
        accept = B.build_join_accept(app_key, join_nonce=join_nonce, net_id=NET_ID,
                                     dev_addr=dev_addr)
        txpk = {"imme": False, "tmst": (rx["tmst"] + 5_000_000) & 0xFFFFFFFF,
                "freq": rx["freq"], "rfch": 0, "powe": 14, "modu": "LORA",
                "datr": rx["datr"], "codr": "4/5", "ipol": True, "size": len(accept),
                "data": base64.b64encode(accept).decode()}
        token = 0x4A00 + len(self.pull_resp_tokens)
        self.pull_resp_tokens.append(token)
        assert self.pull_addr is not None, "the LNS forwarder sent no PULL_DATA yet"
        self.transport.sendto(frames.encode_pull_resp(token, txpk), self.pull_addr)  # type: ignore[union-attr]


class PacketForwarder:
    """A simulated Semtech packet forwarder: an uplink socket and a downlink socket."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.down = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for s in (self.up, self.down):
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
        self.tmst = 1_000_000
        self.token = 0

    def close(self) -> None:
        self.up.close()
        self.down.close()

    async def _recv(self, sock: socket.socket, ident: int, timeout: float = 5.0) -> frames.GwmpPacket:  # noqa: ASYNC109
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                data = await asyncio.wait_for(loop.sock_recv(sock, 65535), deadline - loop.time())
            except TimeoutError:
                raise AssertionError(
                    f"no GWMP identifier {ident:#04x} from the gateway within {timeout}s") from None
            pkt = frames.parse_gwmp(data)
            if pkt.identifier == ident:
                return pkt

    async def pull(self) -> None:
        self.token += 1
        await asyncio.get_running_loop().sock_sendto(
            self.down, frames.encode_pull_data(self.token, GW), self.server)
        await self._recv(self.down, frames.PULL_ACK)

    async def push(self, phy: bytes) -> None:
        self.token += 1
        self.tmst += 2_000_000
        rxpk = {"tmst": self.tmst, "chan": 2, "rfch": 0, "freq": 868.5, "stat": 1,
                "modu": "LORA", "datr": "SF9BW125", "codr": "4/5", "rssi": -97, "lsnr": 6.5,
                "size": len(phy), "data": base64.b64encode(phy).decode()}
        await asyncio.get_running_loop().sock_sendto(
            self.up, frames.encode_push_data(self.token, GW, [rxpk]), self.server)
        ack = await self._recv(self.up, frames.PUSH_ACK)
        assert ack.token == self.token

    async def downlink(self) -> frames.GwmpPacket:
        """Wait for a PULL_RESP on the downlink socket and confirm it with a TX_ACK."""
        resp = await self._recv(self.down, frames.PULL_RESP)
        await asyncio.get_running_loop().sock_sendto(
            self.down, frames.encode_tx_ack(resp.token, GW, {"error": "NONE"}), self.server)
        return resp


async def _until(cond: Callable[[], bool], what: str, timeout: float = 5.0) -> None:  # noqa: ASYNC109
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, f"{what}: not within {timeout}s"
        await asyncio.sleep(0.01)


async def _status_text(gw: Gateway) -> str:
    host, port = gw.web.bound_address
    async with aiohttp.ClientSession() as s, s.get(f"http://{host}:{port}/api/status") as r:
        assert r.status == 200
        return await r.text()


def _uplink(keys: L.SessionKeys10, dev_addr: int, fcnt: int, occupied: bool) -> tuple[bytes, dict[str, Any]]:
    """(PHYPayload, what the codec makes of it) of one NPS405 occupancy change."""
    fport, payload = encode_status(MODEL, occupied, minutes=12 + fcnt)
    phy = B.build_data_uplink(dev_addr=dev_addr, fcnt=fcnt, fport=fport, payload=payload,
                              nwk_s_key=keys.nwk_s_key, app_s_key=keys.app_s_key)
    # Through JSON: how it comes back out of the buffer export.
    return phy, json.loads(json.dumps(decoder_for(MODEL)(fport, payload)))


def _parking_rows(data_dir: Path) -> list[dict[str, Any]]:
    return [row["body"] for row in export_rows(buffer_path(data_dir), "parking")]


async def test_otaa_join_through_the_downlink_path_then_frames_decoded_at_the_edge(
    tmp_path: Path,
) -> None:
    loop = asyncio.get_running_loop()
    ns_transport, ns = await loop.create_datagram_endpoint(
        lambda: NetworkServer(answers={DEV_A: (KEY_A, ADDR_A, 0x00C0DE)}),
        local_addr=("127.0.0.1", 0))
    gw = Gateway(load_config_text(_config(tmp_path, ns_transport.get_extra_info("sockname")[1])))
    task = asyncio.create_task(gw.serve(install_signals=False))
    pf: PacketForwarder | None = None
    t_start = time.time()
    try:
        await asyncio.wait_for(gw.supervisor.ready.wait(), 10)
        pf = PacketForwarder(gw.sources[0].bound_address)
        await pf.pull()  # the gateway now knows where this forwarder listens for downlinks
        await _until(lambda: ns.pull_addr is not None, "LNS forwarder's PULL_DATA")

        # 1. Join request up, through the gateway to the network server.
        nonce_a = 0x1F3A
        await pf.push(B.build_join_request(KEY_A, join_eui=JOIN_EUI, dev_eui=DEV_A,
                                           dev_nonce=nonce_a))
        # 2. The accept comes down: relayed by the LNS forwarder through the GWMP server.
        resp = await pf.downlink()
        accept = base64.b64decode(resp.body["txpk"]["data"])
        assert accept[0] == 0x20 and len(accept) == 17, "a 1.0 JoinAccept reached the forwarder"
        await _until(lambda: len(ns.tx_acks) == 1, "TX_ACK relayed up to the network server")
        up = ns.tx_acks[0]
        assert (up.token, up.gateway_eui, up.body["txpk_ack"]["error"]) == \
            (ns.pull_resp_tokens[0], GW, "NONE")
        pending = gw.parking.health()["devices"][f"{DEV_A:016x}"]
        assert (pending["join_requests"], pending["join_accepts"], pending["session_pending"]) \
            == (1, 1, True), "the gateway watched both halves of the join"

        # 3. The device derives its keys as the spec says; the gateway must have done the same.
        keys_a = L.derive_session_keys_10(KEY_A, join_nonce=0x00C0DE, net_id=NET_ID,
                                          dev_nonce=nonce_a)
        phy0, decoded0 = _uplink(keys_a, ADDR_A, 0, occupied=True)
        await pf.push(phy0)
        assert gw.parking.spots()[SPOT_A]["status"] == "occupied"
        phy1, decoded1 = _uplink(keys_a, ADDR_A, 1, occupied=False)
        await pf.push(phy1)
        assert gw.parking.spots()[SPOT_A]["status"] == "free"

        # 4. A replay of the 'occupied' frame and a tampered next frame change nothing.
        await pf.push(phy0)
        tampered = bytearray(_uplink(keys_a, ADDR_A, 2, occupied=True)[0])
        tampered[9] ^= 0x01  # inside the encrypted FRMPayload: only the MIC can notice
        await pf.push(bytes(tampered))
        assert gw.parking.spots()[SPOT_A]["status"] == "free"
        dev_a = gw.parking.health()["devices"][f"{DEV_A:016x}"]
        assert dev_a["session_pending"] is False and dev_a["dev_addr"] == f"{ADDR_A:08x}"
        assert (dev_a["sessions"], dev_a["decoded"], dev_a["replays"], dev_a["mic_failures"],
                dev_a["fcnt_up"]) == (1, 2, 1, 1, 1)

        # 5. Device B joins too, but its accept goes down through another gateway: frames
        # under its new session cannot be verified here and must not be guessed at.
        nonce_b = 0x0777
        await pf.push(B.build_join_request(KEY_B, join_eui=JOIN_EUI, dev_eui=DEV_B,
                                           dev_nonce=nonce_b))
        keys_b = L.derive_session_keys_10(KEY_B, join_nonce=0x000042, net_id=NET_ID,
                                          dev_nonce=nonce_b)
        unknown_before = gw.parking.health()["unknown_device"]
        for fcnt, occupied in ((0, True), (1, False)):
            await pf.push(_uplink(keys_b, ADDR_B, fcnt, occupied)[0])
        health = gw.parking.health()
        dev_b = health["devices"][f"{DEV_B:016x}"]
        assert (dev_b["join_requests"], dev_b["join_accepts"], dev_b["decoded"]) == (1, 0, 0)
        assert health["unknown_device"] - unknown_before == 2, "undecodable frames are counted"
        assert gw.parking.spots()[SPOT_B]["status"] == "unknown"

        # Every frame still went to the network server untouched (it decides, not us).
        await _until(lambda: len(ns.rxpk) == 8, "all 8 uplinks at the network server")
        sent = [base64.b64decode(r["data"]) for r in ns.rxpk]
        assert sent[1:5] == [phy0, phy1, phy0, bytes(tampered)]
        assert [d for d, _ in ns.join_requests] == [DEV_A, DEV_B]

        # 6. The status page shows the spot state, the counters, and no key at all.
        text = await _status_text(gw)
        status = json.loads(text)
        assert status["parking"]["spots"][SPOT_A]["status"] == "free"
        assert status["parking"]["spots"][SPOT_A]["device"] == f"{DEV_A:016x}"
        assert status["parking"]["spots"][SPOT_B]["status"] == "unknown"
        shown = status["parking"]["devices"]["devices"][f"{DEV_A:016x}"]
        assert (shown["replays"], shown["mic_failures"]) == (1, 1)
        secrets = [KEY_A, KEY_B, keys_a.nwk_s_key, keys_a.app_s_key,
                   keys_b.nwk_s_key, keys_b.app_s_key]
        for key in secrets:
            for form in (key.hex(), key.hex().upper(), base64.b64encode(key).decode()):
                assert form not in text, "key material in /api/status"

        # 7. The buffer holds one parking record per state change, normalised, data intact.
        await _until(lambda: len(_parking_rows(tmp_path / "data")) >= 2,
                     "parking records committed to the buffer")
        rows = _parking_rows(tmp_path / "data")
        assert [(r["spot_id"], r["status"], r["device"]) for r in rows] == [
            (SPOT_A, "occupied", f"{DEV_A:016x}"), (SPOT_A, "free", f"{DEV_A:016x}")]
        assert [r["data"] for r in rows] == [decoded0, decoded1]
        # ... and it is the real decode of what the sensor sent, not an empty shell
        assert [(r["data"]["data"]["occupied"], r["data"]["data"]["previous_state_duration"])
                for r in rows] == [(True, 12), (False, 13)]
        for r in rows:
            observed = datetime.fromisoformat(r["observed_at"].replace("Z", "+00:00"))
            assert t_start - 1 <= observed.timestamp() <= time.time() + 1
            assert r["rssi"] == -97 and r["snr"] == 6.5
    finally:
        if pf is not None:
            pf.close()
        gw.supervisor.request_stop()
        await asyncio.wait_for(task, 20)
        ns_transport.close()
