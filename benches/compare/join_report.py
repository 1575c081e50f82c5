#!/usr/bin/env python3
"""Gathers the raw JSON of one `JOIN=1 benches/compare/run.sh` run into join-results.jsonl and
prints the markdown table of self-join times. Standard library only.

Usage: join_report.py OUT_DIR  (reads run.json, milan-join.json, mihrs-join.json, faiss-join.jsonl)
"""

import json
import os
import sys

from report import read_lines


def main():
    out = sys.argv[1]
    run = (read_lines(os.path.join(out, "run.json")) or [{}])[0]
    rows = []
    for name in ("milan-join.json", "mihrs-join.json", "faiss-join.jsonl"):
        for obj in read_lines(os.path.join(out, name)):
            obj.setdefault("library", "milan")
            rows.append(obj)
    with open(os.path.join(out, "join-results.jsonl"), "w") as f:
        for obj in [dict(run, kind="run")] + rows:
            f.write(json.dumps(obj) + "\n")
    milan = next((r for r in rows if r["library"] == "milan"), None)
    exact = {j["r"]: j["pairs"] for j in milan["joins"]} if milan else {}
    radii = sorted({j["r"] for r in rows for j in r.get("joins", [])})
    print(f"\nself-join of {run.get('count')} {run.get('bits')}-bit codes, "
          f"{run.get('centres')} centres, flip {run.get('flip')}; seconds, median of runs\n")
    print("| library | threads | " + " | ".join(f"radius {r}" for r in radii) + " |")
    print("|---|---|" + "---|" * len(radii))
    for row in rows:
        if "skipped" in row:
            print(f"| {row['library']} | - | {row['skipped']} |")
            continue
        name = row["library"]
        if name == "milan":
            name = f"milan ({row['substrings']} substrings)"
        elif name == "mih-rs":
            name = f"mih-rs {row['version']} ({row['substrings']} blocks)"
        else:
            name = f"FAISS {row['version']} {row['index']}"
        cells = []
        for r in radii:
            join = next((j for j in row["joins"] if j["r"] == r), None)
            if join is None:
                cells.append("n/a")
                continue
            cell = f"{join['median_s']:.2f}"
            if join.get("extrapolated"):
                cell += f" (extrapolated from {join['sample_queries']} queries)"
            pairs = join.get("pairs")
            if pairs is not None and r in exact and pairs != exact[r]:
                cell += f", recall {pairs / exact[r]:.3f}" if exact[r] else ", recall n/a"
            if name.startswith("milan") and join.get("mismatches"):
                cell += f", {join['mismatches']} sampled codes wrong"
            cells.append(cell)
        print(f"| {name} | {row.get('threads')} | " + " | ".join(cells) + " |")
    if exact:
        print("\npairs within the radius (milan): " + ", ".join(f"r{r}: {p}" for r, p in sorted(exact.items())))


if __name__ == "__main__":
    main()
