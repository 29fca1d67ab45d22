"""Genuine LoRaWAN frames made from plaintext and keys, the sending side of gateway.lorawan.

For the simulator, tests and benchmarks; the gateway's receive path never needs this module.
"""

from __future__ import annotations

from typing import Final, Literal

from gateway.frames.lorawan import (
    JOIN_REQ_TYPE_JOIN,
    _u16,
    _u32,
    aes_decrypt,
    crypt_fopts,
    crypt_frm_payload,
    data_mic_10,
    downlink_mic_11,
    join_accept_mic_10,
    join_accept_mic_11,
    join_request_mic,
    uplink_mic_11,
)


def encrypt_join_accept(key: bytes, plaintext: bytes) -> bytes:
    """The network side of ``lorawan.decrypt_join_accept`` (AES decrypt, as the spec does)."""
    if len(plaintext) not in (16, 32):
        raise ValueError(f"join-accept body must be 16 or 32 bytes, got {len(plaintext)}")
    return aes_decrypt(key, plaintext)


# FCtrl bits (LoRaWAN 1.1 §4.3.1).
FCTRL_ADR: Final = 0x80
FCTRL_ADR_ACK_REQ: Final = 0x40  # uplink only
FCTRL_ACK: Final = 0x20
FCTRL_CLASS_B: Final = 0x10  # uplink
FCTRL_FPENDING: Final = 0x10  # downlink


def build_data_frame(
    *,
    mtype: int,
    dev_addr: int,
    fcnt: int,
    fport: int | None,
    payload: bytes = b"",
    fopts: bytes = b"",
    fctrl_flags: int = 0,
    version: Literal["1.0", "1.1"] = "1.0",
    nwk_s_key: bytes | None = None,
    app_s_key: bytes | None = None,
    f_nwk_s_int_key: bytes | None = None,
    s_nwk_s_int_key: bytes | None = None,
    nwk_s_enc_key: bytes | None = None,
    conf_fcnt: int = 0,
    tx_dr: int = 0,
    tx_ch: int = 0,
    a_fcnt_down: bool | None = None,
) -> bytes:
    """A complete, encrypted and MIC'd data frame (MType 2..5) from plaintext.

    1.0 needs ``nwk_s_key`` (and ``app_s_key`` for FPort > 0); 1.1 needs ``s_nwk_s_int_key``,
    ``nwk_s_enc_key`` (FOpts or FPort 0), ``f_nwk_s_int_key`` (uplink) and ``app_s_key``.
    ``fopts`` is plaintext; ``fcnt`` is the 32-bit counter (its low 16 bits go on air).
    """
    if mtype not in (2, 3, 4, 5):
        raise ValueError(f"MType {mtype} is not a data frame (2..5)")
    if len(fopts) > 15:
        raise ValueError(f"FOpts holds at most 15 bytes, got {len(fopts)}")
    if fport is None and payload:
        raise ValueError("an FRMPayload needs an FPort")
    if fport is not None and not 0 <= fport <= 255:
        raise ValueError(f"FPort must be 0..255, got {fport}")
    uplink = mtype in (2, 4)
    v11 = version == "1.1"
    net_enc_key = nwk_s_enc_key if v11 else nwk_s_key
    if fopts and v11:
        if net_enc_key is None:
            raise ValueError("1.1 FOpts need NwkSEncKey")
        afcnt = a_fcnt_down if a_fcnt_down is not None else (fport is not None and fport > 0)
        fopts = crypt_fopts(
            net_enc_key, uplink=uplink, dev_addr=dev_addr, fcnt=fcnt, data=fopts, a_fcnt_down=afcnt
        )
    body = payload
    if payload:
        key = net_enc_key if fport == 0 else app_s_key
        if key is None:
            raise ValueError(
                f"FPort {fport} payload needs {'the network' if fport == 0 else 'AppSKey'} key"
            )
        body = crypt_frm_payload(key, uplink=uplink, dev_addr=dev_addr, fcnt=fcnt, data=payload)
    fctrl = (fctrl_flags & 0xF0) | len(fopts)
    msg = (
        bytes((mtype << 5,))
        + _u32(dev_addr, "DevAddr")
        + bytes((fctrl,))
        + (fcnt & 0xFFFF).to_bytes(2, "little")
        + fopts
        + (b"" if fport is None else bytes((fport,)))
        + body
    )
    ack = bool(fctrl & FCTRL_ACK)
    if not v11:
        if nwk_s_key is None:
            raise ValueError("1.0 data frames need NwkSKey for the MIC")
        mic = data_mic_10(nwk_s_key, uplink=uplink, dev_addr=dev_addr, fcnt=fcnt, msg=msg)
    elif uplink:
        if f_nwk_s_int_key is None or s_nwk_s_int_key is None:
            raise ValueError("1.1 uplinks need FNwkSIntKey and SNwkSIntKey for the MIC")
        mic = uplink_mic_11(
            f_nwk_s_int_key,
            s_nwk_s_int_key,
            dev_addr=dev_addr,
            fcnt=fcnt,
            msg=msg,
            conf_fcnt=conf_fcnt if ack else 0,
            tx_dr=tx_dr,
            tx_ch=tx_ch,
        )
    else:
        if s_nwk_s_int_key is None:
            raise ValueError("1.1 downlinks need SNwkSIntKey for the MIC")
        mic = downlink_mic_11(
            s_nwk_s_int_key,
            dev_addr=dev_addr,
            fcnt=fcnt,
            msg=msg,
            conf_fcnt=conf_fcnt if ack else 0,
        )
    return msg + mic


def build_data_uplink(
    *,
    dev_addr: int,
    fcnt: int,
    fport: int | None,
    payload: bytes,
    nwk_s_key: bytes,
    app_s_key: bytes,
    confirmed: bool = False,
    fctrl_flags: int = 0,
    fopts: bytes = b"",
) -> bytes:
    """A LoRaWAN 1.0 data uplink as a simulated sensor sends it."""
    return build_data_frame(
        mtype=4 if confirmed else 2,
        dev_addr=dev_addr,
        fcnt=fcnt,
        fport=fport,
        payload=payload,
        fopts=fopts,
        fctrl_flags=fctrl_flags,
        nwk_s_key=nwk_s_key,
        app_s_key=app_s_key,
    )


def build_join_request(key: bytes, *, join_eui: int, dev_eui: int, dev_nonce: int) -> bytes:
    """A Join-request with its MIC (AppKey for 1.0, NwkKey for 1.1)."""
    msg = (
        b"\x00"
        + join_eui.to_bytes(8, "little")
        + dev_eui.to_bytes(8, "little")
        + _u16(dev_nonce, "DevNonce")
    )
    return msg + join_request_mic(key, msg)


def build_join_accept(
    key: bytes,
    *,
    join_nonce: int,
    net_id: int,
    dev_addr: int,
    dl_settings: int = 0,
    rx_delay: int = 1,
    cflist: bytes | None = None,
    js_int_key: bytes | None = None,
    join_req_type: int = JOIN_REQ_TYPE_JOIN,
    join_eui: int = 0,
    dev_nonce: int = 0,
) -> bytes:
    """An encrypted Join-accept PHYPayload.

    ``key`` encrypts (AppKey for 1.0, NwkKey or JSEncKey for 1.1). With OptNeg (bit 7 of
    ``dl_settings``) the MIC uses ``js_int_key`` with JoinReqType, JoinEUI and DevNonce;
    without it, ``key`` as in 1.0.
    """
    if cflist is not None and len(cflist) != 16:
        raise ValueError(f"CFList must be 16 bytes, got {len(cflist)}")
    mhdr = b"\x20"
    body = (
        join_nonce.to_bytes(3, "little")
        + net_id.to_bytes(3, "little")
        + _u32(dev_addr, "DevAddr")
        + bytes((dl_settings & 0xFF, rx_delay & 0xFF))
        + (cflist or b"")
    )
    if dl_settings & 0x80:
        if js_int_key is None:
            raise ValueError("a join-accept with OptNeg set needs JSIntKey for its MIC")
        mic = join_accept_mic_11(
            js_int_key,
            join_req_type=join_req_type,
            join_eui=join_eui,
            dev_nonce=dev_nonce,
            msg=mhdr + body,
        )
    else:
        mic = join_accept_mic_10(key, mhdr + body)
    return mhdr + encrypt_join_accept(key, body + mic)
