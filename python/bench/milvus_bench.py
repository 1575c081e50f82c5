"""milan against Milvus Lite on the same codes, from Python.

Builds a milan index of N clustered 64-bit codes, exports it into a Milvus Lite collection
(BIN_FLAT, HAMMING) with ``milan.milvus.export``, and times, on each store:

- batch: one top-k call over all the queries (1,000 by default), and one range call per radius;
- single: one top-k call per query, the latency an application answering one request at a time
  sees (mean and median);
- loading: milan's ``Index.add`` of all the codes (one transaction, durable), and the export
  (connect, create the collection and its index, batched inserts, flush).

Milvus is timed both as ``milan.milvus.Collection`` answers by default (``ties="milan"``: the
lowest ids among codes tied at the k-th distance, one more search per distinct k-th distance)
and with ``ties="any"`` (Milvus's own pick: one search). Every Milvus answer's distances are
checked against milan's, and the ids too where ties are settled.

Needs milvus-lite==2.5.1 and pymilvus (``make python-milvus-env``)::

    target/python-venv/bin/python python/bench/milvus_bench.py                 # 100,000 codes
    target/python-venv/bin/python python/bench/milvus_bench.py --n 20000 --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import numpy as np

import milan
import milan.milvus as mv
from search_bench import best_of, draw


def per_query(queries, call):
    """Each query on its own: (mean, median) seconds per call."""
    times = []
    for query in queries:
        started = time.perf_counter()
        call(query)
        times.append(time.perf_counter() - started)
    return statistics.mean(times), statistics.median(times)


def server_rss_bytes():
    """Resident memory of this process's children (the Milvus Lite server), from /proc."""
    me = str(os.getpid())
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            if fields[1] != me:
                continue
            with open(f"/proc/{entry}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="codes in each store")
    parser.add_argument("--queries", type=int, default=1_000, help="queries per batch")
    parser.add_argument("--single", type=int, default=200, help="single-query calls timed")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--radius", default="2,4,8", help="radii, comma separated")
    parser.add_argument("--centres", type=int, default=100, help="cluster centres")
    parser.add_argument("--flip", type=float, default=0.12)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3, help="timed runs per batch; best kept")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    radii = [int(r) for r in args.radius.split(",")]
    rng = np.random.default_rng(args.seed)
    centres = rng.integers(0, 256, size=(args.centres, 8), dtype=np.uint8)
    codes = draw(rng, args.n, centres, args.flip)
    queries = draw(rng, args.queries, centres, args.flip)
    single = queries[: args.single]
    keys = [f"photos/{i:07}.png" for i in range(args.n)]
    figures = {"n": args.n, "queries": args.queries, "k": args.k, "centres": args.centres}

    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        index = milan.Index.create(os.path.join(scratch, "index.milan"), bits=64)
        index.add(codes, keys=keys)
        figures["milan_add_s"] = time.perf_counter() - started
        figures["milan_memory_bytes"] = index.info()["memory_bytes"]

        uri = os.path.join(scratch, "milvus.db")
        report = mv.export(index, uri, "bench")
        figures["milvus_export_s"] = report.seconds
        store = mv.Collection.open(uri, "bench")
        try:
            # The first searches of each store warm its caches (Milvus loads the segment).
            index.search(queries[:10], k=args.k)
            store.search(queries[:10], k=args.k)
            seconds, (want_ids, want_distances) = best_of(
                args.runs, lambda: index.search(queries, k=args.k)
            )
            figures["milan_batch_top_k_us"] = seconds / len(queries) * 1e6
            for ties in ("milan", "any"):
                seconds, (ids, distances) = best_of(
                    args.runs, lambda: store.search(queries, k=args.k, ties=ties)
                )
                assert np.array_equal(distances, want_distances), "Milvus distances differ"
                if ties == "milan":
                    assert np.array_equal(ids, want_ids), "Milvus ids differ"
                figures[f"milvus_{ties}_ties_batch_top_k_us"] = seconds / len(queries) * 1e6
            for radius in radii:
                seconds, want = best_of(args.runs, lambda: index.range_search(queries, radius))
                figures[f"milan_batch_radius_{radius}_us"] = seconds / len(queries) * 1e6
                seconds, got = best_of(args.runs, lambda: store.range_search(queries, radius))
                assert all(np.array_equal(a, b) for a, b in zip(got, want)), "ranges differ"
                figures[f"milvus_batch_radius_{radius}_us"] = seconds / len(queries) * 1e6
                figures[f"radius_{radius}_mean_results"] = len(want[1]) / len(queries)
            mean, median = per_query(single, lambda q: index.search(q, k=args.k))
            figures["milan_single_top_k_us"] = (mean * 1e6, median * 1e6)
            for ties in ("milan", "any"):
                mean, median = per_query(single, lambda q: store.search(q, k=args.k, ties=ties))
                figures[f"milvus_{ties}_ties_single_top_k_us"] = (mean * 1e6, median * 1e6)
            figures["milvus_server_rss_bytes"] = server_rss_bytes()
        finally:
            store.close()
            index.close()

    if args.json:
        print(json.dumps(figures, indent=1))
        return
    print(f"{args.n} clustered 64-bit codes, {args.queries} queries, top-{args.k}; µs per query")
    print(
        f"  load: milan add {figures['milan_add_s']:.2f} s, "
        f"Milvus export {figures['milvus_export_s']:.2f} s"
    )
    print(
        f"  batch top-k: milan {figures['milan_batch_top_k_us']:.1f}, Milvus "
        f"{figures['milvus_milan_ties_batch_top_k_us']:.1f} (ties settled), "
        f"{figures['milvus_any_ties_batch_top_k_us']:.1f} (Milvus's ties)"
    )
    for radius in radii:
        print(
            f"  batch radius {radius}: milan {figures[f'milan_batch_radius_{radius}_us']:.2f}, "
            f"Milvus {figures[f'milvus_batch_radius_{radius}_us']:.1f} "
            f"({figures[f'radius_{radius}_mean_results']:.1f} results per query)"
        )
    for name in (
        "milan_single_top_k_us",
        "milvus_milan_ties_single_top_k_us",
        "milvus_any_ties_single_top_k_us",
    ):
        mean, median = figures[name]
        print(f"  {name}: mean {mean:.1f}, median {median:.1f}")
    print(
        f"  memory: milan snapshot {figures['milan_memory_bytes'] / 2**20:.1f} MiB, "
        f"Milvus Lite server resident {figures['milvus_server_rss_bytes'] / 2**20:.1f} MiB"
    )


if __name__ == "__main__":
    main()
