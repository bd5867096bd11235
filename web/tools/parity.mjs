// Node side of the parity check (run by stages/web.py): the TF.js graph model on the CPU and
// WebAssembly backends of @tensorflow/tfjs, and the page's own resize and drift statistics.
//   node web/tools/parity.mjs <bundle dir> <request dir>
// <request dir>/request.json: {size, images: [{width, height}]}; full.bin: the full-resolution
// gray images (uint8, concatenated); prepared.bin: the same images resized by OpenCV, n x size x size.
// Writes <request dir>/result.json.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { features, resizeArea } from '../src/preprocess.js';

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

const [bundle, requestDir] = process.argv.slice(2);
const request = JSON.parse(readFileSync(join(requestDir, 'request.json'), 'utf8'));
const { size } = request;
const n = request.images.length;
const full = new Uint8Array(readFileSync(join(requestDir, 'full.bin')));
const prepared = new Uint8Array(readFileSync(join(requestDir, 'prepared.bin')));

// The page's resize against OpenCV's.
const jsResized = new Uint8Array(n * size * size);
let offset = 0;
let maxPixelDiff = 0;
let differing = 0;
const stats = [];
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
}

await tf.setBackend('cpu');
const model = await tf.loadGraphModel(fileHandler(bundle));
const backends = {};
for (const name of ['cpu', 'wasm']) {
  if (!(await tf.setBackend(name))) continue;
  await tf.ready();
  const run = (pixels) => tf.tidy(() => Array.from(model.predict(tf.tensor4d(Float32Array.from(pixels), [n, size, size, 1])).dataSync()));
  backends[name] = { prepared: run(prepared), js_resize: run(jsResized) };
}
writeFileSync(join(requestDir, 'result.json'), JSON.stringify({
  tfjs: tf.version.tfjs, node: process.version, backends,
  resize: { max_abs_pixel_diff: maxPixelDiff, differing_pixels: differing, pixels: n * size * size },
  features: stats,
}));
