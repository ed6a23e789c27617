# The bucket index: (sku, location, pool) <-> bucket id, in C memory. Included by _core.pyx.
#
# A million buckets as Python tuples in a dict cost ~360 bytes each; here they cost ~40:
# SKU strings live once in an arena, locations and pools are small ids, and both lookups
# are open-addressing tables of uint32 ids (0 = empty slot, else id + 1).

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy

cdef extern from *:
    """
    static inline uint64_t sg_mix(uint64_t x) {  /* splitmix64 finaliser */
        x ^= x >> 30; x *= 0xbf58476d1ce4e5b9ULL;
        x ^= x >> 27; x *= 0x94d049bb133111ebULL;
        return x ^ (x >> 31);
    }
    static inline uint64_t sg_hash_bytes(const char *p, Py_ssize_t n) {  /* FNV-1a */
        uint64_t h = 1469598103934665603ULL;
        for (Py_ssize_t i = 0; i < n; i++) { h ^= (unsigned char)p[i]; h *= 1099511628211ULL; }
        return sg_mix(h);
    }
    """
    uint64_t sg_mix(uint64_t x) nogil
    uint64_t sg_hash_bytes(const char *p, Py_ssize_t n) nogil

NAMES_MAX = 65_535  # distinct location and pool names (uint16 ids)
SKU_BYTES_STORED_MAX = 255  # one length byte in the arena


cdef class BucketIndex:
    """Bucket ids by (sku, location, pool), and back. Ids are dense, in creation order."""

    cdef char *arena            # per SKU: length byte, then the UTF-8 bytes
    cdef size_t arena_len, arena_cap
    cdef uint32_t *sku_off      # sku id -> offset of its entry in the arena
    cdef uint32_t n_skus, skus_cap
    cdef uint32_t *sku_slots
    cdef uint32_t sku_mask
    cdef uint64_t *b_key        # bucket id -> sku id << 32 | location id << 16 | pool id
    cdef uint32_t n_buckets, buckets_cap
    cdef uint32_t *b_slots
    cdef uint32_t b_mask
    cdef list names             # name id -> str (locations and pools share the table)
    cdef dict name_ids
    cdef set places             # (location id, pool id) pairs that have a bucket

    def __cinit__(self):
        self.arena = NULL
        self.sku_off = NULL
        self.sku_slots = NULL
        self.b_key = NULL
        self.b_slots = NULL
        self.arena_len = self.arena_cap = 0
        self.n_skus = self.skus_cap = self.n_buckets = self.buckets_cap = 0
        self.names = []
        self.name_ids = {}
        self.places = set()
        self.sku_slots = <uint32_t *>PyMem_Malloc(16 * sizeof(uint32_t))
        self.b_slots = <uint32_t *>PyMem_Malloc(16 * sizeof(uint32_t))
        if self.sku_slots == NULL or self.b_slots == NULL:
            raise MemoryError()
        memset(self.sku_slots, 0, 16 * sizeof(uint32_t))
        memset(self.b_slots, 0, 16 * sizeof(uint32_t))
        self.sku_mask = self.b_mask = 15

    def __dealloc__(self):
        PyMem_Free(self.arena)
        PyMem_Free(self.sku_off)
        PyMem_Free(self.sku_slots)
        PyMem_Free(self.b_key)
        PyMem_Free(self.b_slots)

    def __len__(self) -> int:
        return self.n_buckets

    # -- names

    cdef int _name_id(self, str name, bint create) except -2:
        nid = self.name_ids.get(name)
        if nid is not None:
            return nid
        if not create:
            return -1
        if len(self.names) >= NAMES_MAX:
            raise OverflowError(f"more than {NAMES_MAX} location and pool names")
        nid = len(self.names)
        self.names.append(name)
        self.name_ids[name] = nid
        return nid

    # -- SKUs

    cdef inline uint32_t _sku_probe(self, const char *p, Py_ssize_t n, uint64_t h) noexcept:
        """The slot holding this SKU, or the empty slot where it would go."""
        cdef uint32_t i = <uint32_t>h & self.sku_mask
        cdef uint32_t sid
        cdef const char *e
        while True:
            sid = self.sku_slots[i]
            if sid == 0:
                return i
            e = self.arena + self.sku_off[sid - 1]
            if <Py_ssize_t>(<uint8_t>e[0]) == n and memcmp(e + 1, p, n) == 0:
                return i
            i = (i + 1) & self.sku_mask

    cdef int _sku_rehash(self) except -1:
        cdef uint32_t cap = (self.sku_mask + 1) * 2
        cdef uint32_t *slots = <uint32_t *>PyMem_Malloc(cap * sizeof(uint32_t))
        if slots == NULL:
            raise MemoryError()
        memset(slots, 0, cap * sizeof(uint32_t))
        cdef uint32_t s, i
        cdef const char *e
        for s in range(self.n_skus):
            e = self.arena + self.sku_off[s]
            i = <uint32_t>sg_hash_bytes(e + 1, <uint8_t>e[0]) & (cap - 1)
            while slots[i] != 0:
                i = (i + 1) & (cap - 1)
            slots[i] = s + 1
        PyMem_Free(self.sku_slots)
        self.sku_slots = slots
        self.sku_mask = cap - 1
        return 0

    cdef long _sku_id(self, str sku, bint create) except -2:
        cdef bytes raw = sku.encode("utf-8")
        cdef const char *p = raw
        cdef Py_ssize_t n = len(raw)
        if n > SKU_BYTES_STORED_MAX:
            raise ValueError(f"sku is {n} bytes; the index stores at most {SKU_BYTES_STORED_MAX}")
        cdef uint64_t h = sg_hash_bytes(p, n)
        cdef uint32_t slot = self._sku_probe(p, n, h)
        if self.sku_slots[slot] != 0:
            return self.sku_slots[slot] - 1
        if not create:
            return -1
        if self.n_skus == self.skus_cap:
            self.skus_cap = max(1024, self.skus_cap * 2)
            a = <uint32_t *>PyMem_Realloc(self.sku_off, self.skus_cap * sizeof(uint32_t))
            if a == NULL:
                raise MemoryError()
            self.sku_off = a
        if self.arena_len + n + 1 > self.arena_cap:
            self.arena_cap = max(1 << 16, self.arena_cap * 2, self.arena_len + n + 1)
            if self.arena_cap > 0xFFFFFFFF:
                raise OverflowError("the SKU arena is full (4 GiB)")
            ar = <char *>PyMem_Realloc(self.arena, self.arena_cap)
            if ar == NULL:
                raise MemoryError()
            self.arena = ar
        self.arena[self.arena_len] = <char>(<uint8_t>n)
        memcpy(self.arena + self.arena_len + 1, p, n)
        self.sku_off[self.n_skus] = <uint32_t>self.arena_len
        self.arena_len += n + 1
        self.sku_slots[slot] = self.n_skus + 1
        self.n_skus += 1
        if self.n_skus * 2 > self.sku_mask + 1:
            self._sku_rehash()
        return self.n_skus - 1

    cdef str _sku_str(self, uint32_t sid):
        cdef const char *e = self.arena + self.sku_off[sid]
        return e[1:1 + <uint8_t>e[0]].decode("utf-8")

    def has_sku(self, str sku) -> bool:
        """True once any bucket of this SKU exists."""
        return self._sku_id(sku, False) >= 0

    # -- buckets

    cdef inline uint32_t _b_probe(self, uint64_t key) noexcept:
        cdef uint32_t i = <uint32_t>sg_mix(key) & self.b_mask
        cdef uint32_t bid
        while True:
            bid = self.b_slots[i]
            if bid == 0 or self.b_key[bid - 1] == key:
                return i
            i = (i + 1) & self.b_mask

    cdef int _b_rehash(self) except -1:
        cdef uint32_t cap = (self.b_mask + 1) * 2
        cdef uint32_t *slots = <uint32_t *>PyMem_Malloc(cap * sizeof(uint32_t))
        if slots == NULL:
            raise MemoryError()
        memset(slots, 0, cap * sizeof(uint32_t))
        cdef uint32_t b, i
        for b in range(self.n_buckets):
            i = <uint32_t>sg_mix(self.b_key[b]) & (cap - 1)
            while slots[i] != 0:
                i = (i + 1) & (cap - 1)
            slots[i] = b + 1
        PyMem_Free(self.b_slots)
        self.b_slots = slots
        self.b_mask = cap - 1
        return 0

    cdef long _lookup(self, str sku, str location, str pool) except -2:
        cdef long sid = self._sku_id(sku, False)
        if sid < 0:
            return -1
        cdef int lid = self._name_id(location, False)
        cdef int pid = self._name_id(pool, False)
        if lid < 0 or pid < 0:
            return -1
        cdef uint64_t key = (<uint64_t>sid << 32) | (<uint64_t>lid << 16) | <uint64_t>pid
        cdef uint32_t slot = self._b_probe(key)
        return <long>self.b_slots[slot] - 1

    def get(self, str sku, str location, str pool) -> int:
        """The bucket id of (sku, location, pool), or -1."""
        return self._lookup(sku, location, pool)

    def add(self, str sku, str location, str pool) -> int:
        """Create the bucket (which must not exist) and return its id: len(self) - 1."""
        if self._lookup(sku, location, pool) >= 0:
            raise KeyError(f"bucket {(sku, location, pool)} exists")
        cdef long sid = self._sku_id(sku, True)
        cdef int lid = self._name_id(location, True)
        cdef int pid = self._name_id(pool, True)
        cdef uint64_t key = (<uint64_t>sid << 32) | (<uint64_t>lid << 16) | <uint64_t>pid
        if self.n_buckets == self.buckets_cap:
            self.buckets_cap = max(1024, self.buckets_cap * 2)
            k = <uint64_t *>PyMem_Realloc(self.b_key, self.buckets_cap * sizeof(uint64_t))
            if k == NULL:
                raise MemoryError()
            self.b_key = k
        self.b_key[self.n_buckets] = key
        self.b_slots[self._b_probe(key)] = self.n_buckets + 1
        self.n_buckets += 1
        self.places.add((lid, pid))
        if self.n_buckets * 2 > self.b_mask + 1:
            self._b_rehash()
        return self.n_buckets - 1

    cdef int _check_b(self, Py_ssize_t b) except -1:
        if b < 0 or b >= self.n_buckets:
            raise IndexError(f"bucket {b} out of range 0..{<long>self.n_buckets - 1}")
        return 0

    def key(self, Py_ssize_t b) -> tuple:
        """(sku, location, pool) of bucket b."""
        self._check_b(b)
        cdef uint64_t k = self.b_key[b]
        return (self._sku_str(<uint32_t>(k >> 32)), self.names[(k >> 16) & 0xFFFF],
                self.names[k & 0xFFFF])

    def place(self, Py_ssize_t b) -> tuple:
        """(location, pool) of bucket b, without decoding its SKU."""
        self._check_b(b)
        cdef uint64_t k = self.b_key[b]
        return (self.names[(k >> 16) & 0xFFFF], self.names[k & 0xFFFF])

    def place_code(self, str location, str pool) -> int:
        """A (location, pool) pair as one int for find(), or -1 if either name is new."""
        cdef int lid = self._name_id(location, False)
        cdef int pid = self._name_id(pool, False)
        if lid < 0 or pid < 0:
            return -1
        return (lid << 16) | pid

    @property
    def names_count(self) -> int:
        """Distinct location and pool names so far: place codes stay valid until it grows."""
        return len(self.names)

    def find(self, str sku, tuple places):
        """The buckets of `sku` at each place code (from place_code(); -1 is skipped), in
        that order; None if the SKU has no bucket at all. One hash of the SKU for all."""
        return self._find(sku, places)

    cdef object _find(self, str sku, tuple places):
        cdef long sid = self._sku_id(sku, False)
        if sid < 0:
            return None
        cdef uint64_t key
        cdef uint32_t slot
        cdef long code
        out = []
        for code in places:
            if code < 0:
                continue
            key = (<uint64_t>sid << 32) | <uint64_t>code
            slot = self._b_probe(key)
            if self.b_slots[slot]:
                out.append(self.b_slots[slot] - 1)
        return out

    def of_sku(self, str sku) -> list:
        """The ids of every bucket of a SKU, in creation order."""
        cdef long sid = self._sku_id(sku, False)
        if sid < 0:
            return []
        cdef uint64_t key
        cdef uint32_t slot
        out = []
        for lid, pid in self.places:
            key = (<uint64_t>sid << 32) | (<uint64_t>lid << 16) | <uint64_t>pid
            slot = self._b_probe(key)
            if self.b_slots[slot]:
                out.append(self.b_slots[slot] - 1)
        out.sort()
        return out

    def memory_bytes(self) -> int:
        """C memory held (capacity)."""
        return (self.arena_cap + self.skus_cap * sizeof(uint32_t)
                + (self.sku_mask + 1) * sizeof(uint32_t)
                + self.buckets_cap * sizeof(uint64_t) + (self.b_mask + 1) * sizeof(uint32_t))
