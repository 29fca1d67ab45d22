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
        self.task = asyncio.create_task(self._serve())

    async def _serve(self) -> None:
        while True:
            cmd = gw.Command.FromString(await self.rep.recv())
            self.commands.append(cmd)
            which = cmd.WhichOneof("command")
            if which == "get_gateway_id":
                reply = gw.GetGatewayIdResponse(gateway_id=GATEWAY_ID).SerializeToString()
            elif which == "send_downlink_frame":
                df = cmd.send_downlink_frame
                ack = gw.DownlinkTxAck(gateway_id=GATEWAY_ID, downlink_id=df.downlink_id)
                for _ in df.items:
                    ack.items.add(status=self.ack_status)
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
        ack = await src.send_downlink(txpk)
        assert ack["txpk_ack"] == {"error": "NONE"}
        kinds = [c.WhichOneof("command") for c in fake.commands]
        assert kinds == ["get_gateway_id", "send_downlink_frame"]
        df = fake.commands[1].send_downlink_frame
        assert df.gateway_id == GATEWAY_ID and ack["downlink_id"] == df.downlink_id
        item = df.items[0]
        assert item.phy_payload == PHY
        assert item.tx_info.frequency == 869_525_000 and item.tx_info.power == 27
        assert item.tx_info.modulation.lora.spreading_factor == 12
        assert item.tx_info.modulation.lora.polarization_inversion
        assert item.tx_info.context == (3_513_348_611).to_bytes(4, "big")
        assert item.tx_info.timing.WhichOneof("parameters") == "delay"

        fake.ack_status = gw.TOO_LATE
        ack = await src.send_downlink(dict(txpk, tmst=1))
        assert ack["txpk_ack"] == {"error": "TOO_LATE"}
        assert src.health()["downlink_errors"] == 1

        cfg = gw.GatewayConfiguration(gateway_id=GATEWAY_ID, version="eu868-v1")
        ch = cfg.channels.add(frequency=868_100_000)
        ch.lora_modulation_config.bandwidth = 125_000
        ch.lora_modulation_config.spreading_factors.extend([7, 8, 9, 10, 11, 12])
        assert await src.send_config(cfg) == {"ok": True, "version": "eu868-v1"}
        assert fake.commands[-1].set_gateway_configuration.channels[0].frequency == 868_100_000

        with pytest.raises(ValueError, match="datr"):
            await src.send_downlink(dict(txpk, datr="50000"))


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
