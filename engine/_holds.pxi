# Included by _core.pyx: the reservation path's walk from checked requests to taken stock
# and back to per-line results, in C loops. It was the engine's costliest Python (a third
# of the time of a reservation): building the core's flat arrays line by line, then
# reading them back into allocations, results and journal pairs.

from cpython.dict cimport PyDict_GetItem, PyDict_Next
from cpython.object cimport PyObject
from cpython.mem cimport PyMem_Calloc
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM

cdef extern from *:
    """
    /* tuple.__new__(cls, items) for a tuple subclass (a NamedTuple), without the generic
       call: the same steps as CPython's tuple_subtype_new. */
    static PyObject *sg_named(PyObject *cls, PyObject *items) {
        PyTypeObject *t = (PyTypeObject *)cls;
        Py_ssize_t i, n = PyTuple_GET_SIZE(items);
        PyObject *o;
        if (!PyType_Check(cls) || !PyType_IsSubtype(t, &PyTuple_Type)) {
            PyErr_SetString(PyExc_TypeError, "sg_named: not a tuple subclass");
            return NULL;
        }
#if PY_VERSION_HEX >= 0x030E0000
        /* 3.14 caches a tuple's hash in a field that tuple_subtype_new resets after the
           allocation: let CPython build it (tuple.__new__ itself, without the call). */
        {
            PyObject *args = PyTuple_Pack(1, items);
            if (args == NULL)
                return NULL;
            o = PyTuple_Type.tp_new(t, args, NULL);
            Py_DECREF(args);
            return o;
        }
#endif
        o = t->tp_alloc(t, n);
        if (o == NULL)
            return NULL;
        for (i = 0; i < n; i++) {
            PyObject *x = PyTuple_GET_ITEM(items, i);
            Py_INCREF(x);
            PyTuple_SET_ITEM(o, i, x);
        }
        return o;
    }
    """
    object _named "sg_named"(object cls, tuple items)

# Outcome codes used here (engine/outcomes.py holds the enum; a test checks they agree).
DEF OUT_OK = 0
DEF OUT_PARTIAL = 1
DEF OUT_INSUFFICIENT = 2
DEF OUT_LIMIT = 3
DEF OUT_UNKNOWN = 7
# The same codes by name, for that test.
HOLD_OUTCOME_CODES = {"OK": OUT_OK, "PARTIAL": OUT_PARTIAL,
                      "INSUFFICIENT_STOCK": OUT_INSUFFICIENT, "CUSTOMER_LIMIT": OUT_LIMIT,
                      "UNKNOWN_SKU": OUT_UNKNOWN}


cdef inline int _rank(int code) noexcept:
    # Which refusal a request names when several lines are short: the most fundamental.
    if code == OUT_UNKNOWN:
        return 0
    if code == OUT_LIMIT:
        return 1
    return 2


def hold(Counters counters, Counters limits, BucketIndex index, list ops, dict touched,
         object line_result, object allocation, tuple outcomes) -> list:
    """Take stock for many reservations in one pass of the core.

    Each op is (per_line, lines, flags, lims): per_line[j] is the list of bucket ids line
    j may draw from, in order, or an int outcome refusing the line (unknown SKU); lines
    the request's ((sku, qty), ...); flags FLAG_PARTIAL | FLAG_PRESALE; lims the per-line
    customer-allowance counters in `limits`, or None. `touched` gets the available of
    every source before the call (for alerts).
    `line_result` and `allocation` are the result types to build; outcomes[code] is
    the Outcome of a code.

    Returns per op (code, lines_out, line_results, held): code OK, PARTIAL or the
    refusal; lines_out the lines to store, (sku, qty, granted, (bucket, units, ...),
    line code), or None when refused; held the [bucket, units] taken, for the journal.
    """
    return _hold(counters, limits, index, ops, touched, line_result, allocation, outcomes,
                 None)


def hold_and_record(Counters counters, Counters limits, BucketIndex index, list ops,
                    dict touched, object line_result, object allocation, tuple outcomes,
                    list todo, list checked, list out, object res, list expiry, dict puts,
                    list events, int64_t seq, int64_t now, int64_t steady,
                    object result_t, object reservation_t, object held_state) -> int64_t:
    """hold() for fresh reservations, recording each as it reads the core's answer: its
    stored record in `puts` and in `res` (the ledger keeps it as bytes), (expires, rid) on
    the `expiry` heap, its "reserved" event in `events` (numbered from seq + 1; packed,
    see _EV_HEAD) and its answer in out[i] as (Result, None); a refusal gets its answer
    and nothing else. Returns the last seq used. The record and the event are written
    straight from the core's arrays: no lines or pairs are built only to be packed.

    ops[n] is the op of todo[n] = (i, per_line, key); checked[i] is (rid, key, ttl_ms,
    prefer)."""
    if len(todo) != len(ops):
        raise ValueError("todo must have one entry per op")
    cdef _Recorder r = _Recorder(todo, checked, out, res, expiry, puts, events, seq, now,
                                 steady, outcomes, result_t, reservation_t, held_state)
    _hold(counters, limits, index, ops, touched, line_result, allocation, outcomes, r)
    return r.seq


cdef list _hold(Counters counters, Counters limits, BucketIndex index, list ops,
                dict touched, object line_result, object allocation, tuple outcomes,
                _Recorder rec):
    cdef Py_ssize_t n_ops = len(ops), n_lines = 0, n_srcs = 0
    cdef Py_ssize_t i, j, jj, k, k0, n
    cdef tuple op, lines
    cdef object per_line, s, lims
    cdef int64_t b
    for op in ops:
        per_line = op[0]
        n_lines += len(per_line)
        for s in per_line:
            if type(s) is list:
                n_srcs += len(<list>s)
    if n_ops == 0:
        return []
    cdef int64_t *buf = <int64_t *>PyMem_Calloc(2 * n_ops + 7 * n_lines + 2 * n_srcs + 1,
                                                sizeof(int64_t))
    if buf == NULL:
        raise MemoryError()
    cdef int64_t *op_end = buf
    cdef int64_t *flags = op_end + n_ops
    cdef int64_t *qty = flags + n_ops
    cdef int64_t *lim = qty + n_lines
    cdef int64_t *src_end = lim + n_lines
    cdef int64_t *granted = src_end + n_lines
    cdef int64_t *status = granted + n_lines
    cdef int64_t *srcs = status + n_lines
    cdef int64_t *taken = srcs + n_srcs
    # Read back per line by _results(), for a recorder to write without reading again:
    cdef int64_t *line_code = taken + n_srcs  # the line's outcome code
    cdef int64_t *line_pairs = line_code + n_lines  # its sources that gave units
    try:
        j = k = 0
        for i in range(n_ops):
            op = ops[i]
            per_line, lines, lims = op[0], op[1], op[3]
            flags[i] = op[2]
            if len(lines) != len(per_line):
                raise ValueError("per_line must have one entry per line")
            for jj in range(len(lines)):
                qty[j] = (<tuple>lines[jj])[1]
                if qty[j] <= 0:
                    raise ValueError(f"line quantity must be > 0, got {qty[j]}")
                s = per_line[jj]
                lim[j] = -1
                if type(s) is list:
                    if lims is not None:
                        lim[j] = lims[jj]
                        if lim[j] < -1 or lim[j] >= limits.size:
                            raise IndexError(f"limit counter {lim[j]} out of range")
                    for b in <list>s:
                        if b < 0 or b >= counters.size:
                            raise IndexError(f"source counter {b} out of range")
                        srcs[k] = b
                        k += 1
                        if b not in touched:
                            touched[b] = sg_load(&counters.avail[b])
                src_end[j] = k
                j += 1
            op_end[i] = j
        sg_add(&counters.busy, 1)
        if limits is not counters:
            sg_add(&limits.busy, 1)
        try:
            if n_lines >= NOGIL_LINES_MIN:
                with nogil:
                    _decide(counters, limits, n_ops, op_end, flags, qty, lim, src_end, srcs,
                            taken, granted, status)
            else:
                _decide(counters, limits, n_ops, op_end, flags, qty, lim, src_end, srcs,
                        taken, granted, status)
        finally:
            sg_add(&counters.busy, -1)
            if limits is not counters:
                sg_add(&limits.busy, -1)
        return _results(index, ops, line_result, allocation, outcomes,
                        granted, status, src_end, srcs, taken, line_code, line_pairs,
                        rec)
    finally:
        PyMem_Free(buf)


cdef inline int _line_code(object source, int64_t status) except? -1:
    # From the core's status, not from `granted`: after an all-or-nothing rollback every
    # line has 0, but only the short one is to blame.
    if type(source) is not list:
        return source  # the caller's refusal of the line (an unknown SKU)
    if status == 2:
        return OUT_LIMIT
    if status == 1:
        return OUT_INSUFFICIENT
    return OUT_OK


cdef list _results(BucketIndex index, list ops, object line_result,
                   object allocation, tuple outcomes, const int64_t *granted,
                   const int64_t *status, const int64_t *src_end, const int64_t *srcs,
                   const int64_t *taken, int64_t *line_code, int64_t *line_pairs,
                   _Recorder rec):
    """Per op (code, lines_out, line_results, held), or with `rec` None per op, each one
    recorded by rec (see hold_and_record). Fills line_code and line_pairs."""
    cdef list out = [], lines_out, line_results, held, refused
    cdef tuple alloc, allocs
    cdef Py_ssize_t j = 0, k = 0, k0, jj, n, m, x, j_op, k_op, o = 0
    cdef int64_t g, total, units
    cdef int code, worst
    cdef uint64_t key
    cdef tuple op, lines, line
    cdef object per_line, sku, b, u
    cdef bint partial
    cdef list names = index.names
    for op in ops:
        per_line, lines = op[0], op[1]
        partial = (op[2] & FLAG_PARTIAL) != 0
        line_results = []
        lines_out = held = None
        if rec is None:
            lines_out, held = [], []
        total = 0
        worst = -1
        j_op, k_op = j, k
        for jj in range(len(lines)):
            line = lines[jj]
            sku = line[0]
            k0, k = k, src_end[j]
            g = granted[j]
            total += g
            m = 0
            for n in range(k0, k):
                if taken[n]:
                    m += 1
            line_pairs[j] = m
            # Sized up front: [bucket, units, ...] to store, Allocations to answer.
            alloc = PyTuple_New(2 * m) if rec is None else None
            allocs = PyTuple_New(m)
            x = 0
            for n in range(k0, k):
                units = taken[n]
                if units:
                    u = units
                    if rec is None:
                        b = srcs[n]
                        Py_INCREF(b)
                        PyTuple_SET_ITEM(alloc, 2 * x, b)
                        Py_INCREF(u)
                        PyTuple_SET_ITEM(alloc, 2 * x + 1, u)
                        held.append((b, u))
                    key = index.b_key[srcs[n]]
                    a = _named(allocation, (names[(key >> 16) & 0xFFFF],
                                            names[key & 0xFFFF], u))
                    Py_INCREF(a)
                    PyTuple_SET_ITEM(allocs, x, a)
                    x += 1
            code = line_code[j] = _line_code(per_line[jj], status[j])
            if code != OUT_OK and (worst < 0 or _rank(code) < _rank(worst)):
                worst = code
            if rec is None:
                # Tuples of atomics: the cyclic GC stops tracking them.
                lines_out.append((sku, line[1], g, alloc, code))
            line_results.append(_named(line_result, (sku, line[1], g, outcomes[code],
                                                     allocs)))
            j += 1
        if total == 0 or (worst >= 0 and not partial):
            # Refused: the core took nothing (all-or-nothing) or nothing was there.
            assert total == 0 or not partial or worst < 0
            refused = [_named(line_result, (x_[0], x_[1], 0, x_[3], ()))
                       for x_ in line_results]
            code = worst if worst >= 0 else OUT_INSUFFICIENT
            if rec is None:
                out.append((code, None, tuple(refused), held))
            else:
                rec.refused(o, code, tuple(refused))
        elif rec is None:
            out.append((OUT_OK if worst < 0 else OUT_PARTIAL, lines_out, tuple(line_results),
                        held))
        else:
            rec.granted(o, OUT_OK if worst < 0 else OUT_PARTIAL, tuple(line_results), op,
                        j_op, k_op, granted, src_end, srcs, taken, line_code,
                        line_pairs)
        o += 1
    return out


def alert_candidates(Counters counters, dict touched, dict bsafety,
                     bint every_change) -> list:
    """(bucket, before, after, safety, crossed) of each bucket in `touched` (bucket ->
    available before the op) whose available moved across zero or below its safety stock
    (bsafety: bucket -> threshold); with every_change, of every one that moved. The rest
    of a batch's thousands of touched buckets need no Python at all."""
    cdef list out = []
    cdef Py_ssize_t pos = 0, b
    cdef PyObject *k
    cdef PyObject *v
    cdef PyObject *found
    cdef int64_t before, after, safety
    cdef bint crossed
    while PyDict_Next(touched, &pos, &k, &v):
        b = <object>k
        counters._check(b)
        before = <object>v
        after = sg_load(&counters.avail[b])
        if after == before:
            continue
        crossed = (before > 0 >= after) or (before <= 0 < after)
        sobj = None
        if bsafety:
            found = PyDict_GetItem(bsafety, <object>k)
            if found != NULL:
                sobj = <object>found
                if sobj:
                    safety = sobj
                    crossed = crossed or before >= safety > after
        if crossed or every_change:
            out.append((<object>k, before, after, sobj, crossed))
    return out


def check_plain_reserves(list requests, tuple lim) -> list:
    """check_plain_reserve() of each request: its checked form, or None where the engine
    must run its full check (which names the field at fault)."""
    return [check_plain_reserve(r, lim) for r in requests]


def request_checks(list checked, dict channels) -> list:
    """Indices of the checked requests (None skipped) that the catalogue may refuse: an
    unknown channel, or a campaign with no customer (its per-customer limit needs one)."""
    cdef list out = []
    cdef Py_ssize_t i
    cdef object c
    cdef tuple key
    for i in range(len(checked)):
        c = checked[i]
        if c is None:
            continue
        key = <tuple>(<tuple>c)[1]
        if key[0] not in channels or (key[2] is not None and key[1] is None):
            out.append(i)
    return out


def plan_reserves(list checked, Py_ssize_t i, set seen, object res, BucketIndex index,
                  dict codes, object place_codes, dict channels, list todo,
                  list ops) -> Py_ssize_t:
    """Plan checked[i:] for hold() while each request is the common kind: an id neither
    seen in this pass nor in the ledger `res`, no campaign, every SKU known. For each,
    add its id to `seen`, (i, per_line, key) to `todo` and its op to `ops`; return the
    index of the first request that needs the engine's full path (or len(checked)).

    checked[i] is (rid, key, ttl_ms, prefer) with key (channel, customer, campaign,
    partial, lines); codes caches place_codes(channel, prefer) for the pass; channels[c]
    is the channel's (sources, presale)."""
    cdef Py_ssize_t n = len(checked), j
    cdef tuple c, key, lines, ck, places
    cdef list per_line
    cdef object rid, found
    cdef int flags
    while i < n:
        c = <tuple>checked[i]
        rid = c[0]
        key = <tuple>c[1]
        if rid in seen or key[2] is not None or PyDict_GetItem(res, rid) != NULL:
            return i  # a repeat, a campaign or a replay (dict's own get: see Ledger)
        ck = (key[0], c[3])
        found = codes.get(ck)
        if found is None:
            found = codes[ck] = place_codes(key[0], c[3])
        places = <tuple>found
        lines = <tuple>key[4]
        per_line = []
        for j in range(len(lines)):
            found = index._find(<str>(<tuple>lines[j])[0], places)
            if found is None:
                return i  # an unknown SKU: refused, or a partial answer, by the engine
            per_line.append(found)
        flags = FLAG_PARTIAL if key[3] else 0
        if (<tuple>channels[key[0]])[1]:
            flags |= FLAG_PRESALE
        seen.add(rid)
        todo.append((i, per_line, key))
        ops.append((per_line, lines, flags, None))
        i += 1
    return n


from stockgate.engine.limits import TTL_MS_DEFAULT as _TTL_MS_DEFAULT


cdef class ReserveRequest:
    """One reservation to make, for Engine.reserve_many(); immutable.

    reservation_id: the caller's id (idempotency key); channel: who sells; lines:
    (sku, qty) pairs; customer and campaign: optional ids; ttl_ms: how long the hold
    lasts unless committed, released or extended; partial: grant what there is instead of
    all or nothing; prefer_locations: locations to walk first (nearest warehouse first).
    Nothing is checked here: the engine checks it and names the field at fault.
    """

    # A C class: made once per reservation, it cost a frozen dataclass's eight
    # object.__setattr__ calls (a tenth of a durable reservation's CPU, measured here).
    cdef readonly object reservation_id, channel, lines, customer, campaign, ttl_ms
    cdef readonly object partial, prefer_locations

    def __init__(self, reservation_id, channel, lines, customer=None, campaign=None,
                 ttl_ms=_TTL_MS_DEFAULT, partial=False, prefer_locations=()):
        self.reservation_id = reservation_id
        self.channel = channel
        self.lines = lines
        self.customer = customer
        self.campaign = campaign
        self.ttl_ms = ttl_ms
        self.partial = partial
        self.prefer_locations = prefer_locations

    cdef tuple _fields(self):
        return (self.reservation_id, self.channel, self.lines, self.customer, self.campaign,
                self.ttl_ms, self.partial, self.prefer_locations)

    def __eq__(self, other):
        if type(other) is not ReserveRequest:
            return NotImplemented
        return self._fields() == (<ReserveRequest>other)._fields()

    def __hash__(self):
        return hash(self._fields())

    def __repr__(self):
        names = ("reservation_id", "channel", "lines", "customer", "campaign", "ttl_ms",
                 "partial", "prefer_locations")
        return "ReserveRequest(" + ", ".join(
            f"{n}={v!r}" for n, v in zip(names, self._fields())) + ")"

    def __reduce__(self):
        return ReserveRequest, self._fields()


cdef inline bint _plain_id(object v, Py_ssize_t max_bytes):
    # A non-empty ASCII string of printable characters within max_bytes: the shape of
    # nearly every id. Anything else takes the full check, which explains what is wrong.
    if type(v) is not str:
        return False
    cdef str s = <str>v
    cdef Py_ssize_t n = len(s), i
    if n == 0 or n > max_bytes or not s.isascii():
        return False
    cdef Py_UCS4 ch
    for ch in s:
        if ch < 0x20 or ch == 0x7f:
            return False
    return True


def check_plain_reserve(object req, tuple lim):
    """The common, valid reserve request checked in C: (rid, key, ttl_ms, prefer), or
    None when anything is unusual (the engine then runs its full check, which names the
    field at fault). `lim` is (id bytes max per field..., qty max, lines max, ttl min,
    ttl max, sources max): see reservations._PLAIN_LIMITS."""
    cdef Py_ssize_t rid_max = lim[0], channel_max = lim[1], sku_max = lim[2]
    cdef Py_ssize_t customer_max = lim[3], campaign_max = lim[4], location_max = lim[5]
    cdef int64_t qty_max = lim[6], lines_max = lim[7], ttl_min = lim[8], ttl_max = lim[9]
    cdef Py_ssize_t sources_max = lim[10]
    if type(req) is not ReserveRequest:
        return None
    cdef ReserveRequest r = <ReserveRequest>req
    rid = r.reservation_id
    channel = r.channel
    if not _plain_id(rid, rid_max) or not _plain_id(channel, channel_max):
        return None
    lines = r.lines
    if type(lines) is not list and type(lines) is not tuple:
        return None
    cdef Py_ssize_t n = len(lines)
    if n < 1 or n > lines_max:
        return None
    cdef tuple out = PyTuple_New(n)
    cdef object q, line, kept
    cdef Py_ssize_t j
    for j in range(n):
        line = lines[j]
        if (type(line) is not tuple and type(line) is not list) or len(line) != 2:
            return None
        q = line[1]
        if type(q) is not int or q < 1 or q > qty_max or not _plain_id(line[0], sku_max):
            return None
        kept = line if type(line) is tuple else (line[0], q)  # an exact tuple is immutable
        Py_INCREF(kept)
        PyTuple_SET_ITEM(out, j, kept)
    customer = r.customer
    if customer is not None and not _plain_id(customer, customer_max):
        return None
    campaign = r.campaign
    if campaign is not None and not _plain_id(campaign, campaign_max):
        return None
    ttl = r.ttl_ms
    if type(ttl) is not int or ttl < ttl_min or ttl > ttl_max:
        return None
    partial = r.partial
    if partial is not True and partial is not False:
        return None
    prefer = r.prefer_locations
    if type(prefer) is not tuple:
        if type(prefer) is not list:
            return None
        prefer = tuple(prefer)
    if len(prefer) > sources_max:
        return None
    for loc in prefer:
        if not _plain_id(loc, location_max):
            return None
    return rid, (channel, customer, campaign, partial, out), ttl, prefer
