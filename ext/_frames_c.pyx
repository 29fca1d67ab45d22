# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled twin of gateway/_frames_py.py: the gateway's hot path (PHYPayload, PUSH_DATA).

Same API and same answers as the Python twin (tests/test_frames_differential.py holds it to
that). PUSH_DATA bodies are scanned directly for the common JSON layout; anything unusual
falls back to the twin's general parser, so odd input costs time, never correctness.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem, PyDict_SetItem
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_XDECREF
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memchr, memcmp, memcpy, memset
from libc.math cimport NAN
from cpython.mem cimport PyMem_Free, PyMem_Malloc

import numpy as np

from gateway import _frames_py as _twin

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
    double PyOS_string_to_double(const char* s, char** endptr, PyObject* overflow_exception) except? -1.0

IMPLEMENTATION = "cython"

# One error type and one set of value objects for both implementations, so `except FrameError`
# and isinstance checks behave the same whichever module serves.
FrameError = _twin.FrameError
GwmpPacket = _twin.GwmpPacket
MTYPE_NAMES = _twin.MTYPE_NAMES
IDENTIFIER_NAMES = _twin.IDENTIFIER_NAMES
PHY_DTYPE = _twin.PHY_DTYPE
RXPK_DTYPE = _twin.RXPK_DTYPE
MAX_DATAGRAM = _twin.MAX_DATAGRAM
MAX_RXPK = _twin.MAX_RXPK
b64encode = _twin.b64encode
encode_push_data = _twin.encode_push_data
encode_push_ack = _twin.encode_push_ack
encode_pull_data = _twin.encode_pull_data
encode_pull_ack = _twin.encode_pull_ack
encode_pull_resp = _twin.encode_pull_resp
encode_tx_ack = _twin.encode_tx_ack
netid_devaddr_prefix = _twin.netid_devaddr_prefix
devaddr_prefix_mask = _twin.devaddr_prefix_mask
netid_mask = _twin.netid_mask

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

assert PHY_DTYPE.itemsize == 14 and RXPK_DTYPE.itemsize == 31
assert [PHY_DTYPE.fields[k][1] for k in PHY_DTYPE.names] == [0, 4, 6, 8, 9, 11, 13]
assert [RXPK_DTYPE.fields[k][1] for k in ("rssi", "lsnr", "freq", "sf")] == [14, 18, 22, 30]


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
    cdef Py_ssize_t end, i, o, full
    cdef uint8_t* d
    cdef int a, b, c, e
    end = n
    if end and s[end - 1] == 61:
        end -= 1
        if end and s[end - 1] == 61:
            end -= 1
    for i in range(end):
        if _B64[s[i]] < 0:
            raise FrameError("bad_base64", i, f"character {chr(s[i])!r} at {i} is not base64")
    if (end & 3) == 1:
        raise FrameError(
            "bad_base64", end, f"base64 of {end} characters cannot be complete (length mod 4 is 1)"
        )
    full = end >> 2
    cdef Py_ssize_t outlen = full * 3 + (((end & 3) * 3) >> 2)
    out = PyBytes_FromStringAndSize(NULL, outlen)
    d = <uint8_t*>PyBytes_AS_STRING(out)
    o = 0
    i = 0
    while i + 4 <= end:
        a = _B64[s[i]]
        b = _B64[s[i + 1]]
        c = _B64[s[i + 2]]
        e = _B64[s[i + 3]]
        d[o] = <uint8_t>((a << 2) | (b >> 4))
        d[o + 1] = <uint8_t>(((b & 15) << 4) | (c >> 2))
        d[o + 2] = <uint8_t>(((c & 3) << 6) | e)
        o += 3
        i += 4
    if end - i >= 2:
        a = _B64[s[i]]
        b = _B64[s[i + 1]]
        d[o] = <uint8_t>((a << 2) | (b >> 4))
        if end - i == 3:
            c = _B64[s[i + 2]]
            d[o + 1] = <uint8_t>(((b & 15) << 4) | (c >> 2))
    return out


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
    while c.p < c.end and (c.p[0] == 32 or c.p[0] == 10 or c.p[0] == 13 or c.p[0] == 9):
        c.p += 1


cdef inline object _ascii(const uint8_t* s, Py_ssize_t n):
    """A str from bytes already checked to be printable ASCII (no decoder pass needed)."""
    out = PyUnicode_New(n, 127)
    memcpy(PyUnicode_DATA(out), s, n)
    return out


# Exact powers of ten as doubles: a decimal with < 2**53 as mantissa divided by one of these is
# correctly rounded (Clinger's fast path), the same double any correct parser gives.
cdef int64_t _MANT_MAX = (<int64_t>1) << 53
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


cdef extern from *:
    """
    #include <string.h>
    #include <stdint.h>
    /* 1 when p[0..n) is printable ASCII without backslash: a JSON string needing no decoding.
       Eight bytes at a time (the classic has-less / has-zero word tricks). */
    static inline int schwebe_plain(const unsigned char* p, size_t n) {
        const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
        uint64_t acc = 0, w, bs;
        size_t i = 0;
        for (; i + 8 <= n; i += 8) {
            memcpy(&w, p + i, 8);
            bs = w ^ (ones * 0x5C);
            acc |= (((w - ones * 0x20) & ~w) | ((bs - ones) & ~bs) | w) & highs;
        }
        for (; i < n; i++) {
            unsigned char ch = p[i];
            if (ch < 0x20 || ch == 0x5C || ch >= 0x80) return 0;
        }
        return acc == 0;
    }
    """
    bint schwebe_plain(const uint8_t* p, size_t n) noexcept nogil


cdef inline const uint8_t* _str_end(Cur* c, const uint8_t* start) noexcept nogil:
    """End quote of a plain string (printable ASCII, no escapes); NULL means "not plain"."""
    cdef const uint8_t* q = <const uint8_t*>memchr(<const void*>start, 34, c.end - start)
    if q == NULL or not schwebe_plain(start, q - start):
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


cdef bint _scan_num(Cur* c, Num* o) except -1:
    """One JSON number of the plain kind (no exponent, at most 18 integer digits).

    Returns False (and sets bail) for anything else: the general parser decides those.
    """
    cdef const uint8_t* start = c.p
    cdef const uint8_t* q = c.p
    cdef bint neg = False
    cdef int64_t v = 0
    cdef int64_t m = 0
    cdef int frac = 0
    cdef bint exact = False
    cdef char buf[32]
    o.isfloat = False
    if q[0] == 45:  # '-'
        neg = True
        q += 1
    if q >= c.end:
        c.bail = True
        return False
    if q[0] == 48:  # a leading '0' stands alone
        q += 1
    elif 49 <= q[0] <= 57:
        while q < c.end and 48 <= q[0] <= 57:
            v = v * 10 + (q[0] - 48)
            q += 1
            if q - start > 18:  # stays far inside int64; longer ones go to the general parser
                c.bail = True
                return False
    else:
        c.bail = True
        return False
    if q < c.end and q[0] == 46:  # '.'
        o.isfloat = True
        q += 1
        if q >= c.end or not (48 <= q[0] <= 57):
            c.bail = True
            return False
        m = v
        exact = v < _MANT_MAX
        while q < c.end and 48 <= q[0] <= 57:
            if exact:
                if m > (_MANT_MAX - 10) // 10:
                    exact = False
                else:
                    m = m * 10 + (q[0] - 48)
            frac += 1
            q += 1
    if q < c.end and (q[0] == 101 or q[0] == 69):  # exponents never appear in rxpk: not worth it
        c.bail = True
        return False
    if q - start > 24:
        c.bail = True
        return False
    c.p = q
    if not o.isfloat:
        o.i = -v if neg else v
        return True
    if exact and frac <= 22:
        o.d = <double>m / _POW10[frac]
        if neg:
            o.d = -o.d
        return True
    memcpy(buf, start, q - start)
    buf[q - start] = 0
    o.d = PyOS_string_to_double(buf, NULL, NULL)
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


cdef object _jobject(Cur* c, int depth):
    cdef Py_ssize_t before
    if depth > 16:
        c.bail = True
        return None
    c.p += 1
    d = {}
    _ws(c)
    if c.p < c.end and c.p[0] == 125:
        c.p += 1
        return d
    while True:
        _ws(c)
        if c.p >= c.end or c.p[0] != 34:
            c.bail = True
            return None
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

cdef enum:  # rxpk keys noted during the scan (index into RxSpan.vals)
    K_NONE = 0
    K_DATA = 1
    K_SIZE = 2
    K_RSSI = 3
    K_LSNR = 4
    K_FREQ = 5
    K_DATR = 6

cdef struct RxSpan:
    const uint8_t* start  # '{' of the object, NULL when the element is not an object
    const uint8_t* end    # just past '}'
    Val vals[7]

cdef enum:
    MAX_KEYS = 64
    SMALL_RX = 16


cdef inline int _rx_key(const uint8_t* k, Py_ssize_t n) noexcept nogil:
    if n == 4:
        if memcmp(k, b"data", 4) == 0:
            return K_DATA
        if memcmp(k, b"size", 4) == 0:
            return K_SIZE
        if memcmp(k, b"rssi", 4) == 0:
            return K_RSSI
        if memcmp(k, b"lsnr", 4) == 0:
            return K_LSNR
        if memcmp(k, b"freq", 4) == 0:
            return K_FREQ
        if memcmp(k, b"datr", 4) == 0:
            return K_DATR
    return K_NONE



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


cdef bint _vvalue(Cur* c, int depth, Val* out) except -1:
    """Check one value without building it; note what it is in ``out``."""
    cdef uint8_t ch
    cdef const uint8_t* q
    cdef Num num
    _ws(c)
    if c.p >= c.end:
        c.bail = True
        return False
    ch = c.p[0]
    out.at = c.p
    if ch == 34:
        q = _str_end(c, c.p + 1)
        if q == NULL:
            c.bail = True
            return False
        out.kind = V_STR
        out.p = c.p + 1
        out.n = q - (c.p + 1)
        c.p = q + 1
        return True
    if ch == 45 or 48 <= ch <= 57:
        if not _scan_num(c, &num):
            return False
        if num.isfloat:
            out.kind = V_FLOAT
            out.d = num.d
        else:
            out.kind = V_INT
            out.i = num.i
        return True
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
    """Check one object (keys unique, as the builder demands); fill ``rx`` if it is an rxpk."""
    cdef const uint8_t* kp[MAX_KEYS]
    cdef Py_ssize_t kn[MAX_KEYS]
    cdef int nkeys = 0, which
    cdef uint64_t bloom = 0
    cdef const uint8_t* k
    cdef const uint8_t* q
    cdef Py_ssize_t n
    cdef Val v
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
        q = _str_end(c, k)
        if q == NULL or nkeys == MAX_KEYS:
            c.bail = True
            return False
        n = q - k
        if _dup_key(kp, kn, nkeys, &bloom, k, n):
            c.bail = True  # duplicate key: the general parser's rules apply
            return False
        kp[nkeys] = k
        kn[nkeys] = n
        nkeys += 1
        c.p = q + 1
        _ws(c)
        if c.p >= c.end or c.p[0] != 58:
            c.bail = True
            return False
        c.p += 1
        if not _vvalue(c, depth, &v):
            return False
        if rx != NULL:
            which = _rx_key(k, n)
            if which != K_NONE:
                rx.vals[which] = v
        _ws(c)
        if c.p < c.end and c.p[0] == 44:
            c.p += 1
            continue
        if c.p < c.end and c.p[0] == 125:
            c.p += 1
            return True
        c.bail = True
        return False


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


cdef inline double _val_num(Val* v) noexcept:
    if v.kind == V_FLOAT:
        return v.d
    if v.kind == V_INT:
        return <double>v.i
    return NAN


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
    while n > 12 and base[n - 1] == 0:
        n -= 1
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
                            if count == MAX_RXPK:
                                return None  # too_many_rxpk comes from the general path
                            if count == SMALL_RX:
                                heap = <RxSpan*>PyMem_Malloc(MAX_RXPK * sizeof(RxSpan))
                                if heap == NULL:
                                    raise MemoryError()
                                memcpy(heap, small, SMALL_RX * sizeof(RxSpan))
                                spans = heap
                            rx = &spans[count]
                            memset(rx, 0, sizeof(RxSpan))
                            if c.p < c.end and c.p[0] == 123:
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
        if c.p != c.end:
            return None
        if stat is not None and not isinstance(stat, dict):
            raise FrameError("bad_body", 12, "stat must be an object")
        out = PushData.__new__(PushData)
        out.version = version
        out.token = token
        out.gateway_eui = eui
        out.stat = stat
        out.rxpk = []
        for i in range(count):
            rx = &spans[i]
            if rx.start == NULL:
                out.rxpk.append(
                    _rxpk({}, None, FrameError("bad_rxpk", i, f"rxpk[{i}] is not an object"))
                )
                continue
            r = Rxpk.__new__(Rxpk)
            r._src = dg
            r._start = rx.start - base
            r._end = rx.end - base
            r._meta = True
            r._rssi = _val_num(&rx.vals[K_RSSI])
            r._lsnr = _val_num(&rx.vals[K_LSNR])
            r._freq = _val_num(&rx.vals[K_FREQ])
            r._sf = _sf_bytes(rx.vals[K_DATR].p, rx.vals[K_DATR].n) if rx.vals[K_DATR].kind == V_STR else 0
            _lazy_data(r, rx, i, c.end)
            out.rxpk.append(r)
        return out
    finally:
        if heap != NULL:
            PyMem_Free(heap)


cdef void _lazy_data(Rxpk r, RxSpan* rx, int index, const uint8_t* end) except *:
    """phy and error of a scanned rxpk: the same checks as _rxpk_from_fields."""
    cdef Val* d = &rx.vals[K_DATA]
    cdef Val* sz = &rx.vals[K_SIZE]
    if d.kind == V_ABSENT or d.kind == V_NULL:
        r.error = FrameError("missing_data", index, f"rxpk[{index}] has no data")
        return
    if d.kind != V_STR:
        r.error = FrameError("bad_base64", 0, f"rxpk[{index}].data is not a string")
        return
    try:
        phy = _b64_bytes(d.p, d.n)
    except FrameError as exc:
        r.error = FrameError(exc.kind, exc.offset, f"rxpk[{index}].data: {exc.detail}")
        return
    r.phy = phy
    if sz.kind == V_ABSENT or (sz.kind == V_INT and sz.i == PyBytes_GET_SIZE(phy)):
        return
    size = sz.i if sz.kind == V_INT else _build_value(sz.at, end, 2)
    r.error = FrameError(
        "size_mismatch", 0, f"rxpk[{index}].size is {size!r} but data holds {len(phy)} bytes"
    )


# ---------------------------------------------------------------------------- GWMP

cdef class Rxpk:
    """One received frame of a PUSH_DATA: the forwarder's fields, the PHYPayload, or its error."""

    cdef dict _fields
    cdef readonly object phy
    cdef readonly object error
    cdef bytes _src             # the datagram, when fields are still to be built from it
    cdef Py_ssize_t _start, _end
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
            self._fields = _build_value(base + self._start, base + self._end, 1)
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


cdef tuple _header(bytes datagram):
    cdef Py_ssize_t n = PyBytes_GET_SIZE(datagram)
    cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(datagram)
    if n > MAX_DATAGRAM:
        raise FrameError("too_large", MAX_DATAGRAM, f"datagram of {n} bytes exceeds {MAX_DATAGRAM}")
    if n < 4:
        raise FrameError("too_short", n, f"GWMP header needs 4 bytes, got {n}")
    if p[0] != 1 and p[0] != 2:
        raise FrameError("bad_version", 0, f"protocol version {p[0]} is not supported (1 or 2)")
    if p[3] > 5:
        raise FrameError("unknown_identifier", 3, f"identifier 0x{p[3]:02x} is not a GWMP message")
    return (p[0], _le16(p + 1), p[3])


cdef object _eui(bytes datagram, int ident):
    cdef Py_ssize_t n = PyBytes_GET_SIZE(datagram)
    cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(datagram)
    cdef uint64_t v = 0
    cdef int i
    if n < 12:
        raise FrameError(
            "too_short", n,
            f"{IDENTIFIER_NAMES[ident]} needs an 8-byte gateway EUI after the header",
        )
    for i in range(4, 12):
        v = (v << 8) | p[i]
    return v


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
    version, token, ident = _header(dg)
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


cpdef PushData decode_push_data(datagram):
    """Decode a PUSH_DATA whole: header, every rxpk (bad ones carry their error), stat."""
    cdef bytes dg = datagram if PyBytes_CheckExact(datagram) else bytes(datagram)
    version, token, ident = _header(dg)
    if ident != 0:
        raise FrameError("not_push_data", 3, f"expected PUSH_DATA, got {IDENTIFIER_NAMES[ident]}")
    eui = _eui(dg, ident)
    out = _lazy_push(dg, version, token, eui)
    if out is not None:
        return out
    return _push_data_from_body(version, token, eui, _load_json_body(dg[12:], 12))


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


cdef int _sf_bytes(const uint8_t* s, Py_ssize_t n) noexcept:
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
