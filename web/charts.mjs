// Statistics and charts: /api/stats and /api/history, drawn as text and inline SVG. What it needs
// of the labelling above it (the annotator's name, what follows new statistics) comes through the
// hooks main.mjs sets.
import { api } from './api.mjs';
import { renderSeedCount } from './seeds.mjs';
import { current, exhausted, lastNextAt, maybeRefill } from './stage.mjs';
import { $, ago, duration, num, pct, plural } from './util.mjs';

const STATS_MS = 2000;
const KEEPALIVE_MS = 45000; // re-ask /api/next when idle, so the server keeps our images reserved
const DONE_POLL_MS = 5000; // on the all-done screen, look for images released by other tabs
const ROLL = 50; // window of the rolling accuracy

/** The charts' copy of /api/history. */
const hist = { entries: [], busy: false };

let lastStats = null; // the last /api/stats answer
let rankingStamp = null; // identifies the ranking the queue came from

/** What the charts ask of the page; setupCharts() replaces these defaults. */
const hooks = {
  annotator: () => '', // the name sent with the requests, and marked in the list of annotators
  updated: () => {}, // new statistics are drawn: what else shows them follows
};

/** Wires the charts to the page (main.mjs): any of the `hooks` above. */
export function setupCharts(given) {
  Object.assign(hooks, given);
}

/** The last /api/stats answer, or null before the first. */
export function stats() {
  return lastStats;
}

// Labels in force per annotator; names are the people's own text, so never HTML.
export function renderAnnotators(list) {
  const dl = $('st-annotators');
  const rows = [];
  for (const a of list || []) {
    const dt = document.createElement('dt');
    dt.textContent = a.name || '(no name)';
    dt.title = dt.textContent;
    dt.classList.toggle('unnamed', !a.name);
    dt.classList.toggle('me', a.name !== '' && a.name === hooks.annotator());
    const dd = document.createElement('dd');
    dd.textContent = `${num(a.annotated)}${a.skipped ? ` + ${num(a.skipped)} skipped` : ''}`;
    rows.push(dt, dd);
  }
  if (!rows.length) {
    const dt = document.createElement('dt');
    dt.textContent = 'no labels yet';
    rows.push(dt, document.createElement('dd'));
  }
  dl.replaceChildren(...rows);
}

// How much of the folder the AI has seen (predicted, labelled or skipped) and the time left.
function coverageText(m, total) {
  const predicted = `${pct(m.predicted_share)} of images (${num(m.predicted)})`;
  if (typeof m.seen !== 'number' || !total || m.seen >= total) return predicted;
  const eta = typeof m.seen_eta_s === 'number' ? `, the rest in ~${duration(m.seen_eta_s)}` : '';
  return `${predicted}; AI has seen ${pct(m.seen / total)}${eta}`;
}

let statsBusy = false;
let statsSoon = null;
export async function refreshStats() {
  if (statsBusy) return;
  statsBusy = true;
  try {
    const s = await api('GET', '/api/stats', undefined, hooks.annotator());
    lastStats = s;
    renderStats(s);
    checkRanking(s);
    await syncHistory();
  } catch { /* the banner says it */ } finally {
    statsBusy = false;
  }
}

// Soon after labels are saved, so the counts follow the keys without waiting for the poll.
export function refreshStatsSoon() {
  if (!statsSoon) statsSoon = setTimeout(() => { statsSoon = null; refreshStats(); }, 250);
}

export async function pollStats() {
  await refreshStats();
  if (exhausted() && !current() && Date.now() - lastNextAt() > DONE_POLL_MS) maybeRefill(true);
  else if (Date.now() - lastNextAt() > KEEPALIVE_MS) maybeRefill(true);
  setTimeout(pollStats, STATS_MS);
}

function renderStats(s) {
  const share = s.total ? (s.annotated + s.skipped) / s.total : 0;
  $('progress-text').textContent = `${num(s.annotated + s.skipped)} / ${num(s.total)} done`;
  $('progress-bar').value = share;
  $('st-annotated').textContent = `${num(s.annotated)} / ${num(s.total)}`;
  $('st-positives').textContent = num(s.positives);
  $('st-negatives').textContent = num(s.negatives);
  $('st-skipped').textContent = num(s.skipped);
  $('st-remaining').textContent = num(s.remaining);
  renderAnnotators(s.annotators);
  const m = s.model;
  $('model-none').hidden = !!m;
  $('model-stats').hidden = !m;
  if (m) {
    $('md-age').textContent = `#${m.checkpoint_generation}, ${ago(m.age_s)}`;
    $('md-trained').textContent = `${num(m.trained_on)} labels (${num(m.positives_trained_on)} positive)`;
    $('md-predicted').textContent = coverageText(m, s.total);
    $('md-selector').textContent = `${m.selector}, ranking ${ago(m.ranking_age_s)}`;
    const loss = typeof m.loss === 'number' ? `, loss ${m.loss.toFixed(3)}` : '';
    $('md-net').textContent = `${m.backbone} ${m.input_size}px, ${m.mode}${loss}`;
  }
  const problems = s.journal_problems || [];
  $('journal-problems').textContent = problems.join(' ');
  $('journal-problems').hidden = problems.length === 0;
  $('left-text').textContent = leftText(s.positives_left);
  renderSeedCount(s.seed_images);
  document.body.classList.toggle('can-stop', !!(s.positives_left && s.positives_left.can_stop));
  $('md-online').textContent = s.online ? `${pct(s.online.accuracy)} of ${num(s.online.evaluated)} labels` : 'no label judged yet';
  hooks.updated();
}

/**
 * The estimate of the positives left, in words (see docs/design.md: Rare positives). Until the
 * server says it is known (enough random checks, a narrow interval), only what is known: the
 * checks so far and the interval's high end, not an estimate of 0 and a recall of 100 %.
 */
export function leftText(left) {
  if (!left) return 'Not estimated yet: it appears after the first random check.';
  const round = (v) => num(Math.round(v));
  if (!left.known) return `Not known yet: ${plural(left.audits, 'random check')} so far, at most ${round(left.high)} left (95 %).`;
  const checks = `${plural(left.audits, 'random check')}, ${num(left.audit_positives)} positive`;
  let text = `About ${round(left.estimate)} positives are still unlabelled (95 %: ${round(left.low)}–${round(left.high)}; ${checks}).`;
  if (left.found > 0) text += ` Recall so far ≈ ${pct(left.recall)} (${pct(left.recall_low)}–${pct(left.recall_high)}).`;
  if (left.can_stop) text += ' At least 95 % of the positives are likely found: you can stop, or export and let the model label the rest.';
  return text;
}

// A new ranking reorders what comes next: ask for the list again (the shown image stays).
function checkRanking(s) {
  const m = s.model;
  const stamp = m ? `${m.checkpoint_generation}/${Math.round(Date.now() / 1000 - m.ranking_age_s)}` : s.selector || 'none';
  if (rankingStamp !== null && stamp !== rankingStamp) {
    const [gen, t] = stamp.split('/');
    const [ogen, ot] = rankingStamp.split('/');
    if (gen !== ogen || t === undefined || ot === undefined || Math.abs(Number(t) - Number(ot)) > 2) maybeRefill(true);
  }
  rankingStamp = stamp;
}

// ---------------------------------------------------------------- charts
async function syncHistory() {
  if (hist.busy) return;
  hist.busy = true;
  try {
    const n = hist.entries.length;
    const r = await api('GET', `/api/history?since=${Math.max(0, n - 1)}`);
    const same = (a, b) => a && b && a.id === b.id && a.label === b.label && a.time_ms === b.time_ms;
    if (n > 0 && (r.total < n || !same(r.labels[0], hist.entries[n - 1]))) {
      // Something before our end changed (undo, relabel): start over.
      const all = await api('GET', '/api/history?since=0');
      hist.entries = all.labels;
    } else {
      hist.entries = hist.entries.concat(r.labels.slice(n > 0 ? 1 : 0));
    }
    drawCharts();
  } finally {
    hist.busy = false;
  }
}

const CW = 320;
const CH = 150;
const PAD = { l: 34, r: 8, t: 8, b: 24 };

function scaleFns(xmax, ymax) {
  const w = CW - PAD.l - PAD.r;
  const h = CH - PAD.t - PAD.b;
  return [(x) => (PAD.l + (x / xmax) * w).toFixed(1), (y) => (PAD.t + h - (y / ymax) * h).toFixed(1)];
}

function downsample(points, max = 300) {
  if (points.length <= max) return points;
  const step = points.length / max;
  const out = [];
  for (let i = 0; i < max; i++) out.push(points[Math.floor(i * step)]);
  out.push(points[points.length - 1]);
  return out;
}

function pathOf(points, sx, sy) {
  return points.map(([x, y], i) => `${i ? 'L' : 'M'}${sx(x)},${sy(y)}`).join(' ');
}

function axes(xmax, ymax, sx, sy, ylabels, xlabel) {
  const x0 = sx(0);
  const y0 = sy(0);
  let g = `<line class="axis" x1="${x0}" y1="${y0}" x2="${sx(xmax)}" y2="${y0}"/>`;
  g += `<line class="axis" x1="${x0}" y1="${y0}" x2="${x0}" y2="${sy(ymax)}"/>`;
  for (const [v, text] of ylabels) {
    g += `<line class="grid" x1="${x0}" y1="${sy(v)}" x2="${sx(xmax)}" y2="${sy(v)}"/>`;
    g += `<text class="tick" x="${PAD.l - 4}" y="${sy(v)}" text-anchor="end" dominant-baseline="middle">${text}</text>`;
  }
  g += `<text class="tick" x="${x0}" y="${CH - 6}">0</text>`;
  g += `<text class="tick" x="${sx(xmax)}" y="${CH - 6}" text-anchor="end">${num(xmax)}</text>`;
  g += `<text class="tick" x="${(PAD.l + CW - PAD.r) / 2}" y="${CH - 6}" text-anchor="middle">${xlabel}</text>`;
  return g;
}

function svg(label, body) {
  return `<svg viewBox="0 0 ${CW} ${CH}" role="img" aria-label="${label}" preserveAspectRatio="xMidYMid meet">${body}</svg>`;
}

function drawCharts() {
  const s = lastStats;
  const entries = hist.entries;
  const n = entries.length;
  // Cumulative positives found, against what a random order would find.
  const box = $('chart-discovery');
  if (!n) {
    box.innerHTML = '<p class="chart-empty">No labels yet.</p>';
    $('chart-discovery-cap').textContent = 'Positives found versus labels given, beside a random order.';
  } else {
    const points = [[0, 0]];
    let pos = 0;
    entries.forEach((e, i) => {
      if (e.label === 'positive') pos++;
      points.push([i + 1, pos]);
    });
    const est = s && s.model && typeof s.model.estimated_positive_rate === 'number' ? s.model.estimated_positive_rate : null;
    const rate = est !== null ? est : pos / n;
    const ymax = Math.max(1, pos, n * rate);
    const [sx, sy] = scaleFns(n, ymax);
    const yl = [[0, '0'], [ymax, num(Math.round(ymax))]];
    let body = axes(n, ymax, sx, sy, yl.slice(1), 'labels given');
    body += `<path class="line random" d="M${sx(0)},${sy(0)} L${sx(n)},${sy(n * rate)}"/>`;
    body += `<path class="line found" d="${pathOf(downsample(points), sx, sy)}"/>`;
    box.innerHTML = svg(`Positives found: ${pos} in ${n} labels; a random order would give about ${(n * rate).toFixed(0)}`, body);
    const gain = n * rate > 0 ? ` (${(pos / (n * rate)).toFixed(1)}×)` : '';
    $('chart-discovery-cap').innerHTML = `<span class="key found"></span>${num(pos)} positives found in ${num(n)} labels; <span class="key random"></span>random order ≈ ${num(Math.round(n * rate))}${gain}${est !== null ? ', rate estimated by the model' : ''}.`;
  }
  // Rolling online accuracy over the labels that had a probability when they were given.
  const abox = $('chart-accuracy');
  const window_ = [];
  let right = 0;
  const points = [];
  entries.forEach((e, i) => {
    if (typeof e.prob !== 'number') return;
    const ok = (e.prob >= 0.5) === (e.label === 'positive') ? 1 : 0;
    window_.push(ok);
    right += ok;
    if (window_.length > ROLL) right -= window_.shift();
    points.push([i + 1, right / window_.length]);
  });
  if (!points.length) {
    const why = s && s.model ? 'No label judged by the model yet' : 'Appears once a model exists';
    abox.innerHTML = `<p class="chart-empty">${why}.</p>`;
    $('chart-accuracy-cap').textContent = 'The model\'s accuracy on each new label, judged by the probability it showed before the label.';
  } else {
    const [sx, sy] = scaleFns(n, 1);
    let body = axes(n, 1, sx, sy, [[0.5, '50%'], [1, '100%']], 'labels given');
    body += `<path class="line acc" d="${pathOf(downsample(points), sx, sy)}"/>`;
    const last = points[points.length - 1][1];
    abox.innerHTML = svg(`Rolling accuracy ${pct(last)}`, body);
    const overall = s && s.online ? `; ${pct(s.online.accuracy)} over all ${num(s.online.evaluated)}` : '';
    $('chart-accuracy-cap').textContent = `Model accuracy before each label, last ${Math.min(ROLL, window_.length)}: ${pct(last)}${overall}.`;
  }
}

