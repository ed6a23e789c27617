# cython: language_level=3
"""Session messages <-> engine objects in C: the server's per-reservation wire work.

Reading a reserve through the protobuf runtime makes a Python object per message, line
and string, and writing its answer sets a dozen fields one call at a time: together
about as much CPU as the engine's whole decision. Here a SessionRequest whose ops are
all well-formed reserves is read straight into engine ReserveRequests, and answers are
written straight into SessionResponse bytes.

Only the common shape is read here: anything else (another kind of op, a field given
twice, a string that is not UTF-8, a cut message) makes decode_session() return None,
and the caller parses the message with protobuf, which accepts or explains it exactly
as before. What encode_session_response() writes, protobuf parses to the message
server/session.py's protobuf path builds (a test holds the two to one another).
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.tuple cimport PyTuple_GET_SIZE
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_DecodeUTF8
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcpy, memmove

include "../proto/_wire.pxi"

# Field numbers of stockgate/v1: see reservations.proto and types.proto.


cdef object _reserve(Cur *c, object request_t, object ttl_default):
    cdef Cur m
    cdef uint64_t tag
    cdef int seen = 0
    cdef int field
    cdef object rid = "", channel = "", customer = None, campaign = None, x
    cdef object ttl = ttl_default, partial = False
    cdef list lines = [], prefer = []
    cdef int64_t v
    if not _sub(c, &m):
        return None
    while m.p < m.end:
        tag = _tag(&m)
        if tag == (3 << 3 | WT_LEN):  # repeated Line
            x = _line(&m)
            if x is None:
                return None
            lines.append(x)
            continue
        if tag == (8 << 3 | WT_LEN):  # repeated prefer_locations
            x = _text(&m)
            if x is None:
                return None
            prefer.append(x)
            continue
        field = _field_once(tag, &seen, 7)
        if field == 0:
            return None  # unknown, given twice or a bad tag: protobuf decides
        if field in (1, 2, 4, 5):
            if tag & 7 != WT_LEN:
                return None
            x = _text(&m)
            if x is None:
                return None
            if field == 1:
                rid = x
            elif field == 2:
                channel = x
            elif field == 4:
                customer = x or None
            else:
                campaign = x or None
        elif field == 6 or field == 7:
            if tag & 7 != WT_VARINT:
                return None
            v = <int64_t>_varint(&m)
            if m.bad:
                return None
            if field == 6:
                ttl = v if v != 0 else ttl_default
            else:
                partial = v != 0
        else:
            return None  # lines or prefer_locations with another wire type
    return request_t(rid, channel, lines, customer, campaign, ttl, partial,
                     tuple(prefer) if prefer else ())


def decode_session(bytes raw, object request_t, object ttl_default, Py_ssize_t ops_max):
    """A SessionRequest's ops as [(op id, "reserve", request_t(...), timeout_ms)] when there are
    1..ops_max and every one is a reserve in the common shape; else None (parse it with
    protobuf). request_t is the engine's ReserveRequest; ttl_default replaces ttl_ms 0,
    and empty customer and campaign become None, as server/wire.py's reserve_request()."""
    cdef Cur c, op
    cdef uint64_t tag, op_id
    cdef int64_t timeout
    cdef object req
    cdef list out = []
    cdef int seen
    c.p = <const unsigned char *>PyBytes_AS_STRING(raw)
    c.end = c.p + PyBytes_GET_SIZE(raw)
    c.bad = False
    while c.p < c.end:
        tag = _tag(&c)
        if tag != (1 << 3 | WT_LEN) or len(out) >= ops_max:
            return None
        if not _sub(&c, &op):
            return None
        op_id, timeout, req, seen = 0, 0, None, 0
        while op.p < op.end:
            tag = _tag(&op)
            if tag == 0:
                return None
            if tag == (1 << 3 | WT_VARINT) and not seen & 1:
                op_id = _varint(&op)
                seen |= 1
            elif tag == (2 << 3 | WT_VARINT) and not seen & 2:
                timeout = <int64_t>_varint(&op)
                seen |= 2
            elif tag == (3 << 3 | WT_LEN) and not seen & 4:
                req = _reserve(&op, request_t, ttl_default)
                if req is None:
                    return None
                seen |= 4
            else:
                return None  # another kind of op, or a field given twice
            if op.bad:
                return None
        if req is None:
            return None  # no op set: protobuf's path answers it
        out.append((op_id, "reserve", req, timeout))
    return out if out else None


# ------------------------------------------------------------------------- writing

cdef inline tuple _tup(object x, Py_ssize_t n, str what):
    # The engine's records are NamedTuples: read as tuples of at least n items (indexing
    # below is unchecked). Indexing a tuple subclass through the object protocol goes by
    # its __getitem__ (a Python-level call, about 200 instructions each); its items are
    # where a tuple's are.
    if not isinstance(x, tuple):
        raise TypeError(f"{what} must be a tuple, got {type(x).__name__}")
    if PyTuple_GET_SIZE(x) < n:
        raise TypeError(f"{what} must have at least {n} fields, got {PyTuple_GET_SIZE(x)}")
    return <tuple>x


cdef int _line_result(_Buf b, int field, object line) except -1:
    # LineResult: sku 1, qty 2, granted 3, outcome 4, allocations 5 (location 1, pool 2, qty 3)
    cdef tuple ln = _tup(line, 5, "LineResult"), a
    cdef Py_ssize_t s = b.open(field), s2
    b.text_field(1, ln[0])
    b.int_field(2, ln[1])
    b.int_field(3, ln[2])
    b.int_field(4, ln[3])
    for x in _tup(ln[4], 0, "LineResult.allocations"):
        a = _tup(x, 3, "Allocation")
        s2 = b.open(5)
        b.text_field(1, a[0])
        b.text_field(2, a[1])
        b.int_field(3, a[2])
        b.close(s2)
    return b.close(s)


cdef int _result(_Buf b, object result) except -1:
    # Result: outcome 1, reservation 2, replayed 3, lines 4 (only without a reservation)
    cdef tuple r = _tup(result, 4, "Result"), res, c
    cdef Py_ssize_t s
    b.int_field(1, r[0])
    if r[1] is not None:
        # Reservation: reservation_id 1, channel 2, state 3, lines 4, customer 5,
        # campaign 6, created_ms 7, expires_ms 8, resolved_ms 9, committed 10
        res = _tup(r[1], 10, "Reservation")
        s = b.open(2)
        b.text_field(1, res[0])
        b.text_field(2, res[1])
        b.int_field(3, res[2])
        for ln in _tup(res[3], 0, "Reservation.lines"):
            _line_result(b, 4, ln)
        b.text_field(5, res[4])
        b.text_field(6, res[5])
        b.int_field(7, res[6])
        b.int_field(8, res[7])
        if res[8] is not None:
            b.int_field(9, res[8])
        for x in _tup(res[9], 0, "Reservation.committed"):
            c = _tup(x, 2, "a committed line")
            s2 = b.open(10)
            b.text_field(1, c[0])
            b.int_field(2, c[1])
            b.close(s2)
        b.close(s)
    if r[2]:
        b.int_field(3, 1)
    if r[1] is None:
        for ln in _tup(r[3], 0, "Result.lines"):
            _line_result(b, 4, ln)
    return 0


def encode_session_response(list chunk, object result_t, object is_shed,
                            object error_bytes, Py_ssize_t target) -> list:
    """Answers [(op id, engine Result or exception)] as SessionResponse messages:
    [(bytes, answers in it)], a message ending with the answer that takes it past
    `target` bytes (as session.cut_response cuts). The first shed refusal met
    (is_shed(exc)) answers, as refused_ids and refused_error in the first message, every
    answer that is that same exception; error_bytes(exc) is an Error message's bytes."""
    # One buffer per call: is_shed() and error_bytes() run Python mid-message, where
    # another thread (a second server in the process) could take a shared one.
    cdef _Buf b = _Buf()
    cdef Py_ssize_t s, s2, count = 0
    cdef list out = [], refused_ids = []
    cdef dict errors = {}
    cdef object refused = None, err
    cdef uint64_t op_id
    for item in chunk:
        op_id = item[0]
        answer = item[1]
        if type(answer) is result_t:
            s = b.open(1)  # OperationResult: id 1, result 2, error 3
            b.int_field(1, <int64_t>op_id)
            s2 = b.open(2)
            _result(b, answer)
            b.close(s2)
            b.close(s)
        else:
            if answer is refused or (refused is None and is_shed(answer)):
                refused = answer
                refused_ids.append(op_id)
                continue
            err = errors.get(id(answer))
            if err is None:
                err = errors[id(answer)] = error_bytes(answer)
            s = b.open(1)
            b.int_field(1, <int64_t>op_id)
            b.varint(3 << 3 | WT_LEN)
            b.varint(<uint64_t>len(<bytes>err))
            b.raw(<const unsigned char *>PyBytes_AS_STRING(err), len(<bytes>err))
            b.close(s)
        count += 1
        if b.size > target:
            out.append([PyBytes_FromStringAndSize(<char *>b.data, b.size), count])
            b.size = 0
            count = 0
    if count or not out:
        out.append([PyBytes_FromStringAndSize(<char *>b.data, b.size), count])
    if refused_ids:
        # refused_ids 2 (packed), refused_error 3: added to the first message
        b.size = 0
        s = b.open(2)
        for op_id in refused_ids:
            b.varint(op_id)
        b.close(s)
        err = error_bytes(refused)
        b.varint(3 << 3 | WT_LEN)
        b.varint(<uint64_t>len(<bytes>err))
        b.raw(<const unsigned char *>PyBytes_AS_STRING(err), len(<bytes>err))
        out[0][0] = out[0][0] + PyBytes_FromStringAndSize(<char *>b.data, b.size)
        out[0][1] += len(refused_ids)
        b.size = 0
    return [tuple(x) for x in out]
