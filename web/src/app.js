// The inspector page: load the TF.js graph model and metadata.json, route every dropped, chosen or
// camera photo (PASS / REVIEW / REJECT / RETAKE, the rule of inspection/decision/route.py mirrored in route.js),
// keep the results on this device until Clear, and download them as CSV (the batch CLI's columns) or
// the operator's corrections as a zip for retraining. window.inspector exposes the same functions to
// the parity check, the browser benchmark and the tests.
// What does not touch the page's state lives in its own module: decoding (decode.js), image preparation
// (preprocess.js), the route rule (route.js), the operator's rules and words (operator.js), the metadata schema
// (schema.js), the model's outputs (outputs.js), downloads and hashes (files.js), the zip (zip.js) and the photo
// store (photostore.js). This file keeps the rest on purpose (over the ~350-line guide): the results, the table,
// the batch queue, the banner, persistence and the controls all read and change one state (rows, their table
// rows, the queue, the latest photo), and splitting them would pass that state through every call.
import { centreSquare, features, isTiff, resizeArea, rgbaToGray } from './preprocess.js';
import { CSV_COLUMNS, NOT_PASSED, REVIEWED_ROUTE, ROUTES, cameraReasons, csvRow, csvText, decide, fixed,
  reasonCauses } from './route.js';
import { DAMAGED, metadataProblem } from './schema.js';
import { outputNodes, runModel } from './outputs.js';
import { zipStore } from './zip.js';
import { decodeGray } from './decode.js';
import { download, sha256, stamp, zipName } from './files.js';
import { confirmable, fixable, operatorAction, retakeEscalator } from './operator.js';
import { clearPhotos, keepPhoto, loadPhoto } from './photostore.js';

const tf = window.tf;
const $ = (id) => document.getElementById(id);
const BACKENDS = ['wasm', 'webgl', 'cpu']; // fastest first on a PC without a GPU: WebAssembly + SIMD
const STORE = 'casting-inspector/results';
const WHO = 'casting-inspector/who';
const THUMB = 64; // stored thumbnail side, px
const MIN_SIDE = 32; // inspection/data/images.py MIN_SIDE: smaller photos are unreadable for every consumer

let model;
let meta;
let rule;   // metadata.json "route": threshold, review band, retake gate (set only once metadata.json is valid)
let nodes;  // graph output node names
let rows = [];
let nextId = 1;
let generation = 0; // bumped by Clear: a running batch stops adding rows
let queue = Promise.resolve();
const progress = { done: 0, total: 0 };   // across every queued batch, so the status counts are right
const photos = new Map(); // row id -> original bytes (Blob) for the corrections zip, this session
const tableRows = new Map(); // row id -> <tr>

function setStatus(text, state = 'ready') {
  $('status').textContent = text;
  $('status').dataset.state = state;
}

// Let the page paint and take input between photos (a batch of 1,000 must not freeze it).
const yieldToUI = () => (globalThis.scheduler && typeof scheduler.yield === 'function'
  ? scheduler.yield() : new Promise((resolve) => { setTimeout(resolve, 0); }));

// ----- model ---------------------------------------------------------------------------------
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

/** A damaged bundle: one line naming metadata.json and its bad key, what to do, and no photo routed. */
const damaged = (what) => Object.assign(new Error(`metadata.json: ${what}; ${DAMAGED}`), { damaged: true });

/** metadata.json, parsed and checked (schema.js: the keys of inspection/deploy/model_folder.py). */
async function loadMetadata() {
  const res = await fetch('metadata.json');
  if (!res.ok) throw damaged(`cannot be loaded (HTTP ${res.status})`);
  let m;
  try {
    m = JSON.parse(await res.text());
  } catch (err) {
    throw damaged(`is not valid JSON (${err.message})`);
  }
  const problem = metadataProblem(m);
  if (problem) throw damaged(problem);
  return m;
}

/** The graph model takes the input size metadata.json says (as Python checks the SavedModel's signature). */
function checkModelInput(m, graph) {
  const shape = graph.inputs && graph.inputs[0] && graph.inputs[0].shape;
  if (!shape || shape.length !== 4) return;
  for (const [i, key] of [[1, 'height'], [2, 'width']]) {
    if (shape[i] > 0 && shape[i] !== m.input[key]) {
      throw damaged(`input.${key} is ${m.input[key]} but the model takes ${shape[1]}x${shape[2]} images`);
    }
  }
}

/** Nothing can be inspected: the photo and camera inputs are disabled. */
function disableInputs() {
  $('files').disabled = true;
  $('drop').classList.add('disabled');
  $('drop').setAttribute('aria-disabled', 'true');
  $('camera-start').disabled = true;
}

/** Raw 0-255 pixels of n images (flat, n x size x size) -> {defect_probability: [n], ood_score: [n] | null}. */
function predictPixels(pixels, n) {
  const size = meta.input.height;
  return tf.tidy(() => {
    const x = tf.tensor4d(Float32Array.from(pixels), [n, size, size, 1]);
    const out = runModel(model, x, nodes);
    return {
      defect_probability: Array.from(out.defect_probability),
      ood_score: out.ood_score ? Array.from(out.ood_score) : null,
    };
  });
}

// ----- one photo -------------------------------------------------------------------------------
/** Full-resolution gray image -> the route and everything it was decided from. */
function inspectGray({ gray, width, height }) {
  const size = meta.input.height;
  if (Math.min(width, height) < MIN_SIDE) {
    throw Object.assign(new Error(`too small (${width}x${height} px, need >= ${MIN_SIDE})`), { unreadable: true });
  }
  if (width < size || height < size) { // the page's resize only shrinks, as the line's photos are larger
    throw Object.assign(new Error(`too small for the model (${width}x${height} px, need >= ${size}x${size})`),
      { unreadable: true });
  }
  const input = resizeArea(gray, width, height, size);
  const stats = features(input, size);
  const out = predictPixels(input, 1);
  const probability = out.defect_probability[0];
  const ood = out.ood_score ? out.ood_score[0] : null;
  const [route, reason] = decide(probability, stats, ood, rule);
  const camera = rule.retake && rule.retake.camera ? cameraReasons(stats, rule.retake.camera) : [];
  return { route, reason, probability, ood_score: ood, stats, camera, input };
}

function unreadable(err) {
  const why = err && err.unreadable ? err.message : 'not a decodable image';
  return { route: 'RETAKE', reason: `unreadable: ${why}`, probability: null, ood_score: null, stats: null, camera: [],
    input: null };
}

async function inspectBlob(blob) {
  const t0 = performance.now();
  let r;
  try {
    r = inspectGray(await decodeGray(blob));
  } catch (err) {
    if (!err || !err.unreadable) console.error(err);
    r = unreadable(err);
  }
  return { ...r, ms: performance.now() - t0 };
}

function thumbnail(input) {
  if (!input) return null;
  const size = meta.input.height;
  const src = document.createElement('canvas');
  src.width = src.height = size;
  const img = new ImageData(size, size);
  for (let i = 0; i < input.length; i += 1) {
    const j = i * 4;
    img.data[j] = img.data[j + 1] = img.data[j + 2] = input[i];
    img.data[j + 3] = 255;
  }
  src.getContext('2d').putImageData(img, 0, 0);
  const dst = document.createElement('canvas');
  dst.width = dst.height = Math.min(THUMB, size);
  dst.getContext('2d').drawImage(src, 0, 0, dst.width, dst.height);
  return dst.toDataURL('image/jpeg', 0.8);
}

// Python's datetime.now(timezone.utc).isoformat(timespec="seconds"), like the batch CLI.
const isoNow = () => `${new Date().toISOString().slice(0, 19)}+00:00`;

// ----- results ---------------------------------------------------------------------------------
function record(file, r, blob, digest = null, duplicateOf = null) {
  const row = {
    digest, duplicate_of: duplicateOf,
    id: nextId, file, route: r.route, reason: r.reason, probability: r.probability, ood_score: r.ood_score,
    threshold: rule.threshold, stats: r.stats, camera: r.camera, model_version: meta.version, timestamp: isoNow(),
    ms: r.ms, thumb: thumbnail(r.input), correction: null, escalated: r.escalated === true,
  };
  nextId += 1;
  rows.push(row);
  if (blob) {
    photos.set(row.id, blob);
    if (row.route !== 'PASS') keepPhoto(row.id, blob); // the parts that need action keep their photo on reload
  }
  $('results').tBodies[0].append(renderRow(row, rows.length));
  showLatest(row);
  updateSummary();
  scheduleSave();
  return row;
}

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'dataset') Object.assign(e.dataset, v);
    else if (k in e) e[k] = v;
    else e.setAttribute(k, v);
  }
  e.append(...children.filter((c) => c !== null && c !== undefined));
  return e;
}

function classWord(cls) {
  return cls === meta.positive_class ? 'defect' : 'ok';
}

function fixButtons(row, idPrefix) {
  const [neg, pos] = meta.classes;
  return [[pos, 'Is defect'], [neg, 'Is OK']].map(([cls, label]) => el('button', {
    type: 'button', textContent: label, className: 'fix-button', dataset: { fix: classWord(cls), cls, row: row.id },
    'aria-pressed': String(row.correction === cls), ...(idPrefix ? { id: `${idPrefix}-${classWord(cls)}` } : {}),
  }));
}

/** The file name whole, with line-break opportunities only after _ - and spaces (never mid-word). */
function fileName(name) {
  const span = el('span', { className: 'filename' });
  const pieces = name.split(/(?<=[_\- ])/);
  pieces.forEach((piece, i) => {
    span.append(piece);
    if (i < pieces.length - 1) span.append(document.createElement('wbr'));
  });
  return span;
}

function renderRow(row, index) {
  const tr = el('tr', { dataset: { id: row.id, route: row.route, file: row.file } });
  if (row.probability !== null) tr.dataset.probability = String(row.probability);
  if (row.ood_score !== null) tr.dataset.ood = String(row.ood_score);
  if (row.correction) tr.dataset.correction = row.correction;
  const detail = row.probability === null ? null
    : el('span', { className: 'detail', textContent: `defect probability ${fixed(row.probability, 4)}` });
  const todo = row.route === 'PASS' ? null : el('span', { className: 'todo', textContent: operatorAction(row) });
  const twin = row.duplicate_of === null || row.duplicate_of === undefined ? -1
    : rows.findIndex((x) => x.id === row.duplicate_of);
  const dupe = twin < 0 ? null : el('span', { className: 'dupe',
    textContent: `same photo as #${twin + 1} (${rows[twin].file}): counted once` });
  tr.append(
    el('td', { className: 'idx', textContent: String(index) }),
    el('td', { className: 'thumb' }, row.thumb ? el('img', { src: row.thumb, alt: `open ${row.file} full size`,
      tabIndex: 0, className: 'zoomable', dataset: { row: row.id } }) : null),
    el('td', { className: 'file' }, fileName(row.file)),
    el('td', { className: 'route' }, el('span', { className: 'pill', textContent: row.route, dataset: { route: row.route } })),
    el('td', { className: 'reason' }, row.reason, detail, todo, dupe),
    el('td', { className: 'fixcell' }, fixable(row) ? el('div', { className: 'fix' }, ...fixButtons(row))
      : confirmable(row) ? el('button', { type: 'button', className: 'casting-button', textContent: 'It is a casting',
        dataset: { casting: '1', row: row.id } }) : null),
  );
  tableRows.set(row.id, tr);
  return tr;
}

let latestId = null;
function showLatest(row) {
  latestId = row ? row.id : null;
  $('latest').hidden = !row;
  const banner = $('banner');
  if (!row) {
    delete banner.dataset.route;
    for (const id of ['latest-route', 'latest-action', 'latest-reason', 'latest-file']) $(id).textContent = '';
    $('latest-img').removeAttribute('src');
    return;
  }
  banner.dataset.route = row.route;
  $('latest-route').textContent = row.route;
  $('latest-action').textContent = operatorAction(row);
  $('latest-reason').textContent = row.reason;
  $('latest-file').replaceChildren(fileName(row.file));
  document.querySelector('#banner .fix').hidden = !fixable(row) && !confirmable(row);
  $('latest-casting').hidden = !confirmable(row);
  $('latest-defect').hidden = $('latest-ok').hidden = !fixable(row);
  const img = $('latest-img');
  img.hidden = !row.thumb;
  if (row.thumb) img.src = row.thumb;
  else img.removeAttribute('src');
  img.alt = row.thumb ? `photo of ${row.file}` : '';
  syncFix(row);
}

function syncFix(row) {
  const tr = tableRows.get(row.id);
  const buttons = [...(tr ? tr.querySelectorAll('.fix-button') : [])];
  if (latestId === row.id) {
    const [neg, pos] = meta.classes;
    $('latest-defect').dataset.cls = pos;
    $('latest-ok').dataset.cls = neg;
    buttons.push($('latest-defect'), $('latest-ok'));
  }
  for (const b of buttons) b.setAttribute('aria-pressed', String(row.correction === b.dataset.cls));
  if (tr) {
    if (row.correction) tr.dataset.correction = row.correction;
    else delete tr.dataset.correction;
    const pill = tr.querySelector('.pill');
    const final = row.correction ? REVIEWED_ROUTE[classWord(row.correction)] : null;
    pill.textContent = final && final !== row.route ? `${row.route} → ${final}` : row.route;
    if (final) pill.dataset.final = final;
    else delete pill.dataset.final;
    pill.title = final ? `reviewed as ${classWord(row.correction)} by ${row.checked_by || '(no name)'}` : '';
  }
}

function updateSummary() {
  $('batch').hidden = rows.length === 0;
  $('results').classList.toggle('many', rows.length > 100);
  const counts = Object.fromEntries(ROUTES.map((r) => [r, 0]));
  const distinct = rows.filter((r) => r.duplicate_of === null || r.duplicate_of === undefined);
  for (const r of distinct) counts[r.route] += 1;
  const reviewed = distinct.filter((r) => r.correction && r.route !== 'PASS').length;
  const action = NOT_PASSED.reduce((s, r) => s + counts[r], 0) - reviewed;   // a reviewed part needs no more action
  const warned = rows.filter((r) => (r.reason || '').includes('camera warning:')).length;
  const twice = rows.length - distinct.length;
  // the verdict beside the banner: the same numbers as the summary (distinct parts, reviews counted down)
  $('batch-verdict').textContent = distinct.length < 2 ? '' : `· batch: ${distinct.length} parts, ` +
    (action ? `${action} need${action === 1 ? 's' : ''} action (see the list)` : 'none needs action');
  $('batch-verdict').dataset.state = action ? 'action' : 'pass';
  $('summary').textContent = `${distinct.length} part${distinct.length === 1 ? '' : 's'} · ` +
    ROUTES.map((r) => `${r} ${counts[r]}`).join(' · ') + ` · ${action} need${action === 1 ? 's' : ''} action` +
    (reviewed ? ` · ${reviewed} reviewed` : '') + (twice ? ` · ${twice} photo${twice === 1 ? '' : 's'} added twice` : '') +
    (warned ? ` · camera warning on ${warned}: the lighting or focus has drifted, check the lamp and the focus` : '');
  const fixes = rows.filter((r) => r.correction).length;
  $('corrections').textContent = `Download corrections (${fixes})`;
  $('corrections').disabled = fixes === 0;
}

/** The photo itself, full size, in a dialog (the original file when it is kept, else the thumbnail). */
async function openPhoto(id) {
  const row = rows.find((r) => r.id === id);
  if (!row) return;
  const blob = photos.get(id) || await loadPhoto(id);
  const img = $('zoom-img');
  if (img.dataset.url) URL.revokeObjectURL(img.dataset.url);
  delete img.dataset.url;
  const original = blob && !isTiff(new Uint8Array(await blob.slice(0, 4).arrayBuffer()));
  if (original) {
    img.dataset.url = URL.createObjectURL(blob);
    img.src = img.dataset.url;
  } else {
    img.src = row.thumb || '';
  }
  img.alt = row.file;
  const small = original ? '' : blob ? ' · small preview (the browser cannot show a TIFF)'
    : ' · small preview (after a reload only the photos of parts that need action or were corrected are kept)';
  $('zoom-caption').textContent = `${row.file} · ${row.route} · ${row.reason}${small}`;
  $('zoom').showModal();
}

function confirmCasting(id) {
  const row = rows.find((r) => r.id === id);
  if (!row || !confirmable(row)) return;
  row.casting = true;
  const tr = tableRows.get(id);
  if (tr) tr.replaceWith(renderRow(row, rows.indexOf(row) + 1));
  if (latestId === id) showLatest(row);
  scheduleSave();
}

function mark(id, cls) {
  const row = rows.find((r) => r.id === id);
  if (!row || !fixable(row)) return;
  row.correction = row.correction === cls ? null : cls;
  row.checked_by = row.correction ? $('who').value.trim() : null;   // the review: who and when
  row.checked_at = row.correction ? isoNow() : null;
  if (row.correction && !row.checked_by) {
    note('who-note', 'Enter who checked the parts ("Checked by"): the CSV and the corrections record it');
  }
  if (row.correction && photos.has(id)) keepPhoto(id, photos.get(id));
  syncFix(row);
  updateSummary();
  scheduleSave();
}

function csvRows() {
  return rows.map((r) => csvRow(r.file, r.route, r.reason, r.probability, r.threshold, r.ood_score, r.stats,
    r.camera, r.model_version, r.timestamp, r.correction ? classWord(r.correction) : '',
    r.correction ? r.checked_by || '' : '', r.correction ? r.checked_at || '' : ''));
}

function downloadCsv() {
  download(new Blob([csvText(csvRows())], { type: 'text/csv' }), `inspection-${stamp()}.csv`);
}

/** A message beside the control that caused it (the status line may have scrolled away); also in the status. */
function note(id, text, state = 'error') {
  const n = $(id);
  n.textContent = text;
  n.dataset.state = state;
  n.hidden = !text;
  if (text) {
    setStatus(text, state);
    n.scrollIntoView({ block: 'nearest' });   // the control that caused it may be far down a long list
  }
}

async function downloadCorrections() {
  const who = $('who').value.trim();
  if (!who) {
    note('corrections-note', 'Enter who checked the parts ("Checked by") before downloading the corrections');
    $('who').focus();
    return;
  }
  const files = [];
  const parts = [];
  const taken = new Map();
  let missing = 0;
  for (const r of rows.filter((x) => x.correction && fixable(x))) {
    const blob = photos.get(r.id) || await loadPhoto(r.id);
    if (!blob) {
      missing += 1;
      continue;
    }
    if (!taken.has(r.correction)) taken.set(r.correction, new Set());
    const name = zipName(r.file, taken.get(r.correction));
    files.push({ name: `${r.correction}/${name}`, bytes: new Uint8Array(await blob.arrayBuffer()) });
    parts.push({ file: name, path: `${r.correction}/${name}`, original_file: r.file, route: r.route, reason: r.reason,
      defect_probability: r.probability, ood_score: r.ood_score, corrected_label: r.correction, inspected: r.timestamp,
      checked_by: r.checked_by || who, checked_at: r.checked_at });
  }
  const doc = { who, when: new Date().toISOString(), model_version: meta.version, classes: meta.classes, parts };
  files.push({ name: 'corrections.json', bytes: new TextEncoder().encode(`${JSON.stringify(doc, null, 1)}\n`) });
  download(new Blob([zipStore(files)], { type: 'application/zip' }), `corrections-${stamp()}.zip`);
  note('corrections-note', `Corrections downloaded: ${parts.length} part${parts.length === 1 ? '' : 's'}` +
    (missing ? `; ${missing} left out because their photo was not kept after a reload (add the photo again)` : ''),
  missing ? 'error' : 'ready');
}

// ----- keeping results on this device ------------------------------------------------------------
let saveTimer = null;
function scheduleSave() {
  // every save writes all rows: wait longer as the list grows (a batch ends with saveNow; pagehide too)
  if (saveTimer === null) saveTimer = setTimeout(saveNow, Math.min(5000, 400 + 2 * rows.length));
}

/** Rows to localStorage; when that is full, thumbnails go first (oldest first), the rows always stay. */
function saveNow() {
  clearTimeout(saveTimer);
  saveTimer = null;
  const attempt = (keepThumbs) => {
    const kept = rows.map((r, i) => (i >= rows.length - keepThumbs ? r : { ...r, thumb: null }));
    localStorage.setItem(STORE, JSON.stringify({ version: 1, nextId, rows: kept }));
  };
  for (const keep of [rows.length, 200, 50, 0]) {
    try {
      attempt(keep);
      return true;
    } catch (err) {
      if (keep === 0) {
        setStatus(`Results could not be kept on this device (${err.name}); download the CSV before closing`, 'error');
      }
    }
  }
  return false;
}

function restore() {
  let saved;
  try {
    saved = JSON.parse(localStorage.getItem(STORE) || 'null');
  } catch (err) {
    saved = null;
  }
  if (!saved || !Array.isArray(saved.rows)) return 0;
  rows = saved.rows.filter((r) => r && ROUTES.includes(r.route));
  nextId = Math.max(saved.nextId || 1, ...rows.map((r) => r.id + 1));
  const frag = document.createDocumentFragment();
  rows.forEach((r, i) => frag.append(renderRow(r, i + 1)));
  $('results').tBodies[0].append(frag);
  showLatest(null);   // the big banner is for a photo inspected now: never replay the previous session's last one
  updateSummary();
  return rows.length;
}

function clearAll() {
  if (rows.length) {
    const fixes = rows.filter((r) => r.correction).length;
    const what = `Clear ${rows.length} result${rows.length === 1 ? '' : 's'}` +
      (fixes ? ` and ${fixes} correction${fixes === 1 ? '' : 's'} (download them first: they cannot be recovered)` : '');
    if (!window.confirm(`${what}? This cannot be undone.`)) return;
  }
  generation += 1;
  escalate = retakeEscalator();   // the next photo is a new part
  rows = [];
  photos.clear();
  tableRows.clear();
  $('results').tBodies[0].replaceChildren();
  showLatest(null);
  updateSummary();
  clearTimeout(saveTimer);
  saveTimer = null;
  localStorage.removeItem(STORE);
  clearPhotos();
  setStatus('Ready');
}

let escalate = retakeEscalator();   // one photo at a time: a part photographed again

// ----- batches -----------------------------------------------------------------------------------
async function inspectFiles(files) {
  const list = Array.from(files);
  const gen = generation;
  let bad = 0;
  let dupes = 0;
  for (const [i, file] of list.entries()) {
    if (gen !== generation) return; // cleared meanwhile
    progress.done += 1;
    setStatus(`Inspecting ${progress.done} of ${progress.total}: ${file.name}` +
      (progress.total > list.length ? ` (${progress.total - progress.done} waiting)` : ''), 'busy');
    const r = await inspectBlob(file);
    if (gen !== generation) return;
    if (r.probability === null) bad += 1;
    const digest = await sha256(file);
    const twin = rows.find((x) => x.digest && x.digest === digest);
    record(file.name, list.length === 1 ? escalate(r) : r, file, digest, twin ? twin.id : null);
    if (twin) dupes += 1;
    await yieldToUI();
  }
  saveNow();
  if (progress.done < progress.total) return;   // more batches are queued: their status follows
  const inspected = progress.total;
  progress.done = progress.total = 0;
  setStatus(`Ready · ${inspected} photo${inspected === 1 ? '' : 's'} inspected` +
    (bad ? ` · ${bad} could not be read (RETAKE)` : '') +
    (dupes ? ` · ${dupes} added twice (the same photo as an earlier row: counted once)` : ''));
}

function enqueue(files) {
  progress.total += Array.from(files).length;
  queue = queue.then(() => inspectFiles(files)).catch((err) => {
    console.error(err);
    setStatus(`Inspection stopped: ${err.message}`, 'error');
  });
  return queue;
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
  if (stream) stream.getTracks().forEach((t) => t.stop());
  $('camera-video').hidden = $('camera-capture').hidden = $('camera-stop').hidden = true;
  $('camera-start').hidden = false;
  $('camera-note').textContent = '';
}

async function captureFrame() {
  const video = $('camera-video');
  const side = Math.min(video.videoWidth, video.videoHeight);
  const canvas = new OffscreenCanvas(side, side);
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  ctx.drawImage(video, (video.videoWidth - side) / 2, (video.videoHeight - side) / 2, side, side, 0, 0, side, side);
  const { data } = ctx.getImageData(0, 0, side, side);
  const square = centreSquare(rgbaToGray(data, side, side), side, side);
  const t0 = performance.now();
  let r;
  try {
    r = inspectGray(square);
  } catch (err) {
    r = unreadable(err);
  }
  const blob = await canvas.convertToBlob({ type: 'image/png' });
  record(`camera-${stamp()}.png`, escalate({ ...r, ms: performance.now() - t0 }), blob);
}

// ----- wiring ----------------------------------------------------------------------------------
function about(detail) {
  const m = meta.test_metrics || {};
  const band = rule.review_band;
  const gate = rule.retake || {};
  const items = [
    ['Rule', rule.rule || `threshold ${fixed(rule.threshold, 4)}`],
    ['Model', `${meta.version} (${meta.model.arch}, ${meta.model.parameters.toLocaleString('en')} parameters, commit ` +
      `${String(meta.git_commit).slice(0, 8)})`],
    ['Threshold', `${fixed(rule.threshold, 4)} (policy ${meta.policy}${meta.policy_target != null ? ` ${meta.policy_target}` : ''})`],
    ['Review band', band ? `${fixed(band.low, 4)} – ${fixed(band.high, 4)}` : 'none (PASS / REJECT by the threshold)'],
    ['Out-of-distribution gate', gate.ood ? `score above ${fixed(gate.ood.limit, 2)} → RETAKE${gate.ood.method ? ` (${gate.ood.method})` : ''}`
      : 'none'],
    ['Camera check', gate.camera ? Object.entries(gate.camera).map(([k, r]) => `${k} ${fixed(r.min, 1)}–${fixed(r.max, 1)}`).join(', ')
      : 'none'],
    ['Test results', m.n ? `${m.n} photos: recall ${fixed(m.recall, 4)}, precision ${fixed(m.precision, 4)}, ` +
      `ROC-AUC ${fixed(m.roc_auc, 4)}` : 'not recorded'],
    ['Runtime', `TF.js ${tf.version.tfjs}, backend ${detail}`],
    ['Input', `${meta.input.width}×${meta.input.height} gray, resize ${meta.input.resize}`],
    ['Model size', `${meta.size_bytes.tfjs.toLocaleString('en')} bytes (${meta.tfjs_quantization === 'float16' ? 'float16' : 'float32'} weights)`],
    ['CSV columns', CSV_COLUMNS.join(', ')],
  ];
  $('about-list').replaceChildren(...items.flatMap(([k, v]) => [el('dt', { textContent: k }), el('dd', { textContent: v })]));
}

function wire() {
  const drop = $('drop');
  $('files').addEventListener('change', (e) => {
    const files = Array.from(e.target.files);
    e.target.value = '';
    enqueue(files);
  });
  drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    enqueue(Array.from(e.dataTransfer.files));
  });
  $('csv').addEventListener('click', downloadCsv);
  $('clear').addEventListener('click', clearAll);
  $('filter').addEventListener('click', () => {
    const on = $('filter').getAttribute('aria-pressed') !== 'true';
    $('filter').setAttribute('aria-pressed', String(on));
    $('results').classList.toggle('needs-action', on);
  });
  $('results').addEventListener('click', (e) => {
    const b = e.target.closest('.fix-button');
    if (b) mark(Number(b.dataset.row), b.dataset.cls);
    const c = e.target.closest('.casting-button');
    if (c) confirmCasting(Number(c.dataset.row));
  });
  $('latest-casting').addEventListener('click', () => { if (latestId !== null) confirmCasting(latestId); });
  $('results').addEventListener('click', (e) => {
    const img = e.target.closest('img.zoomable');
    if (img) openPhoto(Number(img.dataset.row)).catch(() => {});
  });
  $('latest-img').addEventListener('click', () => { if (latestId !== null) openPhoto(latestId).catch(() => {}); });
  $('zoom').addEventListener('click', () => $('zoom').close());
  for (const id of ['latest-defect', 'latest-ok']) {
    $(id).addEventListener('click', () => { if (latestId !== null) mark(latestId, $(id).dataset.cls); });
  }
  $('who').value = localStorage.getItem(WHO) || '';
  $('who').addEventListener('input', () => {
    localStorage.setItem(WHO, $('who').value);
    if ($('who').value.trim()) note('who-note', '', 'ready');
  });
  $('corrections').addEventListener('click', () => downloadCorrections().catch((err) => {
    setStatus(`Corrections could not be written: ${err.message}`, 'error');
  }));
  window.addEventListener('pagehide', () => { if (saveTimer !== null) saveNow(); });
  if (navigator.mediaDevices && navigator.mediaDevices.getUserMedia) {
    $('camera-start').addEventListener('click', startCamera);
    $('camera-stop').addEventListener('click', stopCamera);
    $('camera-capture').addEventListener('click', () => captureFrame().catch((err) => setStatus(err.message, 'error')));
  } else {
    $('camera-start').disabled = true;
    $('camera-note').textContent = 'No camera here: the camera needs https or localhost.';
  }
}

/** The model's approval state from the report's decision (metadata.json "decision", written by export). */
function showApproval(m) {
  const d = m.decision;
  const el_ = $('approval');
  el_.hidden = false;
  if (!d || typeof d.ready !== 'boolean') {
    el_.dataset.state = 'unknown';
    el_.textContent = `Model ${m.version}: approval unknown (no decision in metadata.json)`;
  } else if (d.ready) {
    el_.dataset.state = 'ready';
    el_.textContent = `Model ${m.version}: ready for the line (the report's decision)`;
  } else {
    el_.dataset.state = 'not-ready';
    el_.textContent = `Model ${m.version}: NOT approved for the line. ${d.sentence || ''} Use its verdicts only with a ` +
      'person checking every part.';
  }
}

async function main() {
  const m = await loadMetadata();
  const backend = await pickBackend();
  const graph = await tf.loadGraphModel('model/model.json');
  checkModelInput(m, graph);
  [meta, rule, model] = [m, m.route, graph];
  try {
    nodes = outputNodes(model.modelSignature && model.modelSignature.outputs, model.modelStructuredOutputKeys,
      meta.outputs);
  } catch (err) {
    throw damaged(err.message);   // metadata.json names an output the model does not have
  }
  if (rule.retake && rule.retake.ood && !nodes.ood_score) {
    throw damaged('route.retake.ood is set but the model has no ood_score output');
  }
  predictPixels(new Uint8Array(meta.input.height * meta.input.width), 1); // warm-up: compile kernels
  const detail = await backendDetail(backend);
  about(detail);
  showApproval(meta);
  wire();
  const restored = restore();
  setStatus(restored ? `Ready · ${restored} earlier result${restored === 1 ? '' : 's'} kept on this device (Clear removes them)`
    : 'Ready');
  return { backend, detail, nodes };
}

const ready = main().catch((err) => {
  disableInputs();
  setStatus(err.damaged ? err.message
    : `Cannot start: ${err.message}. Serve this folder over http (make serve) and reload.`, 'error');
  throw err;
});

window.inspector = {
  ready,
  predictPixels,
  reasonCauses,
  /** base64 image bytes -> the page's result for it (route, reason, probability, ood_score, stats, input pixels). */
  async inspectBase64(b64) {
    await ready; // never a route without a valid rule
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const { input, ...r } = await inspectBlob(new Blob([bytes]));
    return { ...r, input: input ? Array.from(input) : null };
  },
  /** Resolves when every queued photo has been inspected. */
  idle: () => queue,
  memory: () => tf.memory(),
  rows: () => rows.map(({ thumb, ...r }) => ({ ...r, has_thumb: Boolean(thumb) })),
  csv: () => csvText(csvRows()),
  save: saveNow,
};
