#!/usr/bin/env bash
# Build milan's real image extractor: target/models/inception_v3.onnx.
#
# The model is nsfwjs 4.3.0's InceptionV3 (MIT), fetched from the npm registry
# (the only place a trained InceptionV3 is reachable offline), converted from its
# TF.js layers format to ONNX by convert_nsfwjs.py and checked against TF.js's
# own outputs (tests/data/nsfwjs_reference.json) by check_model.py.
#
# Needs python3 (with venv), pip, node and npm. Everything it writes is under
# target/ (git-ignored): target/model-venv, target/model-work, target/models.
#
#   scripts/model/make_model.sh              build (skipped if up to date)
#   FORCE=1 scripts/model/make_model.sh      rebuild even if up to date
#   REFERENCE=1 scripts/model/make_model.sh  also regenerate tests/data/nsfwjs_reference.json
#                                            with TF.js (pure-JS CPU backend, ~1-2 min)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/scripts/model"
VENV="$ROOT/target/model-venv"
WORK="$ROOT/target/model-work"
OUT="$ROOT/target/models/inception_v3.onnx"
PY="$VENV/bin/python"

NSFWJS=nsfwjs@4.3.0
TARBALL=nsfwjs-4.3.0.tgz
# Pinned so a re-published or tampered tarball cannot slip in unnoticed
# (the same bytes as the registry's dist.integrity for nsfwjs 4.3.0).
TARBALL_SHA256=4496790efc9bdc6f3e85a826a8e482c1fa1e9db4b3d18c095e98cc0c73cfb12f
ORT_VERSION=1.31.1

STEP="starting"
NEW=""  # the model being built, removed on failure
fail() {
  [[ -n "$NEW" ]] && rm -f "$NEW" "$NEW.tmp"
  echo "make_model.sh: FAILED while $STEP${1:+: $1}" >&2
  exit 1
}
trap 'fail' ERR
step() { STEP="$1"; echo "==> $1"; }

# Up to date: the model exists and is newer than the code that makes it.
if [[ "${FORCE:-0}" != 1 && "${REFERENCE:-0}" != 1 && -f "$OUT" \
      && "$OUT" -nt "$HERE/convert_nsfwjs.py" && "$OUT" -nt "$HERE/make_model.sh" ]]; then
  echo "model is up to date (FORCE=1 rebuilds): $OUT"
  exit 0
fi

STEP="checking prerequisites"
for tool in python3 node npm sha256sum tar; do
  command -v "$tool" >/dev/null || fail "'$tool' is not installed"
done

step "creating the Python environment in target/model-venv"
# A venv whose creation failed half way (no ensurepip) has python but no pip: redo it.
if ! "$PY" -m pip --version >/dev/null 2>&1; then
  rm -rf "$VENV"
  python3 -m venv "$VENV" \
    || fail "python3 -m venv failed (on Debian/Ubuntu: apt-get install python3-venv)"
fi
# Skip pip when the right versions are already there: it is the slowest step.
if ! "$PY" -c "import numpy, onnx, onnxruntime; assert onnxruntime.__version__ == '$ORT_VERSION'" 2>/dev/null; then
  "$PY" -m pip install --quiet --disable-pip-version-check numpy onnx "onnxruntime==$ORT_VERSION" \
    || fail "pip install numpy onnx onnxruntime==$ORT_VERSION failed"
fi

step "fetching $NSFWJS from the npm registry"
mkdir -p "$WORK"
if [[ ! -f "$WORK/$TARBALL" ]] || ! echo "$TARBALL_SHA256  $WORK/$TARBALL" | sha256sum --check --status; then
  rm -f "$WORK/$TARBALL"
  (cd "$WORK" && npm pack --loglevel=error "$NSFWJS" >/dev/null) || fail "npm pack $NSFWJS failed"
fi
echo "$TARBALL_SHA256  $WORK/$TARBALL" | sha256sum --check --status \
  || fail "$TARBALL does not have the pinned sha256 $TARBALL_SHA256"

step "unpacking the InceptionV3 layers model"
PKG="$WORK/nsfwjs-4.3.0"
rm -rf "$PKG" && mkdir -p "$PKG"
# Only the model folder: model.min.js and group1-shard{1..6}of6.min.js.
tar -xzf "$WORK/$TARBALL" -C "$PKG" package/dist/models/inception_v3
MODEL_DIR="$PKG/package/dist/models/inception_v3"
[[ -f "$MODEL_DIR/model.min.js" && $(ls "$MODEL_DIR"/group1-shard*of6.min.js | wc -l) == 6 ]] \
  || fail "the tarball lacks model.min.js or the six weight shards"

if [[ "${REFERENCE:-0}" == 1 ]]; then
  step "regenerating tests/data/nsfwjs_reference.json with TF.js"
  REF="$ROOT/target/model-ref"
  mkdir -p "$REF"
  cp "$HERE/package.json" "$HERE/package-lock.json" "$REF/"
  (cd "$REF" && npm ci --loglevel=error --no-audit --no-fund) || fail "npm ci of the pinned TF.js + nsfwjs failed"
  node "$HERE/tfjs_reference.mjs" --modules "$REF/node_modules" \
    --out "$ROOT/tests/data/nsfwjs_reference.json"
fi

step "converting to ONNX"
mkdir -p "$(dirname "$OUT")"
# Convert and check a new file; only a checked model replaces $OUT, so a failed
# run never leaves a file that the up-to-date test above would trust.
NEW="$OUT.new.onnx"
rm -f "$NEW"
"$PY" "$HERE/convert_nsfwjs.py" "$MODEL_DIR" "$NEW"

step "checking the ONNX model against TF.js's reference outputs"
"$PY" "$HERE/check_model.py" "$NEW" "$ROOT/tests/data/nsfwjs_reference.json" \
  || fail "the converted model does not match tests/data/nsfwjs_reference.json"
mv -f "$NEW" "$OUT"
NEW=""

echo "model ready: $OUT ($(du -h "$OUT" | cut -f1))"
