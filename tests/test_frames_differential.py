"""Differential tests: the compiled codec and the Python twin must agree on every input.

Random valid frames built from fields, random bytes, mutated frames, and PUSH_DATA datagrams
with messy JSON (escapes, exponents, unicode, bad base64): same result or the same error.
The default run is quick; the `slow` variants run 100 000 examples each (CI runs them).
"""

from __future__ import annotations

import base64
import importlib
import json
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.frames import _frames_py as twin


def _compiled() -> ModuleType:
    try:
        return importlib.import_module("gateway.frames._frames_c")
    except ImportError:
        # test_frames.py::test_compiled_extension_is_built fails in CI when this happens.
        pytest.skip("gateway.frames._frames_c is not built")


QUICK = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
THOROUGH = settings(max_examples=100_000, deadline=None, suppress_health_check=list(HealthCheck))


def outcome(fn: Callable[[Any], Any], arg: Any) -> tuple[Any, ...]:
    """What a caller sees: the value (repr keeps int/float and -0.0 apart) or the error."""
    try:
        value = fn(arg)
    except twin.FrameError as exc:
        return ("error", exc.kind, exc.offset, str(exc))
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.descr, value.tobytes())
    as_dict = getattr(value, "as_dict", None)
    return ("ok", type(value).__name__, repr(as_dict() if as_dict else value))


def assert_same(name: str, arg: Any) -> None:
    c = _compiled()
    got_c = outcome(getattr(c, name), arg)
    got_py = outcome(getattr(twin, name), arg)
    assert got_c == got_py, f"{name}({arg!r}) differs"


# ---------------------------------------------------------------------------- PHYPayload

_rfu = st.integers(0, 7).map(lambda r: r << 2)


@st.composite
def data_frames(draw: st.DrawFn) -> bytes:
    mtype = draw(st.integers(2, 5))
    fopts = draw(st.binary(max_size=15))
    fctrl = (draw(st.integers(0, 15)) << 4) | len(fopts)
    port = draw(st.one_of(st.none(), st.tuples(st.integers(0, 255), st.binary(max_size=64))))
    body = (
        draw(st.binary(min_size=4, max_size=4))
        + bytes([fctrl])
        + draw(st.binary(min_size=2, max_size=2))
        + fopts
    )
    if port is not None:
        body += bytes([port[0]]) + port[1]
    return bytes([(mtype << 5) | draw(_rfu)]) + body + draw(st.binary(min_size=4, max_size=4))


@st.composite
def other_frames(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["jr", "ja", "rejoin", "prop"]))
    if kind == "jr":
        return bytes([draw(_rfu)]) + draw(st.binary(min_size=22, max_size=22))
    if kind == "ja":
        n = draw(st.sampled_from([16, 32]))
        return bytes([0x20 | draw(_rfu)]) + draw(st.binary(min_size=n, max_size=n))
    if kind == "rejoin":
        rtype = draw(st.integers(0, 2))
        n = 22 if rtype == 1 else 17
        return bytes([0xC0 | draw(_rfu), rtype]) + draw(st.binary(min_size=n, max_size=n))
    return bytes([0xE0 | draw(_rfu)]) + draw(st.binary(max_size=40))


valid_frames = st.one_of(data_frames(), other_frames())


@st.composite
def mutated_frames(draw: st.DrawFn) -> bytes:
    raw = bytearray(draw(valid_frames))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["cut", "flip", "grow", "mhdr"]))
        if op == "cut" and raw:
            del raw[draw(st.integers(0, len(raw) - 1)) :]
        elif op == "flip" and raw:
            i = draw(st.integers(0, len(raw) - 1))
            raw[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "grow":
            raw += draw(st.binary(min_size=1, max_size=5))
        elif raw:
            raw[0] = draw(st.integers(0, 255))
    return bytes(raw)


odd_rejoins = st.builds(
    lambda t, rest: bytes([0xC0, t]) + rest, st.integers(3, 255), st.binary(max_size=30)
)
any_frame = st.one_of(valid_frames, mutated_frames(), odd_rejoins, st.binary(max_size=64))


def _phy_property(raw: bytes) -> None:
    assert_same("parse_phy", raw)


def _batch_property(frames: list[bytes]) -> None:
    assert_same("parse_phy_batch", frames)


test_parse_phy_agrees = QUICK(given(any_frame)(_phy_property))
test_parse_phy_batch_agrees = QUICK(given(st.lists(any_frame, max_size=20))(_batch_property))
test_parse_phy_agrees_100k = pytest.mark.timeout(3600)(
    pytest.mark.slow(THOROUGH(given(any_frame)(_phy_property)))
)


def test_valid_frames_parse_and_agree() -> None:
    @QUICK
    @given(valid_frames)
    def check(raw: bytes) -> None:
        p = twin.parse_phy(raw)  # built from fields: must be accepted
        assert p.raw == raw
        assert_same("parse_phy", raw)

    check()


# ---------------------------------------------------------------------------- GWMP

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(-200, 1000).map(lambda f: round(f, 3)),
    st.text(max_size=12),
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/+-_. :", max_size=30),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def data_fields(draw: st.DrawFn) -> dict[str, Any]:
    phy = draw(st.one_of(valid_frames, st.binary(max_size=40)))
    style = draw(st.sampled_from(["std", "unpadded", "urlsafe", "garbage", "none", "number"]))
    out: dict[str, Any] = {}
    if style == "std":
        out["data"] = base64.b64encode(phy).decode()
    elif style == "unpadded":
        out["data"] = base64.b64encode(phy).decode().rstrip("=")
    elif style == "urlsafe":
        out["data"] = base64.urlsafe_b64encode(phy).decode()
    elif style == "garbage":
        out["data"] = draw(st.text(max_size=12))
    elif style == "number":
        out["data"] = draw(json_scalars)
    size = draw(st.sampled_from(["right", "wrong", "absent", "odd"]))
    if size == "right":
        out["size"] = len(phy)
    elif size == "wrong":
        out["size"] = len(phy) + draw(st.integers(1, 3))
    elif size == "odd":
        out["size"] = draw(json_scalars)
    return out


@st.composite
def rxpk_objects(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 20)) == 0:
        return draw(json_values)  # not even an object
    fields: dict[str, Any] = {
        "tmst": draw(st.integers(0, 2**32 - 1)),
        "freq": draw(st.sampled_from([868.1, 868.3, 868.5, 867.1, 867.9, 869.525])),
        "rssi": draw(st.integers(-140, 0)),
        "lsnr": draw(st.floats(-20, 15).map(lambda f: round(f, 1))),
        "datr": draw(
            st.one_of(
                st.integers(7, 12).map(lambda sf: f"SF{sf}BW125"),
                st.sampled_from(["SF7BW500", "SF100BW125", "SF7BW", "SF12BW1250", "FSK", ""]),
                json_scalars,
            )
        ),
        "modu": "LORA",
        "codr": "4/5",
    }
    fields.update(draw(data_fields()))
    fields.update(draw(st.dictionaries(st.text(max_size=5), json_values, max_size=3)))
    keys = list(fields)
    order = draw(st.permutations(keys))
    return {k: fields[k] for k in order}


def _encode_body(draw: st.DrawFn, body: Any) -> bytes:
    style = draw(st.sampled_from(["orjson", "json", "json_ascii", "json_spaced"]))
    if style == "orjson":
        return orjson.dumps(body)
    if style == "json":
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    if style == "json_ascii":
        return json.dumps(body).encode()
    return json.dumps(body, indent=draw(st.integers(0, 2))).encode()


@st.composite
def push_datagrams(draw: st.DrawFn) -> bytes:
    body: dict[str, Any] = {}
    if draw(st.integers(0, 9)) > 0:
        body["rxpk"] = draw(st.lists(rxpk_objects(), max_size=4))
    if draw(st.booleans()):
        body["stat"] = draw(
            st.one_of(st.dictionaries(st.text(max_size=5), json_scalars, max_size=4), json_values)
        )
    text = bytearray(_encode_body(draw, body))
    mutation = draw(st.sampled_from(["none"] * 6 + ["cut", "insert", "nul", "dupkey"]))
    if mutation == "cut" and text:
        del text[draw(st.integers(0, len(text) - 1)) :]
    elif mutation == "insert":
        i = draw(st.integers(0, len(text)))
        text[i:i] = draw(st.sampled_from([b" ", b",", b"\\", b'"', b"}", b"\x01", b"\xff", b"0"]))
    elif mutation == "nul":
        text += b"\x00" * draw(st.integers(1, 3))
    elif mutation == "dupkey" and text.startswith(b"{"):
        text[1:1] = b'"rxpk":[],'
    version = draw(st.sampled_from([2, 2, 2, 1, 0, 3]))
    ident = draw(st.sampled_from([0, 0, 0, 0, 1, 2, 3, 4, 5, 6]))
    head = bytes([version]) + draw(st.binary(min_size=2, max_size=2)) + bytes([ident])
    return head + draw(st.binary(min_size=8, max_size=8)) + bytes(text)


any_datagram = st.one_of(push_datagrams(), st.binary(max_size=40))


def _gwmp_property(dg: bytes) -> None:
    assert_same("decode_push_data", dg)
    assert_same("parse_gwmp", dg)


def _push_batch_property(dgs: list[bytes]) -> None:
    assert_same("push_data_batch", dgs)


test_gwmp_agrees = QUICK(given(any_datagram)(_gwmp_property))
test_push_data_batch_agrees = QUICK(given(st.lists(any_datagram, max_size=5))(_push_batch_property))
# Hypothesis builds these datagrams at ~5 ms each (100 000 took 8-12 minutes of CI): 30 000
# here, while the atheris `gwmp` fuzz target (tests/fuzz) checks the same agreement at several
# thousand datagrams a second, guided by coverage.
test_gwmp_agrees_30k = pytest.mark.timeout(3600)(
    pytest.mark.slow(settings(THOROUGH, max_examples=30_000)(given(any_datagram)(_gwmp_property)))
)


def test_base64_agrees() -> None:
    @QUICK
    @given(st.one_of(st.text(max_size=20), st.text(alphabet="QUJD+/-_=", max_size=20)))
    def check(text: str) -> None:
        assert_same("b64decode_tolerant", text)

    check()


def test_fast_path_covers_what_forwarders_send() -> None:
    """The fused scanner must handle the common layout itself, not quietly fall back."""
    c = _compiled()

    @QUICK
    @given(st.lists(rxpk_objects(), max_size=4))
    def check(rxpk: list[Any]) -> None:
        typical = [
            {
                k: v
                for k, v in (r.items() if isinstance(r, dict) else [])
                if isinstance(v, str | int)
                and (not isinstance(v, str) or v.isascii())
                and (not isinstance(v, int) or abs(v) < 10**15)
            }
            for r in rxpk
        ]
        body = orjson.dumps({"rxpk": typical, "stat": {"rxnb": 1, "ackr": 100.0, "temp": 23.5}})
        if all(32 <= b < 127 for b in body) and b"\\" not in body:
            assert c._fast_scan(body) == orjson.loads(body)
            # decode_push_data has its own fused scanner: it must not fall back either
            before = c._push_data_fallbacks()
            assert_same("decode_push_data", b"\x02\x01\x00\x00" + bytes(8) + body)
            assert c._push_data_fallbacks() == before

    check()


def test_encoders_round_trip() -> None:
    @QUICK
    @given(
        st.integers(0, 0xFFFF),
        st.integers(0, 2**64 - 1),
        st.lists(st.dictionaries(st.text(max_size=5), json_scalars, max_size=4), max_size=4),
        st.sampled_from([1, 2]),
    )
    def check(token: int, eui: int, rxpk: list[dict[str, Any]], version: int) -> None:
        for mod in (twin, _compiled()):
            dg = mod.encode_push_data(token, eui, rxpk, {"rxnb": len(rxpk)}, version=version)
            pkt = mod.parse_gwmp(dg)
            assert (pkt.version, pkt.token, pkt.gateway_eui) == (version, token, eui)
            assert pkt.body == {"rxpk": rxpk, "stat": {"rxnb": len(rxpk)}}
            for enc, ident in ((mod.encode_push_ack, 1), (mod.encode_pull_ack, 4)):
                back = mod.parse_gwmp(enc(token, version=version))
                assert (back.identifier, back.token, back.version) == (ident, token, version)
            back = mod.parse_gwmp(mod.encode_pull_data(token, eui, version=version))
            assert (back.identifier, back.gateway_eui) == (2, eui)

    check()


def _dg(body: str) -> bytes:
    return b"\x02\x12\x34\x00" + bytes.fromhex("aa555a0000000101") + body.encode()


_DATA = "QAQDAgGAAQABpkLNpkLNpkLN"  # an UnconfirmedDataUp, 18 bytes
# What the packet forwarders write (compact JSON, their own key orders and value kinds).
_FORWARDER_DATAGRAMS = [
    # lora_pkt_fwd (sx1301 HAL), protocol 1 layout
    _dg('{"rxpk":[{"tmst":3512348611,"chan":2,"rfch":0,"freq":868.500000,"stat":1,"modu":"LORA",'
        f'"datr":"SF7BW125","codr":"4/5","lsnr":9.5,"rssi":-35,"size":18,"data":"{_DATA}"}}]}}'),
    # lora_pkt_fwd (sx1302 HAL, jver 1) with a CRC-failed sibling and an FSK frame
    _dg('{"rxpk":[{"jver":1,"tmst":1190905300,"time":"2024-05-01T10:00:00.123456Z",'
        '"tmms":1398592818123,"chan":0,"rfch":1,"freq":868.100000,"mid":8,"stat":1,'
        '"modu":"LORA","datr":"SF12BW125","codr":"4/5","rssis":-118,"lsnr":-14.8,"foff":-2131,'
        f'"rssi":-110,"size":18,"data":"{_DATA}"}},'
        '{"jver":1,"tmst":1190905400,"chan":3,"rfch":0,"freq":867.100000,"mid":9,"stat":-1,'
        '"modu":"LORA","datr":"SF9BW125","codr":"4/6","rssis":-120,"lsnr":-19.2,"foff":12,'
        f'"rssi":-119,"size":18,"data":"{_DATA}"}},'
        '{"jver":1,"tmst":1190906000,"chan":8,"rfch":1,"freq":868.800000,"mid":0,"stat":1,'
        f'"modu":"FSK","datr":50000,"rssi":-60,"size":18,"data":"{_DATA}"}}],'
        '"stat":{"time":"2024-05-01 10:00:00 UTC","rxnb":3,"rxok":2,"rxfw":2,"ackr":100.0,'
        '"dwnb":0,"txnb":0,"temp":31.5}}'),
    # sx1301 v2 with fine timestamps: one rsig object per antenna
    _dg('{"rxpk":[{"jver":2,"tmst":3512348611,"time":"2024-05-01T10:00:00.000000Z","chan":7,'
        '"rfch":1,"freq":867.900000,"brd":0,"aesk":0,"stat":1,"modu":"LORA","datr":"SF10BW125",'
        '"codr":"4/5","rsig":[{"ant":0,"chan":7,"rssic":-95,"lsnr":6.2,"etime":"K8vD2nAgtyTJ",'
        '"ftime":123456789,"foff":-312,"rssis":-97},{"ant":1,"chan":7,"rssic":-99,"lsnr":3.0}],'
        f'"size":18,"data":"{_DATA}"}}]}}'),
    # a stat-only datagram, an empty rxpk list, and eight frames in one datagram
    _dg('{"stat":{"time":"2024-05-01 10:00:30 UTC","lati":51.25625,"long":7.15,"alti":140,'
        '"rxnb":0,"rxok":0,"rxfw":0,"ackr":0.0,"dwnb":0,"txnb":0}}'),
    _dg('{"rxpk":[]}'),
    _dg('{"rxpk":['
        + ",".join(
            f'{{"tmst":{1000 + i},"chan":{i},"rfch":0,"freq":868.{i},"stat":1,"modu":"LORA",'
            f'"datr":"SF{7 + i % 6}BW125","codr":"4/5","lsnr":{i - 4}.5,"rssi":-{60 + i},'
            f'"size":18,"data":"{_DATA}"}}'
            for i in range(8)
        )
        + "]}"),
]
# Valid JSON that forwarders do not write: the general parser takes these, same answers.
_UNUSUAL_DATAGRAMS = [
    _dg(f'{{"rxpk":[{{"lsnr":7.5e0,"rssi":-35,"data":"{_DATA}"}}]}}'),  # exponent
    _dg(rf'{{"rxpk":[{{"modu":"LO\u0052A","data":"{_DATA}"}}]}}'),  # escaped string
    _dg(f'{{"rxpk":[{{"time":"10:00 été","data":"{_DATA}"}}]}}'),  # non-ASCII
    _dg(f'{{"rxpk":[{{"data":"{_DATA}"}}],"rxpk":[]}}'),  # a repeated key
    _dg(f'{{"rxpk":[{{"tmst":123456789012345678901,"data":"{_DATA}"}}]}}'),  # a huge integer
]


def test_decode_push_data_scans_forwarder_traffic_without_the_general_parser() -> None:
    """The fused scan decodes what forwarders send by itself; odd JSON falls back, same result.

    If the scan gave up on everything (a bug that costs nothing but speed), every other test
    would still pass: the fallback counter is what notices.
    """
    c = _compiled()
    for dg in _FORWARDER_DATAGRAMS:
        before = c._push_data_fallbacks()
        assert_same("decode_push_data", dg)
        assert c._push_data_fallbacks() == before, dg
        assert_same("push_data_batch", [dg])
        assert c._push_data_fallbacks() == before, dg
    good = c.decode_push_data(_FORWARDER_DATAGRAMS[1])
    assert [r.error is None for r in good.rxpk] == [True, True, True]
    assert good.rxpk[1].fields["stat"] == -1 and good.rxpk[2].fields["datr"] == 50000
    for dg in _UNUSUAL_DATAGRAMS:
        before = c._push_data_fallbacks()
        assert_same("decode_push_data", dg)
        assert c._push_data_fallbacks() == before + 1, dg
    assert twin._push_data_fallbacks() == 0  # the twin has only the general parser


def test_downlink_encoders_round_trip() -> None:
    """PULL_RESP and TX_ACK (the relayed downlink path): encode, parse back, same content."""

    @QUICK
    @given(
        st.integers(0, 0xFFFF),
        st.integers(0, 2**64 - 1),
        st.dictionaries(st.text(max_size=6), json_values, max_size=8),
        st.one_of(st.none(), st.dictionaries(st.text(max_size=6), json_values, max_size=4)),
        st.sampled_from([1, 2]),
    )
    def check(
        token: int, eui: int, txpk: dict[str, Any], ack: dict[str, Any] | None, version: int
    ) -> None:
        for enc in (twin, _compiled()):
            for dec in (twin, _compiled()):
                pkt = dec.parse_gwmp(enc.encode_pull_resp(token, txpk, version=version))
                assert (pkt.identifier, pkt.version, pkt.token) == (3, version, token)
                assert pkt.gateway_eui is None
                assert pkt.body == {"txpk": txpk}
                pkt = dec.parse_gwmp(enc.encode_tx_ack(token, eui, ack, version=version))
                assert (pkt.identifier, pkt.version, pkt.token) == (5, version, token)
                assert pkt.gateway_eui == eui
                assert pkt.body == (None if ack is None else {"txpk_ack": ack})

    check()


# Keys the compiled scanner recognises by one word compare, plus near misses (a letter short,
# a letter long, a different case) that must take its general path and still agree.
_KNOWN_KEYS = [
    "data",
    "size",
    "rssi",
    "lsnr",
    "freq",
    "datr",
    "jver",
    "tmst",
    "time",
    "tmms",
    "chan",
    "rfch",
    "stat",
    "modu",
    "codr",
    "foff",
    "rsig",
    "aesk",
    "mid",
    "brd",
    "ant",
    "rssis",
    "ftime",
    "rssic",
    "etime",
]
_NEAR_KEYS = ["dat", "datas", "rss", "rssix", "Data", "mi", "midd", "ftim", "etimes", "x"]
_ws_text = st.sampled_from(["", "", "", " ", "\n", " \t"])
_key_values = st.one_of(
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["QJ6SW3mDL6BjYyGV9Vt76v2A", "QJ6SW3mDL6Bj-_", "SF7BW125", "", "x\\y"]),
    st.booleans(),
    st.none(),
    st.just([{"ant": 0, "rssic": -80, "rssic ": 1}]),
)


@st.composite
def hand_written_rxpk(draw: st.DrawFn) -> bytes:
    """One rxpk object as text: known keys in any order, maybe repeated, odd spacing."""
    names = draw(st.lists(st.sampled_from(_KNOWN_KEYS + _NEAR_KEYS), max_size=12))
    parts = []
    for name in names:
        value = json.dumps(draw(_key_values))
        parts.append(f'"{name}"{draw(_ws_text)}:{draw(_ws_text)}{value}')
    return ("{" + draw(_ws_text) + ",".join(parts) + "}").encode()


def test_hand_written_rxpk_layouts_agree() -> None:
    """Spacing, repeated keys and keys that are almost known: same records, same errors."""

    @QUICK
    @given(st.lists(hand_written_rxpk(), max_size=4))
    def check(objects: list[bytes]) -> None:
        dg = b"\x02\x01\x00\x00" + bytes(8) + b'{"rxpk":[' + b",".join(objects) + b"]}"
        assert_same("decode_push_data", dg)  # as_dict() reads every rxpk's fields too

    check()


def test_known_key_table_matches_the_scanner() -> None:
    """Each known key's id is its place in the name table (the dict builder relies on it)."""
    c = _compiled()
    assert c._key_ids() == [(name, i) for i, name in enumerate(c._KEY_NAMES) if i]
    assert sorted(c._KEY_NAMES[1:]) == sorted(_KNOWN_KEYS)


# Number texts as forwarders write them and as they should not: the compiled scanner measures
# digit runs a word at a time and reads up to the NUL that ends every bytes buffer, so the
# edges (one digit, 15/16 significant digits, 18/19 integer digits, a number that ends the
# datagram) must still give the twin's records or its error.
_NUMBER_TEXTS = st.one_of(
    st.sampled_from(
        [
            "0", "-0", "-0.0", "01", "-01", "-", "1.", ".5", "1e5", "1E+2", "-12.50", "868.1",
            "0.000001", "123456789012345678", "1234567890123456789", "-12345678901234567",
            "-123456789012345678", "123456789012345.6", "1234567890123456.7",
            "1.2345678901234567", "0.1234567890123456789012", "9007199254740993.0", "7", "-7",
        ]
    ),
    st.from_regex(r"\A-?(0|[1-9][0-9]{0,19})(\.[0-9]{1,24})?\Z"),
)


def test_number_texts_agree() -> None:
    """Noted (rssi, lsnr, freq, size) and skipped numbers: same values, same errors."""

    @QUICK
    @given(
        st.lists(
            st.tuples(st.sampled_from(["rssi", "lsnr", "freq", "size", "tmst", "chan", "x"]),
                      _NUMBER_TEXTS),
            max_size=6,
            unique_by=lambda kv: kv[0],
        ),
        st.integers(0, 40),
    )
    def check(pairs: list[tuple[str, str]], cut: int) -> None:
        obj = "{" + ",".join(f'"{k}":{v}' for k, v in pairs) + ',"data":"QAEC"}'
        dg = b"\x02\x01\x00\x00" + bytes(8) + b'{"rxpk":[' + obj.encode() + b"]}"
        assert_same("decode_push_data", dg)
        assert_same("decode_push_data", dg[: len(dg) - cut])  # the body ends mid-number too

    check()


# The compiled scan checks the usual rxpk shape (compact, known keys, plain strings, short
# numbers) with a scan of its own and hands anything else to its general object scan. The
# datagram tests above compare records; these compare the two scans directly, so a value the
# usual-shape scan notes differently, or a text it accepts that the general scan refuses,
# fails here even where the records would hide it.
_SHAPE_GOOD = st.one_of(
    st.from_regex(r"\A-?(0|[1-9][0-9]{0,15})(\.[0-9]{1,14})?\Z"),
    st.sampled_from(
        [
            '"QJ6SW3mDL6BjYyGV9Vt76v2A"', '"QJ6SW3mDL6Bj-_"', '"SF7BW125"', '"SF12BW125"',
            '"4/5"', '"LORA"', '""', '"2024-05-01T10:00:00.323949Z"', '"a\x7fb"', '"x!~ y"',
        ]
    ),
)
_SHAPE_BAD = st.one_of(
    _NUMBER_TEXTS,
    st.sampled_from(
        [
            r'"x\y"', r'"\u0041"', '"\u00e9t\u00e9"', '"a\x01b"', '"unterminated', "true",
            "false", "null", "[]", '{"ant":0}', "[1,2]", "-", "--1", "+1", "1.5.5", "0x10",
            "1_000", "12a", "1e5", "Infinity", "NaN", "",
        ]
    ),
)


@st.composite
def usual_shape_rxpk(draw: st.DrawFn) -> bytes:
    """An rxpk object's text as forwarders write it, mostly; now and then with a flaw (a
    value of another kind or malformed, spacing, an unknown or repeated key, a cut)."""
    pool = _KNOWN_KEYS + _NEAR_KEYS[:3] if draw(st.integers(0, 7)) == 0 else _KNOWN_KEYS
    unique = draw(st.integers(0, 7)) > 0
    names = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=18, unique=unique))
    spaced = draw(st.integers(0, 7)) == 0
    parts = []
    for name in names:
        value = draw(_SHAPE_BAD if draw(st.integers(0, 24)) == 0 else _SHAPE_GOOD)
        glue = [draw(st.sampled_from(["", " ", "\n"])) if spaced else "" for _ in range(3)]
        parts.append(f'{glue[0]}"{name}":{glue[1]}{value}{glue[2]}')
    text = "{" + ",".join(parts) + "}"
    text += draw(st.sampled_from(["", "", "]}", "}", ",", " ", "\x00"]))
    raw = text.encode("utf-8", "surrogatepass")
    cut = draw(st.integers(0, 6))
    return raw[: len(raw) - cut] if draw(st.integers(0, 7)) == 0 else raw


def test_usual_shape_scan_notes_what_the_general_scan_notes() -> None:
    """Whatever the usual-shape rxpk scan accepts, the general scan accepts with the same end,
    key count and noted values (kind, place, int, float bits); both refuse the rest alike
    when the datagram's records are compared (test_gwmp_agrees)."""
    c = _compiled()

    @QUICK
    @given(usual_shape_rxpk())
    def check(obj: bytes) -> None:
        fast, general = c._rxpk_scan_both(obj)
        if fast is not None:
            assert fast == general, obj
        dg = b"\x02\x01\x00\x00" + bytes(8) + b'{"rxpk":[' + obj + b"]}"
        assert_same("decode_push_data", dg)
        assert_same("push_data_batch", [dg])

    check()


def test_usual_shape_scan_takes_what_forwarders_send() -> None:
    """The benchmark's rxpk (what packet forwarders write) take the usual-shape scan, their
    last value a string or a number: if it gave up on them (a bug that costs only speed),
    nothing else would notice."""
    c = _compiled()
    rxpk = {
        "jver": 1, "tmst": 2105205943, "time": "2024-05-01T10:00:00.323949Z", "chan": 6,
        "rfch": 0, "freq": 867.3, "mid": 8, "stat": 1, "modu": "LORA", "datr": "SF8BW125",
        "codr": "4/5", "rssis": -47, "lsnr": -0.9, "foff": -564, "rssi": -117, "size": 24,
        "data": "QJ6SW3mDL6BjYyGV9Vt76v2AmprZf8YQ",
    }
    for last in ("data", "rssi", "lsnr", "size", "freq", "tmst"):
        obj = orjson.dumps({**{k: v for k, v in rxpk.items() if k != last}, last: rxpk[last]})
        fast, general = c._rxpk_scan_both(obj)
        assert fast is not None and fast == general, obj
        fast, general = c._rxpk_scan_both(obj + b"]}")
        assert fast is not None and fast == general, obj


def test_rxpk_base64_errors_agree() -> None:
    """A bad character is reported before a bad length, at the same offset, in both."""

    @QUICK
    @given(st.text(alphabet="QUJD+/-_=!é", max_size=30))
    def check(text: str) -> None:
        dg = twin.encode_push_data(1, 2, [{"data": text}])
        assert_same("decode_push_data", dg)

    check()


def test_base64_extra_padding_agrees() -> None:
    """The twin pads what is left after dropping two '=': "00====" is data, "0000===" is not."""
    for text in ["00===", "00====", "00=====", "000===", "000====", "0000===", "====", "0!==="]:
        assert_same("b64decode_tolerant", text)
        assert_same("decode_push_data", twin.encode_push_data(1, 2, [{"data": text}]))


def _digit_texts() -> list[str]:
    """Numbers around the word-at-a-time paths' limits: 1 to 17 integer and 0 to 9 fraction
    digits, leading zeros, signs and exponents (the scan takes up to 7 + 7, the dict builder
    also whole numbers of 8 to 15 digits; others take the byte loops or fall back)."""
    out = []
    for ni in range(1, 18):
        for nf in range(10):
            whole = "".join(str((ni * 7 + i * 3) % 10) for i in range(ni))
            for head in ("1" + whole[1:], "9" * ni, "0" + whole[1:]):
                frac = "".join(str((nf + i * 5) % 10) for i in range(nf))
                for sign in ("", "-"):
                    for tail in ("", "e1", "E-2"):
                        out.append(sign + head + ("." + frac if nf else "") + tail)
    return [*out, "0", "-0", "0.0", "-0.0", "7.", "-", "-.5", ".5", "0.9999999", "9999999.9999999"]


def test_short_numbers_agree_in_values_and_batch_columns() -> None:
    """Noted numbers (rssi, lsnr, freq, size) feed the batch's float columns: same bits."""
    # The long tail keeps 16 bytes after every number, so the word-at-a-time path is tried.
    tail = ',"modu":"LORA","codr":"4/5","data":"QAEC"}'
    for text in _digit_texts():
        for key in ("rssi", "lsnr", "freq", "size", "tmst"):
            dg = b"\x02\x01\x00\x00" + bytes(8) + f'{{"rxpk":[{{"{key}":{text}{tail}]}}'.encode()
            assert_same("decode_push_data", dg)
            assert_same("push_data_batch", [dg])


def test_shared_number_objects_keep_each_value_and_type() -> None:
    """The compiled builder hands out one object per repeated number: never a wrong one.

    Values that share a cache slot (v and v + 1024), an int and a float of the same value,
    0.0 and -0.0, and one value under several keys, across many rxpk.
    """
    values = [-95, -95 + 1024, -95 - 1024, 929, -2131, -2131 + 2048, 300, 1024, -1024]
    floats = ["0.0", "-0.0", "868.1", "868.3", "9.5", "-9.5", "95.0"]
    rxpk = []
    for i in range(40):
        v, w = values[i % len(values)], values[(i * 7 + 3) % len(values)]
        f, g = floats[i % len(floats)], floats[(i * 3 + 1) % len(floats)]
        rxpk.append(
            f'{{"rssi":{v},"foff":{w},"rssis":{v},"lsnr":{f},"freq":{g},"x":{v}.0,'
            f'"tmst":{abs(w)}{i:08d},"data":"{_DATA}"}}'
        )
    c = _compiled()
    for _ in range(2):  # the second pass is served from the caches
        dg = _dg('{"rxpk":[' + ",".join(rxpk) + "]}")
        assert_same("decode_push_data", dg)
        got = [r.fields for r in c.decode_push_data(dg).rxpk]
        want = [r["rxpk"][0] for r in (orjson.loads("{\"rxpk\":[" + t + "]}") for t in rxpk)]
        assert repr(got) == repr(want)


def test_base64_every_ascii_character_at_every_place_agrees() -> None:
    """The table decoder must refuse each non-alphabet byte wherever it sits in a quad."""
    for pos in range(8):
        for code in range(128):
            text = "QUJDREVG"[:pos] + chr(code) + "QUJDREVG"[pos + 1 :]
            assert_same("b64decode_tolerant", text)
            assert_same("decode_push_data", twin.encode_push_data(1, 2, [{"data": text}]))


@pytest.mark.parametrize("byte", [0x20, 0x7E, 0x7F])
@pytest.mark.parametrize("pad", range(0, 12))
def test_plain_string_bytes_agree_at_every_distance_from_the_end(byte: int, pad: int) -> None:
    """A string byte is read the same whether the 8-byte or the byte-wise scan meets it.

    Found by the 100k run: a DEL (0x7f) key near the end of an rxpk was plain to the word
    scan and not plain to the byte table, so the lazy field build failed.
    """
    key = bytes([byte]) * (1 + pad % 3)
    body = b'{"rxpk":[{"data":"","size":0,"' + key + b'":[]' + b" " * pad + b"}]}"
    dg = b"\x02\x00\x00\x00" + bytes(8) + body
    assert_same("decode_push_data", dg)


@pytest.mark.parametrize("pos", [0, 1, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 47])
def test_every_byte_at_every_place_of_a_string_agrees(pos: int) -> None:
    """The 16-byte (SSE2), 8-byte and byte-wise string scans flag the same bytes.

    Each byte value at a place in a string value, the string long or short after it, the
    value in the middle of an rxpk or last before the datagram's end: same records, and the
    usual-shape scan notes what the general one notes.
    """
    c = _compiled()
    for byte in range(256):
        for after in (0, 5, 9, 17, 30):
            text = b"A" * pos + bytes([byte]) + b"B" * after
            for obj in (
                b'{"time":"' + text + b'","datr":"SF7BW125","data":"QAEC"}',
                b'{"datr":"SF7BW125","data":"QAEC","time":"' + text + b'"}',
                b'{"data":"' + text + b'"}',
            ):
                fast, general = c._rxpk_scan_both(obj)
                if fast is not None:
                    assert fast == general, obj
                body = b'{"rxpk":[' + obj + b"]}"
                assert_same("decode_push_data", b"\x02\x00\x00\x00" + bytes(8) + body)


# ---------------------------------------------------------------------------- the door

_EDGES = [0, 1, -1, 255, 300, -300, 300.0000001, 1000, -1000.5, 10_000, 10_000.5, 2**32 - 1,
          2**32, 2**53, 2**53 + 1, -(2**53) - 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63),
          -(2**63) - 1, 1e300, float("inf"), float("-inf"), float("nan"), True, False, None]
door_numbers = st.one_of(st.sampled_from(_EDGES), st.integers(), st.floats())
door_datr = st.one_of(
    st.builds(lambda sf, bw: f"SF{sf}BW{bw}", st.sampled_from(["4", "5", "7", "9", "10", "12",
                                                               "13", "1", "07", ""]),
              st.sampled_from(["125", "250", "500", "203", "406", "812", "1625", "12", "1250",
                               "", "125 "])),
    st.sampled_from(["SF", "SF7", "FSK", "", "SF7BW125\n", "SＦ7BW125", "SF７BW125"]),
    st.text(max_size=10), door_numbers, st.lists(st.integers(), max_size=2),
)


@st.composite
def door_fields(draw: st.DrawFn) -> dict[Any, Any]:
    fields: dict[Any, Any] = {}
    for key in ("freq", "rssi", "rssis", "lsnr", "tmms", "tmst", "chan", "stat"):
        if draw(st.booleans()):
            fields[key] = draw(door_numbers)
    if draw(st.booleans()):
        fields["datr"] = draw(door_datr)
    # long strings and keys, many keys, nesting (rsig lists of objects, too deep ones)
    long_text = st.integers(500, 520).map(lambda n: "x" * n)
    extra = draw(st.dictionaries(
        st.one_of(st.text(max_size=4), long_text),
        st.one_of(json_values, long_text, door_numbers,
                  st.recursive(st.integers(), lambda inner: st.one_of(
                      st.lists(inner, max_size=2), st.dictionaries(st.text(max_size=2), inner,
                                                                   max_size=2)),
                               max_leaves=8)),
        max_size=draw(st.sampled_from([3, 70])),
    ))
    fields.update(extra)
    return fields


def _door_property(fields: dict[Any, Any]) -> None:
    c = _compiled()
    # repr: nan never equals itself, and the words must agree too
    assert repr(c.rxpk_door(fields)) == repr(twin.rxpk_door(fields)), f"rxpk_door({fields!r})"


test_door_agrees = QUICK(given(door_fields())(_door_property))
test_door_agrees_thoroughly = pytest.mark.slow(
    settings(THOROUGH, max_examples=20_000)(given(door_fields())(_door_property))
)


def test_door_bounds_integers_exactly_past_two_to_the_53() -> None:
    # found by the slow variant: 2**53 + 1 becomes 2**53 as a double and slipped past tmms's
    # bound in C, where Python's exact int/float comparison refuses it
    for v in (2**53 - 1, 2**53, 2**53 + 1, -(2**53) - 1, 2**62):
        _door_property({"tmms": v})
    assert _compiled().rxpk_door({"tmms": 2**53 + 1}) is not None


def test_door_answers_usual_rxpk_in_c_and_refuses_what_the_reference_refuses() -> None:
    c = _compiled()
    usual = {"tmst": 3512348611, "chan": 2, "rfch": 0, "freq": 866.349812, "stat": 1,
             "modu": "LORA", "datr": "SF7BW125", "codr": "4/6", "rssi": -35, "lsnr": 5.1,
             "size": 32, "data": "QAEBAQGAAAABVfdjR6YrSw=="}
    assert c.rxpk_door(usual) is None
    assert c.rxpk_door({**usual, "datr": "SF13BW125"}) == (
        "implausible", "datr 'SF13BW125' is no LoRa data rate")
    assert c.rxpk_door({**usual, "freq": 6.9e14}) == (
        "implausible", "freq 690000000000000.0 outside 0..10000")
    assert c.rxpk_door({**usual, "codr": "4/5" * 200}) == (
        "out_of_bounds", "a string of 600 characters (at most 512)")
