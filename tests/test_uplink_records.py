"""One PUSH_DATA's rxpk to uplink records in one call (``frames.uplink_records``): the compiled
loop (ext/_push_records.pxi) gives what the twin's reference gives, and both give the records
the daemon made one by one before (``make_record``, the door, padded base64)."""

from __future__ import annotations

import base64
import importlib
import json
from types import ModuleType
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings

from drivers.gwmp_server import MAX_PHY
from gateway.frames import _frames_py as twin
from gateway.frames.door import rxpk_door
from gateway.records import Record, make_record
from tests.test_frames_differential import push_datagrams

EUI = "aa555a0000000101"
SRC = "gwmp:0"
US = 1_764_000_000_123_456


def _compiled() -> ModuleType:
    try:
        return importlib.import_module("gateway.frames._frames_c")
    except ImportError:
        # test_frames.py::test_compiled_extension_is_built fails in CI when this happens.
        pytest.skip("gateway.frames._frames_c is not built")


def _one_by_one(rxpk: list[Any]) -> tuple[list[Record], list[dict[str, Any]], list[bytes], list[str]]:
    """What drivers/gwmp_server.py did per rxpk before the loop moved into one call."""
    records, goods, phys, refused = [], [], [], []
    for rx in rxpk:
        if rx.error is not None or rx.phy is None:
            refused.append(rx.error.kind if rx.error is not None else "missing_data")
            continue
        fields = rx.fields
        if len(rx.phy) > MAX_PHY:
            refused.append("too_large")
            continue
        fields["data"] = base64.b64encode(rx.phy).decode("ascii")
        answer = rxpk_door(fields)
        if answer is not None:
            refused.append(answer[0])
            continue
        records.append(make_record("uplink", SRC, {"gateway_eui": EUI, "rxpk": fields}, US))
        goods.append(fields)
        phys.append(rx.phy)
    return records, goods, phys, refused


def _outcomes(dg: bytes) -> list[Any]:
    out = []
    for mod in (twin, _compiled()):
        try:
            push = mod.decode_push_data(dg)
        except twin.FrameError:
            return []
        out.append(mod.uplink_records(push.rxpk, EUI, MAX_PHY, Record, SRC, US))
    out.append(_one_by_one(twin.decode_push_data(dg).rxpk))
    return out


def _same(dg: bytes) -> None:
    results = _outcomes(dg)
    if results:
        ref = results[0]
        for other in results[1:]:
            assert other == ref, dg
        for record in ref[0]:
            assert type(record) is Record and record.priority == 0
            assert record.decoded()["rxpk"]["data"] == base64.b64encode(
                base64.b64decode(record.decoded()["rxpk"]["data"])).decode()


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(push_datagrams())
def test_compiled_and_twin_make_the_same_records_as_one_by_one(dg: bytes) -> None:
    _same(dg)


def _datagram(rxpk: list[dict[str, Any]]) -> bytes:
    return twin.encode_push_data(7, 0xAA555A0000000101, rxpk)


GOOD = {"tmst": 5, "freq": 868.1, "chan": 0, "rfch": 0, "stat": 1, "modu": "LORA",
        "datr": "SF7BW125", "codr": "4/5", "rssi": -60, "lsnr": 7.5}


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 17, 255, 256, 300])
def test_padding_and_length_bound_for_every_remainder(n: int) -> None:
    phy = bytes(range(256))[:n] if n <= 256 else bytes(n)
    rx = {**GOOD, "size": n, "data": base64.b64encode(phy).decode().rstrip("=")}  # unpadded dialect
    records, goods, phys, refused = _compiled().uplink_records(
        _compiled().decode_push_data(_datagram([rx])).rxpk, EUI, MAX_PHY, Record, SRC, US)
    if n == 0:
        assert refused == ["bad_base64"] or refused == ["missing_data"] or records, refused
    elif n > MAX_PHY:
        assert refused == ["too_large"] and records == []
    else:
        assert refused == [] and phys == [phy]
        assert goods[0]["data"] == base64.b64encode(phy).decode()  # padded again
        assert cbor2.loads(records[0].body) == {"gateway_eui": EUI, "rxpk": goods[0]}
    _same(_datagram([rx]))


def test_a_refused_rxpk_between_good_ones_keeps_order_and_says_why() -> None:
    phy = bytes(12)
    good = {**GOOD, "size": 12, "data": base64.b64encode(phy).decode()}
    rssi = {**good, "rssi": 400}  # no radio reports +400 dBm: implausible
    deep = {**good, "x": [[[[[[1]]]]]]}  # deeper than the door allows
    dg = _datagram([{**good, "tmst": 1}, rssi, {**good, "tmst": 2}, deep, {**good, "tmst": 3}])
    for mod in (twin, _compiled()):
        records, goods, _, refused = mod.uplink_records(
            mod.decode_push_data(dg).rxpk, EUI, MAX_PHY, Record, SRC, US)
        assert [g["tmst"] for g in goods] == [1, 2, 3]
        assert [r.decoded()["rxpk"]["tmst"] for r in records] == [1, 2, 3]
        assert refused == ["implausible", "out_of_bounds"]
    _same(dg)


def test_a_body_the_fast_writer_declines_is_written_by_cbor2() -> None:
    phy = bytes(12)
    big = {**GOOD, "size": 12, "data": base64.b64encode(phy).decode(), "xbig": 2**64}
    dg = _datagram([])[:12] + json.dumps({"rxpk": [big]}).encode()  # orjson writes no 2**64
    records = _compiled().uplink_records(
        _compiled().decode_push_data(dg).rxpk, EUI, MAX_PHY, Record, SRC, US)[0]
    assert records and records[0].body == cbor2.dumps({"gateway_eui": EUI, "rxpk": records[0].decoded()["rxpk"]})
    _same(dg)


def test_any_record_type_is_called_when_it_is_no_tuple() -> None:
    class Plain:
        def __init__(self, *args: Any) -> None:
            self.args = args

    phy = bytes(12)
    dg = _datagram([{**GOOD, "size": 12, "data": base64.b64encode(phy).decode()}])
    for mod in (twin, _compiled()):
        (rec,) = mod.uplink_records(mod.decode_push_data(dg).rxpk, EUI, MAX_PHY, Plain, SRC, US)[0]
        assert rec.args[:3] == ("uplink", SRC, US) and rec.args[4] == 0
