"""LoRaWAN 1.0.x / 1.1 security: MICs, payload and FOpts ciphers, join crypto, key derivation.

Pure functions over bytes (keys are 16-byte ``bytes``, identifiers ints as humans read them);
no parsing of frame structure (that is frames.py) and never any logging: keys are secrets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

# MAC commands need no crypto: they live in gateway.frames.mac (so `schwebe decode` of frames
# without keys never imports `cryptography`) and are named here for the callers of old.
from gateway.frames.mac import DOWNLINK_MAC as DOWNLINK_MAC
from gateway.frames.mac import UPLINK_MAC as UPLINK_MAC
from gateway.frames.mac import MacCommand as MacCommand
from gateway.frames.mac import split_mac_commands as split_mac_commands

# Block tags of LoRaWAN 1.1 §4.3.3 / §4.4 and the 1.0 equivalents.
_A_TAG: Final = 0x01
_B_TAG: Final = 0x49

#: JoinReqType of a join-accept MIC answering a Join-request (rejoins use their RejoinType).
JOIN_REQ_TYPE_JOIN: Final = 0xFF

FOptsScheme = Literal["errata", "original"]


# ---------------------------------------------------------------------------- primitives


def _check_key(key: bytes, name: str = "key") -> None:
    if len(key) != 16:
        raise ValueError(f"{name} must be 16 bytes (32 hex digits), got {len(key)} bytes")


def aes_encrypt(key: bytes, data: bytes) -> bytes:
    """AES-128 ECB encryption of whole 16-byte blocks."""
    _check_key(key)
    if len(data) % 16:
        raise ValueError(f"AES-ECB input must be a multiple of 16 bytes, got {len(data)}")
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return enc.update(data) + enc.finalize()


def aes_decrypt(key: bytes, data: bytes) -> bytes:
    """AES-128 ECB decryption of whole 16-byte blocks."""
    _check_key(key)
    if len(data) % 16:
        raise ValueError(f"AES-ECB input must be a multiple of 16 bytes, got {len(data)}")
    dec = Cipher(algorithms.AES(key), modes.ECB()).decryptor()
    return dec.update(data) + dec.finalize()


def aes_cmac(key: bytes, data: bytes) -> bytes:
    """AES-128 CMAC (RFC 4493), all 16 bytes."""
    _check_key(key)
    mac = CMAC(algorithms.AES(key))
    mac.update(data)
    return mac.finalize()


def _u32(value: int, what: str) -> bytes:
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"{what} must fit in 32 bits, got {value}")
    return value.to_bytes(4, "little")


def _u16(value: int, what: str) -> bytes:
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"{what} must fit in 16 bits, got {value}")
    return value.to_bytes(2, "little")


def _block(tag: int, head: bytes, uplink: bool, dev_addr: int, fcnt: int, last: int) -> bytes:
    """The 16-byte A/B block layout shared by cipher and MIC: tag|4 bytes|Dir|DevAddr|FCnt|0|last."""
    return (
        bytes((tag,))
        + head
        + (b"\x00" if uplink else b"\x01")
        + _u32(dev_addr, "DevAddr")
        + _u32(fcnt, "FCnt")
        + bytes((0, last))
    )


# ---------------------------------------------------------------------------- data frames


def data_mic_10(key: bytes, *, uplink: bool, dev_addr: int, fcnt: int, msg: bytes) -> bytes:
    """LoRaWAN 1.0 data-frame MIC with NwkSKey; ``msg`` is MHDR..FRMPayload, ``fcnt`` 32-bit."""
    _check_key(key, "NwkSKey")
    b0 = _block(_B_TAG, bytes(4), uplink, dev_addr, fcnt, len(msg))
    return aes_cmac(key, b0 + msg)[:4]


def uplink_mic_11(
    f_nwk_s_int_key: bytes,
    s_nwk_s_int_key: bytes,
    *,
    dev_addr: int,
    fcnt: int,
    msg: bytes,
    conf_fcnt: int = 0,
    tx_dr: int = 0,
    tx_ch: int = 0,
) -> bytes:
    """LoRaWAN 1.1 uplink MIC: cmacS[0:2] | cmacF[0:2].

    ``conf_fcnt`` is the counter of the confirmed downlink this uplink ACKs; the spec wants 0
    when the ACK bit is clear, which the caller (who knows FCtrl) must apply.
    """
    _check_key(f_nwk_s_int_key, "FNwkSIntKey")
    _check_key(s_nwk_s_int_key, "SNwkSIntKey")
    if not (0 <= tx_dr <= 255 and 0 <= tx_ch <= 255):
        raise ValueError(f"TxDr and TxCh must be single bytes, got {tx_dr} and {tx_ch}")
    b0 = _block(_B_TAG, bytes(4), True, dev_addr, fcnt, len(msg))
    head1 = _u16(conf_fcnt & 0xFFFF, "ConfFCnt") + bytes((tx_dr, tx_ch))
    b1 = _block(_B_TAG, head1, True, dev_addr, fcnt, len(msg))
    cmac_s = aes_cmac(s_nwk_s_int_key, b1 + msg)
    cmac_f = aes_cmac(f_nwk_s_int_key, b0 + msg)
    return cmac_s[:2] + cmac_f[:2]


def downlink_mic_11(
    s_nwk_s_int_key: bytes, *, dev_addr: int, fcnt: int, msg: bytes, conf_fcnt: int = 0
) -> bytes:
    """LoRaWAN 1.1 downlink MIC with SNwkSIntKey; ConfFCnt 0 unless the frame ACKs an uplink."""
    _check_key(s_nwk_s_int_key, "SNwkSIntKey")
    head = _u16(conf_fcnt & 0xFFFF, "ConfFCnt") + b"\x00\x00"
    b0 = _block(_B_TAG, head, False, dev_addr, fcnt, len(msg))
    return aes_cmac(s_nwk_s_int_key, b0 + msg)[:4]


def crypt_frm_payload(key: bytes, *, uplink: bool, dev_addr: int, fcnt: int, data: bytes) -> bytes:
    """Encrypt or decrypt (the same XOR keystream) an FRMPayload.

    Key: AppSKey for FPort > 0; NwkSKey (1.0) or NwkSEncKey (1.1) for FPort 0. ``fcnt`` is the
    32-bit counter the frame was sent on (FCntUp, NFCntDown or AFCntDown).
    """
    _check_key(key)
    if not data:
        return b""
    nblocks = (len(data) + 15) // 16
    if nblocks > 255:
        raise ValueError(f"FRMPayload of {len(data)} bytes is longer than LoRaWAN allows")
    blocks = b"".join(
        _block(_A_TAG, bytes(4), uplink, dev_addr, fcnt, i) for i in range(1, nblocks + 1)
    )
    stream = aes_encrypt(key, blocks)
    return bytes(a ^ b for a, b in zip(data, stream, strict=False))


encrypt_frm_payload = crypt_frm_payload
decrypt_frm_payload = crypt_frm_payload


def crypt_fopts(
    nwk_s_enc_key: bytes,
    *,
    uplink: bool,
    dev_addr: int,
    fcnt: int,
    data: bytes,
    a_fcnt_down: bool = False,
    scheme: FOptsScheme = "errata",
) -> bytes:
    """Encrypt or decrypt LoRaWAN 1.1 FOpts (at most 15 bytes) with NwkSEncKey.

    ``scheme="errata"`` (what ChirpStack and devices built after the 1.1 errata do): byte 4 of
    the A block is 0x01, or 0x02 for a downlink counted on AFCntDown, and byte 15 is 0x01.
    ``scheme="original"`` is the 1.1 text before the errata (both bytes 0x00), still met in
    older stacks' test vectors.
    """
    _check_key(nwk_s_enc_key, "NwkSEncKey")
    if len(data) > 15:
        raise ValueError(f"FOpts holds at most 15 bytes, got {len(data)}")
    if not data:
        return b""
    if scheme == "errata":
        marker = 0x02 if (a_fcnt_down and not uplink) else 0x01
        head, last = bytes((0, 0, 0, marker)), 0x01
    elif scheme == "original":
        head, last = bytes(4), 0x00
    else:
        raise ValueError(f"unknown FOpts scheme {scheme!r}; use 'errata' or 'original'")
    stream = aes_encrypt(nwk_s_enc_key, _block(_A_TAG, head, uplink, dev_addr, fcnt, last))
    return bytes(a ^ b for a, b in zip(data, stream, strict=False))


encrypt_fopts = crypt_fopts
decrypt_fopts = crypt_fopts


# ---------------------------------------------------------------------------- keyed session

# CMAC padding of the last block (RFC 4493 §2.4) by the length of its partial tail; a
# complete last block gets none.
_CMAC_PAD: Final[tuple[bytes, ...]] = (b"", *(b"\x80" + bytes(15 - r) for r in range(1, 16)))
# bytes((0, n)): the last two bytes of B0 (message length) and of A_i (block index).
_ZERO_BYTE: Final[tuple[bytes, ...]] = tuple(bytes((0, n)) for n in range(256))
_MASK128: Final = (1 << 128) - 1


def _cmac_subkeys(l_block: int) -> tuple[int, int]:
    """K1 and K2 of RFC 4493 §2.3 from L = AES(key, 0^128), as 128-bit integers."""
    k1 = l_block << 1
    if k1 >> 128:
        k1 = (k1 & _MASK128) ^ 0x87
    k2 = k1 << 1
    if k2 >> 128:
        k2 = (k2 & _MASK128) ^ 0x87
    return k1, k2


class SessionCrypto10:
    """The per-frame crypto of one LoRaWAN 1.0 session (DevAddr, NwkSKey, AppSKey), keyed once.

    Same results as :func:`data_mic_10` and :func:`crypt_frm_payload`, at a fraction of the
    cost: those build an AES key schedule and cipher context on every call, which is most of
    the time on an uplink of a few bytes. Not thread-safe (it carries a CBC chain from call to
    call): one owner on one thread, as the event loop's parking sessions are.
    """

    __slots__ = ("_a", "_app_ecb", "_b0", "_cbc", "_k1", "_k2", "_l", "_last", "_masks",
                 "_nwk_ecb")

    def __init__(self, dev_addr: int, nwk_s_key: bytes, app_s_key: bytes) -> None:
        _check_key(nwk_s_key, "NwkSKey")
        _check_key(app_s_key, "AppSKey")
        addr = _u32(dev_addr, "DevAddr")
        # ``update`` of a kept ECB context is a plain block encryption: no finalize needed.
        self._nwk_ecb = Cipher(algorithms.AES(nwk_s_key), modes.ECB()).encryptor().update
        self._app_ecb = Cipher(algorithms.AES(app_s_key), modes.ECB()).encryptor().update
        # CMAC is a CBC-MAC with its last block masked, so one kept CBC context serves every
        # MIC, in one C call instead of one per block. Its chaining block is its previous
        # output block, which each MIC feeds back first: E(prev ^ prev) = E(0) = L, a known
        # chain the first real block is XORed with, as if every message began at a zero IV.
        self._cbc = Cipher(algorithms.AES(nwk_s_key), modes.CBC(bytes(16))).encryptor().update
        self._last = bytes(16)  # the IV, then the last output block of each MIC
        self._l = int.from_bytes(self._nwk_ecb(bytes(16)), "big")
        self._k1, self._k2 = _cmac_subkeys(self._l)
        # By message length (a device sends a few): L and K1 or K2, each in its place.
        self._masks: dict[int, int] = {}
        # B0 and A_i heads: tag, four zero bytes, direction, DevAddr (uplink, downlink).
        self._b0 = (b"\x49" + bytes(5) + addr, b"\x49" + bytes(4) + b"\x01" + addr)
        self._a = (b"\x01" + bytes(5) + addr, b"\x01" + bytes(4) + b"\x01" + addr)

    def _mask(self, n: int) -> int:
        size = 16 + n + len(_CMAC_PAD[n & 15])  # B0, message, padding
        mask = (self._l << ((size - 16) << 3)) ^ (self._k2 if n & 15 else self._k1)
        self._masks[n] = mask
        return mask

    def data_mic(self, *, uplink: bool, fcnt: int, msg: bytes) -> bytes:
        """:func:`data_mic_10` with this session's NwkSKey and DevAddr."""
        n = len(msg)
        try:  # range checks by catching: testing first would cost as much as the rest
            data = b"".join(
                (self._last, self._b0[0 if uplink else 1], fcnt.to_bytes(4, "little"),
                 _ZERO_BYTE[n], msg, _CMAC_PAD[n & 15])
            )
        except (OverflowError, IndexError):
            if not 0 <= fcnt <= 0xFFFFFFFF:
                raise _fcnt_error(fcnt) from None
            raise ValueError(
                f"a LoRaWAN frame is at most 255 bytes, got {n} before the MIC"
            ) from None
        try:
            mask = self._masks[n]
        except KeyError:
            mask = self._mask(n)
        self._last = mac = self._cbc((int.from_bytes(data) ^ mask).to_bytes(len(data)))[-16:]
        return mac[:4]

    def crypt_frm_payload(self, *, fport: int, uplink: bool, fcnt: int, data: bytes) -> bytes:
        """:func:`crypt_frm_payload` with NwkSKey (``fport`` 0) or AppSKey (any other)."""
        n = len(data)
        if not n:
            return b""
        try:
            head = self._a[0 if uplink else 1] + fcnt.to_bytes(4, "little")
        except OverflowError:
            raise _fcnt_error(fcnt) from None
        if n <= 16:  # one block: what nearly every sensor sends
            stream = (self._nwk_ecb if fport == 0 else self._app_ecb)(head + b"\x00\x01")
            pad = 16 - n
        else:
            nblocks = (n + 15) >> 4
            if nblocks > 255:
                raise ValueError(f"FRMPayload of {n} bytes is longer than LoRaWAN allows")
            blocks = b"".join([head + _ZERO_BYTE[i] for i in range(1, nblocks + 1)])
            stream = (self._nwk_ecb if fport == 0 else self._app_ecb)(blocks)
            pad = (nblocks << 4) - n
        # The keystream's tail beyond the payload is shifted off; one XOR of two ints.
        return (int.from_bytes(data) ^ (int.from_bytes(stream) >> (pad << 3))).to_bytes(n)


def _fcnt_error(fcnt: int) -> ValueError:
    return ValueError(f"FCnt must fit in 32 bits, got {fcnt}")


# ---------------------------------------------------------------------------- join


def join_request_mic(key: bytes, msg: bytes) -> bytes:
    """Join-request MIC: AppKey (1.0) or NwkKey (1.1) over MHDR|JoinEUI|DevEUI|DevNonce."""
    _check_key(key, "AppKey/NwkKey")
    return aes_cmac(key, msg)[:4]


def rejoin_request_mic(key: bytes, msg: bytes) -> bytes:
    """Rejoin-request MIC: SNwkSIntKey for types 0/2, JSIntKey for type 1, over the whole frame."""
    _check_key(key, "SNwkSIntKey/JSIntKey")
    return aes_cmac(key, msg)[:4]


def join_accept_mic_10(key: bytes, msg: bytes) -> bytes:
    """1.0 (or OptNeg=0) join-accept MIC over MHDR|JoinNonce|NetID|DevAddr|DLSettings|RxDelay|CFList."""
    _check_key(key, "AppKey/NwkKey")
    return aes_cmac(key, msg)[:4]


def join_accept_mic_11(
    js_int_key: bytes, *, join_req_type: int, join_eui: int, dev_nonce: int, msg: bytes
) -> bytes:
    """1.1 join-accept MIC (OptNeg=1) with JSIntKey: JoinReqType|JoinEUI|DevNonce|MHDR|...|CFList.

    ``join_req_type`` is 0xFF answering a Join-request, else the RejoinType (0, 1, 2).
    """
    _check_key(js_int_key, "JSIntKey")
    if join_req_type not in (0x00, 0x01, 0x02, 0xFF):
        raise ValueError(f"JoinReqType must be 0xff, 0, 1 or 2, got {join_req_type}")
    head = bytes((join_req_type,)) + join_eui.to_bytes(8, "little") + _u16(dev_nonce, "DevNonce")
    return aes_cmac(js_int_key, head + msg)[:4]


def decrypt_join_accept(key: bytes, encrypted: bytes) -> bytes:
    """Recover JoinNonce..CFList|MIC from the 16 or 32 bytes after MHDR.

    The network "encrypts" with AES decrypt so devices only need AES encrypt; undoing it is
    therefore an ECB encryption.
    """
    if len(encrypted) not in (16, 32):
        raise ValueError(f"join-accept body must be 16 or 32 bytes, got {len(encrypted)}")
    return aes_encrypt(key, encrypted)


# ---------------------------------------------------------------------------- keys


@dataclass(frozen=True, slots=True)
class SessionKeys10:
    nwk_s_key: bytes
    app_s_key: bytes


@dataclass(frozen=True, slots=True)
class SessionKeys11:
    f_nwk_s_int_key: bytes
    s_nwk_s_int_key: bytes
    nwk_s_enc_key: bytes
    app_s_key: bytes | None  # None when the AppKey was not given


def _derive(key: bytes, tag: int, body: bytes) -> bytes:
    block = bytes((tag,)) + body
    return aes_encrypt(key, block + bytes(16 - len(block)))


def derive_session_keys_10(
    key: bytes, *, join_nonce: int, net_id: int, dev_nonce: int
) -> SessionKeys10:
    """1.0 NwkSKey/AppSKey from AppKey (or a 1.1 device's NwkKey when OptNeg is 0)."""
    _check_key(key, "AppKey/NwkKey")
    body = (
        join_nonce.to_bytes(3, "little")
        + net_id.to_bytes(3, "little")
        + _u16(dev_nonce, "DevNonce")
    )
    return SessionKeys10(nwk_s_key=_derive(key, 0x01, body), app_s_key=_derive(key, 0x02, body))


def derive_session_keys_11(
    nwk_key: bytes, app_key: bytes | None, *, join_nonce: int, join_eui: int, dev_nonce: int
) -> SessionKeys11:
    """1.1 (OptNeg=1) network session keys from NwkKey and AppSKey from AppKey."""
    _check_key(nwk_key, "NwkKey")
    body = (
        join_nonce.to_bytes(3, "little")
        + join_eui.to_bytes(8, "little")
        + _u16(dev_nonce, "DevNonce")
    )
    app_s_key = None
    if app_key is not None:
        _check_key(app_key, "AppKey")
        app_s_key = _derive(app_key, 0x02, body)
    return SessionKeys11(
        f_nwk_s_int_key=_derive(nwk_key, 0x01, body),
        s_nwk_s_int_key=_derive(nwk_key, 0x03, body),
        nwk_s_enc_key=_derive(nwk_key, 0x04, body),
        app_s_key=app_s_key,
    )


def derive_js_int_key(nwk_key: bytes, dev_eui: int) -> bytes:
    _check_key(nwk_key, "NwkKey")
    return _derive(nwk_key, 0x06, dev_eui.to_bytes(8, "little"))


def derive_js_enc_key(nwk_key: bytes, dev_eui: int) -> bytes:
    _check_key(nwk_key, "NwkKey")
    return _derive(nwk_key, 0x05, dev_eui.to_bytes(8, "little"))


