#!/usr/bin/env python3
"""Check a converted nsfwjs InceptionV3 ONNX model against TF.js's own outputs.

Recomputes the four synthetic inputs of tfjs_reference.mjs, runs the model with
ONNX Runtime, and compares with tests/data/nsfwjs_reference.json: every stored
value, plus each full vector's L2 norm and sum. Also checks the milan metadata.

Pass criterion: for every output of every image,
    max |onnx - tfjs| / max |tfjs|  <  1e-4     (over the stored values)
and the same bound for |L2 norm difference| / L2 norm and for
|sum difference| / L1 norm (of ONNX's full vector), which cover the values the
JSON does not store. Exits 1 on any failure.

Usage: check_model.py MODEL.onnx [REFERENCE.json]
"""

import json
import math
import os
import sys

import numpy as np
import onnxruntime as ort

TOLERANCE = 1e-4
SIZE = 299
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_REFERENCE = os.path.join(REPO, "tests", "data", "nsfwjs_reference.json")

EXPECTED_META = {
    "milan.contract": "1",
    "milan.input": "input",
    "milan.layout": "nhwc",
    "milan.size": "299",
    "milan.pixel_range": "0..1",
    "milan.outputs": "pool:2048,mixed7_pool:768,mixed9_pool:2048",
}


def synthetic_image(name):
    """The same formula as tfjs_reference.mjs: NHWC float32 in [0, 1]."""
    t = np.arange(SIZE, dtype=np.float64) / (SIZE - 1)
    u, v = t[None, :, None], t[:, None, None]          # u along x (columns), v along y (rows)
    c = np.arange(3, dtype=np.float64)[None, None, :]
    pi = math.pi
    if name == "gradient":
        img = np.stack(np.broadcast_arrays(u[..., 0], v[..., 0], 1 - (u[..., 0] + v[..., 0]) / 2), axis=-1)
    elif name == "sinusoid":
        img = 0.5 + 0.5 * np.sin(2 * pi * (3 * u + 2 * v) + 2.1 * c)
    elif name == "rings":
        img = 0.5 + 0.5 * np.cos(2 * pi * 8 * np.hypot(u - 0.5, v - 0.45) - 1.7 * c)
    elif name == "plaid":
        img = 0.5 + 0.25 * np.sin(2 * pi * 5 * u + c) + 0.25 * np.cos(2 * pi * 7 * v * (1 + 0.3 * c))
    else:
        raise ValueError(f"unknown synthetic image {name!r}")
    return np.broadcast_to(img, (SIZE, SIZE, 3)).astype(np.float32)


def main():
    if len(sys.argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    model_path = sys.argv[1]
    ref_path = sys.argv[2] if len(sys.argv) == 3 else DEFAULT_REFERENCE
    with open(ref_path) as f:
        ref = json.load(f)

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2  # the build machine is shared
    sess = ort.InferenceSession(model_path, opts, providers=["CPUExecutionProvider"])
    failures = []

    meta = sess.get_modelmeta().custom_metadata_map
    for k, want in EXPECTED_META.items():
        if meta.get(k) != want:
            failures.append(f"metadata {k} = {meta.get(k)!r}, expected {want!r}")
    names = [o.name for o in sess.get_outputs()]
    if meta.get("milan.output") not in names:
        failures.append(f"metadata milan.output = {meta.get('milan.output')!r} is not an output {names}")
    if not meta.get("milan.source"):
        failures.append("metadata milan.source is empty")

    images = [e["name"] for e in ref["images"]]
    batch = np.stack([synthetic_image(n) for n in images])
    results = dict(zip(names, sess.run(names, {"input": batch})))

    worst = {}
    for i, entry in enumerate(ref["images"]):
        # A different input_sum would mean the inputs were not recomputed identically.
        s = float(batch[i].astype(np.float64).sum())
        if abs(s - entry["input_sum"]) > 1e-6 * abs(entry["input_sum"]):
            failures.append(f"{entry['name']}: input sum {s} != reference {entry['input_sum']}")
        for out, r in entry["outputs"].items():
            got = results[out][i].astype(np.float64)
            head = np.asarray(r["head"], dtype=np.float64)
            if got.shape != (r["dim"],):
                failures.append(f"{entry['name']}/{out}: shape {got.shape}, expected ({r['dim']},)")
                continue
            scale = max(np.abs(head).max(), 1e-12)
            abs_diff = float(np.abs(got[:head.size] - head).max())
            rel = abs_diff / scale
            l2_rel = abs(np.linalg.norm(got) - r["l2"]) / r["l2"]
            sum_rel = abs(got.sum() - r["sum"]) / max(np.abs(got).sum(), 1e-12)
            w = worst.setdefault(out, [0.0, 0.0, 0.0, 0.0])
            worst[out] = [max(w[0], abs_diff), max(w[1], rel), max(w[2], l2_rel), max(w[3], sum_rel)]
            for what, val in (("values", rel), ("l2", l2_rel), ("sum", sum_rel)):
                if not val < TOLERANCE:
                    failures.append(f"{entry['name']}/{out}: {what} differ by {val:.3g} (relative) "
                                    f">= {TOLERANCE}; max abs diff {abs_diff:.3g}")

    print(f"checked {model_path} against {os.path.relpath(ref_path)} "
          f"({len(images)} images, TF.js {ref.get('tfjs')} {ref.get('backend')} backend)")
    for out, (a, r, l2, sm) in worst.items():
        print(f"  {out:12s} max abs diff {a:.2e}  max diff / max|value| {r:.2e}  "
              f"l2 rel {l2:.2e}  sum rel {sm:.2e}")
    print(f"  default output (milan.output): {meta.get('milan.output')}")
    if failures:
        for f in failures:
            print(f"FAIL: {f}", file=sys.stderr)
        return 1
    print(f"OK: all within {TOLERANCE} of TF.js")
    return 0


if __name__ == "__main__":
    sys.exit(main())
