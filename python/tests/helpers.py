"""Test helpers: code generators and a numpy brute force (popcount of XOR) to check against."""

from __future__ import annotations

import numpy as np

# Set bits of every byte value.
POPCOUNT = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(axis=1)


def hamming(queries: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Distances [nq, n] between packed uint8 queries [nq, w] and codes [n, w]."""
    out = np.empty((len(queries), len(codes)), dtype=np.int64)
    for i, query in enumerate(queries):
        out[i] = POPCOUNT[np.bitwise_xor(codes, query)].sum(axis=1)
    return out


def brute_top_k(queries, codes, ids, k):
    """The k nearest (distance, then id) of each query, padded with -1: (ids, distances)."""
    distances = hamming(queries, codes)
    out_ids = np.full((len(queries), k), -1, dtype=np.int64)
    out_distances = np.full((len(queries), k), -1, dtype=np.int32)
    for i in range(len(queries)):
        order = np.lexsort((ids, distances[i]))[:k]
        out_ids[i, : len(order)] = ids[order]
        out_distances[i, : len(order)] = distances[i][order]
    return out_ids, out_distances


def brute_range(queries, codes, ids, radius):
    """Every code within radius of each query (distance, then id): a list of (ids, distances)."""
    distances = hamming(queries, codes)
    answers = []
    for i in range(len(queries)):
        near = np.flatnonzero(distances[i] <= radius)
        order = np.lexsort((ids[near], distances[i][near]))
        answers.append((ids[near][order], distances[i][near][order]))
    return answers


def random_codes(rng, n, bits):
    return rng.integers(0, 256, size=(n, bits // 8), dtype=np.uint8)


def clustered_codes(rng, n, bits, centres=20, flip=0.08):
    """Codes drawn around random centres, each bit flipped with probability `flip`, with exact
    duplicates among them (ties that only the id order breaks)."""
    centre_bits = rng.integers(0, 2, size=(centres, bits), dtype=np.uint8)
    which = rng.integers(0, centres, size=n)
    noise = (rng.random((n, bits)) < flip).astype(np.uint8)
    codes = np.packbits(centre_bits[which] ^ noise, axis=1)
    codes[n // 2 : n // 2 + 30] = codes[n // 2]
    return codes


def u64_to_u8(values: np.ndarray) -> np.ndarray:
    """uint64 codes as packed bytes: the integer's most significant bit first."""
    return np.asarray(values, dtype=">u8").view(np.uint8).reshape(-1, 8)


def check_range_layout(lims, ids, distances, nq):
    """FAISS's layout: lims int64 [nq + 1] from 0, non-decreasing, ending at len(ids)."""
    assert lims.dtype == np.int64 and ids.dtype == np.int64 and distances.dtype == np.int32
    assert lims.shape == (nq + 1,)
    assert lims[0] == 0 and lims[-1] == len(ids) == len(distances)
    assert np.all(np.diff(lims) >= 0)


# --- images, models and the command line, for the image and training tests ---

import functools
import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TINY_MODEL = ROOT / "tests" / "data" / "tiny_extractor.onnx"
TINY_NHWC_MODEL = ROOT / "tests" / "data" / "tiny_extractor_nhwc.onnx"


def write_png(path, pixels: np.ndarray) -> None:
    """An 8-bit RGB PNG of `pixels` (uint8, height x width x 3), with the standard library's
    zlib: the package needs no imaging library."""
    height, width, _ = pixels.shape
    raw = b"".join(b"\x00" + pixels[row].tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    Path(path).write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def class_image(rng, cls: int, size: int = 40) -> np.ndarray:
    """A noisy image of one of two classes: reddish with horizontal stripes, or bluish with
    vertical ones."""
    y, x = np.mgrid[0:size, 0:size]
    stripe = ((y if cls == 0 else x) // 4 % 2).astype(np.int64)
    noise = rng.integers(0, 40, size=(size, size))
    if cls == 0:
        rgb = [200 + noise // 2, 30 + noise + 60 * stripe, np.full_like(noise, 30)]
    else:
        rgb = [np.full_like(noise, 30), 40 + noise + 60 * stripe, 190 + noise // 2]
    return np.stack(rgb, axis=-1).astype(np.uint8)


def write_image_set(root, rng, per_class: int = 6):
    """Two class folders of PNGs (red/, blue/); returns the files, in order."""
    files = []
    for cls, name in enumerate(["red", "blue"]):
        folder = Path(root) / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            path = folder / f"{name}{i:03}.png"
            write_png(path, class_image(rng, cls))
            files.append(path)
    return files


@functools.lru_cache(maxsize=None)
def milan_cli() -> Path:
    """The command-line binary of this checkout: MILAN_CLI when set, else the build that
    `cargo test` makes (the `test` profile, in target/debug), brought up to date first, so that
    a stale binary never stands in for the code under test (after `cargo test`, a no-op)."""
    if os.environ.get("MILAN_CLI"):
        return Path(os.environ["MILAN_CLI"])
    cargo = shutil.which("cargo")
    if cargo is None:
        raise RuntimeError("no cargo to build the milan binary with (set MILAN_CLI)")
    subprocess.run(
        [cargo, "build", "--locked", "--quiet", "--profile", "test", "--bin", "milan"],
        cwd=ROOT,
        check=True,
    )
    return ROOT / "target" / "debug" / "milan"


def run_cli(*args, expect=0) -> subprocess.CompletedProcess:
    """Runs the command line; checks its exit status."""
    done = subprocess.run(
        [str(milan_cli()), *map(str, args)], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == expect, f"milan {' '.join(map(str, args))}: {done.stderr}"
    return done
