"""The C bucket index agrees with a dict, through growth and rehashing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stockgate.engine._core import SKU_BYTES_STORED_MAX, BucketIndex

skus = st.text(min_size=1, max_size=12)
places = st.sampled_from([("WH-EAST", "online"), ("WH-EAST", "offline"), ("STORE-12", "offline"),
                          ("倉庫-北", "线上"), ("WH-EAST", "campaign:D11")])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(skus, places), max_size=400))
def test_index_matches_a_dict(adds):
    index, model = BucketIndex(), {}
    for sku, (loc, pool) in adds:
        key = (sku, loc, pool)
        if key in model:
            with pytest.raises(KeyError):
                index.add(*key)
            continue
        model[key] = index.add(*key)
        assert model[key] == len(model) - 1
    assert len(index) == len(model)
    for key, b in model.items():
        assert index.get(*key) == b
        assert index.key(b) == key
        assert index.place(b) == key[1:]
    for sku in {k[0] for k in model}:
        assert index.has_sku(sku)
        assert index.of_sku(sku) == sorted(b for k, b in model.items() if k[0] == sku)
    assert index.get("never-seen", "WH-EAST", "online") == -1
    assert not index.has_sku("never-seen")
    assert index.of_sku("never-seen") == []


def test_a_hundred_thousand_buckets_survive_rehashing():
    index = BucketIndex()
    for i in range(100_000):
        assert index.add(f"SKU-{i}", "WH", "online" if i % 3 else "offline") == i
    assert all(index.get(f"SKU-{i}", "WH", "online" if i % 3 else "offline") == i
               for i in range(0, 100_000, 7))
    assert index.key(99_998) == ("SKU-99998", "WH", "online")
    assert index.key(99_999) == ("SKU-99999", "WH", "offline")
    assert index.memory_bytes() < 100 * 100_000


def test_sku_length_limit_of_the_arena():
    index = BucketIndex()
    index.add("x" * SKU_BYTES_STORED_MAX, "WH", "online")
    with pytest.raises(ValueError, match="at most"):
        index.add("x" * (SKU_BYTES_STORED_MAX + 1), "WH", "online")


def test_out_of_range_bucket_is_an_index_error():
    index = BucketIndex()
    with pytest.raises(IndexError):
        index.key(0)
