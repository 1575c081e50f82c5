#!/usr/bin/env python3
"""Check the fp16 variant of an extractor against the float32 model, through milan.

On labelled images (one folder per class; by default the first N Fashion-MNIST training images
of each class, written by scripts/fashion_mnist_images.py) it runs `milan extract` with both
models, with the same flags and device, and measures (docs/models.md, "The fp16 variant"):

  1. per image, the relative error ||f16 - f32|| / ||f32|| of the features: median and max;
     fails when the max exceeds --max-rel-error;
  2. per bit, the fraction of code bits equal between the two variants' codes of the test
     split (`milan eval --export`), with a 64-bit LSH head (`milan head init --lsh`) and with a
     64-bit MiLaN head trained on the float32 features (`milan train`); fails below
     --min-agreement;
  3. mAP@20 of the trained head (`milan eval --json`, the papers' protocol) on the float32 and
     on the fp16 features; fails when they differ by more than --max-map-change.

Both heads are bound to the float32 model, as an index is. The fp16 features reach them through
a copy of their DATA folder without extractor.json: features of unknown origin, of which milan
checks only the dimension.

Standard library only, so that it runs wherever milan does. Prints the figures; exits 1 naming
every bound exceeded, 2 when a step fails.

Usage: check_fp16.py [--milan BIN] [--fp32 M32] [--fp16 M16] [--images DIR | --per-class N]
                     [--device DEV] [--work DIR]
"""

import argparse
import array
import ast
import hashlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Chosen from the measurements in docs/models.md, with margin.
MAX_REL_ERROR = 1e-2
MIN_AGREEMENT = 0.99
MAX_MAP_CHANGE = 0.005
BITS = "64"


class Failed(Exception):
    """A step failed: the message says which."""


def milan(binary, *args):
    cmd = [binary, *args]
    print("$ milan " + " ".join(args), flush=True)
    done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise Failed(f"milan {' '.join(args)} exited with {done.returncode}:\n{done.stderr.strip()}")
    return done.stdout


def read_npy(path):
    """(shape, flat array.array) of a C-order .npy of float32, int64 or uint8."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:6] != b"\x93NUMPY":
        raise Failed(f"{path}: not a .npy file")
    major = raw[6]
    size_bytes = 2 if major == 1 else 4
    header_len = int.from_bytes(raw[8:8 + size_bytes], "little")
    start = 8 + size_bytes + header_len
    header = ast.literal_eval(raw[8 + size_bytes:start].decode("latin1"))
    codes = {"<f4": "f", "<i8": "q", "|u1": "B"}
    if header["fortran_order"] or header["descr"] not in codes:
        raise Failed(f"{path}: unexpected array {header}")
    data = array.array(codes[header["descr"]])
    data.frombytes(raw[start:])
    if sys.byteorder != "little" and data.itemsize > 1:
        data.byteswap()
    return header["shape"], data


def rows(path):
    shape, data = read_npy(path)
    width = shape[1]
    return [data[i * width:(i + 1) * width] for i in range(shape[0])]


def file_hash(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def read_text(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def relative_errors(dir32, dir16):
    a, b = rows(os.path.join(dir32, "features.npy")), rows(os.path.join(dir16, "features.npy"))
    errors = []
    for x, y in zip(a, b):
        if not all(math.isfinite(v) for v in y):
            raise Failed("the fp16 model gave non-finite features (float16 overflow)")
        norm = math.sqrt(sum(v * v for v in x))
        errors.append(math.sqrt(sum((u - v) ** 2 for u, v in zip(x, y))) / norm)
    return errors


def bit_agreement(codes32, codes16):
    a, b = rows(codes32), rows(codes16)
    equal_bits = total_bits = equal_codes = 0
    for x, y in zip(a, b):
        differing = sum(bin(u ^ v).count("1") for u, v in zip(x, y))
        equal_bits += 8 * len(x) - differing
        total_bits += 8 * len(x)
        equal_codes += differing == 0
    return equal_bits / total_bits, equal_codes / len(a), len(a)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--milan", default=os.environ.get("MILAN", os.path.join(REPO, "target/release/milan")),
                    help="the milan binary (default: $MILAN, else target/release/milan)")
    ap.add_argument("--fp32", default=os.path.join(REPO, "target/models/inception_v3.onnx"))
    ap.add_argument("--fp16", default=os.path.join(REPO, "target/models/inception_v3_fp16.onnx"))
    ap.add_argument("--images", help="labelled images, one folder per class (default: Fashion-MNIST, "
                    "written to WORK/images)")
    ap.add_argument("--per-class", type=int, default=100,
                    help="Fashion-MNIST images per class when --images is not given (default 100)")
    ap.add_argument("--device", default=os.environ.get("MILAN_DEVICE", "cpu"),
                    help="milan's --device for both models (default: $MILAN_DEVICE, else cpu)")
    ap.add_argument("--batch-size", default="16", help="milan extract --batch-size (default 16)")
    ap.add_argument("--work", default=os.path.join(REPO, "target/fp16-check"),
                    help="folder for everything written (default target/fp16-check)")
    ap.add_argument("--max-rel-error", type=float, default=MAX_REL_ERROR)
    ap.add_argument("--min-agreement", type=float, default=MIN_AGREEMENT)
    ap.add_argument("--max-map-change", type=float, default=MAX_MAP_CHANGE)
    args = ap.parse_args()
    work = args.work
    os.makedirs(work, exist_ok=True)
    started = time.time()
    # A binary rebuilt during the check would compare two builds, not two models.
    binary = file_hash(args.milan)

    images = args.images
    if images is None:
        images = os.path.join(work, "images")
        shutil.rmtree(images, ignore_errors=True)
        subprocess.run([sys.executable, os.path.join(REPO, "scripts/fashion_mnist_images.py"),
                        "--per-class", str(args.per_class), "--out", images], check=True)

    data, seconds = {}, {}
    for variant, model in (("fp32", args.fp32), ("fp16", args.fp16)):
        data[variant] = os.path.join(work, variant)
        shutil.rmtree(data[variant], ignore_errors=True)
        t = time.time()
        milan(args.milan, "extract", "--model", model, "--images", images, "--label-from-dir",
              "--out", data[variant], "--device", args.device, "--batch-size", args.batch_size,
              "--quiet")
        seconds[variant] = time.time() - t

    # Same items in the same order, the same contract but for the model file.
    for name in ("paths.txt", "labels.npy", "classes.txt"):
        read = read_npy if name.endswith(".npy") else read_text
        if read(os.path.join(data["fp32"], name)) != read(os.path.join(data["fp16"], name)):
            raise Failed(f"{name} differs between the two extractions")
    contracts = {v: json.loads(read_text(os.path.join(d, "extractor.json"))) for v, d in data.items()}
    if contracts["fp32"]["fingerprint"] == contracts["fp16"]["fingerprint"]:
        raise Failed(f"{args.fp32} and {args.fp16} are the same model")
    for key in ("input", "layout", "size", "pixel_range", "output", "dim"):
        if contracts["fp32"][key] != contracts["fp16"][key]:
            raise Failed(f"the contracts differ in {key}: {contracts['fp32'][key]!r} vs "
                         f"{contracts['fp16'][key]!r}")

    errors = relative_errors(data["fp32"], data["fp16"])

    # The fp16 features, unbound from their model, for heads made for the float32 one.
    unbound = os.path.join(work, "fp16-unbound")
    shutil.rmtree(unbound, ignore_errors=True)
    os.makedirs(unbound)
    for name in ("features.npy", "labels.npy", "classes.txt", "paths.txt"):
        shutil.copy(os.path.join(data["fp16"], name), unbound)

    heads = {"lsh": os.path.join(work, "lsh64.head"), "milan": os.path.join(work, "milan64.head")}
    milan(args.milan, "head", "init", "--lsh", "--bits", BITS, "--seed", "1", "--model", args.fp32,
          "--device", args.device, "--out", heads["lsh"])
    t = time.time()
    milan(args.milan, "train", "--data", data["fp32"], "--bits", BITS, "--seed", "1",
          "--out", heads["milan"], "--quiet")
    seconds["train"] = time.time() - t
    maps, agreement = {}, {}
    for head, path in heads.items():
        codes = {}
        for variant, folder in (("fp32", data["fp32"]), ("fp16", unbound)):
            codes[variant] = os.path.join(work, f"codes-{head}-{variant}")
            shutil.rmtree(codes[variant], ignore_errors=True)
            report = json.loads(milan(args.milan, "eval", "--data", folder, "--head", path, "--json",
                                      "--export", codes[variant]))
            maps[head, variant] = report["map_at_k"]
        agreement[head] = bit_agreement(os.path.join(codes["fp32"], "codes.npy"),
                                        os.path.join(codes["fp16"], "codes.npy"))

    if file_hash(args.milan) != binary:
        raise Failed(f"{args.milan} changed during the check: run it again")
    n = len(errors)
    print(f"\nfp16 check: {n} images from {images}, device {args.device}, output "
          f"{contracts['fp32']['output']} ({contracts['fp32']['dim']} values)")
    print(f"  models: {args.fp32} ({os.path.getsize(args.fp32) / 1e6:.1f} MB), "
          f"{args.fp16} ({os.path.getsize(args.fp16) / 1e6:.1f} MB)")
    print(f"  extract: fp32 {seconds['fp32']:.1f} s, fp16 {seconds['fp16']:.1f} s "
          f"({n / seconds['fp32']:.1f} and {n / seconds['fp16']:.1f} images/s); "
          f"training {seconds['train']:.1f} s")
    print(f"  relative error ||f16 - f32|| / ||f32|| per image: median {statistics.median(errors):.2e}, "
          f"max {max(errors):.2e} (bound {args.max_rel_error:g})")
    for head in heads:
        bits, whole, items = agreement[head]
        print(f"  {head:5s} {BITS}-bit head: bits equal {bits:.4f}, codes identical {whole:.3f} "
              f"({items} test items); mAP@20 fp32 {maps[head, 'fp32']:.4f}, fp16 {maps[head, 'fp16']:.4f}")
    print(f"  took {time.time() - started:.0f} s")

    failures = []
    if max(errors) > args.max_rel_error:
        failures.append(f"relative feature error {max(errors):.3g} > {args.max_rel_error:g}")
    for head in heads:
        if agreement[head][0] < args.min_agreement:
            failures.append(f"{head} head: bit agreement {agreement[head][0]:.4f} < {args.min_agreement:g}")
    change = abs(maps["milan", "fp16"] - maps["milan", "fp32"])
    if change > args.max_map_change:
        failures.append(f"trained head: mAP@20 changed by {change:.4f} > {args.max_map_change:g}")
    for failure in failures:
        print(f"FAIL: {failure}", file=sys.stderr)
    if failures:
        return 1
    print("OK: the fp16 variant is within every bound")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (Failed, subprocess.CalledProcessError) as err:
        print(f"check_fp16.py: FAILED: {err}", file=sys.stderr)
        sys.exit(2)
