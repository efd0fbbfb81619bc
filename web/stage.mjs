// The stage: the image on screen, the images decoded ahead of it, and where they come from
// (/api/next, which reserves them for this tab).
import { conn, next } from './api.mjs';
import { cancelCountdown, pendingItems, startCountdown } from './auto.mjs';
import { fill, gridItems } from './grid.mjs';
import { renderDone } from './main.mjs';
import { PREFETCH, REFILL_BELOW, WANT, grid, outbox, state } from './state.mjs';
import { $, pct } from './util.mjs';

const slot = () => $('photo-slot');
const stageMsg = () => $('stage-message');
const doneScreen = () => $('done-screen');

/**
 * What stays reserved for this tab when it asks for more: the image on screen, the thumbnails of
 * the grid, the images AUTO passed by that are not decided yet, and those the person went back to.
 */
export function keptIds() {
  return [state.current, ...gridItems(), ...pendingItems(), ...state.queue.filter((it) => it.sticky)].filter(Boolean).map((it) => it.id);
}

// ---------------------------------------------------------------- items and prefetching
export function makeItem(raw) {
  return { id: raw.id, path: raw.path, prob: raw.prob, url: raw.url, img: null, ok: null, ready: null, error: null, retry: false, sticky: false };
}

async function imageError(item) {
  try {
    const r = await fetch(item.url, { cache: 'no-store' });
    if (!r.ok) {
      const data = await r.json().catch(() => null);
      return (data && data.error && data.error.message) || `HTTP ${r.status}`;
    }
    return 'the browser cannot decode this file';
  } catch {
    item.retry = true;
    return 'the server is unreachable, so the image could not be loaded';
  }
}

/** Starts loading and decoding `item`'s image; resolves once `item.ok` says how it went. */
export function prepare(item) {
  if (item.img && !(item.ok === false && item.retry)) return item.ready;
  const img = new Image();
  img.className = 'photo';
  img.alt = `Image ${item.path}`;
  img.draggable = false;
  img.dataset.id = String(item.id);
  img.decoding = 'async';
  item.img = img;
  item.ok = null;
  item.retry = false;
  item.error = null;
  img.src = item.url;
  item.ready = img.decode().then(
    () => { item.ok = true; },
    async () => {
      item.error = await imageError(item);
      item.ok = false;
    },
  );
  return item.ready;
}

export function prefetch() {
  for (const item of state.queue.slice(0, PREFETCH)) prepare(item);
}

/** Lets the browser drop a labelled image's decoded pixels; it is prepared again if needed. */
export function forget(item) {
  if (item && item.img && item !== state.current) {
    item.img = null;
    item.ok = null;
  }
}

// /api/next hands out a fresh list and releases what this client held before, except the ids
// kept. The list may start with images this tab has labelled but not yet saved: filtered out.
export async function refill() {
  if (state.refilling) {
    state.refillAgain = true;
    return;
  }
  state.refilling = true;
  try {
    const count = (grid.on ? Math.max(WANT, grid.rows * grid.cols + PREFETCH) : WANT) + outbox.unsavedLabels + (state.current ? 1 : 0);
    state.lastNextAt = Date.now();
    merge(await next(count, keptIds()));
  } catch (e) {
    if (e.retryable) {
      setTimeout(maybeRefill, outbox.backoff);
    } else {
      notice(`Could not get images: ${e.message}`, 'error');
    }
    if (!state.current) renderEmptyStage();
  } finally {
    state.refilling = false;
    if (state.refillAgain) {
      state.refillAgain = false;
      maybeRefill(true);
    }
  }
}

function merge(list) {
  const known = new Map(state.queue.map((it) => [it.id, it]));
  const sticky = state.queue.filter((it) => it.sticky);
  // An answer to a request sent before the grid or AUTO took images off the queue may list them.
  const skip = new Set([...sticky, ...gridItems(), ...pendingItems()].map((it) => it.id));
  const fresh = [];
  for (const raw of list) {
    if (state.current && raw.id === state.current.id) {
      if (state.current.prob !== raw.prob) {
        state.current.prob = raw.prob;
        renderMeta();
      }
      continue;
    }
    if (state.done.has(raw.id) || skip.has(raw.id)) continue;
    skip.add(raw.id);
    const item = known.get(raw.id) || makeItem(raw);
    item.prob = raw.prob;
    item.path = raw.path;
    fresh.push(item);
  }
  state.queue = sticky.concat(fresh);
  state.exhausted = state.queue.length === 0;
  if (grid.on) {
    state.exhausted = state.queue.length === 0 && grid.tiles.length === 0;
    fill(false);
  } else if (!state.current) {
    if (state.queue.length) show(state.queue.shift());
    else renderEmptyStage();
  }
  prefetch();
}

export function maybeRefill(force) {
  if (force || state.queue.length < (grid.on ? grid.rows * grid.cols : REFILL_BELOW)) refill();
}

// ---------------------------------------------------------------- showing an image
/** Shows `item` (or the empty stage for null). */
export function show(item) {
  cancelCountdown();
  state.current = item;
  renderMeta();
  if (!item) {
    renderEmptyStage();
    return;
  }
  doneScreen().hidden = true;
  const ready = prepare(item);
  if (item.ok !== null) {
    paint(item);
  } else {
    const loading = setTimeout(() => {
      if (state.current === item && item.ok === null) {
        slot().replaceChildren();
        stageMsg().textContent = 'Loading…';
        stageMsg().hidden = false;
      }
    }, 120);
    ready.then(() => {
      clearTimeout(loading);
      if (state.current === item) paint(item);
    });
  }
  prefetch();
  maybeRefill();
}

/** Shows the next queued image (or the empty stage). */
export function advance() {
  show(state.queue.shift() || null);
  if (!state.current) maybeRefill(true);
}

/** Shows `item` again, putting the image shown now back at the head of the queue. */
export function reshow(item) {
  if (state.current && state.current.id !== item.id) {
    state.current.sticky = true;
    state.queue.unshift(state.current);
  }
  state.queue = state.queue.filter((it) => it.id !== item.id);
  item.sticky = false;
  show(item);
}

export function fit(item) {
  const img = item.img;
  const w = img.naturalWidth;
  const h = img.naturalHeight;
  const W = slot().clientWidth;
  const H = slot().clientHeight;
  if (!w || !h || !W || !H) return;
  const f = Math.min(W / w, H / h);
  if (f >= 2) {
    // Small images: an integer scale, pixels kept crisp.
    const k = Math.floor(f);
    img.style.width = `${w * k}px`;
    img.style.height = `${h * k}px`;
    img.classList.add('pixelated');
  } else {
    img.style.width = '';
    img.style.height = '';
    img.classList.remove('pixelated');
  }
}

function paint(item) {
  stageMsg().hidden = true;
  if (item.ok) {
    fit(item);
    if (slot().firstChild !== item.img) slot().replaceChildren(item.img);
  } else {
    slot().replaceChildren();
    stageMsg().replaceChildren();
    const h = document.createElement('strong');
    h.textContent = 'This image cannot be shown';
    const p = document.createElement('span');
    p.textContent = item.error || 'unknown error';
    const hint = document.createElement('span');
    hint.className = 'hint';
    hint.textContent = item.retry ? 'It will load again once the server is back.' : 'Press S to skip it.';
    stageMsg().append(h, p, hint);
    stageMsg().hidden = false;
    if (item.retry) setTimeout(() => { if (state.current === item) { prepare(item); show(item); } }, outbox.backoff * 2);
  }
  afterPaint();
  startCountdown();
}

// The keypress -> next image painted latency, for the browser test that measures it.
window.binannLatencies = [];
function afterPaint() {
  const mark = state.pendingMark;
  if (!mark) return;
  state.pendingMark = null;
  requestAnimationFrame(() => requestAnimationFrame(() => {
    const end = `${mark}-painted`;
    performance.mark(end);
    try {
      const m = performance.measure('binann key to next image', mark, end);
      window.binannLatencies.push(m.duration);
    } catch { /* marks cleared */ }
    performance.clearMarks(mark);
    performance.clearMarks(end);
  }));
}

export function renderEmptyStage() {
  if (state.current || (grid.on && grid.tiles.length)) return;
  slot().replaceChildren();
  cancelCountdown();
  if (state.exhausted) {
    stageMsg().hidden = true;
    doneScreen().hidden = false;
    renderDone();
  } else {
    doneScreen().hidden = true;
    stageMsg().textContent = conn.unreachable ? 'Waiting for the server…' : conn.blocked ? 'The server refuses this page (see above).' : 'Loading…';
    stageMsg().hidden = false;
  }
  state.pendingMark = null;
}

export function renderMeta() {
  const item = state.current;
  const path = $('path');
  // The box is right-to-left so a long path keeps its file name visible; the text itself must
  // stay left-to-right, or "003/1.png" shows as "png.003/1".
  const text = document.createElement('span');
  text.dir = 'ltr';
  text.textContent = item ? item.path : '\u00a0';
  path.replaceChildren(text);
  path.title = item ? `${item.path} (id ${item.id})` : 'File path';
  path.dataset.id = item ? String(item.id) : '';
  const p = item && typeof item.prob === 'number' ? item.prob : null;
  $('prob-text').textContent = p === null ? (item ? 'no prediction yet' : '') : `P(positive) ${pct(p)}`;
  $('prob-meter').style.width = p === null ? '0%' : `${p * 100}%`;
  $('prob').hidden = !item;
  document.documentElement.style.setProperty('--p', p === null ? '0' : String(p));
  document.body.classList.toggle('has-prob', p !== null);
}

window.addEventListener('resize', () => {
  if (state.current && state.current.ok) fit(state.current);
});

let noticeTimer = null;
/** A short message under the image (errors stay longer). */
export function notice(text, kind = 'info') {
  const el = $('notice');
  el.textContent = text;
  el.className = `notice ${kind}`;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { el.textContent = ''; }, kind === 'error' ? 15000 : 4000);
}
