"""Wrong dtypes, shapes, lengths and values give clear errors, and add nothing."""

from __future__ import annotations

import math

import numpy as np
import pytest

import milan
from helpers import random_codes


@pytest.fixture
def index(path, rng):
    with milan.Index.create(path, bits=64) as index:
        index.add(random_codes(rng, 10, 64), keys=[str(i) for i in range(10)])
        yield index


def unchanged(index):
    """The index still holds exactly the 10 codes of the fixture."""
    assert len(index) == 10
    assert index.info()["next_id"] == 10


@pytest.mark.parametrize(
    "codes, words",
    [
        (np.zeros((3, 8), np.float64), ["float64", "uint8", "(n, 8)", "uint64"]),
        (np.zeros((3, 8), np.int64), ["int64", "uint8"]),
        (np.zeros((3, 8), np.int8), ["int8", "uint8"]),
        (np.zeros((3, 64), np.bool_), ["bool", "numpy.packbits"]),
        (np.zeros((3, 8), ">u8"), [">u8", "uint64"]),
        ([[0] * 8] * 3, ["list", "uint8", "numpy.asarray"]),
        (b"\x00" * 8, ["bytes", "uint8"]),
        (None, ["NoneType", "uint8"]),
    ],
)
def test_wrong_types_are_type_errors_naming_the_dtype(index, codes, words):
    for call in [index.add, lambda c: index.search(c, k=1), lambda c: index.range_search(c, 1)]:
        with pytest.raises(milan.InvalidTypeError) as caught:
            call(codes)
        assert isinstance(caught.value, TypeError) and isinstance(caught.value, milan.MilanError)
        for word in words:
            assert word in str(caught.value)
    unchanged(index)


@pytest.mark.parametrize(
    "codes, shape",
    [
        (np.zeros((3, 7), np.uint8), "(3, 7)"),
        (np.zeros((3, 16), np.uint8), "(3, 16)"),
        (np.zeros((7,), np.uint8), "(7,)"),
        (np.zeros((2, 3, 8), np.uint8), "(2, 3, 8)"),
        (np.zeros((), np.uint8), "()"),
        (np.zeros((3, 1), np.uint64), "(3, 1)"),
    ],
)
def test_wrong_shapes_are_value_errors_naming_both_shapes(index, codes, shape):
    for call in [index.add, lambda c: index.search(c, k=1), lambda c: index.range_search(c, 1)]:
        with pytest.raises(milan.InvalidArgumentError) as caught:
            call(codes)
        assert isinstance(caught.value, ValueError)
        message = str(caught.value)
        assert shape in message and "(n, 8)" in message, message
    unchanged(index)


def test_uint64_codes_are_for_64_bit_indexes_only(tmp_path):
    with milan.Index.create(tmp_path / "wide", bits=128) as index:
        with pytest.raises(milan.InvalidTypeError, match="64-bit") as caught:
            index.add(np.zeros(3, np.uint64))
        assert "(n, 16)" in str(caught.value)
        with pytest.raises(TypeError, match="128-bit"):
            index.search(np.zeros(3, np.uint64))
        assert len(index) == 0


def test_keys_and_labels_must_match_the_codes(index, rng):
    codes = random_codes(rng, 3, 64)
    with pytest.raises(milan.InvalidArgumentError, match="2 keys for 3 codes"):
        index.add(codes, keys=["a", "b"])
    with pytest.raises(ValueError, match="4 labels for 3 codes"):
        index.add(codes, labels=["a", "b", "c", "d"])
    with pytest.raises(milan.InvalidTypeError, match="single str"):
        index.add(codes, keys="abc")
    with pytest.raises(TypeError, match="sequence of str"):
        index.add(codes, keys=["a", 2, "c"])
    with pytest.raises(TypeError, match="sequence of str"):
        index.add(codes, labels=5)
    unchanged(index)
    # None entries and numpy string arrays are fine.
    ids = index.add(codes, keys=np.array(["x", "y", "z"]), labels=[None, "cat", None])
    assert index.keys(ids) == ["x", "y", "z"]
    assert index.labels(ids) == [None, "cat", None]


def test_an_item_over_the_limit_adds_nothing(index, rng):
    codes = random_codes(rng, 3, 64)
    with pytest.raises(milan.InvalidArgumentError, match="item too large"):
        index.add(codes, keys=["fine", "x" * (17 << 20), "fine"])
    unchanged(index)


def test_k_and_radius_out_of_range(index, rng):
    query = random_codes(rng, 1, 64)
    for k in [0, -1]:
        with pytest.raises(milan.InvalidArgumentError, match="k must be at least 1"):
            index.search(query, k=k)
    with pytest.raises(ValueError, match="k is too large"):
        index.search(random_codes(rng, 4, 64), k=2**62)
    with pytest.raises(milan.InvalidArgumentError, match="radius must be 0 to 64"):
        index.range_search(query, -1)
    with pytest.raises(milan.InvalidArgumentError, match="radius 65 is larger than the code length"):
        index.range_search(query, 65)
    with pytest.raises(ValueError, match="larger than the code length"):
        index.range_search(query, 2**40)
    lims, ids, _ = index.range_search(query, 64)
    assert lims[-1] == 10 and len(ids) == 10


@pytest.mark.parametrize(
    "ids, error, words",
    [
        (5, milan.InvalidTypeError, ["single int", "[id]"]),
        ("5", milan.InvalidTypeError, ["str"]),
        (["a"], milan.InvalidTypeError, ["sequence of ints"]),
        ([1.5], milan.InvalidTypeError, ["sequence of ints"]),
        (np.array([1.0]), milan.InvalidTypeError, ["float64"]),
        (np.array([[1, 2]]), milan.InvalidArgumentError, ["(1, 2)"]),
        (np.array(1), milan.InvalidArgumentError, ["()", "[id]"]),
    ],
)
def test_wrong_ids(index, ids, error, words):
    for call in [index.delete, index.keys, index.labels, index.codes]:
        with pytest.raises(error) as caught:
            call(ids)
        for word in words:
            assert word in str(caught.value)
    unchanged(index)


def test_integer_arrays_of_any_width_are_ids(index):
    for dtype in [np.int8, np.uint16, np.int32, np.uint32, np.int64, np.uint64]:
        assert index.keys(np.array([1, 2], dtype)) == ["1", "2"]
    assert index.keys((np.int64(3), 4)) == ["3", "4"]
    with pytest.raises(milan.UnknownIdError):
        index.keys(np.array([2**64 - 1], np.uint64))


def test_bad_create_and_open_arguments(tmp_path):
    for bits in [12, 0, 2048, -8]:
        with pytest.raises(milan.InvalidArgumentError, match="multiple of 8"):
            milan.Index.create(tmp_path / f"bits{bits}", bits=bits)
    with pytest.raises(milan.InvalidArgumentError):
        milan.Index.create(tmp_path / "substrings", bits=64, substrings=65)
    with pytest.raises(ValueError, match="expected_size"):
        milan.Index.create(tmp_path / "size", expected_size=-1)
    for timeout in [-1.0, math.nan, math.inf]:
        with pytest.raises(milan.InvalidArgumentError, match="lock_timeout"):
            milan.Index.create(tmp_path / "timeout", lock_timeout=timeout)
        with pytest.raises(ValueError, match="lock_timeout"):
            milan.Index.open(tmp_path / "timeout", lock_timeout=timeout)
    with pytest.raises(TypeError, match="Index.create"):
        milan.Index(tmp_path / "direct")
