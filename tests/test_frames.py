"""Frame codec behaviour, run against both implementations (compiled and twin).

Published vectors (lora-packet, ChirpStack lrwn) for the PHYPayload structure, every malformed
kind, the six GWMP messages, tolerant base64, sibling-safe rxpk errors, encoders, batch arrays.
"""

from __future__ import annotations

import base64
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import orjson
import pytest

from gateway.frames import _frames_py

VECTORS = json.loads((Path(__file__).parent / "vectors" / "phy_structure.json").read_text())[
    "vectors"
]
GW_EUI = 0xAA555A0000000101
UPLINK = bytes.fromhex("40F17DBE4900020001954378762B11FF0D")  # lora-packet's example


def _load_c() -> ModuleType | None:
    try:
        return importlib.import_module("gateway.frames._frames_c")
    except ImportError:
        return None


@pytest.fixture(params=["python", "cython"])
def impl(request: pytest.FixtureRequest) -> ModuleType:
    if request.param == "python":
        return _frames_py
    mod = _load_c()
    if mod is None:
        # test_compiled_extension_is_built fails in CI when this happens.
        pytest.skip("gateway.frames._frames_c is not built (python setup.py build_ext --inplace)")
    return mod


def _required() -> bool:
    return (
        os.environ.get("CI", "").lower() == "true"
        or os.environ.get("SCHWEBE_REQUIRE_EXTENSIONS", "") == "1"
    ) and os.environ.get("SCHWEBE_NO_EXTENSIONS", "") != "1"


def test_compiled_extension_is_built() -> None:
    mod = _load_c()
    if mod is None and not _required():
        pytest.skip("compiled extension not built and not required here (CI=true requires it)")
    assert mod is not None, "gateway.frames._frames_c failed to import: CI must test the compiled path"
    assert mod.IMPLEMENTATION == "cython"


def test_dispatcher_switch_forces_twin() -> None:
    env = {**os.environ, "SCHWEBE_NO_EXTENSIONS": "1"}
    code = "from gateway import frames; print(frames.IMPLEMENTATION, frames.parse_phy.__module__)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parent.parent,
    ).stdout.split()
    assert out == ["python", "gateway.frames._frames_py"]


def test_dispatcher_prefers_compiled_when_built() -> None:
    from gateway import frames

    if os.environ.get("SCHWEBE_NO_EXTENSIONS", "") == "1":
        assert frames.IMPLEMENTATION == "python"
    elif _load_c() is not None:
        assert frames.IMPLEMENTATION == "cython"
        assert frames.FrameError is _frames_py.FrameError
    else:
        assert frames.IMPLEMENTATION == "python"


# ---------------------------------------------------------------------------- PHYPayload


@pytest.mark.parametrize("vec", VECTORS, ids=[v["source"][:60] for v in VECTORS])
def test_published_vectors(impl: ModuleType, vec: dict[str, Any]) -> None:
    p = impl.parse_phy(bytes.fromhex(vec["phy"]))
    got = p.as_dict()
    hex_bytes = {"mic", "fopts", "frm_payload", "payload", "encrypted"}
    ids = {"dev_addr", "join_eui", "dev_eui", "net_id"}
    for name, want in vec["expect"].items():
        if name in hex_bytes:
            assert got[name] == bytes.fromhex(want), name
        elif name in ids:
            assert got[name] == int(want, 16), name
        else:
            assert got[name] == want, name
    for name, value in got.items():
        if name not in vec["expect"] and name not in ("raw", "mhdr", "major", "mtype"):
            assert value is None or (name in ("fopts", "frm_payload") and value == b""), name


def test_join_accept_kept_encrypted(impl: ModuleType) -> None:
    for n in (17, 33):
        raw = bytes([0x20]) + bytes(range(n - 1))
        p = impl.parse_phy(raw)
        assert (p.mtype, p.encrypted, p.mic, p.dev_addr) == (1, raw[1:], b"", None)


def test_confirmed_frames_and_foptslen_15(impl: ModuleType) -> None:
    raw = bytes([0x80, 1, 2, 3, 4, 0x0F, 0x34, 0x12]) + bytes(15) + b"\x05" + b"abc" + b"MIC!"
    p = impl.parse_phy(raw)
    assert (p.mtype, p.dev_addr, p.fcnt, len(p.fopts), p.fport, p.frm_payload, p.mic) == (
        4,
        0x04030201,
        0x1234,
        15,
        5,
        b"abc",
        b"MIC!",
    )
    assert p.uplink and impl.parse_phy(bytes([0xA0]) + raw[1:]).uplink is False


MALFORMED = [
    (b"", "empty", 0),
    (bytes([0x41]) + UPLINK[1:], "unknown_major", 0),
    (bytes([0xE3, 1, 2]), "unknown_major", 0),
    (UPLINK[:11], "too_short", 11),
    (bytes([0x40]), "too_short", 1),
    (UPLINK[:5] + b"\x05" + UPLINK[6:8] + b"MIC!", "fopts_overrun", 5),
    (UPLINK[:5] + b"\x0f" + UPLINK[6:], "fopts_overrun", 5),
    (bytes([0x00]) + bytes(21), "too_short", 22),
    (bytes([0x00]) + bytes(23), "too_long", 23),
    (bytes([0x20]) + bytes(15), "join_accept_length", 16),
    (bytes([0x20]) + bytes(17), "join_accept_length", 18),
    (bytes([0x20]) + bytes(31), "join_accept_length", 32),
    (bytes([0xC0]), "too_short", 1),
    (bytes([0xC0, 3]) + bytes(17), "unknown_rejoin_type", 1),
    (bytes([0xC0, 0]) + bytes(16), "too_short", 18),
    (bytes([0xC0, 2]) + bytes(18), "too_long", 19),
    (bytes([0xC0, 1]) + bytes(21), "too_short", 23),
]


@pytest.mark.parametrize(("raw", "kind", "offset"), MALFORMED)
def test_malformed_frames_rejected_with_kind_and_offset(
    impl: ModuleType, raw: bytes, kind: str, offset: int
) -> None:
    with pytest.raises(impl.FrameError) as info:
        impl.parse_phy(raw)
    err: Any = info.value
    assert (err.kind, err.offset) == (kind, offset)
    assert isinstance(err, ValueError)  # callers may catch ValueError
    assert f"at byte {offset}" in str(err) and "\n" not in str(err)


def test_phy_payload_equality_repr_and_pickle(impl: ModuleType) -> None:
    import pickle

    a, b = impl.parse_phy(UPLINK), impl.parse_phy(bytearray(UPLINK))
    assert a == b and hash(a) == hash(b)
    assert a != impl.parse_phy(UPLINK[:-1] + b"\x00")
    assert "dev_addr=49be7df1" in repr(a) and "fport=1" in repr(a)
    assert pickle.loads(pickle.dumps(a)) == a
    assert a.mtype_name == "UnconfirmedDataUp"


# ---------------------------------------------------------------------------- base64


@pytest.mark.parametrize(
    "text",
    ["QPF9vkkAAgABlUN4disR/w0=", "QPF9vkkAAgABlUN4disR/w0", "QPF9vkkAAgABlUN4disR_w0"],
)
def test_base64_tolerant(impl: ModuleType, text: str) -> None:
    assert impl.b64decode_tolerant(text) == UPLINK


@pytest.mark.parametrize(
    ("text", "offset"), [("QPF9*kkA", 4), ("QPF9v", 5), ("QP=F", 2), ("QPFé", 3), ("Q===", 1)]
)
def test_base64_garbage_located(impl: ModuleType, text: str, offset: int) -> None:
    with pytest.raises(impl.FrameError) as info:
        impl.b64decode_tolerant(text)
    assert (info.value.kind, info.value.offset) == ("bad_base64", offset)


# ---------------------------------------------------------------------------- GWMP


def _rxpk(data: str, **extra: Any) -> dict[str, Any]:
    base = {
        "time": "2024-05-01T10:00:00.123456Z",
        "tmst": 3512348611,
        "chan": 2,
        "rfch": 0,
        "freq": 868.5,
        "stat": 1,
        "modu": "LORA",
        "datr": "SF7BW125",
        "codr": "4/5",
        "lsnr": 9.5,
        "rssi": -45,
        "size": 17,
        "data": data,
    }
    base.update(extra)
    return base


def test_push_data_round_trip(impl: ModuleType) -> None:
    stat = {"time": "2014-01-12 08:59:28 GMT", "rxnb": 2, "rxok": 2, "ackr": 100.0}
    rx = [_rxpk(base64.b64encode(UPLINK).decode()), _rxpk("QPF9vkkAAgABlUN4disR/w0", rssi=-100)]
    dg = impl.encode_push_data(0xBEEF, GW_EUI, rx, stat)
    assert dg[:4] == b"\x02\xef\xbe\x00" and dg[4:12] == GW_EUI.to_bytes(8, "big")
    pd = impl.decode_push_data(dg)
    assert (pd.version, pd.token, pd.gateway_eui, pd.stat) == (2, 0xBEEF, GW_EUI, stat)
    assert [r.fields for r in pd.rxpk] == rx
    assert [r.phy for r in pd.rxpk] == [UPLINK, UPLINK]
    assert all(r.error is None for r in pd.rxpk)


def test_bad_rxpk_keeps_siblings(impl: ModuleType) -> None:
    good = _rxpk("QPF9vkkAAgABlUN4disR/w0=")
    rx = [good, _rxpk("QPF9*kk"), _rxpk("QPF9vkkAAgABlUN4disR/w0=", size=16), good, 7, {"tmst": 1}]
    dg = b"\x02\x01\x00\x00" + GW_EUI.to_bytes(8, "big") + orjson.dumps({"rxpk": rx})
    pd = impl.decode_push_data(dg)
    kinds = [None if r.error is None else r.error.kind for r in pd.rxpk]
    assert kinds == [None, "bad_base64", "size_mismatch", None, "bad_rxpk", "missing_data"]
    assert pd.rxpk[3].phy == UPLINK
    assert "rxpk[1].data" in str(pd.rxpk[1].error)
    assert pd.rxpk[2].phy == UPLINK  # the bytes stay available to diagnose the mismatch


@pytest.mark.parametrize("size", ["17", 17.0, None, True, [17], {"n": 17}])
def test_size_of_wrong_type_is_a_mismatch(impl: ModuleType, size: Any) -> None:
    rx = [_rxpk("QPF9vkkAAgABlUN4disR/w0=", size=size), _rxpk("QPF9vkkAAgABlUN4disR/w0=")]
    dg = b"\x02\x01\x00\x00" + GW_EUI.to_bytes(8, "big") + orjson.dumps({"rxpk": rx})
    pd = impl.decode_push_data(dg)
    assert pd.rxpk[0].error.kind == "size_mismatch" and repr(size) in str(pd.rxpk[0].error)
    assert pd.rxpk[0].fields["size"] == size and pd.rxpk[1].error is None


def test_unknown_fields_kept_unchanged(impl: ModuleType) -> None:
    rx = _rxpk(
        "QPF9vkkAAgABlUN4disR/w0=",
        jver=2,
        brd=0,
        rsig=[{"ant": 0, "chan": 2, "rssic": -45, "lsnr": 9.5, "etime": "x==", "foff": -12}],
        mid=8,
    )
    body = {"rxpk": [rx], "stat": None, "vendor": {"x": [1, 2.5, None, True]}}
    dg = b"\x02\x01\x00\x00" + GW_EUI.to_bytes(8, "big") + orjson.dumps(body)
    pd = impl.decode_push_data(dg)
    assert pd.rxpk[0].fields == rx and pd.stat is None
    assert impl.parse_gwmp(dg).body == body


def test_whitespace_unicode_escapes_and_trailing_nul(impl: ModuleType) -> None:
    text = (
        '{ "rxpk" : [ {"modu":"LORA","desc":"Stra\\u00dfe \\"7\\"","size":17,'
        '"data":"QPF9vkkAAgABlUN4disR/w0=", "n": -0 , "f": 1e2 } ] ,\n "stat":{"temp":23.5} }\x00'
    )
    dg = b"\x01\x02\x03\x00" + GW_EUI.to_bytes(8, "big") + text.encode()
    pd = impl.decode_push_data(dg)
    assert pd.version == 1 and pd.token == 0x0302
    assert pd.rxpk[0].fields["desc"] == 'Straße "7"'
    assert pd.rxpk[0].fields["f"] == 100.0 and pd.stat == {"temp": 23.5}


@pytest.mark.parametrize(
    ("dg", "kind"),
    [
        (b"\x02\x00", "too_short"),
        (b"\x03\x01\x02\x00" + bytes(8) + b"{}", "bad_version"),
        (b"\x00\x01\x02\x00" + bytes(8) + b"{}", "bad_version"),
        (b"\x02\x01\x02\x09", "unknown_identifier"),
        (b"\x02\x01\x02\x00" + bytes(8), "missing_body"),
        (b"\x02\x01\x02\x00" + bytes(8) + b"\x00\x00", "missing_body"),
        (b"\x02\x01\x02\x00" + bytes(5), "too_short"),
        (b"\x02\x01\x02\x00" + bytes(8) + b'{"rxpk":[', "bad_json"),
        (b"\x02\x01\x02\x00" + bytes(8) + b"[1]", "bad_json"),
        (b"\x02\x01\x02\x00" + bytes(8) + b'{"rxpk":{}}', "bad_body"),
        (b"\x02\x01\x02\x00" + bytes(8) + b'{"stat":[]}', "bad_body"),
        (
            b"\x02\x01\x02\x00" + bytes(8) + b'{"rxpk":[' + b",".join([b"{}"] * 256) + b"]}",
            "too_many_rxpk",
        ),
        (b"\x02\x01\x02\x00" + bytes(8) + b'{"a":"' + b"x" * 65500 + b'"}', "too_large"),
        (b"\x02\x01\x02\x01", "not_push_data"),
    ],
)
def test_bad_datagrams_rejected(impl: ModuleType, dg: bytes, kind: str) -> None:
    with pytest.raises(impl.FrameError) as info:
        impl.decode_push_data(dg)
    assert info.value.kind == kind


def test_255_rxpk_accepted(impl: ModuleType) -> None:
    rx = [_rxpk("QPF9vkkAAgABlUN4disR/w0=")] * 255
    assert len(impl.decode_push_data(impl.encode_push_data(9, GW_EUI, rx)).rxpk) == 255
    with pytest.raises(ValueError, match="at most 255"):
        impl.encode_push_data(9, GW_EUI, rx + rx[:1])


def test_all_six_messages_round_trip(impl: ModuleType) -> None:
    txpk = {
        "imme": True,
        "freq": 869.525,
        "rfch": 0,
        "powe": 14,
        "modu": "LORA",
        "datr": "SF9BW125",
        "codr": "4/5",
        "ipol": True,
        "size": 17,
        "data": "YPF9vkkgAgAB+dZdJw==",
    }
    cases = [
        (
            impl.encode_push_data(0x0102, GW_EUI, [], {"rxnb": 0}),
            0,
            GW_EUI,
            {"rxpk": [], "stat": {"rxnb": 0}},
        ),
        (impl.encode_push_ack(0x0102), 1, None, None),
        (impl.encode_pull_data(0x0102, GW_EUI), 2, GW_EUI, None),
        (impl.encode_pull_resp(0x0102, txpk), 3, None, {"txpk": txpk}),
        (impl.encode_pull_ack(0x0102), 4, None, None),
        (impl.encode_tx_ack(0x0102, GW_EUI), 5, GW_EUI, None),
        (
            impl.encode_tx_ack(0x0102, GW_EUI, {"error": "TOO_LATE"}),
            5,
            GW_EUI,
            {"txpk_ack": {"error": "TOO_LATE"}},
        ),
    ]
    for dg, ident, eui, body in cases:
        pkt = impl.parse_gwmp(dg)
        assert (pkt.version, pkt.token, pkt.identifier, pkt.gateway_eui, pkt.body) == (
            2,
            0x0102,
            ident,
            eui,
            body,
        )
        assert dg[1:3] == b"\x02\x01"  # token little-endian on the wire
    assert impl.parse_gwmp(impl.encode_push_ack(7, version=1)).version == 1


def test_encoders_reject_out_of_range(impl: ModuleType) -> None:
    with pytest.raises(ValueError, match="16 bits"):
        impl.encode_push_ack(0x10000)
    with pytest.raises(ValueError, match="64 bits"):
        impl.encode_pull_data(1, 1 << 64)
    with pytest.raises(ValueError, match="version"):
        impl.encode_pull_ack(1, version=3)


def test_tx_ack_with_nul_terminated_json(impl: ModuleType) -> None:
    dg = b"\x02\x05\x00\x05" + GW_EUI.to_bytes(8, "big") + b'{"txpk_ack":{"error":"NONE"}}\x00'
    assert impl.parse_gwmp(dg).body == {"txpk_ack": {"error": "NONE"}}
    assert impl.parse_gwmp(dg[:12] + b"\x00").body is None


# ---------------------------------------------------------------------------- batch arrays


def test_parse_phy_batch(impl: ModuleType) -> None:
    frames = [
        UPLINK,
        b"",
        bytes.fromhex(VECTORS[5]["phy"]),
        bytes.fromhex("4004030201807b0001020304"),
    ]
    arr = impl.parse_phy_batch(frames)
    assert arr.dtype == _frames_py.PHY_DTYPE
    assert arr["ok"].tolist() == [True, False, True, True]
    assert arr["dev_addr"].tolist() == [0x49BE7DF1, 0, 0, 0x01020304]
    assert arr["fport"].tolist() == [1, -1, -1, -1]
    assert arr["fcnt"].tolist() == [2, 0, 0, 123]
    assert arr["mtype"].tolist() == [2, 0, 0, 2]
    assert arr["phy_len"].tolist() == [17, 0, 23, 12]
    assert arr["frm_len"].tolist() == [4, 0, 0, 0]
    assert len(impl.parse_phy_batch([])) == 0


def test_push_data_batch_and_filters(impl: ModuleType) -> None:
    ttn = bytes([0x40]) + (0x26011234).to_bytes(4, "little") + b"\x00\x01\x00\x02xyMIC!"
    other = bytes([0x40]) + (0x01020304).to_bytes(4, "little") + b"\x00\x01\x00\x02xyMIC!"

    def b64(b: bytes) -> str:
        return base64.b64encode(b).decode()

    dgs = [
        impl.encode_push_data(
            1,
            GW_EUI,
            [
                _rxpk(b64(ttn), size=len(ttn), rssi=-80, lsnr=-2.5, datr="SF12BW125"),
                _rxpk(b64(other), size=len(other), freq=867.1),
            ],
        ),
        b"garbage",
        impl.encode_push_data(2, GW_EUI, [_rxpk("!!", datr=50000, modu="FSK")]),
    ]
    arr = impl.push_data_batch(dgs)
    assert arr.dtype == _frames_py.RXPK_DTYPE and len(arr) == 3
    assert arr["ok"].tolist() == [True, True, False]
    assert arr["sf"].tolist() == [12, 7, 0]
    assert arr["rssi"].tolist() == [-80.0, -45.0, -45.0]
    assert arr["freq"][1] == 867.1 and arr["lsnr"][0] == np.float32(-2.5)
    ttn_rows = impl.netid_mask(arr, 0x000013)  # TTN's NetID -> DevAddr 26/27xxxxxx
    assert ttn_rows.tolist() == [True, False, False]
    assert impl.devaddr_prefix_mask(arr, 0x01000000, 8).tolist() == [False, True, False]
    assert impl.devaddr_prefix_mask(arr, 0, 0).tolist() == [True, True, False]


@pytest.mark.parametrize(
    ("net_id", "prefix", "bits"),
    # ChirpStack lrwn devaddr.rs test_dev_addr_set_addr_prefix, and TTN's NetID 0x13 (26xxxxxx).
    [(0x000000, 0x00000000, 7), (0x00003F, 0x7E000000, 7), (0x000013, 0x26000000, 7)],
)
def test_netid_devaddr_prefix(net_id: int, prefix: int, bits: int) -> None:
    assert _frames_py.netid_devaddr_prefix(net_id) == (prefix, bits)
