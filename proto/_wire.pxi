# The protobuf wire format's primitives (and the Line message both sides read), shared
# by the two Session codecs (server/_codec.pyx and clients/_codec.pyx): included, not
# imported, so that each stays one extension with its calls inlined. The includer
# cimports what these use:
#   from cpython.bytes cimport ...; from cpython.mem cimport PyMem_Free, PyMem_Malloc,
#   PyMem_Realloc; from cpython.unicode cimport PyUnicode_AsUTF8AndSize,
#   PyUnicode_DecodeUTF8; from libc.stdint cimport int64_t, uint64_t;
#   from libc.string cimport memcpy, memmove; cimport cython

DEF BUF_BYTES_MIN = 4096

# Wire types.
DEF WT_VARINT = 0
DEF WT_LEN = 2


# ------------------------------------------------------------------------- reading

cdef struct Cur:
    const unsigned char *p
    const unsigned char *end
    bint bad


cdef inline uint64_t _varint(Cur *c) noexcept:
    cdef uint64_t v = 0
    cdef int shift = 0
    cdef unsigned char b
    while c.p < c.end and shift < 64:
        b = c.p[0]
        c.p += 1
        v |= (<uint64_t>(b & 0x7F)) << shift
        if b < 0x80:
            return v
        shift += 7
    c.bad = True
    return 0


cdef inline uint64_t _tag(Cur *c) noexcept:
    # the next field's tag, or 0 (never a valid tag) when the bytes end mid-varint
    cdef uint64_t tag = _varint(c)
    return 0 if c.bad else tag


cdef inline bint _sub(Cur *c, Cur *out) noexcept:
    # a length-delimited field's bytes as a cursor of their own
    cdef uint64_t n = _varint(c)
    if c.bad or n > <uint64_t>(c.end - c.p):
        c.bad = True
        return False
    out.p = c.p
    out.end = c.p + n
    out.bad = False
    c.p += n
    return True


cdef object _text(Cur *c):
    # a string field; None when it is not UTF-8 (protobuf refuses such a message)
    cdef Cur s
    if not _sub(c, &s):
        return None
    try:
        return PyUnicode_DecodeUTF8(<const char *>s.p, s.end - s.p, "strict")
    except UnicodeDecodeError:
        return None


cdef inline int _field_once(uint64_t tag, int *seen, int field_max) noexcept:
    # The field number of a singular field seen for the first time, else 0 (a field
    # given twice, one past field_max, or a bad tag): the caller leaves it to protobuf.
    cdef uint64_t f = tag >> 3
    if f < 1 or f > <uint64_t>field_max or seen[0] & (1 << f):
        return 0
    seen[0] |= 1 << f
    return <int>f


cdef object _line(Cur *c):
    # A Line (sku 1, qty 2), in a ReserveRequest or a Reservation's committed, as
    # (sku, qty); None for anything else (protobuf reads it).
    cdef Cur m
    cdef uint64_t tag
    cdef int seen = 0, f
    cdef object sku = ""
    cdef int64_t qty = 0
    if not _sub(c, &m):
        return None
    while m.p < m.end:
        tag = _tag(&m)
        f = _field_once(tag, &seen, 2)
        if f == 1 and tag & 7 == WT_LEN:
            sku = _text(&m)
            if sku is None:
                return None
        elif f == 2 and tag & 7 == WT_VARINT:
            qty = <int64_t>_varint(&m)
        else:
            return None
        if m.bad:
            return None
    return (sku, qty)


# ------------------------------------------------------------------------- writing

@cython.final  # methods called directly, not through a vtable: they run per field
cdef class _Buf:
    cdef unsigned char *data
    cdef Py_ssize_t size, cap

    def __cinit__(self):
        self.data = <unsigned char *>PyMem_Malloc(BUF_BYTES_MIN)
        if self.data == NULL:
            raise MemoryError()
        self.cap = BUF_BYTES_MIN

    def __dealloc__(self):
        PyMem_Free(self.data)

    cdef inline int room(self, Py_ssize_t n) except -1:
        if self.size + n <= self.cap:
            return 0
        return self.grow(n)

    cdef int grow(self, Py_ssize_t n) except -1:
        cdef Py_ssize_t cap = self.cap
        cdef unsigned char *d
        while cap < self.size + n:
            cap *= 2
        d = <unsigned char *>PyMem_Realloc(self.data, cap)
        if d == NULL:
            raise MemoryError()
        self.data, self.cap = d, cap
        return 0

    cdef inline int varint(self, uint64_t v) except -1:
        self.room(10)
        while v >= 0x80:
            self.data[self.size] = <unsigned char>(v & 0x7F) | 0x80
            self.size += 1
            v >>= 7
        self.data[self.size] = <unsigned char>v
        self.size += 1
        return 0

    cdef inline int raw(self, const unsigned char *p, Py_ssize_t n) except -1:
        self.room(n)
        memcpy(self.data + self.size, p, n)
        self.size += n
        return 0

    cdef inline int int_field(self, int field, int64_t v) except -1:
        # proto3: a zero scalar is not written
        if v != 0:
            self.varint(<uint64_t>(field << 3 | WT_VARINT))
            self.varint(<uint64_t>v)
        return 0

    cdef inline int text_field(self, int field, object s) except -1:
        # a singular string: not written when unset or empty (proto3's default); anything
        # not a str goes on to string_field, which refuses it
        if s is None or (isinstance(s, str) and not s):
            return 0
        return self.string_field(field, s)

    cdef int string_field(self, int field, object s) except -1:
        # an element of a repeated string: written even when empty
        cdef Py_ssize_t n
        cdef const char *p = PyUnicode_AsUTF8AndSize(s, &n)
        self.varint(<uint64_t>(field << 3 | WT_LEN))
        self.varint(<uint64_t>n)
        return self.raw(<const unsigned char *>p, n)

    cdef inline Py_ssize_t open(self, int field) except -1:
        # a length-delimited field whose length is not known yet: 5 bytes kept for it
        self.varint(<uint64_t>(field << 3 | WT_LEN))
        self.room(5)
        self.size += 5
        return self.size

    cdef inline int close(self, Py_ssize_t start) except -1:
        # The length, in as few bytes as protobuf writes it: the body moves back over
        # the unused part of the 5 bytes open() kept.
        cdef Py_ssize_t n = self.size - start, k = 0
        cdef uint64_t v = <uint64_t>n
        cdef unsigned char tmp[5]
        while True:
            tmp[k] = <unsigned char>(v & 0x7F)
            v >>= 7
            if v:
                tmp[k] |= 0x80
                k += 1
            else:
                k += 1
                break
        if k < 5:
            memmove(self.data + start - 5 + k, self.data + start, n)
        memcpy(self.data + start - 5, tmp, k)
        self.size -= 5 - k
        return 0
