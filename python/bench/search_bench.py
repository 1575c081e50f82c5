"""Search speed from Python against the Rust figure.

Builds an index of N 64-bit codes (uniform random by default, or clustered with --centres),
then measures from Python:

- batch search: one ``Index.search`` (top-k) and one ``Index.range_search`` per radius, each
  over all the queries (10,000 by default) at once, run in parallel on every core with the GIL
  released; reported as the whole call and per query;
- single-query calls: ``Index.search`` with one query at a time, the per-call time that an
  application answering one request at a time sees.

With ``--milan PATH`` (the command-line binary: ``cargo build --release``) it also runs
``milan bench search`` on the same index and queries, which times each query on one thread from
Rust; the difference between its mean and the single-query call's is the cost of the Python
binding per call.

With ``--rust-batch PATH`` (the example ``python/bench/rust_batch.rs``:
``PYO3_BUILD_EXTENSION_MODULE=1 cargo build --release --manifest-path python/Cargo.toml --example
rust_batch``) it sets the batch top-k search against
the same batch run from Rust (a fresh reader, ``search_batch(queries).top_k(k)``, every core),
in ``--rounds`` rounds, each a Python batch and a Rust batch ``--runs`` times, and reports the
medians and their ratio (Python / Rust) and each round's.

    python python/bench/search_bench.py                      # 1,000,000 codes, 10,000 queries
    python python/bench/search_bench.py --n 100000 --milan target/release/milan --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import milan


def draw(rng, n, centres, flip):
    """n 64-bit codes as uint8 [n, 8]: uniform, or around `centres` random centres with each
    bit flipped with probability `flip` (the distribution of `milan bench generate`)."""
    if len(centres) == 0:
        return rng.integers(0, 256, size=(n, 8), dtype=np.uint8)
    which = rng.integers(0, len(centres), size=n)
    noise = np.packbits(rng.random((n, 64)) < flip, axis=1)
    return centres[which] ^ noise


def best_of(runs, call):
    """The shortest of `runs` timed calls, in seconds, and the last answer."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        answer = call()
        times.append(time.perf_counter() - started)
    return min(times), answer


def rust_bench(binary, directory, queries, k, radii):
    """`milan bench search --json` on the index and queries (each query timed on one thread)."""
    with tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(scratch, "queries.npy")
        np.save(path, queries)
        command = [
            binary, "bench", "search", directory, "--codes", path, "--top-k", str(k),
            "--radius", ",".join(map(str, radii)), "--json",
        ]
        done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


def rust_batch(binary, directory, queries, k, runs):
    """The Rust batch figure: `runs` timed batch searches of `queries` in one process."""
    with tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(scratch, "queries.npy")
        np.save(path, queries)
        command = [binary, directory, path, str(k), str(runs)]
        done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


def batch_ratio(index, binary, directory, queries, k, runs, rounds):
    """Python's batch top-k against Rust's, interleaved in rounds so that both see the same
    machine: medians of wall-clock and of CPU time (every thread of the process), the ratios of
    the medians, and each round's wall-clock ratio."""
    python_times, python_cpu, rust_times, rust_cpu, round_ratios = [], [], [], [], []
    for _ in range(rounds):
        times = []
        for _ in range(runs):
            started, cpu_started = time.perf_counter(), time.process_time()
            index.search(queries, k=k)
            times.append(time.perf_counter() - started)
            python_cpu.append(time.process_time() - cpu_started)
        rust = rust_batch(binary, directory, queries, k, runs)
        round_ratios.append(statistics.median(times) / statistics.median(rust["seconds"]))
        python_times += times
        rust_times += rust["seconds"]
        rust_cpu += rust["cpu_seconds"]
    median = statistics.median
    return {
        "rounds": rounds,
        "runs_per_round": runs,
        "rust_threads": rust["threads"],
        "python_median_ms": median(python_times) * 1e3,
        "rust_median_ms": median(rust_times) * 1e3,
        "ratio": median(python_times) / median(rust_times),
        "python_cpu_median_ms": median(python_cpu) * 1e3,
        "rust_cpu_median_ms": median(rust_cpu) * 1e3,
        "cpu_ratio": median(python_cpu) / median(rust_cpu),
        "round_ratios": round_ratios,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="codes in the index")
    parser.add_argument("--queries", type=int, default=10_000, help="queries per batch")
    parser.add_argument("--single", type=int, default=1_000, help="single-query calls timed")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--radius", default="2,4,8", help="radii, comma separated")
    parser.add_argument("--centres", type=int, default=0, help="0: uniform random codes")
    parser.add_argument("--flip", type=float, default=0.12)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3, help="timed runs per batch; best kept")
    parser.add_argument("--dir", help="index directory (default: a temporary one)")
    parser.add_argument("--milan", help="the milan binary, to run `milan bench search` too")
    parser.add_argument(
        "--rust-queries", type=int, default=1_000,
        help="queries for `milan bench search` (it also scans for each, to check recall)",
    )
    parser.add_argument("--rust-batch", help="the rust_batch example binary, for the batch ratio")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the batch ratio")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    radii = [int(r) for r in args.radius.split(",") if r]

    rng = np.random.default_rng(args.seed)
    centres = rng.integers(0, 256, size=(args.centres, 8), dtype=np.uint8)
    codes = draw(rng, args.n, centres, args.flip)
    queries = draw(rng, args.queries, centres, args.flip)

    scratch = None
    directory = args.dir
    if directory is None:
        scratch = tempfile.TemporaryDirectory()
        directory = os.path.join(scratch.name, "index")
    report = {
        "codes": args.n,
        "queries": args.queries,
        "k": args.k,
        "distribution": "uniform" if args.centres == 0 else f"{args.centres} centres, flip {args.flip}",
        "cores": os.cpu_count(),
        "rayon_threads": os.environ.get("RAYON_NUM_THREADS"),
    }
    started = time.perf_counter()
    with milan.Index.create(directory, bits=64, expected_size=args.n) as index:
        index.add(codes)
    report["add_s"] = time.perf_counter() - started
    started = time.perf_counter()
    index = milan.Index.open(directory, read_only=True)
    report["open_s"] = time.perf_counter() - started

    seconds, (ids, _) = best_of(args.runs, lambda: index.search(queries, k=args.k))
    assert ids.shape == (args.queries, args.k)
    report["batch_top_k"] = {
        "call_ms": seconds * 1e3,
        "per_query_us": seconds * 1e6 / args.queries,
        "queries_per_s": args.queries / seconds,
    }
    report["batch_radius"] = []
    for radius in radii:
        seconds, (lims, _, _) = best_of(args.runs, lambda: index.range_search(queries, radius))
        report["batch_radius"].append(
            {
                "r": radius,
                "call_ms": seconds * 1e3,
                "per_query_us": seconds * 1e6 / args.queries,
                "mean_hits": float(lims[-1]) / args.queries,
            }
        )

    singles = queries[: args.single]
    index.search(singles[0], k=args.k)  # warm
    micros = []
    for query in singles:
        started = time.perf_counter()
        index.search(query, k=args.k)
        micros.append((time.perf_counter() - started) * 1e6)
    empty = np.zeros((0, 8), np.uint8)
    overhead = []
    for _ in range(args.single):
        started = time.perf_counter()
        index.search(empty, k=args.k)
        overhead.append((time.perf_counter() - started) * 1e6)
    # The same loops through one snapshot: no fresh read of the last commit per call.
    snapshot = index.snapshot()
    snapshot.search(singles[0], k=args.k)  # warm
    snap_micros = []
    for query in singles:
        started = time.perf_counter()
        snapshot.search(query, k=args.k)
        snap_micros.append((time.perf_counter() - started) * 1e6)
    snap_overhead = []
    for _ in range(args.single):
        started = time.perf_counter()
        snapshot.search(empty, k=args.k)
        snap_overhead.append((time.perf_counter() - started) * 1e6)
    snapshot.close()
    report["single_top_k"] = {
        "calls": len(singles),
        "mean_us": statistics.fmean(micros),
        "median_us": statistics.median(micros),
        "empty_call_median_us": statistics.median(overhead),
        "snapshot_mean_us": statistics.fmean(snap_micros),
        "snapshot_median_us": statistics.median(snap_micros),
        "snapshot_empty_call_median_us": statistics.median(snap_overhead),
    }
    if args.rust_batch:
        report["batch_vs_rust"] = batch_ratio(
            index, args.rust_batch, directory, queries, args.k, args.runs, args.rounds
        )
    index.close()

    if args.milan:
        rust = rust_bench(args.milan, directory, queries[: args.rust_queries], args.k, radii)
        report["rust"] = {
            "queries": rust["queries"],
            "top_k_mean_us": rust["top_k"]["mean_us"],
            "top_k_median_us": rust["top_k"]["median_us"],
            "radius_mean_us": {str(r["r"]): r["mean_us"] for r in rust["radius"]},
        }
        report["single_overhead_us"] = (
            report["single_top_k"]["mean_us"] - rust["top_k"]["mean_us"]
        )
    if scratch is not None:
        scratch.cleanup()

    if args.json:
        print(json.dumps(report))
        return
    print(
        f"{args.n} codes ({report['distribution']}), {args.queries} queries, k={args.k}, "
        f"{report['cores']} cores; add {report['add_s']:.1f} s, open {report['open_s']:.2f} s"
    )
    t = report["batch_top_k"]
    print(
        f"batch top-{args.k}: {t['call_ms']:.1f} ms per call, {t['per_query_us']:.2f} µs per "
        f"query, {t['queries_per_s']:.0f} queries/s"
    )
    for r in report["batch_radius"]:
        print(
            f"batch radius {r['r']}: {r['call_ms']:.1f} ms per call, {r['per_query_us']:.2f} µs "
            f"per query, {r['mean_hits']:.1f} hits per query"
        )
    s = report["single_top_k"]
    print(
        f"single-query top-{args.k}: mean {s['mean_us']:.2f} µs, median {s['median_us']:.2f} µs "
        f"per call; an empty call {s['empty_call_median_us']:.2f} µs"
    )
    print(
        f"single-query top-{args.k} through a snapshot: mean {s['snapshot_mean_us']:.2f} µs, "
        f"median {s['snapshot_median_us']:.2f} µs per call; an empty call "
        f"{s['snapshot_empty_call_median_us']:.2f} µs"
    )
    if "batch_vs_rust" in report:
        b = report["batch_vs_rust"]
        print(
            f"batch top-{args.k}, median of {b['rounds']} x {b['runs_per_round']} calls: Python "
            f"{b['python_median_ms']:.1f} ms, Rust {b['rust_median_ms']:.1f} ms "
            f"({b['rust_threads']} threads): ratio {b['ratio']:.3f} (rounds "
            + ", ".join(f"{r:.3f}" for r in b["round_ratios"])
            + f"); CPU time {b['python_cpu_median_ms']:.1f} ms against "
            f"{b['rust_cpu_median_ms']:.1f} ms: ratio {b['cpu_ratio']:.3f}"
        )
    if "rust" in report:
        rust = report["rust"]
        print(
            f"milan bench search (Rust, one thread, {rust['queries']} queries): top-{args.k} "
            f"mean {rust['top_k_mean_us']:.2f} µs; radius "
            + ", ".join(f"{r}: {us:.2f} µs" for r, us in rust["radius_mean_us"].items())
        )
        print(f"Python's cost per single-query call: {report['single_overhead_us']:.2f} µs")


if __name__ == "__main__":
    sys.exit(main())
