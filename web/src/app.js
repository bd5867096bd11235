// The inspector page: load the TF.js graph model and metadata.json, classify dropped, chosen or
// camera images exactly like the Python pipeline, and list the verdicts with a CSV download.
// window.inspector exposes the same functions to the parity check and the browser benchmark.
import { centreSquare, driftFlags, features, resizeArea, rgbaToGray, verdict } from './preprocess.js';

const tf = window.tf;
const $ = (id) => document.getElementById(id);
const BACKENDS = ['wasm', 'webgl', 'cpu']; // fastest first on a PC without a GPU: WebAssembly + SIMD
const rows = [];
let model;
let meta;

function setStatus(text, state = 'ready') {
  $('status').textContent = text;
  $('status').dataset.state = state;
}

async function pickBackend() {
  const wanted = new URLSearchParams(location.search).get('backend');
  tf.wasm.setWasmPaths(new URL('vendor/', location.href).href);
  for (const name of wanted ? [wanted] : BACKENDS) {
    try {
      if (await tf.setBackend(name)) {
        await tf.ready();
        return name;
      }
    } catch (err) {
      console.warn(`backend ${name} unavailable:`, err);
    }
  }
  throw new Error(`no TF.js backend could start (tried ${wanted || BACKENDS.join(', ')})`);
}

async function backendDetail(name) {
  if (name !== 'wasm') return name;
  const simd = await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT');
  const threads = await tf.env().getAsync('WASM_HAS_MULTITHREAD_SUPPORT');
  return `wasm (SIMD ${simd ? 'on' : 'off'}, threads ${threads ? 'on' : 'off'})`;
}

/** Raw 0-255 pixels of n images [n, size, size] (flat) -> defect probabilities. */
function predictPixels(pixels, n) {
  const size = meta.input.height;
  return tf.tidy(() => {
    const x = tf.tensor4d(Float32Array.from(pixels), [n, size, size, 1]);
    return Array.from(model.predict(x).dataSync());
  });
}

/** Image bytes (a File or Blob) -> gray pixels at full resolution, without colour management. */
async function decodeGray(blob) {
  const bitmap = await createImageBitmap(blob, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  const { data } = ctx.getImageData(0, 0, bitmap.width, bitmap.height);
  bitmap.close();
  return { gray: rgbaToGray(data, canvas.width, canvas.height), width: canvas.width, height: canvas.height };
}

/** Full-resolution gray image -> everything the page shows about it. */
function inspectGray({ gray, width, height }) {
  const t0 = performance.now();
  const size = meta.input.height;
  const input = resizeArea(gray, width, height, size);
  const stats = features(input, size);
  const [probability] = predictPixels(input, 1);
  const v = verdict(probability, meta.threshold, meta.review_band, meta.classes);
  return { probability, ...v, stats, drift: driftFlags(stats, meta.drift), ms: performance.now() - t0, input };
}

async function inspectBlob(blob) {
  const t0 = performance.now();
  const r = inspectGray(await decodeGray(blob));
  return { ...r, ms: performance.now() - t0 };
}

function thumbnailUrl(input) {
  const size = meta.input.height;
  const canvas = document.createElement('canvas');
  canvas.width = canvas.height = size;
  const ctx = canvas.getContext('2d');
  const img = ctx.createImageData(size, size);
  for (let i = 0; i < input.length; i += 1) img.data.set([input[i], input[i], input[i], 255], i * 4);
  ctx.putImageData(img, 0, 0);
  return canvas.toDataURL('image/png');
}

const ROUTE_TEXT = { pass: 'auto-pass', review: 'manual review', reject: 'auto-reject' };

function addRow(name, r, url) {
  const row = { index: rows.length + 1, file: name, ...r };
  rows.push(row);
  const tr = document.createElement('tr');
  tr.dataset.file = name;
  tr.dataset.verdict = r.label;
  tr.dataset.probability = String(r.probability);
  const cells = [
    [String(row.index)], ['', 'img'], [name, 'file'], [r.probability.toFixed(4), 'prob'],
    [r.label, r.label], [meta.review_band ? ROUTE_TEXT[r.route] : '-', r.route === 'review' ? 'review' : ''],
    [r.drift.length ? `drift: ${r.drift.join(', ')}` : 'ok', r.drift.length ? 'drift' : ''], [r.ms.toFixed(1)],
  ];
  for (const [text, cls] of cells) {
    const td = document.createElement('td');
    if (cls) td.className = cls;
    if (cls === 'img') {
      const img = document.createElement('img');
      img.src = url;
      img.alt = name;
      td.append(img);
    } else td.textContent = text;
    tr.append(td);
  }
  $('results').tBodies[0].append(tr);
  showLatest(name, r, url);
  updateSummary();
}

function showLatest(name, r, url) {
  $('latest').hidden = false;
  $('latest-img').src = url;
  const el = $('latest-verdict');
  el.textContent = r.label === meta.positive_class ? 'DEFECT' : 'OK';
  el.className = `verdict ${r.label}`;
  el.dataset.verdict = r.label;
  const route = meta.review_band ? ` · ${ROUTE_TEXT[r.route]}` : '';
  const drift = r.drift.length ? ` · camera check: ${r.drift.join(', ')} (verdicts may be unreliable)` : '';
  $('latest-detail').textContent = `${name} · defect probability ${r.probability.toFixed(4)} ` +
    `(threshold ${meta.threshold.toFixed(4)})${route}${drift}`;
}

function updateSummary() {
  $('batch').hidden = rows.length === 0;
  const defects = rows.filter((r) => r.label === meta.positive_class).length;
  const review = rows.filter((r) => r.route === 'review').length;
  const drift = rows.filter((r) => r.drift.length).length;
  $('summary').textContent = `${rows.length} inspected · ${defects} defect · ${rows.length - defects} ok` +
    (meta.review_band ? ` · ${review} for review` : '') + (drift ? ` · ${drift} outside the camera reference` : '');
}

function csvCell(v) {
  const s = String(v);
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

function downloadCsv() {
  const head = ['index', 'file', 'defect_probability', 'verdict', 'route', 'threshold', 'brightness', 'contrast',
    'sharpness', 'drift', 'ms', 'model_version'];
  const lines = [head.join(',')];
  for (const r of rows) {
    lines.push([r.index, r.file, r.probability.toFixed(6), r.label, meta.review_band ? r.route : '', meta.threshold,
      r.stats.brightness.toFixed(2), r.stats.contrast.toFixed(2), r.stats.sharpness.toFixed(1), r.drift.join('; '),
      r.ms.toFixed(1), meta.version].map(csvCell).join(','));
  }
  const a = document.createElement('a');
  a.href = URL.createObjectURL(new Blob([`${lines.join('\n')}\n`], { type: 'text/csv' }));
  a.download = `inspection-${new Date().toISOString().replace(/[:.]/g, '-')}.csv`;
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

async function inspectFiles(files) {
  const list = Array.from(files);
  let failed = 0;
  for (const [i, file] of list.entries()) {
    setStatus(`Inspecting ${i + 1} of ${list.length}: ${file.name}`, 'busy');
    try {
      const r = await inspectBlob(file);
      addRow(file.name, r, thumbnailUrl(r.input));
    } catch (err) {
      failed += 1;
      console.error(file.name, err);
    }
  }
  setStatus(failed ? `Done; ${failed} file(s) could not be read as images and were skipped` : 'Ready',
    failed ? 'error' : 'ready');
}

// ----- camera --------------------------------------------------------------------------------
let stream;
async function startCamera() {
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: 'environment' }, audio: false });
  } catch (err) {
    $('camera-note').textContent = `Camera unavailable: ${err.message}`;
    return;
  }
  const video = $('camera-video');
  video.srcObject = stream;
  await video.play();
  video.hidden = $('camera-capture').hidden = $('camera-stop').hidden = false;
  $('camera-start').hidden = true;
  $('camera-note').textContent = 'Frames are cropped to their centre square, as the line photos are square.';
}

function stopCamera() {
  stream?.getTracks().forEach((t) => t.stop());
  $('camera-video').hidden = $('camera-capture').hidden = $('camera-stop').hidden = true;
  $('camera-start').hidden = false;
  $('camera-note').textContent = '';
}

function captureFrame() {
  const video = $('camera-video');
  const canvas = new OffscreenCanvas(video.videoWidth, video.videoHeight);
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  ctx.drawImage(video, 0, 0);
  const { data } = ctx.getImageData(0, 0, canvas.width, canvas.height);
  const square = centreSquare(rgbaToGray(data, canvas.width, canvas.height), canvas.width, canvas.height);
  const r = inspectGray(square);
  addRow(`camera ${new Date().toLocaleTimeString()}`, r, thumbnailUrl(r.input));
}

// ----- wiring ----------------------------------------------------------------------------------
function footer(backend) {
  const m = meta.test_metrics;
  const band = meta.review_band ? ` · review band ${meta.review_band.low}–${meta.review_band.high}` : '';
  $('model-info').textContent = `Model ${meta.version} (${meta.model.arch}, ${meta.model.parameters.toLocaleString('en')} ` +
    `parameters, commit ${String(meta.git_commit).slice(0, 8)}) · threshold ${meta.threshold.toFixed(4)} ` +
    `(${meta.policy} ${meta.policy_target ?? ''})${band} · test on ${m.n} images: recall ${m.recall.toFixed(4)}, ` +
    `precision ${m.precision.toFixed(4)}, ROC-AUC ${m.roc_auc.toFixed(4)}`;
  $('runtime-info').textContent = `TF.js ${tf.version.tfjs} · backend ${backend} · model ` +
    `${meta.size_bytes.tfjs.toLocaleString('en')} bytes (${meta.tfjs_quantization === 'float16' ? 'float16' : 'float32'} ` +
    `weights) · input ${meta.input.width}×${meta.input.height} gray, ${meta.input.resize}`;
}

function wire() {
  const drop = $('drop');
  $('files').addEventListener('change', (e) => inspectFiles(e.target.files).then(() => { e.target.value = ''; }));
  drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    inspectFiles(e.dataTransfer.files);
  });
  $('csv').addEventListener('click', downloadCsv);
  $('clear').addEventListener('click', () => {
    rows.length = 0;
    $('results').tBodies[0].replaceChildren();
    $('latest').hidden = true;
    updateSummary();
  });
  if (navigator.mediaDevices?.getUserMedia) {
    $('camera-start').addEventListener('click', startCamera);
    $('camera-stop').addEventListener('click', stopCamera);
    $('camera-capture').addEventListener('click', captureFrame);
  } else {
    $('camera-start').disabled = true;
    $('camera-note').textContent = 'No camera API here (it needs https or localhost).';
  }
}

async function main() {
  meta = await (await fetch('metadata.json')).json();
  const backend = await pickBackend();
  model = await tf.loadGraphModel('model/model.json');
  predictPixels(new Uint8Array(meta.input.height * meta.input.width), 1); // warm-up: compile kernels
  const detail = await backendDetail(backend);
  footer(detail);
  wire();
  setStatus('Ready');
  return { backend, detail };
}

const ready = main().catch((err) => {
  setStatus(`Cannot start: ${err.message}. Serve this folder over http (make serve) and reload.`, 'error');
  throw err;
});

window.inspector = {
  ready,
  predictPixels,
  /** base64 image bytes -> result without the pixel array (for the parity check). */
  async inspectBase64(b64) {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const { input, ...r } = await inspectBlob(new Blob([bytes]));
    return { ...r, input: Array.from(input) };
  },
};
