# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled twin of gateway/_frames_py.py: the gateway's hot path (PHYPayload, PUSH_DATA).

Same API and same answers as the Python twin (tests/test_frames_differential.py holds it to
that). PUSH_DATA bodies are scanned directly for the common JSON layout; anything unusual
falls back to the twin's general parser, so odd input costs time, never correctness.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem, PyDict_SetItem
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE, PyList_New, PyList_SET_ITEM
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_XDECREF
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memchr, memcmp, memcpy, memset
from libc.math cimport NAN
from cpython.mem cimport PyMem_Free, PyMem_Malloc

cimport cython

from gateway.frames import _frames_py as _twin

cdef extern from "Python.h":
    object PyUnicode_New(Py_ssize_t size, unsigned int maxchar)
    bint PyUnicode_IS_ASCII(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    void* PyUnicode_DATA(object o)
    bint PyUnicode_CheckExact(object o)
    bint PyLong_CheckExact(object o)
    bint PyFloat_CheckExact(object o)
    bint PyDict_CheckExact(object o)
    Py_ssize_t PyDict_GET_SIZE(object o)
    bint PyList_CheckExact(object o)
    double PyFloat_AS_DOUBLE(object o)
    object _PyDict_NewPresized(Py_ssize_t minused)
    double PyOS_string_to_double(const char* s, char** endptr, PyObject* overflow_exception) except? -1.0

IMPLEMENTATION = "cython"

# One error type and one set of value objects for both implementations, so `except FrameError`
# and isinstance checks behave the same whichever module serves.
FrameError = _twin.FrameError
GwmpPacket = _twin.GwmpPacket
MTYPE_NAMES = _twin.MTYPE_NAMES
IDENTIFIER_NAMES = _twin.IDENTIFIER_NAMES
MAX_DATAGRAM = _twin.MAX_DATAGRAM
MAX_RXPK = _twin.MAX_RXPK
# The same limits as C values: the module names above are dict lookups and boxed compares,
# paid on every rxpk when the hot loops use them.
cdef Py_ssize_t C_MAX_DATAGRAM = _twin.MAX_DATAGRAM
cdef int C_MAX_RXPK = _twin.MAX_RXPK
b64encode = _twin.b64encode
encode_push_data = _twin.encode_push_data
encode_push_ack = _twin.encode_push_ack
encode_pull_data = _twin.encode_pull_data
encode_pull_ack = _twin.encode_pull_ack
encode_pull_resp = _twin.encode_pull_resp
encode_tx_ack = _twin.encode_tx_ack
netid_devaddr_prefix = _twin.netid_devaddr_prefix

cdef object _load_json_body = _twin.load_json_body
import orjson
cdef object orjson_loads = orjson.loads
cdef object _PHY_FIELDS = _twin._PHY_FIELDS
cdef object _MTYPE_NAMES = _twin.MTYPE_NAMES
cdef object _HEX_WIDTH = _twin._HEX_WIDTH

# ---------------------------------------------------------------------------- PHYPayload

cdef enum Layout:
    L_DATA = 0
    L_JOIN_REQUEST = 1
    L_JOIN_ACCEPT = 2
    L_REJOIN_02 = 3
    L_REJOIN_1 = 4
    L_PROPRIETARY = 5

cdef enum PhyErr:
    E_OK = 0
    E_EMPTY = 1
    E_MAJOR = 2
    E_SHORT = 3
    E_FOPTS = 4
    E_JA_LEN = 5
    E_REJOIN_TYPE = 6
    E_LONG = 7

cdef struct PhyInfo:
    int layout
    Py_ssize_t fend     # end of FOpts (data frames)
    int err
    Py_ssize_t err_offset
    Py_ssize_t want     # the length a fixed-size frame needed (for messages)


cdef inline uint32_t _le16(const uint8_t* p) noexcept nogil:
    return p[0] | (<uint32_t>p[1] << 8)

cdef inline uint32_t _le24(const uint8_t* p) noexcept nogil:
    return p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16)

cdef inline uint32_t _le32(const uint8_t* p) noexcept nogil:
    return p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)

cdef inline uint64_t _le64(const uint8_t* p) noexcept nogil:
    return <uint64_t>_le32(p) | (<uint64_t>_le32(p + 4) << 32)


cdef inline void _exact(PhyInfo* info, Py_ssize_t n, Py_ssize_t want) noexcept nogil:
    info.want = want
    if n < want:
        info.err = E_SHORT
        info.err_offset = n
    elif n > want:
        info.err = E_LONG
        info.err_offset = want


cdef inline void _scan_phy(const uint8_t* p, Py_ssize_t n, PhyInfo* info) noexcept nogil:
    """Validate the structure; the one place the rules live on the compiled side."""
    cdef int mtype
    cdef uint8_t rtype
    info.err = E_OK
    info.err_offset = 0
    info.want = 0
    info.fend = 0
    if n == 0:
        info.err = E_EMPTY
        return
    if p[0] & 0x03:
        info.err = E_MAJOR
        return
    mtype = p[0] >> 5
    if 2 <= mtype <= 5:
        info.layout = L_DATA
        if n < 12:
            info.err = E_SHORT
            info.err_offset = n
            info.want = 12
            return
        info.fend = 8 + (p[5] & 0x0F)
        if info.fend > n - 4:
            info.err = E_FOPTS
            info.err_offset = 5
    elif mtype == 0:
        info.layout = L_JOIN_REQUEST
        _exact(info, n, 23)
    elif mtype == 1:
        info.layout = L_JOIN_ACCEPT
        if n != 17 and n != 33:
            info.err = E_JA_LEN
            info.err_offset = n
    elif mtype == 6:
        if n < 2:
            info.err = E_SHORT
            info.err_offset = n
            return
        rtype = p[1]
        if rtype == 0 or rtype == 2:
            info.layout = L_REJOIN_02
            _exact(info, n, 19)
        elif rtype == 1:
            info.layout = L_REJOIN_1
            _exact(info, n, 24)
        else:
            info.err = E_REJOIN_TYPE
            info.err_offset = 1
    else:
        info.layout = L_PROPRIETARY


cdef object _phy_error(PhyInfo* info, bytes data):
    """The FrameError the twin raises for the same frame, message included."""
    cdef Py_ssize_t n = len(data)
    cdef int e = info.err
    if e == E_EMPTY:
        return FrameError("empty", 0, "empty PHYPayload: no MHDR byte")
    if e == E_MAJOR:
        return FrameError(
            "unknown_major", 0,
            f"MHDR 0x{data[0]:02x} has Major {data[0] & 3}; only LoRaWAN R1 (Major 0) is defined",
        )
    mtype = data[0] >> 5
    if e == E_FOPTS:
        return FrameError(
            "fopts_overrun", 5, f"FOptsLen {data[5] & 0x0F} runs past the MIC of a {n}-byte frame"
        )
    if e == E_JA_LEN:
        return FrameError(
            "join_accept_length", n, f"JoinAccept must be 17 or 33 bytes (MHDR included), got {n}"
        )
    if e == E_REJOIN_TYPE:
        return FrameError(
            "unknown_rejoin_type", 1, f"RejoinType {data[1]} is not defined (0, 1 or 2)"
        )
    if mtype == 6:
        if n < 2:
            return FrameError("too_short", n, "RejoinRequest needs a RejoinType byte")
        what = f"RejoinRequest type {data[1]}"
    else:
        what = _MTYPE_NAMES[mtype]
    if 2 <= mtype <= 5:
        return FrameError("too_short", n, f"{what} needs at least 12 bytes, got {n}")
    if e == E_SHORT:
        return FrameError("too_short", n, f"{what} must be {info.want} bytes, got {n}")
    return FrameError("too_long", info.want, f"{what} must be {info.want} bytes, got {n}")


cdef class PhyPayload:
    """One parsed PHYPayload; fields are read from ``raw`` when asked for (parsing stays cheap)."""

    cdef readonly bytes raw
    cdef readonly int mhdr
    cdef readonly int mtype
    cdef readonly int major
    cdef Py_ssize_t _n
    cdef Py_ssize_t _fend
    cdef int _layout

    cdef inline const uint8_t* _p(self):
        return <const uint8_t*>PyBytes_AS_STRING(self.raw)

    @property
    def mic(self):
        if self._layout == L_JOIN_ACCEPT or self._layout == L_PROPRIETARY:
            return b""
        return self.raw[self._n - 4:]

    @property
    def dev_addr(self):
        return _le32(self._p() + 1) if self._layout == L_DATA else None

    @property
    def fctrl(self):
        return self._p()[5] if self._layout == L_DATA else None

    @property
    def fopts(self):
        return self.raw[8:self._fend] if self._layout == L_DATA else None

    @property
    def fcnt(self):
        return _le16(self._p() + 6) if self._layout == L_DATA else None

    @property
    def fport(self):
        if self._layout == L_DATA and self._fend < self._n - 4:
            return self._p()[self._fend]
        return None

    @property
    def frm_payload(self):
        if self._layout != L_DATA:
            return None
        if self._fend < self._n - 4:
            return self.raw[self._fend + 1:self._n - 4]
        return b""

    @property
    def join_eui(self):
        if self._layout == L_JOIN_REQUEST:
            return _le64(self._p() + 1)
        if self._layout == L_REJOIN_1:
            return _le64(self._p() + 2)
        return None

    @property
    def dev_eui(self):
        if self._layout == L_JOIN_REQUEST:
            return _le64(self._p() + 9)
        if self._layout == L_REJOIN_02:
            return _le64(self._p() + 5)
        if self._layout == L_REJOIN_1:
            return _le64(self._p() + 10)
        return None

    @property
    def dev_nonce(self):
        return _le16(self._p() + 17) if self._layout == L_JOIN_REQUEST else None

    @property
    def encrypted(self):
        return self.raw[1:] if self._layout == L_JOIN_ACCEPT else None

    @property
    def rejoin_type(self):
        if self._layout == L_REJOIN_02 or self._layout == L_REJOIN_1:
            return self._p()[1]
        return None

    @property
    def net_id(self):
        return _le24(self._p() + 2) if self._layout == L_REJOIN_02 else None

    @property
    def rj_count(self):
        if self._layout == L_REJOIN_02:
            return _le16(self._p() + 13)
        if self._layout == L_REJOIN_1:
            return _le16(self._p() + 18)
        return None

    @property
    def payload(self):
        return self.raw[1:] if self._layout == L_PROPRIETARY else None

    @property
    def mtype_name(self):
        return _MTYPE_NAMES[self.mtype]

    @property
    def uplink(self):
        return self.mtype in (0, 2, 4, 6)

    def as_dict(self):
        return {name: getattr(self, name) for name in _PHY_FIELDS}

    def __eq__(self, other):
        if type(other) is not PhyPayload:
            return NotImplemented
        return self.raw == (<PhyPayload>other).raw

    def __hash__(self):
        return hash(self.raw)

    def __reduce__(self):
        return (parse_phy, (self.raw,))

    def __repr__(self):
        parts = [f"mtype={_MTYPE_NAMES[self.mtype]}"]
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


cpdef PhyPayload parse_phy(data):
    """Split a PHYPayload into its fields; raise FrameError for anything malformed."""
    cdef bytes raw = data if PyBytes_CheckExact(data) else bytes(data)
    cdef PhyInfo info
    cdef Py_ssize_t n = PyBytes_GET_SIZE(raw)
    cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(raw)
    _scan_phy(p, n, &info)
    if info.err != E_OK:
        raise _phy_error(&info, raw)
    cdef PhyPayload out = PhyPayload.__new__(PhyPayload)
    out.raw = raw
    out.mhdr = p[0]
    out.mtype = p[0] >> 5
    out.major = 0
    out._n = n
    out._fend = info.fend
    out._layout = info.layout
    return out


# ---------------------------------------------------------------------------- batch

# PHY_DTYPE is packed: byte offsets of each field in a row (little-endian on the wire and here).
cdef enum:
    O_DEV_ADDR = 0
    O_FCNT = 4
    O_FPORT = 6
    O_MTYPE = 8
    O_PHY_LEN = 9
    O_FRM_LEN = 11
    O_OK = 13
    O_RSSI = 14
    O_LSNR = 18
    O_FREQ = 22
    O_SF = 30

# numpy and the twin's dtypes are loaded on the first batch call, not at import: the daemon
# never makes batches, and numpy would cost it ~11 MiB of RSS.
cdef object _np = None


cdef object _numpy():
    global _np
    if _np is None:
        import numpy
        from gateway.frames import _batch_py
        phy, rxpk = _batch_py.PHY_DTYPE, _batch_py.RXPK_DTYPE
        assert phy.itemsize == 14 and rxpk.itemsize == 31
        assert [phy.fields[k][1] for k in phy.names] == [0, 4, 6, 8, 9, 11, 13]
        assert [rxpk.fields[k][1] for k in ("rssi", "lsnr", "freq", "sf")] == [14, 18, 22, 30]
        _np = numpy
    return _np


_BATCH_TWIN = frozenset({"PHY_DTYPE", "RXPK_DTYPE", "devaddr_prefix_mask", "netid_mask"})


def __getattr__(name):
    # the twin's batch objects, re-exported like the rest, but on first use
    if name in _BATCH_TWIN:
        _numpy()
        from gateway.frames import _batch_py
        return getattr(_batch_py, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


cdef inline void _put16(uint8_t* r, uint32_t v) noexcept nogil:
    r[0] = v & 0xFF
    r[1] = (v >> 8) & 0xFF

cdef inline void _put32(uint8_t* r, uint32_t v) noexcept nogil:
    r[0] = v & 0xFF
    r[1] = (v >> 8) & 0xFF
    r[2] = (v >> 16) & 0xFF
    r[3] = (v >> 24) & 0xFF


cdef inline void _putf32(uint8_t* r, float v) noexcept nogil:
    cdef uint32_t bits
    memcpy(&bits, &v, 4)
    _put32(r, bits)

cdef inline void _putf64(uint8_t* r, double v) noexcept nogil:
    cdef uint64_t bits
    memcpy(&bits, &v, 8)
    _put32(r, <uint32_t>bits)
    _put32(r + 4, <uint32_t>(bits >> 32))


cdef inline void _fill_phy_row(uint8_t* r, const uint8_t* p, Py_ssize_t n) noexcept nogil:
    """Row already zeroed with fport -1; the same rules as the twin's _fill_phy."""
    cdef PhyInfo info
    _put16(r + O_PHY_LEN, <uint32_t>(n if n < 0xFFFF else 0xFFFF))
    _scan_phy(p, n, &info)
    if info.err != E_OK:
        return
    r[O_MTYPE] = p[0] >> 5
    r[O_OK] = 1
    if info.layout == L_DATA:
        _put32(r + O_DEV_ADDR, _le32(p + 1))
        _put16(r + O_FCNT, _le16(p + 6))
        if info.fend < n - 4:
            _put16(r + O_FPORT, p[info.fend])
            _put16(r + O_FRM_LEN, <uint32_t>(n - 4 - info.fend - 1))


def parse_phy_batch(frames):
    """Header fields of many PHYPayloads at once; a malformed one gets ok=False and zeros."""
    if not PyList_CheckExact(frames):
        frames = list(frames)
    cdef Py_ssize_t count = PyList_GET_SIZE(frames)
    cdef Py_ssize_t i, n
    np = _numpy()
    from gateway.frames._batch_py import PHY_DTYPE
    out = np.zeros(count, dtype=PHY_DTYPE)
    cdef uint8_t[::1] buf = out.view(np.uint8)
    cdef uint8_t* base = &buf[0] if count else NULL
    cdef uint8_t* r
    cdef object item
    for i in range(count):
        item = <object>PyList_GET_ITEM(frames, i)
        if not PyBytes_CheckExact(item):
            item = bytes(item)
        r = base + i * 14
        r[O_FPORT] = 0xFF
        r[O_FPORT + 1] = 0xFF
        n = PyBytes_GET_SIZE(item)
        _fill_phy_row(r, <const uint8_t*>PyBytes_AS_STRING(item), n)
    return out


# ---------------------------------------------------------------------------- base64

cdef signed char _B64[256]
cdef int _i
for _i in range(256):
    _B64[_i] = -1
for _i, _c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"):
    _B64[ord(_c)] = _i
_B64[ord("-")] = 62
_B64[ord("_")] = 63

# The same table four times, each entry already shifted to its place in a 24-bit group (and
# 1 << 24 for a bad character): a quad then decodes with four loads and three ORs instead of
# a shift-and-mask per output byte.
cdef uint32_t _D0[256]
cdef uint32_t _D1[256]
cdef uint32_t _D2[256]
cdef uint32_t _D3[256]
for _i in range(256):
    if _B64[_i] < 0:
        _D0[_i] = _D1[_i] = _D2[_i] = _D3[_i] = 1 << 24
    else:
        _D0[_i] = <uint32_t>_B64[_i] << 18
        _D1[_i] = <uint32_t>_B64[_i] << 12
        _D2[_i] = <uint32_t>_B64[_i] << 6
        _D3[_i] = <uint32_t>_B64[_i]


cdef object _b64_decode(object text):
    """Tolerant base64 (standard or URL-safe, padded or not); FrameError like the twin's."""
    if not PyUnicode_IS_ASCII(text):
        pos = 0
        for ch in text:
            if ord(ch) > 127:
                break
            pos += 1
        raise FrameError("bad_base64", pos, f"non-ASCII character in base64 at {pos}")
    return _b64_bytes(<const uint8_t*>PyUnicode_DATA(text), PyUnicode_GET_LENGTH(text))


cdef object _b64_bytes(const uint8_t* s, Py_ssize_t n):
    """Tolerant base64 of ASCII bytes; FrameError with the offset of the first bad character."""
    out = _b64_try(s, n)
    if out is None:
        raise _b64_error(s, n)
    return out


cdef inline Py_ssize_t _b64_end(const uint8_t* s, Py_ssize_t n) noexcept nogil:
    """Length without the (at most two) '=' of padding."""
    if n and s[n - 1] == 61:
        n -= 1
        if n and s[n - 1] == 61:
            n -= 1
    return n


cdef inline Py_ssize_t _b64_data_end(const uint8_t* s, Py_ssize_t n) noexcept nogil:
    """Where the data ends, as the twin reads it; -1 when the '=' left over are misplaced.

    The twin drops two '=' and pads the rest to whole quanta, so up to two more '=' pass when
    they are exactly the padding the data needs ("00====" is "00"; "0000===" is an error).
    """
    cdef Py_ssize_t end = _b64_end(s, n)
    cdef Py_ssize_t data = end
    while data and s[data - 1] == 61 and end - data < 3:
        data -= 1
    if data == end:
        return end
    if ((data & 3) == 2 and end - data <= 2) or ((data & 3) == 3 and end - data == 1):
        return data
    return -1


cdef object _b64_try(const uint8_t* s, Py_ssize_t n):
    """The decoded bytes, or None when the text is not base64 (_b64_error then says why).

    One pass: decode while checking (a bad character makes some table entry negative, which
    the OR of each quad shows). No exception on the hot path: the caller decides.
    """
    cdef Py_ssize_t end = _b64_data_end(s, n), i, o, outlen
    cdef uint8_t* d
    cdef int a, b, c, e
    cdef int bad = 0
    cdef uint32_t g, gbad = 0
    if end < 0 or (end & 3) == 1:
        return None
    outlen = (end >> 2) * 3 + (((end & 3) * 3) >> 2)
    out = PyBytes_FromStringAndSize(NULL, outlen)
    d = <uint8_t*>PyBytes_AS_STRING(out)
    o = 0
    i = 0
    while i + 4 <= end:
        g = _D0[s[i]] | _D1[s[i + 1]] | _D2[s[i + 2]] | _D3[s[i + 3]]
        gbad |= g
        d[o] = <uint8_t>(g >> 16)
        d[o + 1] = <uint8_t>(g >> 8)
        d[o + 2] = <uint8_t>g
        o += 3
        i += 4
    if gbad >> 24:
        return None
    if end - i >= 2:
        a = _B64[s[i]]
        b = _B64[s[i + 1]]
        bad |= a | b
        d[o] = <uint8_t>((a << 2) | (b >> 4))
        if end - i == 3:
            c = _B64[s[i + 2]]
            bad |= c
            d[o + 1] = <uint8_t>(((b & 15) << 4) | (c >> 2))
    if bad < 0:
        return None
    return out


cdef object _b64_error(const uint8_t* s, Py_ssize_t n):
    """The FrameError for text _b64_try refused: the first bad character, else the length."""
    cdef Py_ssize_t end = _b64_end(s, n), i
    for i in range(end):
        if _B64[s[i]] < 0:
            return FrameError("bad_base64", i, f"character {chr(s[i])!r} at {i} is not base64")
    return FrameError(
        "bad_base64", end, f"base64 of {end} characters cannot be complete (length mod 4 is 1)"
    )


def b64decode_tolerant(text):
    """Decode base64 as forwarders write it: standard or URL-safe, padded or not."""
    if not isinstance(text, str):
        raise TypeError(f"base64 text must be str, not {type(text).__name__}")
    return _b64_decode(text)


# ---------------------------------------------------------------------------- JSON fast path

cdef struct Cur:
    const uint8_t* p
    const uint8_t* end
    bint bail

# Keys repeat in every rxpk ("tmst", "freq", ...): keep one str per key, like orjson does.
cdef PyObject* _keycache[512]
cdef PyObject* _valcache[512]
for _i in range(512):
    _keycache[_i] = NULL
    _valcache[_i] = NULL


cdef inline void _ws(Cur* c) noexcept nogil:
    # Forwarders write compact JSON: one compare (nothing at or below ' ') settles most calls.
    while c.p < c.end and c.p[0] <= 32 and (
        c.p[0] == 32 or c.p[0] == 10 or c.p[0] == 13 or c.p[0] == 9
    ):
        c.p += 1


cdef inline object _ascii(const uint8_t* s, Py_ssize_t n):
    """A str from bytes already checked to be printable ASCII (no decoder pass needed)."""
    out = PyUnicode_New(n, 127)
    memcpy(PyUnicode_DATA(out), s, n)
    return out


# Exact powers of ten as doubles (10**22 is the last one a double holds exactly).
cdef uint64_t _IPOW10[9]
_IPOW10[0] = 1
for _i in range(1, 9):
    _IPOW10[_i] = _IPOW10[_i - 1] * 10
cdef double _POW10[23]
_POW10[0] = 1.0
for _i in range(1, 23):
    _POW10[_i] = _POW10[_i - 1] * 10.0


cdef object _jkey(Cur* c):
    cdef const uint8_t* start = c.p + 1
    cdef const uint8_t* q = _str_end(c, start)
    cdef Py_ssize_t n
    if q == NULL:
        c.bail = True
        return None
    n = q - start
    c.p = q + 1
    if n > 24:
        return _ascii(start, n)
    return _cached(_keycache, start, n)


cdef inline object _cached(PyObject** cache, const uint8_t* start, Py_ssize_t n):
    """The cached str for these bytes (a 512-slot table, last writer wins on a collision)."""
    cdef unsigned int h = 0
    cdef Py_ssize_t i
    cdef PyObject* hit
    for i in range(n):
        h = h * 33 + start[i]
    h = (h ^ (h >> 9) ^ <unsigned int>n) & 511
    hit = cache[h]
    if hit != NULL and PyUnicode_GET_LENGTH(<object>hit) == n and memcmp(PyUnicode_DATA(<object>hit), start, n) == 0:
        return <object>hit
    key = _ascii(start, n)
    Py_INCREF(key)
    Py_XDECREF(hit)
    cache[h] = <PyObject*>key
    return key


# Bytes a plain JSON string may hold (ASCII from 0x20 up, DEL included, except '"' and
# '\\'): 1, else 0. It must agree byte for byte with schwebe_unplain8, which the same scan
# uses eight bytes at a time: a string is plain or not whatever its distance to the end
# of the buffer (a 100k-example differential run caught a DEL read both ways).
cdef uint8_t _PLAIN[256]
for _i in range(256):
    _PLAIN[_i] = 1 if 32 <= _i < 128 and _i != 34 and _i != 92 else 0


cdef extern from *:
    """
    #include <string.h>
    #include <stdint.h>
    /* Nonzero when one of the eight bytes of w cannot stand in a plain JSON string: below
       0x20, 0x80 and up, '"' or '\\' (the classic has-zero / has-less word tricks; no false
       negatives, and a hit only sends the caller to its byte loop). */
    static inline uint64_t schwebe_unplain8(uint64_t w) {
        const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
        uint64_t q = w ^ (ones * 0x22), b = w ^ (ones * 0x5C);
        return (((w - ones * 0x20) & ~w) | ((q - ones) & ~q) | ((b - ones) & ~b) | w) & highs;
    }
    static inline uint64_t schwebe_load8(const unsigned char* p) {
        uint64_t w;
        memcpy(&w, p, 8);
        return w;
    }
    /* High bit set in each byte of w that is not an ASCII digit; exact per byte (the sums
       stay inside their byte, so no carry crosses into a neighbour). */
    static inline uint64_t schwebe_nondigit8(uint64_t w) {
        const uint64_t x = w & 0x7F7F7F7F7F7F7F7FULL;
        return (w | (x + 0x4646464646464646ULL) | ~(x + 0x5050505050505050ULL))
            & 0x8080808080808080ULL;
    }
    /* Index of the lowest flagged byte of a nonzero mask (words are loaded little-endian, so
       that is the first such byte in memory). The lowest flag of the tricks above is exact. */
    static inline int schwebe_first_byte(uint64_t m) {
    #if defined(__GNUC__)
        return __builtin_ctzll(m) >> 3;
    #else
        int i = 0;
        while (!(m & 0x80)) { m >>= 8; i++; }
        return i;
    #endif
    }
    /* Value of the n (1..8) ASCII digits at p, most significant first; 8 bytes readable.
       The digits move to the top of the word (zeros below them are leading zeros), then
       three multiply-and-shift steps fold pairs, quads and the two halves (SWAR). */
    static inline uint64_t schwebe_digits8(const unsigned char* p, int n) {
        uint64_t w;
        memcpy(&w, p, 8);
        w = (w & 0x0F0F0F0F0F0F0F0FULL) << (8 * (8 - n));
        w = (w * 2561) >> 8;
        w = ((w & 0x00FF00FF00FF00FFULL) * 6553601) >> 16;
        return ((w & 0x0000FFFF0000FFFFULL) * 42949672960001ULL) >> 32;
    }
    """
    uint64_t _unplain8 "schwebe_unplain8"(uint64_t w) noexcept nogil
    uint64_t _load8 "schwebe_load8"(const uint8_t* p) noexcept nogil
    uint64_t _nondigit8 "schwebe_nondigit8"(uint64_t w) noexcept nogil
    int _first_byte "schwebe_first_byte"(uint64_t m) noexcept nogil
    uint64_t _digits8 "schwebe_digits8"(const uint8_t* p, int n) noexcept nogil


cdef extern from *:
    """
    /* Where SSE2 is (every x86-64), sixteen bytes per step: a signed compare below 0x20
       flags the control bytes and 0x80 and up at once, two more '"' and '\\'; the same set
       as _PLAIN and schwebe_unplain8 (tests check every byte at every distance from the end).
       Returns the first flagged byte (*hit = 1) or where fewer than 16 bytes remain. */
    #if defined(__SSE2__) && defined(__GNUC__)
    #include <emmintrin.h>
    static inline const unsigned char* schwebe_plain_run16(
            const unsigned char* q, const unsigned char* end, int* hit) {
        const __m128i lo = _mm_set1_epi8(0x20), quote = _mm_set1_epi8(0x22),
                      bslash = _mm_set1_epi8(0x5C);
        while (q + 16 <= end) {
            __m128i v = _mm_loadu_si128((const __m128i*)q);
            int m = _mm_movemask_epi8(_mm_or_si128(
                _mm_cmplt_epi8(v, lo),
                _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, bslash))));
            if (m) {
                *hit = 1;
                return q + __builtin_ctz((unsigned int)m);
            }
            q += 16;
        }
        *hit = 0;
        return q;
    }
    #else
    static inline const unsigned char* schwebe_plain_run16(
            const unsigned char* q, const unsigned char* end, int* hit) {
        (void)end;
        *hit = 0;
        return q;
    }
    #endif
    """
    const uint8_t* _plain_run16 "schwebe_plain_run16"(const uint8_t* q, const uint8_t* end, int* hit) noexcept nogil


cdef inline const uint8_t* _str_end(Cur* c, const uint8_t* start) noexcept nogil:
    """End quote of a plain string (printable ASCII, no escapes); NULL means "not plain".

    Sixteen bytes per step with SSE2, eight while they stay inside the cursor, then one
    table load per byte. The byte loop needs no bound: every cursor ends inside a bytes
    object, whose buffer always ends with a NUL byte (not plain), so the scan stops there at
    the latest.
    """
    cdef uint64_t m
    cdef int hit = 0
    cdef const uint8_t* q = _plain_run16(start, c.end, &hit)
    if not hit:
        while q + 8 <= c.end:
            m = _unplain8(_load8(q))
            if m:  # the first flagged byte is exact: jump there, no byte loop (and its mispredict)
                q += _first_byte(m)
                break
            q += 8
        else:
            while _PLAIN[q[0]]:
                q += 1
    if q >= c.end or q[0] != 34:
        return NULL
    return q


cdef object _jstring(Cur* c):
    cdef const uint8_t* start = c.p + 1
    cdef const uint8_t* q = _str_end(c, start)
    if q == NULL:
        c.bail = True
        return None
    c.p = q + 1
    if q - start <= 12:  # modu, datr, codr repeat in every rxpk: share their str objects
        return _cached(_valcache, start, q - start)
    return _ascii(start, q - start)


cdef struct Num:
    bint isfloat
    int64_t i
    double d


cdef inline bint _digit(uint8_t ch) noexcept nogil:
    return <unsigned int>(ch - 48) < 10


cdef double _slow_double(const uint8_t* s, Py_ssize_t n) noexcept:
    """A decimal too long for the exact fast path: CPython's correctly rounded conversion."""
    cdef char buf[32]
    memcpy(buf, s, n)
    buf[n] = 0
    return PyOS_string_to_double(buf, NULL, NULL)


cdef inline bint _fast_num(Cur* c, const uint8_t* q, bint neg, Num* o) noexcept nogil:
    """The common short number (up to 7 integer and 7 fraction digits) a word at a time.

    q is past the sign, with 16 bytes readable before c.end. False means "not this kind"
    (c untouched): _scan_num's byte loops then decide, so both give the same result.
    """
    cdef uint64_t m = _nondigit8(_load8(q)), iv
    cdef int ni = _first_byte(m) if m else 8, nf
    cdef const uint8_t* r
    if ni == 0 or ni == 8 or (q[0] == 48 and ni > 1):
        return False
    iv = _digits8(q, ni)
    r = q + ni
    if r[0] != 46:  # '.'
        if (r[0] | 0x20) == 101:
            return False
        o.isfloat = False
        o.i = -<int64_t>iv if neg else <int64_t>iv
        c.p = r
        return True
    m = _nondigit8(_load8(r + 1))
    nf = _first_byte(m) if m else 8
    if nf == 0 or nf == 8 or ni + nf > 15 or (r[1 + nf] | 0x20) == 101:
        return False
    # the same mantissa and division as _scan_num: the same (correctly rounded) double
    o.isfloat = True
    o.d = <double>(iv * _IPOW10[nf] + _digits8(r + 1, nf)) / _POW10[nf]
    if neg:
        o.d = -o.d
    c.p = r + 1 + nf
    return True


cdef inline bint _scan_num(Cur* c, Num* o) noexcept:
    """One JSON number of the plain kind (no exponent, at most 18 integer chars, 24 in all).

    Returns False (and sets bail) for anything else: the general parser decides those. The
    digit loops need no bound: a cursor ends inside a bytes object, whose buffer ends with a
    NUL (not a digit); a run that crossed c.end is refused after the loop.
    """
    cdef const uint8_t* start = c.p
    cdef const uint8_t* q = c.p
    cdef bint neg = q[0] == 45  # '-'
    cdef uint64_t m = 0         # every digit, integer and fraction, as one integer
    cdef int nd, frac = 0
    q += neg
    if q + 16 <= c.end and _fast_num(c, q, neg, o):
        return True
    if q[0] == 48:  # a leading '0' stands alone
        q += 1
    elif <unsigned int>(q[0] - 49) < 9:
        while _digit(q[0]):
            m = m * 10 + (q[0] - 48)
            q += 1
        if q - start > 18:  # stays far inside int64; longer ones go to the general parser
            c.bail = True
            return False
    else:
        c.bail = True
        return False
    nd = <int>(q - start) - neg
    o.isfloat = q[0] == 46  # '.'
    if o.isfloat:
        q += 1
        if not _digit(q[0]):
            c.bail = True
            return False
        while _digit(q[0]):
            m = m * 10 + (q[0] - 48)  # may wrap for long fractions: then nd > 15, unused
            q += 1
            frac += 1
        nd += frac
    # exponents never appear in rxpk: not worth it
    if q > c.end or (q[0] | 0x20) == 101 or q - start > 24:
        c.bail = True
        return False
    c.p = q
    if not o.isfloat:
        o.i = -<int64_t>m if neg else <int64_t>m
    elif nd <= 15:
        # < 10**15 < 2**53 as mantissa, over an exact power of ten: correctly rounded
        # (Clinger's fast path), the same double any correct parser gives.
        o.d = <double>m / _POW10[frac]
        if neg:
            o.d = -o.d
    else:
        o.d = _slow_double(start, q - start)
    return True


cdef inline Py_ssize_t _digit_run(const uint8_t* q, const uint8_t* end) noexcept nogil:
    """Length of the run of ASCII digits at q: a word per step while 8 bytes stay before end.

    The byte loop needs no bound (a bytes buffer ends with a NUL); a run that crosses end is
    refused by the caller.
    """
    cdef const uint8_t* s = q
    cdef uint64_t m
    if q + 2 <= end and not _digit(q[1]):  # most rxpk numbers are one digit (chan, stat...)
        return _digit(q[0])
    while q + 8 <= end:
        m = _nondigit8(_load8(q))
        if m:
            return (q - s) + _first_byte(m)
        q += 8
    while _digit(q[0]):
        q += 1
    return q - s


cdef inline bint _check_num(Cur* c) noexcept nogil:
    """Check a number as _scan_num would, without its value (most rxpk numbers are not needed).

    The same grammar and limits; digit runs are measured a word at a time, which spares the
    mispredicted exit of a byte loop on every number.
    """
    cdef const uint8_t* start = c.p
    cdef const uint8_t* q = c.p
    cdef bint neg = q[0] == 45  # '-'
    cdef Py_ssize_t ni, nf
    q += neg
    ni = _digit_run(q, c.end)
    if ni == 0 or (q[0] == 48 and ni > 1) or neg + ni > 18:
        c.bail = True
        return False
    q += ni
    if q[0] == 46:  # '.'
        nf = _digit_run(q + 1, c.end)
        if nf == 0:
            c.bail = True
            return False
        q += 1 + nf
    if q > c.end or (q[0] | 0x20) == 101 or q - start > 24:
        c.bail = True
        return False
    c.p = q
    return True


cdef object _jnumber(Cur* c):
    cdef Num o
    if not _scan_num(c, &o):
        return None
    if o.isfloat:
        return o.d
    return o.i


cdef object _jvalue(Cur* c, int depth):
    cdef uint8_t ch
    _ws(c)
    if c.p >= c.end:
        c.bail = True
        return None
    ch = c.p[0]
    if ch == 34:
        return _jstring(c)
    if ch == 45 or 48 <= ch <= 57:
        return _jnumber(c)
    if ch == 123:
        return _jobject(c, depth + 1)
    if ch == 91:
        return _jarray(c, depth + 1)
    if ch == 116 and c.end - c.p >= 4 and memcmp(c.p, b"true", 4) == 0:
        c.p += 4
        return True
    if ch == 102 and c.end - c.p >= 5 and memcmp(c.p, b"false", 5) == 0:
        c.p += 5
        return False
    if ch == 110 and c.end - c.p >= 4 and memcmp(c.p, b"null", 4) == 0:
        c.p += 4
        return None
    c.bail = True
    return None


cdef object _jobject(Cur* c, int depth, Py_ssize_t size_hint=0):
    """Build one object; ``size_hint`` (keys counted by the scan) presizes its dict."""
    cdef Py_ssize_t before, n
    cdef int which
    if depth > 16:
        c.bail = True
        return None
    c.p += 1
    d = _PyDict_NewPresized(size_hint) if size_hint > 5 else {}
    _ws(c)
    if c.p < c.end and c.p[0] == 125:
        c.p += 1
        return d
    while True:
        _ws(c)
        if c.p >= c.end or c.p[0] != 34:
            c.bail = True
            return None
        # A known key written compactly is a ready str (hash cached): no bytes to look at.
        which = _key_at(c.p + 1, &n) if c.p + 9 <= c.end else K_NONE
        if which != K_NONE:
            k = <object>_KEY_STR[which]
            c.p += n + 3  # '"', the name, '"', ':'
        else:
            k = _jkey(c)
            if c.bail:
                return None
            _ws(c)
            if c.p >= c.end or c.p[0] != 58:
                c.bail = True
                return None
            c.p += 1
        v = _jvalue(c, depth)
        if c.bail:
            return None
        before = PyDict_GET_SIZE(d)
        PyDict_SetItem(d, k, v)
        if PyDict_GET_SIZE(d) == before:  # duplicate key: leave the rules to the general parser
            c.bail = True
            return None
        _ws(c)
        if c.p < c.end and c.p[0] == 44:
            c.p += 1
            continue
        if c.p < c.end and c.p[0] == 125:
            c.p += 1
            return d
        c.bail = True
        return None


cdef object _jarray(Cur* c, int depth):
    if depth > 16:
        c.bail = True
        return None
    c.p += 1
    out = []
    _ws(c)
    if c.p < c.end and c.p[0] == 93:
        c.p += 1
        return out
    while True:
        v = _jvalue(c, depth)
        if c.bail:
            return None
        out.append(v)
        _ws(c)
        if c.p < c.end and c.p[0] == 44:
            c.p += 1
            continue
        if c.p < c.end and c.p[0] == 93:
            c.p += 1
            return out
        c.bail = True
        return None


cdef object _fast_body(bytes datagram, Py_ssize_t offset, bint* ok):
    cdef const uint8_t* base = <const uint8_t*>PyBytes_AS_STRING(datagram)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(datagram)
    cdef Cur c
    while n > offset and base[n - 1] == 0:
        n -= 1
    c.p = base + offset
    c.end = base + n
    c.bail = False
    ok[0] = False
    _ws(&c)
    if c.p < c.end and c.p[0] == 123:
        body = _jobject(&c, 0)
        if not c.bail:
            _ws(&c)
            if c.p == c.end:
                ok[0] = True
                return body
    return None


def _fast_scan(bytes body):
    """The fast path alone (tests use it to prove common layouts never reach the fallback)."""
    cdef bint ok
    out = _fast_body(body, 0, &ok)
    return out if ok else None


cdef object _load_body(bytes datagram, Py_ssize_t offset):
    cdef bint ok
    body = _fast_body(datagram, offset, &ok)
    if ok:
        return body
    return _load_json_body(datagram[offset:], offset)


# ---------------------------------------------------------------------------- PUSH_DATA scan
#
# decode_push_data validates the whole body with the same grammar as the builder above but
# creates no objects for the rxpk: it notes where each rxpk object lies and the values the
# gateway needs at once (data, size, rssi, lsnr, freq, datr). `Rxpk.fields` builds the dict
# from that span when first asked for, so frames that are filtered out never cost a dict.

cdef enum:  # what a scanned value is
    V_ABSENT = 0
    V_STR = 1
    V_INT = 2
    V_FLOAT = 3
    V_NULL = 4
    V_OTHER = 5   # true, false, object, array

cdef struct Val:
    int kind
    const uint8_t* at     # the value's first byte
    const uint8_t* p      # string contents (V_STR)
    Py_ssize_t n          # string length (V_STR)
    int64_t i
    double d

cdef extern from *:
    """
    #include <stdint.h>
    /* Keys the packet forwarders write in rxpk (and in its rsig objects), numbered so the
       scan can tell a key with one word compare instead of a hash and string compares. The
       first six are the values decode_push_data needs at once (RxSpan.vals). */
    enum { SCHWEBE_K_NONE, SCHWEBE_K_DATA, SCHWEBE_K_SIZE, SCHWEBE_K_RSSI, SCHWEBE_K_LSNR,
           SCHWEBE_K_FREQ, SCHWEBE_K_DATR, SCHWEBE_K_NOTED_END = SCHWEBE_K_DATR,
           SCHWEBE_K_JVER, SCHWEBE_K_TMST, SCHWEBE_K_TIME, SCHWEBE_K_TMMS, SCHWEBE_K_CHAN,
           SCHWEBE_K_RFCH, SCHWEBE_K_STAT, SCHWEBE_K_MODU, SCHWEBE_K_CODR, SCHWEBE_K_FOFF,
           SCHWEBE_K_RSIG, SCHWEBE_K_AESK, SCHWEBE_K_MID, SCHWEBE_K_BRD, SCHWEBE_K_ANT,
           SCHWEBE_K_RSSIS, SCHWEBE_K_FTIME, SCHWEBE_K_RSSIC, SCHWEBE_K_ETIME, SCHWEBE_K_COUNT };
    #define SCHWEBE_W4(a, b, c, d) \
        ((uint32_t)(a) | (uint32_t)(b) << 8 | (uint32_t)(c) << 16 | (uint32_t)(d) << 24)
    static inline int schwebe_key_id(const unsigned char* k, Py_ssize_t n) {
        uint32_t w;
        if (n == 3) {
            w = SCHWEBE_W4(k[0], k[1], k[2], 0);
            switch (w) {
            case SCHWEBE_W4('m', 'i', 'd', 0): return SCHWEBE_K_MID;
            case SCHWEBE_W4('b', 'r', 'd', 0): return SCHWEBE_K_BRD;
            case SCHWEBE_W4('a', 'n', 't', 0): return SCHWEBE_K_ANT;
            }
            return SCHWEBE_K_NONE;
        }
        if (n != 4 && n != 5) return SCHWEBE_K_NONE;
        w = SCHWEBE_W4(k[0], k[1], k[2], k[3]);
        if (n == 5) {
            if (w == SCHWEBE_W4('r', 's', 's', 'i') && k[4] == 's') return SCHWEBE_K_RSSIS;
            if (w == SCHWEBE_W4('r', 's', 's', 'i') && k[4] == 'c') return SCHWEBE_K_RSSIC;
            if (w == SCHWEBE_W4('f', 't', 'i', 'm') && k[4] == 'e') return SCHWEBE_K_FTIME;
            if (w == SCHWEBE_W4('e', 't', 'i', 'm') && k[4] == 'e') return SCHWEBE_K_ETIME;
            return SCHWEBE_K_NONE;
        }
        switch (w) {
        case SCHWEBE_W4('d', 'a', 't', 'a'): return SCHWEBE_K_DATA;
        case SCHWEBE_W4('s', 'i', 'z', 'e'): return SCHWEBE_K_SIZE;
        case SCHWEBE_W4('r', 's', 's', 'i'): return SCHWEBE_K_RSSI;
        case SCHWEBE_W4('l', 's', 'n', 'r'): return SCHWEBE_K_LSNR;
        case SCHWEBE_W4('f', 'r', 'e', 'q'): return SCHWEBE_K_FREQ;
        case SCHWEBE_W4('d', 'a', 't', 'r'): return SCHWEBE_K_DATR;
        case SCHWEBE_W4('j', 'v', 'e', 'r'): return SCHWEBE_K_JVER;
        case SCHWEBE_W4('t', 'm', 's', 't'): return SCHWEBE_K_TMST;
        case SCHWEBE_W4('t', 'i', 'm', 'e'): return SCHWEBE_K_TIME;
        case SCHWEBE_W4('t', 'm', 'm', 's'): return SCHWEBE_K_TMMS;
        case SCHWEBE_W4('c', 'h', 'a', 'n'): return SCHWEBE_K_CHAN;
        case SCHWEBE_W4('r', 'f', 'c', 'h'): return SCHWEBE_K_RFCH;
        case SCHWEBE_W4('s', 't', 'a', 't'): return SCHWEBE_K_STAT;
        case SCHWEBE_W4('m', 'o', 'd', 'u'): return SCHWEBE_K_MODU;
        case SCHWEBE_W4('c', 'o', 'd', 'r'): return SCHWEBE_K_CODR;
        case SCHWEBE_W4('f', 'o', 'f', 'f'): return SCHWEBE_K_FOFF;
        case SCHWEBE_W4('r', 's', 'i', 'g'): return SCHWEBE_K_RSIG;
        case SCHWEBE_W4('a', 'e', 's', 'k'): return SCHWEBE_K_AESK;
        }
        return SCHWEBE_K_NONE;
    }
    /* Id of a known key written the compact way, `name":`, starting at k (8 readable bytes);
       sets *n to the name's length. One masked word compare recognises the key, finds its
       end and checks the colon at once. 0 for anything else (the general path decides). */
    #define SCHWEBE_W8(a, b, c, d, e, f, g) \
        ((uint64_t)SCHWEBE_W4(a, b, c, d) | (uint64_t)SCHWEBE_W4(e, f, g, 0) << 32)
    static inline int schwebe_key_at(const unsigned char* k, Py_ssize_t* n) {
        uint64_t w;
        memcpy(&w, k, 8);
        if (((w >> 32) & 0xFFFF) == SCHWEBE_W4('"', ':', 0, 0)) {
            *n = 4;
            w = SCHWEBE_W4(k[0], k[1], k[2], k[3]);
            switch (w) {
            case SCHWEBE_W4('d', 'a', 't', 'a'): return SCHWEBE_K_DATA;
            case SCHWEBE_W4('s', 'i', 'z', 'e'): return SCHWEBE_K_SIZE;
            case SCHWEBE_W4('r', 's', 's', 'i'): return SCHWEBE_K_RSSI;
            case SCHWEBE_W4('l', 's', 'n', 'r'): return SCHWEBE_K_LSNR;
            case SCHWEBE_W4('f', 'r', 'e', 'q'): return SCHWEBE_K_FREQ;
            case SCHWEBE_W4('d', 'a', 't', 'r'): return SCHWEBE_K_DATR;
            case SCHWEBE_W4('j', 'v', 'e', 'r'): return SCHWEBE_K_JVER;
            case SCHWEBE_W4('t', 'm', 's', 't'): return SCHWEBE_K_TMST;
            case SCHWEBE_W4('t', 'i', 'm', 'e'): return SCHWEBE_K_TIME;
            case SCHWEBE_W4('t', 'm', 'm', 's'): return SCHWEBE_K_TMMS;
            case SCHWEBE_W4('c', 'h', 'a', 'n'): return SCHWEBE_K_CHAN;
            case SCHWEBE_W4('r', 'f', 'c', 'h'): return SCHWEBE_K_RFCH;
            case SCHWEBE_W4('s', 't', 'a', 't'): return SCHWEBE_K_STAT;
            case SCHWEBE_W4('m', 'o', 'd', 'u'): return SCHWEBE_K_MODU;
            case SCHWEBE_W4('c', 'o', 'd', 'r'): return SCHWEBE_K_CODR;
            case SCHWEBE_W4('f', 'o', 'f', 'f'): return SCHWEBE_K_FOFF;
            case SCHWEBE_W4('r', 's', 'i', 'g'): return SCHWEBE_K_RSIG;
            case SCHWEBE_W4('a', 'e', 's', 'k'): return SCHWEBE_K_AESK;
            }
            return SCHWEBE_K_NONE;
        }
        if (k[3] == '"' && k[4] == ':') {
            *n = 3;
            return schwebe_key_id(k, 3);
        }
        if (k[5] == '"' && k[6] == ':') {
            *n = 5;
            return schwebe_key_id(k, 5);
        }
        return SCHWEBE_K_NONE;
    }
    """
    enum:
        K_NONE "SCHWEBE_K_NONE"
        K_DATA "SCHWEBE_K_DATA"
        K_SIZE "SCHWEBE_K_SIZE"
        K_RSSI "SCHWEBE_K_RSSI"
        K_LSNR "SCHWEBE_K_LSNR"
        K_FREQ "SCHWEBE_K_FREQ"
        K_DATR "SCHWEBE_K_DATR"
        K_NOTED_END "SCHWEBE_K_NOTED_END"
        K_COUNT "SCHWEBE_K_COUNT"
    int _key_id "schwebe_key_id"(const uint8_t* k, Py_ssize_t n) noexcept nogil
    int _key_at "schwebe_key_at"(const uint8_t* k, Py_ssize_t* n) noexcept nogil

# The key str for each id, in the C enum's order (tests check the table against _key_id).
_KEY_NAMES = (
    "", "data", "size", "rssi", "lsnr", "freq", "datr", "jver", "tmst", "time", "tmms", "chan",
    "rfch", "stat", "modu", "codr", "foff", "rsig", "aesk", "mid", "brd", "ant", "rssis", "ftime",
    "rssic", "etime",
)
assert len(_KEY_NAMES) == K_COUNT
cdef PyObject* _KEY_STR[64]
for _i, _c in enumerate(_KEY_NAMES):
    _KEY_STR[_i] = <PyObject*>_c  # the tuple keeps them alive


def _key_ids():
    """(name, id the scan gives it) for every known key: a test holds the two tables together."""
    return [(name, _key_id(name.encode(), len(name))) for name in _KEY_NAMES[1:]]


cdef struct RxSpan:
    const uint8_t* start  # '{' of the object, NULL when the element is not an object
    const uint8_t* end    # just past '}'
    Val vals[K_NOTED_END + 1]  # by key id; [K_NONE] takes the values of other keys
    int nkeys             # keys in the object (to presize its dict)

cdef enum:
    MAX_KEYS = 64
    SMALL_RX = 8  # rxpk kept on the stack; more take the heap (the frame stays under a page)


cdef inline void _clear_span(RxSpan* rx) noexcept nogil:
    """Mark every noted value absent (cheaper than zeroing the whole span)."""
    cdef int i
    rx.start = NULL
    rx.end = NULL
    rx.nkeys = 0
    for i in range(K_NOTED_END + 1):
        rx.vals[i].kind = V_ABSENT


cdef inline bint _note_str(Cur* c, Val* out) noexcept nogil:
    """Check the plain string at c.p (its opening quote) and note where its contents lie."""
    cdef const uint8_t* q = _str_end(c, c.p + 1)
    if q == NULL:
        c.bail = True
        return False
    out.kind = V_STR
    out.at = c.p
    out.p = c.p + 1
    out.n = q - (c.p + 1)
    c.p = q + 1
    return True


cdef inline bint _note_num(Cur* c, Val* out) noexcept:
    """Check the number at c.p and note its value (the gateway needs rssi, lsnr, freq, size)."""
    cdef Num num
    out.at = c.p
    if not _scan_num(c, &num):
        return False
    if num.isfloat:
        out.kind = V_FLOAT
        out.d = num.d
    else:
        out.kind = V_INT
        out.i = num.i
    return True


cdef bint _varray(Cur* c, int depth) except -1:
    cdef Val v
    if depth > 16:
        c.bail = True
        return False
    c.p += 1
    _ws(c)
    if c.p < c.end and c.p[0] == 93:
        c.p += 1
        return True
    while True:
        if not _vvalue(c, depth, &v):
            return False
        _ws(c)
        if c.p < c.end and c.p[0] == 44:
            c.p += 1
            continue
        if c.p < c.end and c.p[0] == 93:
            c.p += 1
            return True
        c.bail = True
        return False


cdef inline bint _vvalue(Cur* c, int depth, Val* out) except -1:
    """Check one value without building it; note what it is in ``out``."""
    cdef uint8_t ch
    _ws(c)
    if c.p >= c.end:
        c.bail = True
        return False
    ch = c.p[0]
    out.at = c.p
    if ch == 34:
        return _note_str(c, out)
    if ch == 45 or _digit(ch):
        return _note_num(c, out)
    if ch == 123:
        out.kind = V_OTHER
        return _vobject(c, depth + 1, NULL)
    if ch == 91:
        out.kind = V_OTHER
        return _varray(c, depth + 1)
    if ch == 116 and c.end - c.p >= 4 and memcmp(c.p, b"true", 4) == 0:
        c.p += 4
        out.kind = V_OTHER
        return True
    if ch == 102 and c.end - c.p >= 5 and memcmp(c.p, b"false", 5) == 0:
        c.p += 5
        out.kind = V_OTHER
        return True
    if ch == 110 and c.end - c.p >= 4 and memcmp(c.p, b"null", 4) == 0:
        c.p += 4
        out.kind = V_NULL
        return True
    c.bail = True
    return False


cdef extern from *:
    """
    #define SCHWEBE_FNV_PRIME 0x100000001B3ULL
    #define SCHWEBE_GOLDEN 0x9E3779B97F4A7C15ULL
    """
    const uint64_t SCHWEBE_FNV_PRIME
    const uint64_t SCHWEBE_GOLDEN


cdef inline bint _dup_key(const uint8_t** kp, Py_ssize_t* kn, int nkeys, uint64_t* bloom,
                          const uint8_t* k, Py_ssize_t n) noexcept nogil:
    """True if key k was seen before in this object; O(1) unless the 64-bit filter collides."""
    cdef uint64_t fp = <uint64_t>n * SCHWEBE_FNV_PRIME
    cdef Py_ssize_t j
    cdef int i
    for j in range(n if n < 8 else 8):
        fp = (fp ^ k[j]) * SCHWEBE_FNV_PRIME
    if n > 8:
        fp ^= k[n - 1]
    cdef uint64_t bit = (<uint64_t>1) << ((fp * SCHWEBE_GOLDEN) >> 58)
    if bloom[0] & bit:
        for i in range(nkeys):
            if kn[i] == n and memcmp(kp[i], k, n) == 0:
                return True
    bloom[0] |= bit
    return False


cdef bint _vobject(Cur* c, int depth, RxSpan* rx) except -1:
    """Check one object (keys unique, as the builder demands); fill ``rx`` if it is an rxpk.

    Known keys are told apart by id (a bit per id finds duplicates); only other keys need the
    filter-and-compare duplicate check.
    """
    cdef const uint8_t* kp[MAX_KEYS]
    cdef Py_ssize_t kn[MAX_KEYS]
    cdef int nkeys = 0, nother = 0, which
    cdef uint64_t bloom = 0, seen = 0, bit
    cdef const uint8_t* k
    cdef const uint8_t* q
    cdef Py_ssize_t n
    cdef Val v
    cdef Val* slot
    if depth > 16:
        c.bail = True
        return False
    c.p += 1
    _ws(c)
    if c.p < c.end and c.p[0] == 125:
        c.p += 1
        return True
    while True:
        _ws(c)
        if c.p >= c.end or c.p[0] != 34:
            c.bail = True
            return False
        k = c.p + 1
        which = _key_at(k, &n) if k + 8 <= c.end else K_NONE
        if which != K_NONE:  # the common case: a known key, compact; the colon is checked
            c.p = k + n + 2
        else:
            q = _str_end(c, k)
            if q == NULL:
                c.bail = True
                return False
            n = q - k
            which = _key_id(k, n)
            c.p = q + 1
            _ws(c)
            if c.p >= c.end or c.p[0] != 58:
                c.bail = True
                return False
            c.p += 1
        if which != K_NONE:
            bit = (<uint64_t>1) << which
            if seen & bit:
                c.bail = True  # duplicate key: the general parser's rules apply
                return False
            seen |= bit
        else:
            # Only these keys need room in kp/kn (known ones are at most one each), so the
            # limit is checked here, off the common path.
            if nother == MAX_KEYS or _dup_key(kp, kn, nother, &bloom, k, n):
                c.bail = True
                return False
            kp[nother] = k
            kn[nother] = n
            nother += 1
        nkeys += 1
        # Noted values go straight to their slot, the rest to a scratch one. Strings and
        # numbers (nearly every value of an rxpk) are handled right here: a call per value
        # was a fifth of the scan; objects, arrays and literals take _vvalue.
        slot = &rx.vals[which] if rx != NULL and which <= K_NOTED_END else &v
        _ws(c)
        if c.p >= c.end:
            c.bail = True
            return False
        if c.p[0] == 34:
            if not _note_str(c, slot):
                return False
        elif c.p[0] == 45 or _digit(c.p[0]):
            if slot == &v:  # not noted: only its grammar matters
                if not _check_num(c):
                    return False
                v.kind = V_INT  # (a scratch slot: any number kind will do)
            elif not _note_num(c, slot):
                return False
        elif not _vvalue(c, depth, slot):
            return False
        _ws(c)
        if c.p < c.end and c.p[0] == 44:
            c.p += 1
            continue
        if c.p < c.end and c.p[0] == 125:
            c.p += 1
            if rx != NULL:
                rx.nkeys = nkeys
            return True
        c.bail = True
        return False


# ---------------------------------------------------------------------------- rxpk, the usual shape
#
# What packet forwarders write is one shape: a flat rxpk, compact, known keys, plain strings,
# short numbers. _vrxpk_fast checks just that shape in fewer steps than _vobject (no whitespace
# to skip, no calls, a known key's length and id from predicted branches) and notes the same
# values; for anything else it answers False, having moved nothing but ``rx``, and the caller
# has _vobject start the same object over. So the two can differ in speed, never in what they
# accept or note (tests/test_frames_differential.py runs both on the same objects).
#
# Measured with callgrind and perf on the bench's datagrams: the scan is bound by the chain
# from one value's end to the next key, not by instruction count. Lengths come from branches
# wherever a key's values keep theirs from rxpk to rxpk (the branches are then predicted and
# the next key is read at once); a table lookup or a count of digits in a word, exact as they
# are, put their loads and multiplies into that chain and were slower for fewer instructions.

cdef const uint8_t* _num_near_end(const uint8_t* s, const uint8_t* end, Val* out) noexcept:
    """_num_fast for a number with fewer than 16 bytes after it: _vobject's own functions."""
    cdef Cur t
    t.p = s
    t.end = end
    t.bail = False
    if not (_note_num(&t, out) if out != NULL else _check_num(&t)):
        return NULL
    return t.p


cdef inline const uint8_t* _num_fast(const uint8_t* p, const uint8_t* end, Val* out) noexcept:
    """End of the number at p if it is of the short usual kind, noted in ``out`` (when not
    NULL) exactly as _note_num would note it; NULL for any other (the caller gives up).

    Up to 15 integer digits, or up to 7 integer and 15 digits in all with a fraction; no
    exponent, 16 bytes readable after it (so no loop, no byte-wise exit); a number closer to
    the end takes _vobject's steps (_num_near_end).
    """
    cdef const uint8_t* s = p
    cdef const uint8_t* f
    cdef bint neg = p[0] == 45  # '-'
    cdef uint64_t m, iv
    cdef int ni, nf
    p += neg
    if p + 16 > end:  # the last value of a body: the general scan's own steps, exact
        return _num_near_end(s, end, out)
    if not _digit(p[0]):
        return NULL
    # Short runs are measured by branches: a key's numbers keep their length from one rxpk to
    # the next, so these are predicted and the scan moves on without waiting for the bytes
    # (a word's count of digits would be exact but sits in the chain from value to value).
    if not _digit(p[1]):
        ni = 1
    elif not _digit(p[2]):
        ni = 2
    elif not _digit(p[3]):
        ni = 3
    else:
        m = _nondigit8(_load8(p))
        if m:
            ni = _first_byte(m)
        else:
            m = _nondigit8(_load8(p + 8))
            if not m:
                return NULL
            ni = 8 + _first_byte(m)
    if p[0] == 48 and ni > 1:
        return NULL
    f = p + ni
    if f[0] == 46:  # '.': ni <= 7 keeps the fraction's word inside the 16 bytes
        if ni > 7 or not _digit(f[1]):
            return NULL
        if not _digit(f[2]):
            nf = 1
        elif not _digit(f[3]):
            nf = 2
        else:
            m = _nondigit8(_load8(f + 1))
            nf = _first_byte(m) if m else 8
        if nf == 8 or ni + nf > 15 or (f[1 + nf] | 0x20) == 101:
            return NULL
        if out != NULL:
            # the same mantissa over the same power of ten as _scan_num: the same double
            out.kind = V_FLOAT
            out.at = s
            out.d = <double>(_digits8(p, ni) * _IPOW10[nf] + _digits8(f + 1, nf)) / _POW10[nf]
            if neg:
                out.d = -out.d
        return f + 1 + nf
    if (f[0] | 0x20) == 101:  # 'e', 'E'
        return NULL
    if out != NULL:
        if ni <= 8:
            iv = _digits8(p, ni)
        else:
            iv = _digits8(p, 8) * _IPOW10[ni - 8] + _digits8(p + 8, ni - 8)
        out.kind = V_INT
        out.at = s
        out.i = -<int64_t>iv if neg else <int64_t>iv
    return f


cdef inline bint _vrxpk_fast(Cur* c, RxSpan* rx) noexcept:
    """Check the rxpk object at c.p ('{') if it has the usual shape, noting into ``rx`` what
    _vobject would; then c.p is past its '}'. False: not that shape, c.p untouched.

    c.end must point at a NUL byte (a datagram's end, or a trailing NUL of it): the scan
    then reads one byte past a value without a bound check, as nothing it wants is 0.
    """
    cdef const uint8_t* p = c.p + 1
    cdef const uint8_t* end = c.end
    cdef const uint8_t* q
    cdef uint64_t seen = 0, bit
    cdef int which, nkeys = 0
    cdef Py_ssize_t n = 0
    cdef Val* slot
    cdef uint8_t ch
    while True:
        if p[0] != 34 or p + 9 > end:  # '"'
            return False
        which = _key_at(p + 1, &n)
        if which == K_NONE:
            return False
        bit = (<uint64_t>1) << which
        if seen & bit:
            return False
        seen |= bit
        nkeys += 1
        p += n + 3  # '"', the name, '"', ':'
        slot = &rx.vals[which] if which <= K_NOTED_END else NULL
        ch = p[0]
        if ch == 34:
            q = _str_end(c, p + 1)
            if q == NULL:
                return False
            if slot != NULL:
                slot.kind = V_STR
                slot.at = p
                slot.p = p + 1
                slot.n = q - (p + 1)
            p = q + 1
        elif ch == 45 or _digit(ch):
            p = _num_fast(p, end, slot)
            if p == NULL:
                return False
        else:
            return False  # objects, arrays, true, false, null: _vobject
        if p[0] == 44:  # ','
            p += 1
            continue
        if p[0] == 125:  # '}'
            c.p = p + 1
            rx.nkeys = nkeys
            return True
        return False


def _rxpk_scan_both(bytes obj):
    """(usual-shape scan, general scan) of one rxpk object's text, each None where it refuses
    the text, else (offset past the object, its keys, the noted values): tests hold the first
    to the second (whatever the first accepts, the second must accept and note alike)."""
    cdef const uint8_t* base = <const uint8_t*>PyBytes_AS_STRING(obj)
    cdef Cur c
    cdef RxSpan rx
    cdef int k
    cdef bint ok
    out = []
    for fast in (True, False):
        c.p = base
        c.end = base + PyBytes_GET_SIZE(obj)  # the bytes' own NUL ends it, as in a datagram
        c.bail = False
        _clear_span(&rx)
        if c.p >= c.end or c.p[0] != 123:
            ok = False
        elif fast:
            ok = _vrxpk_fast(&c, &rx)
        else:
            ok = _vobject(&c, 2, &rx) and not c.bail
        if not ok:
            out.append(None)
            continue
        notes = []
        for k in range(1, K_NOTED_END + 1):
            kind = rx.vals[k].kind
            if kind == V_ABSENT:
                notes.append(None)
            elif kind == V_STR:
                notes.append((kind, rx.vals[k].at - base, rx.vals[k].p - base, rx.vals[k].n))
            elif kind == V_INT:
                notes.append((kind, rx.vals[k].at - base, rx.vals[k].i))
            elif kind == V_FLOAT:
                notes.append((kind, rx.vals[k].at - base, repr(rx.vals[k].d)))
            else:
                notes.append((kind, rx.vals[k].at - base))
        out.append((c.p - base, rx.nkeys, notes))
    return tuple(out)


cdef object _build_value(const uint8_t* p, const uint8_t* end, int depth):
    """Build the (already validated) value at ``p`` as the builder would at ``depth``."""
    cdef Cur c
    c.p = p
    c.end = end
    c.bail = False
    out = _jvalue(&c, depth)
    if c.bail:  # cannot happen for validated input; never trade correctness for it
        raise RuntimeError("validated rxpk no longer parses: please report this as a bug")
    return out


cdef object _build_rxpk(const uint8_t* p, const uint8_t* end, int nkeys):
    """The dict of a validated rxpk span, as the general builder makes it (depth 2)."""
    cdef Cur c
    c.p = p
    c.end = end
    c.bail = False
    out = _jobject(&c, 2, nkeys)
    if c.bail:  # cannot happen for validated input; never trade correctness for it
        raise RuntimeError("validated rxpk no longer parses: please report this as a bug")
    return out


cdef inline double _val_num(Val* v) noexcept:
    if v.kind == V_FLOAT:
        return v.d
    if v.kind == V_INT:
        return <double>v.i
    return NAN


cdef extern from *:
    """
    /* Ask for every cache line of a buffer at once: a datagram read from memory then costs
       about one miss, not one per line as the scan reaches it. */
    static inline void schwebe_prefetch_all(const unsigned char* p, Py_ssize_t n) {
    #if defined(__GNUC__)
        Py_ssize_t i;
        for (i = 0; i < n; i += 64) __builtin_prefetch(p + i, 0, 3);
        if (n) __builtin_prefetch(p + n - 1, 0, 3);
    #endif
    }
    """
    void _prefetch_all "schwebe_prefetch_all"(const uint8_t* p, Py_ssize_t n) noexcept nogil


cdef object _lazy_push(bytes dg, int version, int token, object eui):
    """PUSH_DATA from the scan; None when the body needs the general parser."""
    cdef const uint8_t* base = <const uint8_t*>PyBytes_AS_STRING(dg)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(dg)
    cdef Cur c
    cdef RxSpan small[SMALL_RX]
    cdef RxSpan* spans = small
    cdef RxSpan* heap = NULL
    cdef RxSpan* rx
    cdef int count = 0, nkeys = 0, i
    cdef const uint8_t* kp[MAX_KEYS]
    cdef Py_ssize_t kn[MAX_KEYS]
    cdef const uint8_t* k
    cdef const uint8_t* q
    cdef Py_ssize_t klen
    cdef Val tmp
    cdef bint seen_rxpk = False
    cdef uint64_t bloom = 0
    cdef Rxpk r
    cdef PushData out
    _prefetch_all(base, n)
    # Trailing NULs (some forwarders pad) are skipped after the body, not stripped before it:
    # reading the last byte first waited for that line before the scan could start. No
    # token takes a NUL, so the scan stops at the first one either way.
    c.p = base + 12
    c.end = base + n
    c.bail = False
    stat = None
    try:
        _ws(&c)
        if c.p >= c.end or c.p[0] != 123:
            return None
        c.p += 1
        _ws(&c)
        if c.p < c.end and c.p[0] == 125:
            c.p += 1
        else:
            while True:
                _ws(&c)
                if c.p >= c.end or c.p[0] != 34:
                    return None
                k = c.p + 1
                q = _str_end(&c, k)
                if q == NULL or nkeys == MAX_KEYS:
                    return None
                klen = q - k
                if _dup_key(kp, kn, nkeys, &bloom, k, klen):
                    return None
                kp[nkeys] = k
                kn[nkeys] = klen
                nkeys += 1
                c.p = q + 1
                _ws(&c)
                if c.p >= c.end or c.p[0] != 58:
                    return None
                c.p += 1
                _ws(&c)
                if klen == 4 and memcmp(k, b"rxpk", 4) == 0:
                    if c.p >= c.end or c.p[0] != 91:
                        return None  # null or not an array: the general path says what it means
                    seen_rxpk = True
                    c.p += 1
                    _ws(&c)
                    if c.p < c.end and c.p[0] == 93:
                        c.p += 1
                    else:
                        while True:
                            _ws(&c)
                            if count == C_MAX_RXPK:
                                return None  # too_many_rxpk comes from the general path
                            if count == SMALL_RX:
                                heap = <RxSpan*>PyMem_Malloc(C_MAX_RXPK * sizeof(RxSpan))
                                if heap == NULL:
                                    raise MemoryError()
                                memcpy(heap, small, SMALL_RX * sizeof(RxSpan))
                                spans = heap
                            rx = &spans[count]
                            _clear_span(rx)
                            if c.p < c.end and c.p[0] == 123:
                                rx.start = c.p
                                if not _vrxpk_fast(&c, rx):  # not the usual shape
                                    _clear_span(rx)
                                    rx.start = c.p
                                    if not _vobject(&c, 2, rx):
                                        return None
                                rx.end = c.p
                            elif not _vvalue(&c, 1, &tmp):
                                return None
                            count += 1
                            _ws(&c)
                            if c.p < c.end and c.p[0] == 44:
                                c.p += 1
                                continue
                            if c.p < c.end and c.p[0] == 93:
                                c.p += 1
                                break
                            return None
                elif klen == 4 and memcmp(k, b"stat", 4) == 0:
                    stat = _jvalue(&c, 0)
                    if c.bail:
                        return None
                elif not _vvalue(&c, 0, &tmp):
                    return None
                _ws(&c)
                if c.p < c.end and c.p[0] == 44:
                    c.p += 1
                    continue
                if c.p < c.end and c.p[0] == 125:
                    c.p += 1
                    break
                return None
        _ws(&c)
        while c.p < c.end and c.p[0] == 0:
            c.p += 1
        if c.p != c.end:
            return None
        if stat is not None and not isinstance(stat, dict):
            raise FrameError("bad_body", 12, "stat must be an object")
        out = PushData.__new__(PushData)
        out.version = version
        out.token = token
        out.gateway_eui = eui
        out.stat = stat
        rxpk = PyList_New(count)  # filled in place below: no append and regrowth per rxpk
        out.rxpk = rxpk
        for i in range(count):
            rx = &spans[i]
            if rx.start == NULL:
                bad = _rxpk({}, None, FrameError("bad_rxpk", i, f"rxpk[{i}] is not an object"))
                Py_INCREF(bad)
                PyList_SET_ITEM(rxpk, i, bad)
                continue
            r = Rxpk.__new__(Rxpk)
            r._src = dg
            r._start = rx.start - base
            r._end = rx.end - base
            r._nkeys = rx.nkeys
            r._meta = True
            r._rssi = _val_num(&rx.vals[K_RSSI])
            r._lsnr = _val_num(&rx.vals[K_LSNR])
            r._freq = _val_num(&rx.vals[K_FREQ])
            r._sf = _sf_bytes(rx.vals[K_DATR].p, rx.vals[K_DATR].n) if rx.vals[K_DATR].kind == V_STR else 0
            _lazy_data(r, rx, i, c.end)
            Py_INCREF(r)
            PyList_SET_ITEM(rxpk, i, r)
        return out
    finally:
        if heap != NULL:
            PyMem_Free(heap)


cdef int _lazy_data(Rxpk r, RxSpan* rx, int index, const uint8_t* end) except -1:
    """phy and error of a scanned rxpk: the same checks as _rxpk_from_fields."""
    cdef Val* d = &rx.vals[K_DATA]
    cdef Val* sz = &rx.vals[K_SIZE]
    if d.kind == V_ABSENT or d.kind == V_NULL:
        r.error = FrameError("missing_data", index, f"rxpk[{index}] has no data")
        return 0
    if d.kind != V_STR:
        r.error = FrameError("bad_base64", 0, f"rxpk[{index}].data is not a string")
        return 0
    phy = _b64_try(d.p, d.n)  # no try/except here: its setup is paid on every rxpk
    if phy is None:
        exc = _b64_error(d.p, d.n)
        r.error = FrameError(exc.kind, exc.offset, f"rxpk[{index}].data: {exc.detail}")
        return 0
    r.phy = phy
    if sz.kind == V_ABSENT or (sz.kind == V_INT and sz.i == PyBytes_GET_SIZE(phy)):
        return 0
    size = sz.i if sz.kind == V_INT else _build_value(sz.at, end, 2)
    r.error = FrameError(
        "size_mismatch", 0, f"rxpk[{index}].size is {size!r} but data holds {len(phy)} bytes"
    )
    return 0


# ---------------------------------------------------------------------------- GWMP

@cython.freelist(64)  # one per rxpk of every datagram: reuse the memory, skip the allocator
cdef class Rxpk:
    """One received frame of a PUSH_DATA: the forwarder's fields, the PHYPayload, or its error."""

    cdef dict _fields
    cdef readonly object phy
    cdef readonly object error
    cdef bytes _src             # the datagram, when fields are still to be built from it
    cdef Py_ssize_t _start, _end
    cdef int _nkeys             # keys in the span (presizes the dict)
    cdef bint _meta             # rssi/lsnr/freq/sf below are valid
    cdef double _rssi, _lsnr, _freq
    cdef int _sf

    def __init__(self, dict fields, phy, error):
        self._fields = fields
        self.phy = phy
        self.error = error

    @property
    def fields(self):
        cdef const uint8_t* base
        if self._fields is None:
            base = <const uint8_t*>PyBytes_AS_STRING(self._src)
            self._fields = _build_rxpk(base + self._start, base + self._end, self._nkeys)
            self._src = None
        return self._fields

    def as_dict(self):
        return {
            "fields": self.fields,
            "phy": self.phy,
            "error": None if self.error is None else self.error.as_dict(),
        }

    def __eq__(self, other):
        if not hasattr(other, "fields") or not hasattr(other, "as_dict"):
            return NotImplemented
        return self.as_dict() == other.as_dict()

    def __repr__(self):
        return f"Rxpk(fields={self.fields!r}, phy={self.phy!r}, error={self.error!r})"


cdef inline Rxpk _rxpk(dict fields, object phy, object error):
    cdef Rxpk r = Rxpk.__new__(Rxpk)
    r._fields = fields
    r.phy = phy
    r.error = error
    return r


@cython.freelist(16)
cdef class PushData:
    """A decoded PUSH_DATA: every rxpk (good or bad, in order) and the optional stat."""

    cdef readonly int version
    cdef readonly int token
    cdef readonly object gateway_eui
    cdef readonly list rxpk
    cdef readonly object stat

    def __init__(self, int version, int token, gateway_eui, list rxpk, stat):
        self.version = version
        self.token = token
        self.gateway_eui = gateway_eui
        self.rxpk = rxpk
        self.stat = stat

    def as_dict(self):
        return {
            "version": self.version,
            "token": self.token,
            "gateway_eui": self.gateway_eui,
            "rxpk": [r.as_dict() for r in self.rxpk],
            "stat": self.stat,
        }

    def __eq__(self, other):
        if not hasattr(other, "rxpk") or not hasattr(other, "as_dict"):
            return NotImplemented
        return self.as_dict() == other.as_dict()

    def __repr__(self):
        return (
            f"PushData(version={self.version}, token={self.token}, "
            f"gateway_eui={self.gateway_eui}, rxpk={self.rxpk!r}, stat={self.stat!r})"
        )


cdef Rxpk _rxpk_from_fields(object fields, Py_ssize_t index):
    cdef PyObject* t
    cdef PyObject* sz
    if not isinstance(fields, dict):
        return _rxpk({}, None, FrameError("bad_rxpk", index, f"rxpk[{index}] is not an object"))
    t = PyDict_GetItem(fields, "data")
    if t == NULL or <object>t is None:
        return _rxpk(fields, None, FrameError("missing_data", index, f"rxpk[{index}] has no data"))
    text = <object>t
    if not isinstance(text, str):
        return _rxpk(fields, None, FrameError("bad_base64", 0, f"rxpk[{index}].data is not a string"))
    try:
        phy = _b64_decode(text)
    except FrameError as exc:
        return _rxpk(
            fields, None, FrameError(exc.kind, exc.offset, f"rxpk[{index}].data: {exc.detail}")
        )
    sz = PyDict_GetItem(fields, "size")
    if sz != NULL:
        size = <object>sz
        if not PyLong_CheckExact(size) or size != PyBytes_GET_SIZE(phy):
            return _rxpk(
                fields, phy,
                FrameError(
                    "size_mismatch", 0,
                    f"rxpk[{index}].size is {size!r} but data holds {len(phy)} bytes",
                ),
            )
    return _rxpk(fields, phy, None)


cdef struct Head:
    int version
    int token
    int ident


cdef int _header(bytes datagram, Head* h) except -1:
    """Check the 4-byte GWMP header into ``h`` (a struct: no tuple and boxed ints per call)."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(datagram)
    cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(datagram)
    if n > C_MAX_DATAGRAM:
        raise FrameError("too_large", MAX_DATAGRAM, f"datagram of {n} bytes exceeds {MAX_DATAGRAM}")
    if n < 4:
        raise FrameError("too_short", n, f"GWMP header needs 4 bytes, got {n}")
    if p[0] != 1 and p[0] != 2:
        raise FrameError("bad_version", 0, f"protocol version {p[0]} is not supported (1 or 2)")
    if p[3] > 5:
        raise FrameError("unknown_identifier", 3, f"identifier 0x{p[3]:02x} is not a GWMP message")
    h.version = p[0]
    h.token = _le16(p + 1)
    h.ident = p[3]
    return 0


# A gateway sends every datagram with its own EUI: keep the last EUI's int and hand the same
# object out again instead of allocating a 64-bit int per datagram (ints are immutable).
cdef uint64_t _last_eui = 0
cdef object _last_eui_int = None


cdef extern from *:
    """
    /* The 8 bytes at p as a big-endian number: one load and a byte swap where the compiler
       has one (the gateway EUI of every datagram). */
    static inline uint64_t schwebe_be64(const unsigned char* p) {
    #if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        uint64_t w;
        memcpy(&w, p, 8);
        return __builtin_bswap64(w);
    #else
        uint64_t v = 0;
        int i;
        for (i = 0; i < 8; i++) v = (v << 8) | p[i];
        return v;
    #endif
    }
    """
    uint64_t _be64 "schwebe_be64"(const uint8_t* p) noexcept nogil


cdef object _eui(bytes datagram, int ident):
    global _last_eui, _last_eui_int
    cdef Py_ssize_t n = PyBytes_GET_SIZE(datagram)
    cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(datagram)
    cdef uint64_t v
    if n < 12:
        raise FrameError(
            "too_short", n,
            f"{IDENTIFIER_NAMES[ident]} needs an 8-byte gateway EUI after the header",
        )
    v = _be64(p + 4)
    if _last_eui_int is None or v != _last_eui:
        _last_eui_int = v
        _last_eui = v
    return _last_eui_int


cdef PushData _push_data_from_body(int version, int token, object eui, object body):
    cdef PyObject* rp = PyDict_GetItem(body, "rxpk")
    cdef PyObject* sp = PyDict_GetItem(body, "stat")
    cdef PushData out = PushData.__new__(PushData)
    cdef Py_ssize_t i, count
    stat = None if sp == NULL else <object>sp
    if stat is not None and not isinstance(stat, dict):
        raise FrameError("bad_body", 12, "stat must be an object")
    out.version = version
    out.token = token
    out.gateway_eui = eui
    out.stat = stat
    out.rxpk = []
    if rp == NULL or <object>rp is None:
        return out
    rx_list = <object>rp
    if not isinstance(rx_list, list):
        raise FrameError("bad_body", 12, "rxpk must be an array")
    count = len(rx_list)
    if count > MAX_RXPK:
        raise FrameError("too_many_rxpk", 12, f"{count} rxpk in one datagram; at most {MAX_RXPK}")
    for i in range(count):
        out.rxpk.append(_rxpk_from_fields(rx_list[i], i))
    return out


def parse_gwmp(datagram):
    """Parse any of the six GWMP messages; bodies are parsed JSON, rxpk left as received."""
    cdef bytes dg = datagram if PyBytes_CheckExact(datagram) else bytes(datagram)
    cdef Head h
    _header(dg, &h)
    version, token, ident = h.version, h.token, h.ident
    eui = None
    body = None
    if ident == 0:
        eui = _eui(dg, ident)
        body = _load_body(dg, 12)
    elif ident == 2:
        eui = _eui(dg, ident)
    elif ident == 3:
        body = _load_body(dg, 4)
    elif ident == 5:
        eui = _eui(dg, ident)
        if dg[12:].rstrip(b"\x00"):
            body = _load_body(dg, 12)
    return GwmpPacket(version, token, ident, eui, body)


# PUSH_DATA bodies the fused scan handed to the general parser (tests prove that what the
# packet forwarders send never does; odd but valid JSON may).
cdef Py_ssize_t _push_fallbacks = 0


def _push_data_fallbacks():
    """How many decode_push_data calls took the general JSON parser so far."""
    return _push_fallbacks


cpdef PushData decode_push_data(datagram):
    """Decode a PUSH_DATA whole: header, every rxpk (bad ones carry their error), stat."""
    cdef bytes dg = datagram if PyBytes_CheckExact(datagram) else bytes(datagram)
    cdef Head h
    _header(dg, &h)
    if h.ident != 0:
        raise FrameError("not_push_data", 3, f"expected PUSH_DATA, got {IDENTIFIER_NAMES[h.ident]}")
    global _push_fallbacks
    eui = _eui(dg, h.ident)
    out = _lazy_push(dg, h.version, h.token, eui)
    if out is not None:
        return out
    _push_fallbacks += 1
    return _push_data_from_body(h.version, h.token, eui, _load_json_body(dg[12:], 12))


cdef inline double _num(dict fields, str key):
    cdef PyObject* v = PyDict_GetItem(fields, key)
    if v != NULL:
        if PyFloat_CheckExact(<object>v):
            return PyFloat_AS_DOUBLE(<object>v)
        if PyLong_CheckExact(<object>v):
            return float(<object>v)
    return float("nan")


cdef int _sf(dict fields):
    """SF of a LoRa datarate written "SF<1-2 digits>BW<1-3 digits>"; 0 for anything else."""
    cdef PyObject* v = PyDict_GetItem(fields, "datr")
    if v == NULL or not PyUnicode_CheckExact(<object>v) or not PyUnicode_IS_ASCII(<object>v):
        return 0
    return _sf_bytes(<const uint8_t*>PyUnicode_DATA(<object>v), PyUnicode_GET_LENGTH(<object>v))


cdef inline int _sf_bytes(const uint8_t* s, Py_ssize_t n) noexcept:
    cdef Py_ssize_t i, j
    cdef int sf = 0
    if n < 6 or s[0] != 83 or s[1] != 70:  # "SF"
        return 0
    i = 2
    while i < n and 48 <= s[i] <= 57 and i < 4:
        sf = sf * 10 + (s[i] - 48)
        i += 1
    if i == 2 or i + 2 >= n or s[i] != 66 or s[i + 1] != 87:  # "BW"
        return 0
    j = i + 2
    while j < n and 48 <= s[j] <= 57:
        j += 1
    if j != n or j - (i + 2) > 3:
        return 0
    return sf


def push_data_batch(datagrams):
    """One row per rxpk of many PUSH_DATA datagrams, with the radio metadata.

    Datagrams that are not a valid PUSH_DATA contribute no rows; a bad rxpk gets ok=False.
    Missing numbers are NaN, a missing or FSK datarate gives sf=0.
    """
    cdef list decoded = []
    cdef Py_ssize_t i, count, n
    cdef Rxpk rx
    cdef uint8_t[::1] buf
    cdef uint8_t* base
    cdef uint8_t* r
    cdef dict f
    for dg in datagrams:
        try:
            decoded.extend((<PushData>decode_push_data(dg)).rxpk)
        except FrameError:
            continue
    count = len(decoded)
    np = _numpy()
    from gateway.frames._batch_py import RXPK_DTYPE
    out = np.zeros(count, dtype=RXPK_DTYPE)
    if count == 0:
        out["fport"] = -1
        return out
    buf = out.view(np.uint8)
    base = &buf[0]
    for i in range(count):
        rx = <Rxpk>decoded[i]
        r = base + i * 31
        r[O_FPORT] = 0xFF
        r[O_FPORT + 1] = 0xFF
        if rx.phy is not None:
            if rx.error is None:
                _fill_phy_row(r, <const uint8_t*>PyBytes_AS_STRING(rx.phy), PyBytes_GET_SIZE(rx.phy))
            else:
                n = PyBytes_GET_SIZE(rx.phy)
                _put16(r + O_PHY_LEN, <uint32_t>(n if n < 0xFFFF else 0xFFFF))
        if rx._meta:
            _putf32(r + O_RSSI, <float>rx._rssi)
            _putf32(r + O_LSNR, <float>rx._lsnr)
            _putf64(r + O_FREQ, rx._freq)
            r[O_SF] = rx._sf
            continue
        f = rx.fields
        _putf32(r + O_RSSI, <float>_num(f, "rssi"))
        _putf32(r + O_LSNR, <float>_num(f, "lsnr"))
        _putf64(r + O_FREQ, _num(f, "freq"))
        r[O_SF] = _sf(f)
    return out


include "_decode_lines.pxi"


# ---------------------------------------------------------------------------- the door
#
# gateway/frames/door.py is the reference. The usual rxpk (flat: strings, numbers, true, false,
# null; a LoRa or FSK data rate; radio figures in range) is answered here without one Python
# call; every other one, and every refusal, goes to the reference, so the answers and their
# words agree by construction (tests/test_frames_differential.py holds them together).

from gateway.frames import door as _door

cdef extern from "Python.h":
    bint PyDict_Next(object p, Py_ssize_t* ppos, PyObject** pkey, PyObject** pvalue)
    long long PyLong_AsLongLongAndOverflow(object o, int* overflow) except? -1

cdef object _door_twin = _door.rxpk_door
cdef Py_ssize_t C_MAX_STRING = _door.MAX_STRING
cdef Py_ssize_t C_MAX_ITEMS = _door.MAX_ITEMS
cdef tuple _RANGE_KEYS = tuple(_door._RANGES)
cdef double _RANGE_LO[8]
cdef double _RANGE_HI[8]
cdef Py_ssize_t _NRANGES = len(_RANGE_KEYS)
assert _NRANGES <= 8
for _i, _k in enumerate(_RANGE_KEYS):
    _RANGE_LO[_i], _RANGE_HI[_i] = _door._RANGES[_k]
cdef long long _EXACT_INT = 9007199254740992  # 2**53: ints up to it convert to double exactly


cdef bint _lora_datr(str s) noexcept:
    """s matches SF([5-9]|1[0-2])BW(125|250|500|203|406|812|1625) whole (s starts with "SF")."""
    cdef const uint8_t* p
    cdef Py_ssize_t n, i
    if not PyUnicode_IS_ASCII(s):
        return False
    p = <const uint8_t*>PyUnicode_DATA(s)
    n = PyUnicode_GET_LENGTH(s)
    if n < 7:
        return False
    if 53 <= p[2] <= 57:  # 5-9
        i = 3
    elif p[2] == 49 and 48 <= p[3] <= 50:  # 10-12
        i = 4
    else:
        return False
    if p[i] != 66 or p[i + 1] != 87:  # "BW"
        return False
    p += i + 2
    n -= i + 2
    if n == 3:
        return (memcmp(p, b"125", 3) == 0 or memcmp(p, b"250", 3) == 0
                or memcmp(p, b"500", 3) == 0 or memcmp(p, b"203", 3) == 0
                or memcmp(p, b"406", 3) == 0 or memcmp(p, b"812", 3) == 0)
    return n == 4 and memcmp(p, b"1625", 4) == 0


cdef bint _door_clean(dict fields) except -1:
    """True when the reference would surely answer None; False: ask the reference."""
    cdef Py_ssize_t pos = 0, i
    cdef PyObject* k
    cdef PyObject* v
    cdef int overflow
    cdef long long iv
    cdef double d
    if PyDict_GET_SIZE(fields) > C_MAX_ITEMS:
        return False
    while PyDict_Next(fields, &pos, &k, &v):
        if not PyUnicode_CheckExact(<object>k) or PyUnicode_GET_LENGTH(<object>k) > C_MAX_STRING:
            return False
        if PyUnicode_CheckExact(<object>v):
            if PyUnicode_GET_LENGTH(<object>v) > C_MAX_STRING:
                return False
        elif PyLong_CheckExact(<object>v):
            PyLong_AsLongLongAndOverflow(<object>v, &overflow)
            if overflow:
                return False
        elif not (PyFloat_CheckExact(<object>v) or v == <PyObject*>None
                  or v == <PyObject*>True or v == <PyObject*>False):
            return False  # nested or unusual: the reference walks it
    for i in range(_NRANGES):
        v = PyDict_GetItem(fields, _RANGE_KEYS[i])
        if v == NULL or v == <PyObject*>None:
            continue
        if PyFloat_CheckExact(<object>v):
            d = PyFloat_AS_DOUBLE(<object>v)
        elif PyLong_CheckExact(<object>v):
            iv = PyLong_AsLongLongAndOverflow(<object>v, &overflow)
            # compared as integers: 2**53 + 1 as a double is 2**53, which would pass a bound
            # of 2**53 that Python's exact int/float comparison refuses
            if overflow or not -_EXACT_INT <= iv <= _EXACT_INT:
                return False
            d = <double>iv
        else:
            return False
        if not (_RANGE_LO[i] <= d <= _RANGE_HI[i]):  # NaN fails too, as in Python
            return False
    v = PyDict_GetItem(fields, "datr")
    if v == NULL or v == <PyObject*>None:
        return True
    if PyUnicode_CheckExact(<object>v):
        if (PyUnicode_GET_LENGTH(<object>v) >= 2 and PyUnicode_IS_ASCII(<object>v)
                and (<const uint8_t*>PyUnicode_DATA(<object>v))[0] == 83
                and (<const uint8_t*>PyUnicode_DATA(<object>v))[1] == 70):
            return _lora_datr(<str>v)
        return PyUnicode_IS_ASCII(<object>v)  # a non-ASCII one might start with "SF": ask
    if PyFloat_CheckExact(<object>v):
        d = PyFloat_AS_DOUBLE(<object>v)
        return 0.0 <= d < 4294967296.0
    if PyLong_CheckExact(<object>v):
        iv = PyLong_AsLongLongAndOverflow(<object>v, &overflow)
        return not overflow and 0 <= iv < 4294967296
    return v == <PyObject*>True or v == <PyObject*>False


def rxpk_door(fields):
    """(counter, why) when an rxpk's fields cannot pass the door, else None (door.rxpk_door)."""
    if PyDict_CheckExact(fields) and _door_clean(<dict>fields):
        return None
    return _door_twin(fields)
include "_uplink_json.pxi"
include "_cbor_fast.pxi"
include "_push_records.pxi"
include "_mqtt_batch.pxi"
