// The README's "## Keys" table must say what the page's key table (web/keys.mjs) does.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { KEYS, MODES, actionFor, tableHeader, tableRows } from '../../web/keys.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The first Markdown table after `heading` in README.md, as rows of cells. */
function readmeTable(heading) {
  const text = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const start = text.indexOf(`\n${heading}\n`);
  assert.ok(start >= 0, `README.md has no "${heading}" section`);
  const section = text.slice(start + heading.length + 2).split(/\n## /)[0];
  const lines = section.split('\n').filter((l) => l.startsWith('|'));
  const cells = (l) => l.slice(1, l.endsWith('|') ? -1 : undefined).split(/(?<!\\)\|/).map((c) => c.trim().replace(/\\\|/g, '|'));
  return lines.filter((l) => !/^\|[\s|:-]+\|$/.test(l)).map(cells);
}

test('the README\'s key table is the page\'s key table', () => {
  const [header, ...rows] = readmeTable('## Keys');
  assert.deepEqual(header, tableHeader());
  assert.deepEqual(rows, tableRows());
});

test('the key table is consistent: no key does two things in one mode', () => {
  for (const mode of MODES.map((m) => m.id)) {
    const seen = new Map();
    for (const row of KEYS) {
      if (!row[mode]) continue;
      for (const k of row.keys) {
        assert.ok(!seen.has(k), `${JSON.stringify(k)} is both ${seen.get(k)} and ${row.name} in ${mode}`);
        seen.set(k, row.name);
      }
    }
  }
  assert.equal(actionFor('F', 'manual'), 'positive');
  assert.equal(actionFor(' ', 'manual'), 'pause');
  assert.equal(actionFor(' ', 'auto'), 'positive');
  assert.equal(actionFor('m', 'manual'), null);
});
