#!/usr/bin/env python3
"""Export torchvision's ImageNet InceptionV3 to ONNX with milan's extractor contract.

For users WITH internet access: torchvision downloads the weights from
download.pytorch.org on first use, a host the milan build machines cannot reach,
so this script has never been run there (see docs/models.md).

  python3 -m venv target/tv-venv
  target/tv-venv/bin/pip install torch torchvision onnx onnxruntime
  target/tv-venv/bin/python scripts/model/export_torchvision.py target/models/inception_v3_imagenet.onnx

Contract of the file written:
  input  "input" float32 NCHW [batch, 3, 299, 299], pixel range "imagenet": RGB in
         [0, 1], then (x - mean) / std per channel with mean (0.485, 0.456, 0.406)
         and std (0.229, 0.224, 0.225); milan does that before calling the model.
  output "pool"  float32 [batch, 2048]: the avgpool layer (global average of
         Mixed_7c), flattened; the 1000-class fc layer is removed.

--random-weights builds the same graph with untrained weights and no download,
to try the export path itself; the features it gives are meaningless.
"""

import argparse
import inspect
import os
import sys

import onnx
import torch
import torchvision
from onnx import helper

SIZE = 299


def build_model(random_weights):
    tv = torchvision.models
    if random_weights:
        # transform_input=True as with the real weights, so the graph is the same.
        model = tv.inception_v3(weights=None, aux_logits=True, transform_input=True, init_weights=True)
        source = f"torchvision {torchvision.__version__} inception_v3 with RANDOM weights (export test only)"
    else:
        weights = tv.Inception_V3_Weights.IMAGENET1K_V1
        model = tv.inception_v3(weights=weights)  # downloads from download.pytorch.org
        source = (f"torchvision {torchvision.__version__} inception_v3 {weights} "
                  "(ImageNet-1k classifier weights ported from TensorFlow)")
    # Dropping fc makes forward() end at avgpool -> flatten: the 2048-d "pool".
    # transform_input stays on: it maps ImageNet-normalised input to the
    # (x - 0.5) / 0.5 range these weights were trained with, inside the graph.
    model.fc = torch.nn.Identity()
    model.eval()  # eval: no aux head, dropout off, BN uses running statistics
    return model, source


def export(model, path):
    dummy = torch.rand(2, 3, SIZE, SIZE)
    kwargs = dict(input_names=["input"], output_names=["pool"], opset_version=17,
                  dynamic_axes={"input": {0: "batch"}, "pool": {0: "batch"}})
    # Newer torch defaults to the dynamo exporter; the classic tracer handles
    # dynamic_axes and opset 17 for this plain CNN with no extra dependencies.
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False
    with torch.no_grad():
        torch.onnx.export(model, (dummy,), path, **kwargs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", help="ONNX file to write")
    ap.add_argument("--random-weights", action="store_true", help="no download; untrained weights")
    args = ap.parse_args()

    model, source = build_model(args.random_weights)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    export(model, args.out)

    m = onnx.load(args.out)
    helper.set_model_props(m, {
        "milan.contract": "1",
        "milan.input": "input",
        "milan.layout": "nchw",
        "milan.size": str(SIZE),
        "milan.pixel_range": "imagenet",
        "milan.outputs": "pool:2048",
        "milan.output": "pool",
        "milan.source": source,
    })
    onnx.checker.check_model(m)
    onnx.save(m, args.out)

    # Check the file against PyTorch when onnxruntime is available.
    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError:
        print(f"wrote {args.out} (onnxruntime not installed: not checked)")
        return 0
    x = torch.rand(3, 3, SIZE, SIZE)
    with torch.no_grad():
        want = model(x).numpy()
    got = ort.InferenceSession(args.out, providers=["CPUExecutionProvider"]).run(["pool"], {"input": x.numpy()})[0]
    diff = float(np.abs(got - want).max())
    print(f"wrote {args.out}: pool {got.shape}, max diff to PyTorch {diff:.2e}")
    return 0 if diff < 1e-3 * max(1.0, float(np.abs(want).max())) else 1


if __name__ == "__main__":
    sys.exit(main())
