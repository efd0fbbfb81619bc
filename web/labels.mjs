// Labelling: the outbox that keeps each label of this tab until the server has it, the annotator's
// name sent with it, and this tab's session (its timer and label rate). AUTO, the grid and the
// keys all label through give() and label() here.
import { opsStorage, sendOp } from './api.mjs';
import { renderAnnotators, stats } from './charts.mjs';
import { BACKOFF_MIN_MS, Outbox } from './outbox.mjs';
import { advance, current, forget, makeItem, markDone, setLatencyMark, unmarkDone } from './stage.mjs';
import { $, clock, num, sleep, store } from './util.mjs';

export const KEEP_DECODED = 3; // newest undo entries whose decoded image is kept
export const LS_ANNOTATOR = 'binann.annotator'; // the person's name: one per browser, shared by its tabs
const MAX_NAME = 64; // characters (code points), as the server counts them

/** The name sent with each label; empty: none given. */
let name = '';

/** This tab's session: the timer and the label rate. */
const session = { start: performance.now(), pausedAt: null, pausedMs: 0, labels: 0, times: [] };

/**
 * The labels of this tab until the server has them. Others call its methods and read its counts;
 * what it tells the page (its `on` callbacks) is set by setupLabels().
 */
export const outbox = new Outbox({ send: (op) => sendOp(op, name), storage: opsStorage, sleep, makeItem });

/** Wires the outbox's callbacks to the page (main.mjs): see Outbox's `on`. */
export function setupLabels({ on }) {
  outbox.on = on;
}

/** The connection is back: the next retry is not held back by the backoff of the failures before. */
export function retrySoon() {
  outbox.backoff = BACKOFF_MIN_MS;
}

// ---------------------------------------------------------------- labelling
/** Labels the image on screen and shows the next. */
export function label(kind, how = {}) {
  const item = current();
  if (!item) return;
  give(item, kind);
  if (!how.key) setLatencyMark(null);
  advance();
  renderSession();
}

/** Records a label of `item` (in the outbox, in the session's counts); returns its undo entry. */
export function give(item, kind, group = null) {
  resumeTimer();
  const entry = outbox.add(item, kind, name, group);
  const old = outbox.stack[outbox.stack.length - 1 - KEEP_DECODED];
  if (old && old.group === null) forget(old.item); // re-prepared on undo
  markDone(item.id);
  session.labels++;
  session.times.push(Date.now());
  return entry;
}

/** Takes undone labels (the outbox's undo entries) out of the session's counts. */
export function ungive(entries) {
  for (const entry of entries) {
    unmarkDone(entry.item.id);
    if (session.labels > 0) session.labels--;
    session.times.pop();
  }
}

// ---------------------------------------------------------------- session timer
function activeMs() {
  const now = session.pausedAt ?? performance.now();
  return now - session.start - session.pausedMs;
}

export function toggleTimer() {
  if (session.pausedAt === null) session.pausedAt = performance.now();
  else resumeTimer();
  renderSession();
}

export function resumeTimer() {
  if (session.pausedAt !== null) {
    session.pausedMs += performance.now() - session.pausedAt;
    session.pausedAt = null;
    renderSession();
  }
}

export function renderSession() {
  const ms = activeMs();
  const paused = session.pausedAt !== null;
  $('st-time').textContent = `${clock(ms)}${paused ? ' (paused)' : ''}`;
  $('pause-label').textContent = paused ? 'Resume timer' : 'Pause timer';
  $('st-session').textContent = String(session.labels);
  $('st-rate').textContent = ms > 1000 ? `${(session.labels / (ms / 1000)).toFixed(2)} images/s` : '–';
  const cutoff = Date.now() - 60000;
  while (session.times.length && session.times[0] < cutoff) session.times.shift();
  // Over the last minute, or the whole session when it is younger than that.
  const span = Math.min(60, Math.max(1, ms / 1000));
  $('st-minute').textContent = `${(session.times.length / span).toFixed(2)} images/s`;
  const s = stats();
  $('st-all').textContent = s ? `${num(s.last_minute)} labels last minute` : '–';
}

// ---------------------------------------------------------------- the annotator's name
/** The name sent with each label; empty: none given. */
export function annotator() {
  return name;
}

function cleanName(text) {
  // Control characters cannot be sent; the server trims and counts code points as here.
  return Array.from(String(text || '').replace(/\p{Cc}/gu, '').trim()).slice(0, MAX_NAME).join('');
}

/** Sets the annotator's name (`save`: for this browser's other tabs and the next visit too). */
export function setAnnotator(text, save) {
  name = cleanName(text);
  if (save) store.set('localStorage', LS_ANNOTATOR, name);
  document.body.classList.toggle('unnamed', !name);
  const s = stats();
  if (s) renderAnnotators(s.annotators);
}
