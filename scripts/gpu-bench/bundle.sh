#!/usr/bin/env bash
# Packs everything the GPU benchmark needs into one archive, split into parts of at most
# PART_BYTES (default 58 MB), for a GPU machine that reaches no package registry and takes files
# in limited sizes: the release milan binary, the CUDA build of ONNX Runtime 1.31.1 (its three
# shared libraries, from the onnxruntime-gpu wheel on PyPI), the InceptionV3 model source
# (nsfwjs 4.3.0, as `make model` fetches it) and labelled source images (Fashion-MNIST). The
# model is converted on the GPU machine by the repository's own scripts, which travel with it.
#
#   scripts/gpu-bench/bundle.sh [PART_BYTES]     -> target/gpu-bench/parts/part.aa, part.ab, ...
#
# Then, on the GPU machine, with the parts in one folder:
#   scripts/gpu-bench/run.sh PARTS_DIR OUT_DIR
set -euo pipefail
cd "$(dirname "$0")/../.."
part_bytes=${1:-58000000}
work=target/gpu-bench
mkdir -p "$work"

echo "== milan (release)"
cargo build --release --locked
cp target/release/milan "$work/milan" && strip "$work/milan"

echo "== ONNX Runtime 1.31.1, CUDA build"
if [ ! -s "$work/ort-gpu.tar.xz" ]; then
  wheel_dir=$(mktemp -d)
  trap 'rm -rf "$wheel_dir"' EXIT
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 312 \
    --implementation cp --platform manylinux_2_28_x86_64 onnxruntime-gpu==1.31.1 -d "$wheel_dir"
  (cd "$wheel_dir" && unzip -q -j onnxruntime_gpu-*.whl 'onnxruntime/capi/libonnxruntime*' -x '*tensorrt*')
  # TensorRT's provider is left out: not used, and the largest file.
  tar -C "$wheel_dir" -cf - libonnxruntime.so.1.31.1 libonnxruntime_providers_cuda.so \
    libonnxruntime_providers_shared.so | xz -9 -T0 > "$work/ort-gpu.tar.xz.partial"
  mv "$work/ort-gpu.tar.xz.partial" "$work/ort-gpu.tar.xz"
fi

echo "== the model source and the source images"
bash scripts/model/make_model.sh >/dev/null
model_dir=target/model-work/nsfwjs-4.3.0/package/dist/models/inception_v3
rm -rf "$work/sources"
python3 scripts/fashion_mnist_images.py --per-class 100 --out "$work/sources"
tar -cf - -C "$work" milan sources -C "$(pwd)/$(dirname "$model_dir")" inception_v3 \
  | xz -9 -T0 > "$work/rest.tar.xz"

echo "== parts of at most $part_bytes bytes"
rm -rf "$work/parts" && mkdir -p "$work/parts"
tar -cf - -C "$work" ort-gpu.tar.xz rest.tar.xz | split -b "$part_bytes" - "$work/parts/part."
ls -l "$work/parts"
