"""Per-uplink cost of edge parking (MIC check + decrypt + decode + spot state), with a breakdown.

Side by side in one run: the whole EdgeParking path, its stages alone, and the crypto with
per-key objects cached (cryptography's CMAC.copy() and a reusable ECB encryptor), which is
what a keyed-session API in gateway/lorawan.py could give. Prints µs and ratios; never asserts.

Run: .venv/bin/python tests/bench/bench_parking.py
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

from gateway import frames, lorawan
from gateway.config import ParkingDevice
from gateway.parking import registry
from gateway.parking.edge import EdgeParking
from gateway.parking.encode import encode_status
from gateway.parking.spots import SpotTable
from gateway.records import Record, make_record

TARGET_US = 5.0
N = 20_000
NWK = bytes(range(16))
APP = bytes(range(16, 32))
ADDR = 0x26011234
MODEL = "nwave/nps405"
DEV = ParkingDevice(dev_eui=0x70B3D50000000001, model=MODEL, spot_id="spot:1",
                    dev_addr=ADDR, nwk_s_key=NWK, app_s_key=APP)


def best_us(fn: Callable[[], object], n: int, repeat: int = 5) -> float:
    """Best of ``repeat`` runs of ``fn`` (which handles ``n`` items), per item, in µs."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best / n * 1e6


def build(change: bool) -> tuple[list[bytes], list[Record]]:
    """N frames with rising FCnt: each a state change, or all the same status (heartbeats)."""
    phys = []
    for i in range(N):
        fport, payload = encode_status(MODEL, (i % 2 == 0) if change else True)
        phys.append(lorawan.build_data_uplink(dev_addr=ADDR, fcnt=i + 1, fport=fport,
                                              payload=payload, nwk_s_key=NWK, app_s_key=APP))
    recs = [make_record("uplink", "gwmp:0", {"gateway_eui": "b827ebfffe000001", "rxpk": {
        "tmst": 1, "freq": 868.1, "stat": 1, "modu": "LORA", "datr": "SF7BW125", "rssi": -90,
        "lsnr": 7.0, "size": len(p), "data": frames.b64encode(p)}}) for p in phys]
    return phys, recs


def whole(recs: list[Record], tmp: Path, *, rxpk_only: bool) -> float:
    """Best of 5 passes, each on a fresh EdgeParking (FCnt rises, so a reused one would see
    nothing but replays)."""
    pairs = [(r.decoded()["rxpk"], r.received_us) for r in recs]
    best = float("inf")
    for i in range(5):
        out: list[Record] = []
        edge = EdgeParking([DEV], tmp / str(i), 3600.0, False, out.append)
        t = time.perf_counter()
        if rxpk_only:
            for rxpk, at in pairs:
                edge.observe_rxpk(rxpk, at)
        else:
            for r in recs:
                edge.observe_uplink(r)
        best = min(best, time.perf_counter() - t)
    return best / len(recs) * 1e6


class CachedKeys:
    """What a per-session object in lorawan.py could hold: key schedules made once."""

    def __init__(self, nwk: bytes, app: bytes) -> None:
        self._cmac = CMAC(algorithms.AES(nwk))
        self._ecb = Cipher(algorithms.AES(app), modes.ECB()).encryptor()

    def mic(self, fcnt: int, msg: bytes) -> bytes:
        c = self._cmac.copy()
        c.update(b"\x49\x00\x00\x00\x00\x00" + ADDR.to_bytes(4, "little")
                 + fcnt.to_bytes(4, "little") + bytes((0, len(msg))) + msg)
        return c.finalize()[:4]

    def decrypt(self, fcnt: int, data: bytes) -> bytes:
        n = (len(data) + 15) // 16
        blocks = b"".join(b"\x01\x00\x00\x00\x00\x00" + ADDR.to_bytes(4, "little")
                          + fcnt.to_bytes(4, "little") + bytes((0, i)) for i in range(1, n + 1))
        stream = self._ecb.update(blocks)
        return (int.from_bytes(data, "big") ^ int.from_bytes(stream[: len(data)], "big")).to_bytes(
            len(data), "big")


def main() -> None:
    print(f"edge parking, one uplink ({MODEL}, {N} frames, frame codec: "
          f"{frames.IMPLEMENTATION}); target {TARGET_US} µs\n")
    phys_hb, recs_hb = build(change=False)
    _, recs_ch = build(change=True)
    with tempfile.TemporaryDirectory() as d:
        rows = {
            "observe_uplink, every frame a change (+record)": whole(recs_ch, Path(d) / "a",
                                                                     rxpk_only=False),
            "observe_uplink, heartbeat (no record)": whole(recs_hb, Path(d) / "b",
                                                          rxpk_only=False),
            "observe_rxpk, heartbeat (no CBOR)": whole(recs_hb, Path(d) / "c", rxpk_only=True),
        }

    parsed = [frames.parse_phy(p) for p in phys_hb]
    b64s = [frames.b64encode(p) for p in phys_hb]
    fields = [(p.raw[:-4], p.fcnt, p.frm_payload, p.fport) for p in parsed]
    recs_sample = recs_hb
    decode = registry.decoder_for(MODEL)
    plains = [lorawan.decrypt_frm_payload(APP, uplink=True, dev_addr=ADDR, fcnt=f, data=b)
              for _, f, b, _ in fields]
    decoded = [decode(1, p) for p in plains]
    table = SpotTable()
    cached = CachedKeys(NWK, APP)
    assert all(cached.mic(f, m) == lorawan.data_mic_10(NWK, uplink=True, dev_addr=ADDR, fcnt=f,
                                                        msg=m) for m, f, _, _ in fields[:100])
    assert all(cached.decrypt(f, b) == p for (_, f, b, _), p in zip(fields[:100], plains,
                                                                     strict=False))
    stages: dict[str, Callable[[], object]] = {
        "record.decoded() (CBOR)": lambda: [r.decoded() for r in recs_sample],
        "b64decode + parse_phy": lambda: [frames.parse_phy(frames.b64decode_tolerant(s))
                                          for s in b64s],
        "MIC (lorawan.data_mic_10)": lambda: [
            lorawan.data_mic_10(NWK, uplink=True, dev_addr=ADDR, fcnt=f, msg=m)
            for m, f, _, _ in fields],
        "decrypt (lorawan.decrypt_frm_payload)": lambda: [
            lorawan.decrypt_frm_payload(APP, uplink=True, dev_addr=ADDR, fcnt=f, data=b)
            for _, f, b, _ in fields],
        "decode (vendor decoder)": lambda: [decode(1, p) for p in plains],
        "parking_status + battery": lambda: [
            (registry.parking_status(MODEL, x), registry.battery(MODEL, x)) for x in decoded],
        "spot state update": lambda: [
            table.report("spot:1", "occupied", i, device="70b3d50000000001", battery=None,
                         rssi=-90.0, snr=7.0) for i in range(N)],
        "make_record (parking, CBOR)": lambda: [
            make_record("parking", "parking", {"spot_id": "spot:1", "status": "free",
                                               "observed_at": "2026-01-01T00:00:00.000000Z",
                                               "device": "70b3d50000000001", "data": x,
                                               "rssi": -90.0, "snr": 7.0})
            for x in decoded],
        "MIC, key schedule cached (CMAC.copy)": lambda: [cached.mic(f, m)
                                                         for m, f, _, _ in fields],
        "decrypt, ECB encryptor cached": lambda: [cached.decrypt(f, b)
                                                 for _, f, b, _ in fields],
    }
    for name, fn in stages.items():
        rows[name] = best_us(fn, N)

    width = max(map(len, rows))
    base = rows["observe_uplink, heartbeat (no record)"]
    print(f"{'':{width}}  {'µs':>7}  {'× target':>8}  {'share of heartbeat path':>8}")
    for name, us in rows.items():
        print(f"{name:{width}}  {us:7.2f}  {us / TARGET_US:8.2f}  {us / base:8.0%}")
    crypto = rows["MIC (lorawan.data_mic_10)"] + rows["decrypt (lorawan.decrypt_frm_payload)"]
    crypto_cached = (rows["MIC, key schedule cached (CMAC.copy)"]
                     + rows["decrypt, ECB encryptor cached"])
    print(f"\ncrypto as called now {crypto:.2f} µs; with cached key objects {crypto_cached:.2f} µs "
          f"(ratio {crypto / crypto_cached:.2f}x)")
    rest = rows["decode (vendor decoder)"] + rows["parking_status + battery"] + rows[
        "spot state update"]
    print(f"decode + status + state {rest:.2f} µs; crypto / (decode+state) = {crypto / rest:.2f}")
    path = rows["observe_rxpk, heartbeat (no CBOR)"]
    glue = path - crypto - rest - rows["b64decode + parse_phy"]
    print(f"glue in edge/sessions (heartbeat path minus its stages): {glue:.2f} µs")
    print(f"heartbeat path with cached key objects (projected): {path - crypto + crypto_cached:.2f} "
          f"µs = {(path - crypto + crypto_cached) / TARGET_US:.2f}x target")


if __name__ == "__main__":
    main()
