#!/usr/bin/env python3
"""Which output of the converted InceptionV3 retrieves best? mAP@20 on Fashion-MNIST.

Protocol (docs/models.md quotes the numbers this prints):
  * Fashion-MNIST training set (Debian package dataset-fashion-mnist), the first
    100 images of each of the 10 classes in file order; per class the first 60
    are "train", the last 40 "test" (400 test images).
  * Each 28x28 greyscale image is scaled to [0, 1], resized to 299x299 with
    bilinear interpolation (half-pixel centres, edge clamped, like PIL and
    TF2's resize) and repeated over R, G, B.
  * Features: each model output as float32, no normalisation.
  * Retrieval: every test image queries the other 399 test images (itself left
    out) by Euclidean distance; ties keep database order. AP@20 = sum of the
    precisions at the ranks of same-class hits in the top 20 / number of hits in
    the top 20 (0 when there is none); mAP@20 = mean over the 400 queries.
  * For context it also prints mAP@20 of the test images querying the 600 train
    images, and the same two numbers after L2-normalising the features.

If the data set is not there it is fetched without root:
  apt-get download dataset-fashion-mnist && dpkg-deb -x (into target/model-work/fmnist).

Usage: measure_outputs.py [MODEL.onnx] [--data DIR]
"""

import argparse
import gzip
import os
import sys
import time

import numpy as np
import onnxruntime as ort

# The dataset is fetched by the demo's image writer, one place for both.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from fashion_mnist_images import dataset_dir  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PER_CLASS, TRAIN_PER_CLASS, TOP_K = 100, 60, 20
SIZE = 299


def read_idx(path):
    """IDX: big-endian magic (0, 0, dtype 0x08 = uint8, ndim), ndim uint32 sizes, then data."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not a uint8 IDX file")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def resize_matrix(n_in, n_out):
    """Bilinear weights as a matrix: out = M @ in along one axis (half-pixel centres)."""
    src = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    src = np.clip(src, 0, n_in - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    m = np.zeros((n_out, n_in))
    m[np.arange(n_out), lo] += 1 - frac
    m[np.arange(n_out), hi] += frac
    return m


def to_model_input(images):
    """uint8 [N, 28, 28] -> float32 NHWC [N, 299, 299, 3] in [0, 1]."""
    m = resize_matrix(images.shape[1], SIZE)
    big = np.einsum("oh,nhw,pw->nop", m, images.astype(np.float64) / 255.0, m)
    return np.repeat(big[..., None], 3, axis=-1).astype(np.float32)


def select(labels):
    """Indices of the first PER_CLASS images of each class, split train/test per class."""
    train, test = [], []
    for c in range(10):
        idx = np.flatnonzero(labels == c)[:PER_CLASS]
        train += list(idx[:TRAIN_PER_CLASS])
        test += list(idx[TRAIN_PER_CLASS:])
    return np.array(train), np.array(test)


def ap_at_k(q, q_labels, db, db_labels, leave_out_self, k=TOP_K):
    """AP@k of every query (an array); the mAP is its mean."""
    q64, db64 = q.astype(np.float64), db.astype(np.float64)
    aps = []
    for i in range(len(q64)):
        d = np.sqrt(((db64 - q64[i]) ** 2).sum(axis=1))
        order = np.argsort(d, kind="stable")  # stable: ties stay in database order
        if leave_out_self:
            order = order[order != i]
        hits = db_labels[order[:k]] == q_labels[i]
        if not hits.any():
            aps.append(0.0)
            continue
        ranks = np.flatnonzero(hits) + 1
        aps.append(float(np.mean(np.arange(1, len(ranks) + 1) / ranks)))
    return np.array(aps)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", nargs="?", default=os.path.join(REPO, "target", "models", "inception_v3.onnx"))
    ap.add_argument("--data", help="folder with train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz")
    ap.add_argument("--batch", type=int, default=10)
    args = ap.parse_args()

    data = args.data or dataset_dir()
    images = read_idx(os.path.join(data, "train-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(data, "train-labels-idx1-ubyte.gz")).astype(int)
    train_idx, test_idx = select(labels)
    todo = np.concatenate([train_idx, test_idx])

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2  # the machine is shared; 2 cores is all there is
    sess = ort.InferenceSession(args.model, opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    default = sess.get_modelmeta().custom_metadata_map.get("milan.output")

    feats = {n: [] for n in names}
    t0 = time.time()
    for s in range(0, len(todo), args.batch):
        out = sess.run(names, {"input": to_model_input(images[todo[s:s + args.batch]])})
        for n, o in zip(names, out):
            feats[n].append(o)
    secs = time.time() - t0
    print(f"{len(todo)} images through {os.path.relpath(args.model, REPO)} in {secs:.0f} s "
          f"({len(todo) / secs:.1f} images/s)")

    n_train = len(train_idx)
    y_train, y_test = labels[train_idx], labels[test_idx]
    print(f"mAP@{TOP_K}, Euclidean, {len(test_idx)} test queries "
          f"(first {PER_CLASS} per class, {TRAIN_PER_CLASS} train / {PER_CLASS - TRAIN_PER_CLASS} test)")
    print(f"{'output':12s} {'dim':>5s} {'test->test':>17s} {'test->train':>12s} "
          f"{'L2norm t->t':>12s} {'L2norm t->tr':>13s}")
    per_query = {}
    for n in names:
        f = np.concatenate(feats[n]).astype(np.float32)
        tr, te = f[:n_train], f[n_train:]
        unit = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
        utr, ute = unit[:n_train], unit[n_train:]
        aps = ap_at_k(te, y_test, te, y_test, leave_out_self=True)
        per_query[n] = aps
        row = [ap_at_k(te, y_test, tr, y_train, leave_out_self=False).mean(),
               ap_at_k(ute, y_test, ute, y_test, leave_out_self=True).mean(),
               ap_at_k(ute, y_test, utr, y_train, leave_out_self=False).mean()]
        se = aps.std(ddof=1) / np.sqrt(len(aps))
        print(f"{n:12s} {f.shape[1]:5d} {aps.mean():8.4f} +- {se:.4f} {row[0]:12.4f} {row[1]:12.4f} {row[2]:13.4f}")
    ranked = sorted(names, key=lambda n: -per_query[n].mean())
    best, second = ranked[0], ranked[1]
    # Same 400 queries for every output: a paired difference says whether the lead is noise.
    d = per_query[best] - per_query[second]
    print(f"(+- = standard error over queries) best by test->test mAP@{TOP_K}: {best}, "
          f"ahead of {second} by {d.mean():.4f} +- {d.std(ddof=1) / np.sqrt(len(d)):.4f} (paired)")
    print(f"the model's milan.output is {default}")
    # Exit 3 flags that the metadata's default is not the measured best.
    return 0 if best == default else 3


if __name__ == "__main__":
    sys.exit(main())
