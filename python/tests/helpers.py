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
