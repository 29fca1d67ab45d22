"""LoRaWAN crypto against published test vectors, plus builder round trips.

Vector sources (repository + path), each vector tagged with its source below:
  LP  = anthonykirby/lora-packet  __tests__/mic_test.ts, decrypt_test.ts, key_gen_test.ts,
        fopts_test.ts (npm `lora-packet`)
  CS  = chirpstack/chirpstack  lrwn/src/phy_payload.rs (doc examples), lrwn/src/keys.rs (tests)
  TTS = TheThingsNetwork/lorawan-stack  pkg/crypto/data_messages_test.go,
        pkg/crypto/join_messages_test.go, pkg/crypto/key_derivation_test.go
The LoRaWAN specifications (1.0.x, 1.1) give no numeric examples; Semtech LoRaMac-node ships
no crypto test vectors. TTS's FOpts vectors use the 1.1 text before the errata
(scheme="original"); LP and CS use the errata.
"""

from __future__ import annotations

import pytest

from gateway.frames import build as B
from gateway.frames import lorawan as L
from gateway.frames import parse_phy

h = bytes.fromhex

LP_NWKSKEY = h("44024241ed4ce9a68c6a8bc055233fd3")
LP_APPSKEY = h("ec925802ae430ca77fd3dd73cb2cc588")
LP_APPKEY = h("98929b92c49edba9676d646d3b612456")
CS_KEY = h("0102030405060708090a0b0c0d0e0f10")
ONES = bytes([1] * 16)


def _data_mic_10(key: bytes, raw: bytes, fcnt_high: int = 0) -> bytes:
    p = parse_phy(raw)
    assert p.dev_addr is not None and p.fcnt is not None
    return L.data_mic_10(
        key, uplink=p.uplink, dev_addr=p.dev_addr, fcnt=(fcnt_high << 16) | p.fcnt, msg=raw[:-4]
    )


# ---------------------------------------------------------------------------- data MIC 1.0


@pytest.mark.parametrize(
    ("source", "frame", "mic"),
    [
        ("LP mic_test data 1", "40F17DBE4900020001954378762B11FF0D", "2b11ff0d"),
        ("LP mic_test data 2", "40F17DBE49000300012A3518AF", "2a3518af"),
        ("LP mic_test ACK downlink", "60f17dbe4920020001f9d65d27", "f9d65d27"),
    ],
)
def test_data_mic_10_lora_packet(source: str, frame: str, mic: str) -> None:
    raw = h(frame)
    assert _data_mic_10(LP_NWKSKEY, raw).hex() == mic
    assert raw[-4:].hex() == mic


def test_data_mic_10_detects_tampered_mic() -> None:
    # LP mic_test "should detect incorrect data packet MIC": MIC ...aa instead of ...af
    raw = h("40F17DBE49000300012A3518AA")
    assert _data_mic_10(LP_NWKSKEY, raw) != raw[-4:]


def test_data_mic_depends_on_fcnt_high() -> None:
    raw = h("40F17DBE4900020001954378762B11FF0D")
    assert _data_mic_10(LP_NWKSKEY, raw, fcnt_high=0).hex() == "2b11ff0d"
    assert _data_mic_10(LP_NWKSKEY, raw, fcnt_high=1) != raw[-4:]


def test_tts_data_mics() -> None:
    # TTS data_messages_test.go TestUplinkDownlinkMIC
    msg = h("40040302010001000101020304")
    addr = 0x01020304
    assert L.data_mic_10(ONES, uplink=True, dev_addr=addr, fcnt=1, msg=msg).hex() == "3b073182"
    assert L.uplink_mic_11(ONES, ONES, dev_addr=addr, fcnt=1, msg=msg).hex() == "3b073b07"
    assert L.data_mic_10(ONES, uplink=False, dev_addr=addr, fcnt=1, msg=msg).hex() == "a5609fa9"
    assert L.downlink_mic_11(ONES, dev_addr=addr, fcnt=1, msg=msg).hex() == "a5609fa9"


def test_cs_confirmed_uplink_10() -> None:
    # CS phy_payload.rs "LoRaWAN 1.0.x confirmed uplink example"
    raw = h("80040302010300000673070ae264d4f7e117d2c0")
    nwk_s_key, app_s_key = CS_KEY, h("100f0e0d0c0b0a090807060504030201")
    p = parse_phy(raw)
    assert _data_mic_10(nwk_s_key, raw).hex() == "e117d2c0"
    assert p.frm_payload is not None and p.dev_addr is not None
    plain = L.crypt_frm_payload(
        app_s_key, uplink=True, dev_addr=p.dev_addr, fcnt=0, data=p.frm_payload
    )
    assert plain == h("01020304")
    cmds, rest = L.split_mac_commands(p.fopts or b"", uplink=True)
    assert [(c.name, c.payload.hex()) for c in cmds] == [("DevStatusAns", "7307")]
    assert rest == b""
    # and the builder reproduces the frame byte for byte
    built = B.build_data_frame(
        mtype=4,
        dev_addr=0x01020304,
        fcnt=0,
        fport=10,
        payload=h("01020304"),
        fopts=h("067307"),
        nwk_s_key=nwk_s_key,
        app_s_key=app_s_key,
    )
    assert built == raw


# ---------------------------------------------------------------------------- FRMPayload


@pytest.mark.parametrize(
    ("source", "frame", "key", "plain"),
    [
        ("LP decrypt_test test", "40F17DBE4900020001954378762B11FF0D", LP_APPSKEY, b"test"),
        (
            "LP decrypt_test large payload",
            "40f17dbe490004000155332de41a11adc072553544429ce7787707d1c316e027e7e5e334263376affb8aa17ad30075293f28dea8a20af3c5e7",
            LP_APPSKEY,
            b"The quick brown fox jumps over the lazy dog.",
        ),
        (
            "LP decrypt_test bad key scrambles",
            "40F17DBE4900020001954378762B11FF0D",
            h("ec925802ae430ca77fd3dd73cb2cc580"),
            h("5999fc3f"),
        ),
        ("LP decrypt_test bad data", "40F17DBE4900020001954478762B11FF0D", LP_APPSKEY, b"tbst"),
    ],
)
def test_frm_payload_lora_packet(source: str, frame: str, key: bytes, plain: bytes) -> None:
    p = parse_phy(h(frame))
    assert p.dev_addr is not None and p.fcnt is not None and p.frm_payload is not None
    got = L.decrypt_frm_payload(
        key, uplink=True, dev_addr=p.dev_addr, fcnt=p.fcnt, data=p.frm_payload
    )
    assert got == plain


def test_tts_frm_payload_and_fopts() -> None:
    # TTS data_messages_test.go TestUplinkDownlinkEncryption (FOpts: the pre-errata 1.1 text)
    data = h("01020304")

    def frm(uplink: bool, payload: bytes) -> bytes:
        return L.crypt_frm_payload(ONES, uplink=uplink, dev_addr=0x01020304, fcnt=1, data=payload)

    def fopts(uplink: bool, payload: bytes) -> bytes:
        return L.crypt_fopts(
            ONES, uplink=uplink, dev_addr=0x01020304, fcnt=1, data=payload, scheme="original"
        )

    assert frm(True, data).hex() == "cff30b4e"
    assert frm(True, h("cff30b4e")) == data
    assert frm(False, data).hex() == "4e75f440"
    assert fopts(True, data).hex() == "33c92622"
    assert fopts(False, data).hex() == "ca6fdaba"
    assert fopts(False, h("ca6fdaba")) == data


def test_fport0_payload_round_trip_with_network_key() -> None:
    # LP decrypt_test "Should Decode Port 0": FPort 0 uses the network key, not AppSKey
    nwk = h("a1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4")
    raw = B.build_data_uplink(
        dev_addr=0xA1B2C3D4, fcnt=10, fport=0, payload=h("02"), nwk_s_key=nwk, app_s_key=ONES
    )
    p = parse_phy(raw)
    assert p.frm_payload is not None and p.frm_payload != h("02")
    assert L.crypt_frm_payload(
        nwk, uplink=True, dev_addr=0xA1B2C3D4, fcnt=10, data=p.frm_payload
    ) == h("02")


# ---------------------------------------------------------------------------- 1.1 data


def test_cs_lp_11_downlink_with_encrypted_fopts() -> None:
    # CS phy_payload.rs "LoRaWAN 1.1.x downlink with encrypted f_opts"; LP fopts_test.ts (same)
    raw = h("600403020103000022ac0a01f0b468ddaa5ed13a")
    s_int = h("01010101010101010101010101010100")
    s_enc = h("01010101010101010101010101010200")
    app = h("100f0e0d0c0b0a090807060504030201")
    p = parse_phy(raw)
    assert p.dev_addr == 0x01020304 and p.fopts == h("22ac0a")
    assert L.downlink_mic_11(s_int, dev_addr=p.dev_addr, fcnt=0, msg=raw[:-4]).hex() == "aa5ed13a"
    fopts = L.decrypt_fopts(
        s_enc, uplink=False, dev_addr=p.dev_addr, fcnt=0, data=p.fopts, a_fcnt_down=True
    )
    assert fopts.hex() == "020701"
    cmds, _ = L.split_mac_commands(fopts, uplink=False)
    assert [(c.name, c.payload.hex()) for c in cmds] == [("LinkCheckAns", "0701")]
    assert p.frm_payload is not None
    assert L.crypt_frm_payload(
        app, uplink=False, dev_addr=p.dev_addr, fcnt=0, data=p.frm_payload
    ) == h("01020304")
    built = B.build_data_frame(
        mtype=3,
        dev_addr=0x01020304,
        fcnt=0,
        fport=1,
        payload=h("01020304"),
        fopts=h("020701"),
        version="1.1",
        s_nwk_s_int_key=s_int,
        nwk_s_enc_key=s_enc,
        app_s_key=app,
    )
    assert built == raw


def test_lp_11_rekeyind_uplink() -> None:
    # LP fopts_test.ts "should decode rekeyind packet with Lorawan11 Encrypted" (TxCh 1)
    raw = h("40679810e080000000c2c5248de748")
    f_int = h("07c105892e1bbb7f7101d13a5f78249b")
    s_int = h("f9162a2fcf6e70867cee523249282844")
    s_enc = h("a5406d11c50850c965c2545ad81980a7")
    p = parse_phy(raw)
    assert p.dev_addr is not None and p.frm_payload is not None
    mic = L.uplink_mic_11(f_int, s_int, dev_addr=p.dev_addr, fcnt=0, msg=raw[:-4], tx_ch=1)
    assert mic.hex() == "248de748"
    # with TxCh 0 the SNwkSIntKey half differs but the FNwkSIntKey half does not
    other = L.uplink_mic_11(f_int, s_int, dev_addr=p.dev_addr, fcnt=0, msg=raw[:-4], tx_ch=0)
    assert other[:2] != mic[:2] and other[2:] == mic[2:]
    plain = L.crypt_frm_payload(s_enc, uplink=True, dev_addr=p.dev_addr, fcnt=0, data=p.frm_payload)
    assert plain.hex() == "0b01"
    cmds, _ = L.split_mac_commands(plain, uplink=True)
    assert [(c.name, c.payload.hex()) for c in cmds] == [("RekeyInd", "01")]


def test_errata_fopts_marks_afcntdown() -> None:
    def enc(uplink: bool, afcnt: bool) -> bytes:
        return L.crypt_fopts(
            ONES, uplink=uplink, dev_addr=1, fcnt=7, data=h("020701"), a_fcnt_down=afcnt
        )

    assert enc(False, True) != enc(False, False)
    # uplinks have no AFCntDown: the flag must not change them
    assert enc(True, True) == enc(True, False)


# ---------------------------------------------------------------------------- join


@pytest.mark.parametrize(
    ("source", "key", "frame", "mic"),
    [
        (
            "LP mic_test join request",
            LP_APPKEY,
            "0039363463336913AA05693574323831330489C65B1304",
            "c65b1304",
        ),
        (
            "CS phy_payload.rs join-request",
            CS_KEY,
            "0001010101010101010202020202020202030309b97b32",
            "09b97b32",
        ),
        (
            "TTS TestComputeJoinRequestMIC",
            ONES,
            "00080706050403020108070605040302010201e6e10c55",
            "e6e10c55",
        ),
    ],
)
def test_join_request_mic(source: str, key: bytes, frame: str, mic: str) -> None:
    raw = h(frame)
    assert L.join_request_mic(key, raw[:-4]).hex() == mic == raw[-4:].hex()


def test_build_join_request_matches_cs() -> None:
    raw = B.build_join_request(
        CS_KEY, join_eui=0x0101010101010101, dev_eui=0x0202020202020202, dev_nonce=771
    )
    assert raw.hex() == "0001010101010101010202020202020202030309b97b32"


@pytest.mark.parametrize(
    ("rejoin", "mic"),
    [
        ("c00003020108070605040302010201", "11da47bd"),
        ("c001080706050403020108070605040302010201", "67f9abe7"),
        ("c00203020108070605040302010201", "2b459cf0"),
    ],
)
def test_tts_rejoin_request_mic(rejoin: str, mic: str) -> None:
    # TTS join_messages_test.go TestComputeRejoinRequestMIC
    assert L.rejoin_request_mic(ONES, h(rejoin)).hex() == mic


def test_lp_join_accept_mic_10() -> None:
    # LP mic_test "join accept packet MIC" (given unencrypted)
    raw = h("20386337CCBBAAE7CD2C010000D9D0A6E7")
    assert L.join_accept_mic_10(LP_APPKEY, raw[:-4]).hex() == "d9d0a6e7"


def test_tts_join_accept_mics_and_encryption() -> None:
    # TTS join_messages_test.go TestComputeLegacyJoinAcceptMIC / TestComputeJoinAcceptMIC /
    # TestJoinAcceptEncryption
    msg = h("20030201030201040302010001")
    assert L.join_accept_mic_10(ONES, msg).hex() == "32f54ab3"
    mic11 = L.join_accept_mic_11(
        ONES, join_req_type=0xFF, join_eui=0x0807060504030201, dev_nonce=0x0201, msg=msg
    )
    assert mic11.hex() == "48e9be5f"
    plain = msg[1:] + h("32f54ab3")
    enc = h("c9fbb259e11649096a568a9e3b7117c3")
    assert B.encrypt_join_accept(ONES, plain) == enc
    assert L.decrypt_join_accept(ONES, enc) == plain


def test_cs_join_accept_10() -> None:
    # CS phy_payload.rs "LoRaWAN 1.0.x Join-accept example"
    raw = h("2023cf335489aae3183c0be0baa8dee5f3")
    plain = L.decrypt_join_accept(CS_KEY, raw[1:])
    assert plain.hex() == "0101010202020403020100003449f212"
    assert L.join_accept_mic_10(CS_KEY, raw[:1] + plain[:-4]).hex() == "3449f212"
    built = B.build_join_accept(
        CS_KEY, join_nonce=65793, net_id=0x020202, dev_addr=0x01020304, dl_settings=0, rx_delay=0
    )
    assert built == raw


def test_cs_join_accept_11_opt_neg() -> None:
    # CS phy_payload.rs "LoRaWAN 1.1.x Join-accept example" (one key serves as NwkKey and JSIntKey)
    raw = h("207abeea06b02920f11c02d0348fcf1815")
    plain = L.decrypt_join_accept(CS_KEY, raw[1:])
    assert plain[10] & 0x80  # OptNeg
    mic = L.join_accept_mic_11(
        CS_KEY,
        join_req_type=0xFF,
        join_eui=0x0807060504030201,
        dev_nonce=258,
        msg=raw[:1] + plain[:-4],
    )
    assert mic.hex() == "93ff9a3a" == plain[-4:].hex()
    built = B.build_join_accept(
        CS_KEY,
        join_nonce=65793,
        net_id=0x020202,
        dev_addr=0x01020304,
        dl_settings=0x80,
        rx_delay=0,
        js_int_key=CS_KEY,
        join_eui=0x0807060504030201,
        dev_nonce=258,
    )
    assert built == raw


def test_join_accept_rejects_wrong_length() -> None:
    with pytest.raises(ValueError, match="16 or 32"):
        L.decrypt_join_accept(CS_KEY, bytes(17))


# ---------------------------------------------------------------------------- keys


def test_lp_session_keys_10() -> None:
    # LP key_gen_test.ts (NetID, AppNonce, DevNonce given as humans read them)
    k = L.derive_session_keys_10(LP_APPKEY, join_nonce=0x376338, net_id=0xAABBCC, dev_nonce=0xF18E)
    assert k.nwk_s_key.hex() == "4e3d6e6afbcc67af2ba3c8e8ec4acf4b"
    assert k.app_s_key.hex() == "610897aa6f1460623443b527d3ac6a9d"


def test_cs_session_keys() -> None:
    # CS keys.rs tests lorawan_1_0 / lorawan_1_1
    nwk_key = h("01020304050607080102030405060708")
    k10 = L.derive_session_keys_10(nwk_key, join_nonce=65536, net_id=0x010203, dev_nonce=258)
    assert list(k10.nwk_s_key) == [
        223,
        83,
        195,
        95,
        48,
        52,
        204,
        206,
        208,
        255,
        53,
        76,
        112,
        222,
        4,
        223,
    ]
    assert list(k10.app_s_key) == [
        146,
        123,
        156,
        145,
        17,
        131,
        207,
        254,
        76,
        178,
        255,
        75,
        117,
        84,
        95,
        109,
    ]
    k11 = L.derive_session_keys_11(
        nwk_key, bytes(16), join_nonce=65536, join_eui=0x0807060504030201, dev_nonce=258
    )
    assert k11.app_s_key is not None
    assert list(k11.app_s_key) == [
        1,
        98,
        18,
        21,
        209,
        202,
        8,
        254,
        191,
        12,
        96,
        44,
        194,
        173,
        144,
        250,
    ]
    assert list(k11.f_nwk_s_int_key) == [
        83,
        127,
        138,
        174,
        137,
        108,
        121,
        224,
        21,
        209,
        2,
        208,
        98,
        134,
        53,
        78,
    ]
    assert list(k11.s_nwk_s_int_key) == [
        88,
        148,
        152,
        153,
        48,
        146,
        207,
        219,
        95,
        210,
        224,
        42,
        199,
        81,
        11,
        241,
    ]
    assert list(k11.nwk_s_enc_key) == [
        152,
        152,
        40,
        60,
        79,
        102,
        235,
        108,
        111,
        213,
        22,
        88,
        130,
        4,
        108,
        64,
    ]


def test_tts_key_derivation() -> None:
    # TTS key_derivation_test.go TestKeyDerivation
    key = h("bec499c69e9c939e413b66396163 6c61".replace(" ", ""))
    kw = {"join_nonce": 0xAE3B1C, "dev_nonce": 0x7369}
    k11 = L.derive_session_keys_11(key, key, join_eui=0x0000001223224242, **kw)
    assert k11.app_s_key is not None
    assert k11.app_s_key.hex() == "b035cce24e4a040eb5cecbf21724412d"
    assert k11.f_nwk_s_int_key.hex() == "379084e7ce22ff191bff4b77536f2aa3"
    assert k11.s_nwk_s_int_key.hex() == "63c59309d53485bc5164dbf71627aeb9"
    assert k11.nwk_s_enc_key.hex() == "ce07a009a3970ac0519a099ed53e550b"
    k10 = L.derive_session_keys_10(key, net_id=0x020101, **kw)
    assert k10.app_s_key.hex() == "8c1e0543a229088de6f84e74bb46bd62"
    assert k10.nwk_s_key.hex() == "0db924ee6af90698e05fc7ce48303c01"
    assert L.derive_js_int_key(key, 0x0042004213424341).hex() == "cb8e9ee114c3fb5ce472a5aa13ab1855"
    assert L.derive_js_enc_key(key, 0x0042004213424341).hex() == "bb711eefb9829b4a75866f8616bacd6d"


def test_session_keys_11_without_app_key() -> None:
    k = L.derive_session_keys_11(ONES, None, join_nonce=1, join_eui=2, dev_nonce=3)
    assert k.app_s_key is None and len(k.nwk_s_enc_key) == 16


# ---------------------------------------------------------------------------- MAC commands


def test_lp_issue18_fopts_split() -> None:
    # LP fopts_test.ts "parse packets from github issue #18": 1.0 uplink with FOpts 091103
    p = parse_phy(h("4084412505A3010009110308B33750F504D4B86A"))
    assert p.fopts == h("091103")
    cmds, rest = L.split_mac_commands(p.fopts, uplink=True)
    assert [(c.cid, c.name, c.payload.hex()) for c in cmds] == [
        (0x09, "TxParamSetupAns", ""),
        (0x11, "PingSlotChannelAns", "03"),
    ]
    assert rest == b""


def test_mac_split_downlink_sequence() -> None:
    data = h("0351ff0001060d0a0b0c0d0e0e0102")
    cmds, rest = L.split_mac_commands(data, uplink=False)
    assert [c.name for c in cmds] == [
        "LinkADRReq",
        "DevStatusReq",
        "DeviceTimeAns",
        "ForceRejoinReq",
    ]
    assert cmds[2].payload == h("0a0b0c0d0e")
    assert rest == b""


def test_mac_split_stops_at_unknown_cid_and_reports_rest() -> None:
    cmds, rest = L.split_mac_commands(h("0280aabb02"), uplink=True)
    assert [c.name for c in cmds] == ["LinkCheckReq"]
    assert rest == h("80aabb02")


def test_mac_split_stops_at_truncated_command() -> None:
    cmds, rest = L.split_mac_commands(h("060305"), uplink=False)  # DevStatusReq, LinkADRReq cut
    assert [c.name for c in cmds] == ["DevStatusReq"]
    assert rest == h("0305")


def test_same_cid_differs_by_direction() -> None:
    up, _ = L.split_mac_commands(h("0d"), uplink=True)
    down, rest = L.split_mac_commands(h("0d"), uplink=False)
    assert up[0].name == "DeviceTimeReq"
    assert down == [] and rest == h("0d")  # DeviceTimeAns needs 5 payload bytes


# ---------------------------------------------------------------------------- builders, errors


def test_build_11_uplink_round_trip_with_ack_conf_fcnt() -> None:
    f_int, s_int, s_enc = h("11" * 16), h("22" * 16), h("33" * 16)
    raw = B.build_data_frame(
        mtype=2,
        dev_addr=0x26011234,
        fcnt=0x10005,
        fport=5,
        payload=b"\x01",
        fopts=h("02"),
        fctrl_flags=B.FCTRL_ACK,
        version="1.1",
        conf_fcnt=9,
        tx_dr=5,
        tx_ch=2,
        f_nwk_s_int_key=f_int,
        s_nwk_s_int_key=s_int,
        nwk_s_enc_key=s_enc,
        app_s_key=h("44" * 16),
    )
    p = parse_phy(raw)
    assert p.fcnt == 5 and p.fopts != h("02")
    msg = raw[:-4]
    good = L.uplink_mic_11(
        f_int,
        s_int,
        dev_addr=0x26011234,
        fcnt=0x10005,
        msg=msg,
        conf_fcnt=9,
        tx_dr=5,
        tx_ch=2,
    )
    assert good == p.mic
    assert L.decrypt_fopts(
        s_enc, uplink=True, dev_addr=0x26011234, fcnt=0x10005, data=p.fopts or b""
    ) == h("02")


def test_bad_key_length_is_rejected_with_key_name() -> None:
    with pytest.raises(ValueError, match="NwkSKey must be 16 bytes"):
        L.data_mic_10(b"short", uplink=True, dev_addr=1, fcnt=1, msg=b"\x40")
