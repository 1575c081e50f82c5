#!/usr/bin/env python3
"""Convert the InceptionV3 TF.js layers model bundled in nsfwjs 4.3.0 to ONNX.

Needs only numpy and onnx. Reads dist/models/inception_v3/ from the unpacked npm
package (model.min.js: the layers-model JSON; group1-shard*.min.js: base64 weights),
and writes an ONNX model (opset 17) that follows milan's extractor contract:

  input  "input"        float32 NHWC [batch, 299, 299, 3], RGB in [0, 1]
  output "pool"         float32 [batch, 2048]  global average of mixed10
  output "mixed7_pool"  float32 [batch, 768]   global average of mixed7
  output "mixed9_pool"  float32 [batch, 2048]  global average of mixed9

The classifier head (dense_1..dense_3) is dropped: milan only wants features.

Usage: convert_nsfwjs.py PACKAGE_DIR OUT.onnx [--default-output NAME]
PACKAGE_DIR is the "package" folder from the nsfwjs tarball (or the
inception_v3 model folder itself).
"""

import argparse
import base64
import os
import re
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# The output milan uses when the user does not pass --output. Chosen by
# measurement (scripts/model/measure_outputs.py, see docs/models.md).
DEFAULT_OUTPUT = "mixed7_pool"

# Keras layer name of each block whose global average we expose, and the ONNX
# output name it gets. The names come from the topology in model.min.js.
OUTPUT_BLOCKS = [("pool", "mixed10"), ("mixed7_pool", "mixed7"), ("mixed9_pool", "mixed9")]

SOURCE = ("nsfwjs 4.3.0 InceptionV3 (Keras layers model via TF.js; ImageNet-initialised, "
          "then fine-tuned on NSFW classes; MIT licence), converted by scripts/model/convert_nsfwjs.py")

IMAGE_SIZE = 299


# ---------------------------------------------------------------------------
# Reading the .min.js bundles.
#
# Each file is a browserify UMD bundle whose only module does
# `X.exports = <JS literal>`: an object literal for the model (unquoted keys,
# !0/!1 for booleans, numbers such as .5) or one base64 string for a shard.
# JSON cannot read that, so a tiny parser for exactly this literal subset
# follows; it never evaluates JavaScript.
# ---------------------------------------------------------------------------

_MODULE_START = re.compile(r"\{1:\[function\((\w+),(\w+),(\w+)\)\{\2\.exports=")
_NUMBER = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_IDENT = re.compile(r"[A-Za-z_$][\w$]*")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "v": "\v", "0": "\0"}


class _LiteralParser:
    def __init__(self, text):
        self.s = text

    def skip_ws(self, i):
        while self.s[i] in " \t\r\n":
            i += 1
        return i

    def value(self, i):
        s = self.s
        i = self.skip_ws(i)
        c = s[i]
        if c == "{":
            return self.obj(i + 1)
        if c == "[":
            return self.arr(i + 1)
        if c in "\"'":
            return self.string(i)
        # Minifiers write true/false as !0/!1.
        if s.startswith("!0", i):
            return True, i + 2
        if s.startswith("!1", i):
            return False, i + 2
        for word, val in (("null", None), ("true", True), ("false", False)):
            if s.startswith(word, i):
                return val, i + len(word)
        m = _NUMBER.match(s, i)
        if not m:
            raise ValueError(f"unexpected JS at offset {i}: {s[i:i + 40]!r}")
        t = m.group(0)
        return (float(t) if any(ch in t for ch in ".eE") else int(t)), m.end()

    def obj(self, i):
        s, out = self.s, {}
        i = self.skip_ws(i)
        if s[i] == "}":
            return out, i + 1
        while True:
            i = self.skip_ws(i)
            if s[i] in "\"'":
                key, i = self.string(i)
            else:
                m = _IDENT.match(s, i) or _NUMBER.match(s, i)
                if not m:
                    raise ValueError(f"bad object key at offset {i}: {s[i:i + 40]!r}")
                key, i = m.group(0), m.end()
            i = self.skip_ws(i)
            if s[i] != ":":
                raise ValueError(f"expected ':' at offset {i}")
            out[key], i = self.value(i + 1)
            i = self.skip_ws(i)
            if s[i] == ",":
                i += 1
                continue
            if s[i] != "}":
                raise ValueError(f"expected '}}' at offset {i}")
            return out, i + 1

    def arr(self, i):
        s, out = self.s, []
        i = self.skip_ws(i)
        if s[i] == "]":
            return out, i + 1
        while True:
            v, i = self.value(i)
            out.append(v)
            i = self.skip_ws(i)
            if s[i] == ",":
                i += 1
                continue
            if s[i] != "]":
                raise ValueError(f"expected ']' at offset {i}")
            return out, i + 1

    def string(self, i):
        s, quote = self.s, self.s[i]
        j, parts = i + 1, []
        while True:
            # Copy runs without escapes in one go: the shards are megabytes long.
            k = j
            while s[k] != quote and s[k] != "\\":
                k += 1
            parts.append(s[j:k])
            j = k
            if s[j] == quote:
                return "".join(parts), j + 1
            e = s[j + 1]
            if e == "u":
                parts.append(chr(int(s[j + 2:j + 6], 16)))
                j += 6
            elif e == "x":
                parts.append(chr(int(s[j + 2:j + 4], 16)))
                j += 4
            else:
                parts.append(_ESCAPES.get(e, e))
                j += 2


def read_js_export(path):
    """Return the value a browserify .min.js bundle exports, parsed as a literal."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    m = _MODULE_START.search(text)
    if not m:
        raise ValueError(f"{path}: not a browserify bundle of the expected shape")
    value, _ = _LiteralParser(text).value(m.end())
    return value


def find_model_dir(path):
    for cand in (path, os.path.join(path, "dist", "models", "inception_v3"),
                 os.path.join(path, "package", "dist", "models", "inception_v3")):
        if os.path.isfile(os.path.join(cand, "model.min.js")):
            return cand
    raise FileNotFoundError(f"no model.min.js under {path} (expected dist/models/inception_v3/)")


def load_weights(model_dir, manifest):
    """Dequantise every tensor of the weights manifest into float32 numpy arrays.

    TF.js stores the shards of a group back to back and the tensors of the group
    in manifest order; a uint8-quantised tensor takes one byte per value and
    decodes as q * scale + min (TF.js computes that in double, then stores float32,
    which is what happens here too).
    """
    weights = {}
    for group in manifest:
        blob = bytearray()
        for p in group["paths"]:
            b64 = read_js_export(os.path.join(model_dir, p + ".min.js"))
            blob += base64.b64decode(b64)
        offset = 0
        for spec in group["weights"]:
            n = int(np.prod(spec["shape"], dtype=np.int64))
            q = spec.get("quantization")
            if spec["dtype"] != "float32":
                raise ValueError(f"{spec['name']}: unsupported dtype {spec['dtype']}")
            if q is None:
                arr = np.frombuffer(blob, dtype="<f4", count=n, offset=offset).astype(np.float32)
                offset += 4 * n
            elif q["dtype"] == "uint8" and "scale" in q:
                raw = np.frombuffer(blob, dtype=np.uint8, count=n, offset=offset)
                arr = (raw.astype(np.float64) * q["scale"] + q["min"]).astype(np.float32)
                offset += n
            else:
                raise ValueError(f"{spec['name']}: unsupported quantization {q}")
            weights[spec["name"]] = arr.reshape(spec["shape"])
        if offset != len(blob):
            raise ValueError(f"weights group uses {offset} bytes but the shards hold {len(blob)}")
    return weights


# ---------------------------------------------------------------------------
# Graph construction.
# ---------------------------------------------------------------------------

def same_pads(size, kernel, stride, dilation=1):
    """TF 'same' padding for one spatial axis: (before, after).

    TF pads so that out = ceil(in / stride) and puts the odd pixel *after*;
    ONNX auto_pad=SAME_UPPER does the same, but explicit pads keep the graph
    free of auto_pad corner cases across runtimes.
    """
    out = -(-size // stride)
    eff_k = (kernel - 1) * dilation + 1
    total = max((out - 1) * stride + eff_k - size, 0)
    return total // 2, total - total // 2


def out_size(size, kernel, stride, padding, dilation=1):
    if padding == "same":
        return -(-size // stride)
    return (size - ((kernel - 1) * dilation + 1)) // stride + 1


class Converter:
    def __init__(self, topology, weights):
        cfg = topology["model_config"]["config"]
        self.layers = {l["name"]: l for l in cfg["layers"]}
        self.order = [l["name"] for l in cfg["layers"]]
        self.weights = weights
        self.used_weights = set()
        self.nodes, self.inits = [], []
        self.shape = {}  # layer name -> (C, H, W) of its output, NCHW without batch

    @staticmethod
    def inputs_of(layer):
        if not layer["inbound_nodes"]:
            return []
        if len(layer["inbound_nodes"]) != 1:
            raise ValueError(f"{layer['name']}: shared layers are not supported")
        return [x[0] for x in layer["inbound_nodes"][0]]

    def w(self, name):
        self.used_weights.add(name)
        return self.weights[name].astype(np.float64)

    def init(self, name, arr):
        self.inits.append(numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name))
        return name

    def node(self, op, inputs, outputs, name, **attrs):
        self.nodes.append(helper.make_node(op, inputs, outputs, name=name, **attrs))

    def needed(self, targets):
        """Layers the targets depend on, in topology order."""
        need, stack = set(), list(targets)
        while stack:
            n = stack.pop()
            if n not in need:
                need.add(n)
                stack.extend(self.inputs_of(self.layers[n]))
        return [n for n in self.order if n in need]

    def build(self):
        targets = [block for _, block in OUTPUT_BLOCKS]
        for t in targets:
            if t not in self.layers:
                raise ValueError(f"layer {t!r} not in the topology")
        folded = set()  # conv layers whose work is done by the BN that follows
        for name in self.needed(targets):
            layer = self.layers[name]
            cls, cfg, ins = layer["class_name"], layer["config"], self.inputs_of(layer)
            if cls == "InputLayer":
                shape = cfg["batch_input_shape"]
                if shape[1:] != [IMAGE_SIZE, IMAGE_SIZE, 3]:
                    raise ValueError(f"unexpected input shape {shape}")
                # The contract's input is NHWC; ONNX convolutions want NCHW.
                self.node("Transpose", ["input"], [name], name, perm=[0, 3, 1, 2])
                self.shape[name] = (3, IMAGE_SIZE, IMAGE_SIZE)
            elif cls == "Conv2D":
                src = ins[0]
                nxt = [l for l in self.order if name in self.inputs_of(self.layers[l])]
                if (len(nxt) == 1 and self.layers[nxt[0]]["class_name"] == "BatchNormalization"
                        and cfg["activation"] == "linear"):
                    folded.add(name)  # emitted together with its BN
                    self.shape[name] = self.conv_shape(src, cfg)
                    continue
                self.emit_conv(name, name, src, cfg, scale=None, shift=None)
            elif cls == "BatchNormalization":
                src = ins[0]
                if cfg["axis"] not in (3, -1):
                    raise ValueError(f"{name}: BN over axis {cfg['axis']}")
                c = self.shape[src][0]
                gamma = self.w(f"{name}/gamma") if cfg["scale"] else np.ones(c)
                beta = self.w(f"{name}/beta") if cfg["center"] else np.zeros(c)
                mean, var = self.w(f"{name}/moving_mean"), self.w(f"{name}/moving_variance")
                # y = (x - mean) / sqrt(var + eps) * gamma + beta  ==  x * a + b
                a = gamma / np.sqrt(var + cfg["epsilon"])
                b = beta - mean * a
                if src in folded:
                    self.emit_conv(name, src, self.inputs_of(self.layers[src])[0],
                                   self.layers[src]["config"], scale=a, shift=b)
                else:
                    self.node("BatchNormalization",
                              [src, self.init(f"{name}/a", a), self.init(f"{name}/b", b),
                               self.init(f"{name}/zero", np.zeros(c)), self.init(f"{name}/one", np.ones(c))],
                              [name], name, epsilon=0.0)
                    self.shape[name] = self.shape[src]
            elif cls == "Activation":
                act = cfg["activation"]
                if act != "relu":
                    raise ValueError(f"{name}: activation {act} not supported")
                self.node("Relu", ins, [name], name)
                self.shape[name] = self.shape[ins[0]]
            elif cls in ("MaxPooling2D", "AveragePooling2D"):
                self.emit_pool(name, cls, ins[0], cfg)
            elif cls == "Concatenate":
                if cfg["axis"] not in (3, -1):
                    raise ValueError(f"{name}: concat over axis {cfg['axis']}")
                # Keras concatenates channels (NHWC axis 3) = NCHW axis 1.
                self.node("Concat", ins, [name], name, axis=1)
                _, h, w = self.shape[ins[0]]
                self.shape[name] = (sum(self.shape[i][0] for i in ins), h, w)
            else:
                raise ValueError(f"{name}: layer class {cls} not supported")

        outputs = []
        for out_name, block in OUTPUT_BLOCKS:
            # GlobalAveragePool keeps [N, C, 1, 1]; Flatten gives the [N, C] the contract wants.
            self.node("GlobalAveragePool", [block], [f"{block}/gap"], f"{block}/gap")
            self.node("Flatten", [f"{block}/gap"], [out_name], f"{out_name}/flatten", axis=1)
            outputs.append(helper.make_tensor_value_info(out_name, TensorProto.FLOAT,
                                                         ["batch", self.shape[block][0]]))
        return outputs

    def conv_shape(self, src, cfg):
        _, h, w = self.shape[src]
        (kh, kw), (sh, sw), (dh, dw) = cfg["kernel_size"], cfg["strides"], cfg["dilation_rate"]
        return (cfg["filters"], out_size(h, kh, sh, cfg["padding"], dh), out_size(w, kw, sw, cfg["padding"], dw))

    def emit_conv(self, out, conv_name, src, cfg, scale, shift):
        if cfg.get("data_format", "channels_last") != "channels_last":
            raise ValueError(f"{conv_name}: data_format {cfg['data_format']}")
        if cfg["activation"] not in ("linear", "relu"):
            raise ValueError(f"{conv_name}: activation {cfg['activation']}")
        if scale is not None and cfg["activation"] != "linear":
            raise ValueError(f"{conv_name}: cannot fold BN after a nonlinear conv")
        kernel = self.w(f"{conv_name}/kernel")          # Keras: [kh, kw, in, out]
        bias = self.w(f"{conv_name}/bias") if cfg["use_bias"] else np.zeros(kernel.shape[3])
        if scale is not None:
            # Fold BN: conv(x, K) * a + b == conv(x, K * a) + (bias * a + b).
            kernel = kernel * scale
            bias = bias * scale + shift
        kernel = kernel.transpose(3, 2, 0, 1)           # ONNX: [out, in, kh, kw]
        _, h, w = self.shape[src]
        (kh, kw), (sh, sw), (dh, dw) = cfg["kernel_size"], cfg["strides"], cfg["dilation_rate"]
        if cfg["padding"] == "same":
            (pt, pb), (pl, pr) = same_pads(h, kh, sh, dh), same_pads(w, kw, sw, dw)
        elif cfg["padding"] == "valid":
            pt = pb = pl = pr = 0
        else:
            raise ValueError(f"{conv_name}: padding {cfg['padding']}")
        self.node("Conv", [src, self.init(f"{conv_name}/W", kernel), self.init(f"{conv_name}/B", bias)],
                  [out], out, kernel_shape=[kh, kw], strides=[sh, sw], dilations=[dh, dw],
                  pads=[pt, pl, pb, pr])
        if cfg["activation"] == "relu":
            self.nodes[-1].output[0] = f"{out}/pre"
            self.node("Relu", [f"{out}/pre"], [out], f"{out}/relu")
        self.shape[out] = self.conv_shape(src, cfg)

    def emit_pool(self, name, cls, src, cfg):
        c, h, w = self.shape[src]
        (kh, kw), (sh, sw) = cfg["pool_size"], cfg["strides"]
        if cfg["padding"] == "same":
            (pt, pb), (pl, pr) = same_pads(h, kh, sh), same_pads(w, kw, sw)
        else:
            pt = pb = pl = pr = 0
        attrs = dict(kernel_shape=[kh, kw], strides=[sh, sw], pads=[pt, pl, pb, pr])
        if cls == "AveragePooling2D":
            # TF averages only over real pixels at the border: padding not counted.
            self.node("AveragePool", [src], [name], name, count_include_pad=0, **attrs)
        else:
            self.node("MaxPool", [src], [name], name, **attrs)
        self.shape[name] = (c, out_size(h, kh, sh, cfg["padding"]), out_size(w, kw, sw, cfg["padding"]))


def convert(package_dir, out_path, default_output=DEFAULT_OUTPUT):
    names = [o for o, _ in OUTPUT_BLOCKS]
    if default_output not in names:
        raise ValueError(f"default output {default_output!r} is not one of {names}")
    model_dir = find_model_dir(package_dir)
    model_json = read_js_export(os.path.join(model_dir, "model.min.js"))
    weights = load_weights(model_dir, model_json["weightsManifest"])
    conv = Converter(model_json["modelTopology"], weights)
    outputs = conv.build()

    graph = helper.make_graph(
        conv.nodes, "nsfwjs_inception_v3",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", IMAGE_SIZE, IMAGE_SIZE, 3])],
        outputs, initializer=conv.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="milan scripts/model/convert_nsfwjs.py")
    # IR 8 is what opset 17 shipped with; older runtimes refuse newer IR versions.
    model.ir_version = 8
    dims = ",".join(f"{o.name}:{o.type.tensor_type.shape.dim[1].dim_value}" for o in outputs)
    helper.set_model_props(model, {
        "milan.contract": "1",
        "milan.input": "input",
        "milan.layout": "nhwc",
        "milan.size": str(IMAGE_SIZE),
        "milan.pixel_range": "0..1",
        "milan.outputs": dims,
        "milan.output": default_output,
        "milan.source": SOURCE,
    })
    onnx.checker.check_model(model, full_check=True)

    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    tmp = out_path + ".tmp"
    onnx.save(model, tmp)
    os.replace(tmp, out_path)  # never leave a half-written model behind
    head = {n for n in weights if n.startswith("dense_")}
    unused = set(weights) - conv.used_weights - head
    return dict(nodes=len(conv.nodes), params=sum(int(t.size) for t in weights.values()),
                outputs=dims, unused=sorted(unused), default=default_output)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("package_dir", help="unpacked nsfwjs package (or its dist/models/inception_v3)")
    ap.add_argument("out", help="ONNX file to write")
    ap.add_argument("--default-output", default=DEFAULT_OUTPUT,
                    help=f"output named in milan.output (default {DEFAULT_OUTPUT})")
    args = ap.parse_args()
    info = convert(args.package_dir, args.out, args.default_output)
    if info["unused"]:
        print(f"error: weights not used by the graph: {info['unused'][:5]}...", file=sys.stderr)
        return 1
    size = os.path.getsize(args.out) / 1e6
    print(f"wrote {args.out}: {info['nodes']} nodes, {size:.1f} MB, outputs {info['outputs']}, "
          f"default {info['default']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
