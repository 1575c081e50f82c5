"""Handles, processes and threads sharing an index."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import milan
from helpers import brute_top_k, clustered_codes, random_codes

CHILD_ADDS = """
import sys
import numpy as np
import milan

path, name, batches, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(abs(hash(name)) % 2**32)
with milan.Index.open(path, lock_timeout=60) as index:
    for batch in range(batches):
        codes = rng.integers(0, 256, size=(size, 8), dtype=np.uint8)
        index.add(codes, keys=[f"{name}-{batch}-{i}" for i in range(size)])
"""


def child(path, name, batches=1, size=10):
    return subprocess.Popen(
        [sys.executable, "-c", CHILD_ADDS, str(path), name, str(batches), str(size)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def wait(process):
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err.decode()


def test_handles_see_each_others_commits_at_their_next_call(path, rng):
    codes = random_codes(rng, 30, 64)
    first = milan.Index.create(path, bits=64)
    second = milan.Index.open(path)
    reader = milan.Index.open(path, read_only=True)
    assert len(second) == len(reader) == 0
    first.add(codes[:20], keys=[str(i) for i in range(20)])
    assert len(second) == len(reader) == 20
    ids, distances = reader.search(codes[:20], k=1)
    np.testing.assert_array_equal(ids[:, 0], np.arange(20))
    assert reader.keys([19]) == ["19"]
    assert second.delete([0, 1]) == 2
    new = second.add(codes[20:])
    np.testing.assert_array_equal(new, np.arange(20, 30))
    for handle in [first, reader]:
        assert len(handle) == 28
        live = handle.ids()
        np.testing.assert_array_equal(live, np.arange(2, 30))
        want = brute_top_k(codes, codes[live], live, 5)
        got = handle.search(codes, k=5)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    for handle in [first, second, reader]:
        handle.close()


def test_other_processes_adds_are_seen(path, rng):
    with milan.Index.create(path, bits=64) as index, milan.Index.open(
        path, read_only=True
    ) as reader:
        index.add(random_codes(rng, 5, 64))
        wait(child(path, "one"))
        assert len(index) == len(reader) == 15
        assert reader.keys([5, 14]) == ["one-0-0", "one-0-9"]
        # Two processes and this one add at the same time: writes take turns, nothing is lost.
        children = [child(path, "a", batches=15, size=20), child(path, "b", batches=15, size=20)]
        mine = [index.add(random_codes(rng, 20, 64)) for _ in range(10)]
        for process in children:
            wait(process)
        assert len(index) == len(reader) == 15 + 2 * 15 * 20 + 10 * 20
        ids = index.ids()
        np.testing.assert_array_equal(ids, np.arange(len(ids)))
        keys = reader.keys(ids)
        for name in "ab":
            assert sum(1 for key in keys if key and key.startswith(f"{name}-")) == 300
        assert sorted(np.concatenate(mine)) == [i for i, key in enumerate(keys) if key is None and i >= 5]
        assert index.check()["ok"]


def test_a_write_gives_up_after_the_lock_timeout(path, rng):
    milan.Index.create(path, bits=64).close()
    index = milan.Index.open(path, lock_timeout=0.3)
    with open(os.path.join(path, "writer.lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another writer's turn
        started = time.monotonic()
        with pytest.raises(milan.LockTimeoutError) as caught:
            index.add(random_codes(rng, 3, 64))
        waited = time.monotonic() - started
        assert isinstance(caught.value, TimeoutError)
        assert "waited 0.3 s for another writer" in str(caught.value)
        assert 0.25 < waited < 10
        with pytest.raises(milan.LockTimeoutError):
            index.delete([0])
        # Reads never wait.
        assert len(index) == 0
        assert index.search(random_codes(rng, 2, 64), k=3)[0].shape == (2, 3)
        fcntl.flock(lock, fcntl.LOCK_UN)
    np.testing.assert_array_equal(index.add(random_codes(rng, 3, 64)), [0, 1, 2])
    index.close()


def test_searches_from_threads_while_another_thread_adds(path, rng):
    batch, batches, k = 300, 20, 7
    codes = clustered_codes(rng, batch * batches, 64, centres=40)
    queries = codes[rng.integers(0, len(codes), 5)].copy()
    queries[:, 3] ^= 0x10
    boundaries = list(range(batch, batch * batches + 1, batch))
    # Every answer a search may give: the brute force of each committed prefix.
    expected = {}
    for m in boundaries:
        ids, distances = brute_top_k(queries, codes[:m], np.arange(m), k)
        expected.setdefault(ids.tobytes() + distances.tobytes(), m)
    index = milan.Index.create(path, bits=64)
    index.add(codes[:batch])
    start = threading.Barrier(5)
    done = threading.Event()
    failures = []
    seen = set()

    def writer():
        try:
            start.wait()
            for b in range(1, batches):
                index.add(codes[b * batch : (b + 1) * batch])
                time.sleep(0.005)
        except BaseException as err:  # noqa: BLE001 - reported below
            failures.append(err)
        finally:
            done.set()

    def reader():
        try:
            start.wait()
            last = 0
            while True:
                finished = done.is_set()
                ids, distances = index.search(queries, k=k)
                m = expected.get(ids.tobytes() + distances.tobytes())
                assert m is not None, "a top-k answer that no commit gives"
                lims, all_ids, all_distances = index.range_search(queries[:1], 64)
                n = int(lims[1])
                assert n in boundaries and n >= last, n
                np.testing.assert_array_equal(np.sort(all_ids), np.arange(n))
                last = n
                seen.add(n)
                assert len(index) in boundaries
                if finished:
                    break
        except BaseException as err:  # noqa: BLE001 - reported below
            failures.append(err)

    threads = [threading.Thread(target=writer)] + [
        threading.Thread(target=reader) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures, failures
    assert len(index) == batch * batches and max(seen) == batch * batches
    assert len(seen) > 2, "the readers never ran while the writer wrote"
    index.close()


def test_batch_searches_release_the_gil(path, rng):
    with milan.Index.create(path, bits=64) as index:
        index.add(random_codes(rng, 100_000, 64))
        queries = random_codes(rng, 64, 64)
        # Enough queries for a call of half a second or more.
        while True:
            started = time.perf_counter()
            index.search(queries, k=200)
            if time.perf_counter() - started > 0.5 or len(queries) > 1_000_000:
                break
            queries = np.concatenate([queries, queries])
        done = threading.Event()
        thread = threading.Thread(target=lambda: (index.search(queries, k=200), done.set()))
        started = last = time.perf_counter()
        thread.start()
        gaps = []
        while not done.is_set():
            time.sleep(0.002)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now
        thread.join()
        total = time.perf_counter() - started
        # Holding the GIL, the call would stop this thread for its whole length.
        assert total > 0.3 and max(gaps) < total / 2, (total, max(gaps))


def test_close_waits_for_calls_under_way(path, rng):
    codes = random_codes(rng, 50_000, 64)
    with milan.Index.create(path, bits=64) as index:
        index.add(codes)
    index = milan.Index.open(path, read_only=True)
    queries = codes[:2000]
    results = []

    def search():
        try:
            results.append(index.search(queries, k=50))
        except milan.ClosedIndexError as err:
            results.append(err)

    thread = threading.Thread(target=search)
    thread.start()
    time.sleep(0.01)
    index.close()
    thread.join()
    assert index.closed
    (result,) = results
    if not isinstance(result, milan.ClosedIndexError):
        ids, distances = result
        np.testing.assert_array_equal(ids[:, 0], np.arange(2000))
        assert np.all(distances[:, 0] == 0)
