// metadata.json's schema for the browser: the keys the page relies on, checked as
// inspection/deploy/model_folder.py checks them for every Python consumer (tests/test_model_folder.py holds both to
// the same faults). Any other key is informational and allowed. Pure functions, no TF.js, no DOM.

import { ROUTES as WORDS } from './route.js';

export const DAMAGED = 'this model bundle is damaged: rebuild it (dvc repro web)';
const FEATURES = ['brightness', 'contrast', 'sharpness']; // the camera statistics (preprocess.js features)

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
const has = (o, k) => Object.prototype.hasOwnProperty.call(o, k);

/** problem = check(value, where): null when fine, else '<where> is ...'. */
function field(obj, key, where, check) {
  const at = where ? `${where}.${key}` : key;
  return has(obj, key) ? check(obj[key], at) : `${at} is missing`;
}
const fields = (obj, where, specs) => specs.reduce((p, [key, check]) => p || field(obj, key, where, check), null);
const object = (v, w) => (isObject(v) ? null : `${w} is not an object`);
const text = (v, w) => (typeof v === 'string' ? null : `${w} is not a text`);
const number = (v, w) => (typeof v === 'number' && Number.isFinite(v) ? null : `${w} is not a number`);
const unit = (v, w) => number(v, w) || (v >= 0 && v <= 1 ? null : `${w} is not between 0 and 1`);
const size = (v, w) => (Number.isInteger(v) && v >= 1 ? null : `${w} is not a whole number of at least 1`);
const nullable = (check) => (v, w) => (v === null ? null : check(v, w));

function ordered(v, w, lo, hi) {
  return v[lo] <= v[hi] ? null : `${w}: ${lo} ${v[lo]} is above ${hi} ${v[hi]}`;
}

function range(v, w) {
  return object(v, w) || fields(v, w, [['min', number], ['max', number]]) || ordered(v, w, 'min', 'max');
}

function camera(v, w) {
  if (object(v, w)) return object(v, w);
  for (const [k, r] of Object.entries(v)) {
    const p = FEATURES.includes(k) ? range(r, `${w}.${k}`)
      : `${w}: key '${k}' is not a camera statistic (${FEATURES.join(', ')})`;
    if (p) return p;
  }
  return null;
}

function band(v, w) {
  return object(v, w) || fields(v, w, [['low', unit], ['high', unit]]) || ordered(v, w, 'low', 'high');
}

function words(v, w) {
  const ok = Array.isArray(v) && v.length === WORDS.length && WORDS.every((x) => v.includes(x));
  return ok ? null : `${w} is not the four route words ${WORDS.join(', ')}`;
}

const ood = (v, w) => object(v, w) || fields(v, w, [['limit', number]])
  || (has(v, 'review_limit') && v.review_limit !== null
    ? number(v.review_limit, `${w}.review_limit`) || ordered(v, w, 'review_limit', 'limit') : null);
const retake = (v, w) => object(v, w) || fields(v, w, [['camera', nullable(camera)], ['ood', nullable(ood)]]);
const warn = (v, w) => object(v, w) || fields(v, w, [['camera', nullable(camera)]]);

function rule(v, w) {
  return object(v, w) || fields(v, w, [['words', words], ['threshold', unit], ['review_band', nullable(band)],
    ['retake', retake]]) || (has(v, 'warn') ? nullable(warn)(v.warn, `${w}.warn`) : null) || field(v, 'rule', w, text);
}

function input(v, w) {
  return object(v, w) || fields(v, w, [['height', size], ['width', size]])
    || (v.width === v.height ? null : `${w}.width ${v.width} differs from ${w}.height ${v.height} (the model takes square images)`)
    || fields(v, w, [['channels', (c, at) => (c === 1 ? null : `${at} is not 1`)], ['name', text], ['signature', text]]);
}

const outputs = (v, w) => object(v, w) || fields(v, w, [['defect_probability', text], ['ood_score', text]]);

function classes(v, w) {
  const ok = Array.isArray(v) && v.length === 2 && v.every((c) => typeof c === 'string');
  return ok ? null : `${w} is not two class names`;
}

/**
 * null when ``meta`` (metadata.json, parsed) holds every key the page relies on, else its first problem naming the
 * key, e.g. 'route.threshold is not a number'.
 */
export function metadataProblem(meta) {
  if (!isObject(meta)) return 'the file is not a JSON object';
  return fields(meta, '', [['version', text], ['classes', classes], ['positive_class', text], ['outputs', outputs],
    ['input', input], ['route', rule], ['threshold', unit]])
    || (meta.positive_class === meta.classes[1] ? null
      : `positive_class '${meta.positive_class}' is not the second of classes (negative class first)`)
    || (Math.abs(meta.threshold - meta.route.threshold) <= 1e-12 ? null
      : `threshold ${meta.threshold} differs from route.threshold ${meta.route.threshold}`);
}
