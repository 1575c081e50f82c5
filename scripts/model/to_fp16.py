#!/usr/bin/env python3
"""Make the fp16 variant of a float32 ONNX extractor.

Needs only numpy and onnx. Weights and activations become float16; the graph's
float inputs and outputs stay float32, under the same names, through a Cast
after each input and a Cast before each output. So milan's extractor contract
(the milan.* metadata: input name, layout, outputs) holds unchanged; only the
file, and so the fingerprint an index stores, differs.

Only graphs made of the ops in SAFE_OPS are converted: ops whose float16
kernels compute what the float32 ones do (data movement, ReLU, additions,
convolution and pooling). Any other op is refused by name, as are weights
beyond float16's range. The output is deterministic: the same input gives the
same bytes.

Usage: to_fp16.py IN.onnx OUT.onnx
"""

import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# The ops of the converted nsfwjs InceptionV3 (Conv, Relu, MaxPool, AveragePool,
# Concat, GlobalAveragePool, Flatten, Transpose), of the tiny test models, and
# the plain ones torchvision's export adds. Not here on purpose: ops whose
# float16 result can overflow or lose precision where float32 would not
# (BatchNormalization's variance, Softmax/Exp, Div, Pow, MatMul/Gemm over long
# rows, Resize's float scales, ...): each needs reviewing before it is added.
SAFE_OPS = frozenset({
    "Add", "AveragePool", "Concat", "Constant", "Conv", "Flatten", "Gather",
    "GlobalAveragePool", "GlobalMaxPool", "Identity", "MaxPool", "Mul", "ReduceMean",
    "Relu", "Reshape", "Slice", "Squeeze", "Sub", "Transpose", "Unsqueeze",
})

FP16_MAX = float(np.finfo(np.float16).max)  # 65504
# Weights below the smallest normal float16 keep fewer bits; below the smallest subnormal, none.
FP16_NORMAL = float(np.finfo(np.float16).smallest_normal)
FP16_TINY = float(np.finfo(np.float16).smallest_subnormal)
SOURCE_SUFFIX = ("; fp16 variant (float16 weights and activations, float32 input and outputs "
                 "through casts), made by scripts/model/to_fp16.py")


class Refused(ValueError):
    """The model cannot be converted safely; the message says why."""


def _to_fp16(array, name, stats):
    array = np.asarray(array)
    finite = np.isfinite(array)
    if not finite.all():
        raise Refused(f"tensor {name!r} holds non-finite values")
    peak = float(np.abs(array).max()) if array.size else 0.0
    if peak > FP16_MAX:
        # Clamping would change the model silently: better to refuse.
        raise Refused(f"tensor {name!r} holds {peak:g}, beyond float16's range (max {FP16_MAX:g})")
    half = array.astype(np.float16)
    stats["max_abs"] = max(stats["max_abs"], peak)
    stats["values"] += int(array.size)
    stats["flushed"] += int(((half == 0) & (array != 0)).sum())
    stats["subnormal"] += int(((np.abs(array) < FP16_NORMAL) & (array != 0)).sum())
    return half


def convert_model(model):
    """(fp16 model, stats) for a float32 onnx.ModelProto, which is left unmodified.

    Raises Refused for a graph it cannot convert safely. stats counts the weight tensors
    and values converted, the largest |weight|, the weights below float16's smallest
    normal and those that became 0.
    """
    props = {p.key: p.value for p in model.metadata_props}
    if props.get("milan.precision", "fp32") != "fp32":
        raise Refused(f"the model is already {props['milan.precision']} (milan.precision)")
    graph = model.graph
    for opset in model.opset_import:
        if opset.domain not in ("", "ai.onnx"):
            raise Refused(f"opset domain {opset.domain!r} is not supported")
    unknown = sorted({n.op_type for n in graph.node if n.domain not in ("", "ai.onnx")
                      or n.op_type not in SAFE_OPS})
    if unknown:
        raise Refused(f"{'op' if len(unknown) == 1 else 'ops'} {', '.join(unknown)} "
                      f"{'is' if len(unknown) == 1 else 'are'} not known to be safe in float16 "
                      f"(known: {', '.join(sorted(SAFE_OPS))})")
    init_names = {t.name for t in graph.initializer}
    for vi in graph.input:
        if vi.name in init_names:
            raise Refused(f"initializer {vi.name!r} is also a graph input (an overridable weight)")
    for t in graph.initializer:
        if t.data_type not in (TensorProto.FLOAT, TensorProto.INT64, TensorProto.INT32):
            raise Refused(f"initializer {t.name!r} has type {TensorProto.DataType.Name(t.data_type)}")

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    stats = dict(tensors=0, values=0, max_abs=0.0, flushed=0, subnormal=0)

    inits = []
    for t in graph.initializer:
        if t.data_type == TensorProto.FLOAT:
            t = numpy_helper.from_array(_to_fp16(numpy_helper.to_array(t), t.name, stats), t.name)
            stats["tensors"] += 1
        inits.append(t)
    del graph.initializer[:]
    graph.initializer.extend(inits)

    for node in graph.node:
        if node.op_type != "Constant":
            continue
        for attr in node.attribute:
            if attr.name == "value" and attr.t.data_type == TensorProto.FLOAT:
                half = _to_fp16(numpy_helper.to_array(attr.t), node.name or node.output[0], stats)
                attr.t.CopyFrom(numpy_helper.from_array(half, attr.t.name))
            elif attr.name in ("value_float", "value_floats"):
                raise Refused(f"Constant {node.name!r} uses {attr.name}; only a 'value' tensor is converted")

    # Intermediate float tensors become float16; shape inference re-derives the rest.
    for vi in graph.value_info:
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT:
            vi.type.tensor_type.elem_type = TensorProto.FLOAT16

    def is_float(vi):
        return vi.type.tensor_type.elem_type == TensorProto.FLOAT

    # Float outputs: the producer writes NAME/fp16, a final Cast writes NAME as float32.
    # Nodes reading an output (the tiny model's fmap feeds its pooling) read the fp16 copy.
    rename = {}
    for vi in graph.output:
        if is_float(vi):
            if any(vi.name == i.name for i in graph.input):
                raise Refused(f"output {vi.name!r} is also an input")
            rename[vi.name] = f"{vi.name}/fp16"
    for node in graph.node:
        for i, name in enumerate(node.output):
            node.output[i] = rename.get(name, name)
        for i, name in enumerate(node.input):
            node.input[i] = rename.get(name, name)
    tail = [helper.make_node("Cast", [rename[vi.name]], [vi.name], name=f"{vi.name}/to_fp32",
                             to=TensorProto.FLOAT)
            for vi in graph.output if vi.name in rename]

    # Float inputs: a first Cast writes NAME/fp16, which every node reads instead.
    head = []
    for vi in graph.input:
        if is_float(vi):
            half = f"{vi.name}/fp16"
            head.append(helper.make_node("Cast", [vi.name], [half], name=f"{vi.name}/to_fp16",
                                         to=TensorProto.FLOAT16))
            for node in graph.node:
                for i, name in enumerate(node.input):
                    if name == vi.name:
                        node.input[i] = half

    nodes = head + list(graph.node) + tail
    del graph.node[:]
    graph.node.extend(nodes)

    props["milan.precision"] = "fp16"
    props["milan.source"] = props.get("milan.source", "") + SOURCE_SUFFIX
    del out.metadata_props[:]
    helper.set_model_props(out, props)
    onnx.checker.check_model(out, full_check=True)
    return out, stats


def convert_file(src, dst):
    model, stats = convert_model(onnx.load(src))
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    tmp = dst + ".tmp"
    onnx.save(model, tmp)
    os.replace(tmp, dst)  # never leave a half-written model behind
    return stats


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    src, dst = sys.argv[1:]
    try:
        stats = convert_file(src, dst)
    except Refused as err:
        print(f"to_fp16.py: {src}: refused: {err}", file=sys.stderr)
        return 1
    print(f"wrote {dst}: {os.path.getsize(dst) / 1e6:.1f} MB (from {os.path.getsize(src) / 1e6:.1f} MB); "
          f"{stats['tensors']} weight tensors, {stats['values']} weights, max |weight| "
          f"{stats['max_abs']:.4g}; {stats['subnormal']} below float16's smallest normal "
          f"({FP16_NORMAL:.2g}), {stats['flushed']} of them below {FP16_TINY:.2g} (now 0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
