// What the operator is told and may do with a row: the action for its route and reason in plain words, which
// rows may be labelled for retraining (castings only), and a RETAKE that a new photo will not cure.
import { ACTION, reasonCauses } from './route.js';

/** What the operator does, in plain words, for a row's route and reason (the engineer's numbers stay in the reason
 * line below it). The first matching hint per cause, most specific first. */
const HINTS = [
  [/^second RETAKE/, 'Photographing it again did not help: a person inspects the part'],
  [/^unreadable/, 'The file could not be read: photograph the part again (JPEG or PNG)'],
  [/out-of-distribution/, 'This does not look like a casting from the top: centre the part and move labels, ' +
    'hands and other objects out of the frame'],
  [/brightness low/, 'Too dark: check the lamp, then photograph the part again'],
  [/brightness high/, 'Too bright: check the lamp and for glare, then photograph the part again'],
  [/contrast low/, 'Flat photo: check the lamp and that the part fills the frame'],
  [/contrast high/, 'Harsh photo: check for glare or a label in the frame'],
  [/sharpness low/, 'Blurred: check the focus and clean the lens'],
  [/sharpness high/, 'Grainy or cluttered: check the lamp and move labels out of the frame'],
];
export function operatorAction(row) {
  if (row.route === 'RETAKE' || row.escalated) {
    for (const [pattern, hint] of HINTS) if (pattern.test(row.reason || '')) return hint;
  }
  const warn = /camera warning/.test(row.reason || '') ? ' · the lighting or focus has drifted: check the lamp' : '';
  if (row.route === 'REVIEW' && /^unusual photo/.test(row.reason || '')) {
    return `A person inspects the part: the photo is unusual for the model (check the framing too)${warn}`;
  }
  return `${ACTION[row.route][0].toUpperCase()}${ACTION[row.route].slice(1)}${warn}`;
}

// A part can be corrected when its photo could be read (an unreadable file is no training image) and it is a
// casting: a RETAKE photo (a label card, a hand, a blank frame) gets labels only after the operator says
// "It is a casting", so non-castings never reach the retraining set as ok or defect.
// The same holds for a photo the line sent to a person only because it is unusual (out of distribution) or
// because it was RETAKE twice: it may not be a casting at all.
export const needsCasting = (row) => row.route === 'RETAKE' || row.escalated === true || /^unusual photo/.test(row.reason || '');
export const fixable = (row) => row.probability !== null && (!needsCasting(row) || row.casting === true);
export const confirmable = (row) => row.probability !== null && needsCasting(row) && row.casting !== true;

// One photo at a time (the camera, or one file) is a part being photographed again. A second RETAKE in a row for
// the same cause (e.g. "sharpness high", whatever the measured numbers) will not be cured by a third photo: the
// part goes to a person (REVIEW).
export function retakeEscalator() {
  let lastSingle = null;
  return function escalate(r) {
    const causes = reasonCauses(r.reason);
    const again = r.route === 'RETAKE' && lastSingle && lastSingle.route === 'RETAKE' &&
      reasonCauses(lastSingle.reason).some((c) => causes.includes(c));
    const out = again ? { ...r, route: 'REVIEW', reason: `second RETAKE for the same reason (${r.reason}): a person ` +
      'inspects the part', escalated: true } : r;
    lastSingle = again ? null : { route: r.route, reason: r.reason };
    return out;
  };
}
