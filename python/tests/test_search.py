"""Answers equal a numpy brute force, for random and clustered codes, uint8 and uint64 inputs."""

from __future__ import annotations

import numpy as np
import pytest

import milan
from helpers import (
    brute_range,
    brute_top_k,
    check_range_layout,
    clustered_codes,
    random_codes,
    u64_to_u8,
)


def build(path, codes, bits, batches=3, delete_every=7):
    """An index holding `codes` added in several transactions, with some deleted: returns it,
    the live codes and their ids."""
    index = milan.Index.create(path, bits=bits)
    all_ids = np.concatenate([index.add(part) for part in np.array_split(codes, batches)])
    assert np.array_equal(all_ids, np.arange(len(codes)))
    doomed = all_ids[::delete_every]
    assert index.delete(doomed) == len(doomed)
    live = np.setdiff1d(all_ids, doomed)
    assert np.array_equal(index.ids(), live)
    return index, codes[live], live


def queries_for(rng, codes, bits, n=40):
    """Stored codes, codes one bit away from stored ones, and random codes."""
    stored = codes[rng.integers(0, len(codes), size=n // 2)]
    flipped = stored.copy()
    flipped[:, 0] ^= 1
    return np.concatenate([stored[: n // 4], flipped[: n // 4], random_codes(rng, n // 2, bits)])


@pytest.mark.parametrize("bits", [64, 128, 32])
@pytest.mark.parametrize("kind", ["random", "clustered"])
def test_top_k_and_range_equal_brute_force(path, rng, bits, kind):
    n = 6000
    codes = random_codes(rng, n, bits) if kind == "random" else clustered_codes(rng, n, bits)
    index, live_codes, live = build(path, codes, bits)
    queries = queries_for(rng, codes, bits)
    for k in [1, 5, 20, 100]:
        ids, distances = index.search(queries, k=k)
        assert ids.dtype == np.int64 and distances.dtype == np.int32
        assert ids.shape == distances.shape == (len(queries), k)
        want_ids, want_distances = brute_top_k(queries, live_codes, live, k)
        np.testing.assert_array_equal(distances, want_distances)
        np.testing.assert_array_equal(ids, want_ids)
    for radius in [0, 1, 3, bits // 8, bits // 4]:
        lims, ids, distances = index.range_search(queries, radius)
        check_range_layout(lims, ids, distances, len(queries))
        for i, (want_ids, want_distances) in enumerate(
            brute_range(queries, live_codes, live, radius)
        ):
            np.testing.assert_array_equal(ids[lims[i] : lims[i + 1]], want_ids)
            np.testing.assert_array_equal(distances[lims[i] : lims[i + 1]], want_distances)
    index.close()


def test_answers_survive_reopen_and_many_codes(path, rng):
    """Enough codes that the hash tables (not only the scanned delta) answer, read back after a
    reopen."""
    codes = clustered_codes(rng, 30000, 64, centres=200, flip=0.1)
    index, live_codes, live = build(path, codes, 64, batches=2)
    index.close()
    queries = queries_for(rng, codes, 64, n=24)
    with milan.Index.open(path, read_only=True) as index:
        ids, distances = index.search(queries, k=10)
        want_ids, want_distances = brute_top_k(queries, live_codes, live, 10)
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_array_equal(distances, want_distances)
        lims, ids, distances = index.range_search(queries, 6)
        check_range_layout(lims, ids, distances, len(queries))
        for i, (want_ids, want_distances) in enumerate(brute_range(queries, live_codes, live, 6)):
            np.testing.assert_array_equal(ids[lims[i] : lims[i + 1]], want_ids)
            np.testing.assert_array_equal(distances[lims[i] : lims[i + 1]], want_distances)


def test_uint64_codes_are_the_packed_bytes_most_significant_bit_first(path, rng):
    values = rng.integers(0, 2**63, size=3000, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    values[0] = np.uint64(1) << np.uint64(63)
    values[1] = np.uint64(0x00FF_00FF_00FF_00FE)
    with milan.Index.create(path, bits=64) as index:
        ids = index.add(values)
        packed = u64_to_u8(values)
        np.testing.assert_array_equal(index.codes(ids), packed)
        np.testing.assert_array_equal(index.codes([0]), [[0x80, 0, 0, 0, 0, 0, 0, 0]])
        np.testing.assert_array_equal(index.codes([1]), [[0, 255, 0, 255, 0, 255, 0, 254]])
        # uint64 and uint8 queries give the same answers, equal to the brute force.
        queries = values[:: 100]
        for k in [1, 7]:
            by_u64 = index.search(queries, k=k)
            by_u8 = index.search(u64_to_u8(queries), k=k)
            want = brute_top_k(u64_to_u8(queries), packed, ids, k)
            for got_u64, got_u8, expected in zip(by_u64, by_u8, want):
                np.testing.assert_array_equal(got_u64, expected)
                np.testing.assert_array_equal(got_u8, expected)
        lims_a, ids_a, d_a = index.range_search(queries, 20)
        lims_b, ids_b, d_b = index.range_search(u64_to_u8(queries), 20)
        np.testing.assert_array_equal(lims_a, lims_b)
        np.testing.assert_array_equal(ids_a, ids_b)
        np.testing.assert_array_equal(d_a, d_b)
        for i, (want_ids, want_distances) in enumerate(
            brute_range(u64_to_u8(queries), packed, ids, 20)
        ):
            np.testing.assert_array_equal(ids_a[lims_a[i] : lims_a[i + 1]], want_ids)
            np.testing.assert_array_equal(d_a[lims_a[i] : lims_a[i + 1]], want_distances)
        # The most significant bit is the first bit: 1 << 63 is the code 0x80 00 ... 00.
        ids, distances = index.search(np.array([0x80, 0, 0, 0, 0, 0, 0, 0], np.uint8), k=1)
        assert (ids[0, 0], distances[0, 0]) == (0, 0)


def test_one_code_is_one_query_answered_as_one_row(path, rng):
    codes = random_codes(rng, 500, 64)
    with milan.Index.create(path, bits=64) as index:
        index.add(codes)
        ids, distances = index.search(codes[3], k=4)
        assert ids.shape == distances.shape == (1, 4)
        assert ids[0, 0] == 3 and distances[0, 0] == 0
        batch = index.search(codes[3:4], k=4)
        np.testing.assert_array_equal(ids, batch[0])
        np.testing.assert_array_equal(distances, batch[1])
        lims, ids, distances = index.range_search(codes[3], 64)
        check_range_layout(lims, ids, distances, 1)
        assert len(ids) == 500 and ids[0] == 3
        # A 0-d uint64 array and a numpy uint64 scalar are one query too.
        value = codes[3].view(">u8")[0]
        for query in [np.array(value, dtype=np.uint64), np.uint64(value)]:
            ids, distances = index.search(query, k=1)
            assert ids.shape == (1, 1) and ids[0, 0] == 3 and distances[0, 0] == 0


def test_fewer_codes_than_k_pad_with_minus_one(path, rng):
    codes = random_codes(rng, 3, 64)
    with milan.Index.create(path, bits=64) as index:
        ids, distances = index.search(codes, k=5)
        np.testing.assert_array_equal(ids, np.full((3, 5), -1))
        np.testing.assert_array_equal(distances, np.full((3, 5), -1))
        index.add(codes)
        ids, distances = index.search(codes, k=5)
        want_ids, want_distances = brute_top_k(codes, codes, np.arange(3), 5)
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_array_equal(distances, want_distances)
        assert np.all(ids[:, 3:] == -1) and np.all(distances[:, 3:] == -1)
        assert np.all(ids[:, :3] >= 0) and np.all(distances[:, :3] >= 0)


def test_no_queries_give_empty_answers(path, rng):
    with milan.Index.create(path, bits=64) as index:
        index.add(random_codes(rng, 10, 64))
        ids, distances = index.search(np.zeros((0, 8), np.uint8), k=3)
        assert ids.shape == distances.shape == (0, 3)
        lims, ids, distances = index.range_search(np.zeros((0,), np.uint64), 3)
        check_range_layout(lims, ids, distances, 0)
        assert len(ids) == 0


def test_strided_and_fortran_ordered_inputs_read_like_contiguous_ones(path, rng):
    codes = random_codes(rng, 400, 128)
    with milan.Index.create(path, bits=128) as index:
        index.add(np.asfortranarray(codes[::2]))
        index.add(codes[1::2])
        stored = index.codes(index.ids())
        np.testing.assert_array_equal(stored, np.concatenate([codes[::2], codes[1::2]]))
        wide = np.zeros((50, 32), np.uint8)
        wide[:, ::2] = codes[:50]
        a = index.search(wide[:, ::2], k=3)
        b = index.search(np.ascontiguousarray(codes[:50]), k=3)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
