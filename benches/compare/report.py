#!/usr/bin/env python3
"""Gathers the raw JSON of one benches/compare/run.sh run into results.jsonl and prints the
markdown table. Standard library only.

Usage: report.py OUT_DIR  (reads run.json, milan.json, milan-import.json, mihrs.json, faiss.jsonl)
"""

import json
import os
import sys


def read_lines(path):
    """JSON objects in a file, one per line; [] when the file is missing or a line is not JSON."""
    if not os.path.exists(path):
        return []
    objects = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                objects.append(json.loads(line))
            except json.JSONDecodeError:
                print(f"warning: {path}: a line is not JSON: {line[:80]}", file=sys.stderr)
    return objects


def us(value):
    if value is None:
        return "n/a"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def secs(value):
    """Seconds with at least three decimals and three significant digits."""
    if value is None:
        return "n/a"
    decimals = 3
    while decimals < 9 and 0 < value < 10 ** (2 - decimals):
        decimals += 1
    return f"{value:.{decimals}f}"


def per_code(report):
    """Resident bytes per code: milan's rss_bytes (when its bench search writes it) and mih-rs's
    (after reading its index back and every query; its peak, the build included, beside it)."""
    codes = report.get("codes")
    rss = report.get("rss_bytes")
    if not codes or rss is None:
        return "n/a"
    text = f"{rss / codes:.1f}"
    if report.get("peak_rss_bytes") is not None:
        text += f" (peak {report['peak_rss_bytes'] / codes:.1f})"
    return text


def frac(value):
    return "n/a" if value is None else f"{value:.3f}"


def radius_by_r(report):
    return {entry["r"]: entry for entry in report.get("radius", [])}


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "target/compare"
    run = (read_lines(os.path.join(out, "run.json")) or [{}])[0]
    milan = (read_lines(os.path.join(out, "milan.json")) or [None])[0]
    milan_import = (read_lines(os.path.join(out, "milan-import.json")) or [{}])[0]
    mihrs = (read_lines(os.path.join(out, "mihrs.json")) or [None])[0]
    faiss = read_lines(os.path.join(out, "faiss.jsonl"))

    results = [{"run": run}]
    if milan is not None:
        milan = {"library": "milan", "version": run.get("milan_version"), **milan, **milan_import}
        results.append(milan)
    if mihrs is not None:
        results.append(mihrs)
    results.extend(faiss)
    with open(os.path.join(out, "results.jsonl"), "w") as f:
        for obj in results:
            f.write(json.dumps(obj) + "\n")

    radii = [int(r) for r in str(run.get("radius", "2,4,8")).split(",") if r.strip()]
    k = run.get("top_k", 20)

    # The exhaustive answer sizes (numpy scan in faiss_bench.py, or mih-rs's linear scan), to
    # check every library's hit counts against the same files.
    exact_hits = {}
    for report in faiss + ([mihrs] if mihrs else []):
        for r, entry in radius_by_r(report).items():
            if "exact_mean_hits" in entry:
                exact_hits.setdefault(r, entry["exact_mean_hits"])

    def radius_notes(report):
        by_r = radius_by_r(report)
        recalls = "/".join(frac(by_r[r]["recall"]) if r in by_r else "n/a" for r in radii)
        notes = [f"r {'/'.join(map(str, radii))} recall {recalls}"]
        for r in radii:
            entry = by_r.get(r)
            if entry is None:
                continue
            if r in exact_hits and abs(entry["mean_hits"] - exact_hits[r]) > 1e-9:
                notes.append(f"r={r}: {entry['mean_hits']:.2f} hits/query vs {exact_hits[r]:.2f} exact")
            if entry.get("false_hits"):
                notes.append(f"r={r}: {entry['false_hits']} hits beyond r")
        return notes

    header = ["library", f"exact top-{k} mean µs"] + [f"radius {r}" for r in radii]
    header += ["recall notes", "import/build s", "open s", "RSS bytes/code"]
    rows = []

    def add(name, report, build_s, notes, approximate_topk=False):
        by_r = radius_by_r(report)
        topk = us(report["top_k"]["mean_us"]) + (" (approx.)" if approximate_topk else "")
        row = [name, topk] + [us(by_r[r]["mean_us"]) if r in by_r else "n/a" for r in radii]
        build = build_s if isinstance(build_s, str) else secs(build_s)
        row += ["; ".join(notes), build, secs(report["open_ms"] / 1e3), per_code(report)]
        rows.append(row)

    def missing(name, why):
        rows.append([name, "n/a"] + ["n/a"] * len(radii) + [why, "n/a", "n/a", "n/a"])

    if milan is not None:
        t = milan["top_k"]
        notes = [f"top-{t['k']} recall {frac(t['recall'])} vs its own scan"] + radius_notes(milan)
        import_s = "reused index" if run.get("milan_index_reused") else milan.get("import_s")
        add(f"milan ({milan.get('substrings')} substrings)", milan, import_s, notes)
    else:
        missing("milan", "did not run")

    if mihrs is not None and "skipped" not in mihrs:
        t = mihrs["top_k"]
        notes = [f"top-{t['k']} k-th distance match {frac(t['kth_distance_match'])}"] + radius_notes(mihrs)
        add(f"mih-rs {mihrs['version']} ({mihrs['substrings']} blocks)", mihrs, mihrs["build_s"], notes)
    elif mihrs is not None:
        missing("mih-rs", mihrs["skipped"])
    else:
        missing("mih-rs", "did not run")

    for report in faiss:
        t = report["top_k"]
        if report["index"] == "IndexBinaryFlat":
            name = f"faiss {report['version']} IndexBinaryFlat"
            notes = [f"top-{t['k']} k-th distance match {frac(t['kth_distance_match'])}"]
            approximate = False
        else:
            name = (
                f"faiss {report['version']} IndexBinaryMultiHash "
                f"(nhash={report['substrings']}, b={report['b']}, nflip={report['nflip']})"
            )
            notes = [
                f"top-{t['k']} recall {frac(t['recall'])}, k-th distance match {frac(t['kth_distance_match'])}"
            ]
            approximate = t["kth_distance_match"] < 1.0
        notes += radius_notes(report)
        add(name, report, report["build_s"], notes, approximate)
    if not faiss:
        missing("faiss", "skipped (SKIP_FAISS=1)" if run.get("skip_faiss") else "did not run")

    if run.get("codes_given"):
        source = f"from {run.get('codes_file')}, queries from {run.get('queries_file')}"
    else:
        source = f"centres {run.get('centres')}, flip {run.get('flip')}, seed {run.get('seed')}"
    print(
        f"{run.get('count')} codes of {run.get('bits')} bits ({source}), {run.get('queries')} queries, "
        "one thread, mean µs per query"
    )
    if faiss:
        print(f"(faiss times include about {us(faiss[0]['call_overhead_us'])} µs of Python call overhead per query)")
    print()
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
