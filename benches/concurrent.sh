#!/usr/bin/env bash
# Concurrent use: query latency while another process imports into the same index, and import
# throughput with and without a concurrent query loop (docs/benchmarks.md, "Concurrent use").
#
# Per workload (clustered 64-bit codes, as benches/suite.sh makes them): N codes and QUERIES
# queries (`milan bench generate ... --seed 1`), EXTRA_PCT % of N more codes to import (`--seed
# 2`, as the suite's add step), a base index of the N codes (`index create --expected-size N`,
# `index import` with the default batch). Then REPS repetitions of:
#   idle search       `milan bench search BASE --follow --duration IDLE_S --check-every
#                     CHECK_EVERY --latencies ... --json`: a fresh reader per search (top-20,
#                     then each radius, for each query in turn), nothing else running
#   idle import       `milan index import COPY --codes extra.npy --batch-size BATCH`, timed, into
#                     a fresh copy of the base index (synced to the disk first), nothing else
#                     running
#   concurrent        a fresh copy again: `milan bench search COPY --follow --stop-file ...
#                     --ready-file ...` starts; once its index is open and its first search is
#                     about to run, the same import starts, timed; when the import exits the
#                     search loop is told to stop (a stop file): the first query begun after
#                     that is its last. The loop's figures cover the import's run
# The searches of one query in CHECK_EVERY are checked against a scan of their own snapshot
# (bench search exits 1 on a difference), and the copy must hold N + extra codes after each
# import.
#
# Before each repetition the script waits (up to LOAD_TRIES x 30 s) for the 1-minute load
# average to fall below MAX_LOAD, and records the load it started under.
#
# Results: OUT/NAME/rep-R/ (the raw JSON, every search's latency, the times), OUT/results.json
# (latency percentiles over the searches of all repetitions together, import throughput as the
# median of the repetitions, and each repetition's own figures) and tables on standard output
# (benches/concurrent_report.py, which can also be run again on OUT by itself).
#
# Settings (environment variables):
#   OUT=DIR           output folder (default target/bench-concurrent)
#   LARGE=1           add the 10M workload (10,000,000 codes, 10,000 centres)
#   ONLY=a,b          run only these workloads (clustered-64b-1M, clustered-64b-10M)
#   REPS=N            repetitions (default 3); the report gives medians
#   EXTRA_PCT=P       codes imported, as a percentage of N (default 20)
#   BATCH=B           --batch-size of the timed imports (default 10000: one commit per B codes)
#   IDLE_S=S          seconds of the idle search run (default 5)
#   CHECK_EVERY=N     check one query's searches in N against the scan (default 100: a loop
#                     of scans would mostly measure caches the scans evicted)
#   QUERIES=N         queries per workload (default 1000)
#   RADIUS=a,b        radii searched after each top-20 (default 2,4,8)
#   MAX_LOAD=L        wait for a load average below this (default 1.5)
#   LOAD_TRIES=N      waits of 30 s at most before measuring anyway (default 10)
#   IMPORT_THREADS=N  run the timed imports with RAYON_NUM_THREADS=N (default: unset, every core:
#                     the final table build of an import runs one thread per substring)
#   MILAN_BIN=PATH    use this milan binary instead of `cargo build --release --locked`
#
# The codes, queries and base index stay in OUT/NAME and are reused by the next run with the
# same N, EXTRA_PCT and QUERIES (delete OUT/NAME to make them again).
#
#   bash benches/concurrent.sh                     # 1M
#   LARGE=1 bash benches/concurrent.sh             # 1M and 10M
#   ONLY=clustered-64b-1M REPS=1 IDLE_S=1 EXTRA_PCT=1 OUT=target/concurrent-test \
#     bash benches/concurrent.sh                   # smoke test
set -euo pipefail
if [ -n "${MILAN_BIN:-}" ]; then
  MILAN_BIN=$(realpath "$MILAN_BIN")
fi
cd "$(dirname "$0")/.."
OUT=${OUT:-target/bench-concurrent}
REPS=${REPS:-3}
EXTRA_PCT=${EXTRA_PCT:-20}
BATCH=${BATCH:-10000}
IDLE_S=${IDLE_S:-5}
CHECK_EVERY=${CHECK_EVERY:-100}
QUERIES=${QUERIES:-1000}
RADIUS=${RADIUS:-2,4,8}
MAX_LOAD=${MAX_LOAD:-1.5}
LOAD_TRIES=${LOAD_TRIES:-10}
if [ -n "${MILAN_BIN:-}" ]; then
  MILAN=$MILAN_BIN
else
  cargo build --release --locked --quiet
  MILAN=${CARGO_TARGET_DIR:-target}/release/milan
fi
mkdir -p "$OUT"

# name count centres
all=(
  "clustered-64b-1M 1000000 1000"
  "clustered-64b-10M 10000000 10000"
)
workloads=()
if [ -n "${ONLY:-}" ]; then
  IFS=, read -r -a wanted <<<"$ONLY"
  for want in "${wanted[@]}"; do
    found=0
    for workload in "${all[@]}"; do
      if [ "${workload%% *}" = "$want" ]; then
        workloads+=("$workload")
        found=1
      fi
    done
    if [ "$found" = 0 ]; then
      echo "ONLY: no workload named $want" >&2
      exit 2
    fi
  done
else
  workloads=("${all[0]}")
  if [ "${LARGE:-0}" = 1 ]; then
    workloads+=("${all[1]}")
  fi
fi

log() { echo "== $*" >&2; }
load1() { cut -d' ' -f1 /proc/loadavg; }
now_ns() { date +%s%N; }
seconds_between() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6f", (b - a) / 1e9 }'; }
live_codes() {
  "$MILAN" index info "$1" --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["len"])'
}

# Waits until the 1-minute load average is below MAX_LOAD (LOAD_TRIES x 30 s at most); prints
# the load average measured last.
wait_for_quiet() {
  local tries=0 load
  load=$(load1)
  while awk -v l="$load" -v m="$MAX_LOAD" 'BEGIN { exit !(l >= m) }'; do
    if [ "$tries" -ge "$LOAD_TRIES" ]; then
      log "load average still $load (>= $MAX_LOAD) after $tries waits: measuring anyway"
      break
    fi
    log "load average $load (>= $MAX_LOAD): waiting 30 s"
    sleep 30
    tries=$((tries + 1))
    load=$(load1)
  done
  echo "$load"
}

# A fresh copy of the base index at $work, written through to the disk: otherwise the first
# sync of the import (its writable open syncs the file) would write the whole copy, inside the
# timed import and while holding the file's header lock, which readers wait for.
fresh_copy() {
  rm -rf "$work"
  cp -r "$base" "$work"
  sync "$work/milan.redb"
}

# Times `milan index import` of the extra codes into $1; writes the seconds to $2.
timed_import() {
  local start end threads=()
  if [ -n "${IMPORT_THREADS:-}" ]; then
    threads=(env RAYON_NUM_THREADS="$IMPORT_THREADS")
  fi
  start=$(now_ns)
  "${threads[@]}" "$MILAN" index import "$1" --codes "$codes_dir/extra.npy" --batch-size "$BATCH" \
    --quiet >/dev/null
  end=$(now_ns)
  seconds_between "$start" "$end" >"$2"
}

for workload in "${workloads[@]}"; do
  read -r name count centres <<<"$workload"
  extra=$((count * EXTRA_PCT / 100))
  codes_dir="$OUT/$name"
  base="$codes_dir/base"
  work="$codes_dir/work"
  mkdir -p "$codes_dir"
  log "$name: $count codes, $extra more imported in batches of $BATCH"
  stamp="$count $centres $extra $QUERIES"
  if [ "$(cat "$codes_dir/made" 2>/dev/null)" != "$stamp" ] || [ ! -f "$base/milan.redb" ]; then
    rm -rf "$base" "$codes_dir/made"
    "$MILAN" bench generate --bits 64 --count "$count" --centres "$centres" --flip 0.12 --seed 1 \
      --out "$codes_dir/codes.npy" --queries "$QUERIES" --queries-out "$codes_dir/queries.npy" >/dev/null
    "$MILAN" bench generate --bits 64 --count "$extra" --centres "$centres" --flip 0.12 --seed 2 \
      --out "$codes_dir/extra.npy" >/dev/null
    "$MILAN" index create "$base" --bits 64 --expected-size "$count" >/dev/null
    "$MILAN" index import "$base" --codes "$codes_dir/codes.npy" --quiet >/dev/null
    rm -f "$codes_dir/codes.npy"
    echo "$stamp" >"$codes_dir/made"
  else
    log "reusing the base index and codes in $codes_dir"
  fi
  echo "{\"workload\": \"$name\", \"count\": $count, \"centres\": $centres, \"extra\": $extra, \"batch\": $BATCH, \"idle_s\": $IDLE_S, \"check_every\": $CHECK_EVERY, \"queries\": $QUERIES, \"radius\": \"$RADIUS\", \"reps\": $REPS, \"max_load\": $MAX_LOAD, \"import_threads\": \"${IMPORT_THREADS:-}\", \"cpus\": $(nproc)}" \
    >"$codes_dir/settings.json"
  rm -rf "$codes_dir"/rep-*

  for rep in $(seq "$REPS"); do
    dir="$codes_dir/rep-$rep"
    mkdir -p "$dir"
    load=$(wait_for_quiet)
    echo "$load" >"$dir/load_before"
    log "$name, repetition $rep/$REPS (load average $load)"

    log "idle search ($IDLE_S s)"
    rc=0
    "$MILAN" bench search "$base" --codes "$codes_dir/queries.npy" --top-k 20 --radius "$RADIUS" \
      --follow --duration "$IDLE_S" --check-every "$CHECK_EVERY" --latencies "$dir/idle_latencies.tsv" \
      --json >"$dir/idle_search.json" || rc=$?
    echo "$rc" >"$dir/idle_search.rc"

    log "idle import"
    fresh_copy
    timed_import "$work" "$dir/idle_import.s"
    live_codes "$work" >"$dir/idle_import.len"

    log "import with a concurrent search loop"
    fresh_copy
    rm -f "$dir/ready" "$dir/stop"
    "$MILAN" bench search "$work" --codes "$codes_dir/queries.npy" --top-k 20 --radius "$RADIUS" \
      --follow --stop-file "$dir/stop" --ready-file "$dir/ready" --duration 3600 \
      --check-every "$CHECK_EVERY" --latencies "$dir/concurrent_latencies.tsv" --json \
      >"$dir/concurrent_search.json" &
    search_pid=$!
    while [ ! -e "$dir/ready" ]; do
      if ! kill -0 "$search_pid" 2>/dev/null; then
        log "bench search ended before it was ready"
        break
      fi
      sleep 0.005
    done
    timed_import "$work" "$dir/concurrent_import.s"
    touch "$dir/stop"
    rc=0
    wait "$search_pid" || rc=$?
    echo "$rc" >"$dir/concurrent_search.rc"
    live_codes "$work" >"$dir/concurrent_import.len"
    echo "$(load1)" >"$dir/load_after"
    rm -rf "$work"
  done
done

python3 benches/concurrent_report.py "$OUT"
