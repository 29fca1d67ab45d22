"""`schwebe decode`: the JSON contract of CONTRACTS.md, single and batch modes, exit codes.

Frames come from the published vectors in tests/test_lorawan.py (sources named there) or are
built with gateway.frames.lorawan's builders.
"""

from __future__ import annotations

import argparse
import base64
import io
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.cli.decode import MAX_LINE, add_decode_parser, build_parser, run_decode
from gateway.frames import (
    FrameError,
    encode_pull_data,
    encode_pull_resp,
    encode_push_data,
    encode_tx_ack,
)
from gateway.frames import build as B
from gateway.frames import lorawan as L
from gateway.frames.decode import DecodeError, decode_gwmp, decode_phy, decode_sensor

ROOT = Path(__file__).resolve().parents[1]
PYTHON = str(ROOT / ".venv" / "bin" / "python")
MAIN = "import sys; from gateway.cli.decode import main; sys.exit(main(sys.argv[1:]))"

h = bytes.fromhex
LP_UP = "40F17DBE4900020001954378762B11FF0D"  # lora-packet: "test", FCnt 2, FPort 1
LP_NWKSKEY = "44024241ed4ce9a68c6a8bc055233fd3"
LP_APPSKEY = "ec925802ae430ca77fd3dd73cb2cc588"
CS_KEY = "0102030405060708090a0b0c0d0e0f10"
CS_11_DOWN = "600403020103000022ac0a01f0b468ddaa5ed13a"
CS_11_KEYS = {
    "SNwkSIntKey": "01010101010101010101010101010100",
    "NwkSEncKey": "01010101010101010101010101010200",
    "AppSKey": "100f0e0d0c0b0a090807060504030201",
}


def run(argv: list[str], stdin: str = "") -> tuple[int, str, str]:
    args = build_parser().parse_args(argv)
    out, err = io.StringIO(), io.StringIO()
    rc = run_decode(args, io.StringIO(stdin), out, err)
    return rc, out.getvalue(), err.getvalue()


def batch(argv: list[str], lines: list[Any]) -> list[dict[str, Any]]:
    text = "".join((x if isinstance(x, str) else orjson.dumps(x).decode()) + "\n" for x in lines)
    rc, out, err = run([*argv, "-"], text)
    results = [orjson.loads(line) for line in out.splitlines()]
    # the exit status says whether any line failed
    assert rc == (1 if any("error" in r for r in results) else 0) and err == ""
    return results


# ---------------------------------------------------------------------------- phy: data frames


def test_data_uplink_fields_without_keys() -> None:
    d = decode_phy(LP_UP)
    assert d == {
        "MType": "UnconfirmedDataUp",
        "Major": 0,
        "DevAddr": "49be7df1",  # on air f17dbe49: printed as humans read it
        "FCtrl": 0,
        "ADR": False,
        "ADRACKReq": False,
        "ACK": False,
        "ClassB": False,
        "FOptsLen": 0,
        "FCnt": 2,
        "FOpts": "",
        "FPort": 1,
        "FRMPayload": "95437876",
        "MIC": "2b11ff0d",
    }


def test_data_uplink_with_keys_checks_mic_and_decrypts() -> None:
    d = decode_phy(LP_UP, {"NwkSKey": LP_NWKSKEY, "AppSKey": LP_APPSKEY})
    assert d["MICValid"] is True and d["MICComputed"] == "2b11ff0d"
    assert h(d["FRMPayloadPlain"]) == b"test"
    assert "MACCommands" not in d


def test_wrong_key_reports_invalid_mic() -> None:
    d = decode_phy(LP_UP, {"NwkSKey": "00" * 16})
    assert d["MICValid"] is False and d["MICComputed"] != d["MIC"]


def test_fcnt_high_param_enters_the_mic() -> None:
    raw = B.build_data_uplink(
        dev_addr=0x26011BDA,
        fcnt=0x30002,
        fport=2,
        payload=b"\x01",
        nwk_s_key=h(LP_NWKSKEY),
        app_s_key=h(LP_APPSKEY),
    )
    assert decode_phy(raw.hex(), {"NwkSKey": LP_NWKSKEY})["MICValid"] is False
    d = decode_phy(raw.hex(), {"NwkSKey": LP_NWKSKEY, "AppSKey": LP_APPSKEY}, {"FCntHigh": "3"})
    assert d["FCnt"] == 2 and d["MICValid"] is True and d["FRMPayloadPlain"] == "01"


def test_downlink_has_fpending_not_uplink_bits() -> None:
    d = decode_phy("60f17dbe4930020001f9d65d27")  # ACK + FPending
    assert d["MType"] == "UnconfirmedDataDown"
    assert d["ACK"] is True and d["FPending"] is True
    assert "ClassB" not in d and "ADRACKReq" not in d
    assert d["FPort"] == 1 and d["FRMPayload"] == ""  # FPort present, payload empty
    bare = decode_phy("60f17dbe49300200aabbccdd")  # no FPort at all
    assert bare["FPort"] is None and bare["FRMPayload"] == "" and bare["MIC"] == "aabbccdd"


def test_10_fopts_mac_commands_need_no_key() -> None:
    # lora-packet issue #18 frame: FOpts 091103 sent in clear by a 1.0 device
    d = decode_phy("4084412505A3010009110308B33750F504D4B86A")
    assert d["FOptsLen"] == 3 and d["FOpts"] == "091103"
    assert d["MACCommands"] == [
        {"CID": 9, "Name": "TxParamSetupAns", "Payload": ""},
        {"CID": 17, "Name": "PingSlotChannelAns", "Payload": "03"},
    ]


def test_unknown_cid_stops_split_and_rest_is_reported() -> None:
    raw = B.build_data_uplink(
        dev_addr=1,
        fcnt=1,
        fport=None,
        payload=b"",
        fopts=h("0285aa"),
        nwk_s_key=h(LP_NWKSKEY),
        app_s_key=h(LP_APPSKEY),
    )
    d = decode_phy(raw.hex())
    # The contract's MACCommands shape only: the unsplittable rest is the last command
    assert d["MACCommands"] == [
        {"CID": 2, "Name": "LinkCheckReq", "Payload": ""},
        {"CID": 0x85, "Name": "Unknown", "Payload": "aa"},
    ]
    assert "MACCommandsRest" not in d


def test_command_cut_short_is_listed_with_what_there_is() -> None:
    raw = B.build_data_uplink(
        dev_addr=1,
        fcnt=1,
        fport=None,
        payload=b"",
        fopts=h("0206aa"),  # DevStatusAns needs two bytes, one is left
        nwk_s_key=h(LP_NWKSKEY),
        app_s_key=h(LP_APPSKEY),
    )
    d = decode_phy(raw.hex())
    assert d["MACCommands"] == [
        {"CID": 2, "Name": "LinkCheckReq", "Payload": ""},
        {"CID": 6, "Name": "DevStatusAns", "Payload": "aa"},
    ]
    assert "MACCommandsRest" not in d


def _fport0_uplink(fopts: bytes = b"", fport: int = 0) -> str:
    return B.build_data_uplink(
        dev_addr=0x01020304,
        fcnt=7,
        fport=fport,
        payload=h("0206aabb"),  # LinkCheckReq, DevStatusAns(battery 0xaa, margin 0xbb)
        fopts=fopts,
        nwk_s_key=h(LP_NWKSKEY),
        app_s_key=h(LP_APPSKEY),
    ).hex()


def test_fport0_mac_commands_only_with_a_key_that_passes_the_mic() -> None:
    good = decode_phy(_fport0_uplink(), {"NwkSKey": LP_NWKSKEY})
    assert good["MICValid"] is True and good["FRMPayloadPlain"] == "0206aabb"
    assert good["MACCommands"] == [
        {"CID": 2, "Name": "LinkCheckReq", "Payload": ""},
        {"CID": 6, "Name": "DevStatusAns", "Payload": "aabb"},
    ]
    # A wrong key decrypts to noise: no MACCommands list (empty or garbage) pretends
    # otherwise; MICValid false is the contract's word for it.
    bad = decode_phy(_fport0_uplink(), {"NwkSKey": "00" * 16})
    assert bad["MICValid"] is False and "MACCommands" not in bad
    assert bad["FRMPayloadPlain"] != "0206aabb"
    rc, out, _ = run(["phy", _fport0_uplink(), "--key", "NwkSKey=" + "00" * 16])
    assert rc == 0 and "MACCommands" not in orjson.loads(out)
    # 1.0 FOpts travel in clear: their commands hold whatever the key
    clear = decode_phy(_fport0_uplink(fopts=h("02"), fport=1), {"NwkSKey": "00" * 16})
    assert clear["MICValid"] is False
    assert clear["MACCommands"] == [{"CID": 2, "Name": "LinkCheckReq", "Payload": ""}]


def test_11_downlink_fopts_decrypted_and_mic_checked() -> None:
    # ChirpStack lrwn 1.1 downlink example: FOpts 22ac0a -> LinkCheckAns(7, 1)
    d = decode_phy(CS_11_DOWN, CS_11_KEYS)  # 1.1-only keys imply LoRaWAN 1.1
    assert d["MICValid"] is True
    assert d["FOptsPlain"] == "020701"
    assert d["MACCommands"] == [{"CID": 2, "Name": "LinkCheckAns", "Payload": "0701"}]
    assert d["FRMPayloadPlain"] == "01020304"
    # AFCntDown defaults to true for FPort > 0; forcing NFCntDown gives other FOpts bytes
    other = decode_phy(CS_11_DOWN, CS_11_KEYS, {"AFCntDown": "false", "LoRaWAN": "1.1"})
    assert other["FOptsPlain"] != "020701"


def test_11_uplink_mic_needs_txch_and_fport0_uses_network_key() -> None:
    # lora-packet RekeyInd frame, sent on TxCh 1
    keys = {
        "FNwkSIntKey": "07c105892e1bbb7f7101d13a5f78249b",
        "SNwkSIntKey": "f9162a2fcf6e70867cee523249282844",
        "NwkSEncKey": "a5406d11c50850c965c2545ad81980a7",
        "AppSKey": "38034b6efc87cf9c40ac0b45b460d395",
    }
    frame = "40679810e080000000c2c5248de748"
    assert decode_phy(frame, keys, {"LoRaWAN": "1.1"})["MICValid"] is False
    d = decode_phy(frame, keys, {"LoRaWAN": "1.1", "TxCh": 1})
    assert d["MICValid"] is True
    assert d["FRMPayloadPlain"] == "0b01"
    assert d["MACCommands"] == [{"CID": 11, "Name": "RekeyInd", "Payload": "01"}]


def test_11_conf_fcnt_counts_only_with_ack() -> None:
    f_int, s_int = h("11" * 16), h("22" * 16)
    hexkeys = {"FNwkSIntKey": "11" * 16, "SNwkSIntKey": "22" * 16}
    acked = B.build_data_frame(
        mtype=2,
        dev_addr=7,
        fcnt=3,
        fport=None,
        fctrl_flags=B.FCTRL_ACK,
        version="1.1",
        conf_fcnt=41,
        f_nwk_s_int_key=f_int,
        s_nwk_s_int_key=s_int,
    )
    assert decode_phy(acked.hex(), hexkeys)["MICValid"] is False
    assert decode_phy(acked.hex(), hexkeys, {"ConfFCnt": 41})["MICValid"] is True
    plain = B.build_data_frame(
        mtype=2,
        dev_addr=7,
        fcnt=3,
        fport=None,
        version="1.1",
        f_nwk_s_int_key=f_int,
        s_nwk_s_int_key=s_int,
    )
    # without ACK the spec puts 0 in the block, whatever ConfFCnt the user passes
    assert decode_phy(plain.hex(), hexkeys, {"ConfFCnt": 41})["MICValid"] is True


# ---------------------------------------------------------------------------- phy: join & co


def test_join_request() -> None:
    # lora-packet mic_test join request
    frame = "0039363463336913AA05693574323831330489C65B1304"
    d = decode_phy(frame, {"AppKey": "98929b92c49edba9676d646d3b612456"})
    assert d["MType"] == "JoinRequest"
    assert d["JoinEUI"] == "aa13693363343639" and d["DevEUI"] == "3331383274356905"
    assert d["DevNonce"] == 0x8904
    assert d["MIC"] == "c65b1304"
    assert d["MICValid"] is True


def test_join_accept_without_key_is_only_encrypted() -> None:
    d = decode_phy("2023cf335489aae3183c0be0baa8dee5f3")
    assert d == {
        "MType": "JoinAccept",
        "Major": 0,
        "Encrypted": "23cf335489aae3183c0be0baa8dee5f3",
    }


def test_join_accept_10_with_session_keys() -> None:
    # ChirpStack lrwn 1.0 join-accept example; keys cross-checked with the library derivation
    d = decode_phy("2023cf335489aae3183c0be0baa8dee5f3", {"AppKey": CS_KEY}, {"DevNonce": 258})
    assert d["JoinNonce"] == 65793 and d["NetID"] == "020202" and d["DevAddr"] == "01020304"
    assert d["DLSettings"] == 0 and d["RxDelay"] == 0 and d["CFList"] is None
    assert d["OptNeg"] is False and d["MIC"] == "3449f212" and d["MICValid"] is True
    k = L.derive_session_keys_10(h(CS_KEY), join_nonce=65793, net_id=0x020202, dev_nonce=258)
    assert d["SessionKeys"] == {"NwkSKey": k.nwk_s_key.hex(), "AppSKey": k.app_s_key.hex()}


def test_join_accept_10_with_rfu_bit_7_set_still_gets_the_10_mic() -> None:
    # Under LoRaWAN 1.0 DLSettings bit 7 is RFU: a 1.0 join server may set it; the 1.0 MIC
    # (and the 1.0 session keys) still apply, so MICValid/MICComputed must come out.
    key = h(CS_KEY)
    mhdr = b"\x20"
    body = (65793).to_bytes(3, "little") + (0x020202).to_bytes(3, "little") \
        + (0x01020304).to_bytes(4, "little") + bytes((0x80, 1))
    phy = mhdr + B.encrypt_join_accept(key, body + L.join_accept_mic_10(key, mhdr + body))
    d = decode_phy(phy.hex(), {"AppKey": CS_KEY}, {"DevNonce": 258})
    assert d["DLSettings"] == 0x80
    assert d["MICValid"] is True and d["MICComputed"] == d["MIC"]
    k = L.derive_session_keys_10(key, join_nonce=65793, net_id=0x020202, dev_nonce=258)
    assert d["SessionKeys"] == {"NwkSKey": k.nwk_s_key.hex(), "AppSKey": k.app_s_key.hex()}
    # the same frame read as 1.1 is an OptNeg accept and needs the 1.1 keys for its MIC
    d11 = decode_phy(phy.hex(), {"NwkKey": CS_KEY}, {"LoRaWAN": "1.1", "DevNonce": 258})
    assert d11["OptNeg"] is True and "MICValid" not in d11


def test_join_accept_11_opt_neg_with_cflist() -> None:
    nwk, app, js_int = h("aa" * 16), h("bb" * 16), h("cc" * 16)
    cflist = h("184f84e85684b85e84886684586e8400")
    raw = B.build_join_accept(
        nwk,
        join_nonce=7,
        net_id=0x000013,
        dev_addr=0x26011234,
        dl_settings=0x80,
        rx_delay=1,
        cflist=cflist,
        js_int_key=js_int,
        join_eui=0x70B3D57ED0000001,
        dev_nonce=99,
    )
    assert len(raw) == 33
    keys = {"NwkKey": nwk.hex(), "AppKey": app.hex(), "JSIntKey": js_int.hex()}
    params = {"LoRaWAN": "1.1", "JoinEUI": "70b3d57ed0000001", "DevNonce": 99}
    d = decode_phy(raw, keys, params)
    assert d["OptNeg"] is True and d["CFList"] == cflist.hex() and d["MICValid"] is True
    k = L.derive_session_keys_11(nwk, app, join_nonce=7, join_eui=0x70B3D57ED0000001, dev_nonce=99)
    assert d["SessionKeys"] == {
        "FNwkSIntKey": k.f_nwk_s_int_key.hex(),
        "SNwkSIntKey": k.s_nwk_s_int_key.hex(),
        "NwkSEncKey": k.nwk_s_enc_key.hex(),
        "AppSKey": (k.app_s_key or b"").hex(),
    }
    # a wrong DevNonce breaks the 1.1 MIC (it is part of the MIC input)
    assert decode_phy(raw, keys, {**params, "DevNonce": 98})["MICValid"] is False


def test_join_accept_wrong_key_fails_mic() -> None:
    d = decode_phy("2023cf335489aae3183c0be0baa8dee5f3", {"AppKey": "00" * 16})
    assert d["MICValid"] is False


def test_rejoin_answer_is_decrypted_with_js_enc_key() -> None:
    nwk, js_enc, js_int = h("aa" * 16), h("dd" * 16), h("cc" * 16)
    raw = B.build_join_accept(
        js_enc,
        join_nonce=8,
        net_id=0x13,
        dev_addr=0x26011235,
        dl_settings=0x80,
        js_int_key=js_int,
        join_req_type=2,
        join_eui=0x70B3D57ED0000001,
        dev_nonce=5,
    )
    keys = {"NwkKey": nwk.hex(), "JSEncKey": js_enc.hex(), "JSIntKey": js_int.hex()}
    params = {"LoRaWAN": "1.1", "JoinReqType": 2, "JoinEUI": "70b3d57ed0000001", "DevNonce": 5}
    d = decode_phy(raw, keys, params)
    assert d["DevAddr"] == "26011235" and d["MICValid"] is True
    assert "AppSKey" not in d["SessionKeys"]  # no AppKey given: only the network keys
    # answering a Join-request instead (JoinReqType 0xff) the NwkKey is used and fails
    assert decode_phy(raw, keys, {**params, "JoinReqType": "0xff"})["MICValid"] is False


@pytest.mark.parametrize(
    ("frame", "fields", "key"),
    [
        (
            "c0000302010807060504030201020111da47bd",
            {"RejoinType": 0, "NetID": "010203", "DevEUI": "0102030405060708", "RJcount0": 0x0102},
            "SNwkSIntKey",
        ),
        (
            "c00108070605040302010807060504030201020167f9abe7",
            {
                "RejoinType": 1,
                "JoinEUI": "0102030405060708",
                "DevEUI": "0102030405060708",
                "RJcount1": 0x0102,
            },
            "JSIntKey",
        ),
        (
            "c002030201080706050403020102012b459cf0",
            {"RejoinType": 2, "NetID": "010203", "DevEUI": "0102030405060708", "RJcount0": 0x0102},
            "SNwkSIntKey",
        ),
    ],
)
def test_rejoin_requests(frame: str, fields: dict[str, Any], key: str) -> None:
    # The Things Stack join_messages_test.go rejoin MIC vectors (key 0x01 * 16)
    d = decode_phy(frame, {key: "01" * 16})
    assert d["MType"] == "RejoinRequest"
    assert {k: d[k] for k in fields} == fields
    assert d["MICValid"] is True


def test_proprietary_has_payload_and_no_mic() -> None:
    assert decode_phy("e0010203") == {"MType": "Proprietary", "Major": 0, "Payload": "010203"}


@pytest.mark.parametrize(
    ("frame", "kind"),
    [
        ("", "empty"),
        ("40f17dbe4900", "too_short"),
        ("40f17dbe490f0200aabbccdd", "fopts_overrun"),
        ("41f17dbe4900020001954378762b11ff0d", "unknown_major"),
        ("20" + "00" * 17, "join_accept_length"),
        ("c003" + "00" * 17, "unknown_rejoin_type"),
    ],
)
def test_malformed_frames_rejected(frame: str, kind: str) -> None:
    with pytest.raises(FrameError) as exc:
        decode_phy(frame)
    assert exc.value.kind == kind
    rc, out, err = run(["phy", frame])
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    ("keys", "params", "kind", "needle"),
    [
        ({"NwkSkey": "00" * 16}, {}, "bad_key", "NwkSkey"),
        ({"NwkSKey": "abcd"}, {}, "bad_key", "32 hex digits"),
        ({}, {"LoRaWAN": "2.0"}, "bad_param", "LoRaWAN"),
        ({}, {"FCntHigh": "x"}, "bad_param", "FCntHigh"),
        ({}, {"JoinReqType": 5}, "bad_param", "JoinReqType"),
        ({}, {"JoinEUI": "0102"}, "bad_param", "JoinEUI"),
        ({}, {"AFCntDown": "maybe"}, "bad_param", "AFCntDown"),
        ({}, {"Foo": 1}, "bad_param", "Foo"),
    ],
)
def test_bad_keys_and_params(
    keys: dict[str, str], params: dict[str, Any], kind: str, needle: str
) -> None:
    with pytest.raises(DecodeError) as exc:
        decode_phy(LP_UP, keys, params)
    assert exc.value.kind == kind and needle in exc.value.detail


def test_key_value_never_echoed_in_errors() -> None:
    secret = "5ec2e75ec2e75ec2e75ec2e75ec2e7zz"
    rc, _, err = run(["phy", LP_UP, "--key", f"NwkSKey={secret}"])
    assert rc == 2 and secret not in err and "NwkSKey" in err


def test_bad_hex_single_mode() -> None:
    rc, out, err = run(["phy", "4g"])
    assert rc == 2 and out == "" and err.startswith("schwebe decode phy: bad_hex:")


# ---------------------------------------------------------------------------- gwmp


def test_push_data_good_and_bad_rxpk_siblings_survive() -> None:
    good = base64.b64encode(h(LP_UP)).decode()
    rxpk = [
        {"tmst": 1, "rssi": -50, "lsnr": 7.5, "size": 17, "data": good, "rsig": [{"ant": 0}]},
        {"tmst": 2, "size": 3, "data": "!!!notbase64"},
        {"tmst": 3, "size": 99, "data": good},
        {"tmst": 4, "size": 2, "data": base64.b64encode(h("4000")).decode()},
        5,
    ]
    stat = {"time": "2014-01-12 08:59:28 GMT", "rxnb": 4}
    # built by hand: the encoder rightly refuses a non-object rxpk, forwarders in the wild do not
    body = orjson.dumps({"rxpk": rxpk, "stat": stat})
    dgram = h("02123400b827ebfffe000001") + body
    d = decode_gwmp(dgram.hex())
    assert d["ProtocolVersion"] == 2 and d["Identifier"] == "PUSH_DATA"
    assert d["Token"] == 0x3412 and d["GatewayEUI"] == "b827ebfffe000001"
    assert d["stat"] == stat
    rx = d["rxpk"]
    assert len(rx) == 5
    assert rx[0]["rssi"] == -50 and rx[0]["rsig"] == [{"ant": 0}] and rx[0]["data"] == good
    assert rx[0]["PHYPayload"] == LP_UP.lower() and rx[0]["phy"] == decode_phy(LP_UP)
    assert rx[1]["error"]["kind"] == "bad_base64" and "phy" not in rx[1]
    assert rx[2]["error"]["kind"] == "size_mismatch"
    assert rx[3]["phy"]["error"]["kind"] == "too_short"  # base64 fine, frame malformed
    assert rx[3]["PHYPayload"] == "4000"
    assert rx[4] == {"error": {"kind": "bad_rxpk", "detail": rx[4]["error"]["detail"]}}


def test_token_is_read_little_endian() -> None:
    d = decode_gwmp(encode_pull_data(0x0102, 1).hex())
    assert d == {
        "ProtocolVersion": 2,
        "Token": 0x0102,
        "Identifier": "PULL_DATA",
        "GatewayEUI": "0000000000000001",
    }
    assert decode_gwmp("02020104")["Token"] == 0x0102  # bytes 02 01 on the wire


def test_pull_resp_and_tx_ack_bodies_unchanged() -> None:
    txpk = {"imme": True, "freq": 869.525, "powe": 14, "data": "YAQDAg==", "size": 4}
    d = decode_gwmp(encode_pull_resp(5, txpk).hex())
    assert d["Identifier"] == "PULL_RESP" and d["txpk"] == txpk and "GatewayEUI" not in d
    d = decode_gwmp(encode_tx_ack(5, 0xAA, {"error": "TOO_LATE"}).hex())
    assert d["Identifier"] == "TX_ACK" and d["txpk_ack"] == {"error": "TOO_LATE"}
    assert decode_gwmp("02000001")["Identifier"] == "PUSH_ACK"
    assert decode_gwmp("01000004")["ProtocolVersion"] == 1


@pytest.mark.parametrize(
    ("dgram", "kind"),
    [
        ("03000001", "bad_version"),
        ("020000000102030405060708", "missing_body"),
        ("0200", "too_short"),
    ],
)
def test_bad_datagrams_rejected(dgram: str, kind: str) -> None:
    with pytest.raises(FrameError) as exc:
        decode_gwmp(dgram)
    assert exc.value.kind == kind
    rc, out, err = run(["gwmp", dgram])
    assert rc == 2 and out == "" and err.count("\n") == 1 and kind in err


# ---------------------------------------------------------------------------- batch mode


def test_phy_batch_in_order_with_errors_and_cli_defaults() -> None:
    lines: list[Any] = [
        {"phy": LP_UP, "keys": {"AppSKey": LP_APPSKEY}},
        "not json",
        {"phy": "40"},
        {"keys": {}},
        [1, 2],
        "",
        {"phy": LP_UP, "keys": {"NwkSKey": "00" * 16}},  # the line's key overrides the CLI's
        {"phy": LP_UP, "params": {"LoRaWAN": "3"}},
        {"phy": "2023cf335489aae3183c0be0baa8dee5f3", "params": {"JoinEUI": -1}},
    ]
    out = batch(["phy", "--key", f"NwkSKey={LP_NWKSKEY}"], lines)
    assert len(out) == len(lines)
    assert out[0]["MICValid"] is True and h(out[0]["FRMPayloadPlain"]) == b"test"
    assert out[1]["error"]["kind"] == "bad_hex"  # not JSON, so read as a bare hex line
    assert out[2]["error"]["kind"] == "too_short"
    assert out[3]["error"]["kind"] == "bad_input"
    assert out[4]["error"]["kind"] == "bad_json"
    assert out[5]["error"]["kind"] == "bad_input"
    assert out[6]["MICValid"] is False
    assert out[7]["error"]["kind"] == "bad_param"
    assert out[8]["error"]["kind"] == "bad_hex" and "JoinEUI" in out[8]["error"]["detail"]
    assert all(set(o["error"]) == {"kind", "detail"} for o in out if "error" in o)


def test_body_key_named_like_a_header_field_is_reported_not_dropped() -> None:
    dgram = (h("02123400b827ebfffe000001") + b'{"rxpk":[],"Token":7,"vendor":{"x":1}}').hex()
    with pytest.raises(DecodeError) as exc:
        decode_gwmp(dgram)
    assert exc.value.kind == "bad_body" and "Token" in exc.value.detail
    rc, out, err = run(["gwmp", dgram])
    assert rc == 2 and out == "" and err.count("\n") == 1 and "Token" in err
    assert batch(["gwmp"], [{"gwmp": dgram}])[0]["error"]["kind"] == "bad_body"
    # other body keys are printed unchanged, under their own names
    fine = (h("02123400b827ebfffe000001") + b'{"rxpk":[],"vendor":{"x":1}}').hex()
    assert decode_gwmp(fine)["vendor"] == {"x": 1} and decode_gwmp(fine)["Token"] == 0x3412


@pytest.mark.parametrize("bad", [[], "", 0, False, [["NwkSKey", LP_NWKSKEY]]])
def test_batch_keys_and_params_must_be_objects(bad: Any) -> None:
    out = batch(
        ["phy"],
        [{"phy": LP_UP, "keys": bad}, {"phy": LP_UP, "params": bad}, {"phy": LP_UP, "keys": None}],
    )
    assert out[0]["error"]["kind"] == "bad_input" and "keys" in out[0]["error"]["detail"]
    assert out[1]["error"]["kind"] == "bad_input" and "params" in out[1]["error"]["detail"]
    assert out[2]["FCnt"] == 2  # null is as good as absent


def test_gwmp_batch() -> None:
    dgram = encode_push_data(1, 2, [{"data": base64.b64encode(h(LP_UP)).decode()}]).hex()
    out = batch(["gwmp"], [{"gwmp": dgram}, {"gwmp": "0300"}, {"gwmp": 5}])
    assert out[0]["rxpk"][0]["phy"]["FCnt"] == 2
    assert out[1]["error"]["kind"] == "too_short"
    assert out[2]["error"]["kind"] == "bad_hex"


def test_overlong_line_is_one_error_and_batch_goes_on() -> None:
    huge = '{"phy": "' + "40" * (MAX_LINE // 2 + 10) + '"}'
    out = batch(["phy"], [huge, {"phy": LP_UP}])
    assert out[0]["error"]["kind"] == "line_too_long"
    assert out[1]["FCnt"] == 2


# ---------------------------------------------------------------------------- sensor


def test_sensor_list_and_decode_match_registry() -> None:
    from gateway.parking.registry import decode_uplink, list_models

    rc, out, _ = run(["sensor", "--list"])
    assert rc == 0 and orjson.loads(out) == list_models()
    assert "nwave/nps405" in orjson.loads(out)
    rc, out, _ = run(["sensor", "nwave/nps405", "1", "01"])
    assert rc == 0 and orjson.loads(out) == orjson.loads(
        orjson.dumps(decode_uplink("nwave/nps405", 1, h("01")))
    )
    assert "data" in orjson.loads(out) or "errors" in orjson.loads(out)


def test_sensor_errors() -> None:
    rc, _, err = run(["sensor", "acme/nothing", "1", "01"])
    assert rc == 2 and "unknown_model" in err and err.count("\n") == 1
    rc, _, err = run(["sensor", "nwave/nps405", "one", "01"])
    assert rc == 2 and "FPORT" in err
    rc, _, err = run(["sensor", "nwave/nps405"])
    assert rc == 2 and "MODEL FPORT HEX" in err


def test_sensor_batch() -> None:
    out = batch(
        ["sensor"],
        [
            {"model": "nwave/nps405", "fPort": 1, "bytes": "01"},
            {"model": "acme/nothing", "fPort": 1, "bytes": "01"},
            {"model": "nwave/nps405", "bytes": "01"},
        ],
    )
    assert "error" not in out[0]
    assert out[1]["error"]["kind"] == "unknown_model"
    assert out[2]["error"]["kind"] == "bad_input"


# ---------------------------------------------------------------------------- wiring


def test_add_decode_parser_registers_on_a_cli() -> None:
    parser = argparse.ArgumentParser(prog="schwebe")
    sub = parser.add_subparsers(dest="command", required=True)
    add_decode_parser(sub)
    args = parser.parse_args(["decode", "phy", LP_UP, "--key", f"NwkSKey={LP_NWKSKEY}"])
    assert callable(args.func)
    out = io.StringIO()
    assert run_decode(args, io.StringIO(), out, io.StringIO()) == 0
    assert orjson.loads(out.getvalue())["MICValid"] is True


def test_usage_error_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["phy", LP_UP, "--key", "NoEquals"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "NAME=VALUE" in err


def test_subprocess_main() -> None:
    proc = subprocess.run(
        [PYTHON, "-c", MAIN, "phy", LP_UP, "--key", f"AppSKey={LP_APPSKEY}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert h(orjson.loads(proc.stdout)["FRMPayloadPlain"]) == b"test"
    bad = subprocess.run(
        [PYTHON, "-c", MAIN, "phy", "40"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


def test_subprocess_batch_survives_non_utf8_line() -> None:
    data = b'{"phy": "' + LP_UP.encode() + b'"}\n\xff\xfe\n{"phy": "e001"}\n'
    proc = subprocess.run(
        [PYTHON, "-c", MAIN, "phy", "-"], cwd=ROOT, input=data, capture_output=True, timeout=60
    )
    assert proc.returncode == 1, proc.stderr  # a line failed
    out = [orjson.loads(x) for x in proc.stdout.splitlines()]
    assert [("error" in o) for o in out] == [False, True, False]


def test_batch_takes_bare_hex_lines_and_exits_0_when_all_decode() -> None:
    for what, good in (("phy", LP_UP), ("gwmp", "02123404")):
        rc, out, err = run([what, "-"], f"{good}\n  {good}  \n")
        assert (rc, err) == (0, "")
        first, second = (orjson.loads(x) for x in out.splitlines())
        assert "error" not in first and first == second
        assert first == (decode_phy(good) if what == "phy" else decode_gwmp(good))
    rc, out, _ = run(["sensor", "-"], "nwave/nps405 1 01\n")
    assert rc == 0 and orjson.loads(out) == decode_sensor("nwave/nps405", "1", "01")
    rc, out, _ = run(["phy", "-"], f"{LP_UP}\nnot-hex\n")
    assert rc == 1
    assert [("error" in orjson.loads(x)) for x in out.splitlines()] == [False, True]


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_batch_streams_1gb_in_bounded_memory() -> None:
    """1 GB of JSON Lines (a capture the size the issue names) through a pipe; RSS stays flat."""
    if not Path("/proc/self/status").exists():
        pytest.fail("needs /proc to measure RSS")
    frame = B.build_data_uplink(
        dev_addr=0x26011BDA,
        fcnt=1,
        fport=1,
        payload=bytes(200),
        nwk_s_key=h(LP_NWKSKEY),
        app_s_key=h(LP_APPSKEY),
    ).hex()
    line = orjson.dumps({"phy": frame, "keys": {"NwkSKey": LP_NWKSKEY}}) + b"\n"
    total = 1024 * 1024 * 1024
    count = total // len(line)
    peak = 0
    lines_out = 0
    tail = b""
    with subprocess.Popen(
        [PYTHON, "-c", MAIN, "phy", "-"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        sink = proc.stdin

        def feed() -> None:
            chunk = line * 256
            for _ in range(count // 256):
                sink.write(chunk)
            sink.write(line * (count % 256))
            # one overlong line at the end: drained in pieces, never held whole
            sink.write(b'{"phy": "' + b"40" * (3 * MAX_LINE) + b'"}\n')
            sink.close()

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        last = 0.0
        for out_line in proc.stdout:
            lines_out += 1
            now = time.monotonic()
            if now - last > 0.5:
                peak = max(peak, _rss_kib(proc.pid))
                last = now
            if lines_out == 1:
                assert orjson.loads(out_line)["MICValid"] is True
            tail = out_line
        feeder.join()
        assert proc.wait(timeout=60) == 1  # the last line (overlong) failed
    assert lines_out == count + 1
    assert orjson.loads(tail)["error"]["kind"] == "line_too_long"
    assert peak > 0
    print(f"peak RSS {peak} KiB for {count} lines")
    assert peak < 120 * 1024, f"RSS peaked at {peak} KiB while streaming 1 GB"
