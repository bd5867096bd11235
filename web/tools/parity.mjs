// Node side of the parity check (run by stages/web.py): the TF.js graph model on the CPU and
// WebAssembly backends of @tensorflow/tfjs, with the page's own resize, camera statistics and route rule.
//   node web/tools/parity.mjs <bundle dir> <request dir> [<node_modules dir>]
// <request dir>/request.json: {size, images: [{width, height}], rule, outputs}; full.bin: the full-resolution
// gray images (uint8, concatenated); prepared.bin: the same images resized by OpenCV, n x size x size.
// <node_modules dir>: where @tensorflow/tfjs is installed (default: web/node_modules beside this file; the
// web stage passes the main workspace's when it runs in a DVC temporary workspace).
// Writes <request dir>/result.json.
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { features, resizeArea } from '../src/preprocess.js';
import { decide } from '../src/route.js';
import { outputNodes, runModel } from '../src/outputs.js';

const [bundle, requestDir, modulesArg] = process.argv.slice(2);
const modules = resolve(modulesArg || join(dirname(fileURLToPath(import.meta.url)), '..', 'node_modules'));
const require = createRequire(join(modules, 'parity-resolver.js'));
const tf = require('@tensorflow/tfjs');
require('@tensorflow/tfjs-backend-wasm');

function fileHandler(dir) {
  return {
    async load() {
      const json = JSON.parse(readFileSync(join(dir, 'model.json'), 'utf8'));
      const specs = json.weightsManifest.flatMap((g) => g.weights);
      const shards = json.weightsManifest.flatMap((g) => g.paths).map((p) => readFileSync(join(dir, p)));
      const buf = Buffer.concat(shards);
      return {
        modelTopology: json.modelTopology, format: json.format, generatedBy: json.generatedBy,
        convertedBy: json.convertedBy, signature: json.signature, userDefinedMetadata: json.userDefinedMetadata,
        weightSpecs: specs, weightData: buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength),
      };
    },
  };
}

const request = JSON.parse(readFileSync(join(requestDir, 'request.json'), 'utf8'));
const { size, rule } = request;
const n = request.images.length;
const full = new Uint8Array(readFileSync(join(requestDir, 'full.bin')));
const prepared = new Uint8Array(readFileSync(join(requestDir, 'prepared.bin')));

// The page's resize against OpenCV's.
const jsResized = new Uint8Array(n * size * size);
let offset = 0;
let maxPixelDiff = 0;
let differing = 0;
const stats = [];
const jsStats = [];
for (const [i, { width, height }] of request.images.entries()) {
  const out = resizeArea(full.subarray(offset, offset + width * height), width, height, size);
  offset += width * height;
  jsResized.set(out, i * size * size);
  for (let k = 0; k < out.length; k += 1) {
    const d = Math.abs(out[k] - prepared[i * size * size + k]);
    if (d) differing += 1;
    maxPixelDiff = Math.max(maxPixelDiff, d);
  }
  stats.push(features(prepared.subarray(i * size * size, (i + 1) * size * size), size));
  jsStats.push(features(out, size));
}

await tf.setBackend('cpu');
const model = await tf.loadGraphModel(fileHandler(bundle));
const nodes = outputNodes(model.modelSignature && model.modelSignature.outputs, model.modelStructuredOutputKeys,
  request.outputs);
const backends = {};
for (const name of ['cpu', 'wasm']) {
  if (!(await tf.setBackend(name))) continue;
  await tf.ready();
  const run = (pixels, st) => {
    const out = tf.tidy(() => {
      const r = runModel(model, tf.tensor4d(Float32Array.from(pixels), [n, size, size, 1]), nodes);
      return { defect_probability: Array.from(r.defect_probability), ood_score: r.ood_score && Array.from(r.ood_score) };
    });
    out.routes = rule ? out.defect_probability.map((p, i) => decide(p, st[i], out.ood_score ? out.ood_score[i] : null, rule))
      : null;
    return out;
  };
  backends[name] = { prepared: run(prepared, stats), js_resize: run(jsResized, jsStats) };
}
writeFileSync(join(requestDir, 'result.json'), JSON.stringify({
  tfjs: tf.version.tfjs, node: process.version, nodes, backends, tensors_left: tf.memory().numTensors,
  resize: { max_abs_pixel_diff: maxPixelDiff, differing_pixels: differing, pixels: n * size * size },
  features: stats,
}));
