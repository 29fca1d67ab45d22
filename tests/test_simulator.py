"""The simulated packet forwarder against the real GWMP server, over loopback UDP."""

from __future__ import annotations

import asyncio
import base64
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from drivers.gwmp_server import GwmpServer
from drivers.sim.packet_forwarder import Simulator
from gateway import frames
from gateway.cli.simulate import main as simulate_main
from gateway.frames import build as lorawan_build
from gateway.frames import lorawan
from gateway.parking.registry import decode_uplink, list_models
from gateway.records import Record

EUI = 0xB827EBFFFE0000AA


async def run_against_server(
    **sim_kw: Any,
) -> tuple[GwmpServer, Simulator, list[Record], list[Record]]:
    uplinks: list[Record] = []
    stats: list[Record] = []
    server = GwmpServer(bind=("127.0.0.1", 0), on_uplink=uplinks.append, on_stats=stats.append)
    await server.start()
    duration = sim_kw.pop("duration")
    sim = Simulator(server.bound_address, gateway_eui=EUI, **sim_kw)
    await sim.run(duration)
    await server.stop()
    return server, sim, uplinks, stats


async def test_every_datagram_of_the_simulator_is_accounted_for_by_the_server() -> None:
    server, sim, uplinks, stats = await run_against_server(
        sensors=300,
        rate=200.0,
        seed=5,
        duration=2.0,
        stat_interval=0.5,
        keepalive_interval=0.3,
        device_duty_cycle=False,
    )
    c = sim.counters
    health = server.health()
    assert c.rxpk > 250  # ~400 expected at 200/s
    assert health["datagrams"] == c.datagrams
    assert health["outcomes"] == {"acked": c.push_data + c.pull_data}
    assert c.push_acked == c.push_data and c.pull_acked == c.pull_data
    assert health["rxpk"] == c.rxpk == len(uplinks)
    assert len(stats) == c.stats >= 3
    # At 200/s the forwarder batches several rxpk per PUSH_DATA, as lora_pkt_fwd does.
    assert c.push_data < c.rxpk
    gw = health["gateways"][f"{EUI:016x}"]
    assert gw["downlink_addr"] is not None and gw["downlink_addr"] != gw["uplink_addr"]
    assert gw["stat_totals"]["rxnb"] <= c.rxpk


async def test_uplinks_are_real_lorawan_frames_with_plausible_radio_fields() -> None:
    _, sim, uplinks, _ = await run_against_server(sensors=60, rate=150.0, seed=9, duration=1.5)
    devices = {d["dev_addr"]: d for d in sim.devices()}
    mtypes: Counter[str] = Counter()
    models_seen: set[str] = set()
    for rec in uplinks:
        rx = rec.decoded()["rxpk"]
        assert -120 <= rx["rssi"] <= -40 and -15 <= rx["lsnr"] <= 10
        assert rx["freq"] in (868.1, 868.3, 868.5, 867.1, 867.3, 867.5, 867.7, 867.9)
        assert rx["datr"] in {f"SF{sf}BW125" for sf in range(7, 13)} and rx["codr"] == "4/5"
        assert 0 <= rx["tmst"] < 1 << 32 and rx["time"].endswith("Z") and rx["stat"] == 1
        phy = base64.b64decode(rx["data"])
        assert rx["size"] == len(phy)
        p = frames.parse_phy(phy)
        mtypes[frames.MTYPE_NAMES[p.mtype]] += 1
        if p.mtype == 0:
            continue
        dev = devices.get(f"{p.dev_addr:08x}")
        if dev is None:
            continue  # an OTAA device's earlier session, replaced by a later join
        nwk = bytes.fromhex(dev["nwk_s_key"])
        app = bytes.fromhex(dev["app_s_key"])
        mic = lorawan.data_mic_10(nwk, uplink=True, dev_addr=p.dev_addr, fcnt=p.fcnt, msg=phy[:-4])
        assert mic == p.mic, f"bad MIC for {dev['dev_eui']}"
        plain = lorawan.crypt_frm_payload(
            app, uplink=True, dev_addr=p.dev_addr, fcnt=p.fcnt, data=p.frm_payload
        )
        decoded = decode_uplink(dev["model"], p.fport, plain)
        assert "errors" not in decoded, (dev["model"], p.fport, plain.hex(), decoded)
        models_seen.add(dev["model"])
    assert mtypes["JoinRequest"] > 0 and mtypes["UnconfirmedDataUp"] > 0
    assert len(models_seen) >= len(list_models()) // 2


async def test_join_request_mic_verifies_with_the_published_app_key() -> None:
    _, sim, uplinks, _ = await run_against_server(
        sensors=10, rate=50.0, seed=2, duration=0.5, otaa_share=1.0
    )
    keys = {d["dev_eui"]: bytes.fromhex(d["app_key"]) for d in sim.devices()}
    joins = [base64.b64decode(r.decoded()["rxpk"]["data"]) for r in uplinks]
    joins = [phy for phy in joins if phy[0] >> 5 == 0]
    assert joins
    for phy in joins:
        p = frames.parse_phy(phy)
        key = keys[f"{p.dev_eui:016x}"]
        assert lorawan.join_request_mic(key, phy[:-4]) == p.mic


async def test_simulator_answers_downlinks_with_tx_ack_and_takes_a_join_accept() -> None:
    server = GwmpServer(bind=("127.0.0.1", 0), on_uplink=lambda r: None)
    await server.start()
    sim = Simulator(
        server.bound_address,
        sensors=4,
        rate=5.0,
        seed=3,
        gateway_eui=EUI,
        otaa_share=1.0,
        keepalive_interval=0.1,
    )
    task = asyncio.create_task(sim.run(2.0))
    try:
        for _ in range(100):
            if server.health()["gateways"].get(f"{EUI:016x}", {}).get("downlink_addr"):
                break
            await asyncio.sleep(0.02)
        dev = sim.devices()[0]
        app_key = bytes.fromhex(dev["app_key"])
        accept = lorawan_build.build_join_accept(
            app_key, join_nonce=0x123456, net_id=0x13, dev_addr=0x26ABCDEF
        )
        txpk = {
            "imme": True,
            "freq": 869.525,
            "rfch": 0,
            "powe": 27,
            "modu": "LORA",
            "datr": "SF12BW125",
            "codr": "4/5",
            "ipol": True,
            "size": len(accept),
            "data": base64.b64encode(accept).decode(),
        }
        ack = await server.send_downlink(EUI, txpk)
        assert ack["error"] == "NONE"
        assert sim.counters.downlinks == 1 and sim.counters.tx_ack == 1
        assert sim.counters.join_accepts == 1
        assert sim.devices()[0]["dev_addr"] == "26abcdef"
    finally:
        await task
        await server.stop()


async def test_each_sensor_keeps_its_own_duty_cycle() -> None:
    # 5 sensors asked for 50 uplinks/s: after one frame each must stay quiet for
    # at least 99 times its airtime (seconds at SF7), so about 5 frames go out.
    _, sim, uplinks, _ = await run_against_server(sensors=5, rate=50.0, seed=8, duration=1.0)
    assert len(uplinks) == sim.counters.rxpk <= 5
    assert sim.counters.held_by_duty_cycle > 30
    assert sim.legal_rate() < 1.0


def test_unknown_model_is_refused_with_the_list() -> None:
    with pytest.raises(ValueError, match=r"known: .*nwave/nps405"):
        Simulator(("127.0.0.1", 1700), models=["acme/parkomat"])


def test_cli_prints_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async def serve_then_run() -> GwmpServer:
        server = GwmpServer(bind=("127.0.0.1", 0), on_uplink=lambda r: None)
        await server.start()
        host, port = server.bound_address
        devices = tmp_path / "devices.json"
        rc = await asyncio.to_thread(
            simulate_main,
            [
                "--to",
                f"{host}:{port}",
                "--sensors",
                "20",
                "--rate",
                "40",
                "--duration",
                "0.5",
                "--seed",
                "4",
                "--devices-json",
                str(devices),
            ],
        )
        assert rc == 0
        assert devices.stat().st_mode & 0o777 == 0o600
        await server.stop()
        return server

    server = asyncio.run(serve_then_run())
    out = capsys.readouterr().out
    assert out.startswith("sent ") and "acked" in out
    sent = int(out.split()[1])
    assert sent == server.health()["rxpk"] > 5


def test_cli_rejects_a_bad_target(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        simulate_main(["--to", "localhost", "--sensors", "3"])
    assert exc.value.code == 2
    assert "HOST:PORT" in capsys.readouterr().err
