#!/usr/bin/env python3
"""Times the self-join the way FAISS can do one: range_search of every code against the codes.

For each radius r, `range_search(codes, r + 1)` (FAISS keeps distances strictly below its radius)
on IndexBinaryFlat (exhaustive, exact) and IndexBinaryMultiHash (hash buckets; exact only while
r < nhash, and only finding codes that match one table exactly with nflip = 0), in batches of
queries, on --threads OpenMP threads. Pairs are counted once (the ids above each query's own).

IndexBinaryFlat compares every code with every other: at a million codes one radius takes
minutes, so --flat-sample N times it on the first N codes as queries and scales the time to all
codes (marked "extrapolated" in the JSON), where N is less than the number of codes.

Prints one JSON object per index type, shaped like `milan bench duplicates --json`; with
--exact-pairs (the exact counts, comma separated, per radius) a recall per radius.
"""

import argparse
import json
import os
import time

import numpy as np
import faiss

BATCH = 20_000


def count_pairs(index, queries, first_id, r):
    """Pairs (i, j) with i the query's id, j > i, within r; and the seconds it took."""
    pairs = 0
    started = time.perf_counter()
    for start in range(0, queries.shape[0], BATCH):
        batch = queries[start : start + BATCH]
        lims, _distances, labels = index.range_search(batch, r + 1)
        for q in range(batch.shape[0]):
            own = first_id + start + q
            found = labels[lims[q] : lims[q + 1]]
            pairs += int(np.count_nonzero(found > own))
    return pairs, time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codes", required=True)
    parser.add_argument("--radius", default="2,4,8")
    parser.add_argument("--nhash", type=int, default=3)
    parser.add_argument("--nflip", type=int, default=0)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--flat-sample", type=int, default=0, help="0: every code")
    parser.add_argument("--skip-flat", action="store_true")
    parser.add_argument("--exact-pairs", default="")
    args = parser.parse_args()

    faiss.omp_set_num_threads(args.threads)
    codes = np.ascontiguousarray(np.load(args.codes))
    n, width = codes.shape
    bits = width * 8
    radii = [int(r) for r in args.radius.split(",")]
    exact = [int(p) for p in args.exact_pairs.split(",")] if args.exact_pairs else []

    kinds = ["IndexBinaryMultiHash"] if args.skip_flat else ["IndexBinaryFlat", "IndexBinaryMultiHash"]
    for kind in kinds:
        started = time.perf_counter()
        if kind == "IndexBinaryFlat":
            index = faiss.IndexBinaryFlat(bits)
        else:
            index = faiss.IndexBinaryMultiHash(bits, args.nhash, bits // args.nhash)
            index.nflip = args.nflip
        index.add(codes)
        build_s = time.perf_counter() - started
        sample = n
        if kind == "IndexBinaryFlat" and 0 < args.flat_sample < n:
            sample = args.flat_sample
        joins = []
        for i, r in enumerate(radii):
            seconds = []
            pairs = 0
            for _ in range(args.runs):
                pairs, took = count_pairs(index, codes[:sample], 0, r)
                seconds.append(took * n / sample)
            row = {
                "r": r,
                "pairs": pairs if sample == n else None,
                "sample_queries": sample,
                "sample_pairs": pairs,
                "extrapolated": sample < n,
                "seconds": seconds,
                "median_s": sorted(seconds)[len(seconds) // 2],
            }
            if i < len(exact) and sample == n:
                row["recall"] = pairs / exact[i] if exact[i] else 1.0
            joins.append(row)
        print(
            json.dumps(
                {
                    "library": "faiss",
                    "index": kind,
                    "version": faiss.__version__,
                    "codes": n,
                    "bits": bits,
                    "threads": args.threads,
                    "nhash": args.nhash if kind != "IndexBinaryFlat" else None,
                    "build_s": build_s,
                    "joins": joins,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
