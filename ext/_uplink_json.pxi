# An uplink record's CBOR body -> its ChirpStack `gw.UplinkFrame` JSON, in one pass, no dicts.
#
# The MQTT forwarder's general path is cbor2.loads -> chirpstack_json.uplink_frame -> orjson:
# three calls, two dicts of a dozen items and a JSON writer per frame, measured at 14 µs a
# frame inside the running daemon (tests/bench/bench_end_to_end.py --daemon). This reads the
# CBOR a record holds (a map of text keys to scalars, as make_record writes it) and writes the
# same bytes the general path would. It answers only where it is certain to agree: any other
# CBOR type, a non-ASCII or escaped string, a bool where a number is read, a float that orjson
# and repr() would print differently, an integer beyond 2**53 where a float is made of it:
# None, and the caller takes the general path (tests/test_uplink_json.py holds the two equal).

cdef extern from "Python.h":
    char* PyOS_double_to_string(double val, char format_code, int precision, int flags, int* ptype) except NULL
    int Py_DTSF_ADD_DOT_0
    object PyUnicode_DecodeASCII(const char* s, Py_ssize_t size, const char* errors)

cdef extern from "<string.h>":
    size_t strlen(const char* s) nogil

cdef extern from "<math.h>":
    bint isfinite(double x) nogil
    double nearbyint(double x) nogil
    double fabs(double x) nogil

cdef double _TWO63 = 9223372036854775808.0

cdef extern from "<time.h>":
    ctypedef long time_t
    struct tm:
        int tm_sec
        int tm_min
        int tm_hour
        int tm_mday
        int tm_mon
        int tm_year
    tm* gmtime_r(const time_t* timep, tm* result) nogil

cdef extern from "<stdio.h>":
    int snprintf(char* buf, size_t n, const char* fmt, ...) nogil

# records.iso_us in C for the years it writes with four digits (1970-9999): 27 characters
# into ``out``; 0 when the Python function must answer (before 1970, beyond 9999).
cdef inline int _iso_us_c(int64_t us, char* out) noexcept nogil:
    cdef time_t secs
    cdef tm t
    if us < 0:
        return 0
    secs = <time_t>(us // 1000000)
    if gmtime_r(&secs, &t) == NULL or t.tm_year + 1900 > 9999:
        return 0
    # digits by hand: glibc's snprintf cost 3 600 instructions a record (callgrind)
    _digits(out, t.tm_year + 1900, 4)
    out[4] = 45  # -
    _digits(out + 5, t.tm_mon + 1, 2)
    out[7] = 45
    _digits(out + 8, t.tm_mday, 2)
    out[10] = 84  # T
    _digits(out + 11, t.tm_hour, 2)
    out[13] = 58  # :
    _digits(out + 14, t.tm_min, 2)
    out[16] = 58
    _digits(out + 17, t.tm_sec, 2)
    out[19] = 46  # .
    _digits(out + 20, <int>(us % 1000000), 6)
    out[26] = 90  # Z
    out[27] = 0
    return 27


cdef inline void _digits(char* out, int v, int width) noexcept nogil:
    """v (0 <= v < 10**width) as exactly ``width`` decimal digits, zero-padded."""
    cdef int i
    for i in range(width - 1, -1, -1):
        out[i] = <char>(48 + v % 10)
        v //= 10

cdef enum:
    CV_ABSENT = 0
    CV_INT = 1      # fits int64
    CV_FLOAT = 2    # a CBOR double
    CV_STR = 3      # printable ASCII, no '"' or '\\'
    CV_OTHERSTR = 4 # ASCII text that is not plain
    CV_BOOL = 5
    CV_NULL = 6
    CV_OTHER = 7    # anything else that decodes (a big integer, a half or single float)

cdef struct CVal:
    int kind
    int64_t i
    double d
    const uint8_t* s
    Py_ssize_t n

cdef struct UpSlots:
    CVal data, time, tmms, rssi, lsnr, chan, rfch, tmst, stat, freq, modu, datr, codr

cdef uint32_t _CRC[256]
cdef uint32_t _crc_c
for _i in range(256):
    _crc_c = _i
    for _ in range(8):
        _crc_c = (_crc_c >> 1) ^ 0xEDB88320 if _crc_c & 1 else _crc_c >> 1
    _CRC[_i] = _crc_c

cdef inline uint32_t _crc32(uint32_t crc, const uint8_t* p, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t k
    crc = ~crc
    for k in range(n):
        crc = _CRC[(crc ^ p[k]) & 0xFF] ^ (crc >> 8)
    return ~crc

cdef const char* _B64ALPHA = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
cdef object _iso_us = None

# CBOR head: major type and argument; False on an indefinite length, a reserved value or the end.
cdef inline bint _cbor_head(const uint8_t** pp, const uint8_t* end, int* major, uint64_t* arg) noexcept nogil:
    cdef const uint8_t* p = pp[0]
    cdef int info, k, width
    cdef uint64_t v
    if p >= end:
        return False
    major[0] = p[0] >> 5
    info = p[0] & 31
    p += 1
    if info < 24:
        arg[0] = info
        pp[0] = p
        return True
    if info > 27:
        return False
    width = 1 << (info - 24)
    if end - p < width:
        return False
    v = 0
    for k in range(width):
        v = (v << 8) | p[k]
    arg[0] = v
    pp[0] = p + width
    return True

# One scalar value into ``out``; False when it is not a scalar this path reads (bytes, array,
# map, tag, simple values other than false/true/null), or the buffer ends: the caller gives up.
cdef inline bint _cbor_scalar(const uint8_t** pp, const uint8_t* end, CVal* out) noexcept nogil:
    cdef int major
    cdef uint64_t arg, bits
    cdef const uint8_t* p
    cdef Py_ssize_t k
    cdef bint plain
    cdef uint8_t ch
    if pp[0] < end and pp[0][0] == 0xFB:  # double
        p = pp[0] + 1
        if end - p < 8:
            return False
        bits = 0
        for k in range(8):
            bits = (bits << 8) | p[k]
        memcpy(&out.d, &bits, 8)
        out.kind = CV_FLOAT
        pp[0] = p + 8
        return True
    if not _cbor_head(pp, end, &major, &arg):
        return False
    if major == 0:
        out.kind = CV_INT if arg <= <uint64_t>0x7FFFFFFFFFFFFFFF else CV_OTHER
        out.i = <int64_t>arg
        return True
    if major == 1:
        out.kind = CV_INT if arg <= <uint64_t>0x7FFFFFFFFFFFFFFF else CV_OTHER
        out.i = -1 - <int64_t>arg
        return True
    if major == 3:
        p = pp[0]
        if <uint64_t>(end - p) < arg:
            return False
        plain = True
        for k in range(<Py_ssize_t>arg):
            ch = p[k]
            if ch >= 0x80:
                return False  # UTF-8 beyond ASCII: the general path decodes (or refuses) it
            if not _PLAIN[ch]:
                plain = False
        out.kind = CV_STR if plain else CV_OTHERSTR
        out.s = p
        out.n = <Py_ssize_t>arg
        pp[0] = p + arg
        return True
    if major == 7 and (arg == 20 or arg == 21):
        out.kind = CV_BOOL
        return True
    if major == 7 and arg == 22:
        out.kind = CV_NULL
        return True
    return False

cdef inline bint _key_is(const uint8_t* s, Py_ssize_t n, const char* name, Py_ssize_t m) noexcept nogil:
    return n == m and memcmp(s, name, m) == 0

cdef inline CVal* _up_slot(UpSlots* u, const uint8_t* s, Py_ssize_t n) noexcept nogil:
    if n == 4:
        if memcmp(s, b"data", 4) == 0: return &u.data
        if memcmp(s, b"time", 4) == 0: return &u.time
        if memcmp(s, b"tmms", 4) == 0: return &u.tmms
        if memcmp(s, b"rssi", 4) == 0: return &u.rssi
        if memcmp(s, b"lsnr", 4) == 0: return &u.lsnr
        if memcmp(s, b"chan", 4) == 0: return &u.chan
        if memcmp(s, b"rfch", 4) == 0: return &u.rfch
        if memcmp(s, b"tmst", 4) == 0: return &u.tmst
        if memcmp(s, b"stat", 4) == 0: return &u.stat
        if memcmp(s, b"freq", 4) == 0: return &u.freq
        if memcmp(s, b"modu", 4) == 0: return &u.modu
        if memcmp(s, b"datr", 4) == 0: return &u.datr
        if memcmp(s, b"codr", 4) == 0: return &u.codr
    return NULL

# A small writer over a fixed buffer; ``full`` once anything did not fit (the caller gives up).
cdef struct UJOut:
    char* buf
    Py_ssize_t n
    Py_ssize_t cap
    bint full

cdef inline void _uj_put(UJOut* o, const char* s, Py_ssize_t n) noexcept nogil:
    if o.n + n > o.cap:
        o.full = True
        return
    memcpy(o.buf + o.n, s, n)
    o.n += n

cdef inline void _uj_puts(UJOut* o, const char* s) noexcept nogil:
    _uj_put(o, s, <Py_ssize_t>strlen(s))

cdef inline void _uj_int(UJOut* o, int64_t v) noexcept nogil:
    cdef char tmp[24]
    cdef int k = 24
    cdef uint64_t u = <uint64_t>(-(v + 1)) + 1 if v < 0 else <uint64_t>v
    if u == 0:
        k -= 1
        tmp[k] = 48
    while u:
        k -= 1
        tmp[k] = <char>(48 + u % 10)
        u //= 10
    if v < 0:
        k -= 1
        tmp[k] = 45
    _uj_put(o, tmp + k, 24 - k)

cdef inline bint _uj_double(UJOut* o, double d, char code, int precision, int flags):
    cdef char* text = PyOS_double_to_string(d, code, precision, flags, NULL)
    _uj_puts(o, text)
    PyMem_Free(text)
    return True


# The value a number field turns into as a float (Python float(x)); False when the fast path
# cannot be sure to agree (a bool, an integer too large to be exact, a non-number).
cdef inline bint _as_double(CVal* v, double* out) noexcept nogil:
    if v.kind == CV_FLOAT:
        out[0] = v.d
        return True
    if v.kind == CV_INT and -<int64_t>9007199254740992 <= v.i <= <int64_t>9007199254740992:
        out[0] = <double>v.i
        return True
    return False

# A number field's presence as Python's isinstance(x, int | float) sees it: 1 yes, 0 no,
# -1 undecidable here (a bool is an int to isinstance; a big integer).
cdef inline int _is_number(CVal* v) noexcept nogil:
    if v.kind == CV_INT or v.kind == CV_FLOAT:
        return 1
    if v.kind == CV_BOOL or v.kind == CV_OTHER:
        return -1
    return 0

cdef inline int _is_int(CVal* v) noexcept nogil:
    if v.kind == CV_INT:
        return 1
    if v.kind == CV_BOOL or v.kind == CV_OTHER:
        return -1
    return 0

cdef inline bint _json_float(UJOut* o, double d):
    # repr() and orjson print a finite float alike from 1e-4 up (and 0.0); below, they
    # differ in the exponent's form ("1e-05" vs "1e-5"), and non-finite is no JSON number.
    if not isfinite(d) or (d != 0.0 and fabs(d) < 1e-4):
        return False
    return _uj_double(o, d, b'r', 0, Py_DTSF_ADD_DOT_0)

cdef inline int _parse_sf_bw(const uint8_t* s, Py_ssize_t n, int* sf, int* bw) noexcept nogil:
    # ^SF(\d{1,2})BW(\d{2,4})$ over a plain string (no newline can be in it)
    cdef Py_ssize_t k = 2, start
    if n < 7 or s[0] != 83 or s[1] != 70:
        return 0
    start = k
    sf[0] = 0
    while k < n and 48 <= s[k] <= 57 and k - start < 2:
        sf[0] = sf[0] * 10 + (s[k] - 48)
        k += 1
    if k == start or k + 2 > n or s[k] != 66 or s[k + 1] != 87:
        return 0
    k += 2
    start = k
    bw[0] = 0
    while k < n and 48 <= s[k] <= 57 and k - start < 4:
        bw[0] = bw[0] * 10 + (s[k] - 48)
        k += 1
    if k - start < 2 or k != n:
        return 0
    return 1

cdef const char* _code_rate(const uint8_t* s, Py_ssize_t n) noexcept nogil:
    if n == 3:
        if memcmp(s, b"4/5", 3) == 0: return b"CR_4_5"
        if memcmp(s, b"4/6", 3) == 0 or memcmp(s, b"2/3", 3) == 0: return b"CR_4_6"
        if memcmp(s, b"4/7", 3) == 0: return b"CR_4_7"
        if memcmp(s, b"4/8", 3) == 0 or memcmp(s, b"1/2", 3) == 0: return b"CR_4_8"
        if memcmp(s, b"1/4", 3) == 0: return b"CR_1_4"
        if memcmp(s, b"1/6", 3) == 0: return b"CR_1_6"
        if memcmp(s, b"2/6", 3) == 0: return b"CR_2_6"
        if memcmp(s, b"3/8", 3) == 0: return b"CR_3_8"
        if memcmp(s, b"5/6", 3) == 0: return b"CR_5_6"
    elif n == 5:
        if memcmp(s, b"4/5LI", 5) == 0: return b"CR_LI_4_5"
        if memcmp(s, b"4/6LI", 5) == 0: return b"CR_LI_4_6"
        if memcmp(s, b"4/8LI", 5) == 0: return b"CR_LI_4_8"
    return NULL

cdef inline void _uj_int_text(char* out, int64_t v, uint64_t* n) noexcept nogil:
    cdef UJOut o
    o.buf = out
    o.n = 0
    o.cap = 32
    o.full = False
    _uj_int(&o, v)
    n[0] = <uint64_t>o.n


def uplink_json_fast(body, received_us, bint replay):
    """``(gateway_eui, ChirpStack JSON bytes)`` of an uplink record body, or None where the
    general path (cbor2 -> chirpstack_json.uplink_frame -> orjson) must answer."""
    cdef char buf[2048]
    cdef UJOut o
    cdef CVal eui
    cdef int64_t rus
    if not PyBytes_CheckExact(body) or not PyLong_CheckExact(received_us):
        return None
    try:
        rus = received_us
    except OverflowError:
        return None
    o.buf = buf
    o.n = 0
    o.cap = sizeof(buf)
    o.full = False
    if not _uplink_json_into(<bytes>body, rus, received_us, replay, &o, &eui):
        return None
    return (PyUnicode_DecodeASCII(<const char*>eui.s, eui.n, NULL),
            PyBytes_FromStringAndSize(o.buf, o.n))


cdef int _uplink_json_into(bytes body, int64_t rus, object received_us, bint replay, UJOut* out,
                           CVal* eui_out) except -1:
    """uplink_json_fast's work: the JSON into ``out`` (its buffer the caller's, empty), the
    gateway EUI's span in the body into ``eui_out``; 1, or 0 where the general path must answer."""
    global _iso_us
    cdef const uint8_t* p
    cdef const uint8_t* end
    cdef int major, sf, bw, num
    cdef uint64_t arg, pairs, rx_pairs, k, j
    cdef CVal key, val, eui
    cdef CVal* slot
    cdef UpSlots u
    cdef double d
    cdef char tmp[32]
    cdef uint32_t crc, ctx
    cdef uint8_t cb[4]
    cdef const char* cr
    cdef UJOut o
    cdef bint seen_rxpk = False
    p = <const uint8_t*>PyBytes_AS_STRING(body)
    end = p + PyBytes_GET_SIZE(body)
    memset(&u, 0, sizeof(u))
    memset(&eui, 0, sizeof(eui))
    if not _cbor_head(&p, end, &major, &pairs) or major != 5:
        return 0
    for k in range(pairs):
        if not _cbor_scalar(&p, end, &key) or key.kind != CV_STR:
            return 0
        if _key_is(key.s, key.n, b"rxpk", 4):
            if not _cbor_head(&p, end, &major, &rx_pairs) or major != 5:
                return 0
            seen_rxpk = True
            memset(&u, 0, sizeof(u))  # a repeated key: the last one counts, as in a dict
            for j in range(rx_pairs):
                if not _cbor_scalar(&p, end, &key) or key.kind != CV_STR:
                    return 0
                if not _cbor_scalar(&p, end, &val):
                    return 0
                slot = _up_slot(&u, key.s, key.n)
                if slot != NULL:
                    slot[0] = val
        else:
            if not _cbor_scalar(&p, end, &val):
                return 0
            if _key_is(key.s, key.n, b"gateway_eui", 11):
                eui = val
    if p != end or not seen_rxpk or eui.kind != CV_STR or eui.n == 0:
        return 0
    if u.data.kind != CV_STR and u.data.kind != CV_ABSENT:
        return 0

    o = out[0]
    _uj_puts(&o, b'{"phyPayload":"')
    if u.data.kind == CV_STR:
        _uj_put(&o, <const char*>u.data.s, u.data.n)
    _uj_puts(&o, b'","txInfo":{"frequency":')
    num = _is_number(&u.freq)
    if num < 0:
        return 0
    if num:
        if not _as_double(&u.freq, &d):
            return 0
        d = nearbyint(d * 1e6)  # Python's round(): half to even, as nearbyint by default
        if not isfinite(d) or fabs(d) >= _TWO63:
            return 0
        _uj_int(&o, <int64_t>d)
    else:
        _uj_puts(&o, b"0")
    # modulation
    if u.modu.kind == CV_STR and _key_is(u.modu.s, u.modu.n, b"LORA", 4) and u.datr.kind == CV_STR:
        if _parse_sf_bw(u.datr.s, u.datr.n, &sf, &bw):
            _uj_puts(&o, b',"modulation":{"lora":{"bandwidth":')
            _uj_int(&o, <int64_t>bw * 1000)
            _uj_puts(&o, b',"spreadingFactor":')
            _uj_int(&o, sf)
            if u.codr.kind == CV_STR:
                cr = _code_rate(u.codr.s, u.codr.n)
                if cr != NULL:
                    _uj_puts(&o, b',"codeRate":"')
                    _uj_puts(&o, cr)
                    _uj_puts(&o, b'"')
            elif u.codr.kind == CV_OTHERSTR:
                return 0
            _uj_puts(&o, b"}}")
    elif u.modu.kind == CV_STR and _key_is(u.modu.s, u.modu.n, b"FSK", 3):
        num = _is_number(&u.datr)
        if num < 0:
            return 0
        if num:
            if u.datr.kind == CV_FLOAT:
                if not isfinite(u.datr.d) or fabs(u.datr.d) >= _TWO63:
                    return 0
                _uj_puts(&o, b',"modulation":{"fsk":{"datarate":')
                _uj_int(&o, <int64_t>u.datr.d)  # int(): toward zero
            else:
                _uj_puts(&o, b',"modulation":{"fsk":{"datarate":')
                _uj_int(&o, u.datr.i)
            _uj_puts(&o, b"}}")
    elif u.modu.kind == CV_OTHERSTR or (u.modu.kind == CV_STR and u.datr.kind == CV_OTHERSTR):
        return 0
    _uj_puts(&o, b'},"rxInfo":{"gatewayId":"')
    _uj_put(&o, <const char*>eui.s, eui.n)
    _uj_puts(&o, b'","uplinkId":')
    # uplink_id(): crc32 of f"{received_us}:{data}"
    # the decimal text of received_us, then ':' and the data
    _uj_int_text(tmp, rus, &j)
    crc = _crc32(0, <const uint8_t*>tmp, <Py_ssize_t>j)
    crc = _crc32(crc, <const uint8_t*>b":", 1)
    if u.data.kind == CV_STR:
        crc = _crc32(crc, u.data.s, u.data.n)
    _uj_int(&o, crc)
    _uj_puts(&o, b',"gwTime":"')
    if u.time.kind == CV_STR and u.time.n > 0:
        _uj_put(&o, <const char*>u.time.s, u.time.n)
        if not (u.time.s[u.time.n - 1] == 90 or (u.time.n > 10 and memchr(u.time.s + 10, 43, u.time.n - 10) != NULL)):
            _uj_puts(&o, b"Z")
    elif u.time.kind == CV_OTHERSTR:
        return 0
    elif _iso_us_c(rus, tmp) == 27:
        _uj_put(&o, tmp, 27)
    else:
        if _iso_us is None:
            from gateway.records import iso_us as _f
            _iso_us = _f
        iso = _iso_us(received_us)
        if not PyUnicode_CheckExact(iso) or not PyUnicode_IS_ASCII(iso):
            return 0
        _uj_put(&o, <const char*>PyUnicode_DATA(iso), PyUnicode_GET_LENGTH(iso))
    _uj_puts(&o, b'"')
    num = _is_number(&u.tmms)
    if num < 0:
        return 0
    if num:
        if not _as_double(&u.tmms, &d) or not isfinite(d):
            return 0
        _uj_puts(&o, b',"timeSinceGpsEpoch":"')
        _uj_double(&o, d / 1000, b'f', 3, 0)
        _uj_puts(&o, b's"')
    num = _is_number(&u.rssi)
    if num < 0:
        return 0
    if num:
        _uj_puts(&o, b',"rssi":')
        if u.rssi.kind == CV_FLOAT:
            if not isfinite(u.rssi.d) or fabs(u.rssi.d) >= _TWO63:
                return 0
            _uj_int(&o, <int64_t>u.rssi.d)  # int(): toward zero
        else:
            _uj_int(&o, u.rssi.i)
    num = _is_number(&u.lsnr)
    if num < 0:
        return 0
    if num:
        if not _as_double(&u.lsnr, &d):
            return 0
        _uj_puts(&o, b',"snr":')
        if not _json_float(&o, d):
            return 0
    num = _is_int(&u.chan)
    if num < 0:
        return 0
    if num:
        _uj_puts(&o, b',"channel":')
        _uj_int(&o, u.chan.i)
    num = _is_int(&u.rfch)
    if num < 0:
        return 0
    if num:
        _uj_puts(&o, b',"rfChain":')
        _uj_int(&o, u.rfch.i)
    num = _is_int(&u.tmst)
    if num < 0:
        return 0
    if num:
        ctx = <uint32_t>(<uint64_t>u.tmst.i & 0xFFFFFFFF)
        cb[0] = (ctx >> 24) & 0xFF
        cb[1] = (ctx >> 16) & 0xFF
        cb[2] = (ctx >> 8) & 0xFF
        cb[3] = ctx & 0xFF
        tmp[0] = _B64ALPHA[cb[0] >> 2]
        tmp[1] = _B64ALPHA[((cb[0] & 3) << 4) | (cb[1] >> 4)]
        tmp[2] = _B64ALPHA[((cb[1] & 15) << 2) | (cb[2] >> 6)]
        tmp[3] = _B64ALPHA[cb[2] & 63]
        tmp[4] = _B64ALPHA[cb[3] >> 2]
        tmp[5] = _B64ALPHA[(cb[3] & 3) << 4]
        tmp[6] = 61
        tmp[7] = 61
        _uj_puts(&o, b',"context":"')
        _uj_put(&o, tmp, 8)
        _uj_puts(&o, b'"')
    num = _is_int(&u.stat)
    if num < 0:
        return 0
    if num:
        if u.stat.i == 1:
            _uj_puts(&o, b',"crcStatus":"CRC_OK"')
        elif u.stat.i == -1:
            _uj_puts(&o, b',"crcStatus":"BAD_CRC"')
        elif u.stat.i == 0:
            _uj_puts(&o, b',"crcStatus":"NO_CRC"')
    if replay:
        _uj_puts(&o, b',"metadata":{"replay":"true"}')
    _uj_puts(&o, b"}}")
    if o.full:
        return 0
    out[0] = o
    eui_out[0] = eui
    return 1


