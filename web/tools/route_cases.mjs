// Check web/src/route.js against the shared table of route cases (the one inspection/decision/route.py passes).
//   node web/tools/route_cases.mjs [tests/cases/route_cases.json]
// Prints one line per mismatch and a closing count; exits 1 on any mismatch.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { decide } from '../src/route.js';

const here = dirname(fileURLToPath(import.meta.url));
const file = process.argv[2] || join(here, '../../tests/cases/route_cases.json');
const { cases } = JSON.parse(readFileSync(file, 'utf8'));
let failed = 0;
for (const c of cases) {
  let got;
  try {
    got = decide(c.probability, c.stats, c.ood_score, c.rule);
  } catch (err) {
    got = ['error', String(err.message)];
  }
  if (got[0] !== c.route || got[1] !== c.reason) {
    failed += 1;
    console.log(`MISMATCH ${c.name}: expected ${JSON.stringify([c.route, c.reason])}, got ${JSON.stringify(got)}`);
  }
}
console.log(`route cases: ${cases.length - failed} passed, ${failed} failed`);
process.exit(failed || !cases.length ? 1 : 0);
