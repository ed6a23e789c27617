"""Time-sortable reservation ids: format, order, and no repeats across fork."""

from __future__ import annotations

import os
import time

import pytest

from stockgate.clients import ids, new_reservation_id, reservation_id_time_ms


def test_an_id_is_26_crockford_characters_carrying_its_time():
    before = time.time_ns() // 1_000_000
    rid = new_reservation_id()
    after = time.time_ns() // 1_000_000
    assert len(rid) == 26
    assert set(rid) <= set(ids.ALPHABET)
    assert not set(rid) & set("ILOU")
    assert before <= reservation_id_time_ms(rid) <= after


def test_ids_of_one_process_strictly_increase_within_a_millisecond():
    made = [new_reservation_id() for _ in range(10_000)]
    assert made == sorted(made)
    assert len(set(made)) == len(made)


def test_later_ids_sort_after_earlier_ones_and_a_clock_step_back_keeps_order():
    g = ids._Generator()
    early = g.next(now_ms=1_700_000_000_000)
    late = g.next(now_ms=1_700_000_000_001)
    stepped_back = g.next(now_ms=1_699_999_999_000)
    assert early < late < stepped_back
    assert reservation_id_time_ms(early) == 1_700_000_000_000
    assert reservation_id_time_ms(stepped_back) == 1_700_000_000_001  # stays in its ms


def test_time_out_of_range_and_foreign_ids_are_refused():
    g = ids._Generator()
    with pytest.raises(ValueError, match="now_ms"):
        g.next(now_ms=1 << 48)
    with pytest.raises(ValueError, match="26"):
        reservation_id_time_ms("order-42")
    with pytest.raises(ValueError, match="Crockford"):
        reservation_id_time_ms("U" * 26)


def test_a_forked_child_does_not_continue_its_parents_sequence():
    # Same millisecond on both sides: without the reset at fork, the child and the
    # parent would both count up from the parent's last id and hand out the same one.
    g = ids._generator
    ms = max(g._last_ms, time.time_ns() // 1_000_000)
    g.next(now_ms=ms)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read_end)
        os.write(write_end, g.next(now_ms=ms).encode())
        os._exit(0)
    os.close(write_end)
    child_id = os.read(read_end, 64).decode()
    os.close(read_end)
    os.waitpid(pid, 0)
    assert len(child_id) == 26
    assert g.next(now_ms=ms) != child_id
