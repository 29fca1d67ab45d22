"""ChirpStack concentratord source against a fake concentratord on real ZeroMQ ipc:// sockets."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

if os.environ.get("CI") == "true":
    import zmq
    import zmq.asyncio
    from chirpstack_api.gw import gw_pb2 as gw
else:
    pytest.importorskip("zmq")
    pytest.importorskip("chirpstack_api")
    import zmq
    import zmq.asyncio
    from chirpstack_api.gw import gw_pb2 as gw

from drivers.concentratord import ConcentratordSource

GATEWAY_ID = "0016c001ff10a235"
PHY = bytes.fromhex("40f17dbe4900020001954378762b11ff0d")


async def wait_for(pred: Callable[[], bool], limit: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    while not pred():
        if loop.time() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


class FakeConcentratord:
    """PUB for events, REP for commands, like chirpstack-concentratord v4."""

    def __init__(self, tmp: Path) -> None:
        self.event_url = f"ipc://{tmp}/event"
        self.command_url = f"ipc://{tmp}/command"
        self.ctx = zmq.asyncio.Context()
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.bind(self.event_url)
        self.rep = self.ctx.socket(zmq.REP)
        self.rep.bind(self.command_url)
        self.commands: list[Any] = []
        self.ack_status = gw.OK
        self.ack_statuses: list[int] | None = None  # per item, instead of ack_status for all
        self.answering = asyncio.Event()  # cleared: commands get no reply, as from a hung daemon
        self.answering.set()
        self.task = asyncio.create_task(self._serve())

    def downlinks(self) -> list[Any]:
        return [c.send_downlink_frame for c in self.commands
                if c.WhichOneof("command") == "send_downlink_frame"]

    async def _serve(self) -> None:
        while True:
            cmd = gw.Command.FromString(await self.rep.recv())
            await self.answering.wait()
            self.commands.append(cmd)
            which = cmd.WhichOneof("command")
            if which == "get_gateway_id":
                reply = gw.GetGatewayIdResponse(gateway_id=GATEWAY_ID).SerializeToString()
            elif which == "send_downlink_frame":
                df = cmd.send_downlink_frame
                ack = gw.DownlinkTxAck(gateway_id=GATEWAY_ID, downlink_id=df.downlink_id)
                statuses = self.ack_statuses
                for status in [self.ack_status] * len(df.items) if statuses is None else statuses:
                    ack.items.add(status=status)
                reply = ack.SerializeToString()
            else:
                reply = b""
            await self.rep.send(reply)

    async def publish_until(self, frames: list[bytes], done: Callable[[], bool]) -> None:
        # PUB/SUB drops what is sent before the subscriber is connected ("slow joiner"),
        # so keep publishing until the source has seen it.
        loop = asyncio.get_running_loop()
        end = loop.time() + 5
        while not done():
            assert loop.time() < end, "event never arrived"
            await self.pub.send_multipart(frames)
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        self.pub.close(0)
        self.rep.close(0)
        self.ctx.term()


def uplink_frame() -> Any:
    up = gw.UplinkFrame(phy_payload=PHY)
    up.tx_info.frequency = 868_100_000
    lora = up.tx_info.modulation.lora
    lora.bandwidth, lora.spreading_factor, lora.code_rate = 125_000, 7, gw.CR_4_5
    rx = up.rx_info
    rx.gateway_id, rx.rssi, rx.snr, rx.channel, rx.rf_chain = GATEWAY_ID, -57, 9.25, 2, 1
    rx.context = (3_512_348_611).to_bytes(4, "big")
    rx.crc_status = gw.CRC_OK
    rx.gw_time.seconds, rx.gw_time.nanos = 1_700_000_000, 123_456_000
    return up


@pytest.fixture
async def fake(tmp_path: Path) -> AsyncIterator[FakeConcentratord]:
    f = FakeConcentratord(tmp_path)
    yield f
    await f.close()


@contextlib.asynccontextmanager
async def source(
    fake: FakeConcentratord, **kw: Any
) -> AsyncIterator[tuple[ConcentratordSource, list[dict[str, Any]], list[dict[str, Any]]]]:
    ups: list[dict[str, Any]] = []
    stats: list[dict[str, Any]] = []
    src = ConcentratordSource(fake.event_url, fake.command_url, ups.append, stats.append, **kw)
    task = asyncio.create_task(src.run())
    try:
        yield src, ups, stats
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        src.close()


async def test_uplink_and_stats_arrive_in_the_forwarder_shape(fake: FakeConcentratord) -> None:
    async with source(fake) as (src, ups, stats):
        event = gw.Event(uplink_frame=uplink_frame()).SerializeToString()
        await fake.publish_until([event], lambda: bool(ups))
        assert ups[0] == {
            "gateway_eui": GATEWAY_ID,
            "rxpk": {
                "time": "2023-11-14T22:13:20.123456Z",
                "tmst": 3_512_348_611,
                "freq": 868.1,
                "chan": 2,
                "rfch": 1,
                "stat": 1,
                "modu": "LORA",
                "datr": "SF7BW125",
                "codr": "4/5",
                "rssi": -57,
                "lsnr": 9.2,
                "size": len(PHY),
                "data": base64.b64encode(PHY).decode(),
            },
        }
        st = gw.GatewayStats(
            gateway_id=GATEWAY_ID,
            rx_packets_received=10,
            rx_packets_received_ok=8,
            tx_packets_received=3,
            tx_packets_emitted=2,
        )
        st.time.seconds = 1_700_000_000
        st.location.latitude, st.location.longitude, st.location.altitude = 51.25, 7.15, 152.4
        await fake.publish_until(
            [gw.Event(gateway_stats=st).SerializeToString()], lambda: bool(stats)
        )
        assert stats[0] == {
            "gateway_eui": GATEWAY_ID,
            "stat": {
                "time": "2023-11-14 22:13:20 GMT",
                "lati": 51.25,
                "long": 7.15,
                "alti": 152,
                "rxnb": 10,
                "rxok": 8,
                "rxfw": 8,
                "dwnb": 3,
                "txnb": 2,
            },
        }
        # Older v4 releases: two frames, event name then payload.
        n = len(ups)
        await fake.publish_until([b"up", uplink_frame().SerializeToString()], lambda: len(ups) > n)
        assert ups[-1] == ups[0]
        # Garbage is counted, not fatal.
        await fake.publish_until([b"\xff\xff\xff"], lambda: src.health()["malformed_events"] > 0)
        h = src.health()
        assert h["uplinks"] >= 2 and h["stats"] >= 1 and h["connected"] is True


async def test_downlink_command_is_answered(fake: FakeConcentratord) -> None:
    async with source(fake) as (src, _ups, _stats):
        txpk = {
            "imme": False,
            "tmst": 3_513_348_611,
            "freq": 869.525,
            "rfch": 0,
            "powe": 27,
            "modu": "LORA",
            "datr": "SF12BW125",
            "codr": "4/5",
            "ipol": True,
            "size": len(PHY),
            "data": base64.b64encode(PHY).decode(),
        }
        ack = await src.send_downlink(None, txpk)
        assert ack == {"error": "NONE"}
        kinds = [c.WhichOneof("command") for c in fake.commands]
        assert kinds == ["get_gateway_id", "send_downlink_frame"]
        df = fake.commands[1].send_downlink_frame
        assert df.gateway_id == GATEWAY_ID
        item = df.items[0]
        assert item.phy_payload == PHY
        assert item.tx_info.frequency == 869_525_000 and item.tx_info.power == 27
        assert item.tx_info.antenna == 0 and item.tx_info.board == 0
        lora = item.tx_info.modulation.lora
        assert (lora.spreading_factor, lora.bandwidth, lora.code_rate) == (12, 125_000, gw.CR_4_5)
        assert lora.polarization_inversion and not lora.no_crc
        assert item.tx_info.context == (3_513_348_611).to_bytes(4, "big")
        assert item.tx_info.timing.WhichOneof("parameters") == "delay"
        assert item.tx_info.timing.delay.delay.ToTimedelta().total_seconds() == 0

        # Addressed by EUI: the same gateway is served, its id asked only once.
        assert (await src.send_downlink(int(GATEWAY_ID, 16), txpk))["error"] == "NONE"
        assert [c.WhichOneof("command") for c in fake.commands].count("get_gateway_id") == 1

        fake.ack_status = gw.TOO_LATE
        ack = await src.send_downlink(None, dict(txpk, tmst=1))
        assert ack["error"] == "TOO_LATE" and "TOO_LATE" in ack["detail"]
        h = src.health()
        assert h["downlink_errors"] == 1 and h["downlink_acks"] == {"NONE": 2, "TOO_LATE": 1}

        cfg = gw.GatewayConfiguration(gateway_id=GATEWAY_ID, version="eu868-v1")
        ch = cfg.channels.add(frequency=868_100_000)
        ch.lora_modulation_config.bandwidth = 125_000
        ch.lora_modulation_config.spreading_factors.extend([7, 8, 9, 10, 11, 12])
        assert await src.send_config(cfg) == {"ok": True, "version": "eu868-v1"}
        assert fake.commands[-1].set_gateway_configuration.channels[0].frequency == 868_100_000

        n = len(fake.downlinks())
        bad = await src.send_downlink(None, dict(txpk, datr="50000"))
        assert bad["error"] == "BAD_TXPK" and "datr" in bad["detail"]
        assert len(fake.downlinks()) == n, "a bad txpk never reaches the radio"


async def test_command_without_concentratord_times_out_and_recovers(tmp_path: Path) -> None:
    src = ConcentratordSource(
        f"ipc://{tmp_path}/e", f"ipc://{tmp_path}/c", print, print, command_timeout=0.2
    )
    try:
        with pytest.raises(TimeoutError, match="is concentratord running"):
            await src.get_gateway_id()
        assert src.health()["command_timeouts"] == 1
        fake = FakeConcentratord(tmp_path)
        fake.command_url = f"ipc://{tmp_path}/c"
        fake.rep.bind(fake.command_url)
        try:
            # A fresh REQ socket is used after the timeout, so the next command works.
            assert await src.get_gateway_id() == GATEWAY_ID
        finally:
            await fake.close()
    finally:
        src.close()


def test_missing_extra_gives_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import drivers.concentratord as mod

    def no_zmq(name: str) -> Any:
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr(mod.importlib, "import_module", no_zmq)
    with pytest.raises(
        mod.ConcentratordUnavailable, match=r"pip install 'schwebe\[concentratord\]'"
    ):
        ConcentratordSource("ipc:///x", "ipc:///y", print, print)


# --- the downlink relay (send_downlink(gateway_eui, txpk), as GwmpServer) ----------------

TXPK: dict[str, Any] = {
    "imme": True,
    "freq": 868.5,
    "rfch": 0,
    "powe": 14,
    "modu": "LORA",
    "datr": "SF9BW125",
    "codr": "4/5",
    "ipol": True,
    "size": len(PHY),
    "data": base64.b64encode(PHY).decode(),
}


@pytest.mark.parametrize(
    ("statuses", "error"),
    [
        ([gw.OK], "NONE"),
        ([gw.TOO_LATE], "TOO_LATE"),
        ([gw.TOO_EARLY], "TOO_EARLY"),
        ([gw.COLLISION_PACKET], "COLLISION_PACKET"),
        ([gw.COLLISION_BEACON], "COLLISION_BEACON"),
        ([gw.TX_FREQ], "TX_FREQ"),
        ([gw.TX_POWER], "TX_POWER"),
        ([gw.GPS_UNLOCKED], "GPS_UNLOCKED"),
        ([gw.QUEUE_FULL], "QUEUE_FULL"),
        ([gw.DUTY_CYCLE_OVERFLOW], "DUTY_CYCLE_OVERFLOW"),
        ([gw.TOO_LATE, gw.OK], "NONE"),  # RX1 too late, RX2 went out
        ([gw.IGNORED, gw.TX_FREQ], "TX_FREQ"),
        ([], "INTERNAL_ERROR"),
    ],
)
async def test_concentratord_ack_becomes_the_semtech_tx_ack_error(
    fake: FakeConcentratord, statuses: list[int], error: str
) -> None:
    fake.ack_statuses = statuses
    async with source(fake) as (src, _ups, _stats):
        ack = await src.send_downlink(None, TXPK)
    assert ack["error"] == error
    assert len(fake.downlinks()) == 1


async def test_timing_and_modulation_follow_the_txpk(fake: FakeConcentratord) -> None:
    async with source(fake) as (src, _ups, _stats):
        gps = dict(TXPK, imme=False, tmms=1_400_000_123_456, codr="4/8", prea=10, ncrc=True,
                   ipol=False, rfch=1)
        assert (await src.send_downlink(None, gps))["error"] == "NONE"
        fsk = {"imme": True, "freq": 868.8, "powe": 14, "modu": "FSK", "datr": 50000,
               "fdev": 25000, "size": len(PHY), "data": base64.b64encode(PHY).decode()}
        assert (await src.send_downlink(None, fsk))["error"] == "NONE"
        no_time = {k: v for k, v in TXPK.items() if k != "imme"}
        refused = await src.send_downlink(None, no_time)
        assert refused["error"] == "BAD_TXPK" and "tmms" in refused["detail"]
    first, second = (d.items[0].tx_info for d in fake.downlinks())
    assert first.timing.WhichOneof("parameters") == "gps_epoch"
    since = first.timing.gps_epoch.time_since_gps_epoch
    assert (since.seconds, since.nanos) == (1_400_000_123, 456_000_000)
    lora = first.modulation.lora
    assert (lora.code_rate, lora.preamble, lora.no_crc, lora.polarization_inversion) == (
        gw.CR_4_8, 10, True, False)
    assert first.antenna == 1
    assert second.modulation.WhichOneof("parameters") == "fsk"
    assert (second.modulation.fsk.datarate, second.modulation.fsk.frequency_deviation) == (
        50000, 25000)
    assert second.timing.WhichOneof("parameters") == "immediately"


async def test_another_gateways_downlink_is_left_to_the_next_relay(
    fake: FakeConcentratord,
) -> None:
    async with source(fake) as (src, _ups, _stats):
        ack = await src.send_downlink(0xB827EBFFFE000001, TXPK)
        assert ack["error"] == "UNKNOWN_GATEWAY"
        assert "b827ebfffe000001" in ack["detail"] and GATEWAY_ID in ack["detail"]
    assert fake.downlinks() == []


async def test_a_silent_concentratord_gives_a_timeout_error_then_recovers(
    fake: FakeConcentratord,
) -> None:
    async with source(fake, command_timeout=0.3) as (src, _ups, _stats):
        assert await src.get_gateway_id() == GATEWAY_ID
        fake.answering.clear()
        t0 = asyncio.get_running_loop().time()
        ack = await src.send_downlink(None, TXPK)
        took = asyncio.get_running_loop().time() - t0
        assert ack["error"] == "TIMEOUT" and "no reply within 0.3s" in ack["detail"]
        assert 0.25 < took < 2
        # a shorter per-call budget wins (the LNS's own deadline)
        ack = await src.send_downlink(None, TXPK, timeout=0.1)
        assert ack["error"] == "TIMEOUT" and "0.1s" in ack["detail"]
        fake.answering.set()
        assert (await src.send_downlink(None, TXPK))["error"] == "NONE"
        assert src.health()["command_timeouts"] == 2


async def test_no_concentratord_at_all_is_a_timeout_or_someone_elses_gateway(
    tmp_path: Path,
) -> None:
    src = ConcentratordSource(f"ipc://{tmp_path}/e", f"ipc://{tmp_path}/c", print, print,
                              command_timeout=0.2)
    try:
        ack = await src.send_downlink(None, TXPK)
        assert ack["error"] == "TIMEOUT" and "is concentratord running" in ack["detail"]
        # addressed to a gateway: it may be behind another relay, so not our TIMEOUT
        ack = await src.send_downlink(0xB827EBFFFE000001, TXPK)
        assert ack["error"] == "UNKNOWN_GATEWAY"
    finally:
        src.close()


async def test_duty_cycle_is_checked_per_gateway_before_anything_is_sent(
    fake: FakeConcentratord,
) -> None:
    from drivers.dutycycle import EU868_BANDS, GatewayDutyCycles

    duty = GatewayDutyCycles(EU868_BANDS)
    # A second radio with the same budget book must not be charged for this one's airtime.
    other = duty.for_gateway(0xB827EBFFFE000001)
    async with source(fake, duty_cycle=duty) as (src, _ups, _stats):
        # SF12 51 bytes = 2.466 s; the 868.0-868.6 MHz band allows 36 s an hour: 14 fit.
        big = dict(TXPK, datr="SF12BW125", size=51, data=base64.b64encode(bytes(51)).decode())
        fake.ack_status = gw.TOO_LATE  # refused by the radio: the airtime is given back
        assert (await src.send_downlink(None, big))["error"] == "TOO_LATE"
        fake.ack_status = gw.OK
        results = [await src.send_downlink(None, big) for _ in range(15)]
        assert [r["error"] for r in results] == ["NONE"] * 14 + ["DUTY_CYCLE_OVERFLOW"]
        assert "868.000-868.600" in results[-1]["detail"]
        assert len(fake.downlinks()) == 15, "the refused downlink never reached concentratord"
        off_plan = await src.send_downlink(None, dict(TXPK, freq=868.65))
        assert off_plan["error"] == "TX_FREQ"
        assert len(fake.downlinks()) == 15
        usage = src.health()["duty_cycle"]
        assert round(usage[GATEWAY_ID][2]["used_s"], 3) == round(14 * 2.465792, 3)
    assert all(band["used_s"] == 0 for band in other.usage())


async def test_downlink_observer_sees_what_concentratord_sends(fake: FakeConcentratord) -> None:
    observed: list[tuple[int, dict[str, Any]]] = []
    async with source(
        fake, on_downlink_observed=lambda eui, txpk: observed.append((eui, dict(txpk)))
    ) as (src, _ups, _stats):
        assert (await src.send_downlink(None, TXPK))["error"] == "NONE"
        assert observed == [(int(GATEWAY_ID, 16), TXPK)]
        fake.ack_status = gw.COLLISION_PACKET  # never went on air: nothing to observe
        assert (await src.send_downlink(None, TXPK))["error"] == "COLLISION_PACKET"
        assert len(observed) == 1


async def test_registry_makes_concentratord_a_downlink_relay(fake: FakeConcentratord) -> None:
    from drivers.gwmp_server import GwmpServer
    from gateway.config import GwmpForward, MqttForward
    from gateway.forward.registry import build_forwarder

    async with source(fake) as (src, _ups, _stats):
        gwmp = GwmpServer(on_uplink=lambda r: None)
        for fcfg in (GwmpForward(name="lns", server=("127.0.0.1", 1)),
                     MqttForward(name="m", url="mqtt://127.0.0.1:1")):
            fwd = build_forwarder(fcfg, gateway_eui=1, sources=[gwmp, src])
            assert fwd.relays == [gwmp, src]  # type: ignore[attr-defined]


# --- end to end: LNS -> LnsForwarder -> concentratord, with OTAA edge decoding ------------


async def test_lns_join_accept_goes_out_via_concentratord_and_edge_decoding_starts(
    fake: FakeConcentratord, tmp_path: Path
) -> None:
    from gateway import frames
    from gateway.config import load_config_text
    from gateway.frames import build as B
    from gateway.frames import lorawan as L
    from gateway.parking.encode import encode_status
    from gateway.pipeline import Gateway
    from tests.test_parking_otaa_e2e import JOIN_EUI, NET_ID, NetworkServer

    dev, key, addr, spot = 0x70B3D57ED00A0001, bytes(range(16)), 0x260B1A01, "city:spot:C1"
    loop = asyncio.get_running_loop()
    ns_transport, ns = await loop.create_datagram_endpoint(
        lambda: NetworkServer(answers={dev: (key, addr, 0x00C0DE)}), local_addr=("127.0.0.1", 0))
    cfg = f"""
[gateway]
eui = "{GATEWAY_ID}"
data_dir = "{tmp_path / 'data'}"
[buffer]
commit_interval = "20ms"
[[sources.concentratord]]
event_url = "{fake.event_url}"
command_url = "{fake.command_url}"
[[forward.gwmp]]
name = "lns"
server = "127.0.0.1:{ns_transport.get_extra_info("sockname")[1]}"
[[parking.devices]]
dev_eui = "{dev:016x}"
model = "nwave/nps405"
spot_id = "{spot}"
app_key = "{key.hex()}"
[web]
bind = "127.0.0.1:0"
open_read_only = true
"""
    gateway = Gateway(load_config_text(cfg))
    task = asyncio.create_task(gateway.serve(install_signals=False))
    tmst = [1_000_000]

    def up(phy: bytes) -> bytes:
        frame = uplink_frame()
        frame.phy_payload = phy
        tmst[0] += 2_000_000
        frame.rx_info.context = tmst[0].to_bytes(4, "big")
        return gw.Event(uplink_frame=frame).SerializeToString()

    def received() -> int:
        return sum(1 for r in ns.rxpk if base64.b64decode(r["data"])[0] >> 5 == 0)

    try:
        await asyncio.wait_for(gateway.supervisor.ready.wait(), 10)
        await wait_for(lambda: ns.pull_addr is not None)
        nonce = 0x1F3A
        # The join request reaches the network server; its accept (RX1, at the uplink's
        # counter + 5 s) comes down through the LNS forwarder to concentratord.
        await fake.publish_until(
            [up(B.build_join_request(key, join_eui=JOIN_EUI, dev_eui=dev, dev_nonce=nonce))],
            lambda: received() >= 1)
        await wait_for(lambda: bool(fake.downlinks()))
        df = fake.downlinks()[0]
        assert df.gateway_id == GATEWAY_ID
        item = df.items[0]
        assert item.phy_payload[0] == 0x20 and len(item.phy_payload) == 17
        assert item.tx_info.context == (tmst[0] + 5_000_000).to_bytes(4, "big")
        assert item.tx_info.frequency == 868_100_000
        assert item.tx_info.modulation.lora.polarization_inversion
        # concentratord's OK goes back up as TX_ACK NONE with the PULL_RESP's token
        await wait_for(lambda: bool(ns.tx_acks))
        ack = ns.tx_acks[0]
        assert ack.identifier == frames.TX_ACK
        assert (ack.token, ack.gateway_eui, ack.body["txpk_ack"]["error"]) == (
            ns.pull_resp_tokens[0], int(GATEWAY_ID, 16), "NONE")
        # the edge watched the accept go out: it can decode the device's frames now
        device = gateway.parking.health()["devices"][f"{dev:016x}"]
        assert (device["join_accepts"], device["session_pending"]) == (1, True)
        keys = L.derive_session_keys_10(key, join_nonce=0x00C0DE, net_id=NET_ID, dev_nonce=nonce)
        fport, payload = encode_status("nwave/nps405", True, minutes=3)
        data = B.build_data_uplink(dev_addr=addr, fcnt=0, fport=fport, payload=payload,
                                   nwk_s_key=keys.nwk_s_key, app_s_key=keys.app_s_key)
        await fake.publish_until(
            [up(data)], lambda: gateway.parking.spots()[spot]["status"] == "occupied")
        status = gateway.status()["sources"]["concentratord:0"]
        assert status["downlink_acks"] == {"NONE": 1}
        assert round(status["duty_cycle"][GATEWAY_ID][2]["used_s"], 3) > 0
    finally:
        gateway.supervisor.request_stop()
        await asyncio.wait_for(task, 20)
        ns_transport.close()
