#!/usr/bin/env python3
"""Write the tiny test extractors tests/data/tiny_extractor{,_nhwc,_fp16}.onnx.

Needs only numpy and onnx (uses onnxruntime too if it is importable, to check the
files). The weights come from a fixed seed, so re-running gives identical bytes
for a given onnx version.

tiny_extractor.onnx       input  "input" float32 NCHW [batch, 3, 32, 32], pixel range imagenet
                          output "features" [batch, 16]       (global average pool, default)
                          output "fmap"     [batch, 16, 8, 8] (4-D: the caller pools it)
tiny_extractor_nhwc.onnx  input  "input" float32 NHWC [batch, 32, 32, 3], pixel range -1..1
                          output "features" [batch, 16]
tiny_extractor_fp16.onnx  tiny_extractor.onnx through to_fp16.py: float16 weights and
                          activations, the same float32 input and outputs

All share the same weights: conv 3->8 (3x3, stride 2, pad 1) + ReLU, then
conv 8->16 (3x3, stride 2, pad 1) + ReLU. So the NHWC model fed the NHWC
transpose of a tensor gives exactly the NCHW model's "features" for it.

Usage: make_tiny_model.py [OUT_DIR]   (default tests/data)
"""

import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.dont_write_bytecode = True  # no __pycache__ left beside the scripts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from to_fp16 import convert_model  # noqa: E402

SEED = 20261128
SIZE = 32
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_weights():
    # RandomState's stream is frozen by NumPy, so the weights never change.
    rng = np.random.RandomState(SEED)
    # He-style scale keeps activations O(1); positive biases keep most ReLUs
    # alive, so features are not mostly zero.
    w1 = rng.normal(0, np.sqrt(2 / 27), (8, 3, 3, 3)).astype(np.float32)
    b1 = rng.uniform(0.05, 0.2, 8).astype(np.float32)
    w2 = rng.normal(0, np.sqrt(2 / 72), (16, 8, 3, 3)).astype(np.float32)
    b2 = rng.uniform(0.05, 0.2, 16).astype(np.float32)
    return w1, b1, w2, b2


def build(layout, weights):
    w1, b1, w2, b2 = weights
    conv = dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    nodes = []
    x = "input"
    if layout == "nhwc":
        # Convolutions in ONNX are NCHW: transpose once at the start.
        nodes.append(helper.make_node("Transpose", [x], ["nchw"], name="to_nchw", perm=[0, 3, 1, 2]))
        x = "nchw"
    nodes += [
        helper.make_node("Conv", [x, "w1", "b1"], ["c1"], name="conv1", **conv),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", **conv),
        helper.make_node("Relu", ["c2"], ["fmap"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["fmap"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["features"], name="flatten", axis=1),
    ]
    in_shape = ["batch", 3, SIZE, SIZE] if layout == "nchw" else ["batch", SIZE, SIZE, 3]
    outputs = [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 16])]
    if layout == "nchw":
        outputs.append(helper.make_tensor_value_info("fmap", TensorProto.FLOAT, ["batch", 16, 8, 8]))
    inits = [numpy_helper.from_array(a, n) for a, n in zip(weights, ["w1", "b1", "w2", "b2"])]
    graph = helper.make_graph(nodes, f"tiny_extractor_{layout}",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, in_shape)],
                              outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="milan scripts/model/make_tiny_model.py")
    model.ir_version = 8  # what opset 17 shipped with; keeps older runtimes happy
    helper.set_model_props(model, {
        "milan.contract": "1",
        "milan.input": "input",
        "milan.layout": layout,
        "milan.size": str(SIZE),
        "milan.pixel_range": "imagenet" if layout == "nchw" else "-1..1",
        "milan.outputs": "features:16,fmap:16" if layout == "nchw" else "features:16",
        "milan.output": "features",
        "milan.source": "milan test model",
    })
    onnx.checker.check_model(model, full_check=True)
    return model


def forward_numpy(x, weights):
    """Reference forward pass (NCHW) used to check the files are not degenerate."""
    w1, b1, w2, b2 = weights

    def conv(x, w, b):
        n, c, h, wd = x.shape
        xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
        oh, ow = (h - 1) // 2 + 1, (wd - 1) // 2 + 1
        out = np.zeros((n, w.shape[0], oh, ow), np.float64)
        for i in range(3):
            for j in range(3):
                patch = xp[:, :, i:i + 2 * oh:2, j:j + 2 * ow:2]
                out += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
        return np.maximum(out + b[None, :, None, None], 0)

    fmap = conv(conv(x.astype(np.float64), w1, b1), w2, b2)
    return fmap.mean(axis=(2, 3)), fmap


def test_images():
    """A few different NCHW images in ImageNet-normalised units."""
    t = np.linspace(0, 1, SIZE)
    grad = np.stack([np.tile(t, (SIZE, 1)), np.tile(t[:, None], (1, SIZE)), np.full((SIZE, SIZE), 0.5)])
    stripes = np.stack([0.5 + 0.5 * np.sin(2 * np.pi * 4 * np.tile(t, (SIZE, 1)) + k) for k in range(3)])
    noise = np.random.RandomState(1).rand(3, SIZE, SIZE)
    rgb = np.stack([np.zeros((3, SIZE, SIZE)), np.ones((3, SIZE, SIZE)), grad, stripes, noise])
    mean = np.array([0.485, 0.456, 0.406])[None, :, None, None]
    std = np.array([0.229, 0.224, 0.225])[None, :, None, None]
    return ((rgb - mean) / std).astype(np.float32)


def check(weights, paths):
    x = test_images()
    feats, _ = forward_numpy(x, weights)
    # Different images must give clearly different features, and no feature may be dead.
    d = np.linalg.norm(feats[:, None] - feats[None], axis=-1)
    off = d[~np.eye(len(x), dtype=bool)]
    scale = np.linalg.norm(feats, axis=1).mean()
    print(f"features: mean norm {scale:.3f}, smallest distance between test images {off.min():.3f}, "
          f"dims never active {int((feats.max(axis=0) <= 0).sum())}")
    assert off.min() > 0.05 * scale, "test images give nearly identical features"
    assert (feats.max(axis=0) > 0).all(), "some feature is zero for every test image"
    try:
        import onnxruntime as ort
    except ImportError:
        print("onnxruntime not installed: skipped running the files")
        return
    nchw = ort.InferenceSession(paths["nchw"], providers=["CPUExecutionProvider"])
    f, fm = nchw.run(["features", "fmap"], {"input": x})
    nhwc = ort.InferenceSession(paths["nhwc"], providers=["CPUExecutionProvider"])
    (g,) = nhwc.run(["features"], {"input": np.ascontiguousarray(x.transpose(0, 2, 3, 1))})
    err = max(np.abs(f - feats).max(), np.abs(g - feats).max(), np.abs(fm.mean(axis=(2, 3)) - feats).max())
    print(f"onnxruntime agrees with the numpy forward pass: max diff {err:.2e}")
    assert err < 1e-4
    fp16 = ort.InferenceSession(paths["fp16"], providers=["CPUExecutionProvider"])
    h, hm = fp16.run(["features", "fmap"], {"input": x})
    assert h.dtype == np.float32 and hm.dtype == np.float32
    rel = np.linalg.norm(h - feats, axis=1) / np.linalg.norm(feats, axis=1)
    print(f"fp16 variant: relative L2 error of the features {rel.min():.2e} to {rel.max():.2e}")
    # tests/fp16.rs allows 1e-2 and requires some difference: the file must really be fp16.
    assert 0 < rel.max() < 2e-3


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(REPO, "tests", "data")
    os.makedirs(out_dir, exist_ok=True)
    weights = make_weights()
    paths = {"nchw": os.path.join(out_dir, "tiny_extractor.onnx"),
             "nhwc": os.path.join(out_dir, "tiny_extractor_nhwc.onnx")}
    models = {layout: build(layout, weights) for layout in paths}
    paths["fp16"] = os.path.join(out_dir, "tiny_extractor_fp16.onnx")
    models["fp16"], _ = convert_model(models["nchw"])
    for layout, path in paths.items():
        onnx.save(models[layout], path)
        print(f"wrote {path} ({os.path.getsize(path)} bytes)")
    check(weights, paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
