#!/usr/bin/env bash
# Side-by-side comparison: milan, mih-rs and FAISS (IndexBinaryFlat, IndexBinaryMultiHash) on the
# same generated codes, one thread, one query at a time. See benches/compare/README.md.
#
#   BITS=64 COUNT=1000000 CENTRES=1000 FLIP=0.12 QUERIES=1000 SEED=1 OUT=target/compare \
#     bash benches/compare/run.sh
#
# JOIN=1: the self-join instead (every pair within each radius), on THREADS threads each.
#
# 10M and 100M codes, milan and mih-rs only, reusing the index benches/suite.sh kept
# (HUGE=1 KEEP_INDEX=1; the codes and queries are generated again, identical):
#   COUNT=100000000 CENTRES=100000 SKIP_FAISS=1 OUT=target/compare-100M \
#     MILAN_INDEX=target/bench-suite/clustered-64b-100M/index bash benches/compare/run.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

BITS="${BITS:-64}"
COUNT="${COUNT:-1000000}"
CENTRES="${CENTRES:-1000}"
FLIP="${FLIP:-0.12}"
QUERIES="${QUERIES:-1000}"
SEED="${SEED:-1}"
OUT="${OUT:-target/compare}"
TOP_K="${TOP_K:-20}"
RADIUS="${RADIUS:-2,4,8}"
NHASH="${NHASH:-3}"            # IndexBinaryMultiHash tables; b = BITS / NHASH, rounded down
NFLIP="${NFLIP:-0}"            # IndexBinaryMultiHash bit flips probed per table (FAISS's default)
SUBSTRINGS="${SUBSTRINGS:-}"   # milan substrings; empty: milan's default for COUNT codes
BLOCKS="${BLOCKS:-}"           # mih-rs blocks; empty: mih-rs's own choice
CPU="${CPU:-}"                 # pin every timed command to this CPU with taskset
VENV="${VENV:-target/compare-venv}"
# MILAN_BIN: an already built milan binary to use instead of building target/release/milan.
FAISS_VERSION="${FAISS_VERSION:-1.15.1}"
SKIP_FAISS="${SKIP_FAISS:-0}"  # 1: leave FAISS out (no Python environment, no pip install)

# Reuse instead of generate / import (see the README). CODES: a codes .npy (COUNT and BITS are
# then read from it), with QUERIES_FILE: a queries .npy (QUERIES read from it). MILAN_INDEX: a
# milan index directory holding exactly the codes, in order; opened read-only, never deleted.
CODES="${CODES:-}"
CODES_GIVEN="$([[ -n "$CODES" ]] && echo 1 || echo 0)"
QUERIES_FILE="${QUERIES_FILE:-}"
MILAN_INDEX="${MILAN_INDEX:-}"

JOIN="${JOIN:-0}"               # 1: time the self-join (index duplicates) instead of queries
THREADS="${THREADS:-$(nproc)}"  # JOIN: threads for every library
RUNS="${RUNS:-3}"               # JOIN: timed runs per radius (the median is reported)
FLAT_SAMPLE="${FLAT_SAMPLE:-20000}"  # JOIN: IndexBinaryFlat queries, time scaled to all codes; 0: all
SKIP_FLAT="${SKIP_FLAT:-0}"     # JOIN: 1 leaves IndexBinaryFlat out

# One thread everywhere (the self-join: THREADS everywhere).
if [[ "$JOIN" == 1 ]]; then
    export OMP_NUM_THREADS="$THREADS" OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 RAYON_NUM_THREADS="$THREADS"
else
    export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 RAYON_NUM_THREADS=1
fi

PIN=()
if [[ -n "$CPU" ]]; then
    PIN=(taskset -c "$CPU")
fi

log() { echo "== $*" >&2; }
now() { date +%s.%N; }
absolute() { echo "$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"; }

# The shape of a uint8 [n, bytes] .npy file, printed "n bytes" (format versions 1 to 3).
npy_shape() {
    python3 - "$1" <<'PY'
import ast, struct, sys
with open(sys.argv[1], "rb") as f:
    data = f.read(1 << 16)
if data[:6] != b"\x93NUMPY":
    sys.exit(f"{sys.argv[1]}: not a .npy file")
if data[6] == 1:
    (length,), start = struct.unpack("<H", data[8:10]), 10
else:
    (length,), start = struct.unpack("<I", data[8:12]), 12
header = ast.literal_eval(data[start:start + length].decode("latin1"))
if header["descr"] not in ("|u1", "<u1", "u1") or header["fortran_order"] or len(header["shape"]) != 2:
    sys.exit(f"{sys.argv[1]}: not a uint8 [n, bytes] array: {header}")
print(*header["shape"])
PY
}

if [[ -n "$CODES" ]]; then
    [[ -f "$CODES" ]] || { log "CODES=$CODES: no such file"; exit 2; }
    if [[ -z "$QUERIES_FILE" && "$JOIN" != 1 ]]; then
        log "CODES is set: set QUERIES_FILE too (the queries drawn with those codes)"
        exit 2
    fi
    shape="$(npy_shape "$CODES")"
    rows="${shape% *}" width="${shape#* }"
    if [[ "$COUNT" != "$rows" || "$BITS" != $((width * 8)) ]]; then
        log "CODES holds $rows codes of $((width * 8)) bits: using those, not COUNT=$COUNT BITS=$BITS"
    fi
    COUNT="$rows" BITS=$((width * 8))
    CODES="$(absolute "$CODES")"
fi
if [[ -n "$QUERIES_FILE" ]]; then
    [[ -f "$QUERIES_FILE" ]] || { log "QUERIES_FILE=$QUERIES_FILE: no such file"; exit 2; }
    shape="$(npy_shape "$QUERIES_FILE")"
    rows="${shape% *}" width="${shape#* }"
    if [[ "$BITS" != $((width * 8)) ]]; then
        log "QUERIES_FILE holds codes of $((width * 8)) bits, not $BITS"
        exit 2
    fi
    QUERIES="$rows"
    QUERIES_FILE="$(absolute "$QUERIES_FILE")"
fi
if [[ -n "$MILAN_INDEX" ]]; then
    [[ -f "$MILAN_INDEX/milan.redb" ]] || { log "MILAN_INDEX=$MILAN_INDEX: no milan index there"; exit 2; }
    MILAN_INDEX="$(cd "$MILAN_INDEX" && pwd)"
fi

mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
rm -f "$OUT"/{run.json,milan.json,milan-import.json,mihrs.json,faiss.jsonl,results.jsonl}
rm -f "$OUT"/{milan-join.json,mihrs-join.json,faiss-join.jsonl,join-results.jsonl}

if [[ -n "${MILAN_BIN:-}" ]]; then
    MILAN="$(absolute "$MILAN_BIN")"
    log "using the milan binary $MILAN (MILAN_BIN set: not building)"
else
    log "building milan (release)"
    cargo build --release --quiet
    MILAN="$(absolute "${CARGO_TARGET_DIR:-$ROOT/target}/release/milan")"
fi

log "building the mih-rs harness (release, x86-64-v2)"
MIHRS_OK=1
(
    cd benches/compare/mihrs
    CARGO_TARGET_DIR="$ROOT/target/compare-mihrs" RUSTFLAGS="-C target-cpu=x86-64-v2" \
        cargo build --release --quiet
) || { log "warning: the mih-rs harness did not build; its row will be empty"; MIHRS_OK=0; }
MIHRS="$ROOT/target/compare-mihrs/release/milan-compare-mihrs"

FAISS_OK=1
if [[ "$SKIP_FAISS" == 1 ]]; then
    log "SKIP_FAISS=1: leaving FAISS out"
    FAISS_OK=0
else
    log "preparing the Python environment in $VENV (faiss-cpu $FAISS_VERSION, numpy)"
    if [[ ! -x "$VENV/bin/python" ]]; then
        python3 -m venv "$VENV"
    fi
    if ! "$VENV/bin/python" -c "import faiss, numpy, sys; sys.exit(faiss.__version__ != '$FAISS_VERSION')" 2>/dev/null; then
        "$VENV/bin/pip" install --quiet "faiss-cpu==$FAISS_VERSION" numpy \
            || { log "warning: could not install faiss-cpu $FAISS_VERSION; its rows will be empty"; FAISS_OK=0; }
    fi
fi
PY="$VENV/bin/python"

if [[ -n "$CODES" ]]; then
    log "using the codes in $CODES ($COUNT codes of $BITS bits)${QUERIES_FILE:+ and the queries in $QUERIES_FILE}"
else
    # The codes are drawn before the queries: the same settings give the same codes, and the
    # same queries as benches/suite.sh's (SEED=1, QUERIES=1000), whatever QUERIES is.
    log "generating $COUNT ${BITS}-bit codes and $QUERIES queries in $OUT"
    rm -f "$OUT/codes.npy" "$OUT/queries.npy"
    "$MILAN" bench generate --bits "$BITS" --count "$COUNT" --centres "$CENTRES" --flip "$FLIP" \
        --seed "$SEED" --out "$OUT/codes.npy" --queries "$QUERIES" --queries-out "$OUT/queries.npy" >&2
    CODES="$OUT/codes.npy"
    if [[ -n "$QUERIES_FILE" ]]; then
        log "using the queries in $QUERIES_FILE (QUERIES_FILE set), not the generated ones"
    else
        QUERIES_FILE="$OUT/queries.npy"
    fi
fi

if [[ -n "${MILAN_BIN:-}" ]]; then
    MILAN_VERSION="binary $MILAN"
else
    MILAN_VERSION="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    git diff --quiet HEAD -- src index-format Cargo.toml Cargo.lock 2>/dev/null || MILAN_VERSION+="-dirty"
fi
json_bool() { if [[ "$1" == 1 ]]; then echo true; else echo false; fi; }
cat >"$OUT/run.json" <<EOF
{"bits": $BITS, "count": $COUNT, "centres": $CENTRES, "flip": $FLIP, "queries": $QUERIES, "seed": $SEED, "top_k": $TOP_K, "radius": "$RADIUS", "nhash": $NHASH, "nflip": $NFLIP, "cpu": "${CPU}", "milan_version": "$MILAN_VERSION", "skip_faiss": $(json_bool "$SKIP_FAISS"), "codes_given": $(json_bool "$CODES_GIVEN"), "codes_file": "$CODES", "queries_file": "$QUERIES_FILE", "milan_index": "${MILAN_INDEX:-$OUT/milan-index}", "milan_index_reused": $(json_bool "$([[ -n "$MILAN_INDEX" ]] && echo 1)"), "started": "$(date -u +%Y-%m-%dT%H:%M:%SZ)", "cpu_model": "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//; s/"//g')"}
EOF

if [[ -n "$MILAN_INDEX" ]]; then
    INDEX="$MILAN_INDEX"
    log "milan: reusing the index in $INDEX (MILAN_INDEX set: no create, no import)"
    info="$("$MILAN" index info "$INDEX" --json \
        | python3 -c 'import json, sys; i = json.load(sys.stdin); print(i["len"], i["bits"])')"
    if [[ "$info" != "$COUNT $BITS" ]]; then
        log "MILAN_INDEX holds ${info% *} codes of ${info#* } bits; the codes file $COUNT of $BITS bits"
        exit 2
    fi
    if [[ -n "$SUBSTRINGS" ]]; then
        log "note: SUBSTRINGS does not apply to a reused index"
    fi
    echo '{"import_s": null}' >"$OUT/milan-import.json"
else
    log "milan: create + import"
    INDEX="$OUT/milan-index"
    rm -rf "$INDEX"
    CREATE_ARGS=(--bits "$BITS" --expected-size "$COUNT")
    if [[ -n "$SUBSTRINGS" ]]; then
        CREATE_ARGS+=(--substrings "$SUBSTRINGS")
    fi
    "$MILAN" index create "$INDEX" "${CREATE_ARGS[@]}" >&2
    started=$(now)
    "${PIN[@]}" "$MILAN" index import "$INDEX" --codes "$CODES" --quiet >&2
    finished=$(now)
    awk -v a="$started" -v b="$finished" 'BEGIN { printf "{\"import_s\": %.6f}\n", b - a }' >"$OUT/milan-import.json"
fi

if [[ "$JOIN" == 1 ]]; then
    log "milan: bench duplicates ($THREADS threads)"
    "${PIN[@]}" "$MILAN" bench duplicates "$INDEX" --radius "$RADIUS" --runs "$RUNS" --json \
        >"$OUT/milan-join.json" || log "warning: milan bench duplicates failed"
    EXACT="$(python3 -c 'import json,sys; print(",".join(str(j["pairs"]) for j in json.load(open(sys.argv[1]))["joins"]))' "$OUT/milan-join.json" 2>/dev/null || true)"
    if [[ "$MIHRS_OK" == 1 ]]; then
        log "mih-rs: a range search around every code ($THREADS threads)"
        MIHRS_ARGS=(--join --codes "$CODES" --radius "$RADIUS" --threads "$THREADS" --runs "$RUNS")
        if [[ -n "$BLOCKS" ]]; then
            MIHRS_ARGS+=(--blocks "$BLOCKS")
        fi
        "${PIN[@]}" "$MIHRS" "${MIHRS_ARGS[@]}" >"$OUT/mihrs-join.json" || log "warning: mih-rs failed"
    fi
    if [[ "$FAISS_OK" == 1 ]]; then
        log "faiss: range_search of every code ($THREADS threads)"
        FAISS_ARGS=(--codes "$CODES" --radius "$RADIUS" --nhash "$NHASH" --nflip "$NFLIP"
            --threads "$THREADS" --runs 1 --flat-sample "$FLAT_SAMPLE" --exact-pairs "$EXACT")
        if [[ "$SKIP_FLAT" == 1 ]]; then
            FAISS_ARGS+=(--skip-flat)
        fi
        "${PIN[@]}" "$PY" benches/compare/faiss_join.py "${FAISS_ARGS[@]}" >"$OUT/faiss-join.jsonl" \
            || log "warning: faiss failed"
    fi
    python3 benches/compare/join_report.py "$OUT"
    log "raw JSON: $OUT/join-results.jsonl"
    exit 0
fi

log "milan: bench search"
"${PIN[@]}" "$MILAN" bench search "$INDEX" --codes "$QUERIES_FILE" --top-k "$TOP_K" --radius "$RADIUS" \
    --json >"$OUT/milan.json" || log "warning: milan bench search failed"

if [[ "$MIHRS_OK" == 1 ]]; then
    log "mih-rs"
    MIHRS_ARGS=(--codes "$CODES" --queries "$QUERIES_FILE" --top-k "$TOP_K" --radius "$RADIUS"
        --index-file "$OUT/mihrs.index")
    if [[ -n "$BLOCKS" ]]; then
        MIHRS_ARGS+=(--blocks "$BLOCKS")
    fi
    "${PIN[@]}" "$MIHRS" "${MIHRS_ARGS[@]}" >"$OUT/mihrs.json" || log "warning: mih-rs failed"
fi

if [[ "$FAISS_OK" == 1 ]]; then
    log "faiss"
    "${PIN[@]}" "$PY" benches/compare/faiss_bench.py --codes "$CODES" --queries "$QUERIES_FILE" \
        --top-k "$TOP_K" --radius "$RADIUS" --nhash "$NHASH" --nflip "$NFLIP" --index-dir "$OUT" \
        >"$OUT/faiss.jsonl" || log "warning: faiss failed"
fi

python3 benches/compare/report.py "$OUT"
log "raw JSON: $OUT/results.jsonl"
