// Benchmark (not a test) of the person's speed on the page, in Chromium against the real server:
//   node tests/browser/bench-auto.mjs [--speeds 1,2,3,5] [--persons 400:60,...] [--seconds 60] [--grid-seconds 60] [--only auto|grid]
// A simulated person "sees" the truth of each image on screen and presses F a reaction time after a
// positive appears (normal; each person of --persons is MEAN:SD in ms, 400:60 by default), never
// for a negative; when AUTO asks which of two images a press was for, it answers from the truth.
// For each person and speed (after a calibration run by the same person), it prints the speed
// AUTO ran at, the share of positives labelled positive, of negatives labelled negative, how
// often AUTO asked and the page's reaction-time estimate at the start and the end; for each
// positive missed, its reaction time, how late the page handled the press and the estimate then;
// for each negative labelled positive, how many images after a positive it came. For the grid, it prints labels per minute of a person spending 150 ms per
// thumbnail plus 300 ms per positive, against the single view at the same cost per image.
import fs from 'node:fs';
import path from 'node:path';

import { launchBrowser, png, startServer, tmpdir, waitFor } from './lib.mjs';

const args = process.argv.slice(2);
const opt = (name, def) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : def;
};
const SPEEDS = opt('speeds', '1,2,3,5').split(',').map(Number);
const SECONDS = Number(opt('seconds', '60'));
const GRID_SECONDS = Number(opt('grid-seconds', '60'));
const ONLY = opt('only', '');
const POSITIVE_SHARE = 0.1;
const PERSONS = opt('persons', '400:60').split(',').map((p) => p.split(':').map(Number));

/** A folder of `n` small PNGs, a seeded tenth of them positive; returns {dir, truth: path -> bool}. */
function dataset(n, seed) {
  const dir = tmpdir('bench');
  let s = seed >>> 0;
  const rand = () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
  const truth = {};
  for (let i = 0; i < n; i++) {
    const positive = rand() < POSITIVE_SHARE;
    const name = `img_${String(i).padStart(4, '0')}.png`;
    const level = Math.floor(rand() * 200) + 20;
    fs.writeFileSync(path.join(dir, name), png(28, 28, (x, y) => (positive ? ((x + y) % 7 === 0 ? 255 : level) : (Math.hypot(x - 14, y - 14) < 9 ? level : 255 - level))));
    truth[name] = positive;
  }
  return { dir, truth };
}

/** The simulated person, inside the page: presses F after a normal reaction time for each positive. */
function person({ truth, mean, sd, seed }) {
  let s = seed >>> 0;
  const rand = () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return (s + 0.5) / 2 ** 32;
  };
  const normal = () => Math.sqrt(-2 * Math.log(rand())) * Math.cos(2 * Math.PI * rand());
  // A person's keydown carries the time the key went down, whenever the page gets to handle it
  // (browsers stamp input events in the input thread); a timer here fires late when the page is
  // busy, so the press is stamped with the time the person meant, not the time the timer fired.
  const key = (k, at) => {
    const event = new KeyboardEvent('keydown', { key: k, bubbles: true, cancelable: true });
    if (at !== undefined) Object.defineProperty(event, 'timeStamp', { value: at });
    document.dispatchEvent(event);
  };
  window.binannBench = { presses: 0, asked: 0, paths: {}, reactions: {}, late: [], asks: {}, order: [] };
  document.addEventListener('binann:onset', (e) => {
    const d = e.detail;
    if (!d.calibration) window.binannBench.paths[d.id] = d.path;
    if (!d.calibration) window.binannBench.order.push(d.id);
    const sees = d.calibration ? d.target : truth[d.path];
    if (!sees) return;
    const rt = mean + sd * normal();
    const at = d.t + rt;
    setTimeout(() => {
      window.binannBench.presses++;
      const late = performance.now() - at;
      window.binannBench.late.push(late);
      // The reaction time and how late the page handled the press, for the positives missed.
      const seen = window.binannDebug?.auto?.() ?? {};
      if (!d.calibration) window.binannBench.reactions[d.id] = `${Math.round(rt)} (+${Math.round(late)}; page: ${Math.round(seen.d)} ± ${Math.round(seen.sd)})`;
      key('f', at);
    }, Math.max(0, at - performance.now()));
  });
  document.addEventListener('binann:ask', (e) => {
    window.binannBench.asked++;
    const [a, b] = e.detail.paths.map((p) => truth[p]);
    const answer = a && b ? 'b' : a ? 'ArrowLeft' : b ? 'ArrowRight' : 'n';
    for (const id of e.detail.ids) window.binannBench.asks[id] = answer;
    setTimeout(() => key(answer), 700);
  });
}

async function server(n, seed) {
  const { dir, truth } = dataset(n, seed);
  const srv = await startServer({ datadir: dir, rundir: path.join(tmpdir('benchrun'), 'run') });
  return { srv, truth, dir };
}

async function stop({ srv, dir }) {
  await srv.stop();
  fs.rmSync(dir, { recursive: true, force: true });
  fs.rmSync(path.dirname(srv.rundir), { recursive: true, force: true });
}

/** One AUTO run at `speed` in `ctx`; the first run in it calibrates the reaction time first. */
async function autoRun(ctx, [mean, sd], speed, seed) {
  const n = Math.ceil(SECONDS * speed) + 40;
  const env = await server(n, seed);
  const page = await ctx.newPage();
  await page.addInitScript(person, { truth: env.truth, mean, sd, seed: seed * 7 + 1 });
  await page.goto(env.srv.url);
  await waitFor(() => page.evaluate(() => window.binannDebug.current() !== null), { what: 'an image' });
  if (!ctx.calibrated) {
    await page.keyboard.press('c');
    await waitFor(() => page.evaluate(() => window.binannDebug.mode() !== 'calibrate'), { timeout: 60000, what: 'calibration' });
    ctx.calibrated = true;
  }
  const before = await page.evaluate(() => ({ ...window.binannDebug.auto(), late: window.binannBench.late.length }));
  await page.locator('#speed').fill(String(speed));
  await page.keyboard.press('a');
  const started = Date.now();
  await new Promise((r) => setTimeout(r, SECONDS * 1000));
  // Stop: wait for a question to be answered, then pause; the images passed by close by themselves.
  await waitFor(() => page.evaluate(() => window.binannDebug.mode() === 'auto'), { timeout: 5000, what: 'no question open' });
  await page.keyboard.press('m');
  const elapsed = (Date.now() - started) / 1000;
  await waitFor(() => page.evaluate(() => window.binannDebug.auto().pending.length === 0 && window.binannDebug.pending() === 0), { timeout: 20000, what: 'everything saved' });
  const after = await page.evaluate(() => ({ ...window.binannDebug.auto(), bench: window.binannBench }));
  const hist = await env.srv.api('/api/history?since=0');
  let pos = 0;
  let posRight = 0;
  let neg = 0;
  let negRight = 0;
  const missed = [];
  const wrong = [];
  const paths = new Map(Object.entries(after.bench.paths).map(([id, p]) => [Number(id), p]));
  for (const l of hist.labels) {
    if (!paths.has(l.id)) throw new Error(`image ${l.id} labelled without being shown`);
    const positive = env.truth[paths.get(l.id)];
    if (positive) {
      pos++;
      if (l.label === 'positive') posRight++;
      else missed.push(`${after.bench.reactions[l.id] ?? 'no press'}${after.bench.asks[l.id] ? ` asked, answered ${after.bench.asks[l.id]}` : ''}`);
    } else {
      neg++;
      if (l.label === 'negative') negRight++;
      else {
        // A negative labelled positive: how many images after the last positive before it.
        const order = after.bench.order;
        const at = order.lastIndexOf(l.id);
        let back = 1;
        while (at - back >= 0 && !env.truth[paths.get(order[at - back])]) back++;
        wrong.push(`+${back}${after.bench.asks[l.id] ? ` asked, answered ${after.bench.asks[l.id]}` : ''}`);
      }
    }
  }
  await page.close();
  await stop(env);
  return {
    speed, labels: hist.labels.length, seconds: elapsed, pos, posRight, neg, negRight,
    presses: after.presses - (before.presses || 0), asked: after.ambiguous - (before.ambiguous || 0), d: after.d, sd: after.sd,
    start: { d: before.d, sd: before.sd },
    repeats: after.repeats - (before.repeats || 0), none: after.none - (before.none || 0), missed, wrong,
    late: after.bench.late.slice(before.late),
  };
}

async function gridRun(browser, view, seed) {
  const n = 900;
  const env = await server(n, seed);
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await ctx.newPage();
  await page.goto(env.srv.url);
  await waitFor(() => page.evaluate(() => window.binannDebug.current() !== null), { what: 'an image' });
  if (view === 'grid') {
    await page.keyboard.press('g');
    await waitFor(() => page.evaluate(() => window.binannDebug.grid().ready === 16), { what: 'the grid' });
  }
  const result = await page.evaluate(async ({ truth, view, seconds }) => {
    const key = (k) => document.dispatchEvent(new KeyboardEvent('keydown', { key: k, bubbles: true, cancelable: true }));
    const frame = () => new Promise((r) => requestAnimationFrame(r));
    const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
    const end = performance.now() + seconds * 1000;
    const start = performance.now();
    let labels = 0;
    const keys = ['1', '2', '3', '4', 'q', 'w', 'e', 'r', 'a', 's', 'd', 'f', 'z', 'x', 'c', 'v'];
    let last = null;
    while (performance.now() < end) {
      if (view === 'grid') {
        let g = window.binannDebug.grid();
        while (!(g.tiles.length && g.ready === g.tiles.length) || (last && g.tiles[0] === last)) {
          await frame();
          g = window.binannDebug.grid();
          if (performance.now() > end + 10000) return { labels, ms: performance.now() - start };
        }
        last = g.tiles[0];
        const tiles = [...document.querySelectorAll('#grid .tile')];
        const positives = tiles.map((t, i) => [i, truth[t.title.split(' · ')[0]]]).filter(([, p]) => p);
        await sleep(150 * tiles.length + 300 * positives.length);
        for (const [i] of positives) key(keys[i]);
        key('Enter');
        labels += tiles.length;
      } else {
        let img = document.querySelector('#stage img.photo');
        while (!img || !img.complete || img.dataset.id === last) {
          await frame();
          img = document.querySelector('#stage img.photo');
          if (performance.now() > end + 10000) return { labels, ms: performance.now() - start };
        }
        last = img.dataset.id;
        const positive = truth[document.querySelector('#path').textContent.trim()];
        await sleep(150 + (positive ? 300 : 0));
        key(positive ? 'f' : 'j');
        labels++;
      }
    }
    return { labels, ms: performance.now() - start };
  }, { truth: env.truth, view, seconds: GRID_SECONDS });
  await waitFor(() => page.evaluate(() => window.binannDebug.pending() === 0), { timeout: 30000, what: 'saved' });
  const s = await env.srv.stats();
  await ctx.close();
  await stop(env);
  return { view, labels: s.annotated, sent: result.labels, perMinute: (s.annotated / result.ms) * 60000 };
}

const pctOf = (a, b) => (b ? `${((100 * a) / b).toFixed(1)} %` : '–');

const browser = await launchBrowser();
try {
  if (ONLY !== 'grid') {
    console.log(`AUTO: simulated people (reaction time N(mean, sd)), ${POSITIVE_SHARE * 100} % positives, ${SECONDS} s per run`);
    console.log('| person | images/s chosen | shown | labels | positives labelled positive | negatives labelled negative | AUTO asked (share of presses) | d at the start / end |');
    console.log('|---|---|---|---|---|---|---|---|');
    for (const who of PERSONS) {
      // Each person calibrates once, in a browser profile of their own.
      const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
      for (const speed of SPEEDS) {
        const r = await autoRun(ctx, who, speed, Math.round(speed * 1000) + 17 + who[0] + who[1]);
        console.log(`| ${who[0]} ± ${who[1]} ms | ${speed} | ${(r.labels / r.seconds).toFixed(1)}/s | ${r.labels} | ${r.posRight} / ${r.pos} = ${pctOf(r.posRight, r.pos)} | ${r.negRight} / ${r.neg} = ${pctOf(r.negRight, r.neg)} | ${r.asked} of ${r.presses} (${pctOf(r.asked, r.presses)}) | ${Math.round(r.start.d)} ± ${Math.round(r.start.sd)} / ${Math.round(r.d)} ± ${Math.round(r.sd)} ms |`);
        if (r.missed.length || r.repeats || r.none) {
          const late = [...r.late].sort((a, b) => a - b);
          const q = (f) => (late.length ? Math.round(late[Math.min(late.length - 1, Math.floor(f * late.length))]) : 0);
          console.log(`  positives missed, their reaction time in ms (+ how late the page handled the press; the page's estimate then): ${r.missed.join(', ') || 'none'}; presses on an image already labelled: ${r.repeats}; too early: ${r.none}; negatives labelled positive, images after the positive before them: ${r.wrong.join(', ') || 'none'}; presses handled late by ms, median / p90 / max: ${q(0.5)} / ${q(0.9)} / ${q(1)}`);
        }
      }
      await ctx.close();
    }
  }
  if (ONLY !== 'auto') {
    console.log(`\nGrid: 150 ms per thumbnail + 300 ms per positive, ${GRID_SECONDS} s per run`);
    console.log('| view | labels saved | labels per minute |');
    console.log('|---|---|---|');
    for (const view of ['single', 'grid']) {
      const r = await gridRun(browser, view, 99);
      console.log(`| ${view === 'grid' ? 'grid 4 × 4' : 'one image at a time'} | ${r.labels} | ${r.perMinute.toFixed(0)} |`);
    }
  }
} finally {
  await browser.close();
}
