#!/usr/bin/env python3
"""Prints the markdown tables of a benches/suite.sh run from its results.jsonl. Standard library
only; fields a milan version does not write yet (rss_bytes, max_us) print as "-".

Usage: suite_report.py [OUT/results.jsonl]  (default target/bench-suite/results.jsonl)
"""

import json
import sys

DASH = "-"


def num(value, fmt):
    return DASH if value is None else format(value, fmt)


def ratio(a, b, fmt=".3f"):
    return DASH if a is None or not b else format(a / b, fmt)


def us(value):
    if value is None:
        return DASH
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "target/bench-suite/results.jsonl"
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]

    print(
        "| workload | codes | m | import s | open ms | query wall s | check s | bytes/code (memory) "
        "| RSS bytes/code | top-20 mean µs | top-20 p99 µs | scan mean µs | p99/scan "
        "| radius means µs (r: mean (scan)) | exact |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        s = row.get("search") or {}
        t = s.get("top_k") or {}
        codes = s.get("codes", row.get("count"))
        rss = s.get("rss_bytes")
        radii = "; ".join(
            f"r{r['r']}: {us(r.get('mean_us'))} ({us(r.get('scan_mean_us'))})" for r in s.get("radius", [])
        ) or DASH
        if s:
            recalls = [t.get("recall")] + [r.get("recall") for r in s.get("radius", [])]
            exact = str(row.get("search_rc", 0) == 0 and all(x == 1.0 for x in recalls))
        else:
            exact = DASH
        cells = [
            row["workload"],
            num(codes, ","),
            num(s.get("substrings"), "d"),
            num(row.get("import_s"), ".2f"),
            num(s.get("open_ms"), ".0f"),
            num(row.get("query_wall_s"), ".3f"),
            num(row.get("check_s"), ".2f"),
            num(s.get("memory_bytes_per_code"), ".1f"),
            ratio(rss, codes, ".1f"),
            us(t.get("mean_us")),
            us(t.get("p99_us")),
            us(t.get("scan_mean_us")),
            ratio(t.get("p99_us"), t.get("scan_mean_us")),
            radii,
            exact,
        ]
        print("| " + " | ".join(cells) + " |")

    # Tails: p99 and max of every timed search (max_us only where milan writes it).
    print()
    print("| workload | top-20 p99 / max µs | radius p99 / max µs |")
    print("|---|---|---|")
    for row in rows:
        s = row.get("search") or {}
        t = s.get("top_k") or {}
        radii = "; ".join(
            f"r{r['r']}: {us(r.get('p99_us'))} / {us(r.get('max_us'))}" for r in s.get("radius", [])
        ) or DASH
        print(f"| {row['workload']} | {us(t.get('p99_us'))} / {us(t.get('max_us'))} | {radii} |")

    added = [row for row in rows if row.get("add_s") is not None or row.get("add_query_wall_s") is not None]
    if added:
        print()
        print("| workload | codes before | add 10,000 codes s | query wall s after the add (first run) | query wall s before (median) |")
        print("|---|---|---|---|---|")
        for row in added:
            codes = (row.get("search") or {}).get("codes", row.get("count"))
            print(
                f"| {row['workload']} | {num(codes, ',')} | {num(row.get('add_s'), '.2f')} "
                f"| {num(row.get('add_query_wall_s'), '.3f')} | {num(row.get('query_wall_s'), '.3f')} |"
            )

    failed = [row["workload"] for row in rows if row.get("check_ok") is False]
    if failed:
        print()
        print("`milan index check` failed on: " + ", ".join(failed))


if __name__ == "__main__":
    main()
