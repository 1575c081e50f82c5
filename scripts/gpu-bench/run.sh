#!/usr/bin/env bash
# The GPU benchmark, on a machine with an NVIDIA GPU, from the parts bundle.sh made: unpacks them,
# converts the model (float32 and fp16) with the repository's scripts, writes test images, then
# measures `milan bench extract` (the bare model against the whole pipeline, with where the time
# goes) for each model and batch size, a whole `milan index add` process for each model, input
# in ordinary memory and through an I/O binding at the largest batch, the GPU's memory, and last
# the fp16 check on the GPU.
#
#   scripts/gpu-bench/run.sh PARTS_DIR OUT_DIR
#
# Needs python3 (or PYTHON) with numpy and onnx (model conversion), and the CUDA 13 and cuDNN 9 libraries:
# found in python3's site-packages (nvidia/cu13/lib, nvidia/cudnn/lib) unless MILAN_CUDA_LIB_DIR
# and MILAN_CUDNN_LIB_DIR name them. Settings (environment): DEVICE (cuda), COUNT (images for
# bench extract, 6144), IMAGES (images written, all of which `index add` takes; COUNT),
# BATCHES ("64 128 256"), CHECK_SECONDS (limit on the fp16 check, 200; 0 skips it), COMPARE (0
# skips the runs with ordinary memory and with the I/O binding).
# Every measurement runs even when another fails; OUT_DIR gets results.jsonl (one JSON object a
# run), run.log, fp16-check.log and machine.txt.
set -uo pipefail
parts=${1:?usage: run.sh PARTS_DIR OUT_DIR}
out=${2:?usage: run.sh PARTS_DIR OUT_DIR}
repo=$(cd "$(dirname "$0")/../.." && pwd)
device=${DEVICE:-cuda}
count=${COUNT:-6144}
# Images written, all of which `index add` takes (bench extract takes the first COUNT).
written=${IMAGES:-$count}
batches=${BATCHES:-64 128 256}
work=${WORK:-/tmp/milan-gpu-bench}
python=${PYTHON:-python3}
mkdir -p "$out"
exec > >(tee -a "$out/run.log") 2>&1
started=$SECONDS
say() { echo "[$((SECONDS - started)) s] $*"; }

say "unpacking"
rm -rf "$work" && mkdir -p "$work/ort"
cat "$parts"/part.* | tar -xf - -C "$work" || { say "the parts do not make a whole archive"; exit 2; }
# Python's lzma where the xz tool is missing.
unxz_to_stdout() {
  if command -v xz >/dev/null; then xz -dc "$1"
  else "$python" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), sys.stdout.buffer)' "$1"; fi
}
unxz_to_stdout "$work/ort-gpu.tar.xz" | tar -xf - -C "$work/ort" && unxz_to_stdout "$work/rest.tar.xz" | tar -xf - -C "$work" \
  || { say "cannot unpack"; exit 2; }
milan="$work/milan"
export MILAN_ORT_LIB="$work/ort/libonnxruntime.so.1.31.1"

if [ "$device" != cpu ] && [ -z "${MILAN_CUDA_LIB_DIR:-}" ]; then
  for site in $(python3 -c 'import site, sys; print(" ".join(site.getsitepackages() + sys.path))'); do
    if [ -d "$site/nvidia/cu13/lib" ] && [ -d "$site/nvidia/cudnn/lib" ]; then
      export MILAN_CUDA_LIB_DIR="$site/nvidia/cu13/lib" MILAN_CUDNN_LIB_DIR="$site/nvidia/cudnn/lib"
      break
    fi
  done
fi
if [ -n "${MILAN_CUDA_LIB_DIR:-}" ]; then
  export LD_LIBRARY_PATH="$MILAN_CUDA_LIB_DIR:$MILAN_CUDNN_LIB_DIR:${LD_LIBRARY_PATH:-}"
fi
{
  echo "cores: $(nproc)"; grep -m1 "model name" /proc/cpuinfo
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  echo "CUDA libraries: ${MILAN_CUDA_LIB_DIR:-none} ${MILAN_CUDNN_LIB_DIR:-none}"
} > "$out/machine.txt"
cat "$out/machine.txt"

say "converting the model"
"$python" "$repo/scripts/model/convert_nsfwjs.py" "$work/inception_v3" "$work/inception_v3.onnx" >/dev/null \
  && "$python" "$repo/scripts/model/to_fp16.py" "$work/inception_v3.onnx" "$work/inception_v3_fp16.onnx" >/dev/null \
  || { say "model conversion failed"; exit 2; }

say "writing $written test images"
"$milan" bench images "$work/sources" --out "$work/images" --count "$written" --size 256 || exit 2
du -sh "$work/images"

# Runs "$@" while sampling the GPU's memory; appends the command's JSON, with the peak memory in
# use and the process's wall time, to results.jsonl.
measure() {
  local name=$1; shift
  local samples="$work/memory.$name"
  : > "$samples"
  local sampler=""
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$samples" 2>/dev/null &
    sampler=$!
  fi
  local begin=$SECONDS json
  json=$("$@" 2> "$work/stderr.$name" | tail -1)
  local status=$? wall=$((SECONDS - begin))
  if [ -n "$sampler" ]; then kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null; fi
  local peak
  peak=$(sort -n "$samples" | tail -1)
  if [ "$status" != 0 ] || [ -z "$json" ]; then
    say "$name FAILED (exit $status): $(tail -3 "$work/stderr.$name")"
    echo "{\"run\":\"$name\",\"failed\":true}" >> "$out/results.jsonl"
    return 1
  fi
  echo "{\"run\":\"$name\",\"process_wall_s\":$wall,\"gpu_peak_mib\":${peak:-null},\"result\":$json}" >> "$out/results.jsonl"
  say "$name: $json"
}

for variant in fp32 fp16; do
  model="$work/inception_v3.onnx"
  [ "$variant" = fp16 ] && model="$work/inception_v3_fp16.onnx"
  for batch in $batches; do
    measure "extract-$variant-b$batch" "$milan" bench extract --images "$work/images" --count "$count" \
      --batch-size "$batch" --model "$model" --device "$device" --json \
      || measure "extract-$variant-b$batch-plain-memory" "$milan" bench extract --images "$work/images" \
        --count "$count" --batch-size "$batch" --model "$model" --device "$device" --json --plain-memory
  done
  # A whole process, as a user runs it: start-up, the batch size chosen by device, commits.
  "$milan" head init --lsh --bits 64 --seed 1 --model "$model" --device cpu --out "$work/$variant.head" >/dev/null
  rm -rf "$work/index-$variant"
  "$milan" index create "$work/index-$variant" --model "$model" --head "$work/$variant.head" >/dev/null
  measure "index-add-$variant" "$milan" index add "$work/index-$variant" "$work/images" -r \
    --device "$device" --json --quiet
done
# What pinned memory and the I/O binding each bring, at the largest batch (COMPARE=0 skips).
last=${batches##* }
[ "${COMPARE:-1}" = 0 ] || for variant in fp16 fp32; do
  model="$work/inception_v3.onnx"
  [ "$variant" = fp16 ] && model="$work/inception_v3_fp16.onnx"
  for how in plain-memory io-binding; do
    measure "extract-$variant-b$last-$how" "$milan" bench extract --images "$work/images" --count "$count" \
      --batch-size "$last" --model "$model" --device "$device" --json "--$how"
  done
done

if [ "${CHECK_SECONDS:-200}" != 0 ]; then
  say "the fp16 check on $device"
  timeout "${CHECK_SECONDS:-200}" python3 "$repo/scripts/model/check_fp16.py" --milan "$milan" \
    --fp32 "$work/inception_v3.onnx" --fp16 "$work/inception_v3_fp16.onnx" --images "$work/sources" \
    --device "$device" --batch-size 256 --work "$work/check" > "$out/fp16-check.log" 2>&1
  say "fp16 check exit $?"; tail -25 "$out/fp16-check.log"
fi
say "done"
