"""Builders of the `schwebe decode` JSON objects of CONTRACTS.md: PHYPayloads, Semtech UDP
datagrams and parking-sensor payloads, as pure functions (no I/O, keys never logged).
Structure comes from gateway.frames, crypto from gateway.frames.lorawan; bad input raises, never prints.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import orjson

from gateway.frames import FrameError, decode_push_data, mac, parse_gwmp, parse_phy

KEY_NAMES: Final = frozenset(
    {
        "NwkSKey",
        "AppSKey",
        "FNwkSIntKey",
        "SNwkSIntKey",
        "NwkSEncKey",
        "AppKey",
        "NwkKey",
        "JSIntKey",
        "JSEncKey",
    }
)
PARAM_NAMES: Final = frozenset(
    {
        "LoRaWAN",
        "FCntHigh",
        "ConfFCnt",
        "TxDr",
        "TxCh",
        "JoinReqType",
        "JoinEUI",
        "DevNonce",
        "AFCntDown",
    }
)
# Session keys only a 1.1 device has: given without a LoRaWAN param they imply 1.1.
_KEYS_11: Final = frozenset({"FNwkSIntKey", "SNwkSIntKey", "NwkSEncKey"})


class DecodeError(ValueError):
    """Input the decoder cannot take (bad hex, unknown key name, bad parameter...)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


def error_object(exc: Exception) -> dict[str, Any]:
    """The contract's ``{"kind", "detail"}`` for any error the decoder reports."""
    if isinstance(exc, FrameError):
        return {"kind": exc.kind, "detail": f"{exc.detail} (at byte {exc.offset})"}
    if isinstance(exc, DecodeError):
        return {"kind": exc.kind, "detail": exc.detail}
    return {"kind": "bad_input", "detail": str(exc) or type(exc).__name__}


# ---------------------------------------------------------------------------- inputs


def _hex(value: Any, what: str) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if not isinstance(value, str):
        raise DecodeError("bad_hex", f"{what} must be a hex string, got {type(value).__name__}")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise DecodeError(
            "bad_hex",
            f"{what} is not valid hex (pairs of 0-9a-f, {len(value.strip())} chars given)",
        ) from None


def parse_keys(keys: Mapping[str, Any] | None) -> dict[str, bytes]:
    """Validate key names and values; the message never echoes a key's value."""
    out: dict[str, bytes] = {}
    for name, value in (keys or {}).items():
        if name not in KEY_NAMES:
            raise DecodeError(
                "bad_key", f"unknown key name {name!r}; use one of {', '.join(sorted(KEY_NAMES))}"
            )
        if not isinstance(value, str):
            raise DecodeError("bad_key", f"key {name} must be a hex string")
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raw = b""
        if len(raw) != 16:
            raise DecodeError("bad_key", f"key {name} must be 32 hex digits (16 bytes)")
        out[name] = raw
    return out


def _int(value: Any, name: str, lo: int, hi: int) -> int:
    if isinstance(value, bool):
        raise DecodeError("bad_param", f"param {name} must be a number, got {value}")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str):
        try:
            n = int(value.strip(), 0)
        except ValueError:
            raise DecodeError(
                "bad_param", f"param {name}={value!r} is not a number (decimal, or 0x-prefixed hex)"
            ) from None
    else:
        raise DecodeError("bad_param", f"param {name} must be a number")
    if not lo <= n <= hi:
        raise DecodeError("bad_param", f"param {name}={n} is out of range {lo}..{hi}")
    return n


def _bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "false", "0", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    raise DecodeError("bad_param", f"param {name}={value!r} must be true or false")


def _eui(value: Any, name: str) -> int:
    raw = _hex(value, f"param {name}")
    if len(raw) != 8:
        raise DecodeError("bad_param", f"param {name} must be 16 hex digits (8 bytes)")
    return int.from_bytes(raw, "big")


def parse_params(params: Mapping[str, Any] | None, keys: Mapping[str, bytes]) -> dict[str, Any]:
    """Typed params with the contract's defaults (LoRaWAN 1.0 unless 1.1-only keys are given)."""
    params = params or {}
    for name in params:
        if name not in PARAM_NAMES:
            raise DecodeError(
                "bad_param",
                f"unknown param {name!r}; use one of {', '.join(sorted(PARAM_NAMES))}",
            )
    out: dict[str, Any] = {}
    version = params.get("LoRaWAN")
    if version is None:
        out["LoRaWAN"] = "1.1" if _KEYS_11 & keys.keys() else "1.0"
    else:
        text = str(version).strip()
        if text.startswith("1.0"):
            out["LoRaWAN"] = "1.0"
        elif text.startswith("1.1"):
            out["LoRaWAN"] = "1.1"
        else:
            raise DecodeError("bad_param", f"param LoRaWAN={text!r}; use 1.0 or 1.1")
    out["FCntHigh"] = _int(params.get("FCntHigh", 0), "FCntHigh", 0, 0xFFFF)
    # ConfFCnt is taken modulo 2^16 by the spec, so a full 32-bit counter is fine too.
    out["ConfFCnt"] = _int(params.get("ConfFCnt", 0), "ConfFCnt", 0, 0xFFFFFFFF) & 0xFFFF
    out["TxDr"] = _int(params.get("TxDr", 0), "TxDr", 0, 255)
    out["TxCh"] = _int(params.get("TxCh", 0), "TxCh", 0, 255)
    jrt = _int(params.get("JoinReqType", 0xFF), "JoinReqType", 0, 0xFF)
    if jrt not in (0, 1, 2, 0xFF):
        raise DecodeError("bad_param", f"param JoinReqType={jrt}; use 0xff (join), 0, 1 or 2")
    out["JoinReqType"] = jrt
    out["JoinEUI"] = _eui(params["JoinEUI"], "JoinEUI") if "JoinEUI" in params else None
    out["DevNonce"] = (
        _int(params["DevNonce"], "DevNonce", 0, 0xFFFF) if "DevNonce" in params else None
    )
    out["AFCntDown"] = _bool(params["AFCntDown"], "AFCntDown") if "AFCntDown" in params else None
    return out


# ---------------------------------------------------------------------------- phy


def _mac_commands(out: dict[str, Any], plain: bytes, uplink: bool) -> None:
    cmds, rest = mac.split_mac_commands(plain, uplink=uplink)
    listed = out.setdefault("MACCommands", [])
    listed.extend({"CID": c.cid, "Name": c.name, "Payload": c.payload.hex()} for c in cmds)
    if rest:
        # A command's length is known only from its CID: an unknown CID (or a command cut
        # short) ends the split, and everything after it is that command's Payload.
        table = mac.UPLINK_MAC if uplink else mac.DOWNLINK_MAC
        entry = table.get(rest[0])
        name = entry[0] if entry is not None else "Unknown"
        listed.append({"CID": rest[0], "Name": name, "Payload": rest[1:].hex()})


def _mic_result(out: dict[str, Any], computed: bytes, mic: bytes) -> None:
    out["MICValid"] = computed == mic
    out["MICComputed"] = computed.hex()


def _decode_data(
    p: Any, out: dict[str, Any], keys: Mapping[str, bytes], prm: Mapping[str, Any]
) -> None:
    if keys:  # crypto only with keys: frames without them never import `cryptography`
        from gateway.frames import lorawan as L
    uplink = p.mtype in (2, 4)
    fctrl = p.fctrl
    out["DevAddr"] = f"{p.dev_addr:08x}"
    out["FCtrl"] = fctrl
    out["ADR"] = bool(fctrl & 0x80)
    if uplink:
        out["ADRACKReq"] = bool(fctrl & 0x40)
    out["ACK"] = bool(fctrl & 0x20)
    if uplink:
        out["ClassB"] = bool(fctrl & 0x10)
    else:
        out["FPending"] = bool(fctrl & 0x10)
    out["FOptsLen"] = fctrl & 0x0F
    out["FCnt"] = p.fcnt
    out["FOpts"] = p.fopts.hex()
    out["FPort"] = p.fport
    out["FRMPayload"] = p.frm_payload.hex()
    out["MIC"] = p.mic.hex()

    v11 = prm["LoRaWAN"] == "1.1"
    fcnt = (prm["FCntHigh"] << 16) | p.fcnt
    ack = bool(fctrl & 0x20)
    conf_fcnt = prm["ConfFCnt"] if ack else 0  # the spec zeroes ConfFCnt without ACK
    msg = p.raw[:-4]
    addr = p.dev_addr
    computed: bytes | None = None
    if not v11:
        if "NwkSKey" in keys:
            computed = L.data_mic_10(
                keys["NwkSKey"], uplink=uplink, dev_addr=addr, fcnt=fcnt, msg=msg
            )
    elif uplink:
        if "FNwkSIntKey" in keys and "SNwkSIntKey" in keys:
            computed = L.uplink_mic_11(
                keys["FNwkSIntKey"],
                keys["SNwkSIntKey"],
                dev_addr=addr,
                fcnt=fcnt,
                msg=msg,
                conf_fcnt=conf_fcnt,
                tx_dr=prm["TxDr"],
                tx_ch=prm["TxCh"],
            )
    elif "SNwkSIntKey" in keys:
        computed = L.downlink_mic_11(
            keys["SNwkSIntKey"], dev_addr=addr, fcnt=fcnt, msg=msg, conf_fcnt=conf_fcnt
        )
    if computed is not None:
        _mic_result(out, computed, p.mic)

    net_key = keys.get("NwkSEncKey" if v11 else "NwkSKey")
    fopts_plain: bytes | None = None
    if p.fopts:
        if not v11:
            fopts_plain = p.fopts  # 1.0 sends FOpts in clear
        elif net_key is not None:
            afcnt = prm["AFCntDown"]
            if afcnt is None:
                afcnt = p.fport is not None and p.fport > 0
            fopts_plain = L.crypt_fopts(
                net_key, uplink=uplink, dev_addr=addr, fcnt=fcnt, data=p.fopts, a_fcnt_down=afcnt
            )
            out["FOptsPlain"] = fopts_plain.hex()
    frm_plain: bytes | None = None
    if p.fport is not None:
        key = net_key if p.fport == 0 else keys.get("AppSKey")
        if key is not None:
            frm_plain = L.crypt_frm_payload(
                key, uplink=uplink, dev_addr=addr, fcnt=fcnt, data=p.frm_payload
            )
            out["FRMPayloadPlain"] = frm_plain.hex()
    # In 1.0 the MIC and the FPort-0 payload use the same key (NwkSKey) and counter: a
    # failed MIC means what that key decrypted is noise, not MAC commands (MICValid false
    # says so). FOpts are sent in clear in 1.0 and still count. In 1.1 the MIC has keys and
    # params of its own (TxDr, TxCh, ConfFCnt), so a failed MIC proves nothing about them.
    trusted = v11 or out.get("MICValid") is not False
    if fopts_plain:
        _mac_commands(out, fopts_plain, uplink)
    if p.fport == 0 and frm_plain and trusted:
        _mac_commands(out, frm_plain, uplink)


def _decode_join_request(
    p: Any, out: dict[str, Any], keys: Mapping[str, bytes], prm: Mapping[str, Any]
) -> None:
    if keys:  # crypto only with keys: frames without them never import `cryptography`
        from gateway.frames import lorawan as L
    out["JoinEUI"] = f"{p.join_eui:016x}"
    out["DevEUI"] = f"{p.dev_eui:016x}"
    out["DevNonce"] = p.dev_nonce
    out["MIC"] = p.mic.hex()
    order = ("NwkKey", "AppKey") if prm["LoRaWAN"] == "1.1" else ("AppKey", "NwkKey")
    key = next((keys[k] for k in order if k in keys), None)
    if key is not None:
        _mic_result(out, L.join_request_mic(key, p.raw[:-4]), p.mic)


def _decode_rejoin(p: Any, out: dict[str, Any], keys: Mapping[str, bytes]) -> None:
    if keys:  # crypto only with keys: frames without them never import `cryptography`
        from gateway.frames import lorawan as L
    out["RejoinType"] = p.rejoin_type
    if p.rejoin_type == 1:
        out["JoinEUI"] = f"{p.join_eui:016x}"
        out["DevEUI"] = f"{p.dev_eui:016x}"
        out["RJcount1"] = p.rj_count
        key = keys.get("JSIntKey")
    else:
        out["NetID"] = f"{p.net_id:06x}"
        out["DevEUI"] = f"{p.dev_eui:016x}"
        out["RJcount0"] = p.rj_count
        key = keys.get("SNwkSIntKey")
    out["MIC"] = p.mic.hex()
    if key is not None:
        _mic_result(out, L.rejoin_request_mic(key, p.raw[:-4]), p.mic)


def _decode_join_accept(
    p: Any, out: dict[str, Any], keys: Mapping[str, bytes], prm: Mapping[str, Any]
) -> None:
    if keys:  # crypto only with keys: frames without them never import `cryptography`
        from gateway.frames import lorawan as L
    v11 = prm["LoRaWAN"] == "1.1"
    rejoin = prm["JoinReqType"] != 0xFF
    if v11:
        order: tuple[str, ...] = (("JSEncKey",) if rejoin else ()) + ("NwkKey", "AppKey")
    else:
        order = ("AppKey", "NwkKey")
    key_name = next((k for k in order if k in keys), None)
    if key_name is None:
        out["Encrypted"] = p.encrypted.hex()
        return
    key = keys[key_name]
    plain = L.decrypt_join_accept(key, p.encrypted)
    body, mic = plain[:-4], plain[-4:]
    join_nonce = int.from_bytes(body[0:3], "little")
    net_id = int.from_bytes(body[3:6], "little")
    dl_settings = body[10]
    opt_neg = bool(dl_settings & 0x80)
    out["JoinNonce"] = join_nonce
    out["NetID"] = f"{net_id:06x}"
    out["DevAddr"] = f"{int.from_bytes(body[6:10], 'little'):08x}"
    out["DLSettings"] = dl_settings
    out["RxDelay"] = body[11]
    out["CFList"] = body[12:].hex() if len(body) > 12 else None
    out["OptNeg"] = opt_neg
    out["MIC"] = mic.hex()
    msg = p.raw[:1] + body
    join_eui, dev_nonce = prm["JoinEUI"], prm["DevNonce"]
    # Under LoRaWAN 1.0 bit 7 of DLSettings is RFU: whatever it holds, the 1.0 MIC and keys apply.
    if not opt_neg or not v11:
        _mic_result(out, L.join_accept_mic_10(key, msg), mic)
        if dev_nonce is not None:
            k10 = L.derive_session_keys_10(
                key, join_nonce=join_nonce, net_id=net_id, dev_nonce=dev_nonce
            )
            out["SessionKeys"] = {"NwkSKey": k10.nwk_s_key.hex(), "AppSKey": k10.app_s_key.hex()}
        return
    if "JSIntKey" in keys and join_eui is not None and dev_nonce is not None:
        computed = L.join_accept_mic_11(
            keys["JSIntKey"],
            join_req_type=prm["JoinReqType"],
            join_eui=join_eui,
            dev_nonce=dev_nonce,
            msg=msg,
        )
        _mic_result(out, computed, mic)
    if "NwkKey" in keys and join_eui is not None and dev_nonce is not None:
        k11 = L.derive_session_keys_11(
            keys["NwkKey"],
            keys.get("AppKey"),
            join_nonce=join_nonce,
            join_eui=join_eui,
            dev_nonce=dev_nonce,
        )
        sk = {
            "FNwkSIntKey": k11.f_nwk_s_int_key.hex(),
            "SNwkSIntKey": k11.s_nwk_s_int_key.hex(),
            "NwkSEncKey": k11.nwk_s_enc_key.hex(),
        }
        if k11.app_s_key is not None:
            sk["AppSKey"] = k11.app_s_key.hex()
        out["SessionKeys"] = sk


def decode_phy(
    data: str | bytes,
    keys: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``schwebe decode phy`` object for one PHYPayload (hex or bytes).

    Raises FrameError for a malformed frame and DecodeError for bad hex, keys or params.
    """
    raw = _hex(data, "PHYPayload")
    key_bytes = parse_keys(keys)
    prm = parse_params(params, key_bytes)
    p = parse_phy(raw)
    out: dict[str, Any] = {"MType": p.mtype_name, "Major": p.major}
    mtype = p.mtype
    if 2 <= mtype <= 5:
        _decode_data(p, out, key_bytes, prm)
    elif mtype == 0:
        _decode_join_request(p, out, key_bytes, prm)
    elif mtype == 1:
        _decode_join_accept(p, out, key_bytes, prm)
    elif mtype == 6:
        _decode_rejoin(p, out, key_bytes)
    else:
        out["Payload"] = p.payload.hex()
    return out


# ---------------------------------------------------------------------------- gwmp


def _phy_or_error(phy: bytes) -> dict[str, Any]:
    try:
        return decode_phy(phy)
    except (ValueError, TypeError, OverflowError) as exc:
        return {"error": error_object(exc)}


def decode_gwmp(data: str | bytes) -> dict[str, Any]:
    """The ``schwebe decode gwmp`` object for one Semtech UDP datagram (hex or bytes)."""
    raw = _hex(data, "datagram")
    pkt = parse_gwmp(raw)
    out: dict[str, Any] = {
        "ProtocolVersion": pkt.version,
        "Token": pkt.token,
        "Identifier": pkt.identifier_name,
    }
    if pkt.gateway_eui is not None:
        out["GatewayEUI"] = f"{pkt.gateway_eui:016x}"
    if pkt.body is not None:
        for name, value in pkt.body.items():
            if name in out:  # the contract's shape has no room for both: never drop one
                raise DecodeError(
                    "bad_body", f"JSON body key {name!r} collides with the header field {name!r}"
                )
            out[name] = value
    if pkt.identifier == 0:
        push = decode_push_data(raw)
        originals = pkt.body.get("rxpk") if pkt.body else None
        rx_out: list[dict[str, Any]] = []
        for i, rx in enumerate(push.rxpk):
            orig = originals[i] if isinstance(originals, list) else None
            item = dict(orig) if isinstance(orig, dict) else {}
            if rx.error is not None:
                item["error"] = error_object(rx.error)
            elif rx.phy is not None:
                item["PHYPayload"] = rx.phy.hex()
                item["phy"] = _phy_or_error(rx.phy)
            rx_out.append(item)
        if originals is not None:
            out["rxpk"] = rx_out
    return out


# ---------------------------------------------------------------------------- sensor


def decode_sensor(model: str, fport: Any, payload: str | bytes) -> dict[str, Any]:
    """What the Device Repository codec returns for this payload, after a JSON round trip."""
    from gateway.parking.registry import (  # lazy: decoders are optional weight
        UnknownModel,
        decode_uplink,
    )

    port = _int(fport, "FPORT", 0, 255)
    raw = _hex(payload, "payload")
    if not isinstance(model, str):
        raise DecodeError("unknown_model", "model must be a string like 'nwave/nps405'")
    try:
        result = decode_uplink(model, port, raw)
    except UnknownModel as exc:
        raise DecodeError("unknown_model", str(exc)) from None
    decoded: dict[str, Any] = orjson.loads(orjson.dumps(result))
    return decoded


def list_models() -> list[str]:
    from gateway.parking.registry import list_models as _list

    return _list()
