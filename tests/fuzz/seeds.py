"""Write the seed corpus (``python -m tests.fuzz.seeds``): real inputs the fuzzer mutates from.

Seeds come from the project's own vectors (the Device Repository examples, the PHYPayload
structure vectors) and builders, so the corpus follows the code; it is kept in the repository
under tests/fuzz/corpus/<target>/.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import json
import shutil
import tarfile
import tempfile
from pathlib import Path

from drivers.modbus_rtu import crc16
from gateway import frames
from gateway.parking import registry

HERE = Path(__file__).parent
#: A published repository (public metadata and one target; its keys were thrown away) for
#: the ``metadata`` target: valid for 20 years, so mutations of it reach past the signatures.
TUF = HERE / "tuf"
VECTORS = HERE.parent / "vectors"
EUI = 0xB827EBFFFE000001


def _nmea(body: bytes) -> bytes:
    check = 0
    for b in body:
        check ^= b
    return b"$" + body + b"*%02X" % check


def make_tuf_repo() -> None:
    from gateway.fleet.repo import DAY, ROLES, Repository

    with tempfile.TemporaryDirectory() as tmp:
        repo = Repository.init(Path(tmp) / "repo", expiry={r: 20 * 365 * DAY for r in ROLES})
        repo.add_target("configs/all.toml", b'[[forward.mqtt]]\nname = "city"\n'
                        b'url = "mqtt://broker.example.org"\n', repo.bump_version())
        repo.save()
        repo.publish()
        shutil.rmtree(TUF, ignore_errors=True)
        for sub in ("metadata", "targets"):
            shutil.copytree(Path(tmp) / "repo" / sub, TUF / sub)


@functools.cache
def tuf_files() -> dict[str, bytes]:
    """The repository's files as a gateway fetches them (``metadata/...``, ``targets/...``)."""
    return {p.relative_to(TUF).as_posix(): p.read_bytes() for p in sorted(TUF.rglob("*")) if p.is_file()}


def station_seeds() -> list[bytes]:
    from tests.fuzz.targets import STATION_LOCAL, _station
    from tests.helpers.station_lns import EU868_ROUTER_CONFIG

    xtime = _station()[1].clocks[STATION_LOCAL]._xtime(1_000_000)  # an uplink it has seen
    dn = {"msgtype": "dnmsg", "DevEui": "00-00-00-00-00-00-00-01", "dC": 0, "diid": 7, "pdu": "60aabbccdd",
          "RxDelay": 1, "RX1DR": 5, "RX1Freq": 868100000, "RX2DR": 0, "RX2Freq": 869525000,
          "xtime": xtime, "rctx": 0, "priority": 0, "MuxTime": 1790000000.5}
    msgs: list[object] = [
        {"router": "0-16c0:1ff:0:1", "muxs": "muxs-::0", "uri": "wss://lns.example.org:6887/traffic/0-16c0:1ff:0:1"},
        {"router": 1, "error": "Router not provisioned"},
        EU868_ROUTER_CONFIG, dn, {**dn, "dC": 2, "xtime": 0},
        {"msgtype": "dnsched", "schedule": [{"pdu": "60", "DR": 3, "Freq": 869525000, "gpstime": 10**15}]},
        {"msgtype": "timesync", "txtime": 123456789, "gpstime": 1_400_000_000_000_000},
        {"msgtype": "runcmd", "command": "reboot"}, {"msgtype": "error", "error": "x" * 40}]
    return [json.dumps(m).encode() for m in msgs]


def seeds() -> dict[str, list[bytes]]:
    phys = [bytes.fromhex(v["phy"]) for v in json.loads((VECTORS / "phy_structure.json").read_text())["vectors"]][:12]
    rxpk = [{"tmst": 1, "freq": 868.1, "chan": 0, "rfch": 0, "stat": 1, "modu": "LORA",
             "datr": "SF7BW125", "codr": "4/5", "rssi": -60, "lsnr": 7.5, "size": len(p),
             "data": base64.b64encode(p).decode()} for p in phys[:3]]
    stat = {"time": "2026-12-04 05:00:00 GMT", "rxnb": 3, "rxok": 3, "rxfw": 3, "ackr": 100.0,
            "dwnb": 0, "txnb": 0, "temp": 41.7}
    gwmp = [frames.encode_push_data(7, EUI, rxpk),
            bytes([2, 0, 8, 0]) + EUI.to_bytes(8, "big") + json.dumps({"stat": stat}).encode(),
            bytes([2, 0, 9, 2]) + EUI.to_bytes(8, "big"),  # PULL_DATA
            bytes([2, 0, 10, 5]) + EUI.to_bytes(8, "big") + b'{"txpk_ack":{"error":"NONE"}}']
    models = registry.list_models()
    sensors = []
    for f in sorted((VECTORS / "sensors").glob("*.json")):
        d = json.loads(f.read_text())
        if d["model"] in models:
            for ex in d["examples"][:3]:
                sensors.append(bytes([models.index(d["model"]), ex["fPort"]]) + bytes.fromhex(ex["bytes"]))
    nmea = [_nmea(b"GPGGA,050000.00,5115.3720,N,00709.0420,E,1,08,0.9,158.0,M,47.0,M,,"),
            _nmea(b"GNRMC,050000.00,A,5115.3720,N,00709.0420,E,0.0,0.0,041226,,,A")]
    reply = bytes([1, 3, 2, 0, 1])
    modbus = [bytes([1, 1, 0]) + reply + crc16(reply).to_bytes(2, "little")]
    example = (HERE.parent.parent / "deploy" / "schwebe.example.toml").read_bytes()
    target = b'[[forward.mqtt]]\nname = "city"\nurl = "mqtt://broker.example.org"\n'
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as t:
        for name, body in (("metadata/root.json", b'{"signed": {}}'), ("targets/configs/x.all.toml", target)):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            t.addfile(info, io.BytesIO(body))
    return {"gwmp": gwmp, "phy": phys, "sensors": sensors, "nmea": nmea, "modbus": modbus,
            "config": [example], "bundle": [tar.getvalue()], "remote_target": [target],
            "station": station_seeds(),
            "metadata": metadata_seeds()}


def metadata_seeds() -> list[bytes]:
    files = tuf_files()
    names = sorted([*files, "metadata/2.root.json"])  # as the target picks them
    return [bytes([names.index(k)]) + v for k, v in files.items()] + [
        bytes([names.index("metadata/2.root.json")]) + files["metadata/1.root.json"]]


def main() -> None:
    if not TUF.exists():
        make_tuf_repo()
    for target, items in seeds().items():
        d = HERE / "corpus" / target
        d.mkdir(parents=True, exist_ok=True)
        for item in items:
            (d / hashlib.sha1(item).hexdigest()).write_bytes(item)


if __name__ == "__main__":
    main()
