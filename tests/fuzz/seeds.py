"""Write the seed corpus (``python -m tests.fuzz.seeds``): real inputs the fuzzer mutates from.

Seeds come from the project's own vectors (the Device Repository examples, the PHYPayload
structure vectors) and builders, so the corpus follows the code; it is kept in the repository
under tests/fuzz/corpus/<target>/.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
from pathlib import Path

from drivers.modbus_rtu import crc16
from gateway import frames
from gateway.parking import registry

HERE = Path(__file__).parent
VECTORS = HERE.parent / "vectors"
EUI = 0xB827EBFFFE000001


def _nmea(body: bytes) -> bytes:
    check = 0
    for b in body:
        check ^= b
    return b"$" + body + b"*%02X" % check


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
            "config": [example], "bundle": [tar.getvalue()], "remote_target": [target]}


def main() -> None:
    for target, items in seeds().items():
        d = HERE / "corpus" / target
        d.mkdir(parents=True, exist_ok=True)
        for item in items:
            (d / hashlib.sha1(item).hexdigest()).write_bytes(item)


if __name__ == "__main__":
    main()
