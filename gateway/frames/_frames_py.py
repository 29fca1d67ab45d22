"""Pure-Python twin of ``ext/_frames_c.pyx``: LoRaWAN PHYPayload structure and the Semtech UDP codec.

This is the readable reference: the compiled module must give the same answers for every
input (tests/test_frames_differential.py). It parses structure only; crypto lives in lorawan.py.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import cbor2
import orjson

from gateway.frames.door import rxpk_door as rxpk_door  # the twin is the reference itself

IMPLEMENTATION: Final = "python"

# MType values (LoRaWAN 1.1 §4.2.1).
JOIN_REQUEST: Final = 0
JOIN_ACCEPT: Final = 1
UNCONFIRMED_DATA_UP: Final = 2
UNCONFIRMED_DATA_DOWN: Final = 3
CONFIRMED_DATA_UP: Final = 4
CONFIRMED_DATA_DOWN: Final = 5
REJOIN_REQUEST: Final = 6
PROPRIETARY: Final = 7

MTYPE_NAMES: Final[tuple[str, ...]] = (
    "JoinRequest",
    "JoinAccept",
    "UnconfirmedDataUp",
    "UnconfirmedDataDown",
    "ConfirmedDataUp",
    "ConfirmedDataDown",
    "RejoinRequest",
    "Proprietary",
)

# GWMP identifiers (byte 3 of every datagram).
PUSH_DATA: Final = 0
PUSH_ACK: Final = 1
PULL_DATA: Final = 2
PULL_RESP: Final = 3
PULL_ACK: Final = 4
TX_ACK: Final = 5
IDENTIFIER_NAMES: Final[tuple[str, ...]] = (
    "PUSH_DATA",
    "PUSH_ACK",
    "PULL_DATA",
    "PULL_RESP",
    "PULL_ACK",
    "TX_ACK",
)

#: Largest UDP payload over IPv4; anything bigger cannot be one real datagram.
MAX_DATAGRAM: Final = 65507
#: The packet forwarder's own bound (and ours): more rxpk in one datagram is a forgery or a bug.
MAX_RXPK: Final = 255

# Wire lengths, MHDR included (LoRaWAN 1.1 §6.2.2, §6.2.3, §6.2.4).
_DATA_MIN: Final = 12  # MHDR + DevAddr(4) + FCtrl + FCnt(2) + MIC(4)
_JOIN_REQUEST_LEN: Final = 23
_REJOIN_02_LEN: Final = 19  # MHDR + type + NetID(3) + DevEUI(8) + RJcount0(2) + MIC
_REJOIN_1_LEN: Final = 24  # MHDR + type + JoinEUI(8) + DevEUI(8) + RJcount1(2) + MIC


class FrameError(ValueError):
    """A frame or datagram that cannot be parsed: ``kind`` says why, ``offset`` where (bytes)."""

    def __init__(self, kind: str, offset: int, detail: str) -> None:
        super().__init__(f"{detail} (at byte {offset}) [{kind}]")
        self.kind = kind
        self.offset = offset
        self.detail = detail

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.kind, self.offset, self.detail))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FrameError):
            return NotImplemented
        return (self.kind, self.offset, self.detail) == (other.kind, other.offset, other.detail)

    def __hash__(self) -> int:
        return hash((self.kind, self.offset))

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "offset": self.offset, "detail": self.detail}


_PHY_FIELDS: Final[tuple[str, ...]] = (
    "raw",
    "mhdr",
    "mtype",
    "major",
    "mic",
    "dev_addr",
    "fctrl",
    "fopts",
    "fcnt",
    "fport",
    "frm_payload",
    "join_eui",
    "dev_eui",
    "dev_nonce",
    "encrypted",
    "rejoin_type",
    "net_id",
    "rj_count",
    "payload",
)


#: Identifiers print as fixed-width hex, the way they appear on labels and in network servers.
_HEX_WIDTH: Final[dict[str, int]] = {"dev_addr": 8, "join_eui": 16, "dev_eui": 16, "net_id": 6}


class PhyPayload:
    """One parsed PHYPayload. Attributes that do not apply to its MType are None."""

    __slots__ = _PHY_FIELDS

    raw: bytes
    mhdr: int
    mtype: int
    major: int
    mic: bytes
    dev_addr: int | None
    fctrl: int | None
    fopts: bytes | None
    fcnt: int | None
    fport: int | None
    frm_payload: bytes | None
    join_eui: int | None
    dev_eui: int | None
    dev_nonce: int | None
    encrypted: bytes | None
    rejoin_type: int | None
    net_id: int | None
    rj_count: int | None
    payload: bytes | None

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.mhdr = raw[0]
        self.mtype = raw[0] >> 5
        self.major = raw[0] & 0x03
        self.mic = b""
        self.dev_addr = self.fctrl = self.fcnt = self.fport = None
        self.fopts = self.frm_payload = None
        self.join_eui = self.dev_eui = self.dev_nonce = None
        self.encrypted = None
        self.rejoin_type = self.net_id = self.rj_count = None
        self.payload = None

    @property
    def mtype_name(self) -> str:
        return MTYPE_NAMES[self.mtype]

    @property
    def uplink(self) -> bool:
        """True for frames a device sends (join/rejoin requests, data up)."""
        return self.mtype in (0, 2, 4, 6)

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _PHY_FIELDS}

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, PhyPayload)
        return self.raw == other.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        parts = [f"mtype={MTYPE_NAMES[self.mtype]}"]
        for name in _PHY_FIELDS[4:]:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bytes):
                parts.append(f"{name}={value.hex()}")
            elif name in _HEX_WIDTH:
                parts.append(f"{name}={value:0{_HEX_WIDTH[name]}x}")
            else:
                parts.append(f"{name}={value}")
        return f"PhyPayload({', '.join(parts)})"


def parse_phy(data: bytes) -> PhyPayload:
    """Split a PHYPayload into its fields; raise FrameError for anything malformed."""
    data = bytes(data)
    n = len(data)
    if n == 0:
        raise FrameError("empty", 0, "empty PHYPayload: no MHDR byte")
    p = PhyPayload(data)
    if p.major != 0:
        raise FrameError(
            "unknown_major",
            0,
            f"MHDR 0x{data[0]:02x} has Major {p.major}; only LoRaWAN R1 (Major 0) is defined",
        )
    mtype = p.mtype
    if mtype >= 2 and mtype <= 5:
        if n < _DATA_MIN:
            raise FrameError(
                "too_short", n, f"{MTYPE_NAMES[mtype]} needs at least {_DATA_MIN} bytes, got {n}"
            )
        fctrl = data[5]
        fend = 8 + (fctrl & 0x0F)
        if fend > n - 4:
            raise FrameError(
                "fopts_overrun",
                5,
                f"FOptsLen {fctrl & 0x0F} runs past the MIC of a {n}-byte frame",
            )
        p.dev_addr = int.from_bytes(data[1:5], "little")
        p.fctrl = fctrl
        p.fcnt = data[6] | (data[7] << 8)
        p.fopts = data[8:fend]
        if fend < n - 4:
            p.fport = data[fend]
            p.frm_payload = data[fend + 1 : n - 4]
        else:
            p.frm_payload = b""
        p.mic = data[n - 4 :]
    elif mtype == JOIN_REQUEST:
        _check_exact(n, _JOIN_REQUEST_LEN, "JoinRequest")
        p.join_eui = int.from_bytes(data[1:9], "little")
        p.dev_eui = int.from_bytes(data[9:17], "little")
        p.dev_nonce = data[17] | (data[18] << 8)
        p.mic = data[19:23]
    elif mtype == JOIN_ACCEPT:
        if n != 17 and n != 33:
            raise FrameError(
                "join_accept_length",
                n,
                f"JoinAccept must be 17 or 33 bytes (MHDR included), got {n}",
            )
        p.encrypted = data[1:]
    elif mtype == REJOIN_REQUEST:
        if n < 2:
            raise FrameError("too_short", n, "RejoinRequest needs a RejoinType byte")
        rtype = data[1]
        if rtype == 0 or rtype == 2:
            _check_exact(n, _REJOIN_02_LEN, f"RejoinRequest type {rtype}")
            p.net_id = int.from_bytes(data[2:5], "little")
            p.dev_eui = int.from_bytes(data[5:13], "little")
            p.rj_count = data[13] | (data[14] << 8)
            p.mic = data[15:19]
        elif rtype == 1:
            _check_exact(n, _REJOIN_1_LEN, "RejoinRequest type 1")
            p.join_eui = int.from_bytes(data[2:10], "little")
            p.dev_eui = int.from_bytes(data[10:18], "little")
            p.rj_count = data[18] | (data[19] << 8)
            p.mic = data[20:24]
        else:
            raise FrameError(
                "unknown_rejoin_type", 1, f"RejoinType {rtype} is not defined (0, 1 or 2)"
            )
        p.rejoin_type = rtype
    else:  # Proprietary: the vendor's format, nothing to check
        p.payload = data[1:]
    return p


def _check_exact(n: int, want: int, what: str) -> None:
    if n < want:
        raise FrameError("too_short", n, f"{what} must be {want} bytes, got {n}")
    if n > want:
        raise FrameError("too_long", want, f"{what} must be {want} bytes, got {n}")


# ---------------------------------------------------------------------------- base64

_B64_URLSAFE: Final = bytes.maketrans(b"-_", b"+/")
_B64_ALPHABET: Final = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_"
)


def b64decode_tolerant(text: str) -> bytes:
    """Decode base64 as forwarders write it: standard or URL-safe, padded or not.

    Raises FrameError("bad_base64") with the character offset of the first bad character.
    Non-zero trailing bits are accepted (as binascii does), so "QR" decodes like "QQ".
    """
    try:
        raw = text.encode("ascii")
    except UnicodeEncodeError:
        pos = next(i for i, ch in enumerate(text) if ord(ch) > 127)
        raise FrameError("bad_base64", pos, f"non-ASCII character in base64 at {pos}") from None
    end = len(raw)
    if end and raw[end - 1] == 0x3D:  # '='
        end -= 1
        if end and raw[end - 1] == 0x3D:
            end -= 1
    body = raw[:end]
    try:
        decoded = binascii.a2b_base64(_pad(body.translate(_B64_URLSAFE)), strict_mode=True)
    except (binascii.Error, FrameError):
        pass
    else:
        return decoded
    for i, ch in enumerate(body):
        if ch not in _B64_ALPHABET:
            raise FrameError("bad_base64", i, f"character {chr(ch)!r} at {i} is not base64")
    raise FrameError(
        "bad_base64", end, f"base64 of {end} characters cannot be complete (length mod 4 is 1)"
    )


def _pad(body: bytes) -> bytes:
    rem = len(body) & 3
    if rem == 1:
        raise FrameError("bad_base64", len(body), "truncated base64")
    return body + b"=" * ((4 - rem) & 3)


def b64encode(data: bytes) -> str:
    """Padded standard base64 (the form records carry and the reference forwarder writes)."""
    return binascii.b2a_base64(data, newline=False).decode("ascii")


# ---------------------------------------------------------------------------- GWMP


class Frozen:
    """What ``@dataclass(frozen=True, slots=True)`` gives a small value, written out: fields
    set once in ``__init__`` (in the order of ``__match_args__``), compared, hashed and shown
    by them. The dataclass machinery compiles code at import, a seventh of the
    `schwebe decode` tool's start.
    """

    __slots__ = ()
    __match_args__: tuple[str, ...] = ()

    def _fields(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.__match_args__)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Frozen)
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), self._fields())  # __init__ takes the fields in slot order

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__match_args__)
        return f"{type(self).__qualname__}({inner})"


_set = object.__setattr__


class GwmpPacket(Frozen):
    """One Semtech UDP datagram, any identifier; ``body`` is the JSON object or None."""

    __slots__ = ("body", "gateway_eui", "identifier", "token", "version")
    __match_args__ = ("version", "token", "identifier", "gateway_eui", "body")

    version: int
    token: int
    identifier: int
    gateway_eui: int | None
    body: dict[str, Any] | None

    def __init__(
        self, version: int, token: int, identifier: int, gateway_eui: int | None,
        body: dict[str, Any] | None,
    ) -> None:
        _set(self, "version", version)
        _set(self, "token", token)
        _set(self, "identifier", identifier)
        _set(self, "gateway_eui", gateway_eui)
        _set(self, "body", body)

    @property
    def identifier_name(self) -> str:
        return IDENTIFIER_NAMES[self.identifier]

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "token": self.token,
            "identifier": self.identifier,
            "gateway_eui": self.gateway_eui,
            "body": self.body,
        }


class Rxpk:
    """One received frame of a PUSH_DATA: the forwarder's fields, the PHYPayload, or its error."""

    __slots__ = ("error", "fields", "phy")

    fields: dict[str, Any]
    phy: bytes | None
    error: FrameError | None

    def __init__(self, fields: dict[str, Any], phy: bytes | None, error: FrameError | None) -> None:
        self.fields = fields
        self.phy = phy
        self.error = error

    def as_dict(self) -> dict[str, Any]:
        return {
            "fields": self.fields,
            "phy": self.phy,
            "error": None if self.error is None else self.error.as_dict(),
        }

    def __eq__(self, other: object) -> bool:
        if not hasattr(other, "fields") or not hasattr(other, "as_dict"):
            return NotImplemented
        return bool(self.as_dict() == other.as_dict())

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Rxpk(fields={self.fields!r}, phy={self.phy!r}, error={self.error!r})"


class PushData(Frozen):
    """A decoded PUSH_DATA: every rxpk (good or bad, in order) and the optional stat."""

    __slots__ = ("gateway_eui", "rxpk", "stat", "token", "version")
    __match_args__ = ("version", "token", "gateway_eui", "rxpk", "stat")

    version: int
    token: int
    gateway_eui: int
    rxpk: list[Rxpk]
    stat: dict[str, Any] | None

    def __init__(
        self, version: int, token: int, gateway_eui: int, rxpk: list[Rxpk],
        stat: dict[str, Any] | None,
    ) -> None:
        _set(self, "version", version)
        _set(self, "token", token)
        _set(self, "gateway_eui", gateway_eui)
        _set(self, "rxpk", rxpk)
        _set(self, "stat", stat)

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "token": self.token,
            "gateway_eui": self.gateway_eui,
            "rxpk": [r.as_dict() for r in self.rxpk],
            "stat": self.stat,
        }


def load_json_body(raw: bytes, offset: int) -> dict[str, Any]:
    """The general JSON parser for datagram bodies (the compiled fast path falls back to it).

    Trailing NUL bytes are dropped: some forwarders send the C string terminator.
    """
    end = len(raw)
    while end and raw[end - 1] == 0:
        end -= 1
    if end == 0:
        raise FrameError("missing_body", offset, "datagram has no JSON body")
    try:
        body = orjson.loads(raw[:end])
    except orjson.JSONDecodeError as exc:
        raise FrameError(
            "bad_json", offset + exc.pos, f"JSON body is not valid: {exc.msg}"
        ) from None
    if not isinstance(body, dict):
        raise FrameError("bad_json", offset, "JSON body must be an object")
    return body


def _header(datagram: bytes) -> tuple[int, int, int]:
    n = len(datagram)
    if n > MAX_DATAGRAM:
        raise FrameError("too_large", MAX_DATAGRAM, f"datagram of {n} bytes exceeds {MAX_DATAGRAM}")
    if n < 4:
        raise FrameError("too_short", n, f"GWMP header needs 4 bytes, got {n}")
    version = datagram[0]
    if version != 1 and version != 2:
        raise FrameError("bad_version", 0, f"protocol version {version} is not supported (1 or 2)")
    ident = datagram[3]
    if ident > 5:
        raise FrameError("unknown_identifier", 3, f"identifier 0x{ident:02x} is not a GWMP message")
    return version, datagram[1] | (datagram[2] << 8), ident


def _eui(datagram: bytes, ident: int) -> int:
    if len(datagram) < 12:
        raise FrameError(
            "too_short",
            len(datagram),
            f"{IDENTIFIER_NAMES[ident]} needs an 8-byte gateway EUI after the header",
        )
    return int.from_bytes(datagram[4:12], "big")


def parse_gwmp(datagram: bytes) -> GwmpPacket:
    """Parse any of the six GWMP messages; bodies are parsed JSON, rxpk left as received."""
    datagram = bytes(datagram)
    version, token, ident = _header(datagram)
    eui: int | None = None
    body: dict[str, Any] | None = None
    if ident == PUSH_DATA:
        eui = _eui(datagram, ident)
        body = load_json_body(datagram[12:], 12)
    elif ident == PULL_DATA:
        eui = _eui(datagram, ident)
    elif ident == PULL_RESP:
        body = load_json_body(datagram[4:], 4)
    elif ident == TX_ACK:
        eui = _eui(datagram, ident)
        rest = datagram[12:].rstrip(b"\x00")
        if rest:
            body = load_json_body(rest, 12)
    # PUSH_ACK / PULL_ACK carry nothing; trailing bytes are ignored like lora_pkt_fwd does.
    return GwmpPacket(version, token, ident, eui, body)


def rxpk_from_fields(fields: Any, index: int) -> Rxpk:
    """Decode one rxpk object: its base64 ``data`` and the ``size`` cross-check."""
    if not isinstance(fields, dict):
        return Rxpk({}, None, FrameError("bad_rxpk", index, f"rxpk[{index}] is not an object"))
    text = fields.get("data")
    if text is None:
        return Rxpk(fields, None, FrameError("missing_data", index, f"rxpk[{index}] has no data"))
    if not isinstance(text, str):
        return Rxpk(
            fields, None, FrameError("bad_base64", 0, f"rxpk[{index}].data is not a string")
        )
    try:
        phy = b64decode_tolerant(text)
    except FrameError as exc:
        return Rxpk(
            fields, None, FrameError(exc.kind, exc.offset, f"rxpk[{index}].data: {exc.detail}")
        )
    if "size" in fields:
        size = fields["size"]
        if type(size) is not int or size != len(phy):
            return Rxpk(
                fields,
                phy,
                FrameError(
                    "size_mismatch",
                    0,
                    f"rxpk[{index}].size is {size!r} but data holds {len(phy)} bytes",
                ),
            )
    return Rxpk(fields, phy, None)


def push_data_from_body(version: int, token: int, eui: int, body: dict[str, Any]) -> PushData:
    rx_list = body.get("rxpk")
    stat = body.get("stat")
    if stat is not None and not isinstance(stat, dict):
        raise FrameError("bad_body", 12, "stat must be an object")
    if rx_list is None:
        return PushData(version, token, eui, [], stat)
    if not isinstance(rx_list, list):
        raise FrameError("bad_body", 12, "rxpk must be an array")
    if len(rx_list) > MAX_RXPK:
        raise FrameError(
            "too_many_rxpk", 12, f"{len(rx_list)} rxpk in one datagram; at most {MAX_RXPK}"
        )
    return PushData(
        version, token, eui, [rxpk_from_fields(f, i) for i, f in enumerate(rx_list)], stat
    )


def _push_data_fallbacks() -> int:
    """Always 0: the twin has one path (orjson), so no body ever falls back.

    The compiled module counts the PUSH_DATA bodies its fused scan hands to the general
    parser; tests use the pair to prove forwarder traffic never does.
    """
    return 0


def decode_push_data(datagram: bytes) -> PushData:
    """Decode a PUSH_DATA whole: header, every rxpk (bad ones carry their error), stat."""
    datagram = bytes(datagram)
    version, token, ident = _header(datagram)
    if ident != PUSH_DATA:
        raise FrameError("not_push_data", 3, f"expected PUSH_DATA, got {IDENTIFIER_NAMES[ident]}")
    eui = _eui(datagram, ident)
    return push_data_from_body(version, token, eui, load_json_body(datagram[12:], 12))


# ---------------------------------------------------------------------------- decode batches


def decode_lines(
    kind: str, block: bytes, fallback: Callable[[bytes], tuple[bytes, bool]]
) -> tuple[bytes, int]:
    """Output of a ``schwebe decode phy|gwmp -`` batch for the lines of ``block`` (each ended
    by "\\n"; a last one without it counts too): one JSON line each, "\\n"-terminated, in order.

    The twin answers every line with ``fallback(line) -> (bytes, failed)``, the general path;
    the compiled module writes the lines it can answer with certainty itself, byte for byte
    the same. Returns (output, number of failed lines).
    """
    if kind not in ("phy", "gwmp"):
        raise ValueError(f"kind must be 'phy' or 'gwmp', not {kind!r}")
    lines = block.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    parts: list[bytes] = []
    failed = 0
    for line in lines:
        text, bad = fallback(line)
        failed += bad
        parts.append(text)
        parts.append(b"\n")
    return b"".join(parts), failed


# ---------------------------------------------------------------------------- encoders


def _head(version: int, token: int, ident: int) -> bytes:
    if version not in (1, 2):
        raise ValueError(f"GWMP version must be 1 or 2, got {version}")
    if not 0 <= token <= 0xFFFF:
        raise ValueError(f"token must fit 16 bits, got {token}")
    return bytes((version, token & 0xFF, token >> 8, ident))


def _eui_bytes(eui: int) -> bytes:
    if not 0 <= eui < 1 << 64:
        raise ValueError(f"gateway EUI must fit 64 bits, got {eui}")
    return eui.to_bytes(8, "big")


def _json(obj: Mapping[str, Any]) -> bytes:
    return orjson.dumps(obj)


def encode_push_data(
    token: int,
    gateway_eui: int,
    rxpk: Sequence[Mapping[str, Any]] | None = None,
    stat: Mapping[str, Any] | None = None,
    version: int = 2,
) -> bytes:
    body: dict[str, Any] = {}
    if rxpk is not None:
        if len(rxpk) > MAX_RXPK:
            raise ValueError(f"{len(rxpk)} rxpk in one datagram; at most {MAX_RXPK}")
        body["rxpk"] = [dict(r) for r in rxpk]
    if stat is not None:
        body["stat"] = dict(stat)
    out = _head(version, token, PUSH_DATA) + _eui_bytes(gateway_eui) + _json(body)
    if len(out) > MAX_DATAGRAM:
        raise ValueError(f"PUSH_DATA of {len(out)} bytes exceeds {MAX_DATAGRAM}; split it")
    return out


def encode_push_ack(token: int, version: int = 2) -> bytes:
    return _head(version, token, PUSH_ACK)


def encode_pull_data(token: int, gateway_eui: int, version: int = 2) -> bytes:
    return _head(version, token, PULL_DATA) + _eui_bytes(gateway_eui)


def encode_pull_ack(token: int, version: int = 2) -> bytes:
    return _head(version, token, PULL_ACK)


def encode_pull_resp(token: int, txpk: Mapping[str, Any], version: int = 2) -> bytes:
    return _head(version, token, PULL_RESP) + _json({"txpk": dict(txpk)})


def encode_tx_ack(
    token: int,
    gateway_eui: int,
    txpk_ack: Mapping[str, Any] | None = None,
    version: int = 2,
) -> bytes:
    out = _head(version, token, TX_ACK) + _eui_bytes(gateway_eui)
    if txpk_ack is not None:
        out += _json({"txpk_ack": dict(txpk_ack)})
    return out


# NetID type -> (prefix length in bits, NwkID length in bits); LoRaWAN Backend Interfaces §13.
_NETID_LAYOUT: Final[tuple[tuple[int, int], ...]] = (
    (1, 6),
    (2, 6),
    (3, 9),
    (4, 11),
    (5, 12),
    (6, 13),
    (7, 15),
    (8, 17),
)


def netid_devaddr_prefix(net_id: int) -> tuple[int, int]:
    """The DevAddr prefix (value, bits) that a NetID's devices use: type prefix + NwkID."""
    if not 0 <= net_id < 1 << 24:
        raise ValueError(f"NetID must fit 24 bits, got {net_id:#x}")
    ntype = net_id >> 21
    type_bits, nwk_bits = _NETID_LAYOUT[ntype]
    type_prefix = ((1 << type_bits) - 2) & ((1 << type_bits) - 1)  # ones then a zero
    nwk_id = net_id & ((1 << nwk_bits) - 1)
    bits = type_bits + nwk_bits
    return ((type_prefix << nwk_bits) | nwk_id) << (32 - bits), bits


def uplink_json_fast(body: bytes, received_us: int, replay: bool) -> tuple[str, bytes] | None:
    """The compiled build's shortcut from an uplink record body to its ChirpStack JSON
    (ext/_uplink_json.pxi). The twin has none: None sends every caller to the general path
    (gateway/forward/chirpstack_json.py, ``uplink_message``), which the shortcut must match."""
    return None


def cbor_dumps_fast(obj: Any) -> bytes | None:
    """The compiled build's CBOR writer for plain record bodies (ext/_cbor_fast.pxi). The twin
    has none: None, and the caller encodes with cbor2, whose bytes the compiled one matches."""
    return None


def uplink_records(
    rxpk: Sequence[Any], eui_hex: str, max_phy: int, record_type: Callable[..., Any],
    source: str, received_us: int,
) -> tuple[list[Any], list[dict[str, Any]], list[bytes], list[str]]:
    """One PUSH_DATA's rxpk as ``uplink`` records, for the packet-forwarder door
    (drivers/gwmp_server.py): ``(records, fields, phys, refused)``.

    In order, an rxpk is refused (its counter name in ``refused``) when the decoder found it
    malformed (its error's kind), when it has no data (``missing_data``), when its PHYPayload is
    longer than ``max_phy`` (``too_large``), or when :func:`rxpk_door` refuses its fields (after
    ``data`` is rewritten as padded standard base64, the form records carry). Every other one
    gives a record ``record_type("uplink", source, received_us, body, 0)`` whose body is the
    CBOR of ``{"gateway_eui": eui_hex, "rxpk": fields}`` (what ``make_record`` writes), and its
    fields dict and PHYPayload, in the same order. The compiled build does the same in one C
    loop (ext/_push_records.pxi).
    """
    records: list[Any] = []
    goods: list[dict[str, Any]] = []
    phys: list[bytes] = []
    refused: list[str] = []
    for rx in rxpk:
        phy, error = rx.phy, rx.error
        if error is not None:
            refused.append(error.kind)
            continue
        if phy is None:
            refused.append("missing_data")
            continue
        phy = bytes(phy)
        if len(phy) > max_phy:
            refused.append("too_large")
            continue
        fields = rx.fields
        fields["data"] = b64encode(phy)
        answer = rxpk_door(fields)
        if answer is not None:
            refused.append(answer[0])
            continue
        body = cbor2.dumps({"gateway_eui": eui_hex, "rxpk": fields})
        records.append(record_type("uplink", source, received_us, body, 0))
        goods.append(fields)
        phys.append(phy)
    return records, goods, phys, refused


def uplink_publishes(
    records: Sequence[tuple[int, Any]], now_us: int, late_after_us: int, prefix: str,
) -> tuple[list[tuple[str, bytes, bool]], list[str]] | None:
    """The compiled build's shortcut for the MQTT forwarder's usual batch, every record an
    ``uplink`` (ext/_mqtt_batch.pxi): ``(messages, gateway EUIs)``, where each message is
    ``(f"{prefix}/gateway/{eui}/event/up", ChirpStack JSON, False)`` with the JSON that
    :func:`uplink_json_fast` gives for the record's body, marked as a replay when
    ``now_us - received_us > late_after_us``, and the EUIs are those of the topics in first-seen
    order. None where one record is not such an uplink. The twin has no fast encoder and answers
    None: the forwarder's general path (gateway/forward/mqtt.py), which the shortcut must match
    (tests/test_mqtt_batch.py)."""
    return None


def mqtt_publish_frames(
    messages: Sequence[tuple[str, bytes, bool]], start: int, room: int, pid: int,
    inflight: dict[int, Any], subacks: dict[int, Any], batch: Any, topics: dict[str, bytes],
    field_of: Callable[[str], bytes],
) -> tuple[bytes, int, int] | None:
    """The compiled build's PUBLISH packets for a run of MQTT messages (ext/_mqtt_batch.pxi).
    The twin has none: None, and the connection frames them with its own reference
    (gateway/forward/mqtt_wire.py, ``publish_frames``), whose bytes the compiled ones match."""
    return None


# ---------------------------------------------------------------------------- batch (numpy)

# The batch tools (numpy arrays of many frames) live in _batch_py: numpy costs the daemon
# ~11 MiB of RSS and it never calls them, so they are imported on first use only.
_BATCH_NAMES: Final = frozenset(
    {"PHY_DTYPE", "RXPK_DTYPE", "parse_phy_batch", "push_data_batch", "devaddr_prefix_mask",
     "netid_mask"}
)


def __getattr__(name: str) -> Any:
    if name in _BATCH_NAMES:
        from gateway.frames import _batch_py

        return getattr(_batch_py, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
