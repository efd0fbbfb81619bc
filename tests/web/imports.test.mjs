// The page's modules (web/*.mjs) import each other without cycles: main.mjs wires the others, and
// a module lower down is told about the ones above it through hooks, never by importing them. In a
// cycle, whichever module the browser evaluates first sees the other's bindings uninitialised, and
// the order depends on which one happens to be imported first.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const WEB = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'web');

// Static imports and re-exports (`import {a} from './x.mjs'`, `import * as x from`, `import './x.mjs'`,
// `export {a} from`, `export * from`), possibly over several lines, and dynamic `import('./x.mjs')`.
// Each must start a line (comments and strings that mention one do not).
const PATTERNS = [
  /^[ \t]*import\s*(?:[\w$*{}\s,]+?\s*from\s*)?['"]([^'"]+)['"]/gm,
  /^[ \t]*export\s*(?:\*(?:\s*as\s+[\w$]+)?|\{[^}]*\})\s*from\s*['"]([^'"]+)['"]/gm,
  /\bimport\(\s*['"]([^'"]+)['"]\s*\)/g,
];

/** The modules `text` imports: paths relative to web/ (the page serves web/ at the site's root). */
function importsOf(text, file) {
  const out = new Set();
  for (const re of PATTERNS) {
    for (const m of text.matchAll(re)) {
      const spec = m[1];
      if (!spec.startsWith('.') && !spec.startsWith('/')) continue; // not one of the page's files
      const abs = spec.startsWith('/') ? path.join(WEB, spec) : path.resolve(WEB, path.dirname(file), spec);
      out.add(path.relative(WEB, abs).split(path.sep).join('/'));
    }
  }
  return [...out].sort();
}

/** The import graph of the page: module -> the modules it imports. */
function webGraph() {
  const graph = new Map();
  for (const file of fs.readdirSync(WEB).filter((f) => f.endsWith('.mjs')).sort()) {
    graph.set(file, importsOf(fs.readFileSync(path.join(WEB, file), 'utf8'), file));
  }
  return graph;
}

/**
 * The import cycles of `graph`, each as [a, b, ..., a]: one for each import that closes a cycle
 * (a back edge of a depth-first walk), so none means the graph has no cycle.
 */
function cycles(graph) {
  const found = [];
  const state = new Map(); // module -> 'open' (on the path being walked) | 'done'
  const trail = [];
  const walk = (m) => {
    state.set(m, 'open');
    trail.push(m);
    for (const dep of graph.get(m) || []) {
      if (state.get(dep) === 'open') found.push([...trail.slice(trail.indexOf(dep)), dep]);
      else if (!state.has(dep)) walk(dep);
    }
    trail.pop();
    state.set(m, 'done');
  };
  for (const m of graph.keys()) if (!state.has(m)) walk(m);
  return found;
}

test('the cycle finder finds direct and indirect cycles, and none in a tree', () => {
  const g = (o) => new Map(Object.entries(o));
  assert.deepEqual(cycles(g({ a: ['b'], b: ['c'], c: [] })), []);
  assert.deepEqual(cycles(g({ a: ['b', 'c'], b: ['c'], c: [] })), []);
  assert.deepEqual(cycles(g({ a: ['b'], b: ['a'] })), [['a', 'b', 'a']]);
  assert.deepEqual(cycles(g({ main: ['stage'], stage: ['grid'], grid: ['auto'], auto: ['stage'] })), [['stage', 'grid', 'auto', 'stage']]);
  assert.deepEqual(cycles(g({ a: ['a'] })), [['a', 'a']]);
});

test('imports are read however they are written, and comments are not imports', () => {
  const text = [
    "import { a, b as c } from './a.mjs';",
    'import {',
    '  d,',
    "} from './sub/../d.mjs';",
    "import * as e from \"./e.mjs\";",
    "import './f.mjs';",
    "export { g } from './g.mjs';",
    "export * from './h.mjs';",
    "const i = await import('./i.mjs');",
    "import x from '/x.mjs';",
    "// import { no } from './comment.mjs';",
    "const s = 'import { no } from \"./string.mjs\"';",
    "import fs from 'node:fs';",
  ].join('\n');
  assert.deepEqual(importsOf(text, 'main.mjs'), ['a.mjs', 'd.mjs', 'e.mjs', 'f.mjs', 'g.mjs', 'h.mjs', 'i.mjs', 'x.mjs']);
});

test('the page\'s modules import each other without a cycle', () => {
  const graph = webGraph();
  assert.ok(graph.get('main.mjs')?.includes('stage.mjs'), `the scan found main.mjs's imports: ${JSON.stringify([...graph])}`);
  for (const [file, deps] of graph) {
    for (const dep of deps) assert.ok(graph.has(dep), `web/${file} imports ${dep}, which is not a module of web/`);
  }
  const found = cycles(graph);
  assert.deepEqual(found, [], `import cycles: ${found.map((c) => c.join(' -> ')).join('; ')}`);
});
