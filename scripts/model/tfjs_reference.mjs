// Reference outputs of nsfwjs 4.3.0's InceptionV3, computed by TF.js itself.
//
// Writes tests/data/nsfwjs_reference.json, which check_model.py compares the
// converted ONNX model against. TF.js runs on its pure-JavaScript CPU backend:
// tfjs-node would need a native download from a host outside the registries.
//
// Usage (make_model.sh does this when REFERENCE=1):
//   mkdir -p target/model-ref && cp scripts/model/package.json scripts/model/package-lock.json target/model-ref/
//   (cd target/model-ref && npm ci)
//   node scripts/model/tfjs_reference.mjs [--modules target/model-ref/node_modules] [--out tests/data/nsfwjs_reference.json]
//
// The model is read straight from the nsfwjs package files, the way nsfwjs's own
// JSONHandler does it: model.min.js exports the layers-model JSON, each
// group1-shard*.min.js exports base64 text; the shards are concatenated in the
// manifest's order and handed to tf.loadLayersModel through an IO handler. TF.js
// then dequantises the weights itself, independently of convert_nsfwjs.py.

import { createRequire } from "node:module";
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import vm from "node:vm";

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, "..", "..");

function arg(name, fallback) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : fallback;
}
const modulesDir = resolve(arg("--modules", join(repo, "target", "model-ref", "node_modules")));
const outPath = resolve(arg("--out", join(repo, "tests", "data", "nsfwjs_reference.json")));
const modelDir = join(modulesDir, "nsfwjs", "dist", "models", "inception_v3");

// Packages live in a git-ignored folder under target/, not next to this script.
const require = createRequire(join(modulesDir, "noop.js"));
const tf = require("@tensorflow/tfjs");
const nsfwjsVersion = JSON.parse(readFileSync(join(modulesDir, "nsfwjs", "package.json"), "utf8")).version;

// ---- loading the .min.js bundles -------------------------------------------

// Each .min.js is a browserify UMD bundle: run it in an empty sandbox with a
// CommonJS `module` so it assigns its value to module.exports (no globals touched).
// The JSON round trip moves the value into this realm: objects built inside the
// sandbox have foreign prototypes, which TF.js's deserialiser does not accept.
function readJsExport(path) {
  const module = { exports: {} };
  vm.runInNewContext(readFileSync(path, "utf8"), { module, exports: module.exports }, { filename: path });
  return JSON.parse(JSON.stringify(module.exports));
}

function ioHandler(dir) {
  return {
    load: async () => {
      const modelJson = readJsExport(join(dir, "model.min.js"));
      const weightSpecs = [];
      const parts = [];
      for (const group of modelJson.weightsManifest) {
        for (const p of group.paths) parts.push(Buffer.from(readJsExport(join(dir, `${p}.min.js`)), "base64"));
        weightSpecs.push(...group.weights);
      }
      const all = Buffer.concat(parts);
      return {
        modelTopology: modelJson.modelTopology,
        format: modelJson.format,
        generatedBy: modelJson.generatedBy,
        convertedBy: modelJson.convertedBy,
        weightSpecs,
        // A fresh ArrayBuffer holding exactly these bytes (Buffer may share a pool).
        weightData: all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength),
      };
    },
  };
}

// ---- synthetic inputs --------------------------------------------------------
// Four smooth 299x299 RGB images, NHWC, values in [0, 1], computed in double
// precision and stored as float32. check_model.py and docs/models.md hold the
// same formula: u = x / 298, v = y / 298, c = channel (0 R, 1 G, 2 B).
const SIZE = 299;
const IMAGES = [
  ["gradient", (u, v, c) => [u, v, 1 - (u + v) / 2][c]],
  ["sinusoid", (u, v, c) => 0.5 + 0.5 * Math.sin(2 * Math.PI * (3 * u + 2 * v) + 2.1 * c)],
  ["rings", (u, v, c) => 0.5 + 0.5 * Math.cos(2 * Math.PI * 8 * Math.hypot(u - 0.5, v - 0.45) - 1.7 * c)],
  ["plaid", (u, v, c) => 0.5 + 0.25 * Math.sin(2 * Math.PI * 5 * u + c) + 0.25 * Math.cos(2 * Math.PI * 7 * v * (1 + 0.3 * c))],
];

function makeImage(f) {
  const data = new Float32Array(SIZE * SIZE * 3);
  for (let y = 0; y < SIZE; y++)
    for (let x = 0; x < SIZE; x++)
      for (let c = 0; c < 3; c++) data[(y * SIZE + x) * 3 + c] = f(x / (SIZE - 1), y / (SIZE - 1), c);
  return data;
}

// ---- run ---------------------------------------------------------------------

// How many leading values of each output the JSON keeps (the rest is summarised
// by the full vector's L2 norm and sum), to keep the committed file small.
const STORED = { pool: 256, mixed7_pool: 768, mixed9_pool: 256 };

async function main() {
  await tf.setBackend("cpu");
  await tf.ready();
  const model = await tf.loadLayersModel(ioHandler(modelDir));

  // "pool" is the model's own 8x8 average pool + flatten of mixed10 (its whole
  // 8x8 map, so a global average); the inner blocks get a global average pool.
  const gap = (name) => tf.layers.globalAveragePooling2d({ name: `${name}_gap` }).apply(model.getLayer(name).output);
  const outputs = { pool: model.getLayer("flatten_1").output, mixed7_pool: gap("mixed7"), mixed9_pool: gap("mixed9") };
  const names = Object.keys(outputs);
  const sub = tf.model({ inputs: model.inputs, outputs: names.map((n) => outputs[n]) });

  const images = [];
  for (const [name, f] of IMAGES) {
    const pixels = makeImage(f);
    const t0 = Date.now();
    const input = tf.tensor4d(pixels, [1, SIZE, SIZE, 3]);
    const results = sub.predict(input);
    const entry = { name, input_sum: pixels.reduce((a, b) => a + b, 0), outputs: {} };
    for (let i = 0; i < names.length; i++) {
      const v = await results[i].data();
      entry.outputs[names[i]] = {
        dim: v.length,
        l2: Math.sqrt(v.reduce((a, b) => a + b * b, 0)),
        sum: v.reduce((a, b) => a + b, 0),
        // float32 needs 9 significant digits to round-trip exactly.
        head: Array.from(v.subarray(0, STORED[names[i]]), (x) => Number(x.toPrecision(9))),
      };
    }
    tf.dispose([input, ...results]);
    console.error(`${name}: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    images.push(entry);
  }

  const doc = {
    generator: "scripts/model/tfjs_reference.mjs",
    model: `nsfwjs ${nsfwjsVersion} dist/models/inception_v3 (TF.js layers model)`,
    tfjs: tf.version.tfjs,
    backend: tf.getBackend(),
    input: {
      shape: [1, SIZE, SIZE, 3],
      layout: "nhwc",
      pixel_range: "0..1",
      formula: "u = x/298, v = y/298, c = channel 0..2 (R, G, B); computed in float64, stored as float32",
      images: {
        gradient: "[u, v, 1 - (u + v)/2][c]",
        sinusoid: "0.5 + 0.5*sin(2*pi*(3u + 2v) + 2.1c)",
        rings: "0.5 + 0.5*cos(2*pi*8*hypot(u - 0.5, v - 0.45) - 1.7c)",
        plaid: "0.5 + 0.25*sin(2*pi*5u + c) + 0.25*cos(2*pi*7v*(1 + 0.3c))",
      },
    },
    stored: "head = the first N values of each output (N = 768 for mixed7_pool, 256 otherwise); l2 and sum cover the full vector",
    images,
  };
  // One line per number array keeps the file readable and diffable.
  const text = JSON.stringify(doc, null, 1).replace(/\[\s*([-0-9.e+,\s]+?)\s*\]/g, (_, body) => `[${body.replace(/\s+/g, "")}]`);
  mkdirSync(dirname(outPath), { recursive: true });
  writeFileSync(outPath, text + "\n");
  console.error(`wrote ${outPath}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
