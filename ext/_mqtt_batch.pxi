# The MQTT forwarder's batch in two calls. `uplink_publishes` gives the messages of the
# forwarder's per-record path (gateway/forward/mqtt.py) and `mqtt_publish_frames` the bytes of
# the connection's `publish_frames` (gateway/forward/mqtt_wire.py): tests/test_mqtt_batch.py.
#
# After the door went to C, the forwarder's per-record Python was the largest share left of the
# daemon's CPU per frame: for each uplink a method call, the encoder's call, a topic string, a
# message tuple; then for each message a packet id, an in-flight entry, the PUBLISH header and
# four pieces to join. Here a batch of uplinks becomes its messages in one call, and a run of
# messages its PUBLISH packets in one bytes object.

cdef str _UPLINK_KIND = "uplink"


def uplink_publishes(list records, now_us, late_after_us, str prefix):
    """``(messages, gateway EUIs)`` for a batch of ``(seq, Record)`` uplinks, or None when one
    of them is not an uplink the one-pass encoder takes: see _frames_py.uplink_publishes."""
    cdef char buf[2048]
    cdef UJOut o
    cdef CVal eui
    cdef int64_t now, late_after, rus
    cdef list msgs = [], euis = []
    cdef object item, rec, kind, body, received, topic = None, eui_str
    cdef const char* prev = NULL
    cdef Py_ssize_t prev_n = 0
    cdef bytes prev_body = None  # keeps the span ``prev`` points into alive
    if not PyLong_CheckExact(now_us) or not PyLong_CheckExact(late_after_us):
        return None
    try:
        now = now_us
        late_after = late_after_us
    except OverflowError:
        return None
    if now < 0:
        return None
    for item in records:
        if type(item) is not tuple or PyTuple_GET_SIZE(item) != 2:
            return None
        rec = <object>PyTuple_GET_ITEM(item, 1)
        if not isinstance(rec, tuple) or PyTuple_GET_SIZE(rec) < 4:
            return None
        kind = <object>PyTuple_GET_ITEM(rec, 0)
        if kind is not _UPLINK_KIND and kind != _UPLINK_KIND:
            return None
        received = <object>PyTuple_GET_ITEM(rec, 2)
        body = <object>PyTuple_GET_ITEM(rec, 3)
        if not PyBytes_CheckExact(body) or not PyLong_CheckExact(received):
            return None
        try:
            rus = received
        except OverflowError:
            return None
        if rus < 0:
            return None  # (and now >= 0: their difference cannot overflow)
        o.buf = buf
        o.n = 0
        o.cap = sizeof(buf)
        o.full = False
        if not _uplink_json_into(<bytes>body, rus, received, now - rus > late_after, &o, &eui):
            return None
        if prev == NULL or prev_n != eui.n or memcmp(prev, eui.s, eui.n) != 0:
            eui_str = PyUnicode_DecodeASCII(<const char*>eui.s, eui.n, NULL)
            topic = f"{prefix}/gateway/{eui_str}/event/up"
            if eui_str not in euis:
                euis.append(eui_str)
            prev, prev_n, prev_body = <const char*>eui.s, eui.n, <bytes>body
        msgs.append((topic, PyBytes_FromStringAndSize(o.buf, o.n), False))
    return msgs, euis


def mqtt_publish_frames(list messages, Py_ssize_t start, Py_ssize_t room, int pid, dict inflight,
                        dict subacks, batch, dict topics, field_of):
    """``(PUBLISH packets, next index, last packet id)`` for up to ``room`` QoS 1 messages from
    ``messages[start]`` on, or None where the reference must answer: see
    mqtt_wire.publish_frames."""
    cdef Py_ssize_t n = PyList_GET_SIZE(messages), stop, i, k, total = 0, rl, tfn, pn
    cdef object msg, topic, payload, tf
    cdef list fields
    cdef uint16_t* pids
    cdef bytes out
    cdef char* w
    if start < 0 or room <= 0 or pid < 0 or pid > 0xFFFF:
        return None
    stop = min(n, start + room)
    if stop <= start:
        return None
    # Pass one: every topic's field and every size, before any packet id is taken (a topic
    # the protocol refuses raises here and leaves nothing in flight).
    fields = []
    for i in range(start, stop):
        msg = <object>PyList_GET_ITEM(messages, i)
        if type(msg) is not tuple or PyTuple_GET_SIZE(msg) != 3:
            return None
        topic = <object>PyTuple_GET_ITEM(msg, 0)
        payload = <object>PyTuple_GET_ITEM(msg, 1)
        if not PyBytes_CheckExact(payload):
            return None
        tf = topics.get(topic)
        if not tf:
            tf = field_of(topic)
        if not PyBytes_CheckExact(tf):
            return None
        rl = PyBytes_GET_SIZE(tf) + 2 + PyBytes_GET_SIZE(payload)
        if rl > 268_435_455:
            return None  # the reference says why
        total += 1 + (1 if rl < 128 else 2 if rl < 16384 else 3 if rl < 2097152 else 4) + rl
        fields.append(tf)
    out = PyBytes_FromStringAndSize(NULL, total)
    pids = <uint16_t*>PyMem_Malloc((stop - start) * sizeof(uint16_t))
    if pids == NULL:
        raise MemoryError()
    try:
        for k in range(stop - start):
            pid = pid % 0xFFFF + 1
            while pid in inflight or pid in subacks:
                pid = pid % 0xFFFF + 1
            inflight[pid] = batch
            pids[k] = <uint16_t>pid
        w = PyBytes_AS_STRING(out)
        for k in range(stop - start):
            msg = <object>PyList_GET_ITEM(messages, start + k)
            payload = <object>PyTuple_GET_ITEM(msg, 1)
            tf = <object>PyList_GET_ITEM(fields, k)
            tfn = PyBytes_GET_SIZE(tf)
            pn = PyBytes_GET_SIZE(payload)
            rl = tfn + 2 + pn
            w[0] = <char>(0x33 if <object>PyTuple_GET_ITEM(msg, 2) else 0x32)
            w += 1
            while True:
                w[0] = <char>((rl & 0x7F) | (0x80 if rl >= 128 else 0))
                w += 1
                rl >>= 7
                if not rl:
                    break
            memcpy(w, PyBytes_AS_STRING(tf), tfn)
            w += tfn
            w[0] = <char>(pids[k] >> 8)
            w[1] = <char>(pids[k] & 0xFF)
            w += 2
            memcpy(w, PyBytes_AS_STRING(payload), pn)
            w += pn
    finally:
        PyMem_Free(pids)
    return out, stop, pid
