# cython: freethreading_compatible = True
"""The allocation core: stock counters in C arrays, taken by compare-and-swap.

It does no I/O and knows nothing of SKUs or channels: the engine maps those to counter
indices and hands the core flat arrays of lines and sources. Every change to `avail` is an
atomic compare-and-swap, so `decide()` is correct when several threads run it at once with
the GIL released; a taker that loses a race retries on the fresh value and never drives a
counter below its floor.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.string cimport memset


cdef extern from *:
    """
    #include <stdint.h>
    #include <assert.h>

    static inline int64_t sg_load(int64_t *p) {
        return __atomic_load_n(p, __ATOMIC_ACQUIRE);
    }
    static inline void sg_add(int64_t *p, int64_t d) {
        __atomic_fetch_add(p, d, __ATOMIC_ACQ_REL);
    }
    /* Take up to `want` units from *p without going below `floor`. With `exact`, take
       all of `want` or nothing. Returns the units taken. */
    static inline int64_t sg_take(int64_t *p, int64_t want, int64_t floor, int exact) {
        int64_t cur = __atomic_load_n(p, __ATOMIC_ACQUIRE);
        for (;;) {
            int64_t room = cur - floor;
            if (room <= 0 || want <= 0) return 0;
            int64_t t = room < want ? room : want;
            if (exact && t < want) return 0;
            if (__atomic_compare_exchange_n(p, &cur, cur - t, 1,
                                            __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
    #if SG_DEBUG
                assert(cur - t >= floor);
    #endif
                return t;
            }
        }
    }
    """
    int64_t sg_load(int64_t *p) nogil
    void sg_add(int64_t *p, int64_t d) nogil
    int64_t sg_take(int64_t *p, int64_t want, int64_t floor, int exact) nogil

# Flags of an operation in decide().
FLAG_PARTIAL = 1     # grant what there is instead of all-or-nothing
FLAG_PRESALE = 2     # the channel may sell into a bucket's presale allowance

# Per-line status written by decide().
LINE_OK = 0
LINE_SHORT_STOCK = 1
LINE_SHORT_LIMIT = 2

# Counter record as the store keeps it: on_hand and floor (little-endian int64). Held is
# not stored: it is the sum of the live reservations, recomputed when the store opens, so
# a reservation, release or expiry rewrites no bucket record.
CAPACITY_MIN = 1024
FLOOR_MIN = -2_000_000_000  # the lowest floor an int32 holds with room to spare
NOGIL_LINES_MIN = 256  # decide() releases the GIL for batches of at least this many lines


# A bucket's store record as Counters.bucket_records() writes it by hand: the layout of
# records.BUCKET_ID and records.BUCKET (tests/test_core.py holds them to one).
DEF BUCKET_KEY_BYTES = 4  # big-endian bucket id
DEF BUCKET_ID_MAX = 0xFFFFFFFF
DEF BUCKET_RECORD_BYTES = 17  # the format version, then on_hand and floor as int64


cdef class Counters:
    """A growable table of stock counters, each with `avail`, `on_hand` and a `floor`.

    `floor` is the lowest `avail` that a presale-enabled taker may reach (zero or
    negative); other takers stop at zero. Growing the table moves the arrays, so `add()`
    refuses while any thread is inside `decide()`.
    """

    # `avail` is the only array changed by compare-and-swap; `on_hand` and `floor` change
    # only under the engine's single-writer discipline. held = on_hand - avail.
    cdef int64_t *avail
    cdef int64_t *on_hand
    cdef int32_t *floor  # -(presale allowance), >= -PRESALE_UNITS_MAX: int32 is room enough
    cdef Py_ssize_t size
    cdef Py_ssize_t capacity
    cdef int64_t busy   # callers inside decide(): the arrays must not move meanwhile
    cdef set changed    # indices whose on_hand or floor changed since take_changed()
    cdef bint track

    def __cinit__(self, Py_ssize_t capacity=CAPACITY_MIN, bint track_changes=False):
        self.changed = set()
        self.track = track_changes
        self.size = 0
        self.capacity = 0
        self.busy = 0
        self.avail = NULL
        self.on_hand = NULL
        self.floor = NULL
        self._grow(max(capacity, CAPACITY_MIN))

    def __dealloc__(self):
        PyMem_Free(self.avail)
        PyMem_Free(self.on_hand)
        PyMem_Free(self.floor)

    cdef int _grow(self, Py_ssize_t need) except -1:
        cdef Py_ssize_t cap = self.capacity if self.capacity else CAPACITY_MIN
        if need <= self.capacity:
            return 0
        if sg_load(&self.busy) != 0:
            raise RuntimeError("Counters cannot grow while decide() runs in another thread")
        while cap < need:
            cap *= 2
        cdef int64_t *a = <int64_t *>PyMem_Realloc(self.avail, cap * sizeof(int64_t))
        if a == NULL:
            raise MemoryError()
        self.avail = a
        a = <int64_t *>PyMem_Realloc(self.on_hand, cap * sizeof(int64_t))
        if a == NULL:
            raise MemoryError()
        self.on_hand = a
        cdef int32_t *f = <int32_t *>PyMem_Realloc(self.floor, cap * sizeof(int32_t))
        if f == NULL:
            raise MemoryError()
        self.floor = f
        # No memset: add() writes every slot it hands out, so untouched capacity stays
        # out of the resident set.
        self.capacity = cap
        return 0

    cdef int _check(self, Py_ssize_t i) except -1:
        if i < 0 or i >= self.size:
            raise IndexError(f"counter {i} out of range 0..{self.size - 1}")
        return 0

    def __len__(self) -> int:
        return self.size

    def add(self, int64_t on_hand=0, int64_t held=0, int64_t floor=0) -> int:
        """Append a counter and return its index."""
        if floor > 0 or floor < FLOOR_MIN:
            raise ValueError(f"floor must be between {FLOOR_MIN} and 0, got {floor}")
        self._grow(self.size + 1)
        cdef Py_ssize_t i = self.size
        self.on_hand[i] = on_hand
        self.avail[i] = on_hand - held
        self.floor[i] = floor
        self.size += 1
        if self.track:
            self.changed.add(i)
        return i

    def reserve_capacity(self, Py_ssize_t n) -> None:
        """Make room for n counters in one step (used by recovery)."""
        self._grow(n)

    def available(self, Py_ssize_t i) -> int:
        self._check(i)
        return sg_load(&self.avail[i])

    def on_hand_of(self, Py_ssize_t i) -> int:
        self._check(i)
        return sg_load(&self.on_hand[i])

    def held(self, Py_ssize_t i) -> int:
        self._check(i)
        return sg_load(&self.on_hand[i]) - sg_load(&self.avail[i])

    def floor_of(self, Py_ssize_t i) -> int:
        self._check(i)
        return self.floor[i]

    def set_floor(self, Py_ssize_t i, int64_t floor) -> None:
        self._check(i)
        if floor > 0 or floor < FLOOR_MIN:
            raise ValueError(f"floor must be between {FLOOR_MIN} and 0, got {floor}")
        self.floor[i] = <int32_t>floor
        if self.track:
            self.changed.add(i)

    def add_on_hand(self, Py_ssize_t i, int64_t delta) -> None:
        """Stock arrives or leaves unheld: on_hand and avail move together."""
        self._check(i)
        sg_add(&self.on_hand[i], delta)
        sg_add(&self.avail[i], delta)
        if self.track:
            self.changed.add(i)

    def settle(self, Py_ssize_t i, int64_t qty) -> None:
        """Held units leave the building (commit): on_hand and held drop, avail stays."""
        self._check(i)
        sg_add(&self.on_hand[i], -qty)
        if self.track:
            self.changed.add(i)

    def credit(self, Py_ssize_t i, int64_t qty) -> None:
        """Held units return (release, expiry, rollback)."""
        self._check(i)
        sg_add(&self.avail[i], qty)

    def force_take(self, Py_ssize_t i, int64_t qty) -> None:
        """Hold units without a floor check: only to restore holds that existed before."""
        self._check(i)
        sg_add(&self.avail[i], -qty)

    def try_take(self, Py_ssize_t i, int64_t qty, bint presale=False) -> bool:
        """Take exactly qty units or none; the floor is 0 unless presale is allowed."""
        self._check(i)
        cdef int64_t fl = self.floor[i] if presale else 0
        return sg_take(&self.avail[i], qty, fl, 1) == qty

    def track_changes(self, bint on) -> None:
        """Start (or stop) recording which indices change; forgets what was recorded. A
        table being loaded from the store starts recording only once it is loaded."""
        self.track = on
        self.changed = set()

    def take_changed(self) -> list:
        """The indices whose on_hand or floor changed (or that were added) since the last
        call, in order; only with track_changes. What the store must rewrite."""
        out = sorted(self.changed)
        self.changed = set()
        return out

    def bucket_records(self, indices, int version) -> dict:
        """{key: record} of each index as the store keeps buckets (records.bucket_id_key,
        records.bucket_value): a 4-byte big-endian id; `version`, then on_hand and floor
        as little-endian int64. Taken under the engine's lock, so one consistent state."""
        cdef dict out = {}
        cdef Py_ssize_t i
        cdef unsigned char k[BUCKET_KEY_BYTES]
        cdef unsigned char v[BUCKET_RECORD_BYTES]
        cdef uint64_t x
        cdef int j
        for i in indices:
            self._check(i)
            if i > BUCKET_ID_MAX:
                raise OverflowError(f"bucket {i} does not fit a {BUCKET_KEY_BYTES}-byte key")
            for j in range(BUCKET_KEY_BYTES):
                k[j] = <unsigned char>(i >> (8 * (BUCKET_KEY_BYTES - 1 - j)))
            v[0] = <unsigned char>version
            x = <uint64_t>sg_load(&self.on_hand[i])
            for j in range(8):
                v[1 + j] = <unsigned char>(x >> (8 * j))
            x = <uint64_t><int64_t>self.floor[i]
            for j in range(8):
                v[9 + j] = <unsigned char>(x >> (8 * j))
            out[PyBytes_FromStringAndSize(<char *>k, BUCKET_KEY_BYTES)] = (
                PyBytes_FromStringAndSize(<char *>v, BUCKET_RECORD_BYTES))
        return out

    def memory_bytes(self) -> int:
        """Bytes of C memory held by the arrays (capacity, not size)."""
        return self.capacity * (2 * sizeof(int64_t) + sizeof(int32_t))

    def decide(
        self,
        Counters limits,
        const int64_t[::1] op_line_end,
        const int64_t[::1] op_flags,
        const int64_t[::1] line_qty,
        const int64_t[::1] line_limit,
        const int64_t[::1] line_src_end,
        const int64_t[::1] srcs,
        int64_t[::1] taken,
        int64_t[::1] granted,
        int64_t[::1] line_status,
    ) -> int:
        """Decide a batch of reservations in one call, with the GIL released.

        Operation i owns lines [op_line_end[i-1], op_line_end[i]); line j owns sources
        [line_src_end[j-1], line_src_end[j]) of `srcs` (counter indices of this table,
        walked in order, a line split across them when one is short). `line_limit[j]` is
        an index into `limits` (a per-customer allowance taken with the line) or -1.
        Without FLAG_PARTIAL an operation is all-or-nothing: a short line gives back what
        the lines before it took. Outputs: `taken` per source, `granted` and
        `line_status` per line. Returns the number of operations granted in full.
        """
        cdef Py_ssize_t n_ops = op_line_end.shape[0]
        cdef Py_ssize_t n_lines = line_qty.shape[0]
        if op_flags.shape[0] != n_ops:
            raise ValueError("op_flags must have one entry per operation")
        if line_limit.shape[0] != n_lines or line_src_end.shape[0] != n_lines:
            raise ValueError("line arrays must have one entry per line")
        if granted.shape[0] != n_lines or line_status.shape[0] != n_lines:
            raise ValueError("granted and line_status must have one entry per line")
        if taken.shape[0] != srcs.shape[0]:
            raise ValueError("taken must have one entry per source")
        if n_ops and op_line_end[n_ops - 1] != n_lines:
            raise ValueError("op_line_end must end at the number of lines")
        if n_lines and line_src_end[n_lines - 1] != srcs.shape[0]:
            raise ValueError("line_src_end must end at the number of sources")
        cdef Py_ssize_t k
        for k in range(srcs.shape[0]):
            if srcs[k] < 0 or srcs[k] >= self.size:
                raise IndexError(f"source counter {srcs[k]} out of range")
        for k in range(n_lines):
            if line_limit[k] >= limits.size or line_limit[k] < -1:
                raise IndexError(f"limit counter {line_limit[k]} out of range")
            if line_qty[k] <= 0:
                raise ValueError(f"line quantity must be > 0, got {line_qty[k]}")
        cdef Py_ssize_t full = 0
        sg_add(&self.busy, 1)
        if limits is not self:
            sg_add(&limits.busy, 1)
        try:
            # Releasing the GIL costs a wait to take it back while other threads run; it
            # pays only for batches big enough to be worth running beside them.
            if n_lines >= NOGIL_LINES_MIN:
                with nogil:
                    full = _decide(self, limits, n_ops, _p(op_line_end), _p(op_flags),
                                   _p(line_qty), _p(line_limit), _p(line_src_end), _p(srcs),
                                   _pw(taken), _pw(granted), _pw(line_status))
            else:
                full = _decide(self, limits, n_ops, _p(op_line_end), _p(op_flags),
                               _p(line_qty), _p(line_limit), _p(line_src_end), _p(srcs),
                               _pw(taken), _pw(granted), _pw(line_status))
        finally:
            sg_add(&self.busy, -1)
            if limits is not self:
                sg_add(&limits.busy, -1)
        return full


cdef inline const int64_t *_p(const int64_t[::1] a) noexcept nogil:
    return &a[0] if a.shape[0] else NULL


cdef inline int64_t *_pw(int64_t[::1] a) noexcept nogil:
    return &a[0] if a.shape[0] else NULL


cdef Py_ssize_t _decide(
    Counters t,
    Counters lim,
    Py_ssize_t n_ops,
    const int64_t *op_line_end,
    const int64_t *op_flags,
    const int64_t *line_qty,
    const int64_t *line_limit,
    const int64_t *line_src_end,
    const int64_t *srcs,
    int64_t *taken,
    int64_t *granted,
    int64_t *line_status,
) noexcept nogil:
    cdef Py_ssize_t i, j, k, j0, j1, k0, k1, jj, kk, full = 0
    cdef int64_t want, got, got_limit, fl, lidx, flags
    cdef bint partial, presale, failed
    j0 = 0
    for i in range(n_ops):
        j1 = op_line_end[i]
        flags = op_flags[i]
        partial = (flags & 1) != 0
        presale = (flags & 2) != 0
        failed = False
        for j in range(j0, j1):
            k0 = line_src_end[j - 1] if j > 0 else 0
            k1 = line_src_end[j]
            want = line_qty[j]
            lidx = line_limit[j]
            line_status[j] = 0
            got_limit = want
            if lidx >= 0:
                got_limit = sg_take(&lim.avail[lidx], want, 0, 0 if partial else 1)
                if got_limit < want:
                    line_status[j] = 2
            got = 0
            for k in range(k0, k1):
                fl = t.floor[srcs[k]] if presale else 0
                taken[k] = sg_take(&t.avail[srcs[k]], got_limit - got, fl, 0)
                got += taken[k]
            if lidx >= 0 and got < got_limit:
                sg_add(&lim.avail[lidx], got_limit - got)
            granted[j] = got
            if got < want and line_status[j] == 0:
                line_status[j] = 1
            if got < want and not partial:
                failed = True
                # Give back everything this operation took, this line included.
                for jj in range(j0, j + 1):
                    for kk in range(line_src_end[jj - 1] if jj > 0 else 0, line_src_end[jj]):
                        if taken[kk]:
                            sg_add(&t.avail[srcs[kk]], taken[kk])
                            taken[kk] = 0
                    if line_limit[jj] >= 0 and granted[jj]:
                        sg_add(&lim.avail[line_limit[jj]], granted[jj])
                    granted[jj] = 0
                # Lines after the failing one were not tried.
                for jj in range(j + 1, j1):
                    granted[jj] = 0
                    line_status[jj] = 0
                    for kk in range(line_src_end[jj - 1] if jj > 0 else 0, line_src_end[jj]):
                        taken[kk] = 0
                break
        if not failed:
            full += 1
            for j in range(j0, j1):
                if granted[j] < line_qty[j]:
                    full -= 1
                    break
        j0 = j1
    return full


include "_index.pxi"
include "_holds.pxi"
include "_records.pxi"
