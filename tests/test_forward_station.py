"""Basics Station forwarder against a stand-in LNS (tests/helpers/station_lns.py) over real
websockets and TLS, with a real GwmpServer and a simulated packet forwarder for downlinks."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import socket
from pathlib import Path
from typing import Any

import pytest

from drivers.dutycycle import DutyCycleRefused, GatewayDutyCycles, eu868_bands
from drivers.gwmp_server import GwmpServer
from gateway import frames
from gateway.buffer import Buffer
from gateway.config import ConfigError, StationForward, load_config_text
from gateway.forward.base import DeliveryLoop, ForwarderError
from gateway.forward.registry import build_forwarder
from gateway.forward.station import StationForwarder
from gateway.records import make_record, now_us
from tests.helpers.station_lns import EU868_ROUTER_CONFIG, Pki, StationLns

LOCAL = 0xB827EBFFFE000001
GATEWAY = 0x0016C001FF000001
# An unconfirmed data uplink: DevAddr 26011234 (NetID 000013), FCtrl ADR + 1 FOpts byte,
# FCnt 258, FOpts 02 (LinkCheckReq), FPort 1, FRMPayload CAFE, MIC bytes 01 02 03 84.
UPDF = bytes.fromhex("40341201268102010201CAFE01020384")
UPDF_FIELDS = {"msgtype": "updf", "MHdr": 0x40, "DevAddr": 0x26011234, "FCtrl": 0x81, "FCnt": 258,
               "FOpts": "02", "FPort": 1, "FRMPayload": "CAFE", "MIC": 0x84030201 - 2**32}
# No FPort, no payload: FPort -1, FRMPayload "" (DevAddr 0x80000001 is negative as int32).
UPDF_NOPORT = bytes.fromhex("400100008000050011223344")
# Join request: JoinEUI 70-B3-D5-7E-D0-00-00-01, DevEUI 00-04-A3-0B-00-1A-2B-3C, DevNonce 0x1234.
JREQ = b"\x00" + bytes.fromhex("010000D07ED5B370") + bytes.fromhex("3C2B1A000BA30400") + bytes.fromhex("3412AABBCC0D")
JREQ_FIELDS = {"msgtype": "jreq", "MHdr": 0, "JoinEui": "70-B3-D5-7E-D0-00-00-01",
               "DevEui": "00-04-A3-0B-00-1A-2B-3C", "DevNonce": 0x1234, "MIC": 0x0DCCBBAA}
PROPDF = bytes.fromhex("E0010203")
FOREIGN = bytes.fromhex("40785634120000010001020304")  # DevAddr 12345678: NetID 000009


def _record(phy: bytes, tmst: int = 1000, *, local: int = LOCAL, received_us: int | None = None,
            datr: str = "SF7BW125", tmms: int | None = None, freq: float = 868.1) -> Any:
    rxpk: dict[str, Any] = {"tmst": tmst, "freq": freq, "datr": datr, "modu": "LORA", "rssi": -57, "lsnr": 9.5,
                            "data": base64.b64encode(phy).decode()}
    if tmms is not None:
        rxpk["tmms"] = tmms
    return make_record("uplink", "gwmp", {"gateway_eui": f"{local:016x}", "rxpk": rxpk}, received_us=received_us)


async def _until(cond: Any, timeout: float = 10.0, what: str = "condition") -> None:  # noqa: ASYNC109
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, f"{what} not met in time"
        await asyncio.sleep(0.01)


@pytest.fixture
def buffer(tmp_path: Path):
    buf = Buffer(tmp_path / "buf.sqlite3", max_bytes=64 << 20)
    buf.open()
    yield buf
    buf.close()


MAPPED = f'[forward.station.eui_map]\n"{LOCAL:016x}" = "{LOCAL:016x}"\n'


def _cfg(lns: StationLns, extra: str = "", timeout: str = "3s", **files: Path) -> StationForward:
    lines = [f'{k} = "{v}"' for k, v in files.items()]
    cfg = load_config_text(f'[gateway]\neui = "{GATEWAY:016x}"\n[[forward.station]]\nname = "tts"\n'
                           f'uri = "{lns.uri}"\ntimeout = "{timeout}"\n' + "\n".join(lines) + "\n" + extra)
    return cfg.forward.station[0]


@pytest.fixture
async def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


@pytest.fixture
async def make_lns():
    made: list[StationLns] = []

    async def make(pki: Pki | None = None, **kw: Any) -> StationLns:
        lns = StationLns(pki, **kw)
        lns.routers[LOCAL] = dict(EU868_ROUTER_CONFIG)
        await lns.start()
        made.append(lns)
        return lns

    yield make
    for lns in made:
        await lns.stop()
        assert lns.violations == [], "messages not as the protocol documents them"


async def _run(buffer: Buffer, fwd: Any) -> tuple[DeliveryLoop, asyncio.Task[None]]:
    if "tts" not in buffer.cursors():
        buffer.register("tts", start="oldest")
    dl = DeliveryLoop(buffer, fwd, backoff_base=0.05, backoff_cap=0.2)
    return dl, asyncio.create_task(dl.run())


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


# --------------------------------------------------------------------------- connection, auth

@pytest.mark.parametrize("mode", ["server", "client_cert", "token", "none"])
async def test_discovery_and_each_authentication_mode_delivers(mode: str, pki: Pki, make_lns, buffer: Buffer,
                                                               tmp_path: Path) -> None:
    files: dict[str, Path] = {}
    if mode == "none":
        lns = await make_lns(None)
    elif mode == "server":
        lns = await make_lns(pki)
        files = {"trust": pki.trust}
    elif mode == "client_cert":
        lns = await make_lns(pki, client_certs=True)
        crt, key = pki.leaf(f"{LOCAL:016x}")
        files = {"trust": pki.trust, "crt": crt, "key": key}
    else:
        lns = await make_lns(pki, token="Bearer NNSXS.TESTKEY")
        key = tmp_path / "tc.key"
        key.write_bytes(b"Authorization: Bearer NNSXS.TESTKEY\r\n")  # TTS writes CRLF
        files = {"trust": pki.trust, "key": key}
    fwd = build_forwarder(_cfg(lns, **files), gateway_eui=GATEWAY, sources=[])
    assert isinstance(fwd, StationForwarder)
    for i in range(3):
        buffer.append(_record(UPDF, tmst=1000 + i))
    dl, task = await _run(buffer, fwd)
    try:
        await _until(lambda: dl.acked == 3, what="3 uplinks acknowledged")
        assert lns.discoveries == [{"router": "b827:ebff:fe00:1"}]  # ID6, as Basics Station sends it
        assert [m["FCnt"] for m in lns.of(LOCAL, "updf")] == [258, 258, 258]
        assert dl.health()["connected"] is True
        assert dl.health()["backend"]["auth"] == mode
    finally:
        await _stop(task)


async def test_wrong_token_is_refused_with_a_clear_reason(pki: Pki, make_lns, tmp_path: Path) -> None:
    lns = await make_lns(pki, token="Bearer RIGHT")
    key = tmp_path / "tc.key"
    key.write_text("Authorization: Bearer WRONG\n")
    fwd = StationForwarder(_cfg(lns, MAPPED, trust=pki.trust, key=key), gateway_eui=GATEWAY)
    with pytest.raises(ForwarderError) as err:
        await fwd.connect()
    assert err.value.kind == "refused"
    assert "HTTP 401" in str(err.value) and "token" in str(err.value)
    assert "RIGHT" not in str(err.value) and "WRONG" not in str(err.value)  # tokens never in messages
    await fwd.close()


async def test_wrong_ca_is_refused_naming_the_trust_file(pki: Pki, make_lns, tmp_path: Path) -> None:
    lns = await make_lns(pki)
    other = Pki(tmp_path / "other", "other")
    fwd = StationForwarder(_cfg(lns, MAPPED, trust=other.trust), gateway_eui=GATEWAY)
    with pytest.raises(ForwarderError) as err:
        await fwd.connect()
    assert err.value.kind == "tls"
    assert "certificate verify failed" in str(err.value) and "tc.trust" in str(err.value)
    await fwd.close()


async def test_expired_client_certificate_is_refused_with_a_clear_reason(pki: Pki, make_lns) -> None:
    lns = await make_lns(pki, client_certs=True)
    crt, key = pki.leaf("expired", expired=True)
    fwd = StationForwarder(_cfg(lns, MAPPED, trust=pki.trust, crt=crt, key=key), gateway_eui=GATEWAY)
    with pytest.raises(ForwarderError) as err:
        await fwd.connect()
    assert "expired" in str(err.value) and "crt" in str(err.value)
    assert lns.discoveries == []  # nothing got through
    await fwd.close()


async def test_unknown_router_is_refused_by_discovery(pki: Pki, make_lns) -> None:
    lns = await make_lns(pki)
    lns.routers.clear()
    fwd = StationForwarder(_cfg(lns, MAPPED, trust=pki.trust), gateway_eui=GATEWAY)
    with pytest.raises(ForwarderError) as err:
        await fwd.connect()
    assert err.value.kind == "rejected" and "Router not provisioned" in str(err.value)
    assert "B8-27-EB-FF-FE-00-00-01" in str(err.value)
    await fwd.close()


async def test_traffic_socket_retried_five_times_then_discovery_again(pki: Pki, make_lns) -> None:
    lns = await make_lns(pki)
    lns.traffic_down = True
    fwd = StationForwarder(_cfg(lns, MAPPED, trust=pki.trust), gateway_eui=GATEWAY)
    seen = []
    for _ in range(7):
        with pytest.raises(ForwarderError) as err:
            await fwd.connect()
        assert "HTTP 503" in str(err.value)
        seen.append(len(lns.discoveries))
    assert seen == [1, 1, 1, 1, 1, 2, 2]  # as Basics Station: the known traffic uri first
    lns.traffic_down = False
    await fwd.connect()
    await fwd.close()
    assert len(lns.discoveries) == 2


def test_config_checks_the_authentication_mode(tmp_path: Path) -> None:
    base = '[gateway]\neui = "0016c001ff000001"\n[[forward.station]]\nname = "s"\n'
    with pytest.raises(ConfigError) as err:
        load_config_text(base + 'uri = "wss://lns.example.org:8887"\n')
    assert "forward.station[0].trust" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_config_text(base + 'uri = "ws://lns.example.org:8887"\ntrust = "/x"\n')
    assert "forward.station[0].uri" in str(err.value) and "no TLS" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_config_text(base + 'uri = "https://lns.example.org"\n')
    assert "wss://" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_config_text(base + 'uri = "wss://lns.example.org:8887"\ntrust = "/t"\ncrt = "/c"\n')
    assert "forward.station[0].key" in str(err.value)


# --------------------------------------------------------------------------- uplinks

async def test_every_uplink_type_field_by_field(pki: Pki, make_lns, buffer: Buffer) -> None:
    lns = await make_lns(pki)
    fwd = StationForwarder(_cfg(lns, trust=pki.trust), gateway_eui=GATEWAY)
    t0 = now_us()
    buffer.append(_record(UPDF, tmst=5_000_000, received_us=t0, tmms=1_300_000_000_123))
    buffer.append(_record(UPDF_NOPORT, tmst=5_100_000, received_us=t0 + 100_000, datr="SF12BW125"))
    buffer.append(_record(JREQ, tmst=5_200_000, received_us=t0 + 200_000, datr="SF9BW125"))
    buffer.append(_record(PROPDF, tmst=5_300_000, received_us=t0 + 300_000, datr="SF7BW250"))
    dl, task = await _run(buffer, fwd)
    try:
        await _until(lambda: dl.acked == 4)
    finally:
        await _stop(task)
    updf, noport = lns.of(LOCAL, "updf")
    (jreq,) = lns.of(LOCAL, "jreq")
    (propdf,) = lns.of(LOCAL, "propdf")
    assert {k: updf[k] for k in UPDF_FIELDS} == UPDF_FIELDS
    assert (updf["DR"], updf["Freq"]) == (5, 868_100_000)
    up = updf["upinfo"]
    session = (up["xtime"] >> 48) & 0xFF
    assert session != 0 and up["xtime"] & 0xFFFFFFFFFFFF == 5_000_000 and up["rctx"] == 0
    assert (up["gpstime"], up["rssi"], up["snr"]) == (1_300_000_000_123_000, -57, 9.5)
    assert up["rxtime"] == pytest.approx(t0 / 1e6)
    assert {k: noport[k] for k in ("DevAddr", "FPort", "FRMPayload", "FOpts", "FCnt", "MIC", "DR")} == {
        "DevAddr": 0x80000001 - 2**32, "FPort": -1, "FRMPayload": "", "FOpts": "", "FCnt": 5,
        "MIC": 0x44332211, "DR": 0}
    assert noport["upinfo"]["gpstime"] == 0  # not known without a GPS
    assert {k: jreq[k] for k in JREQ_FIELDS} == JREQ_FIELDS and jreq["DR"] == 3
    assert fwd.health().get("off_plan_channel") is None  # 868.1 MHz is in the server's plan
    assert propdf["FRMPayload"] == "E0010203" and propdf["DR"] == 6
    # one concentrator, one session: xtimes differ by exactly the counter difference
    assert jreq["upinfo"]["xtime"] - up["xtime"] == 200_000


async def test_router_config_net_id_and_join_eui_filters(pki: Pki, make_lns, buffer: Buffer) -> None:
    lns = await make_lns(pki)
    lns.routers[LOCAL] = {**EU868_ROUTER_CONFIG, "NetID": [0x13],
                          "JoinEui": [[0x70B3D57ED0000000, 0x70B3D57ED0FFFFFF]]}
    fwd = StationForwarder(_cfg(lns, trust=pki.trust), gateway_eui=GATEWAY)
    other_join = JREQ[:1] + bytes.fromhex("0100000000000000") + JREQ[9:]
    for phy in (UPDF, FOREIGN, JREQ, other_join, PROPDF):
        buffer.append(_record(phy))
    buffer.append(_record(UPDF, freq=867.1))  # a channel the server's plan does not have
    dl, task = await _run(buffer, fwd)
    try:
        await _until(lambda: dl.acked == 6)
    finally:
        await _stop(task)
    assert [m["msgtype"] for m in lns.messages[LOCAL] if m["msgtype"] != "timesync"] == ["updf", "jreq", "propdf",
                                                                                        "updf"]
    assert lns.of(LOCAL, "jreq")[0]["JoinEui"] == "70-B3-D5-7E-D0-00-00-01"
    counters = fwd.health()
    assert (counters["filtered_net_id"], counters["filtered_join_eui"]) == (1, 1)
    assert counters["off_plan_channel"] == 1  # sent, but the mismatch is shown
    assert lns.of(LOCAL, "updf")[-1]["Freq"] == 867_100_000


async def test_outage_buffers_shows_disconnected_and_delivers_after(pki: Pki, make_lns, buffer: Buffer) -> None:
    lns = await make_lns(pki)
    fwd = StationForwarder(_cfg(lns, trust=pki.trust), gateway_eui=GATEWAY)
    buffer.append(_record(UPDF, tmst=1))
    dl, task = await _run(buffer, fwd)
    try:
        await _until(lambda: dl.acked == 1)
        await lns.stop()
        await _until(lambda: not dl.health()["connected"], what="disconnected shown")
        for i in range(5):
            buffer.append(_record(UPDF, tmst=10 + i))
        await asyncio.sleep(0.5)
        assert dl.acked == 1 and dl.health()["lag_records"] == 5
        await lns.start()  # same port
        await _until(lambda: dl.acked == 6, what="backlog delivered")
        assert dl.health()["connected"] is True
        # the same router_config again (another MuxTime): not a new version, no flash write
        saved = json.loads((Path(buffer.path).parent / f"station-tts-{LOCAL:016x}.router_config.json").read_text())
        assert len(saved["history"]) == 1 and "MuxTime" not in saved["history"][0]["router_config"]
    finally:
        await _stop(task)
    tmsts = sorted(m["upinfo"]["xtime"] & 0xFFFFFFFF for m in lns.of(LOCAL, "updf"))
    assert tmsts == [1, 10, 11, 12, 13, 14]


async def test_a_batch_counts_as_delivered_only_when_the_server_has_read_it(pki: Pki, make_lns,
                                                                            buffer: Buffer) -> None:
    lns = await make_lns(pki)
    lns.stall_next = True  # accepts the socket, sends router_config, then reads nothing
    fwd = StationForwarder(_cfg(lns, MAPPED, "500ms", trust=pki.trust), gateway_eui=GATEWAY)
    for i in range(4):
        buffer.append(_record(UPDF, tmst=100 + i))
    dl, task = await _run(buffer, fwd)
    try:
        await _until(lambda: dl.errors.get("no_pong"), what="unconfirmed batch noticed")
        await _until(lambda: dl.acked == 4, what="delivered on the next socket")
    finally:
        await _stop(task)
    # exactly once at the server: the unread batch was never counted as delivered
    assert sorted(m["upinfo"]["xtime"] & 0xFFFFFFFF for m in lns.of(LOCAL, "updf")) == [100, 101, 102, 103]


async def test_a_server_gone_silent_while_idle_shows_disconnected_and_is_reconnected(pki: Pki, make_lns,
                                                                                     buffer: Buffer) -> None:
    lns = await make_lns(pki)
    lns.stall_next = True
    fwd = StationForwarder(_cfg(lns, 'keepalive = "200ms"\n' + MAPPED, "300ms", trust=pki.trust),
                           gateway_eui=GATEWAY)
    dl, task = await _run(buffer, fwd)
    try:
        await _until(lambda: fwd.errors.get("keepalive_timeout"), what="silent server noticed")
        await _until(lambda: dl.reconnects >= 2 and dl.health()["connected"], what="reconnected")
    finally:
        await _stop(task)
    assert dl.errors.get("connection_lost") == 1


async def test_restart_while_lns_down_applies_the_saved_router_config(pki: Pki, make_lns, buffer: Buffer) -> None:
    lns = await make_lns(pki)
    lns.routers[LOCAL] = {**EU868_ROUTER_CONFIG, "NetID": [0x13]}
    cfg = _cfg(lns, MAPPED, trust=pki.trust)
    dl, task = await _run(buffer, StationForwarder(cfg, gateway_eui=GATEWAY))
    await _until(lambda: dl.health()["connected"])
    await _stop(task)  # the gateway stops...
    await lns.stop()  # ...and the network server is unreachable while it starts again
    lns.routers[LOCAL] = {**EU868_ROUTER_CONFIG, "NetID": None}  # it comes back accepting all
    fwd = StationForwarder(cfg, gateway_eui=GATEWAY)
    dl, task = await _run(buffer, fwd)
    try:
        await asyncio.sleep(0.3)
        assert not dl.health()["connected"]
        router = dl.health()["backend"]["routers"][f"{LOCAL:016x}"]
        assert router["router_config"]["NetID"] == ["000013"] and router["router_config"]["from"] == "saved"
        buffer.append(_record(UPDF, tmst=1))  # heard while the saved NetID filter is in force
        buffer.append(_record(FOREIGN, tmst=2))
        await asyncio.sleep(0.1)
        await lns.start()
        await _until(lambda: dl.acked == 2)
        assert [m["DevAddr"] for m in lns.of(LOCAL, "updf")] == [0x26011234]
        buffer.append(_record(FOREIGN, tmst=3))  # heard under the server's new router_config
        await _until(lambda: dl.acked == 3)
        assert [m["DevAddr"] for m in lns.of(LOCAL, "updf")] == [0x26011234, 0x12345678]
    finally:
        await _stop(task)


# --------------------------------------------------------------------------- downlinks

class PacketForwarder:
    """A simulated lora_pkt_fwd talking to a GwmpServer; answers each PULL_RESP with a TX_ACK."""

    def __init__(self, eui: int, server: tuple[str, int]) -> None:
        self.eui, self.server = eui, server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.answers: list[str] = []  # TX_ACK errors to give, in order ("NONE" when empty)
        self.txpks: list[dict[str, Any]] = []

    async def pull(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.sock_sendto(self.sock, frames.encode_pull_data(secrets.randbits(16), self.eui), self.server)
        assert frames.parse_gwmp(await asyncio.wait_for(loop.sock_recv(self.sock, 64), 5)).identifier == frames.PULL_ACK

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            pkt = frames.parse_gwmp(await loop.sock_recv(self.sock, 4096))
            if pkt.identifier != frames.PULL_RESP:
                continue
            self.txpks.append(pkt.body["txpk"])
            error = self.answers.pop(0) if self.answers else "NONE"
            if error == "SILENT":
                continue  # no TX_ACK at all
            await loop.sock_sendto(self.sock, frames.encode_tx_ack(pkt.token, self.eui, {"error": error}), self.server)


@pytest.fixture
async def radio(buffer: Buffer):
    duty = GatewayDutyCycles(eu868_bands())
    gw = GwmpServer(on_uplink=buffer.append, bind=("127.0.0.1", 0), duty_cycle=duty)
    gw.duty = duty  # type: ignore[attr-defined]  # for tests that spend the budget first
    await gw.start()
    pf = PacketForwarder(LOCAL, gw.bound_address)
    await pf.pull()
    serving = asyncio.create_task(pf.serve())
    yield gw, pf
    await _stop(serving)
    pf.sock.close()
    gw.close()


async def _push(pf: PacketForwarder, phy: bytes, tmst: int) -> None:
    loop = asyncio.get_running_loop()
    rxpk = [{"tmst": tmst, "freq": 868.1, "datr": "SF7BW125", "modu": "LORA", "rssi": -60, "lsnr": 7.0,
             "codr": "4/5", "stat": 1, "size": len(phy), "data": base64.b64encode(phy).decode()}]
    await loop.sock_sendto(pf.sock, frames.encode_push_data(secrets.randbits(16), pf.eui, rxpk), pf.server)


def _dnmsg(jreq: dict[str, Any], **kw: Any) -> dict[str, Any]:
    accept = "20" + "11" * 16  # a join-accept's length; its content does not matter here
    return {"msgtype": "dnmsg", "DevEui": jreq["DevEui"], "dC": 0, "diid": 4711, "pdu": accept, "RxDelay": 5,
            "RX1DR": 5, "RX1Freq": 868100000, "RX2DR": 0, "RX2Freq": 869525000, "priority": 0,
            "xtime": jreq["upinfo"]["xtime"], "rctx": jreq["upinfo"]["rctx"], "MuxTime": 1.7e9, **kw}


async def test_join_round_trip_dnmsg_to_tx_ack_and_dntxed(pki: Pki, make_lns, buffer: Buffer, radio) -> None:
    gw, pf = radio
    lns = await make_lns(pki)
    fwd = build_forwarder(_cfg(lns, trust=pki.trust), gateway_eui=GATEWAY, sources=[gw])
    _dl, task = await _run(buffer, fwd)
    try:
        await _push(pf, JREQ, tmst=0xFFFF0000)
        await _until(lambda: lns.of(LOCAL, "jreq"), what="jreq at the LNS")
        jreq = lns.of(LOCAL, "jreq")[0]
        await lns.send(LOCAL, _dnmsg(jreq))
        await _until(lambda: lns.of(LOCAL, "dntxed"), what="dntxed")
    finally:
        await _stop(task)
    (txpk,) = pf.txpks
    # RX1: RxDelay 5 s after the uplink, on the concentrator's counter (wrapped past 2**32)
    assert txpk["tmst"] == (0xFFFF0000 + 5_000_000) & 0xFFFFFFFF
    assert (txpk["freq"], txpk["datr"], txpk["modu"], txpk["ipol"]) == (868.1, "SF7BW125", "LORA", True)
    assert base64.b64decode(txpk["data"]).hex() == "20" + "11" * 16 and txpk["size"] == 17
    (dntxed,) = lns.of(LOCAL, "dntxed")
    assert (dntxed["diid"], dntxed["DevEui"], dntxed["DR"], dntxed["Freq"]) == (4711, jreq["DevEui"], 5, 868100000)
    assert dntxed["xtime"] == jreq["upinfo"]["xtime"] + 5_000_000


async def test_rx1_refused_falls_back_to_rx2(pki: Pki, make_lns, buffer: Buffer, radio) -> None:
    gw, pf = radio
    pf.answers = ["TOO_LATE"]
    lns = await make_lns(pki)
    fwd = build_forwarder(_cfg(lns, trust=pki.trust), gateway_eui=GATEWAY, sources=[gw])
    _dl, task = await _run(buffer, fwd)
    try:
        await _push(pf, JREQ, tmst=7_000_000)
        await _until(lambda: lns.of(LOCAL, "jreq"))
        jreq = lns.of(LOCAL, "jreq")[0]
        await lns.send(LOCAL, _dnmsg(jreq, RxDelay=1))
        await _until(lambda: lns.of(LOCAL, "dntxed"))
    finally:
        await _stop(task)
    rx1, rx2 = pf.txpks
    assert (rx1["tmst"], rx1["freq"], rx1["datr"]) == (8_000_000, 868.1, "SF7BW125")
    assert (rx2["tmst"], rx2["freq"], rx2["datr"]) == (9_000_000, 869.525, "SF12BW125")
    (dntxed,) = lns.of(LOCAL, "dntxed")
    assert (dntxed["DR"], dntxed["Freq"], dntxed["xtime"]) == (0, 869525000, jreq["upinfo"]["xtime"] + 2_000_000)
    assert fwd.health()["rx2_used"] == 1


async def test_rx1_band_out_of_duty_cycle_goes_on_rx2_and_nothing_goes_over_budget(
        pki: Pki, make_lns, buffer: Buffer, radio) -> None:
    gw, pf = radio
    for datr, size in (("SF12BW125", 200), ("SF7BW125", 17)):  # spend 868.1 MHz's 1 % of the hour
        with pytest.raises(DutyCycleRefused):
            for _ in range(1000):
                gw.duty.book(LOCAL, 868_100_000, {"freq": 868.1, "modu": "LORA", "datr": datr, "codr": "4/5",
                                                  "size": size, "data": ""})
    lns = await make_lns(pki)
    fwd = build_forwarder(_cfg(lns, trust=pki.trust), gateway_eui=GATEWAY, sources=[gw])
    _dl, task = await _run(buffer, fwd)
    try:
        await _push(pf, JREQ, tmst=7_000_000)
        await _until(lambda: lns.of(LOCAL, "jreq"))
        await lns.send(LOCAL, _dnmsg(lns.of(LOCAL, "jreq")[0], RxDelay=1))
        await _until(lambda: lns.of(LOCAL, "dntxed"))
    finally:
        await _stop(task)
    (only,) = pf.txpks  # RX1 never reached the packet forwarder
    assert (only["tmst"], only["freq"]) == (9_000_000, 869.525)
    assert fwd.health()["DUTY_CYCLE_OVERFLOW"] == 1 and lns.of(LOCAL, "dntxed")[0]["Freq"] == 869525000


async def test_rx1_without_tx_ack_is_not_repeated_on_rx2(pki: Pki, make_lns, buffer: Buffer) -> None:
    gw = GwmpServer(on_uplink=buffer.append, bind=("127.0.0.1", 0), downlink_timeout=0.3)
    await gw.start()
    pf = PacketForwarder(LOCAL, gw.bound_address)
    await pf.pull()
    pf.answers = ["SILENT"]
    serving = asyncio.create_task(pf.serve())
    lns = await make_lns(pki)
    fwd = build_forwarder(_cfg(lns, trust=pki.trust), gateway_eui=GATEWAY, sources=[gw])
    _dl, task = await _run(buffer, fwd)
    try:
        await _push(pf, JREQ, tmst=7_000_000)
        await _until(lambda: lns.of(LOCAL, "jreq"))
        await lns.send(LOCAL, _dnmsg(lns.of(LOCAL, "jreq")[0], RxDelay=1))
        await _until(lambda: fwd.health().get("TIMEOUT") == 1, what="TX_ACK timeout")  # type: ignore[attr-defined]
        await asyncio.sleep(0.3)
    finally:
        await _stop(task)
        await _stop(serving)
        pf.sock.close()
        gw.close()
    assert len(pf.txpks) == 1  # the radio may have sent RX1: never a second copy on RX2
    assert not lns.of(LOCAL, "dntxed")  # and no claim that it went out


async def test_runcmd_and_rmtsh_are_refused_and_logged(pki: Pki, make_lns, buffer: Buffer,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    lns = await make_lns(pki)
    fwd = StationForwarder(_cfg(lns, MAPPED, trust=pki.trust), gateway_eui=GATEWAY)
    dl, task = await _run(buffer, fwd)
    try:
        await _until(lambda: dl.health()["connected"])
        with caplog.at_level(logging.WARNING):
            await lns.send(LOCAL, {"msgtype": "runcmd", "command": "/bin/sh", "arguments": ["-c", "reboot"]})
            await lns.send(LOCAL, {"msgtype": "rmtsh", "user": "root", "term": "xterm", "start": 0})
            await _until(lambda: fwd.health()["refused_commands"] == 2)
    finally:
        await _stop(task)
    assert sum("refused" in r.getMessage() and "remote" in r.getMessage() for r in caplog.records) == 2
    assert json.dumps(fwd.health())  # health stays JSON for the page


async def test_each_local_packet_forwarder_is_its_own_station_with_its_own_downlinks(
        pki: Pki, make_lns, buffer: Buffer) -> None:
    local_b, router_a, router_b = 0xB827EBFFFE00000B, 0x0016C001FF10A23A, 0x0016C001FF10A23B
    gw = GwmpServer(on_uplink=buffer.append, bind=("127.0.0.1", 0))
    await gw.start()
    pfs = [PacketForwarder(eui, gw.bound_address) for eui in (LOCAL, local_b)]
    serving = []
    for pf in pfs:
        await pf.pull()
        serving.append(asyncio.create_task(pf.serve()))
    lns = await make_lns(pki)
    lns.routers = {router_a: dict(EU868_ROUTER_CONFIG), router_b: dict(EU868_ROUTER_CONFIG)}
    extra = f'[forward.station.eui_map]\n"{LOCAL:016x}" = "{router_a:016x}"\n"{local_b:016x}" = "{router_b:016x}"\n'
    fwd = build_forwarder(_cfg(lns, extra, trust=pki.trust), gateway_eui=GATEWAY, sources=[gw])
    _dl, task = await _run(buffer, fwd)
    try:
        await _push(pfs[0], UPDF, tmst=1_000_000)
        await _push(pfs[1], JREQ, tmst=2_000_000)
        await _until(lambda: lns.of(router_a, "updf") and lns.of(router_b, "jreq"), what="both stations heard")
        assert not lns.of(router_a, "jreq") and not lns.of(router_b, "updf")
        assert sorted(m["router"] for m in lns.discoveries) == ["16:c001:ff10:a23a", "16:c001:ff10:a23b"]
        await lns.send(router_b, _dnmsg(lns.of(router_b, "jreq")[0], RxDelay=1))
        await _until(lambda: lns.of(router_b, "dntxed"), what="dntxed from station B")
    finally:
        await _stop(task)
        for t in serving:
            await _stop(t)
        for pf in pfs:
            pf.sock.close()
        gw.close()
    assert [t["tmst"] for t in pfs[1].txpks] == [3_000_000] and pfs[0].txpks == []
    assert not lns.of(router_a, "dntxed")
