"""Per-uplink cost of edge parking (parse + MIC + decrypt + decode + status + spot state).

Side by side in one run: the whole EdgeParking path as it is now, and the same path with the
per-call crypto and registry look-ups it had before (lorawan.data_mic_10 /
decrypt_frm_payload keyed on every frame, registry.parking_status / battery looking the model
up on every frame), then each stage alone, old and new. Passes alternate between the two so
load on the machine hits both alike. Prints µs, ratios and where the time goes; never asserts.

Run: PYTHONPATH=. .venv/bin/python tests/bench/bench_parking.py
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from gateway import frames
from gateway.config import ParkingDevice
from gateway.frames import build as lorawan_build
from gateway.frames import lorawan
from gateway.parking import registry
from gateway.parking.edge import EdgeParking
from gateway.parking.encode import encode_status
from gateway.parking.spots import SpotTable, iso_us
from gateway.records import Record, make_record

TARGET_US = 5.0
N = 20_000
REPEAT = 7
NWK = bytes(range(16))
APP = bytes(range(16, 32))
ADDR = 0x26011234
MODEL = "nwave/nps405"
DEV = ParkingDevice(dev_eui=0x70B3D50000000001, model=MODEL, spot_id="spot:1",
                    dev_addr=ADDR, nwk_s_key=NWK, app_s_key=APP)


class OldCrypto:
    """The crypto as sessions called it before SessionCrypto10: a key schedule per call."""

    def __init__(self, dev_addr: int, nwk: bytes, app: bytes) -> None:
        self.dev_addr, self.nwk, self.app = dev_addr, nwk, app

    def data_mic(self, *, uplink: bool, fcnt: int, msg: bytes) -> bytes:
        return lorawan.data_mic_10(self.nwk, uplink=uplink, dev_addr=self.dev_addr, fcnt=fcnt,
                                   msg=msg)

    def crypt_frm_payload(self, *, fport: int, uplink: bool, fcnt: int, data: bytes) -> bytes:
        return lorawan.decrypt_frm_payload(self.nwk if fport == 0 else self.app, uplink=uplink,
                                           dev_addr=self.dev_addr, fcnt=fcnt, data=data)


def old_reader(model: str) -> registry.SpotReader:
    """Status and battery as edge read them before spot_reader: two look-ups per frame."""
    def read(decoded: Mapping[str, Any]) -> tuple[str | None, float | None]:
        return registry.parking_status(model, decoded), registry.battery(model, decoded)
    return read


def make_edge(tmp: Path, old: bool) -> EdgeParking:
    edge = EdgeParking([DEV], tmp, 3600.0, False, lambda r: None)
    if old:
        for dev in edge.sessions.devices.values():
            assert dev.session is not None
            dev.session.crypto = OldCrypto(ADDR, NWK, APP)  # type: ignore[assignment]
        for eui, (cfg, decode, _, hexeui, unit) in list(edge._meta.items()):
            edge._meta[eui] = (cfg, decode, old_reader(cfg.model), hexeui, unit)
    return edge


def build(change: bool) -> tuple[list[bytes], list[Record]]:
    """N frames with rising FCnt: each a state change, or all the same status (heartbeats)."""
    phys = []
    for i in range(N):
        fport, payload = encode_status(MODEL, (i % 2 == 0) if change else True)
        phys.append(lorawan_build.build_data_uplink(dev_addr=ADDR, fcnt=i + 1, fport=fport,
                                              payload=payload, nwk_s_key=NWK, app_s_key=APP))
    recs = [make_record("uplink", "gwmp:0", {"gateway_eui": "b827ebfffe000001", "rxpk": {
        "tmst": 1, "freq": 868.1, "stat": 1, "modu": "LORA", "datr": "SF7BW125", "rssi": -90,
        "lsnr": 7.0, "size": len(p), "data": frames.b64encode(p)}}) for p in phys]
    return phys, recs


def side_by_side(fns: dict[str, Callable[[], float]]) -> dict[str, float]:
    """Best of REPEAT for each, passes interleaved; each fn returns its own seconds."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(REPEAT):
        for name, fn in fns.items():
            best[name] = min(best[name], fn())
    return {name: s / N * 1e6 for name, s in best.items()}


def timed(fn: Callable[[], object]) -> Callable[[], float]:
    def run() -> float:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t
    return run


def whole(recs: list[Record], tmp: Path, *, old: bool, rxpk_only: bool) -> Callable[[], float]:
    """One pass on a fresh EdgeParking (FCnt rises, so a reused one would see only replays)."""
    pairs = [(r.decoded()["rxpk"], r.received_us) for r in recs]
    counter = iter(range(1_000_000))

    def run() -> float:
        edge = make_edge(tmp / str(next(counter)), old)
        t = time.perf_counter()
        if rxpk_only:
            observe = edge.observe_rxpk
            for rxpk, at in pairs:
                observe(rxpk, at)
        else:
            observe_uplink = edge.observe_uplink
            for r in recs:
                observe_uplink(r)
        return time.perf_counter() - t
    return run


def main() -> None:
    print(f"edge parking, one uplink ({MODEL}, {N} frames, frame codec: "
          f"{frames.IMPLEMENTATION}); target {TARGET_US} µs; best of {REPEAT}\n")
    phys_hb, recs_hb = build(change=False)
    _, recs_ch = build(change=True)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        paths = side_by_side({
            f"{label} {when}": whole(recs, tmp / f"{label}{when}", old=when == "before",
                                     rxpk_only=rxpk)
            for label, recs, rxpk in (
                ("observe_uplink, every frame a change (+record)", recs_ch, False),
                ("observe_uplink, heartbeat (no record)", recs_hb, False),
                ("observe_rxpk, heartbeat (no CBOR)", recs_hb, True),
            )
            for when in ("before", "after")
        })

    parsed = [frames.parse_phy(p) for p in phys_hb]
    b64s = [frames.b64encode(p) for p in phys_hb]
    fields = [(p.raw[:-4], p.fcnt, p.frm_payload) for p in parsed]
    decode = registry.decoder_for(MODEL)
    plains = [lorawan.decrypt_frm_payload(APP, uplink=True, dev_addr=ADDR, fcnt=f, data=b)
              for _, f, b in fields]
    decoded = [decode(1, p) for p in plains]
    crypto = lorawan.SessionCrypto10(ADDR, NWK, APP)
    assert all(crypto.data_mic(uplink=True, fcnt=f, msg=m) == m_old and
               crypto.crypt_frm_payload(fport=1, uplink=True, fcnt=f, data=b) == p
               for (m, f, b), p, m_old in zip(fields[:100], plains, (
                   lorawan.data_mic_10(NWK, uplink=True, dev_addr=ADDR, fcnt=f, msg=m)
                   for m, f, _ in fields[:100]), strict=False))
    read_new, read_old = registry.spot_reader(MODEL), old_reader(MODEL)
    assert [read_new(x) for x in decoded[:100]] == [read_old(x) for x in decoded[:100]]
    table = SpotTable()
    mic, crypt = crypto.data_mic, crypto.crypt_frm_payload
    stages = side_by_side({name: timed(fn) for name, fn in {
        "record.decoded() (CBOR)": lambda: [r.decoded() for r in recs_hb],
        "b64decode + parse_phy": lambda: [frames.parse_phy(frames.b64decode_tolerant(s))
                                          for s in b64s],
        "MIC before (lorawan.data_mic_10)": lambda: [
            lorawan.data_mic_10(NWK, uplink=True, dev_addr=ADDR, fcnt=f, msg=m)
            for m, f, _ in fields],
        "MIC after (SessionCrypto10.data_mic)": lambda: [
            mic(uplink=True, fcnt=f, msg=m) for m, f, _ in fields],
        "decrypt before (lorawan.decrypt_frm_payload)": lambda: [
            lorawan.decrypt_frm_payload(APP, uplink=True, dev_addr=ADDR, fcnt=f, data=b)
            for _, f, b in fields],
        "decrypt after (SessionCrypto10.crypt_frm_payload)": lambda: [
            crypt(fport=1, uplink=True, fcnt=f, data=b) for _, f, b in fields],
        "decode (vendor decoder)": lambda: [decode(1, p) for p in plains],
        "status + battery before (parking_status, battery)": lambda: [
            read_old(x) for x in decoded],
        "status + battery after (spot_reader)": lambda: [read_new(x) for x in decoded],
        "spot state update": lambda: [
            table.report("spot:1", "occupied", i, device="70b3d50000000001", battery=None,
                         rssi=-90.0, snr=7.0) for i in range(N)],
        "iso_us (record time, 1 s of frames)": lambda: [
            iso_us(1_764_091_200_000_000 + i * 50) for i in range(N)],
        "make_record (parking, CBOR)": lambda: [
            make_record("parking", "parking", {"spot_id": "spot:1", "status": "free",
                                               "observed_at": "2026-01-01T00:00:00.000000Z",
                                               "device": "70b3d50000000001", "data": x,
                                               "rssi": -90.0, "snr": 7.0})
            for x in decoded],
    }.items()})

    rows = {**paths, **stages}
    width = max(map(len, rows))
    print(f"{'':{width}}  {'µs':>7}  {'× target':>8}")
    for i, (name, us) in enumerate(rows.items()):
        if i == len(paths):
            print()
        print(f"{name:{width}}  {us:7.2f}  {us / TARGET_US:8.2f}")

    print("\nbefore/after, same run:")
    for label in ("observe_uplink, every frame a change (+record)",
                  "observe_uplink, heartbeat (no record)", "observe_rxpk, heartbeat (no CBOR)"):
        b, a = paths[f"{label} before"], paths[f"{label} after"]
        print(f"  {label}: {b:.2f} -> {a:.2f} µs ({b / a:.2f}x)")
    for what in ("MIC", "decrypt", "status + battery"):
        b = next(v for k, v in stages.items() if k.startswith(f"{what} before"))
        a = next(v for k, v in stages.items() if k.startswith(f"{what} after"))
        print(f"  {what}: {b:.2f} -> {a:.2f} µs ({b / a:.2f}x)")
    print("  (the 'before' path keeps this change's glue savings: NamedTuple result, fewer "
          "isinstance calls; the earlier code was slower still)")

    path = paths["observe_rxpk, heartbeat (no CBOR) after"]
    parts = {
        "parse": stages["b64decode + parse_phy"],
        "MIC": stages["MIC after (SessionCrypto10.data_mic)"],
        "decrypt": stages["decrypt after (SessionCrypto10.crypt_frm_payload)"],
        "decode": stages["decode (vendor decoder)"],
        "status+battery": stages["status + battery after (spot_reader)"],
        "spot": stages["spot state update"],
    }
    parts["glue (sessions, edge: lookups, FCnt, result, signal)"] = path - sum(parts.values())
    print(f"\nheartbeat path (observe_rxpk) {path:.2f} µs = {path / TARGET_US:.2f}x target; "
          "where it goes:")
    for name, us in parts.items():
        print(f"  {name:52s} {us:5.2f} µs  {us / path:4.0%}")
    cbor = stages["record.decoded() (CBOR)"]
    print(f"observe_uplink adds the record's CBOR decode ({cbor:.2f} µs) to that; a state "
          f"change adds iso_us + make_record "
          f"({stages['iso_us (record time, 1 s of frames)'] + stages['make_record (parking, CBOR)']:.2f}"
          " µs)")


if __name__ == "__main__":
    main()
