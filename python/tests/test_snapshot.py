"""Index.snapshot(): one commit held for many searches, answering as Index.search does."""

import numpy as np
import pytest

import milan


def test_a_snapshot_answers_as_the_index_from_the_commit_it_was_taken_at(tmp_path):
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 256, size=(2_000, 8), dtype=np.uint8)
    with milan.Index.create(tmp_path / "idx", bits=64) as index:
        index.add(codes)
        queries = codes[:50]
        with index.snapshot() as snapshot:
            for got, want in zip(snapshot.search(queries, k=7), index.search(queries, k=7)):
                np.testing.assert_array_equal(got, want)
            for got, want in zip(
                snapshot.range_search(queries, 20), index.range_search(queries, 20)
            ):
                np.testing.assert_array_equal(got, want)
            # One query at a time, as a loop would ask.
            ids, distances = snapshot.search(queries[0], k=1)
            assert (ids.shape, distances[0, 0]) == ((1, 1), 0)
            # A later commit is not seen by the snapshot, and is by the index.
            index.delete(list(range(100)))
            assert len(snapshot) == 2_000 and len(index) == 1_900
            ids, _ = snapshot.search(queries[:1], k=1)
            assert ids[0, 0] == 0
            ids, _ = index.search(queries[:1], k=1)
            assert ids[0, 0] != 0
            assert snapshot.bits == 64 and not snapshot.closed
        assert snapshot.closed
        with pytest.raises(milan.ClosedIndexError, match="snapshot is closed"):
            snapshot.search(queries, k=1)
        snapshot.close()  # twice is fine


def test_a_snapshot_checks_its_arguments_as_the_index_does(tmp_path):
    with milan.Index.create(tmp_path / "idx", bits=64) as index:
        index.add(np.arange(10, dtype=np.uint64))
        snapshot = index.snapshot()
        with pytest.raises(ValueError, match="k must be at least 1"):
            snapshot.search(np.arange(2, dtype=np.uint64), k=0)
        with pytest.raises(ValueError, match="radius must be 0 to 64"):
            snapshot.range_search(np.arange(2, dtype=np.uint64), -1)
        with pytest.raises(milan.InvalidArgumentError):
            snapshot.range_search(np.arange(2, dtype=np.uint64), 65)
        with pytest.raises(milan.InvalidArgumentError, match="shape"):
            snapshot.search(np.zeros((2, 4), dtype=np.uint8))
        snapshot.close()
