"""Items by key from Python: lookups, deletes by key and upserts, against what is stored."""

import numpy as np
import pytest

import milan


def codes_of(values):
    return np.array(values, dtype=np.uint64)


def test_ids_with_key_follows_adds_deletes_and_reopens(tmp_path):
    path = tmp_path / "idx"
    with milan.Index.create(path, bits=64) as index:
        ids = index.add(codes_of([1, 2, 3, 4]), keys=["a.png", "b.png", "a.png", None])
        assert index.ids_with_key("a.png").tolist() == [ids[0], ids[2]]
        assert index.ids_with_key("b.png").tolist() == [ids[1]]
        assert index.ids_with_key("missing").tolist() == []
        assert index.ids_with_key("a.png").dtype == np.int64
        index.delete([ids[0]])
        assert index.ids_with_key("a.png").tolist() == [ids[2]]
    with milan.Index.open(path, read_only=True) as index:
        assert index.ids_with_key("a.png").tolist() == [ids[2]]


def test_delete_keys_deletes_every_item_of_each_key_or_nothing(tmp_path):
    with milan.Index.create(tmp_path / "idx", bits=64) as index:
        ids = index.add(codes_of([1, 2, 3]), keys=["a", "b", "a"])
        with pytest.raises(milan.UnknownIdError, match='key "nope"'):
            index.delete_keys(["b", "nope"])
        # The refused call deleted nothing, not even the known key.
        assert len(index) == 3
        deleted = index.delete_keys(["a", "a"])
        assert deleted.tolist() == [ids[0], ids[2]]
        assert len(index) == 1
        assert index.ids_with_key("a").tolist() == []
        with pytest.raises(TypeError, match="sequence of str"):
            index.delete_keys("b")


def test_upsert_replaces_the_items_of_each_key(tmp_path):
    with milan.Index.create(tmp_path / "idx", bits=64) as index:
        old = index.add(codes_of([10, 20]), keys=["a", "b"], labels=["x", "y"])
        ids, replaced = index.upsert(codes_of([11, 30, 12]), keys=["a", "c", "a"], labels=["x2", None, "x3"])
        # Row 0 replaced the stored "a"; row 2 replaced row 0's new item in the same call.
        assert replaced.tolist() == sorted([old[0], ids[0]])
        assert index.ids_with_key("a").tolist() == [ids[2]]
        assert index.ids_with_key("b").tolist() == [old[1]]
        assert index.ids_with_key("c").tolist() == [ids[1]]
        assert len(index) == 3
        assert index.labels([ids[2]]) == ["x3"]
        # The stored code is the new one: a search for it finds it at distance 0.
        found, distances = index.search(codes_of([12]), k=1)
        assert (found[0, 0], distances[0, 0]) == (ids[2], 0)
        with pytest.raises(ValueError, match="one str per code"):
            index.upsert(codes_of([1, 2]), keys=["only-one"])


def test_a_read_only_handle_refuses_upserts_and_deletes_by_key(tmp_path):
    path = tmp_path / "idx"
    with milan.Index.create(path, bits=64) as index:
        index.add(codes_of([1]), keys=["a"])
    with milan.Index.open(path, read_only=True) as index:
        with pytest.raises(milan.ReadOnlyError):
            index.upsert(codes_of([2]), keys=["a"])
        with pytest.raises(milan.ReadOnlyError):
            index.delete_keys(["a"])
        assert len(index) == 1
