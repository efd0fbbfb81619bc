// The stage: the image on screen, the images decoded ahead of it, and where they come from
// (/api/next, which reserves them for this tab). It owns what is shown and what comes next. What
// it needs of the modules above it (the grid, AUTO, the outbox, the all-done screen) comes through
// hooks that main.mjs sets, so it imports none of them.
import { conn, next } from './api.mjs';
import { $, pct } from './util.mjs';

export const PREFETCH = 4; // images decoded ahead of the one shown
export const WANT = 12; // images asked of /api/next, plus those this tab holds
export const REFILL_BELOW = 6; // ask for more when fewer are queued

const slot = () => $('photo-slot');
const stageMsg = () => $('stage-message');
const doneScreen = () => $('done-screen');

/** What is shown and what comes next; changed only here (the rest of the page calls the functions below). */
const state = {
  current: null, // the item shown
  queue: [], // items to show next, in order
  done: new Set(), // ids labelled in this tab (pending or acknowledged): never shown again unless undone
  exhausted: false, // the last /api/next gave nothing new
  refilling: false, // a /api/next request is under way
  refillAgain: false, // another was asked for meanwhile
  lastNextAt: 0, // Date.now() of the last /api/next
  pendingMark: null, // performance mark of a keypress whose next image is not painted yet
};

/** What the stage asks of the rest of the page; setupStage() replaces these defaults. */
const hooks = {
  thumbnails: () => [], // the grid's thumbnails: reserved for this tab, never queued again meanwhile
  pending: () => [], // images AUTO passed by and has not decided: reserved likewise
  gridCells: () => 0, // rows × cols while the grid is on; 0 in the single view
  fillGrid: () => {}, // tops the grid up from the queue (called with /api/next's answer)
  leaving: () => {}, // the image on screen is about to change, or the stage to empty
  painted: () => {}, // the image on screen was painted
  renderDone: () => {}, // fills in the all-done screen
  unsaved: () => 0, // labels of this tab the server does not have yet (asked for on top of WANT)
  retryMs: () => 500, // how long to wait before asking again after a retryable failure
};

/** Wires the stage to the views above it (main.mjs): any of the `hooks` above. */
export function setupStage(given) {
  Object.assign(hooks, given);
}

/** The item on screen, or null. */
export function current() {
  return state.current;
}

/** The items queued to be shown next, in order (a copy). */
export function queued() {
  return state.queue.slice();
}

/** How many items are queued. */
export function queueLength() {
  return state.queue.length;
}

/** Whether the last /api/next gave nothing new. */
export function exhausted() {
  return state.exhausted;
}

/** Date.now() of the last /api/next. */
export function lastNextAt() {
  return state.lastNextAt;
}

/** `id` was labelled in this tab: never shown again unless undone. */
export function markDone(id) {
  state.done.add(id);
}

/** `id`'s label was undone: it may be shown again. */
export function unmarkDone(id) {
  state.done.delete(id);
}

/** The performance mark of a keypress whose next image is to be timed, or null for none. */
export function setLatencyMark(mark) {
  state.pendingMark = mark;
}

/** Takes the next queued item off the queue (null when none). */
export function take() {
  return state.queue.shift() || null;
}

/** Puts `items` back at the head of the queue, in order, kept reserved (sticky) by the next refill. */
export function requeue(items) {
  for (const item of [...items].reverse()) {
    item.sticky = true;
    state.queue.unshift(item);
  }
}

/** Hands the image on screen over to the grid: the stage is cleared, and the item returned. */
export function handOver() {
  const item = state.current;
  state.current = null;
  slot().replaceChildren();
  stageMsg().hidden = true;
  return item;
}

/**
 * What stays reserved for this tab when it asks for more: the image on screen, the thumbnails of
 * the grid, the images AUTO passed by that are not decided yet, and those the person went back to.
 */
export function keptIds() {
  return [state.current, ...hooks.thumbnails(), ...hooks.pending(), ...state.queue.filter((it) => it.sticky)].filter(Boolean).map((it) => it.id);
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
    const cells = hooks.gridCells();
    const count = (cells ? Math.max(WANT, cells + PREFETCH) : WANT) + hooks.unsaved() + (state.current ? 1 : 0);
    state.lastNextAt = Date.now();
    merge(await next(count, keptIds()));
  } catch (e) {
    if (e.retryable) {
      setTimeout(maybeRefill, hooks.retryMs());
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
  const skip = new Set([...sticky, ...hooks.thumbnails(), ...hooks.pending()].map((it) => it.id));
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
  if (hooks.gridCells()) {
    state.exhausted = state.queue.length === 0 && hooks.thumbnails().length === 0;
    hooks.fillGrid();
  } else if (!state.current) {
    if (state.queue.length) show(state.queue.shift());
    else renderEmptyStage();
  }
  prefetch();
}

export function maybeRefill(force) {
  if (force || state.queue.length < (hooks.gridCells() || REFILL_BELOW)) refill();
}

// ---------------------------------------------------------------- showing an image
/** Shows `item` (or the empty stage for null). */
export function show(item) {
  hooks.leaving();
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
    if (item.retry) setTimeout(() => { if (state.current === item) { prepare(item); show(item); } }, hooks.retryMs() * 2);
  }
  afterPaint();
  hooks.painted();
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
  // The grid's thumbnails (none while it is off) fill the stage.
  if (state.current || hooks.thumbnails().length) return;
  slot().replaceChildren();
  hooks.leaving();
  if (state.exhausted) {
    stageMsg().hidden = true;
    doneScreen().hidden = false;
    hooks.renderDone();
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
