"""The compiled CBOR writer for record bodies (ext/_cbor_fast.pxi) writes cbor2.dumps's bytes,
or declines and leaves the value to cbor2. Records made in either build read back the same."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import frames
from gateway.records import make_record


def _compiled() -> ModuleType:
    try:
        return importlib.import_module("gateway.frames._frames_c")
    except ImportError:
        # test_frames.py::test_compiled_extension_is_built fails in CI when this happens.
        pytest.skip("gateway.frames._frames_c is not built")


def check(value: Any) -> bool:
    fast = _compiled().cbor_dumps_fast(value)
    if fast is None:
        return False
    assert fast == cbor2.dumps(value), value
    return True


def test_every_rxpk_the_gateway_decodes_is_written_by_the_compiled_writer() -> None:
    rxpk = [{"tmst": 2**32 - 1, "chan": 2, "rfch": 0, "freq": 868.5, "stat": -1, "modu": "LORA",
             "datr": "SF7BW125", "codr": "4/5", "rssi": -35, "lsnr": -5.25, "size": 3, "data": "AAEC",
             "time": "2026-12-04T10:00:00.123456Z", "tmms": 1417000000123}]
    push = frames.decode_push_data(frames.encode_push_data(1, 0xAA555A0000000101, rxpk))
    body = {"gateway_eui": "aa555a0000000101", "rxpk": push.rxpk[0].fields}
    assert check(body)
    record = make_record("uplink", "gwmp:0", body, 1)
    assert record.body == cbor2.dumps(body) and record.decoded() == body


def _nested(depth: int) -> list[Any]:
    out: list[Any] = [1]
    for _ in range(depth):
        out = [out]
    return out


@pytest.mark.parametrize("value", [
    2**64, -(2**64), float("nan"), float("inf"), "\ud800", {1, 2}, 1 + 2j, bytearray(b"x"),
    type("S", (str,), {})("sub"), _nested(20),
])
def test_values_cbor2_must_answer_for_are_declined(value: Any) -> None:
    assert _compiled().cbor_dumps_fast(value) is None


values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**66), max_value=2**66),
              st.floats(), st.text(), st.binary(max_size=300)),
    lambda inner: st.one_of(st.lists(inner, max_size=6), st.tuples(inner, inner),
                            st.dictionaries(st.one_of(st.text(max_size=8), st.integers()), inner, max_size=6)),
    max_leaves=40,
)


@settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))
@given(values)
def test_random_values_are_written_as_cbor2_writes_them_or_declined(value: Any) -> None:
    check(value)
