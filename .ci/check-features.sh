#!/usr/bin/env bash
# The crate's features keep what they promise: the engine alone (`default-features = false`)
# pulls none of the crates that extraction, training or the command line need, and `images` and
# `train` pull none of the command line's. Reads `cargo tree` (normal dependencies only), and
# names each offending crate with the path that pulls it in.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO=${CARGO:-cargo}
CLI_ONLY="clap anyhow indicatif ctrlc tempfile"
IMAGES_OR_TRAIN="ort ort-sys image ndarray ndarray-npy rand rand_chacha rand_distr blake3 base64 serde_json"
failed=0

# check FEATURE-FLAGS... -- FORBIDDEN-CRATES...
check() {
    local flags=() forbidden=()
    while [ "$1" != "--" ]; do flags+=("$1"); shift; done
    shift
    forbidden=("$@")
    local crates bad=0
    crates=$($CARGO tree --locked -e normal -p milan "${flags[@]}" --prefix none --format '{lib}' | sed 's/ (\*)$//' | sort -u)
    for crate in "${forbidden[@]}"; do
        # {lib} names the library target: dashes in a package name are underscores there.
        if grep -qx "${crate//-/_}" <<<"$crates"; then
            echo "error: milan ${flags[*]} depends on '$crate', which it must not; pulled in by:" >&2
            $CARGO tree --locked -e normal -p milan "${flags[@]}" -i "$crate" >&2 || true
            bad=1
        fi
    done
    if [ $bad = 0 ]; then
        echo "milan ${flags[*]}: $(wc -l <<<"$crates") crates, none of: ${forbidden[*]}"
    fi
    failed=$((failed | bad))
}

# serde (its derive) is the engine's optional `serde` feature, not the engine's own.
check --no-default-features -- $CLI_ONLY $IMAGES_OR_TRAIN serde py_literal
check --no-default-features --features serde -- $CLI_ONLY $IMAGES_OR_TRAIN
check --no-default-features --features images -- $CLI_ONLY
check --no-default-features --features train -- $CLI_ONLY
exit $failed
