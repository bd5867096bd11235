// The line decision for one part, PASS / REVIEW / REJECT / RETAKE: the browser's mirror of
// inspection/decision/route.py. Routes, reasons and CSV cells must be byte-identical to Python's; the shared
// table tests/cases/route_cases.json is checked against both (web/tools/route_cases.mjs, tests/test_web.py).
// Pure functions, no TF.js, no DOM.

export const ROUTES = ['PASS', 'REVIEW', 'REJECT', 'RETAKE'];
export const NOT_PASSED = ['REVIEW', 'REJECT', 'RETAKE'];
// One row per file, the same columns and words as the batch CLI (python -m commands.predict).
export const CSV_COLUMNS = ['file', 'route', 'reason', 'defect_probability', 'threshold', 'ood_score', 'camera_check',
  'brightness', 'contrast', 'sharpness', 'model_version', 'timestamp',
  'reviewed_as', 'final_route', 'checked_by', 'checked_at'];
export const ACTION = {
  PASS: 'ship the part', REVIEW: 'a person inspects the part',
  REJECT: 'scrap or rework the part', RETAKE: 'photograph the part again',
};

/**
 * Python's f"{x:.{digits}f}": correctly rounded, ties to even on the exact binary value (JS toFixed
 * rounds exact ties up: (0.125).toFixed(2) is "0.13", Python says "0.12"), "-0.00" for negative zero.
 */
export function fixed(x, digits) {
  if (Number.isNaN(x)) return 'nan';
  if (!Number.isFinite(x)) return x > 0 ? 'inf' : '-inf';
  const negative = x < 0 || Object.is(x, -0);
  const a = Math.abs(x);
  let s = a.toFixed(digits);
  if (a < 1e21) {
    // toFixed(100) is the exact decimal value for every double that can be a tie at <= 6 digits.
    const exact = a.toFixed(100);
    const point = exact.indexOf('.');
    const tail = exact.slice(point + 1 + digits);
    if (tail[0] === '5' && /^0*$/.test(tail.slice(1))) {
      // exact tie: toFixed rounded up; Python rounds to the even neighbour
      const down = exact.slice(0, point + 1 + digits).replace(/\.$/, '');
      const last = down.replace('.', '').slice(-1);
      if (Number(last) % 2 === 0) s = down;
    }
  }
  return (negative ? '-' : '') + s;
}

/** (route, reason) for one part; ``retake``: reasons the photo cannot be judged; ``band``: [low, high] or null. */
export function route(probability, threshold, band = null, retake = []) {
  const reasons = retake.filter((r) => r);
  if (reasons.length) return ['RETAKE', reasons.join('; ')];
  if (probability === null || probability === undefined) {
    throw new Error('a probability is needed when there is no retake reason');
  }
  const [low, high] = band ? [band[0], band[1]] : [threshold, threshold];
  if (probability < threshold && probability < low) {
    return ['PASS', `defect probability below ${fixed(Math.min(threshold, low), 4)}`];
  }
  if (probability >= threshold && probability >= high) {
    return ['REJECT', `defect probability at or above ${fixed(Math.max(threshold, high), 4)}`];
  }
  return ['REVIEW', `defect probability in the review band [${fixed(Math.min(threshold, low), 4)}, ` +
    `${fixed(Math.max(threshold, high), 4)})`];
}

/** Camera-check reasons: each feature of ``stats`` outside its [min, max] in ``camera``. */
export function cameraReasons(stats, camera) {
  const out = [];
  for (const [name, lim] of Object.entries(camera)) {
    const v = stats[name];
    if (v < lim.min) out.push(`${name} low (${fixed(v, 2)} < ${fixed(lim.min, 2)})`);
    else if (v > lim.max) out.push(`${name} high (${fixed(v, 2)} > ${fixed(lim.max, 2)})`);
  }
  return out;
}

/** '' when the photo looks like the training photos, else the reason. */
export function oodReason(score, limit) {
  return score <= limit ? ''
    : `unlike the training photos (out-of-distribution score ${fixed(score, 2)} > ${fixed(limit, 2)})`;
}

/** '' or why a photo the model would PASS goes to REVIEW: its OOD score is above the gate's review limit. */
export function unusualReason(score, ood) {
  const limit = (ood || {}).review_limit;
  return limit === undefined || limit === null || score <= limit ? ''
    : `unusual photo (out-of-distribution score ${fixed(score, 2)} > ${fixed(limit, 2)}): a person checks the part`;
}

/** Every reason to RETAKE a readable photo (metadata.json route.retake: {camera, ood}). */
export function retakeReasons(stats, oodScore, gate) {
  const reasons = [];
  if (gate.camera) {
    const cam = cameraReasons(stats, gate.camera);
    if (cam.length) reasons.push(`camera check: ${cam.join(', ')}`);
  }
  if (gate.ood) reasons.push(oodReason(oodScore, gate.ood.limit));
  return reasons.filter((r) => r);
}

/** '' or the camera warning of a photo outside the training range (rule ``warn.camera``). */
export function warning(stats, rule) {
  const camera = (rule.warn || {}).camera;
  const found = camera ? cameraReasons(stats, camera) : [];
  return found.length ? `camera warning: ${found.join(', ')}; the camera has drifted from the training photos, ` +
    'check the lamp and the focus' : '';
}

/** The whole decision from metadata.json's ``route`` block for a readable photo -> [route, reason]. */
export function decide(probability, stats, oodScore, rule) {
  const band = rule.review_band;
  const gate = rule.retake || {};
  let [route_, reason] = route(probability, rule.threshold, band ? [band.low, band.high] : null,
    retakeReasons(stats, oodScore, gate));
  const unusual = route_ === 'PASS' ? unusualReason(oodScore, gate.ood) : '';
  if (unusual) [route_, reason] = ['REVIEW', unusual];
  const warn = route_ === 'RETAKE' ? '' : warning(stats, rule);
  return [route_, warn ? `${reason}; ${warn}` : reason];
}

/** One CSV row as strings (empty cells where a value does not exist, e.g. unreadable files). */
export const REVIEWED_ROUTE = { defect: 'REJECT', ok: 'PASS' }; // what a person's label decides for the part

export function csvRow(file, route_, reason, probability, threshold, oodScore, stats, camera, modelVersion, timestamp,
  reviewedAs = '', checkedBy = '', checkedAt = '') {
  const num = (v, digits) => (v === null || v === undefined ? '' : fixed(v, digits));
  const s = stats || {};
  const hasStats = Object.keys(s).length > 0;
  return {
    file, route: route_, reason, defect_probability: num(probability, 6), threshold: num(threshold, 6),
    ood_score: num(oodScore, 3),
    camera_check: camera && camera.length ? camera.join('; ') : (hasStats ? 'ok' : ''),
    brightness: num(s.brightness, 2), contrast: num(s.contrast, 2), sharpness: num(s.sharpness, 1),
    model_version: modelVersion, timestamp,
    reviewed_as: reviewedAs || '', final_route: REVIEWED_ROUTE[reviewedAs] || '', checked_by: checkedBy || '',
    checked_at: checkedAt || '',
  };
}

/**
 * One CSV cell: quoted when it holds a comma, quote or line break; a text that a spreadsheet would
 * run as a formula (starting with = + - @, a tab or a carriage return) gets a leading single quote,
 * unless it is a plain number such as -0.25.
 */
export function csvCell(value) {
  let s = value === null || value === undefined ? '' : String(value);
  if (/^[=+\-@\t\r]/.test(s) && !/^-?\d+(\.\d+)?$/.test(s)) s = `'${s}`;
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** The CSV text for rows (objects keyed by CSV_COLUMNS), header first, \n line ends like the batch CLI's. */
export function csvText(rows) {
  const lines = [CSV_COLUMNS.join(',')];
  for (const r of rows) lines.push(CSV_COLUMNS.map((c) => csvCell(r[c])).join(','));
  return `${lines.join('\n')}\n`;
}

/** The causes in a RETAKE reason, without the measured numbers: 'camera check: sharpness high (2109.60 > 2011.80),
 * contrast low (3.10 < 21.40)' -> ['sharpness high', 'contrast low']. Two photos of one part never measure the same,
 * so "the same reason again" compares causes, not the text. */
export function reasonCauses(reason) {
  return (reason || '').replace(/\s*\([^)]*\)/g, '').split(/[;,]/)
    .map((c) => c.replace(/^\s*camera check:\s*/, '').trim()).filter(Boolean);
}
