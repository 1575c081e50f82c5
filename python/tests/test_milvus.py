"""milan.milvus against Milvus Lite 2.5.1: an index of 100,000 codes exported, then searched in
Milvus and in milan; every answer, every key and label, and the command line compared.

Needs milvus-lite==2.5.1 and pymilvus (`make python-milvus-env`). Without them these tests skip
and say so; with MILAN_REQUIRE_MILVUS=1 (set by `make python-test` after a good install) a
missing or wrong Milvus Lite fails them instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

import milan
from helpers import check_range_layout, clustered_codes, milan_cli, u64_to_u8

MILVUS_LITE_VERSION = "2.5.1"


def _milvus_lite_problem():
    """Why Milvus Lite cannot run these tests, or None."""
    try:
        with warnings.catch_warnings():
            # Milvus Lite 2.5.1 imports pkg_resources, which warns that it is deprecated.
            warnings.simplefilter("ignore", UserWarning)
            import milvus_lite  # noqa: F401
            import pymilvus  # noqa: F401
    except ImportError as err:
        return f"Milvus Lite or pymilvus is not installed ({err})"
    found = metadata.version("milvus-lite")
    if found != MILVUS_LITE_VERSION:
        return f"milvus-lite {found} is installed; these tests pin {MILVUS_LITE_VERSION}"
    return None


_problem = _milvus_lite_problem()
if _problem is not None:
    if os.environ.get("MILAN_REQUIRE_MILVUS") == "1":
        raise RuntimeError(f"MILAN_REQUIRE_MILVUS=1 but {_problem}")
    pytest.skip(
        f"{_problem}: the Milvus tests did not run; `make python-milvus-env` installs "
        f"milvus-lite=={MILVUS_LITE_VERSION} and pymilvus",
        allow_module_level=True,
    )

# After the skip, so that a skipped run imports nothing of Milvus.
import milan.milvus as mv  # noqa: E402

N = 100_000
BITS = 64
# Keys and labels that must come back exactly: none, empty, control characters, non-ASCII, the
# longest a Milvus VARCHAR holds.
ODD_KEYS = {
    0: None,
    1: "",
    2: "two\nlines",
    3: 'ünï\x1b[2J \\ "quoted"',
    4: "k" * mv.MAX_VARCHAR_BYTES,
    5: "日本語/写真.jpg",
}


def _keys_and_labels(n):
    keys = [f"photos/{i:06}.png" if i % 13 else None for i in range(n)]
    labels = [f"class{i % 10}" if i % 11 else None for i in range(n)]
    for i, key in ODD_KEYS.items():
        keys[i] = key
    labels[1] = ""
    return keys, labels


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """A milan index of 100,000 clustered 64-bit codes (some deleted) and the same codes
    exported into a Milvus Lite collection: (index, collection, live codes, live ids)."""
    folder = tmp_path_factory.mktemp("milvus")
    rng = np.random.default_rng(2026)
    codes = clustered_codes(rng, N + 500, BITS, centres=300, flip=0.1)
    keys, labels = _keys_and_labels(len(codes))
    index = milan.Index.create(folder / "index.milan", bits=BITS)
    index.add(codes, keys=keys, labels=labels)
    deleted = np.arange(7, 3507, 7)
    index.delete(deleted)
    live = index.ids()
    assert len(live) == N
    uri = str(folder / "milvus.db")
    report = mv.export(index, uri, "codes")
    assert (report.count, report.bits, report.index_type) == (N, BITS, "bin_flat")
    collection = mv.Collection.open(uri, "codes")
    yield index, collection, codes[live], live
    collection.close()
    index.close()


def _queries(codes, rng, n):
    """Stored codes (exact duplicates among them), codes a few bits from stored ones, and codes
    far from all."""
    stored = codes[rng.integers(0, len(codes), size=n // 2)]
    near = stored.copy()
    near[:, 3] ^= 0b1001
    far = rng.integers(0, 256, size=(n - 2 * (n // 2), BITS // 8), dtype=np.uint8)
    return np.concatenate([stored, near, far])[: max(n, 1)]


def test_top_20_equals_milan_for_every_query(stores):
    index, collection, codes, live = stores
    queries = _queries(codes, np.random.default_rng(1), 400)
    want_ids, want_distances = index.search(queries, k=20)
    ids, distances = collection.search(queries, k=20)
    assert ids.dtype == np.int64 and distances.dtype == np.int32
    assert ids.shape == distances.shape == (len(queries), 20)
    np.testing.assert_array_equal(distances, want_distances)
    # Ties at the 20th distance resolved to the lowest ids, as milan does.
    np.testing.assert_array_equal(ids, want_ids)
    # The planted duplicates (30 equal codes) make ties that a random pick would break wrongly.
    planted = codes[np.searchsorted(live, (N + 500) // 2)]
    ids, distances = collection.search(planted, k=20)
    want_ids, want_distances = index.search(planted, k=20)
    assert np.all(distances == 0)
    np.testing.assert_array_equal(ids, want_ids)


def test_top_k_with_milvus_ties_keeps_distances_and_the_closer_ids(stores):
    index, collection, codes, _ = stores
    queries = _queries(codes, np.random.default_rng(2), 100)
    want_ids, want_distances = index.search(queries, k=50)
    ids, distances = collection.search(queries, k=50, ties="any")
    np.testing.assert_array_equal(distances, want_distances)
    for row in range(len(queries)):
        closer = want_distances[row] < want_distances[row, -1]
        np.testing.assert_array_equal(ids[row][closer], want_ids[row][closer])
        assert len(set(ids[row].tolist())) == 50


def test_top_k_inputs_as_milan_takes_them(stores):
    index, collection, codes, _ = stores
    one = codes[17]
    ids, distances = collection.search(one, k=5)
    assert ids.shape == (1, 5)
    as_u64 = one.view(">u8").astype(np.uint64)
    np.testing.assert_array_equal(collection.search(as_u64, k=5)[0], ids)
    np.testing.assert_array_equal(collection.search(as_u64[0], k=5)[0], ids)
    np.testing.assert_array_equal(u64_to_u8(as_u64), one[None, :])
    empty_ids, empty_distances = collection.search(np.zeros((0, 8), np.uint8), k=3)
    assert empty_ids.shape == empty_distances.shape == (0, 3)


def test_range_results_equal_milan_radius_results(stores):
    index, collection, codes, _ = stores
    queries = _queries(codes, np.random.default_rng(3), 200)
    for radius in [0, 3, 8, 12]:
        lims, ids, distances = collection.range_search(queries, radius)
        check_range_layout(lims, ids, distances, len(queries))
        want = index.range_search(queries, radius)
        for got, expected in zip((lims, ids, distances), want):
            np.testing.assert_array_equal(got, expected)
        # milan's radius is inclusive: some answers sit exactly at it.
        if radius in (8, 12):
            assert np.any(distances == radius)


def test_range_beyond_milvus_cap_is_complete(stores):
    """Answers of 100,000 codes, past Milvus's 16,384 per search, come back whole."""
    index, collection, codes, _ = stores
    queries = codes[:2]
    lims, ids, distances = collection.range_search(queries, BITS)
    assert lims[1] == N and lims[2] == 2 * N
    for got, expected in zip((lims, ids, distances), index.range_search(queries, BITS)):
        np.testing.assert_array_equal(got, expected)


def test_keys_and_labels_round_trip(stores):
    index, collection, _, live = stores
    assert len(collection) == N
    assert collection.keys(live) == index.keys(live)
    assert collection.labels(live) == index.labels(live)
    assert collection.keys([0, 1, 2, 3, 4, 5]) == [ODD_KEYS[i] for i in range(6)]
    assert collection.labels([1, 2]) == ["", "class2"]
    with pytest.raises(milan.UnknownIdError, match="no item with id 7 in collection 'codes'"):
        collection.keys([1, 7])


def test_bad_queries_are_refused_like_milan(stores):
    _, collection, codes, _ = stores
    with pytest.raises(milan.InvalidArgumentError, match=r"shape \(3, 4\)"):
        collection.search(np.zeros((3, 4), np.uint8), k=5)
    with pytest.raises(milan.InvalidTypeError, match="dtype <i8"):
        collection.search(np.zeros((3, 8), np.int64), k=5)
    with pytest.raises(milan.InvalidTypeError, match="got list"):
        collection.search([[0] * 8], k=5)
    with pytest.raises(milan.InvalidArgumentError, match="k must be at least 1; got 0"):
        collection.search(codes[:1], k=0)
    with pytest.raises(milan.InvalidArgumentError, match="at most 16384"):
        collection.search(codes[:1], k=16385)
    with pytest.raises(milan.InvalidArgumentError, match="radius must be 0 to 64"):
        collection.range_search(codes[:1], -1)
    with pytest.raises(milan.InvalidArgumentError, match="ties must be"):
        collection.search(codes[:1], k=5, ties="first")


def _reversed_batches(index, codes, parts=8):
    """The index's rows as batches in decreasing id order, as shards exported in parallel might
    arrive: Milvus then no longer returns the lowest ids among ties (it returns the highest)."""
    ids = index.ids()[::-1]
    for part in np.array_split(ids, parts):
        yield mv.Batch(part, codes[part], index.keys(part), index.labels(part))


def test_ties_take_the_lowest_ids_past_milvus_cap_and_insertion_order(tmp_path):
    """20,000 equal codes inserted highest id first: the top k are milan's (the lowest ids),
    though one Milvus search returns at most 16,384 of them, and not the lowest."""
    rng = np.random.default_rng(4)
    codes = rng.integers(0, 256, size=(40_000, 8), dtype=np.uint8)
    codes[::2] = codes[0]
    with milan.Index.create(tmp_path / "ties.milan", bits=64) as index:
        index.add(codes)
        uri = str(tmp_path / "ties.db")
        mv.export_batches(
            _reversed_batches(index, codes),
            bits=64,
            count=len(codes),
            id_end=len(codes),
            uri=uri,
            collection="ties",
        )
        with mv.Collection.open(uri, "ties") as collection:
            ids, distances = collection.search(codes[0], k=5)
            np.testing.assert_array_equal(ids[0], [0, 2, 4, 6, 8])
            np.testing.assert_array_equal(distances[0], 0)
            queries = np.concatenate([codes[:1], codes[1:400:2]])
            want = index.search(queries, k=30)
            for got, expected in zip(collection.search(queries, k=30), want):
                np.testing.assert_array_equal(got, expected)
            # What the settling corrects: Milvus's own pick among the ties.
            any_ids, any_distances = collection.search(queries, k=30, ties="any")
            np.testing.assert_array_equal(any_distances, want[1])
            assert np.any(any_ids != want[0])
        assert collection.closed


def test_export_refusals_are_clear(tmp_path, stores):
    index = stores[0]
    uri = str(tmp_path / "refusals.db")
    with pytest.raises(milan.InvalidArgumentError, match="bin_ivf_flat needs a Milvus server"):
        mv.export(index, uri, "ivf", index_type="bin_ivf_flat")
    with pytest.raises(milan.InvalidArgumentError, match="index_type must be one of"):
        mv.export(index, uri, "x", index_type="hnsw")
    with pytest.raises(milan.InvalidArgumentError, match="collection name '1-bad'"):
        mv.export(index, uri, "1-bad")
    with pytest.raises(milan.InvalidArgumentError, match="must end in .db"):
        mv.export(index, str(tmp_path / "milvus.sqlite"), "x")
    with pytest.raises(milan.NotAnIndexError):
        mv.export(tmp_path / "missing.milan", uri, "x")
    with pytest.raises(mv.MilvusError, match="no collection 'ivf'"):
        mv.Collection.open(uri, "ivf")


def test_export_replaces_only_when_asked_and_refuses_foreign_collections(tmp_path):
    rng = np.random.default_rng(5)
    codes = rng.integers(0, 256, size=(300, 4), dtype=np.uint8)
    uri = str(tmp_path / "small.db")
    with milan.Index.create(tmp_path / "small.milan", bits=32) as index:
        index.add(codes[:200], keys=[f"a{i}" for i in range(200)])
        assert mv.export(index, uri, "small").count == 200
        with pytest.raises(mv.MilvusError, match="'small' already exists"):
            mv.export(index, uri, "small")
        index.add(codes[200:])
        seen = []
        report = mv.export(
            index,
            uri,
            "small",
            replace=True,
            batch_size=64,
            progress=lambda d, t: seen.append((d, t)),
        )
        assert report.count == 300 and seen[-1] == (300, 300) and len(seen) == 5
        with mv.Collection.open(uri, "small") as collection:
            assert collection.bits == 32 and len(collection) == 300
            for got, expected in zip(
                collection.search(codes[:10], k=7), index.search(codes[:10], k=7)
            ):
                np.testing.assert_array_equal(got, expected)
            assert collection.keys([199, 200]) == ["a199", None]
    # A collection another program made is not taken for an export.
    from pymilvus import DataType, MilvusClient

    client = MilvusClient(uri)
    schema = MilvusClient.create_schema(auto_id=False)
    schema.add_field("pk", DataType.INT64, is_primary=True)
    schema.add_field("vec", DataType.BINARY_VECTOR, dim=32)
    params = client.prepare_index_params()
    params.add_index("vec", index_type="BIN_FLAT", metric_type="HAMMING")
    client.create_collection("foreign", schema=schema, index_params=params)
    client.close()
    with pytest.raises(mv.MilvusError, match="not made by milan.milvus.export"):
        mv.Collection.open(uri, "foreign")


def _milan_binary():
    """The milan command line: $MILAN_BIN, or this checkout's (see helpers.milan_cli)."""
    if os.environ.get("MILAN_BIN"):
        return Path(os.environ["MILAN_BIN"])
    return milan_cli()


def _run(args, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "milan.milvus", *args],
        capture_output=True,
        text=True,
        timeout=300,
        **kwargs,
    )


def test_command_line_prints_what_milan_query_prints(tmp_path):
    rng = np.random.default_rng(6)
    codes = clustered_codes(rng, 3000, 64, centres=10, flip=0.05)
    keys, labels = _keys_and_labels(len(codes))
    index_dir = tmp_path / "cli.milan"
    with milan.Index.create(index_dir, bits=64) as index:
        index.add(codes, keys=keys, labels=labels)
        queries = np.concatenate([codes[:5], codes[2:4] ^ np.uint8(3)])
        np.save(tmp_path / "q.npy", queries)
        expected = {}
        for flag, value in (("--top-k", "12"), ("--radius", "6")):
            if flag == "--top-k":
                ids, distances = index.search(queries, k=12)
                rows = [
                    [(i, d) for i, d in zip(r_ids, r_ds) if i >= 0]
                    for r_ids, r_ds in zip(ids, distances)
                ]
            else:
                lims, ids, distances = index.range_search(queries, 6)
                rows = [
                    list(zip(ids[lims[q] : lims[q + 1]], distances[lims[q] : lims[q + 1]]))
                    for q in range(len(queries))
                ]
            lines = []
            for q, row in enumerate(rows):
                found = index.keys([int(i) for i, _ in row]) if row else []
                results = [
                    {"id": int(i), "distance": int(d), "key": k} for (i, d), k in zip(row, found)
                ]
                lines.append(
                    json.dumps(
                        {"query": q, "results": results}, ensure_ascii=False, separators=(",", ":")
                    )
                )
            expected[flag] = "\n".join(lines) + "\n"
    uri = str(tmp_path / "cli.db")
    done = _run(["export", str(index_dir), "--uri", uri, "--collection", "cli"])
    assert done.returncode == 0, done.stderr
    assert "exported 3000 64-bit codes" in done.stderr
    binary = _milan_binary()
    for flag, value in (("--top-k", "12"), ("--radius", "6")):
        done = _run(
            [
                "search",
                "--uri",
                uri,
                "--collection",
                "cli",
                "--codes",
                str(tmp_path / "q.npy"),
                flag,
                value,
                "--json",
            ]
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout == expected[flag]
        if binary is not None:
            milan_query = subprocess.run(
                [
                    str(binary),
                    "query",
                    str(index_dir),
                    "--codes",
                    str(tmp_path / "q.npy"),
                    flag,
                    value,
                    "--json",
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            assert done.stdout == milan_query.stdout
    # Errors name the input and exit with 1; usage errors with 2.
    done = _run(
        ["export", str(index_dir), "--uri", uri, "--collection", "cli", "--index", "bin_ivf_flat"]
    )
    assert done.returncode == 1 and "bin_ivf_flat needs a Milvus server" in done.stderr
    np.save(tmp_path / "bad.npy", np.zeros((2, 4), np.uint8))
    done = _run(
        [
            "search",
            "--uri",
            uri,
            "--collection",
            "cli",
            "--codes",
            str(tmp_path / "bad.npy"),
            "--top-k",
            "3",
        ]
    )
    assert done.returncode == 1 and "shape (2, 4)" in done.stderr
    done = _run(["search", "--uri", uri, "--collection", "cli", "--codes", str(tmp_path / "q.npy")])
    assert done.returncode == 2 and "--top-k" in done.stderr


def test_an_empty_index_exports_and_answers_nothing(tmp_path):
    uri = str(tmp_path / "empty.db")
    with milan.Index.create(tmp_path / "empty.milan", bits=128) as index:
        assert mv.export(index, uri, "empty").count == 0
    queries = np.zeros((2, 16), np.uint8)
    with mv.Collection.open(uri, "empty") as collection:
        assert collection.bits == 128 and len(collection) == 0
        ids, distances = collection.search(queries, k=3)
        assert np.all(ids == -1) and np.all(distances == -1) and ids.shape == (2, 3)
        lims, ids, distances = collection.range_search(queries, 128)
        assert lims.tolist() == [0, 0, 0] and len(ids) == len(distances) == 0
    with pytest.raises(mv.MilvusError, match="is closed"):
        collection.search(queries, k=3)


def test_a_failed_export_leaves_no_collection(tmp_path):
    uri = str(tmp_path / "failed.db")
    codes = np.zeros((4, 8), np.uint8)

    def batches(last_id):
        yield mv.Batch(np.arange(4, dtype=np.int64), codes, ["a", "b", None, ""], [None] * 4)
        yield mv.Batch(np.array([4, last_id]), codes[:2], ["x", "k" * 70_000], [None, None])

    common = dict(bits=64, count=6, id_end=6, uri=uri, collection="failed")
    with pytest.raises(milan.InvalidArgumentError, match=r"ids from 4 to 9; .* below id_end \(6\)"):
        mv.export_batches(batches(9), **common)
    with pytest.raises(milan.InvalidArgumentError, match="key of id 5 is 70000 bytes"):
        mv.export_batches(batches(5), **common)
    from pymilvus import MilvusClient

    client = MilvusClient(uri)
    try:
        assert not client.has_collection("failed")
    finally:
        client.close()
        mv._release(uri)  # stops the Milvus Lite server this check started
