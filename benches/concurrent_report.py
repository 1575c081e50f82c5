#!/usr/bin/env python3
"""Tables and OUT/results.json from a benches/concurrent.sh output folder.

    python3 benches/concurrent_report.py target/bench-concurrent

Latencies are µs per search with a fresh reader (`bench search --follow`), its catch-up with
other processes' commits included, as percentiles over the searches of every repetition together
(the rep-R/*_latencies.tsv files); each repetition's own figures (bench search's JSON) are in
results.json. Import throughput is the extra codes over the wall time of the whole `milan index
import` process (open, commits, the final table build), the median of the repetitions.
"""

import json
import statistics
import sys
from pathlib import Path

P99_GOAL_US = 2000.0  # at 1M, during a concurrent import
THROUGHPUT_GOAL = 0.8  # of the idle import's codes/s


def read(path):
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return None


def read_json(path):
    text = read(path)
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def searches(report):
    """(label, timing) of each search in a bench search report."""
    if report is None:
        return []
    out = [(f"top-{report['top_k']['k']}", report["top_k"])]
    out += [(f"radius {r['r']}", r) for r in report["radius"]]
    return out


def repetition(settings, rep_dir):
    expected = settings["count"] + settings["extra"]
    rep = {"rep": int(rep_dir.name.split("-")[1])}
    for key in ("load_before", "load_after"):
        value = read(rep_dir / key)
        rep[key] = float(value) if value else None
    problems = []
    for phase in ("idle", "concurrent"):
        report = read_json(rep_dir / f"{phase}_search.json")
        rc = read(rep_dir / f"{phase}_search.rc")
        if report is None or rc != "0":
            problems.append(f"{phase} bench search: exit status {rc}, report {'read' if report else 'missing'}")
        seconds = read(rep_dir / f"{phase}_import.s")
        length = read(rep_dir / f"{phase}_import.len")
        if length is None or int(length) != expected:
            problems.append(f"{phase} import: {length} codes after it, not {expected}")
        run = (report or {}).get("run") or {}
        rep[phase] = {
            "search": {
                label: {key: timing[key] for key in ("mean_us", "median_us", "p99_us", "max_us", "recall")}
                for label, timing in searches(report)
            },
            "queries": (report or {}).get("queries"),
            "search_seconds": run.get("seconds"),
            "reader": run.get("reader"),
            "first_codes": run.get("first_codes"),
            "last_codes": run.get("last_codes"),
            "codes_changes": run.get("codes_changes"),
            "import_s": float(seconds) if seconds else None,
            "import_codes_per_s": settings["extra"] / float(seconds) if seconds else None,
        }
    conc = rep["concurrent"]
    if conc["codes_changes"] is not None and conc["codes_changes"] < 1:
        problems.append("the concurrent search loop saw no commit: it did not overlap the import")
    if conc["last_codes"] is not None and conc["last_codes"] != expected:
        problems.append(f"the concurrent search loop's last snapshot held {conc['last_codes']} codes, not {expected}")
    rep["problems"] = problems
    return rep


def latencies(paths):
    """Microseconds by search label (top-20, radius-2, ..., reader), pooled over the files."""
    pooled = {}
    for path in paths:
        try:
            lines = path.read_text().splitlines()
        except FileNotFoundError:
            continue
        for line in lines:
            label, _start, micros = line.split("\t")
            pooled.setdefault(label, []).append(float(micros))
    return pooled


def percentiles(values):
    """Mean and percentiles as bench search takes them (the sorted value at round((n-1)q))."""
    if not values:
        return None
    values = sorted(values)
    at = lambda q: values[round((len(values) - 1) * q)]
    return {
        "n": len(values),
        "mean_us": sum(values) / len(values),
        "median_us": at(0.5),
        "p99_us": at(0.99),
        "p999_us": at(0.999),
        "max_us": values[-1],
    }


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summary(settings, reps, rep_dirs):
    out = {"settings": settings, "repetitions": reps, "median": {}, "pooled": {}}
    for phase in ("idle", "concurrent"):
        pooled = latencies([d / f"{phase}_latencies.tsv" for d in rep_dirs])
        out["pooled"][phase] = {label: percentiles(values) for label, values in pooled.items()}
        # Fresh readers that took over 100 µs: in practice the catch-ups with a commit.
        out["pooled"][phase]["readers_over_100us"] = sum(v > 100 for v in pooled.get("reader", []))
    med = out["median"]
    labels = [label for label in reps[0]["idle"]["search"]] if reps else []
    for phase in ("idle", "concurrent"):
        med[phase] = {
            "search": {
                label: {
                    key: median([r[phase]["search"].get(label, {}).get(key) for r in reps])
                    for key in ("mean_us", "median_us", "p99_us", "max_us")
                }
                for label in labels
            },
            "queries": median([r[phase]["queries"] for r in reps]),
            "reader_max_us": median([(r[phase]["reader"] or {}).get("max_us") for r in reps]),
            "reader_p99_us": median([(r[phase]["reader"] or {}).get("p99_us") for r in reps]),
            "import_s": median([r[phase]["import_s"] for r in reps]),
            "import_codes_per_s": median([r[phase]["import_codes_per_s"] for r in reps]),
        }
    med["concurrent"]["codes_changes"] = median([r["concurrent"]["codes_changes"] for r in reps])
    idle_rate = med["idle"]["import_codes_per_s"]
    conc_rate = med["concurrent"]["import_codes_per_s"]
    med["throughput_ratio"] = conc_rate / idle_rate if idle_rate and conc_rate else None
    out["throughput_ratios"] = [
        r["concurrent"]["import_codes_per_s"] / r["idle"]["import_codes_per_s"]
        for r in reps
        if r["concurrent"]["import_codes_per_s"] and r["idle"]["import_codes_per_s"]
    ]
    med["load_before"] = median([r["load_before"] for r in reps])
    out["load_before_range"] = [
        min((r["load_before"] for r in reps if r["load_before"] is not None), default=None),
        max((r["load_before"] for r in reps if r["load_before"] is not None), default=None),
    ]
    worst_p99 = max(
        (
            v["p99_us"]
            for label, v in out["pooled"]["concurrent"].items()
            if label not in ("reader", "readers_over_100us") and v
        ),
        default=None,
    )
    out["goals"] = {
        "concurrent_p99_us_worst_search": worst_p99,
        "p99_goal_us": P99_GOAL_US,
        "p99_goal_met": worst_p99 is not None and worst_p99 <= P99_GOAL_US,
        "p99_goal_applies": settings["count"] <= 1_000_000,
        "throughput_goal": THROUGHPUT_GOAL,
        "throughput_goal_met": med["throughput_ratio"] is not None
        and med["throughput_ratio"] >= THROUGHPUT_GOAL,
        "paired_ratio_median": median(out["throughput_ratios"]),
    }
    out["problems"] = [f"repetition {r['rep']}: {p}" for r in reps for p in r["problems"]]
    return out


def fmt(value, digits=1):
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def main():
    out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "target/bench-concurrent")
    results = []
    for settings_path in sorted(out_dir.glob("*/settings.json")):
        settings = json.loads(settings_path.read_text())
        rep_dirs = sorted(settings_path.parent.glob("rep-*"), key=lambda p: int(p.name.split("-")[1]))
        reps = [repetition(settings, d) for d in rep_dirs]
        if reps:
            results.append(summary(settings, reps, rep_dirs))
    (out_dir / "results.json").write_text(json.dumps(results, indent=1) + "\n")

    print("Query latency, µs per search (a fresh reader each, its catch-up included), over the")
    print("searches of all repetitions together:")
    print()
    print("| workload | search | idle mean | idle p99 | during import mean | p99 | p99.9 | max | searches during import |")
    print("|---|---|---|---|---|---|---|---|---|")
    for res in results:
        idle_all, conc_all = res["pooled"]["idle"], res["pooled"]["concurrent"]
        labels = [l for l in conc_all if l not in ("reader", "readers_over_100us")] + ["reader"]
        for label in labels:
            conc = conc_all.get(label)
            if not conc:
                continue
            idle = idle_all.get(label) or {}
            name = "fresh reader alone" if label == "reader" else label
            print(
                f"| {res['settings']['workload']} | {name} | {fmt(idle.get('mean_us'))} | {fmt(idle.get('p99_us'))} "
                f"| {fmt(conc['mean_us'])} | {fmt(conc['p99_us'])} | {fmt(conc['p999_us'])} | {fmt(conc['max_us'])} "
                f"| {conc['n']:,} |"
            )
    print()
    for res in results:
        print(
            f"{res['settings']['workload']}: fresh readers over 100 µs (catch-ups, mostly): "
            f"{res['pooled']['idle'].get('readers_over_100us', 0)} idle, "
            f"{res['pooled']['concurrent'].get('readers_over_100us', 0)} during the imports"
        )
    print()
    print("Import of the extra codes, codes per second (whole `index import` process), median of the")
    print("repetitions; ratio: with queries over idle; paired: each repetition's two imports, run one")
    print("after the other:")
    print()
    print("| workload | codes imported | batch | idle codes/s (s) | with queries codes/s (s) | ratio | paired ratios: median (each repetition) | queries during import | commits seen | load average before |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for res in results:
        s, med = res["settings"], res["median"]
        idle, conc = med["idle"], med["concurrent"]
        lo, hi = res["load_before_range"]
        print(
            f"| {s['workload']} | {s['extra']:,} | {s['batch']:,} "
            f"| {fmt(idle['import_codes_per_s'])} ({fmt(idle['import_s'], 2)}) "
            f"| {fmt(conc['import_codes_per_s'])} ({fmt(conc['import_s'], 2)}) "
            f"| {fmt(med['throughput_ratio'], 2)} | {fmt(median(res['throughput_ratios']), 2)} "
            f"({', '.join(fmt(r, 2) for r in res['throughput_ratios'])}) "
            f"| {fmt(conc['queries'])} x {len(conc['search'])} "
            f"| {fmt(conc['codes_changes'])} | {fmt(lo, 2)}-{fmt(hi, 2)} |"
        )
    print()
    for res in results:
        g, name = res["goals"], res["settings"]["workload"]
        if res["settings"].get("import_threads"):
            name += f" (imports with RAYON_NUM_THREADS={res['settings']['import_threads']})"
        p99 = "met" if g["p99_goal_met"] else "missed"
        applies = "" if g["p99_goal_applies"] else " (the goal is set at 1M)"
        thr = "met" if g["throughput_goal_met"] else "missed"
        print(
            f"{name}: worst p99 during the import {fmt(g['concurrent_p99_us_worst_search'])} µs, "
            f"goal <= {g['p99_goal_us']:.0f}: {p99}{applies}; "
            f"throughput ratio {fmt(res['median']['throughput_ratio'], 2)}, goal >= {g['throughput_goal']}: {thr}"
        )
        for problem in res["problems"]:
            print(f"  problem: {problem}")
    print()
    print(f"raw figures: {out_dir / 'results.json'}")
    return 1 if any(res["problems"] for res in results) else 0


if __name__ == "__main__":
    sys.exit(main())
