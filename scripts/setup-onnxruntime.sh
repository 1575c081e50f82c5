#!/usr/bin/env bash
# Fetches ONNX Runtime 1.31.1 from its PyPI wheel into .onnxruntime/ (git-ignored), without a
# virtual environment: `cpu` (default) takes libonnxruntime from the onnxruntime wheel; `gpu` takes
# the CUDA build from onnxruntime-gpu, with the CUDA 13 and cuDNN 9 libraries it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:-cpu}
version=1.31.1
dest=.onnxruntime/$kind
if [ -e "$dest/libonnxruntime.so" ]; then
  echo "ONNX Runtime $version ($kind) is already in $dest"
  exit 0
fi
python=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pyver=$("$python" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
download() {
  "$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$pyver" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 "$@" -d "$work"
}
mkdir -p "$dest"
case "$kind" in
  cpu)
    download "onnxruntime==$version"
    wheel=$(ls "$work"/onnxruntime-*.whl)
    ;;
  gpu)
    download "onnxruntime-gpu==$version"
    wheel=$(ls "$work"/onnxruntime_gpu-*.whl)
    ;;
  *)
    echo "usage: $0 [cpu|gpu]" >&2
    exit 2
    ;;
esac
# Only the shared libraries: the Python extension is not needed.
"$python" - "$wheel" "$dest" <<'PY'
import sys, zipfile, os
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        base = os.path.basename(name)
        if name.startswith("onnxruntime/capi/") and base.startswith("libonnxruntime") and ".so" in base:
            if "tensorrt" in base:
                continue  # TensorRT is not used, and it is the largest file
            with z.open(name) as src, open(os.path.join(dest, base), "wb") as out:
                out.write(src.read())
PY
ln -sf "libonnxruntime.so.$version" "$dest/libonnxruntime.so"
if [ "$kind" = gpu ]; then
  # The CUDA and cuDNN runtime libraries, from NVIDIA's wheels (about 2 GB).
  "$python" -m pip install --quiet --target "$dest/site-packages" "onnxruntime-gpu[cuda,cudnn]==$version"
  echo "CUDA libraries: $dest/site-packages/nvidia (milan adds them to the library search path)"
fi
echo "ONNX Runtime $version ($kind) is in $dest"
