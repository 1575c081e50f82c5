#!/usr/bin/env bash
# The benchmark suite behind docs/benchmarks.md: for each workload, generate codes and 1,000
# queries, build an index with the default settings, time the import, and run `milan bench search`
# (one thread, every answer checked against a linear scan). Results: $OUT/results.jsonl and a
# markdown table on standard output. LARGE=1 adds the 10,000,000-code workload.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-target/bench-suite}
MILAN=target/release/milan
mkdir -p "$OUT"
cargo build --release --locked --quiet
: > "$OUT/results.jsonl"

# name bits count centres flip radii
workloads=(
  "clustered-64b-1M 64 1000000 1000 0.12 2,4,8"
  "uniform-64b-1M 64 1000000 0 0 2,4,8,12,16"
  "clustered-32b-1M 32 1000000 1000 0.12 1,2,4"
  "clustered-128b-1M 128 1000000 1000 0.12 4,8,16"
  "tiny-64b-1k 64 1000 10 0.12 2,4,8"
  "long-1024b-100k 1024 100000 100 0.12 8,64,256"
)
if [ "${LARGE:-0}" = 1 ]; then
  workloads+=("clustered-64b-10M 64 10000000 10000 0.12 2,4,8")
fi

for workload in "${workloads[@]}"; do
  read -r name bits count centres flip radii <<<"$workload"
  dir="$OUT/$name"
  rm -rf "$dir" && mkdir -p "$dir"
  "$MILAN" bench generate --bits "$bits" --count "$count" --centres "$centres" --flip "$flip" \
    --seed 1 --out "$dir/codes.npy" --queries 1000 --queries-out "$dir/queries.npy" >/dev/null
  "$MILAN" index create "$dir/index" --bits "$bits" --expected-size "$count" >/dev/null
  start=$(date +%s%N)
  "$MILAN" index import "$dir/index" --codes "$dir/codes.npy" --quiet >/dev/null
  import_ms=$(( ($(date +%s%N) - start) / 1000000 ))
  file_bytes=$(stat -c %s "$dir/index/milan.redb")
  result=$("$MILAN" bench search "$dir/index" --codes "$dir/queries.npy" --top-k 20 --radius "$radii" --json)
  echo "{\"workload\":\"$name\",\"import_ms\":$import_ms,\"file_bytes\":$file_bytes,\"search\":$result}" >> "$OUT/results.jsonl"
  rm -f "$dir/codes.npy"
done

python3 - "$OUT/results.jsonl" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print("| workload | codes | m | import s | open ms | bytes/code in memory | top-20 mean µs (scan) | radius: mean µs (scan) [mean hits] | exact |")
print("|---|---|---|---|---|---|---|---|---|")
for row in rows:
    s = row["search"]
    t = s["top_k"]
    radii = "; ".join(f"r{r['r']}: {r['mean_us']:.2f} ({r['scan_mean_us']:.0f}) [{r['mean_hits']:.1f}]" for r in s["radius"])
    exact = all(x["recall"] == 1.0 for x in [t] + s["radius"])
    print(f"| {row['workload']} | {s['codes']:,} | {s['substrings']} | {row['import_ms'] / 1000:.2f} | {s['open_ms']:.0f} | {s['memory_bytes_per_code']:.1f} | {t['mean_us']:.2f} ({t['scan_mean_us']:.0f}) | {radii} | {exact} |")
PY
