"""milan and FAISS's binary indexes side by side, in one Python process, on the same codes.

The codes and queries of ``search_bench.py`` (64-bit, clustered or uniform). For each of
``milan.Index`` (on disk, exact), ``faiss.IndexBinaryFlat`` (exhaustive, exact) and
``faiss.IndexBinaryMultiHash`` (multi-index hashing, approximate at top-k): the build time
(milan: create, add and commit to disk; FAISS: add in memory), a batch top-k search of every
query in one call (every core: milan's thread pool, FAISS's OpenMP threads), and one query per
call. Batch and single times are medians over ``--runs`` (batch) and ``--single`` calls.
FAISS answers single queries on one OpenMP thread (as ``benches/compare`` runs it): with two,
each one-query call waits on a thread barrier, which on a shared machine costs milliseconds;
milan answers one query on one thread anyway.
Answers are checked: the FAISS flat index must return milan's distances; the multi-hash
index's recall is the share of its answers within the exact k-th distance (the definition of
``benches/compare/faiss_bench.py``).

Needs ``faiss-cpu==1.15.1`` beside the package (the version ``benches/compare/run.sh``
installs): ``target/python-venv/bin/pip install faiss-cpu==1.15.1``.

    python python/bench/faiss_bench.py --n 1000000 --centres 1000 --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

import milan
from search_bench import draw

# Set bits of every byte value.
POPCOUNT = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(axis=1)


def timed(call):
    started = time.perf_counter()
    answer = call()
    return time.perf_counter() - started, answer


def batch(runs, call):
    """Median seconds of `runs` calls, and the last answer."""
    times, answer = [], None
    for _ in range(runs):
        seconds, answer = timed(call)
        times.append(seconds)
    return statistics.median(times), answer


def singles(queries, call, faiss=None):
    """Per-call microseconds of one query per call: median and mean; FAISS on one thread."""
    threads = faiss.omp_get_max_threads() if faiss else None
    if faiss:
        faiss.omp_set_num_threads(1)
    micros = []
    for query in queries:
        started = time.perf_counter()
        call(query)
        micros.append((time.perf_counter() - started) * 1e6)
    if faiss:
        faiss.omp_set_num_threads(threads)
    return {"median_us": statistics.median(micros), "mean_us": statistics.fmean(micros)}


def true_distances(codes, queries, ids):
    """Hamming distances of `ids` [nq, k] (-1 ignored, given distance 1 << 20) to their queries."""
    safe = np.where(ids >= 0, ids, 0)
    d = POPCOUNT[np.bitwise_xor(codes[safe], queries[:, None, :])].sum(axis=2)
    return np.where(ids >= 0, d, 1 << 20)


def recall(codes, queries, ids, kth):
    """The share of the k answers per query within the exact k-th distance `kth` [nq]."""
    k = ids.shape[1]
    found = 0
    for qi in range(len(queries)):
        distinct = np.unique(ids[qi][ids[qi] >= 0])
        d = true_distances(codes, queries[qi : qi + 1], distinct[None, :])[0]
        found += min(k, int((d <= kth[qi]).sum()))
    return found / (k * len(queries))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="codes")
    parser.add_argument("--queries", type=int, default=10_000, help="queries per batch")
    parser.add_argument("--single", type=int, default=1_000, help="single-query calls timed")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--centres", type=int, default=1000, help="0: uniform random codes")
    parser.add_argument("--flip", type=float, default=0.12)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=5, help="batch calls per library (median)")
    parser.add_argument("--nhash", type=int, default=3, help="IndexBinaryMultiHash tables")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    import faiss

    rng = np.random.default_rng(args.seed)
    centres = rng.integers(0, 256, size=(args.centres, 8), dtype=np.uint8)
    codes = draw(rng, args.n, centres, args.flip)
    queries = draw(rng, args.queries, centres, args.flip)
    one = queries[: args.single]
    k = args.k
    report = {
        "codes": args.n,
        "queries": args.queries,
        "k": k,
        "distribution": "uniform" if args.centres == 0 else f"{args.centres} centres, flip {args.flip}",
        "cores": os.cpu_count(),
        "faiss": faiss.__version__,
        "faiss_threads": faiss.omp_get_max_threads(),
        "libraries": {},
    }

    with tempfile.TemporaryDirectory() as scratch:
        directory = os.path.join(scratch, "index")

        def build():
            with milan.Index.create(directory, bits=64, expected_size=args.n) as index:
                index.add(codes)

        build_s, _ = timed(build)
        index = milan.Index.open(directory, read_only=True)
        batch_s, (ids, distances) = batch(args.runs, lambda: index.search(queries, k=k))
        kth = distances[:, k - 1]
        report["libraries"]["milan"] = {
            "build_s": build_s,
            "batch_per_query_us": batch_s * 1e6 / args.queries,
            "single": singles(one, lambda q: index.search(q, k=k)),
            "recall": 1.0,
        }
        index.close()

    flat = faiss.IndexBinaryFlat(64)
    build_s, _ = timed(lambda: flat.add(codes))
    batch_s, (flat_distances, flat_ids) = batch(args.runs, lambda: flat.search(queries, k))
    # Exact: the same distances, rank by rank (ties may order ids differently).
    assert np.array_equal(flat_distances, distances), "IndexBinaryFlat disagrees with milan"
    report["libraries"]["faiss_flat"] = {
        "build_s": build_s,
        "batch_per_query_us": batch_s * 1e6 / args.queries,
        "single": singles(one, lambda q: flat.search(q[None, :], k), faiss),
        "recall": recall(codes, queries, flat_ids, kth),
    }
    del flat

    multi = faiss.IndexBinaryMultiHash(64, args.nhash, 64 // args.nhash)
    build_s, _ = timed(lambda: multi.add(codes))
    batch_s, (_, multi_ids) = batch(args.runs, lambda: multi.search(queries, k))
    report["libraries"]["faiss_multihash"] = {
        "build_s": build_s,
        "nhash": args.nhash,
        "b": 64 // args.nhash,
        "batch_per_query_us": batch_s * 1e6 / args.queries,
        "single": singles(one, lambda q: multi.search(q[None, :], k), faiss),
        "recall": recall(codes, queries, multi_ids, kth),
    }

    if args.json:
        print(json.dumps(report))
        return
    print(
        f"{args.n} codes ({report['distribution']}), {args.queries} queries, top-{k}, "
        f"{report['cores']} cores; FAISS {report['faiss']} on {report['faiss_threads']} threads"
    )
    for name, row in report["libraries"].items():
        print(
            f"{name:16} build {row['build_s']:7.2f} s  batch {row['batch_per_query_us']:8.2f} µs/query  "
            f"single median {row['single']['median_us']:8.2f} µs (mean {row['single']['mean_us']:8.2f})  "
            f"recall {row['recall']:.3f}"
        )


if __name__ == "__main__":
    sys.exit(main())
