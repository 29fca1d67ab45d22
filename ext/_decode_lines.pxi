# Included by _frames_c.pyx (it shares that module's base64, PHYPayload scan and JSON cursor).
#
# `schwebe decode phy -` / `decode gwmp -` batches: whole output lines written straight from
# the bytes, with no PhyPayload, dict or str per frame. Only what is certain to come out of the
# general path byte for byte is done here (no keys, well-formed input, JSON that orjson would
# write back unchanged); every other line goes to the caller's `fallback`, which is the general
# path itself. So unusual input costs time, never a different answer. The twin's
# `decode_lines` sends every line to `fallback`; tests/test_decode_batch_fast.py compares the
# two CLIs byte for byte.

from libc.string cimport strlen
from cpython.mem cimport PyMem_Realloc

cdef extern from "Python.h":
    int _PyBytes_Resize(PyObject** pv, Py_ssize_t newsize) except -1


cdef struct Out:
    PyObject* obj   # the bytes object the output is written into (ours alone: resizable)
    char* buf       # its buffer
    Py_ssize_t n
    Py_ssize_t cap


cdef int _grow(Out* o, Py_ssize_t need) except -1:
    """Room for ``need`` more bytes. The output is a bytes object from the start, so handing
    it out costs a shrink in place, not a copy (and a fresh set of pages) of everything."""
    cdef Py_ssize_t cap = o.cap * 2 if o.cap else 65536
    while cap < o.n + need:
        cap *= 2
    if o.obj == NULL:
        first = PyBytes_FromStringAndSize(NULL, cap)
        Py_INCREF(first)
        o.obj = <PyObject*>first
    else:
        _PyBytes_Resize(&o.obj, cap)
    o.buf = PyBytes_AS_STRING(<object>o.obj)
    o.cap = cap
    return 0


cdef inline int _put(Out* o, const char* s, Py_ssize_t n) except -1:
    if o.n + n > o.cap:
        _grow(o, n)
    memcpy(o.buf + o.n, s, n)
    o.n += n
    return 0


cdef inline int _puts(Out* o, const char* s) except -1:
    return _put(o, s, strlen(s))


cdef const char* _HEXDIG = b"0123456789abcdef"


cdef inline int _puthex(Out* o, const uint8_t* p, Py_ssize_t n) except -1:
    """'"' + lower-case hex of p + '"' (bytes.hex() in a JSON string)."""
    cdef Py_ssize_t i
    cdef char* d
    if o.n + 2 * n + 2 > o.cap:
        _grow(o, 2 * n + 2)
    d = o.buf + o.n
    d[0] = 34
    for i in range(n):
        d[1 + 2 * i] = _HEXDIG[p[i] >> 4]
        d[2 + 2 * i] = _HEXDIG[p[i] & 15]
    d[2 * n + 1] = 34
    o.n += 2 * n + 2
    return 0


cdef inline int _putxint(Out* o, uint64_t v, int width) except -1:
    """'"' + v as fixed-width lower-case hex + '"' (f"{v:0{width}x}" for v < 16**width)."""
    cdef int i
    cdef char* d
    if o.n + width + 2 > o.cap:
        _grow(o, width + 2)
    d = o.buf + o.n
    d[0] = 34
    for i in range(width):
        d[width - i] = _HEXDIG[v & 15]
        v >>= 4
    d[width + 1] = 34
    o.n += width + 2
    return 0


cdef inline int _putint(Out* o, int64_t v) except -1:
    cdef char tmp[24]
    cdef int i = 24
    cdef uint64_t u = <uint64_t>(-v) if v < 0 else <uint64_t>v
    while True:
        i -= 1
        tmp[i] = 48 + <char>(u % 10)
        u //= 10
        if u == 0:
            break
    if v < 0:
        i -= 1
        tmp[i] = 45
    return _put(o, tmp + i, 24 - i)


cdef inline int _putbool(Out* o, bint v) except -1:
    if v:
        return _put(o, b"true", 4)
    return _put(o, b"false", 5)


# MAC commands by CID for each direction: payload length (-1: unknown CID) and name. Filled
# from gateway.frames.mac's tables on the first batch.
cdef int _MAC_LEN[2][256]
cdef list _mac_names = None


cdef int _mac_tables() except -1:
    global _mac_names
    if _mac_names is not None:
        return 0
    from gateway.frames import mac
    names = [[None] * 256, [None] * 256]
    cdef int d, cid
    for d in range(2):
        table = mac.DOWNLINK_MAC if d == 0 else mac.UPLINK_MAC
        for cid in range(256):
            _MAC_LEN[d][cid] = -1
        for cid, (name, size) in table.items():
            _MAC_LEN[d][cid] = size
            names[d][cid] = name.encode("ascii")
    _mac_names = names
    return 0


cdef int _mac_json(Out* o, const uint8_t* p, Py_ssize_t n, bint uplink) except -1:
    """',"MACCommands":[...]' as gateway.frames.decode._mac_commands writes it without keys."""
    cdef Py_ssize_t i = 0
    cdef int size, d = 1 if uplink else 0
    cdef bint first = True
    names = _mac_names[d]
    _puts(o, b',"MACCommands":[')
    while i < n:
        size = _MAC_LEN[d][p[i]]
        if size < 0 or i + 1 + size > n:
            break
        if not first:
            _put(o, b",", 1)
        first = False
        _puts(o, b'{"CID":')
        _putint(o, p[i])
        _puts(o, b',"Name":"')
        name = names[p[i]]
        _put(o, PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name))
        _puts(o, b'","Payload":')
        _puthex(o, p + i + 1, size)
        _put(o, b"}", 1)
        i += 1 + size
    if i < n:  # an unknown CID or a command cut short: the rest is its Payload
        if not first:
            _put(o, b",", 1)
        _puts(o, b'{"CID":')
        _putint(o, p[i])
        _puts(o, b',"Name":"')
        name = names[p[i]]
        if name is None:
            _puts(o, b"Unknown")
        else:
            _put(o, PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name))
        _puts(o, b'","Payload":')
        _puthex(o, p + i + 1, n - i - 1)
        _put(o, b"}", 1)
    _put(o, b"]", 1)
    return 0


cdef const char* _MTYPE_JSON[8]
_MTYPE_JSON[0] = b'{"MType":"JoinRequest","Major":0'
_MTYPE_JSON[1] = b'{"MType":"JoinAccept","Major":0'
_MTYPE_JSON[2] = b'{"MType":"UnconfirmedDataUp","Major":0'
_MTYPE_JSON[3] = b'{"MType":"UnconfirmedDataDown","Major":0'
_MTYPE_JSON[4] = b'{"MType":"ConfirmedDataUp","Major":0'
_MTYPE_JSON[5] = b'{"MType":"ConfirmedDataDown","Major":0'
_MTYPE_JSON[6] = b'{"MType":"RejoinRequest","Major":0'
_MTYPE_JSON[7] = b'{"MType":"Proprietary","Major":0'


cdef bint _phy_json(Out* o, const uint8_t* p, Py_ssize_t n) except -1:
    """The `decode phy` object of a PHYPayload without keys; False (nothing written) if the
    frame is malformed, so the caller's general path words the error."""
    cdef PhyInfo info
    cdef int mtype, fctrl
    cdef bint uplink
    cdef Py_ssize_t fend
    _scan_phy(p, n, &info)
    if info.err != E_OK:
        return False
    mtype = p[0] >> 5
    _puts(o, _MTYPE_JSON[mtype])
    if info.layout == L_DATA:
        uplink = mtype == 2 or mtype == 4
        fctrl = p[5]
        fend = info.fend
        _puts(o, b',"DevAddr":')
        _putxint(o, _le32(p + 1), 8)
        _puts(o, b',"FCtrl":')
        _putint(o, fctrl)
        _puts(o, b',"ADR":')
        _putbool(o, fctrl & 0x80)
        if uplink:
            _puts(o, b',"ADRACKReq":')
            _putbool(o, fctrl & 0x40)
        _puts(o, b',"ACK":')
        _putbool(o, fctrl & 0x20)
        _puts(o, b',"ClassB":' if uplink else b',"FPending":')
        _putbool(o, fctrl & 0x10)
        _puts(o, b',"FOptsLen":')
        _putint(o, fctrl & 0x0F)
        _puts(o, b',"FCnt":')
        _putint(o, _le16(p + 6))
        _puts(o, b',"FOpts":')
        _puthex(o, p + 8, fend - 8)
        _puts(o, b',"FPort":')
        if fend < n - 4:
            _putint(o, p[fend])
            _puts(o, b',"FRMPayload":')
            _puthex(o, p + fend + 1, n - 4 - fend - 1)
        else:
            _puts(o, b'null,"FRMPayload":""')
        _puts(o, b',"MIC":')
        _puthex(o, p + n - 4, 4)
        if fend > 8:  # LoRaWAN 1.0 sends FOpts in clear: their commands need no key
            _mac_json(o, p + 8, fend - 8, uplink)
    elif info.layout == L_JOIN_REQUEST:
        _puts(o, b',"JoinEUI":')
        _putxint(o, _le64(p + 1), 16)
        _puts(o, b',"DevEUI":')
        _putxint(o, _le64(p + 9), 16)
        _puts(o, b',"DevNonce":')
        _putint(o, _le16(p + 17))
        _puts(o, b',"MIC":')
        _puthex(o, p + 19, 4)
    elif info.layout == L_JOIN_ACCEPT:
        _puts(o, b',"Encrypted":')
        _puthex(o, p + 1, n - 1)
    elif info.layout == L_REJOIN_02:
        _puts(o, b',"RejoinType":')
        _putint(o, p[1])
        _puts(o, b',"NetID":')
        _putxint(o, _le24(p + 2), 6)
        _puts(o, b',"DevEUI":')
        _putxint(o, _le64(p + 5), 16)
        _puts(o, b',"RJcount0":')
        _putint(o, _le16(p + 13))
        _puts(o, b',"MIC":')
        _puthex(o, p + 15, 4)
    elif info.layout == L_REJOIN_1:
        _puts(o, b',"RejoinType":1,"JoinEUI":')
        _putxint(o, _le64(p + 2), 16)
        _puts(o, b',"DevEUI":')
        _putxint(o, _le64(p + 10), 16)
        _puts(o, b',"RJcount1":')
        _putint(o, _le16(p + 18))
        _puts(o, b',"MIC":')
        _puthex(o, p + 20, 4)
    else:
        _puts(o, b',"Payload":')
        _puthex(o, p + 1, n - 1)
    _put(o, b"}", 1)
    return True


cdef signed char _HEXVAL[256]
for _i in range(256):
    _HEXVAL[_i] = -1
for _i, _c in enumerate("0123456789abcdef"):
    _HEXVAL[ord(_c)] = _i
    _HEXVAL[ord(_c.upper())] = _i


cdef inline bint _strip_space(uint8_t ch) noexcept nogil:
    # What str.strip() removes among ASCII characters.
    return ch == 32 or (9 <= ch <= 13) or (28 <= ch <= 31)


cdef inline bint _jws(uint8_t ch) noexcept nogil:
    return ch == 32 or ch == 9 or ch == 10 or ch == 13


cdef bint _input_hex(const uint8_t* s, Py_ssize_t n, const char* field, Py_ssize_t flen,
                     const uint8_t** hp, Py_ssize_t* hn) noexcept nogil:
    """The hex text of a batch line: bare, or {"<field>": "<hex>"} and nothing else in it.

    False for any other line (non-ASCII, other fields, escapes, ...): the general path."""
    cdef Py_ssize_t i = 0, j
    while n and _strip_space(s[n - 1]):
        n -= 1
    while i < n and _strip_space(s[i]):
        i += 1
    if i == n:
        return False
    if s[i] != 123:  # bare: hex, checked by the caller; '[' and '"' lines are JSON
        if s[i] == 91 or s[i] == 34:
            return False
        hp[0] = s + i
        hn[0] = n - i
        return True
    i += 1
    while i < n and _jws(s[i]):
        i += 1
    if n - i < flen + 2 or s[i] != 34 or memcmp(s + i + 1, field, flen) != 0 or s[i + 1 + flen] != 34:
        return False
    i += flen + 2
    while i < n and _jws(s[i]):
        i += 1
    if i >= n or s[i] != 58:
        return False
    i += 1
    while i < n and _jws(s[i]):
        i += 1
    if i >= n or s[i] != 34:
        return False
    i += 1
    j = i
    while j < n and _HEXVAL[s[j]] >= 0:
        j += 1
    if j >= n or s[j] != 34:
        return False
    hp[0] = s + i
    hn[0] = j - i
    j += 1
    while j < n and _jws(s[j]):
        j += 1
    return j == n - 1 and s[j] == 125


# ---------------------------------------------------------------- JSON written back unchanged

cdef bint _canon_number(Cur* c, Out* o) except -1:
    """Copy a number that orjson would write back exactly as it is written; else False.

    Integers: no sign on zero, at most 18 digits. Decimals: fixed notation with at most 15
    significant digits and no trailing zero (but "x.0"), as repr() and orjson write a double
    that such a string names (15 digits always name distinct doubles, so it is the shortest).
    """
    cdef const uint8_t* s = c.p
    cdef const uint8_t* q = c.p
    cdef const uint8_t* ip
    cdef const uint8_t* fp
    cdef Py_ssize_t ni, nf, sig, lead
    if q < c.end and q[0] == 45:
        q += 1
    ip = q
    while q < c.end and _digit(q[0]):
        q += 1
    ni = q - ip
    if ni == 0 or (ni > 1 and ip[0] == 48):
        return False
    if q < c.end and (q[0] == 101 or q[0] == 69):
        return False
    if q >= c.end or q[0] != 46:  # an integer
        if ni > 18 or (ni == 1 and ip[0] == 48 and s[0] == 45):
            return False
        _put(o, <const char*>s, q - s)
        c.p = q
        return True
    q += 1
    fp = q
    while q < c.end and _digit(q[0]):
        q += 1
    nf = q - fp
    if nf == 0 or (q < c.end and (q[0] == 101 or q[0] == 69)):
        return False
    if fp[nf - 1] == 48 and not (nf == 1 and fp[0] == 48):
        return False  # a trailing zero repr() would not write
    if nf == 1 and fp[0] == 48:
        sig = ni if ip[0] != 48 else 0
        if ni > 16:
            return False
    elif ni == 1 and ip[0] == 48:
        lead = 0
        while fp[lead] == 48:
            lead += 1
        if lead >= 4:  # below 1e-4 repr() writes an exponent and orjson does not
            return False
        sig = nf - lead
    else:
        sig = ni + nf
    if sig > 15:
        return False
    _put(o, <const char*>s, q - s)
    c.p = q
    return True




cdef bint _canon_members(Cur* c, Out* o, int depth, bint* nonempty) except -1:
    """Copy the members of an object (the cursor just past '{') up to its '}' (consumed, not
    written). Keys must be plain and unique: orjson keeps one of duplicates."""
    cdef const uint8_t* kp[MAX_KEYS]
    cdef Py_ssize_t kn[MAX_KEYS]
    cdef int nkeys = 0
    cdef uint64_t bloom = 0
    cdef const uint8_t* k
    cdef const uint8_t* q
    nonempty[0] = False
    _ws(c)
    if c.p < c.end and c.p[0] == 125:
        c.p += 1
        return True
    while True:
        _ws(c)
        if c.p >= c.end or c.p[0] != 34:
            return False
        k = c.p + 1
        q = _str_end(c, k)
        if q == NULL or nkeys == MAX_KEYS or _dup_key(kp, kn, nkeys, &bloom, k, q - k):
            return False
        kp[nkeys] = k
        kn[nkeys] = q - k
        nkeys += 1
        if nonempty[0]:
            _put(o, b",", 1)
        nonempty[0] = True
        _put(o, <const char*>(k - 1), q - k + 2)
        c.p = q + 1
        _ws(c)
        if c.p >= c.end or c.p[0] != 58:
            return False
        c.p += 1
        _put(o, b":", 1)
        _ws(c)
        if not _canon_value(c, o, depth + 1):
            return False
        _ws(c)
        if c.p < c.end and c.p[0] == 44:
            c.p += 1
            continue
        if c.p < c.end and c.p[0] == 125:
            c.p += 1
            return True
        return False


cdef bint _canon_value(Cur* c, Out* o, int depth) except -1:
    cdef const uint8_t* q
    cdef uint8_t ch
    cdef bint nonempty
    if depth > 32 or c.p >= c.end:
        return False
    ch = c.p[0]
    if ch == 34:
        q = _str_end(c, c.p + 1)
        if q == NULL:
            return False
        _put(o, <const char*>c.p, q + 1 - c.p)
        c.p = q + 1
        return True
    if ch == 45 or _digit(ch):
        return _canon_number(c, o)
    if ch == 123:
        c.p += 1
        _put(o, b"{", 1)
        if not _canon_members(c, o, depth, &nonempty):
            return False
        _put(o, b"}", 1)
        return True
    if ch == 91:
        c.p += 1
        _put(o, b"[", 1)
        _ws(c)
        if c.p < c.end and c.p[0] == 93:
            c.p += 1
            _put(o, b"]", 1)
            return True
        while True:
            _ws(c)
            if not _canon_value(c, o, depth + 1):
                return False
            _ws(c)
            if c.p < c.end and c.p[0] == 44:
                c.p += 1
                _put(o, b",", 1)
                continue
            if c.p < c.end and c.p[0] == 93:
                c.p += 1
                _put(o, b"]", 1)
                return True
            return False
    if c.end - c.p >= 4 and memcmp(c.p, b"true", 4) == 0:
        _put(o, b"true", 4)
        c.p += 4
        return True
    if c.end - c.p >= 5 and memcmp(c.p, b"false", 5) == 0:
        _put(o, b"false", 5)
        c.p += 5
        return True
    if c.end - c.p >= 4 and memcmp(c.p, b"null", 4) == 0:
        _put(o, b"null", 4)
        c.p += 4
        return True
    return False


cdef inline bint _is_key(const uint8_t* k, Py_ssize_t n, const char* name, Py_ssize_t m) noexcept nogil:
    return n == m and memcmp(k, name, m) == 0


cdef bint _rxpk_json(Cur* c, Out* o) except -1:
    """One rxpk of `decode gwmp`: its members unchanged, then PHYPayload and phy. False for
    anything the general path words (a bad rxpk, a malformed frame, a member it would move)."""
    cdef const uint8_t* kp[MAX_KEYS]
    cdef Py_ssize_t kn[MAX_KEYS]
    cdef int nkeys = 0
    cdef uint64_t bloom = 0
    cdef const uint8_t* k
    cdef const uint8_t* q
    cdef Py_ssize_t klen
    cdef const uint8_t* data = NULL
    cdef Py_ssize_t ndata = 0
    cdef int64_t size = -1
    cdef bint has_size = False
    cdef const uint8_t* v
    if c.p >= c.end or c.p[0] != 123:
        return False
    c.p += 1
    _put(o, b"{", 1)
    while True:
        _ws(c)
        if c.p >= c.end or c.p[0] != 34:
            return False
        k = c.p + 1
        q = _str_end(c, k)
        if q == NULL or nkeys == MAX_KEYS:
            return False
        klen = q - k
        if _dup_key(kp, kn, nkeys, &bloom, k, klen):
            return False
        if _is_key(k, klen, b"PHYPayload", 10) or _is_key(k, klen, b"phy", 3) or _is_key(k, klen, b"error", 5):
            return False  # the general path overwrites it in place
        kp[nkeys] = k
        kn[nkeys] = klen
        if nkeys:
            _put(o, b",", 1)
        nkeys += 1
        _put(o, <const char*>(k - 1), klen + 2)
        c.p = q + 1
        _ws(c)
        if c.p >= c.end or c.p[0] != 58:
            return False
        c.p += 1
        _put(o, b":", 1)
        _ws(c)
        v = c.p
        if not _canon_value(c, o, 3):
            return False
        if _is_key(k, klen, b"data", 4):
            if v[0] != 34:
                return False
            data = v + 1
            ndata = c.p - v - 2
        elif _is_key(k, klen, b"size", 4):
            if c.p - v > 9 or v[0] == 45 or memchr(v, 46, c.p - v) != NULL or not _digit(v[0]):
                return False
            has_size = True
            size = 0
            while v < c.p:
                size = size * 10 + (v[0] - 48)
                v += 1
        _ws(c)
        if c.p < c.end and c.p[0] == 44:
            c.p += 1
            continue
        if c.p < c.end and c.p[0] == 125:
            c.p += 1
            break
        return False
    if data == NULL:
        return False
    phy = _b64_try(data, ndata)
    if phy is None or (has_size and size != PyBytes_GET_SIZE(phy)):
        return False
    _puts(o, b',"PHYPayload":')
    _puthex(o, <const uint8_t*>PyBytes_AS_STRING(phy), PyBytes_GET_SIZE(phy))
    _puts(o, b',"phy":')
    if not _phy_json(o, <const uint8_t*>PyBytes_AS_STRING(phy), PyBytes_GET_SIZE(phy)):
        return False
    _put(o, b"}", 1)
    return True


cdef bint _gwmp_json(Out* o, const uint8_t* base, Py_ssize_t n) except -1:
    """The `decode gwmp` object of a PUSH_DATA datagram; False for anything else."""
    cdef Cur c
    cdef const uint8_t* kp[MAX_KEYS]
    cdef Py_ssize_t kn[MAX_KEYS]
    cdef int nkeys = 0, count
    cdef uint64_t bloom = 0
    cdef const uint8_t* k
    cdef const uint8_t* q
    cdef Py_ssize_t klen
    cdef bint nonempty
    if n < 13 or n > C_MAX_DATAGRAM or (base[0] != 1 and base[0] != 2) or base[3] != 0:
        return False
    if base[n - 1] == 0:
        return False  # a C string terminator: the general path drops it
    _puts(o, b'{"ProtocolVersion":')
    _putint(o, base[0])
    _puts(o, b',"Token":')
    _putint(o, _le16(base + 1))
    _puts(o, b',"Identifier":"PUSH_DATA","GatewayEUI":')
    _putxint(o, (<uint64_t>base[4] << 56) | (<uint64_t>base[5] << 48) | (<uint64_t>base[6] << 40)
             | (<uint64_t>base[7] << 32) | (<uint64_t>base[8] << 24) | (<uint64_t>base[9] << 16)
             | (<uint64_t>base[10] << 8) | <uint64_t>base[11], 16)
    c.p = base + 12
    c.end = base + n
    c.bail = False
    _ws(&c)
    if c.p >= c.end or c.p[0] != 123:
        return False
    c.p += 1
    _ws(&c)
    if c.p < c.end and c.p[0] == 125:
        c.p += 1
    else:
        while True:
            _ws(&c)
            if c.p >= c.end or c.p[0] != 34:
                return False
            k = c.p + 1
            q = _str_end(&c, k)
            if q == NULL or nkeys == MAX_KEYS:
                return False
            klen = q - k
            if _dup_key(kp, kn, nkeys, &bloom, k, klen):
                return False
            if (_is_key(k, klen, b"ProtocolVersion", 15) or _is_key(k, klen, b"Token", 5)
                    or _is_key(k, klen, b"Identifier", 10) or _is_key(k, klen, b"GatewayEUI", 10)):
                return False
            kp[nkeys] = k
            kn[nkeys] = klen
            nkeys += 1
            _put(o, b",", 1)
            _put(o, <const char*>(k - 1), klen + 2)
            c.p = q + 1
            _ws(&c)
            if c.p >= c.end or c.p[0] != 58:
                return False
            c.p += 1
            _put(o, b":", 1)
            _ws(&c)
            if c.p >= c.end:
                return False
            if _is_key(k, klen, b"rxpk", 4):
                if c.p[0] != 91:
                    return False
                c.p += 1
                _put(o, b"[", 1)
                _ws(&c)
                if c.p < c.end and c.p[0] == 93:
                    c.p += 1
                else:
                    count = 0
                    while True:
                        _ws(&c)
                        if count == C_MAX_RXPK or not _rxpk_json(&c, o):
                            return False
                        count += 1
                        _ws(&c)
                        if c.p < c.end and c.p[0] == 44:
                            c.p += 1
                            _put(o, b",", 1)
                            continue
                        if c.p < c.end and c.p[0] == 93:
                            c.p += 1
                            break
                        return False
                _put(o, b"]", 1)
            elif _is_key(k, klen, b"stat", 4):
                if c.p[0] == 123:
                    c.p += 1
                    _put(o, b"{", 1)
                    if not _canon_members(&c, o, 1, &nonempty):
                        return False
                    _put(o, b"}", 1)
                elif not (c.end - c.p >= 4 and memcmp(c.p, b"null", 4) == 0):
                    return False
                else:
                    _put(o, b"null", 4)
                    c.p += 4
            elif not _canon_value(&c, o, 1):
                return False
            _ws(&c)
            if c.p < c.end and c.p[0] == 44:
                c.p += 1
                continue
            if c.p < c.end and c.p[0] == 125:
                c.p += 1
                break
            return False
    _ws(&c)
    if c.p != c.end:
        return False
    _put(o, b"}", 1)
    return True


# The datagram or frame of the line at hand, NUL-terminated as the JSON scan wants it (its byte
# loop stops at a byte that cannot be in a plain string): one buffer for every line.
cdef uint8_t* _scratch = NULL
cdef Py_ssize_t _scratch_cap = 0

#: Longer lines (a datagram's hex is at most 2 * 65507) go to the general path, which also
#: says when a line is longer than the tool takes.
cdef Py_ssize_t _FAST_LINE_MAX = 2 * 65507 + 256


cdef const uint8_t* _unhex_scratch(const uint8_t* s, Py_ssize_t n) except? NULL:
    """The bytes of an even run of hex digits in the scratch buffer; NULL for anything else."""
    global _scratch, _scratch_cap
    cdef Py_ssize_t i
    cdef int v, bad = 0
    cdef uint8_t* grown
    if n == 0 or n & 1:
        return NULL
    if _scratch_cap < (n >> 1) + 1:
        grown = <uint8_t*>PyMem_Realloc(_scratch, (n >> 1) + 1)
        if grown == NULL:
            raise MemoryError()
        _scratch = grown
        _scratch_cap = (n >> 1) + 1
    for i in range(n >> 1):
        # a bad digit is -1: the pair comes out negative, and so does `bad` (checked once)
        v = (_HEXVAL[s[2 * i]] * 16) | _HEXVAL[s[2 * i + 1]]
        bad |= v
        _scratch[i] = <uint8_t>v
    _scratch[n >> 1] = 0
    if bad < 0:
        return NULL
    return _scratch


def decode_lines(kind, bytes block, fallback):
    """Output of a `schwebe decode phy|gwmp -` batch for the lines of ``block`` (each ended by
    "\\n"; a last one without it counts too): one JSON line each, "\\n"-terminated, in order.

    Lines this module cannot answer with certainty go to ``fallback(line) -> (bytes, failed)``
    (the line without its "\\n"). Returns (output, number of failed lines).
    """
    cdef Out o
    cdef Py_ssize_t mark, hn, n = PyBytes_GET_SIZE(block)
    cdef const uint8_t* base = <const uint8_t*>PyBytes_AS_STRING(block)
    cdef const uint8_t* p = base
    cdef const uint8_t* end = base + n
    cdef const uint8_t* q
    cdef const uint8_t* hp
    cdef const uint8_t* raw
    cdef bint gwmp
    cdef int failed = 0
    cdef bint ok
    if kind == "phy":
        gwmp = False
    elif kind == "gwmp":
        gwmp = True
    else:
        raise ValueError(f"kind must be 'phy' or 'gwmp', not {kind!r}")
    _mac_tables()
    o.obj = NULL
    o.buf = NULL
    o.n = 0
    o.cap = 0
    # what the output takes, about: a PHYPayload's object is ~5x its hex, a datagram's ~1x
    _grow(&o, (n + n // 4 if gwmp else 6 * n) + 4096)
    try:
        while p < end:
            q = <const uint8_t*>memchr(p, 10, end - p)
            if q == NULL:
                q = end
            mark = o.n
            ok = False
            if q - p <= _FAST_LINE_MAX and _input_hex(
                p, q - p, b"gwmp" if gwmp else b"phy", 4 if gwmp else 3, &hp, &hn
            ):
                raw = _unhex_scratch(hp, hn)
                if raw != NULL:
                    if gwmp:
                        ok = _gwmp_json(&o, raw, hn >> 1)
                    else:
                        ok = _phy_json(&o, raw, hn >> 1)
            if ok:
                _put(&o, b"\n", 1)
                p = q + 1
                continue
            o.n = mark  # drop what a refused line wrote
            text, bad = fallback(PyBytes_FromStringAndSize(<const char*>p, q - p))
            if not PyBytes_CheckExact(text):
                raise TypeError(f"fallback must return bytes, not {type(text).__name__}")
            if bad:
                failed += 1
            _put(&o, PyBytes_AS_STRING(text), PyBytes_GET_SIZE(text))
            _put(&o, b"\n", 1)
            p = q + 1
        _PyBytes_Resize(&o.obj, o.n)
        result = <object>o.obj
        return result, failed
    finally:
        Py_XDECREF(o.obj)
