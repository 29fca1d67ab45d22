# cbor2.dumps for the shapes records hold (maps of text keys to scalars, nested a little), in C.
#
# make_record encodes every frame's body; cbor2's encoder paid ~5 µs a frame inside the running
# daemon, most of it setting up an encoder object for a dozen items. This writes the bytes
# cbor2.dumps writes (default options: definite lengths in insertion order, the shortest head,
# floats as doubles) for exact dict, list, tuple, str, int within 64 bits, finite float, bytes,
# bool and None, and declines (None) anything else, where cbor2 answers as before
# (tests/test_cbor_fast.py holds the two equal).

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object o, Py_ssize_t* size) except NULL
    bint PyTuple_CheckExact(object o)
    Py_ssize_t PyTuple_GET_SIZE(object o)
    PyObject* PyTuple_GET_ITEM(object o, Py_ssize_t i)
    void* PyMem_Realloc(void* p, size_t n)

cdef struct CborOut:
    uint8_t* buf
    Py_ssize_t n
    Py_ssize_t cap

cdef int _cb_room(CborOut* o, Py_ssize_t more) except -1:
    cdef Py_ssize_t cap
    cdef void* grown
    if o.n + more <= o.cap:
        return 0
    cap = o.cap * 2
    while cap < o.n + more:
        cap *= 2
    grown = PyMem_Realloc(o.buf, cap)
    if grown == NULL:
        raise MemoryError()
    o.buf = <uint8_t*>grown
    o.cap = cap
    return 0

cdef int _cb_head(CborOut* o, int major, uint64_t arg) except -1:
    cdef int width, k
    _cb_room(o, 9)
    if arg < 24:
        o.buf[o.n] = <uint8_t>((major << 5) | arg)
        o.n += 1
        return 0
    if arg < 0x100:
        width, o.buf[o.n] = 1, <uint8_t>((major << 5) | 24)
    elif arg < 0x10000:
        width, o.buf[o.n] = 2, <uint8_t>((major << 5) | 25)
    elif arg < 0x100000000:
        width, o.buf[o.n] = 4, <uint8_t>((major << 5) | 26)
    else:
        width, o.buf[o.n] = 8, <uint8_t>((major << 5) | 27)
    for k in range(width):
        o.buf[o.n + 1 + k] = <uint8_t>(arg >> (8 * (width - 1 - k)))
    o.n += 1 + width
    return 0

cdef int _cb_raw(CborOut* o, int major, const char* s, Py_ssize_t n) except -1:
    _cb_head(o, major, <uint64_t>n)
    _cb_room(o, n)
    memcpy(o.buf + o.n, s, n)
    o.n += n
    return 0

# 1: written; 0: declined (a type or value cbor2 must answer for); -1: an exception is set.
cdef int _cb_obj(CborOut* o, object obj, int depth) except -1:
    cdef Py_ssize_t n, i, pos
    cdef const char* s
    cdef long long v
    cdef int overflow
    cdef double d
    cdef uint64_t bits
    cdef PyObject* key
    cdef PyObject* value
    if depth > 16:
        return 0
    if PyUnicode_CheckExact(obj):
        try:
            s = PyUnicode_AsUTF8AndSize(obj, &n)
        except UnicodeError:
            return 0  # a lone surrogate: cbor2 raises its own error
        _cb_raw(o, 3, s, n)
        return 1
    if PyLong_CheckExact(obj):
        v = PyLong_AsLongLongAndOverflow(obj, &overflow)
        if overflow:
            return 0
        if v >= 0:
            _cb_head(o, 0, <uint64_t>v)
        else:
            _cb_head(o, 1, <uint64_t>(-(v + 1)))
        return 1
    if PyFloat_CheckExact(obj):
        d = PyFloat_AS_DOUBLE(obj)
        if not isfinite(d):
            return 0  # cbor2 writes NaN and the infinities as half floats
        memcpy(&bits, &d, 8)
        _cb_room(o, 9)
        o.buf[o.n] = 0xFB
        for i in range(8):
            o.buf[o.n + 1 + i] = <uint8_t>(bits >> (8 * (7 - i)))
        o.n += 1
        o.n += 8
        return 1
    if obj is None or obj is True or obj is False:
        _cb_room(o, 1)
        o.buf[o.n] = 0xF6 if obj is None else (0xF5 if obj is True else 0xF4)
        o.n += 1
        return 1
    if PyDict_CheckExact(obj):
        _cb_head(o, 5, <uint64_t>PyDict_GET_SIZE(obj))
        pos = 0
        while PyDict_Next(obj, &pos, &key, &value):
            if _cb_obj(o, <object>key, depth + 1) != 1 or _cb_obj(o, <object>value, depth + 1) != 1:
                return 0
        return 1
    if PyList_CheckExact(obj):
        n = PyList_GET_SIZE(obj)
        _cb_head(o, 4, <uint64_t>n)
        for i in range(n):
            if PyList_GET_SIZE(obj) != n or _cb_obj(o, <object>PyList_GET_ITEM(obj, i), depth + 1) != 1:
                return 0
        return 1
    if PyTuple_CheckExact(obj):
        n = PyTuple_GET_SIZE(obj)
        _cb_head(o, 4, <uint64_t>n)
        for i in range(n):
            if _cb_obj(o, <object>PyTuple_GET_ITEM(obj, i), depth + 1) != 1:
                return 0
        return 1
    if PyBytes_CheckExact(obj):
        _cb_raw(o, 2, PyBytes_AS_STRING(obj), PyBytes_GET_SIZE(obj))
        return 1
    return 0


def cbor_dumps_fast(obj):
    """``cbor2.dumps(obj)`` for the plain shapes records hold, or None where cbor2 must answer."""
    cdef CborOut o
    cdef int ok
    o.cap = 512
    o.n = 0
    o.buf = <uint8_t*>PyMem_Malloc(o.cap)
    if o.buf == NULL:
        raise MemoryError()
    try:
        ok = _cb_obj(&o, obj, 0)
        if ok != 1:
            return None
        return PyBytes_FromStringAndSize(<const char*>o.buf, o.n)
    finally:
        PyMem_Free(o.buf)
