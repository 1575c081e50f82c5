#!/usr/bin/env bash
# The benchmark suite behind docs/benchmarks.md: for each workload, generate codes and QUERIES
# queries, build an index with the default settings, time the import, and run `milan bench search`
# (one thread, every answer checked against a linear scan). Results: $OUT/results.jsonl (one JSON
# object per workload) and a markdown table on standard output (benches/suite_report.py, which
# can also be run again on a results.jsonl by itself).
#
# Per workload it records:
#   import_s          wall time of `milan index import` (durable: it commits every batch)
#   file_bytes        size of milan.redb after the import
#   query_wall_s      median wall time of one process `milan query DIR --code HEX --top-k 20`
#                     (HEX: the first query code), start to exit, over 5 runs after one warm-up
#                     run (warm page cache); every run in query_wall_runs_s
#   check_s, check_ok wall time and success of `milan index check DIR`
#   search            the JSON of `milan bench search` (null if it printed none); search_rc its
#                     exit status (1: some answer differed from the linear scan)
#   add_s             (the add step only) wall time of `milan index import` of 10,000 more codes
#                     (`milan bench generate ... --count 10000 --seed 2`, same bits, centres, flip)
#   add_query_wall_s  (the add step only) wall time of the first `milan query` process after that
#                     import, no warm-up run
#
# Settings (environment variables):
#   OUT=DIR           output folder (default target/bench-suite); each workload in OUT/NAME
#   LARGE=1           add clustered-64b-10M (10,000,000 codes, 10,000 centres)
#   HUGE=1            add clustered-64b-100M (100,000,000 codes, 100,000 centres)
#   ONLY=a,b          run only the named workloads, chosen from every workload including the
#                     LARGE and HUGE ones (LARGE and HUGE are then not needed), in list order.
#                     Their rows in OUT/results.jsonl are replaced and other workloads' rows kept
#                     (without ONLY, results.jsonl starts empty); the table shows them all
#   QUERIES=N         queries per workload (default 1000)
#   ADD=0|1           the add step: default on for the 10M and 100M workloads only; 1 for every
#                     workload, 0 for none
#   KEEP_INDEX=0|1    keep OUT/NAME/index after measuring. Default: kept (as before) for every
#                     workload except clustered-64b-100M, whose index is deleted to save disk. An
#                     index that is kept and had the add step gets the 10,000 added codes deleted
#                     again (`milan index delete`, untimed), so that it holds exactly the generated
#                     codes and benches/compare/run.sh can reuse it with MILAN_INDEX=
#   KEEP_CODES=0|1    keep OUT/NAME/codes.npy (default 0: deleted after each workload; the
#                     queries, OUT/NAME/queries.npy, are always kept)
#   MILAN_BIN=PATH    use this milan binary instead of building one with cargo (otherwise
#                     `cargo build --release --locked`, into CARGO_TARGET_DIR if set)
#
# Disk: a workload needs its codes.npy (count * bits / 8 bytes: 800 MB at 100M 64-bit codes)
# while its index is built, plus the index itself (file_bytes in the results).
#
#   bash benches/suite.sh                          # the 1M workloads (and the small ones)
#   LARGE=1 bash benches/suite.sh                  # ... and 10M
#   ONLY=clustered-64b-100M KEEP_INDEX=1 bash benches/suite.sh   # then 100M, its row added to
#                                                  # the table, its index kept for
#                                                  # benches/compare/run.sh MILAN_INDEX=
#   ONLY=tiny-64b-1k ADD=1 OUT=target/suite-test bash benches/suite.sh   # smoke test, seconds
set -euo pipefail
if [ -n "${MILAN_BIN:-}" ]; then
  MILAN_BIN=$(realpath "$MILAN_BIN")
fi
cd "$(dirname "$0")/.."
OUT=${OUT:-target/bench-suite}
QUERIES=${QUERIES:-1000}
ADD=${ADD:-}
KEEP_INDEX=${KEEP_INDEX:-}
KEEP_CODES=${KEEP_CODES:-0}
ADD_COUNT=10000
QUERY_RUNS=5
if [ -n "${MILAN_BIN:-}" ]; then
  MILAN=$MILAN_BIN
else
  cargo build --release --locked --quiet
  MILAN=${CARGO_TARGET_DIR:-target}/release/milan
fi
mkdir -p "$OUT"

# name bits count centres flip radii big (big: the add step by default, index deleted by default)
base=(
  "clustered-64b-1M 64 1000000 1000 0.12 2,4,8 -"
  "uniform-64b-1M 64 1000000 0 0 2,4,8,12,16 -"
  "clustered-32b-1M 32 1000000 1000 0.12 1,2,4 -"
  "clustered-128b-1M 128 1000000 1000 0.12 4,8,16 -"
  "tiny-64b-1k 64 1000 10 0.12 2,4,8 -"
  "long-1024b-100k 1024 100000 100 0.12 8,64,256 -"
)
large="clustered-64b-10M 64 10000000 10000 0.12 2,4,8 large"
huge="clustered-64b-100M 64 100000000 100000 0.12 2,4,8 huge"

workloads=()
if [ -n "${ONLY:-}" ]; then
  IFS=, read -r -a wanted <<<"$ONLY"
  for want in "${wanted[@]}"; do
    found=0
    for workload in "${base[@]}" "$large" "$huge"; do
      [ "${workload%% *}" = "$want" ] && found=1
    done
    if [ "$found" = 0 ]; then
      echo "ONLY: no workload named $want" >&2
      exit 2
    fi
  done
  for workload in "${base[@]}" "$large" "$huge"; do
    for want in "${wanted[@]}"; do
      if [ "${workload%% *}" = "$want" ]; then
        workloads+=("$workload")
      fi
    done
  done
else
  workloads=("${base[@]}")
  if [ "${LARGE:-0}" = 1 ]; then
    workloads+=("$large")
  fi
  if [ "${HUGE:-0}" = 1 ]; then
    workloads+=("$huge")
  fi
fi

if [ -n "${ONLY:-}" ] && [ -f "$OUT/results.jsonl" ]; then
  # Keep the other workloads' rows, so that runs of single workloads add up to one table.
  python3 - "$OUT/results.jsonl" "${workloads[@]%% *}" <<'PY'
import json, sys
path, names = sys.argv[1], set(sys.argv[2:])
with open(path) as f:
    kept = [line for line in f if line.strip() and json.loads(line)["workload"] not in names]
with open(path, "w") as f:
    f.writelines(kept)
PY
else
  : > "$OUT/results.jsonl"
fi

# Wall seconds of a command (its output discarded), printed with six decimals; fails with it.
wall_s() {
  local start end
  start=$(date +%s%N)
  "$@" >/dev/null || return $?
  end=$(date +%s%N)
  awk -v ns=$((end - start)) 'BEGIN { printf "%.6f", ns / 1e9 }'
}

# The first code of a .npy file of uint8 [n, bytes] as hex (format versions 1 to 3).
first_code_hex() {
  python3 - "$1" <<'PY'
import ast, struct, sys
with open(sys.argv[1], "rb") as f:
    data = f.read(1 << 16)
assert data[:6] == b"\x93NUMPY", "not a .npy file"
if data[6] == 1:
    (length,), start = struct.unpack("<H", data[8:10]), 10
else:
    (length,), start = struct.unpack("<I", data[8:12]), 12
header = ast.literal_eval(data[start:start + length].decode("latin1"))
assert header["descr"] in ("|u1", "<u1", "u1") and not header["fortran_order"], header
width = header["shape"][1]
print(data[start + length:start + length + width].hex())
PY
}

# The next id the index at $1 will give.
next_id() {
  "$MILAN" index info "$1" --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["next_id"])'
}

# The median of the numbers given.
median() {
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

for workload in "${workloads[@]}"; do
  read -r name bits count centres flip radii big <<<"$workload"
  dir="$OUT/$name"
  echo "== $name" >&2
  rm -rf "$dir" && mkdir -p "$dir"
  "$MILAN" bench generate --bits "$bits" --count "$count" --centres "$centres" --flip "$flip" \
    --seed 1 --out "$dir/codes.npy" --queries "$QUERIES" --queries-out "$dir/queries.npy" >/dev/null
  "$MILAN" index create "$dir/index" --bits "$bits" --expected-size "$count" >/dev/null
  import_s=$(wall_s "$MILAN" index import "$dir/index" --codes "$dir/codes.npy" --quiet)
  file_bytes=$(stat -c %s "$dir/index/milan.redb")
  [ "$KEEP_CODES" = 1 ] || rm -f "$dir/codes.npy"

  # A failed step is recorded as null (and reported on standard error) rather than ending a
  # run that may have spent hours on the import.
  hex=$(first_code_hex "$dir/queries.npy")
  query_wall_s=null runs_json=null
  if "$MILAN" query "$dir/index" --code "$hex" --top-k 20 >/dev/null; then
    runs=()
    for _ in $(seq "$QUERY_RUNS"); do
      run_s=$(wall_s "$MILAN" query "$dir/index" --code "$hex" --top-k 20) || break
      runs+=("$run_s")
    done
    if [ "${#runs[@]}" = "$QUERY_RUNS" ]; then
      query_wall_s=$(median "${runs[@]}")
      runs_json=$(IFS=,; echo "[${runs[*]}]")
    fi
  fi
  [ "$query_wall_s" != null ] || echo "warning: milan query $dir/index --code $hex failed" >&2

  check_ok=true
  check_s=$(wall_s "$MILAN" index check "$dir/index") || { check_ok=false; check_s=null; }
  [ "$check_ok" = true ] || echo "warning: milan index check $dir/index failed" >&2

  search_rc=0
  result=$("$MILAN" bench search "$dir/index" --codes "$dir/queries.npy" --top-k 20 \
    --radius "$radii" --json) || search_rc=$?
  [ -n "$result" ] || result=null
  [ "$search_rc" = 0 ] || echo "warning: milan bench search exited with $search_rc" >&2

  do_add=${ADD:-$([ "$big" = - ] && echo 0 || echo 1)}
  add_s=null add_query_wall_s=null added_ids=
  if [ "$do_add" = 1 ]; then
    "$MILAN" bench generate --bits "$bits" --count "$ADD_COUNT" --centres "$centres" --flip "$flip" \
      --seed 2 --out "$dir/add.npy" >/dev/null
    first_added=$(next_id "$dir/index")
    if add_s=$(wall_s "$MILAN" index import "$dir/index" --codes "$dir/add.npy" --quiet); then
      added_ids=$(seq "$first_added" $(($(next_id "$dir/index") - 1)))
      add_query_wall_s=$(wall_s "$MILAN" query "$dir/index" --code "$hex" --top-k 20) \
        || { add_query_wall_s=null; echo "warning: milan query after the add failed" >&2; }
    else
      add_s=null
      echo "warning: milan index import of the added codes failed" >&2
    fi
    rm -f "$dir/add.npy"
  fi

  echo "{\"workload\":\"$name\",\"bits\":$bits,\"count\":$count,\"centres\":$centres,\"flip\":$flip,\"import_s\":$import_s,\"file_bytes\":$file_bytes,\"query_wall_s\":$query_wall_s,\"query_wall_runs_s\":$runs_json,\"check_s\":$check_s,\"check_ok\":$check_ok,\"add_s\":$add_s,\"add_query_wall_s\":$add_query_wall_s,\"search_rc\":$search_rc,\"search\":$result}" >> "$OUT/results.jsonl"

  keep=${KEEP_INDEX:-$([ "$big" = huge ] && echo 0 || echo 1)}
  if [ "$keep" = 1 ]; then
    if [ -n "$added_ids" ]; then
      # Back to the generated codes only, for benches/compare/run.sh MILAN_INDEX=.
      mapfile -t added < <(echo "$added_ids")
      "$MILAN" index delete "$dir/index" --id "${added[@]}" >/dev/null
    fi
  else
    rm -rf "$dir/index"
  fi
done

python3 benches/suite_report.py "$OUT/results.jsonl"
