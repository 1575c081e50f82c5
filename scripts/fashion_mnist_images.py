#!/usr/bin/env python3
"""Writes Fashion-MNIST images as PNG files in one folder per class, for `make demo`.

The data is Debian's dataset-fashion-mnist package, fetched with `apt-get download` and unpacked
with `dpkg-deb -x` (no root needed). Standard library only.

    scripts/fashion_mnist_images.py --per-class 60 --out target/demo/images
"""
import argparse
import glob
import gzip
import os
import struct
import subprocess
import sys
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FETCH_DIR = os.path.join(ROOT, "target", "fashion-mnist")
DATA_SUBDIR = os.path.join("usr", "share", "datasets", "fashion-mnist")
CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat",
           "sandal", "shirt", "sneaker", "bag", "ankle-boot"]


def dataset_dir():
    """The unpacked dataset: the system's copy if installed, else a fetched one."""
    system = os.path.join("/", DATA_SUBDIR)
    if os.path.exists(os.path.join(system, "train-images-idx3-ubyte.gz")):
        return system
    unpacked = os.path.join(FETCH_DIR, "root", DATA_SUBDIR)
    if not os.path.exists(os.path.join(unpacked, "train-images-idx3-ubyte.gz")):
        os.makedirs(FETCH_DIR, exist_ok=True)
        print("fetching dataset-fashion-mnist with apt-get download ...", file=sys.stderr)
        subprocess.run(["apt-get", "download", "dataset-fashion-mnist"], cwd=FETCH_DIR, check=True)
        deb = sorted(glob.glob(os.path.join(FETCH_DIR, "dataset-fashion-mnist_*.deb")))[-1]
        subprocess.run(["dpkg-deb", "-x", deb, os.path.join(FETCH_DIR, "root")], check=True)
    return unpacked


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    _, _, dims = struct.unpack(">HBB", data[:4])
    shape = struct.unpack(">" + "I" * dims, data[4:4 + 4 * dims])
    return shape, data[4 + 4 * dims:]


def png_bytes(width, height, grey):
    """An 8-bit greyscale PNG."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    rows = b"".join(b"\x00" + grey[y * width:(y + 1) * width] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=60, help="images per class (first in file order)")
    parser.add_argument("--out", required=True, help="output folder (one subfolder per class)")
    args = parser.parse_args()
    source = dataset_dir()
    (count, height, width), pixels = read_idx(os.path.join(source, "train-images-idx3-ubyte.gz"))
    _, labels = read_idx(os.path.join(source, "train-labels-idx1-ubyte.gz"))
    written = {c: 0 for c in range(10)}
    size = height * width
    for i in range(count):
        label = labels[i]
        if written[label] >= args.per_class:
            if all(n >= args.per_class for n in written.values()):
                break
            continue
        folder = os.path.join(args.out, CLASSES[label])
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"{i:05d}.png"), "wb") as f:
            f.write(png_bytes(width, height, pixels[i * size:(i + 1) * size]))
        written[label] += 1
    print(f"wrote {sum(written.values())} Fashion-MNIST images ({args.per_class} per class) to {args.out}")


if __name__ == "__main__":
    main()
