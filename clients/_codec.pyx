# cython: language_level=3
"""Session messages <-> the clients' values in C: a coalesced call's wire work.

Through the protobuf runtime a coalesced reserve cost the client about as much CPU as the
server's whole decision: a message object per operation, filled one field at a time,
copied into the SessionRequest and serialized, then an answer parsed into objects only
to be read once into the client's own records. Here a reserve in the common shape is
written straight into its ReserveRequest bytes, operations are framed into a
SessionRequest without a copy, and a SessionResponse is read straight into the clients'
Result records.

Only the common shape is handled here: a reserve with anything unusual (a value of
another type, an integer past 64 bits) makes reserve_body() return None, and the caller
builds it through protobuf, which names the field at fault as before; an answer with
anything unusual (an unknown field or enum value, a field given twice) makes
read_session_response() return None, and the caller parses it with protobuf. Both paths
give the same bytes and the same records (tests/test_client_codec.py holds them to one
another).
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.object cimport PyObject, PyTypeObject
from cpython.tuple cimport PyTuple_GET_SIZE
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_DecodeUTF8
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcpy, memmove

include "../proto/_wire.pxi"

from stockgate.clients.limits import INT64_MAX, INT64_MIN

# Field numbers of stockgate/v1 (reservations.proto, types.proto).
DEF OPERATION_ID = 1
DEF OPERATION_TIMEOUT_MS = 2
DEF SESSION_OPS = 1

cdef extern from "Python.h":
    PyTypeObject PyTuple_Type


cdef inline object _new(object cls, tuple items):
    # tuple.__new__(cls, items) for the records (NamedTuples), straight to the type's
    # constructor: the Python-level call cost as much as reading the answer.
    cdef tuple args = (items,)
    return PyTuple_Type.tp_new(cls, <PyObject *>args, NULL)


# ------------------------------------------------------------------------- writing

def reserve_body(object reservation_id, object channel, object lines, object customer,
                 object campaign, object ttl_ms, object partial, object prefer_locations):
    """A ReserveRequest's bytes, as protobuf writes the message clients/wire.py's
    fill_reserve() fills; None when a value is not in the common shape (str ids, a list of
    (str, int) tuples, 64-bit ints, a list or tuple of str for prefer_locations)."""
    cdef _Buf b
    cdef Py_ssize_t s
    if type(reservation_id) is not str or type(channel) is not str:
        return None
    if type(lines) is not list or type(ttl_ms) is not int or type(partial) is not bool:
        return None
    if customer is not None and type(customer) is not str:
        return None
    if campaign is not None and type(campaign) is not str:
        return None
    if not INT64_MIN <= ttl_ms <= INT64_MAX:
        return None
    for ln in lines:
        if type(ln) is not tuple or PyTuple_GET_SIZE(ln) != 2:
            return None
        if type(ln[0]) is not str or type(ln[1]) is not int:
            return None
        if not INT64_MIN <= ln[1] <= INT64_MAX:
            return None
    if prefer_locations:
        if type(prefer_locations) is not list and type(prefer_locations) is not tuple:
            return None
        for x in prefer_locations:
            if type(x) is not str:
                return None
    b = _Buf()  # only for a request in the common shape: the others go to protobuf
    try:
        b.text_field(1, reservation_id)
        b.text_field(2, channel)
        for ln in lines:
            s = b.open(3)
            b.text_field(1, ln[0])
            b.int_field(2, <int64_t>ln[1])
            b.close(s)
        b.text_field(4, customer)
        b.text_field(5, campaign)
        b.int_field(6, <int64_t>ttl_ms)
        if partial:
            b.int_field(7, 1)
        if prefer_locations:
            for x in prefer_locations:
                b.string_field(8, x)
    except UnicodeEncodeError:  # a lone surrogate: protobuf's path says which field
        return None
    return PyBytes_FromStringAndSize(<char *>b.data, b.size)


def session_request(list ops):
    """A SessionRequest's bytes from [(id, timeout_ms, op field, request bytes)]: each an
    Operation with the request as its `op` (reserve 3, commit 4, ... amend 7)."""
    cdef _Buf b = _Buf()
    cdef Py_ssize_t s
    cdef bytes body
    for item in ops:
        body = item[3]
        if body is None:
            raise TypeError("an operation's request bytes are None")
        s = b.open(SESSION_OPS)
        b.int_field(OPERATION_ID, <int64_t><uint64_t>item[0])
        b.int_field(OPERATION_TIMEOUT_MS, <int64_t>item[1])
        b.varint(<uint64_t>(<int>item[2] << 3 | WT_LEN))
        b.varint(<uint64_t>PyBytes_GET_SIZE(body))
        b.raw(<const unsigned char *>PyBytes_AS_STRING(body), PyBytes_GET_SIZE(body))
        b.close(s)
    return PyBytes_FromStringAndSize(<char *>b.data, b.size)


# ------------------------------------------------------------------------- reading

cdef class _Types:
    # The records to build and the enum members by number, passed once by the caller.
    cdef object result_t, reservation_t, line_t, allocation_t, error_t
    cdef tuple outcomes, states

    def __init__(self, result_t, reservation_t, line_t, allocation_t, error_t,
                 tuple outcomes not None, tuple states not None):
        # _new() calls tuple's constructor directly: each must be a tuple type.
        for cls in (result_t, reservation_t, line_t, allocation_t, error_t):
            if not (isinstance(cls, type) and issubclass(cls, tuple)):
                raise TypeError(f"{cls!r} is not a tuple type (a NamedTuple)")
        if not outcomes or not states:  # [0] of each is read unchecked, as the default
            raise ValueError("outcomes and states must not be empty")
        self.result_t, self.reservation_t = result_t, reservation_t
        self.line_t, self.allocation_t, self.error_t = line_t, allocation_t, error_t
        self.outcomes, self.states = outcomes, states


cdef object _enum(tuple members, uint64_t v):
    # a member by number; None (read it with protobuf) for a number this client does not know
    if v >= <uint64_t>PyTuple_GET_SIZE(members):
        return None
    return members[v]


cdef object _allocation(Cur *c, _Types t):
    cdef Cur m
    cdef uint64_t tag
    cdef int seen = 0, f
    cdef object location = "", pool = ""
    cdef int64_t qty = 0
    if not _sub(c, &m):
        return None
    while m.p < m.end:
        tag = _tag(&m)
        f = _field_once(tag, &seen, 3)
        if f == 1 or f == 2:
            if tag & 7 != WT_LEN:
                return None
            x = _text(&m)
            if x is None:
                return None
            if f == 1:
                location = x
            else:
                pool = x
        elif f == 3 and tag & 7 == WT_VARINT:
            qty = <int64_t>_varint(&m)
        else:
            return None
        if m.bad:
            return None
    return _new(t.allocation_t, (location, pool, qty))


cdef object _line_result(Cur *c, _Types t):
    cdef Cur m
    cdef uint64_t tag
    cdef int seen = 0, f
    cdef object sku = "", outcome = t.outcomes[0], x
    cdef int64_t qty = 0, granted = 0
    cdef list allocations = []
    if not _sub(c, &m):
        return None
    while m.p < m.end:
        tag = _tag(&m)
        if tag == (5 << 3 | WT_LEN):  # repeated Allocation
            x = _allocation(&m, t)
            if x is None:
                return None
            allocations.append(x)
            continue
        f = _field_once(tag, &seen, 4)
        if f == 1 and tag & 7 == WT_LEN:
            sku = _text(&m)
            if sku is None:
                return None
        elif f == 2 and tag & 7 == WT_VARINT:
            qty = <int64_t>_varint(&m)
        elif f == 3 and tag & 7 == WT_VARINT:
            granted = <int64_t>_varint(&m)
        elif f == 4 and tag & 7 == WT_VARINT:
            outcome = _enum(t.outcomes, _varint(&m))
            if outcome is None:
                return None
        else:
            return None
        if m.bad:
            return None
    return _new(t.line_t, (sku, qty, granted, outcome, tuple(allocations)))


cdef object _reservation(Cur *c, _Types t):
    cdef Cur m
    cdef uint64_t tag
    cdef int seen = 0, f
    cdef object rid = "", channel = "", customer = None, campaign = None, x
    cdef object state = t.states[0], resolved = None
    cdef int64_t created = 0, expires = 0, v
    cdef list lines = [], committed = []
    if not _sub(c, &m):
        return None
    while m.p < m.end:
        tag = _tag(&m)
        if tag == (4 << 3 | WT_LEN):  # repeated LineResult
            x = _line_result(&m, t)
            if x is None:
                return None
            lines.append(x)
            continue
        if tag == (10 << 3 | WT_LEN):  # repeated Line: committed
            x = _line(&m)
            if x is None:
                return None
            committed.append(x)
            continue
        f = _field_once(tag, &seen, 9)
        if f in (1, 2, 5, 6) and tag & 7 == WT_LEN:
            x = _text(&m)
            if x is None:
                return None
            if f == 1:
                rid = x
            elif f == 2:
                channel = x
            elif f == 5:
                customer = x or None
            else:
                campaign = x or None
        elif f in (3, 7, 8, 9) and tag & 7 == WT_VARINT:
            v = <int64_t>_varint(&m)
            if f == 3:
                state = _enum(t.states, <uint64_t>v)
                if state is None:
                    return None
            elif f == 7:
                created = v
            elif f == 8:
                expires = v
            else:
                resolved = v or None
        else:
            return None
        if m.bad:
            return None
    if state is None:
        return None  # no state (0): not a State this client knows
    return _new(t.reservation_t, (rid, channel, state, tuple(lines), customer, campaign,
                                  created, expires, resolved, tuple(committed)))


cdef object _result(Cur *c, _Types t):
    cdef Cur m
    cdef uint64_t tag
    cdef int seen = 0, f
    cdef object outcome = t.outcomes[0], reservation = None, replayed = False, x
    cdef list lines = []
    if not _sub(c, &m):
        return None
    while m.p < m.end:
        tag = _tag(&m)
        if tag == (4 << 3 | WT_LEN):  # repeated LineResult
            x = _line_result(&m, t)
            if x is None:
                return None
            lines.append(x)
            continue
        f = _field_once(tag, &seen, 3)
        if f == 1 and tag & 7 == WT_VARINT:
            outcome = _enum(t.outcomes, _varint(&m))
            if outcome is None:
                return None
        elif f == 2 and tag & 7 == WT_LEN:
            reservation = _reservation(&m, t)
            if reservation is None:
                return None
        elif f == 3 and tag & 7 == WT_VARINT:
            replayed = _varint(&m) != 0
        else:
            return None
        if m.bad:
            return None
    return _new(t.result_t, (outcome, reservation, replayed, tuple(lines)))


cdef object _error(Cur *c, _Types t):
    cdef Cur m
    cdef uint64_t tag
    cdef int seen = 0, f
    cdef object message = "", field = "", x
    cdef int64_t code = 0, retry = 0
    if not _sub(c, &m):
        return None
    while m.p < m.end:
        tag = _tag(&m)
        f = _field_once(tag, &seen, 4)
        if f == 1 and tag & 7 == WT_VARINT:
            code = <int>(<int64_t>_varint(&m))  # int32: protobuf keeps the low 32 bits
        elif f == 4 and tag & 7 == WT_VARINT:
            retry = <int64_t>_varint(&m)
        elif (f == 2 or f == 3) and tag & 7 == WT_LEN:
            x = _text(&m)
            if x is None:
                return None
            if f == 2:
                message = x
            else:
                field = x
        else:
            return None
        if m.bad:
            return None
    return _new(t.error_t, (code, message, field, retry))


def read_session_response(bytes raw not None, _Types types not None):
    """A SessionResponse as ([(op id, Result or None, error or None)], refused ids,
    refused error or None), each error an error_t(code, message, field, retry_after_ms)
    and None where no error is given (with a result, or with neither answer set);
    None when anything in it is not in the common shape (parse it with protobuf)."""
    cdef Cur c, op
    cdef uint64_t tag, op_id
    cdef int seen
    cdef list answers = [], refused = []
    cdef object refused_error = None, result, error
    c.p = <const unsigned char *>PyBytes_AS_STRING(raw)
    c.end = c.p + PyBytes_GET_SIZE(raw)
    c.bad = False
    while c.p < c.end:
        tag = _tag(&c)
        if tag == (1 << 3 | WT_LEN):  # OperationResult
            if not _sub(&c, &op):
                return None
            op_id, result, error, seen = 0, None, None, 0
            while op.p < op.end:
                tag = _tag(&op)
                if tag == (1 << 3 | WT_VARINT) and not seen & 1:
                    op_id = _varint(&op)
                    seen |= 1
                elif tag == (2 << 3 | WT_LEN) and not seen & 6:
                    result = _result(&op, types)
                    if result is None:
                        return None
                    seen |= 2
                elif tag == (3 << 3 | WT_LEN) and not seen & 6:
                    error = _error(&op, types)
                    if error is None:
                        return None
                    seen |= 4
                else:
                    return None
                if op.bad:
                    return None
            answers.append((op_id, result, error))
        elif tag == (2 << 3 | WT_LEN):  # refused_ids, packed
            if not _sub(&c, &op):
                return None
            while op.p < op.end:
                refused.append(_varint(&op))
                if op.bad:
                    return None
        elif tag == (2 << 3 | WT_VARINT):  # refused_ids, one unpacked
            refused.append(_varint(&c))
        elif tag == (3 << 3 | WT_LEN) and refused_error is None:
            refused_error = _error(&c, types)
            if refused_error is None:
                return None
        else:
            return None
        if c.bad:
            return None
    return answers, refused, refused_error
