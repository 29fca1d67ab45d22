# A datagram's rxpk to uplink records in one call: gateway/frames/_frames_py.py's
# `uplink_records` is the reference, this gives the same answers (tests/test_uplink_records.py).
#
# The daemon did this per rxpk in Python: read the fields, write "data" back as padded base64,
# ask the door, build the body dict, encode it to CBOR, make a Record. Each step was cheap alone,
# together they were a fifth of the gateway's CPU per frame at 2 000 frames/s (py-spy on the
# running daemon). Here the loop, the base64, the door's usual answer and the CBOR body are C;
# only what the door must explain and bodies the fast writer declines go back to Python.

import cbor2 as _cbor2

cdef object _cbor2_dumps = _cbor2.dumps
cdef const char* _B64ENC = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


cdef str _b64_str(bytes data):
    """binascii.b2a_base64(data, newline=False).decode("ascii"), without the two objects."""
    cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data), i = 0, j = 0
    cdef str out = PyUnicode_New(((n + 2) // 3) * 4, 127)
    cdef uint8_t* o = <uint8_t*>PyUnicode_DATA(out)
    cdef uint32_t v
    while i + 3 <= n:
        v = (<uint32_t>p[i] << 16) | (<uint32_t>p[i + 1] << 8) | p[i + 2]
        o[j] = _B64ENC[v >> 18]
        o[j + 1] = _B64ENC[(v >> 12) & 63]
        o[j + 2] = _B64ENC[(v >> 6) & 63]
        o[j + 3] = _B64ENC[v & 63]
        i += 3
        j += 4
    if n - i == 1:
        v = <uint32_t>p[i] << 16
        o[j] = _B64ENC[v >> 18]
        o[j + 1] = _B64ENC[(v >> 12) & 63]
        o[j + 2] = 61  # "="
        o[j + 3] = 61
    elif n - i == 2:
        v = (<uint32_t>p[i] << 16) | (<uint32_t>p[i + 1] << 8)
        o[j] = _B64ENC[v >> 18]
        o[j + 1] = _B64ENC[(v >> 12) & 63]
        o[j + 2] = _B64ENC[(v >> 6) & 63]
        o[j + 3] = 61
    return out


cdef inline object _rx_fields(object rx):
    """rx.fields, built from the datagram here when it is still lazy (Rxpk.fields)."""
    cdef Rxpk r
    cdef const uint8_t* base
    if type(rx) is not Rxpk:
        return rx.fields
    r = <Rxpk>rx
    if r._fields is None:
        base = <const uint8_t*>PyBytes_AS_STRING(r._src)
        r._fields = _build_rxpk(base + r._start, base + r._end, r._nkeys)
        r._src = None
    return r._fields


cdef bytes _uplink_body(str eui_hex, object fields):
    """cbor2.dumps({"gateway_eui": eui_hex, "rxpk": fields}), the usual case in C."""
    cdef CborOut o
    cdef Py_ssize_t n
    cdef const char* s
    o.cap = 512
    o.n = 0
    o.buf = <uint8_t*>PyMem_Malloc(o.cap)
    if o.buf == NULL:
        raise MemoryError()
    try:
        _cb_head(&o, 5, 2)
        _cb_raw(&o, 3, b"gateway_eui", 11)
        s = PyUnicode_AsUTF8AndSize(eui_hex, &n)
        _cb_raw(&o, 3, s, n)
        _cb_raw(&o, 3, b"rxpk", 4)
        if _cb_obj(&o, fields, 1) == 1:
            return PyBytes_FromStringAndSize(<const char*>o.buf, o.n)
    finally:
        PyMem_Free(o.buf)
    return _cbor2_dumps({"gateway_eui": eui_hex, "rxpk": fields})


def uplink_records(rxpk, str eui_hex, Py_ssize_t max_phy, record_type, str source, received_us):
    """(records, fields, phys, refused) for one PUSH_DATA's rxpk: see _frames_py.uplink_records."""
    cdef list records = [], goods = [], phys = [], refused = []
    cdef object phy, error, fields, answer, body
    cdef bint as_tuple = issubclass(record_type, tuple)
    for rx in rxpk:
        if type(rx) is Rxpk:
            phy, error = (<Rxpk>rx).phy, (<Rxpk>rx).error
        else:
            phy, error = rx.phy, rx.error
        if error is not None:
            refused.append(error.kind)
            continue
        if phy is None:
            refused.append("missing_data")
            continue
        if not PyBytes_CheckExact(phy):
            phy = bytes(phy)
        if PyBytes_GET_SIZE(phy) > max_phy:
            refused.append("too_large")
            continue
        fields = _rx_fields(rx)
        fields["data"] = _b64_str(phy)
        if not (PyDict_CheckExact(fields) and _door_clean(<dict>fields)):
            answer = _door_twin(fields)
            if answer is not None:
                refused.append(answer[0])
                continue
        body = _uplink_body(eui_hex, fields)
        if as_tuple:
            records.append(tuple.__new__(record_type, ("uplink", source, received_us, body, 0)))
        else:
            records.append(record_type("uplink", source, received_us, body, 0))
        goods.append(fields)
        phys.append(phy)
    return records, goods, phys, refused
