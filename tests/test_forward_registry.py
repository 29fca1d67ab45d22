"""From a config file to forwarders: every ``[[forward.*]]`` kind builds its class with its values,
and the per-forwarder filters keep foreign devices' frames off the uplink (acked as filtered).
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import pytest

from drivers.gwmp_server import GwmpServer
from gateway.buffer import Buffer
from gateway.config import load_config_text
from gateway.forward.base import DeliveryLoop
from gateway.forward.file import FileForwarder
from gateway.forward.http import HttpForwarder
from gateway.forward.lns import LnsForwarder
from gateway.forward.mqtt import MqttForwarder
from gateway.forward.ngsi import NgsiForwarder
from gateway.forward.registry import build_forwarder
from gateway.records import make_record

GW = 0xB827EBFFFE000001

CONFIG = """
[gateway]
eui = "b827ebfffe000001"
data_dir = "{data_dir}"

[[forward.gwmp]]
name = "lns"
server = "127.0.0.1:1700"
gateway_eui = "0016c001ff10a235"
max_replay_age = "2m"
keepalive = "5s"
dev_addr_prefixes = ["26011000/20"]

[[forward.mqtt]]
name = "city-mqtt"
url = "mqtts://broker.example:8884"
topic_prefix = "us915/"
username = "gw1"
password = "s3cret"
kinds = ["parking"]

[[forward.http]]
name = "hook"
url = "https://hooks.example/in"
format = "cbor"
token = "tok"
timeout = "3s"
max_batch = 50

[[forward.ngsi_ld]]
name = "fiware"
url = "http://orion.example:1026"
api = "ngsi-v2"
service = "parking"

[[forward.file]]
name = "usb"
path = "{data_dir}/out.jsonl"
kinds = ["uplink", "parking"]
"""


class ConcentratordLike:
    """A source whose downlink takes a protobuf frame, not a txpk: must not become a relay."""

    async def send_downlink(self, downlink: Any) -> dict[str, Any]:
        return {}


def test_every_config_kind_builds_its_forwarder_with_the_config_values(tmp_path: Path) -> None:
    cfg = load_config_text(CONFIG.format(data_dir=tmp_path))
    gwmp = GwmpServer(on_uplink=lambda r: None)
    sources: list[Any] = [gwmp, ConcentratordLike()]
    built = {f.name: build_forwarder(f, gateway_eui=cfg.gateway.eui, sources=sources) for f in cfg.forwarders}

    lns = built["lns"]
    assert isinstance(lns, LnsForwarder)
    assert lns.cfg.server == ("127.0.0.1", 1700) and lns.cfg.max_replay_age == 120.0
    assert lns.lns_eui == 0x0016C001FF10A235  # the server's own EUI mapping wins over the gateway's
    assert lns.dev_addr_prefixes == ((0x26011000, 20),)
    assert lns.kinds == {"uplink", "stats"}
    assert lns.relays == [gwmp]

    mqtt = built["city-mqtt"]
    assert isinstance(mqtt, MqttForwarder)
    assert (mqtt.host, mqtt.port, mqtt.tls) == ("broker.example", 8884, True)
    assert mqtt.parking_topic("a/b") == "us915/parking/a_b/state"
    assert mqtt.gateway_eui == f"{GW:016x}"
    assert mqtt.cfg.username == "gw1" and mqtt.cfg.password == "s3cret"
    assert mqtt.kinds == {"parking"}
    assert mqtt.relays == [gwmp]
    assert "s3cret" not in repr(mqtt.cfg)

    hook = built["hook"]
    assert isinstance(hook, HttpForwarder)
    assert hook.cfg.format == "cbor" and hook.cfg.timeout == 3.0 and hook.cfg.max_batch == 50
    assert hook.gateway_eui == f"{GW:016x}"
    assert hook.kinds is None  # everything by default

    ngsi = built["fiware"]
    assert isinstance(ngsi, NgsiForwarder)
    assert ngsi.cfg.api == "ngsi-v2" and ngsi.cfg.service == "parking"
    assert ngsi.endpoint.startswith("http://orion.example:1026/v2/op/update")
    assert ngsi.kinds == {"parking"}

    usb = built["usb"]
    assert isinstance(usb, FileForwarder)
    assert usb.path == tmp_path / "out.jsonl"
    assert usb.kinds == {"uplink", "parking"}


def _uplink(dev_addr: int, fcnt: int) -> Any:
    phy = bytes([0x40]) + dev_addr.to_bytes(4, "little") + bytes([0x80]) + fcnt.to_bytes(2, "little") \
        + b"\x01\xaa\xbb" + b"\x00\x00\x00\x00"
    return make_record("uplink", "gwmp", {"gateway_eui": f"{GW:016x}",
                                         "rxpk": {"data": base64.b64encode(phy).decode(), "tmst": fcnt}})


async def test_dev_addr_prefix_and_kind_filters_send_only_our_devices(tmp_path: Path) -> None:
    text = CONFIG.format(data_dir=tmp_path).replace('kinds = ["uplink", "parking"]',
                                                    'kinds = ["uplink", "parking"]\n'
                                                    'dev_addr_prefixes = ["26011000/20"]\nstart = "oldest"')
    cfg = load_config_text(text)
    fcfg = next(f for f in cfg.forwarders if f.name == "usb")
    fwd = build_forwarder(fcfg, gateway_eui=cfg.gateway.eui, sources=[])
    buf = Buffer(tmp_path / "buf.sqlite3", max_bytes=16 << 20, commit_interval=0.05)
    buf.open()
    try:
        buf.register("usb", start="oldest")
        ours, foreign = 0x26011ABC, 0x26021ABC  # same NetID type, other NwkID: 20-bit prefix differs
        buf.append(_uplink(ours, 1))
        buf.append(_uplink(foreign, 2))
        buf.append(make_record("stats", "gwmp", {"gateway_eui": f"{GW:016x}", "stat": {"rxnb": 1}}))
        join = bytes([0x00]) + bytes(18) + b"\x00\x00\x00\x00"  # JoinRequest: no DevAddr to judge by
        buf.append(make_record("uplink", "gwmp", {"gateway_eui": f"{GW:016x}",
                                                 "rxpk": {"data": base64.b64encode(join).decode(), "tmst": 3}}))
        buf.append(make_record("parking", "sim", {"spot_id": "s1", "status": "free",
                                                 "observed_at": "2026-01-01T00:00:00Z", "device": "x", "data": {}}))
        buf.append(_uplink(ours, 4))
        loop = DeliveryLoop(buf, fwd)
        task = asyncio.create_task(loop.run())
        out = tmp_path / "out.jsonl"
        deadline = asyncio.get_running_loop().time() + 5
        while loop.acked + loop.filtered < 6:
            assert asyncio.get_running_loop().time() < deadline, loop.health()
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        lines = [json.loads(x) for x in out.read_text().splitlines()]
        sent = [(x["kind"], x["body"].get("rxpk", {}).get("tmst")) for x in lines]
        assert sent == [("uplink", 1), ("uplink", 3), ("parking", None), ("uplink", 4)]
        health = loop.health()
        assert health["filtered"] == 2  # the foreign frame and the stats record
        assert health["acked"] == 4
        assert health["lag_records"] == 0  # filtered records are acked, never offered again
    finally:
        buf.close()


def test_unknown_config_type_is_refused_by_name() -> None:
    from gateway.config import ForwardCommon

    with pytest.raises(ValueError, match=r"forward\.odd: no forwarder for config type ForwardCommon"):
        build_forwarder(ForwardCommon(name="odd"), gateway_eui=GW, sources=[])


def test_net_id_filter_holds_for_every_forwarder_that_takes_uplinks(tmp_path: Path) -> None:
    """An operator's NetID filter keeps foreign networks' frames off the LTE link, whichever
    backend the frames go to (the MQTT forwarder once ignored it)."""
    text = CONFIG.format(data_dir=tmp_path).replace('kinds = ["parking"]\n', "").replace(
        'kinds = ["uplink", "parking"]\n', "")
    text = text.replace('dev_addr_prefixes = ["26011000/20"]\n', "")
    text = "\n".join(
        line + ('\nnet_ids = ["000013"]' if line.startswith("name = ") else "")
        for line in text.splitlines()
    )
    cfg = load_config_text(text)
    ours, foreign = 0x26011ABC, 0x48011ABC  # NetID 0x13 (type 0) owns DevAddr 0x26/0x27...
    checked = []
    for fcfg in cfg.forwarders:
        fwd = build_forwarder(fcfg, gateway_eui=cfg.gateway.eui, sources=[])
        if fwd.kinds is not None and "uplink" not in fwd.kinds:
            continue  # parking-only backends (NGSI) never see frames at all
        assert fwd.net_ids == (0x13,), fcfg.name
        assert fwd.accepts(_uplink(ours, 1)), fcfg.name
        assert not fwd.accepts(_uplink(foreign, 1)), fcfg.name
        checked.append(fcfg.name)
    assert sorted(checked) == ["city-mqtt", "hook", "lns", "usb"]
