"""Creating, opening, closing, reopening; items; deletes; read-only handles; info and check."""

from __future__ import annotations

import inspect
import pathlib

import numpy as np
import pytest

import milan
from helpers import brute_top_k, random_codes


def test_items_round_trip_and_persist(path, rng):
    codes = random_codes(rng, 50, 64)
    keys = [f"img/{i}.png" if i % 5 else None for i in range(50)]
    labels = [f"class {i % 3}" for i in range(50)]
    with milan.Index.create(path, bits=64) as index:
        assert (index.bits, len(index), index.read_only, index.closed) == (64, 0, False, False)
        assert index.path == pathlib.Path(path)
        ids = index.add(codes, keys=keys, labels=labels)
        assert ids.dtype == np.int64
        np.testing.assert_array_equal(ids, np.arange(50))
        more = index.add(codes[:2])
        np.testing.assert_array_equal(more, [50, 51])
        answer = index.search(codes, k=3)
    assert index.closed
    with milan.Index.open(path) as index:
        assert len(index) == 52
        assert index.keys(ids) == keys
        assert index.labels(ids) == labels
        assert index.keys(more) == [None, None]
        assert index.labels(np.array([49, 50])) == ["class 1", None]
        np.testing.assert_array_equal(index.codes(ids), codes)
        assert index.codes([]).shape == (0, 8)
        assert index.keys([]) == []
        reopened = index.search(codes, k=3)
        np.testing.assert_array_equal(reopened[0], answer[0])
        np.testing.assert_array_equal(reopened[1], answer[1])


def test_context_manager_closes_and_closed_index_refuses_everything(path, rng):
    with milan.Index.create(path, bits=64) as index:
        index.add(random_codes(rng, 5, 64))
    assert index.closed
    assert "closed" in repr(index)
    calls = [
        lambda: len(index),
        lambda: index.add(random_codes(rng, 1, 64)),
        lambda: index.search(random_codes(rng, 1, 64)),
        lambda: index.range_search(random_codes(rng, 1, 64), 3),
        lambda: index.delete([0]),
        lambda: index.keys([0]),
        lambda: index.labels([0]),
        lambda: index.codes([0]),
        lambda: index.ids(),
        lambda: index.info(),
        lambda: index.check(),
    ]
    for call in calls:
        with pytest.raises(milan.ClosedIndexError, match="closed") as caught:
            call()
        assert isinstance(caught.value, ValueError)
    index.close()  # closing twice does nothing
    # An exception in the block closes the index too, and propagates.
    with pytest.raises(RuntimeError):
        with milan.Index.open(path) as again:
            raise RuntimeError("boom")
    assert again.closed
    # Closed handles release the index: a fresh handle sees everything.
    with milan.Index.open(path) as index:
        assert len(index) == 5


def test_create_over_an_index_and_open_of_nothing(path, tmp_path):
    milan.Index.create(path, bits=64).close()
    with pytest.raises(milan.IndexExistsError, match="already exists") as caught:
        milan.Index.create(path, bits=64)
    assert isinstance(caught.value, FileExistsError)
    with pytest.raises(milan.NotAnIndexError, match="no such directory") as caught:
        milan.Index.open(tmp_path / "missing")
    assert isinstance(caught.value, FileNotFoundError)
    assert str(tmp_path / "missing") in str(caught.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a milan index"):
        milan.Index.open(tmp_path / "empty", read_only=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(milan.NotAnIndexError, match="not a directory"):
        milan.Index.open(str(tmp_path / "file"))


def test_delete_is_all_or_nothing(path, rng):
    codes = random_codes(rng, 20, 64)
    with milan.Index.create(path, bits=64) as index:
        index.add(codes, keys=[str(i) for i in range(20)])
        assert index.delete([3, 5, 5, 7]) == 3
        assert len(index) == 17
        ids, _ = index.search(codes[[3, 5, 7]], k=20)
        assert not np.isin([3, 5, 7], ids).any()
        # Each bad list names its first id that is not live (3 is deleted already).
        for bad, unknown in [([1, 2, 3], 3), ([1, 99], 99), ([-1], -1), ([4, 2**40, 6], 2**40)]:
            with pytest.raises(milan.UnknownIdError) as caught:
                index.delete(bad)
            assert isinstance(caught.value, KeyError)
            # The message reads as it is (a plain KeyError would quote it) and names the id.
            assert str(caught.value) == f"no item with id {unknown} in the index; nothing was deleted"
            assert len(index) == 17
        assert index.keys([1, 2, 4]) == ["1", "2", "4"]
        assert index.delete([]) == 0
        assert index.delete(np.array([0, 1], np.int32)) == 2
        np.testing.assert_array_equal(
            index.ids(), [i for i in range(20) if i not in (0, 1, 3, 5, 7)]
        )
        for lookup in [index.keys, index.labels, index.codes]:
            with pytest.raises(milan.UnknownIdError, match="no item with id 3"):
                lookup([2, 3])
        live = index.ids()
        ids, distances = index.search(codes, k=20)
        want = brute_top_k(codes, codes[live], live, 20)
        np.testing.assert_array_equal(ids, want[0])
        np.testing.assert_array_equal(distances, want[1])
    with milan.Index.open(path, read_only=True) as index:
        assert len(index) == 15


def test_read_only_handles_refuse_writes(path, rng):
    codes = random_codes(rng, 8, 64)
    milan.Index.create(path, bits=64).close()
    with milan.Index.open(path) as writable:
        writable.add(codes)
    with milan.Index.open(path, read_only=True) as index:
        assert index.read_only and "read_only" in repr(index)
        for write in [
            lambda: index.add(codes),
            lambda: index.add(codes[:0]),
            lambda: index.delete([0]),
            lambda: index.delete([]),
        ]:
            with pytest.raises(milan.ReadOnlyError, match="read-only") as caught:
                write()
            assert isinstance(caught.value, PermissionError)
        assert len(index) == 8
        ids, distances = index.search(codes, k=1)
        np.testing.assert_array_equal(ids[:, 0], np.arange(8))
        assert index.info()["read_only"] is True
        report = index.check()
        assert report["ok"] is True and report["storage_ok"] is None
    with milan.Index.open(path) as index:
        assert len(index) == 8


def test_info_and_check(path, rng):
    with milan.Index.create(path, bits=128, substrings=4, expected_size=1000) as index:
        index.add(random_codes(rng, 30, 128))
        index.delete([0, 1])
        info = index.info()
        assert info["bits"] == 128 and info["substrings"] == 4
        assert info["len"] == 28 and info["next_id"] == 30
        assert info["read_only"] is False and info["format_version"] >= 4
        assert info["path"] == pathlib.Path(path)
        assert info["file_bytes"] > 0 and info["memory_bytes"] > 0
        assert info["created_by"] == info["written_by"] != ""
        report = index.check()
        assert report == {
            "ok": True,
            "problems": [],
            "unlisted": 0,
            "codes": 28,
            "storage_ok": True,
        }


def test_everything_public_has_a_docstring():
    names = [name for name in milan.__all__ if name != "__version__"]
    assert "Index" in names and "MilanError" in names
    for name in names:
        assert (getattr(milan, name).__doc__ or "").strip(), name
    assert milan.__doc__ and milan.__version__
    members = [
        name
        for name, _ in inspect.getmembers(milan.Index)
        if not name.startswith("_") or name in ("__enter__", "__exit__", "__len__")
    ]
    for name in [
        "create", "open", "close", "add", "delete", "search", "range_search",
        "keys", "labels", "codes", "ids", "info", "check", "bits", "path", "read_only", "closed",
        "add_images", "search_images", "head", "model",
    ]:
        assert name in members, name
    for name in members:
        assert (getattr(milan.Index, name).__doc__ or "").strip(), name
    stub = pathlib.Path(milan.__file__).with_name("_milan.pyi")
    assert stub.is_file() and stub.with_name("py.typed").is_file()


def test_exception_hierarchy():
    for name in milan.__all__:
        value = getattr(milan, name)
        if isinstance(value, type) and name not in ("Index", "Snapshot", "Extractor", "Head"):
            assert issubclass(value, milan.MilanError), name
    assert issubclass(milan.LockTimeoutError, TimeoutError)
    assert issubclass(milan.NotAnIndexError, FileNotFoundError)
    assert issubclass(milan.IndexExistsError, FileExistsError)
    assert issubclass(milan.InvalidArgumentError, ValueError)
    assert issubclass(milan.InvalidTypeError, TypeError)
    assert issubclass(milan.UnknownIdError, KeyError)
    assert issubclass(milan.ReadOnlyError, PermissionError)
    for name in ["MismatchError", "ImageError", "HeadError"]:
        assert issubclass(getattr(milan, name), ValueError), name
