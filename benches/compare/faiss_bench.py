#!/usr/bin/env python3
"""Times FAISS binary indexes on the .npy files that `milan bench generate` writes.

One thread, one query per call, each call timed on its own. Every answer is checked against an
exhaustive numpy scan. Prints one JSON object per index type (IndexBinaryFlat,
IndexBinaryMultiHash), shaped like `milan bench search --json` where the fields apply.

FAISS's binary range_search keeps distances strictly below its radius, so "within r" is asked
as range_search(x, r + 1).
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import faiss  # noqa: E402


def timing(micros):
    micros = sorted(micros)
    n = max(len(micros), 1)

    def at(q):
        return micros[int(round((n - 1) * q))] if micros else 0.0

    return {
        "mean_us": sum(micros) / n,
        "median_us": at(0.5),
        "p99_us": at(0.99),
    }


def as_words(rows):
    """Rows of packed bytes as wider words for a faster numpy popcount (same distances)."""
    rows = np.ascontiguousarray(rows)
    for dtype in (np.uint64, np.uint32, np.uint16):
        size = np.dtype(dtype).itemsize
        if rows.shape[1] % size == 0:
            return rows.view(dtype)
    return rows


def distances(words, query_words):
    return np.bitwise_count(np.bitwise_xor(words, query_words)).sum(axis=1, dtype=np.int32)


def time_each(queries, call):
    """Calls `call(one_row_array)` per query; returns the answers and times in µs."""
    rows = [queries[i : i + 1] for i in range(queries.shape[0])]
    answers = []
    micros = []
    clock = time.perf_counter_ns
    for row in rows:
        started = clock()
        answer = call(row)
        micros.append((clock() - started) / 1e3)
        answers.append(answer)
    return answers, micros


def build(kind, bits, codes, nhash, nflip):
    if kind == "IndexBinaryFlat":
        index = faiss.IndexBinaryFlat(bits)
    else:
        b = bits // nhash
        if b < 1:
            raise SystemExit(f"{bits}-bit codes cannot be cut into {nhash} hashes")
        index = faiss.IndexBinaryMultiHash(bits, nhash, b)
    index.add(codes)
    return index


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codes", required=True)
    parser.add_argument("--queries", required=True)
    parser.add_argument("--top-k", type=int, default=20)
    parser.add_argument("--radius", default="2,4,8")
    parser.add_argument("--nhash", type=int, default=3, help="IndexBinaryMultiHash hash tables")
    parser.add_argument("--nflip", type=int, default=0, help="IndexBinaryMultiHash bit flips probed per table")
    parser.add_argument("--index-dir", default=None, help="where the indexes are written and read back")
    parser.add_argument("--only", choices=["IndexBinaryFlat", "IndexBinaryMultiHash"], action="append")
    args = parser.parse_args()

    faiss.omp_set_num_threads(1)
    radii = [int(r) for r in args.radius.split(",") if r.strip()]

    started = time.perf_counter()
    codes = np.ascontiguousarray(np.load(args.codes))
    load_codes_s = time.perf_counter() - started
    queries = np.ascontiguousarray(np.load(args.queries))
    if codes.dtype != np.uint8 or queries.dtype != np.uint8 or codes.ndim != 2 or queries.ndim != 2:
        raise SystemExit("codes and queries must be uint8 [n, bits / 8] arrays")
    if codes.shape[1] != queries.shape[1]:
        raise SystemExit(f"codes are {codes.shape[1]} bytes wide but queries {queries.shape[1]}")
    n, width = codes.shape
    bits = width * 8
    nq = queries.shape[0]
    k = min(args.top_k, n)
    index_dir = args.index_dir or os.environ.get("TMPDIR", "/tmp")
    os.makedirs(index_dir, exist_ok=True)

    # The cost of one Python -> FAISS call that does almost nothing, for reading the figures.
    tiny = faiss.IndexBinaryFlat(bits)
    tiny.add(codes[:1])
    _, overhead = time_each(queries, lambda q: tiny.search(q, 1))
    call_overhead_us = timing(overhead)["median_us"]

    kinds = args.only or ["IndexBinaryFlat", "IndexBinaryMultiHash"]
    runs = {}
    for kind in kinds:
        started = time.perf_counter()
        built = build(kind, bits, codes, args.nhash, args.nflip)
        build_s = time.perf_counter() - started
        path = os.path.join(index_dir, f"faiss-{kind}.index")
        faiss.write_index_binary(built, path)
        serialized_bytes = os.path.getsize(path)
        del built
        started = time.perf_counter()
        index = faiss.read_index_binary(path)
        open_ms = (time.perf_counter() - started) * 1e3
        if kind == "IndexBinaryMultiHash":
            index.nflip = args.nflip

        topk_answers, topk_micros = time_each(queries, lambda q: index.search(q, k)[1][0])
        radius_runs = []
        for r in radii:
            answers, micros = time_each(queries, lambda q: index.range_search(q, r + 1)[2])
            radius_runs.append((r, answers, micros))
        runs[kind] = {
            "build_s": build_s,
            "open_ms": open_ms,
            "serialized_bytes": serialized_bytes,
            "topk": (topk_answers, topk_micros),
            "radius": radius_runs,
            "substrings": args.nhash if kind == "IndexBinaryMultiHash" else 0,
            "b": bits // args.nhash if kind == "IndexBinaryMultiHash" else None,
        }
        del index

    # Check every answer against an exhaustive numpy scan, one query at a time.
    words = as_words(codes)
    query_words = as_words(queries)
    score = {
        kind: {
            "topk_found": 0,
            "kth_match": 0,
            "radius": {r: {"exact": 0, "found": 0, "returned": 0, "false": 0} for r in radii},
        }
        for kind in kinds
    }
    for qi in range(nq):
        d = distances(words, query_words[qi])
        kth = int(np.partition(d, k - 1)[k - 1]) if k > 0 else 0
        within = {r: np.flatnonzero(d <= r) for r in radii}
        for kind in kinds:
            s = score[kind]
            ids = runs[kind]["topk"][0][qi]
            ids = ids[ids >= 0]
            distinct = np.unique(ids)
            s["topk_found"] += min(k, int((d[distinct] <= kth).sum()))
            if len(ids) == k and k > 0 and int(d[ids].max()) == kth:
                s["kth_match"] += 1
            for r, answers, _ in runs[kind]["radius"]:
                got = np.unique(answers[qi].astype(np.int64))
                sr = s["radius"][r]
                sr["exact"] += len(within[r])
                sr["found"] += int(np.isin(within[r], got, assume_unique=True).sum())
                sr["returned"] += len(answers[qi])
                sr["false"] += int((d[got] > r).sum())

    flat = runs.get("IndexBinaryFlat")
    flat_topk = timing(flat["topk"][1]) if flat else None
    flat_radius = {r: timing(m) for r, _, m in flat["radius"]} if flat else {}
    for kind in kinds:
        run = runs[kind]
        s = score[kind]
        topk_timing = timing(run["topk"][1])
        report = {
            "library": "faiss",
            "index": kind,
            "version": faiss.__version__,
            "queries": nq,
            "codes": n,
            "bits": bits,
            "substrings": run["substrings"],
            "b": run["b"],
            "nflip": args.nflip if kind == "IndexBinaryMultiHash" else None,
            "threads": faiss.omp_get_max_threads(),
            "load_codes_s": load_codes_s,
            "build_s": run["build_s"],
            "open_ms": run["open_ms"],
            "serialized_bytes_per_code": run["serialized_bytes"] / max(n, 1),
            "call_overhead_us": call_overhead_us,
            "top_k": {
                "k": k,
                **topk_timing,
                "recall": s["topk_found"] / (k * nq) if nq and k else 1.0,
                "kth_distance_match": s["kth_match"] / nq if nq else 1.0,
                "scan_mean_us": flat_topk["mean_us"] if flat_topk else None,
            },
            "radius": [
                {
                    "r": r,
                    **timing(micros),
                    "mean_hits": s["radius"][r]["returned"] / max(nq, 1),
                    "exact_mean_hits": s["radius"][r]["exact"] / max(nq, 1),
                    "recall": s["radius"][r]["found"] / s["radius"][r]["exact"] if s["radius"][r]["exact"] else 1.0,
                    "false_hits": s["radius"][r]["false"],
                    "scan_mean_us": flat_radius[r]["mean_us"] if r in flat_radius else None,
                }
                for r, _, micros in run["radius"]
            ],
            "linear_scan": {
                "mean_us": flat_topk["mean_us"] if flat_topk else None,
                "median_us": flat_topk["median_us"] if flat_topk else None,
            },
        }
        print(json.dumps(report), flush=True)


if __name__ == "__main__":
    sys.exit(main())
