# Included by _core.pyx: the record of every fresh hold, written in C.
#
# Recording a granted hold (its stored record, its journal event, its place in the expiry
# queue, its answer) was the costliest Python left on a reservation's path once the core
# had decided it. The record is msgpack, byte for byte what records.pack() makes of
# _Res.encode()'s list (a test compares them), written here without building that list.

from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.dict cimport PyDict_SetItem
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE
from cpython.unicode cimport PyUnicode_AsUTF8AndSize

import heapq

cdef object _heappush = heapq.heappush

DEF PACK_BYTES_MIN = 256


cdef class _Pack:
    """A growing byte buffer with msgpack's encodings of what a record holds: None,
    bool, int64, str, arrays (the smallest form of each, as msgpack-python chooses)."""

    cdef char *data
    cdef Py_ssize_t size, cap

    def __cinit__(self):
        self.data = <char *>PyMem_Malloc(PACK_BYTES_MIN)
        if self.data == NULL:
            raise MemoryError()
        self.cap = PACK_BYTES_MIN

    def __dealloc__(self):
        PyMem_Free(self.data)

    cdef inline int _room(self, Py_ssize_t n) except -1:
        if self.size + n <= self.cap:
            return 0
        return self._grow(n)

    cdef int _grow(self, Py_ssize_t n) except -1:
        cdef Py_ssize_t cap = self.cap
        cdef char *d
        while cap < self.size + n:
            cap *= 2
        d = <char *>PyMem_Realloc(self.data, cap)
        if d == NULL:
            raise MemoryError()
        self.data, self.cap = d, cap
        return 0

    cdef inline int byte(self, unsigned char b) except -1:
        self._room(1)
        self.data[self.size] = <char>b
        self.size += 1
        return 0

    cdef int be(self, unsigned char tag, uint64_t v, int width) except -1:
        # tag, then v big-endian in `width` bytes (1, 2, 4 or 8)
        cdef unsigned char *d
        self._room(1 + width)
        d = <unsigned char *>self.data + self.size
        d[0] = tag
        if width == 1:
            d[1] = <unsigned char>v
        elif width == 2:
            d[1] = <unsigned char>(v >> 8)
            d[2] = <unsigned char>v
        elif width == 4:
            d[1] = <unsigned char>(v >> 24)
            d[2] = <unsigned char>(v >> 16)
            d[3] = <unsigned char>(v >> 8)
            d[4] = <unsigned char>v
        else:
            d[1] = <unsigned char>(v >> 56)
            d[2] = <unsigned char>(v >> 48)
            d[3] = <unsigned char>(v >> 40)
            d[4] = <unsigned char>(v >> 32)
            d[5] = <unsigned char>(v >> 24)
            d[6] = <unsigned char>(v >> 16)
            d[7] = <unsigned char>(v >> 8)
            d[8] = <unsigned char>v
        self.size += 1 + width
        return 0

    cdef int integer(self, int64_t v) except -1:
        if v >= 0:
            if v < 0x80:
                return self.byte(<unsigned char>v)
            if v <= 0xFF:
                return self.be(0xcc, <uint64_t>v, 1)
            if v <= 0xFFFF:
                return self.be(0xcd, <uint64_t>v, 2)
            if v <= 0xFFFFFFFF:
                return self.be(0xce, <uint64_t>v, 4)
            return self.be(0xcf, <uint64_t>v, 8)
        if v >= -32:
            return self.byte(<unsigned char>(v & 0xFF))
        if v >= -0x80:
            return self.be(0xd0, <uint64_t>v, 1)
        if v >= -0x8000:
            return self.be(0xd1, <uint64_t>v, 2)
        if v >= -0x80000000:
            return self.be(0xd2, <uint64_t>v, 4)
        return self.be(0xd3, <uint64_t>v, 8)

    cdef int text(self, object s) except -1:
        # any str, subclasses too (a StrEnum id passes the engine's checks)
        cdef Py_ssize_t n
        cdef const char *p = PyUnicode_AsUTF8AndSize(s, &n)
        if n < 32:
            self.byte(0xa0 | <unsigned char>n)
        elif n <= 0xFF:
            self.be(0xd9, <uint64_t>n, 1)
        elif n <= 0xFFFF:
            self.be(0xda, <uint64_t>n, 2)
        else:
            self.be(0xdb, <uint64_t>n, 4)
        self._room(n)
        memcpy(self.data + self.size, p, n)
        self.size += n
        return 0

    cdef int array(self, Py_ssize_t n) except -1:
        if n < 16:
            return self.byte(0x90 | <unsigned char>n)
        if n <= 0xFFFF:
            return self.be(0xdc, <uint64_t>n, 2)
        return self.be(0xdd, <uint64_t>n, 4)

    cdef int value(self, object v) except -1:
        """Any of the types above, nested."""
        cdef Py_ssize_t i, n
        if v is None:
            return self.byte(0xc0)
        if v is True:
            return self.byte(0xc3)
        if v is False:
            return self.byte(0xc2)
        if type(v) is int:  # the common case first: no conversion check beyond int64
            return self.integer(v)
        if isinstance(v, str):
            return self.text(v)
        if type(v) is tuple:
            n = PyTuple_GET_SIZE(v)
            self.array(n)
            for i in range(n):
                self.value(<object>PyTuple_GET_ITEM(v, i))
            return 0
        if isinstance(v, (tuple, list)):
            self.array(len(v))
            for x in v:
                self.value(x)
            return 0
        return self.integer(v)  # an int (or an IntEnum); anything else raises TypeError

    cdef int raw(self, bytes b) except -1:
        """Bytes already in msgpack form (a constant map key)."""
        cdef Py_ssize_t n = len(b)
        self._room(n)
        memcpy(self.data + self.size, <const char *>b, n)
        self.size += n
        return 0

    cdef bytes take(self):
        cdef bytes out = PyBytes_FromStringAndSize(self.data, self.size)
        self.size = 0
        return out


def pack_record(list fields) -> bytes:
    """[FORMAT_VERSION, *fields] as msgpack, as records.pack() writes it (for the test that
    holds the two to one layout, and for callers already in C)."""
    cdef _Pack p = _Pack()  # one per call: the core runs free-threaded too
    p.array(len(fields) + 1)
    p.integer(RECORD_FORMAT_VERSION)
    for x in fields:
        p.value(x)
    return p.take()


RECORD_FORMAT_VERSION = 1  # records.FORMAT_VERSION (a test checks they agree)
DEF HOLD_RECORD_FIELDS = 16  # version + _Res.encode()'s 15 fields

# The "reserved" journal event as the writer stores it: the map _emit() would make, in
# its key order, without "seq" (a journal chunk implies it). Made here as bytes, it costs
# a fraction of a dict that the writer would then pack, and keeps a batch's memory small.
cdef bytes _EV_HEAD = b"\x88\xa2id"  # a map of 8, then the first key
cdef bytes _EV_CHANNEL = b"\xa7channel"
cdef bytes _EV_CUSTOMER = b"\xa8customer"
cdef bytes _EV_CAMPAIGN = b"\xa8campaign"
cdef bytes _EV_HELD = b"\xa4held"
cdef bytes _EV_EXPIRES = b"\xaaexpires_ms"
cdef bytes _EV_KIND_RESERVED = b"\xa4kind\xa8reserved"
cdef bytes _EV_T = b"\xa1t"


cdef class _Recorder:
    """What hold_and_record() records into (see there), and the _Pack it writes with: one
    per call, since two engines may record at once."""

    cdef list todo, checked, out, expiry, events
    cdef object res, result_t, reservation_t, held_state, now_obj
    cdef dict puts
    cdef tuple outcomes
    cdef int64_t seq, now, steady
    cdef int held_code
    cdef _Pack p

    def __cinit__(self, list todo, list checked, list out, object res, list expiry,
                  dict puts, list events, int64_t seq, int64_t now, int64_t steady,
                  tuple outcomes, object result_t, object reservation_t,
                  object held_state):
        self.todo, self.checked, self.out = todo, checked, out
        self.res, self.expiry, self.puts, self.events = res, expiry, puts, events
        self.seq, self.now, self.steady = seq, now, steady
        self.now_obj = now  # one int object for every place it goes
        self.outcomes = outcomes
        self.result_t, self.reservation_t = result_t, reservation_t
        self.held_state = held_state
        self.held_code = held_state  # the State (an IntEnum) as stored
        self.p = _Pack()

    cdef int refused(self, Py_ssize_t o, int code, tuple line_results) except -1:
        i = (<tuple>self.todo[o])[0]
        self.out[i] = (_named(self.result_t, (self.outcomes[code], None, False,
                                              line_results)), None)
        return 0

    cdef int granted(self, Py_ssize_t o, int code, tuple line_results, tuple op,
                     Py_ssize_t j, Py_ssize_t k, const int64_t *granted,
                     const int64_t *src_end, const int64_t *srcs, const int64_t *taken,
                     const int64_t *line_code, const int64_t *line_pairs) except -1:
        """Record todo[o], granted: its lines are the core's from line j and source k
        (line_code and line_pairs as _results() read them)."""
        cdef tuple t = <tuple>self.todo[o]
        cdef tuple key = <tuple>t[2]
        cdef tuple lines = <tuple>op[1]
        cdef tuple line
        cdef object i = t[0]
        cdef tuple c = <tuple>self.checked[i]
        cdef object rid = c[0], channel = key[0], customer = key[1], campaign = key[2]
        cdef int64_t expires = self.steady + <int64_t>c[2]
        cdef object expires_obj = expires
        cdef Py_ssize_t jj, n, k0, pairs = 0, j0 = j, kk = k
        cdef _Pack p = self.p
        cdef bytes rec
        # _Res.encode() of a fresh hold: [rid, channel, customer, campaign, state,
        # partial, created, expires, resolved, lines, committed, commit_req, outcome,
        # request lines, amend outcome]; each line (sku, qty, granted, [bucket, units,
        # ...], line code).
        p.size = 0
        p.array(HOLD_RECORD_FIELDS)
        p.integer(RECORD_FORMAT_VERSION)
        p.text(rid)
        p.text(channel)
        p.value(customer)
        p.value(campaign)
        p.integer(self.held_code)
        p.value(key[3])
        p.integer(self.now)
        p.integer(expires)
        p.byte(0xc0)
        p.array(len(lines))
        for jj in range(len(lines)):
            line = <tuple>lines[jj]
            k0, kk = kk, src_end[j]
            p.array(5)
            p.text(line[0])
            p.value(line[1])
            p.integer(granted[j])
            p.array(2 * line_pairs[j])
            for n in range(k0, kk):
                if taken[n]:
                    p.integer(srcs[n])
                    p.integer(taken[n])
            p.integer(line_code[j])
            pairs += line_pairs[j]
            j += 1
        p.byte(0xc0)
        p.byte(0xc0)
        p.integer(code)
        p.value(key[4])
        p.byte(0xc0)
        rec = p.take()
        PyDict_SetItem(self.res, rid, rec)  # dict's own: the ledger keeps the bytes
        _heappush(self.expiry, (expires_obj, rid))
        self.puts[(<str>rid).encode("utf-8")] = rec
        # The event: the map _emit() would make, "held" the [bucket, units] taken.
        p.raw(_EV_HEAD)
        p.text(rid)
        p.raw(_EV_CHANNEL)
        p.text(channel)
        p.raw(_EV_CUSTOMER)
        p.value(customer)
        p.raw(_EV_CAMPAIGN)
        p.value(campaign)
        p.raw(_EV_HELD)
        p.array(pairs)
        j, kk = j0, k
        for jj in range(len(lines)):
            k0, kk = kk, src_end[j]
            for n in range(k0, kk):
                if taken[n]:
                    p.array(2)
                    p.integer(srcs[n])
                    p.integer(taken[n])
            j += 1
        p.raw(_EV_EXPIRES)
        p.integer(expires)
        p.raw(_EV_KIND_RESERVED)
        p.raw(_EV_T)
        p.integer(self.now)
        self.events.append(p.take())
        self.seq += 1
        pub = _named(self.reservation_t, (rid, channel, self.held_state, line_results,
                                          customer, campaign, self.now_obj, expires_obj,
                                          None, ()))
        self.out[i] = (_named(self.result_t, (self.outcomes[code], pub, False,
                                              line_results)), None)
        return 0
