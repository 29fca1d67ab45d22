"""Property: every datagram the packet-forwarder door accepts becomes records that every
forwarder can encode. One record no backend can encode would otherwise sit in front of every
record behind it (issue 16, defect 1: a 300-level nested `stat`)."""

from __future__ import annotations

import base64
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.gwmp_server import GwmpServer
from gateway.records import Record
from tests.helpers.encodable import EUI, Sink, encode_everywhere

scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=False) | st.text(max_size=40))
# JSON as a hostile packet forwarder could send it: deep, wide, long strings
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=6)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=6), max_leaves=60)
# past orjson's nesting limit (254), and strings far past any real packet forwarder's
deep = (st.integers(min_value=1, max_value=400).map(lambda n: json.loads("[" * n + "1" + "]" * n))
        | st.integers(min_value=500, max_value=70_000).map(lambda n: "x" * n))


def rxpk() -> st.SearchStrategy[dict[str, Any]]:
    good = {
        "tmst": st.integers(min_value=0, max_value=2**32 - 1) | values,
        "freq": st.floats(min_value=860, max_value=870) | values,
        "chan": st.integers(0, 15) | values, "rfch": st.integers(0, 1) | values,
        "stat": st.sampled_from([1, 0, -1]) | values,
        "modu": st.sampled_from(["LORA", "FSK"]) | values,
        "datr": st.sampled_from(["SF7BW125", "SF12BW125", 50000]) | values,
        "codr": st.sampled_from(["4/5", "4/6"]) | values,
        "rssi": st.integers(-140, 0) | values, "lsnr": st.floats(-20, 15) | values,
        "size": st.integers(0, 300) | values,
        "data": st.binary(max_size=300).map(lambda b: base64.b64encode(b).decode()) | values,
        "time": st.just("2026-12-04T05:00:00.000000Z") | values,
    }
    return st.fixed_dictionaries({}, optional={**good, "extra": values | deep})


push_bodies = st.fixed_dictionaries({}, optional={
    "rxpk": st.lists(rxpk(), max_size=4) | values,
    "stat": st.dictionaries(st.sampled_from(["time", "lati", "long", "alti", "rxnb", "rxok",
                                             "rwfw", "ackr", "dwnb", "txnb", "temp", "x"]),
                            values | deep, max_size=8) | values | deep,
})


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=push_bodies, token=st.integers(0, 0xFFFF))
def test_every_accepted_datagram_is_encodable_by_every_forwarder(body: dict[str, Any],
                                                                  token: int) -> None:
    records: list[Record] = []
    server = GwmpServer(on_uplink=records.append, on_stats=records.append)
    server._transport = Sink()  # type: ignore[assignment]
    payload = json.dumps(body).encode()
    datagram = bytes([2]) + token.to_bytes(2, "big") + b"\x00" + EUI.to_bytes(8, "big") + payload
    server.datagram_received(datagram, ("127.0.0.1", 40000))
    assert server.health()["callback_errors"] == 0
    for record in records:
        encode_everywhere(record)
