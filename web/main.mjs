// binann's annotation page: keyboard-first labelling with decoded prefetching, an outbox that
// keeps labels until the server has them, AUTO mode, statistics and charts. Native ES modules,
// no build step, no dependencies:
//   util     storage, formatting          api     requests, the connection, the tab's client id
//   outbox   labels until acknowledged    labels  the outbox, the annotator, the session timer
//   stage    the image shown, prefetching auto    AUTO mode
//   rt       reaction time, attribution   calibrate  measuring the reaction time
//   grid     the grid view                charts  statistics and charts
//   keys     the key table (handler, help, README)
//   seeds    example images dropped on the page
//   main     wiring, undo, input, start (this file)
// No module imports one that imports it back (tests/web/imports.test.mjs checks it): this file
// imports the others and tells the lower ones what they need of the higher (the stage of AUTO and
// the grid, the charts of the annotator) through their setup functions' hooks.
import { claimClientId, conn, similar } from './api.mjs';
import { answer, applySpeed, autoAsking, autoDebug, autoOn, autoPaused, beforeUndo, cancelCountdown, loadSpeed, pendingItems, press, setAuto, setAutoPaused, skip as autoSkip, startCountdown, undone } from './auto.mjs';
import { calibrating, calibrationPress, cancelCalibration, startCalibration } from './calibrate.mjs';
import { pollStats, refreshStatsSoon, setupCharts, stats } from './charts.mjs';
import { confirm, fill, gridCells, gridDebug, gridItems, gridOn, loadGridSize, tileIndex, toggle, toggleGrid, undoGrid } from './grid.mjs';
import { actionFor, renderHelp } from './keys.mjs';
import { LS_ANNOTATOR, annotator, label, outbox, renderSession, retrySoon, setAnnotator, setupLabels, toggleTimer, ungive } from './labels.mjs';
import { wireSeedDrop } from './seeds.mjs';
import { current, exhausted, makeItem, markDone, maybeRefill, notice, prepare, queued, renderEmptyStage, renderMeta, requeue, reshow, setLatencyMark, setupStage, unmarkDone } from './stage.mjs';
import { $, plural, store } from './util.mjs';

const LS_DISPLAY = 'binann.display';

// ---------------------------------------------------------------- the modules, wired together
setupStage({
  thumbnails: gridItems,
  pending: pendingItems,
  gridCells: () => (gridOn() ? gridCells() : 0),
  fillGrid: () => fill(false),
  leaving: cancelCountdown,
  painted: startCountdown,
  renderDone,
  unsaved: () => outbox.unsavedLabels,
  retryMs: () => outbox.backoff,
});

setupCharts({
  annotator,
  updated() {
    renderSession();
    if (!current() && exhausted()) renderDone();
  },
});

setupLabels({
  on: {
    change: renderSaveState,
    acked(op, r) {
      // A positive unlike any labelled so far: the server put its look-alikes next for this tab.
      if (r && r.lookalikes && r.lookalikes.length) {
        notice(`A new kind of positive: ${plural(r.lookalikes.length, 'look-alike')} of it come next.`);
        maybeRefill(true);
      }
    },
    undone(op, r) {
      if (op.show) {
        const item = makeItem(r);
        unmarkDone(item.id);
        if (gridOn()) undoGrid([{ item, label: r.label }]);
        else reshow(item);
        notice(`Undone: ${r.label || 'label'} for ${r.path}`);
      } else if (op.id !== null && r.id !== op.id) {
        notice(`The server undid the label of ${r.path}, not the one expected; check it.`, 'error');
      }
    },
    refused(op, e) {
      if (op.kind === 'label') notice(`The server refused the label of ${op.item ? op.item.path : op.id}: ${e.message}`, 'error');
      else if (e.code === 'nothing_to_undo') notice('Nothing to undo.');
      else notice(`Undo failed: ${e.message}`, 'error');
    },
    trouble(e) {
      if (e.status !== 0 && !conn.blocked) {
        conn.saveError = e.message;
        renderBanner();
      }
    },
    recovered() {
      if (conn.saveError) {
        conn.saveError = null;
        renderBanner();
      }
    },
    drained(hadTrouble) {
      refreshStatsSoon();
      renderSaveState();
      if (hadTrouble && !outbox.pending) notice('Connection restored: every label is saved.');
    },
  },
});
conn.onChange = renderBanner;

// ---------------------------------------------------------------- undo
/**
 * Takes back the newest label, or the newest confirmed grid in one step, and shows those images
 * again (in the grid: as thumbnails, marked as they were).
 */
function undo() {
  const pausedAuto = autoOn() && !autoPaused();
  if (autoOn()) beforeUndo();
  const entries = outbox.undo();
  if (!entries.length) {
    // Nothing labelled in this tab since it was loaded: the server undoes this client's last.
    setLatencyMark(null);
    return;
  }
  undone(entries);
  ungive(entries);
  if (gridOn()) {
    undoGrid(entries);
  } else {
    reshow(entries[0].item);
    // The rest of an undone grid comes next, in order.
    const rest = entries.slice(1).map((e) => e.item);
    requeue(rest);
    for (const item of [...rest].reverse()) prepare(item);
  }
  const what = entries.length > 1 ? `the grid of ${entries.length} labels (${entries.filter((e) => e.label === 'positive').length} positive)` : `${entries[0].label} for ${entries[0].item.path}`;
  notice(`Undone: ${what}.${pausedAuto ? ' AUTO paused: press M to resume.' : ''}`);
  renderSession();
}

// ---------------------------------------------------------------- the annotator's name
function wireName() {
  const nameInput = $('annotator');
  nameInput.addEventListener('input', () => setAnnotator(nameInput.value, true));
  nameInput.addEventListener('change', () => { nameInput.value = annotator(); });
  nameInput.addEventListener('keydown', (e) => {
    // Enter or Escape hands the keys back to labelling.
    if (e.key === 'Enter' || e.key === 'Escape') {
      e.preventDefault();
      nameInput.blur();
    }
  });
  // Another tab of this browser changed the name.
  window.addEventListener('storage', (e) => {
    if (e.key === LS_ANNOTATOR) {
      setAnnotator(e.newValue, false);
      if (document.activeElement !== nameInput) nameInput.value = annotator();
    }
  });
}

// ---------------------------------------------------------------- banner, save state
function renderBanner() {
  const banner = $('banner');
  const n = outbox.pending;
  const waiting = n ? ` ${n} label${n === 1 ? ' is' : 's are'} kept in this tab and will be sent when it is back; keep this tab open.` : '';
  if (conn.unreachable) {
    banner.textContent = `Cannot reach the binann server (retrying).${waiting}`;
    banner.hidden = false;
  } else if (conn.blocked && conn.blocked.status === 401) {
    banner.textContent = `This server needs its access token: open the address binann-server printed when it started (http://…/?token=…) in this browser.${waiting}`;
    banner.hidden = false;
  } else if (conn.blocked) {
    banner.textContent = `The server refuses this page's requests: ${conn.blocked.message}.${waiting}`;
    banner.hidden = false;
  } else if (conn.saveError) {
    banner.textContent = `The server could not save labels: ${conn.saveError}.${n ? ` ${n} label${n === 1 ? ' is' : 's are'} waiting and will be retried.` : ''}`;
    banner.hidden = false;
  } else {
    banner.hidden = true;
  }
  document.body.classList.toggle('offline', conn.unreachable);
  if (!current()) renderEmptyStage();
}

function renderSaveState() {
  const n = outbox.unsavedLabels;
  const el = $('save-state');
  el.textContent = n ? `saving ${n}…` : 'all saved';
  el.classList.toggle('pending', n > 0);
  document.body.dataset.pending = String(outbox.pending);
  renderBanner();
  if (!current() && exhausted()) renderDone();
}

function renderDone() {
  const s = stats();
  const unsaved = outbox.unsavedLabels;
  let text = 'Every image has a label.';
  if (s && s.remaining > 0) {
    text = `Nothing left for this tab: the ${s.remaining} remaining image${s.remaining === 1 ? ' is' : 's are'} shown in another tab (or waiting for labels being saved).`;
  } else if (s) {
    text = `All ${s.total} images are done: ${s.positives} positive, ${s.negatives} negative, ${s.skipped} skipped.`;
  }
  if (unsaved) text += ` Saving ${plural(unsaved, 'label')}…`;
  $('done-detail').textContent = text;
}

// ---------------------------------------------------------------- display settings
function applyDisplay(save) {
  const c = Number($('contrast').value);
  const b = Number($('brightness').value);
  document.body.style.setProperty('--contrast', String(c));
  document.body.style.setProperty('--brightness', String(b));
  $('contrast-out').textContent = c.toFixed(2);
  $('brightness-out').textContent = b.toFixed(2);
  if (save) store.set('localStorage', LS_DISPLAY, JSON.stringify({ contrast: c, brightness: b }));
}

function wireDisplay() {
  try {
    const d = JSON.parse(store.get('localStorage', LS_DISPLAY) || 'null');
    if (d && Number.isFinite(d.contrast)) $('contrast').value = String(d.contrast);
    if (d && Number.isFinite(d.brightness)) $('brightness').value = String(d.brightness);
  } catch { /* defaults */ }
  applyDisplay(false);
  $('contrast').addEventListener('input', () => applyDisplay(true));
  $('brightness').addEventListener('input', () => applyDisplay(true));
  $('display-reset').addEventListener('click', () => {
    $('contrast').value = '1';
    $('brightness').value = '1';
    applyDisplay(true);
  });
}

// ---------------------------------------------------------------- more like this
/** How many images "more like this" puts next. */
const SIMILAR_COUNT = 8;

/** Asks the server to put the images nearest to the one on screen next for this tab. */
async function moreLikeThis() {
  const item = current();
  if (!item) return;
  try {
    const r = await similar(item.id, SIMILAR_COUNT);
    if (!r.queued.length) {
      notice('More like this: every image near this one is labelled already.');
      return;
    }
    notice(`More like this: ${plural(r.queued.length, 'image')} near this one come next.`);
    // The current image stays; what follows is asked for again, the neighbours first.
    maybeRefill(true);
  } catch (e) {
    notice(e.code === 'not_embedded' ? 'More like this: the AI has not reached this image yet; try again in a moment.' : `More like this failed: ${e.message}`, e.code === 'not_embedded' ? 'info' : 'error');
  }
}

// ---------------------------------------------------------------- input
/** The mode whose column of the key table applies now. */
function mode() {
  if (calibrating()) return 'calibrate';
  if (autoAsking()) return 'ask';
  if (gridOn()) return 'grid';
  return autoOn() ? 'auto' : 'manual';
}

/** Does `action` (of the key table, or a button); `how`: {key, keyName, time} for a keypress. */
function perform(action, how = {}) {
  const time = how.time ?? performance.now();
  switch (action) {
    case 'positive':
    case 'negative':
      return autoOn() ? press(action, time) : label(action, how);
    case 'skip': return autoOn() ? autoSkip() : label('skip', how);
    case 'undo': return undo();
    case 'pause': return toggleTimer();
    case 'autopause': return setAutoPaused(!autoPaused());
    case 'auto': return gridOn() ? undefined : setAuto(!autoOn());
    case 'calibrate': return startCalibration();
    case 'calibpress': return calibrationPress(time);
    case 'calibcancel': return cancelCalibration();
    case 'earlier': case 'later': case 'both': case 'neither': return answer(action);
    case 'grid': return toggleGrid();
    case 'similar': return moreLikeThis();
    case 'confirm': return confirm();
    case 'tile': {
      const i = how.keyName ? tileIndex(how.keyName) : null;
      return i === null ? undefined : toggle(i);
    }
    default: return undefined;
  }
}

function typing(el) {
  if (!el || el === document.body) return false;
  if (el.isContentEditable) return true;
  if (el.tagName === 'TEXTAREA' || el.tagName === 'SELECT') return true;
  if (el.tagName === 'INPUT') return !['range', 'checkbox', 'radio', 'button', 'submit', 'reset', 'color'].includes(el.type);
  return false;
}

function onKey(e) {
  if (e.ctrlKey || e.metaKey || e.altKey || e.isComposing || typing(e.target)) return;
  const action = actionFor(e.key, mode());
  if (!action) return;
  e.preventDefault();
  if (e.repeat) return; // a held key labels one image, not many
  let mark = null;
  if (['positive', 'negative', 'skip', 'undo'].includes(action) && mode() === 'manual') {
    mark = `binann-key-${performance.now().toFixed(3)}`;
    performance.mark(mark);
  }
  setLatencyMark(mark);
  perform(action, { key: true, keyName: e.key, time: e.timeStamp });
}

function renderKeys() {
  const m = mode();
  renderHelp(m, $('key-help'), document.querySelectorAll('button[data-action]'));
  renderHelp('ask', $('ask-keys'), []);
  renderHelp('calibrate', $('calib-keys'), []);
  document.body.dataset.mode = m;
  $('grid-toggle').setAttribute('aria-pressed', String(gridOn()));
}

function wireInput() {
  document.addEventListener('keydown', onKey);
  for (const btn of document.querySelectorAll('button[data-action]')) {
    btn.addEventListener('mousedown', (e) => e.preventDefault()); // a click keeps focus where it was
    btn.addEventListener('click', () => {
      setLatencyMark(null);
      perform(btn.dataset.action);
    });
  }
  $('auto-toggle').addEventListener('mousedown', (e) => e.preventDefault());
  $('auto-toggle').addEventListener('click', () => { if (mode() === 'manual' || mode() === 'auto') setAuto(!autoOn()); });
  $('grid-toggle').addEventListener('mousedown', (e) => e.preventDefault());
  $('grid-toggle').addEventListener('click', () => { if (!calibrating() && !autoAsking()) toggleGrid(); });
  document.addEventListener('binann:mode', renderKeys);
  window.addEventListener('beforeunload', (e) => {
    if (outbox.pending) {
      e.preventDefault();
      e.returnValue = '';
    }
  });
  window.addEventListener('online', () => { retrySoon(); maybeRefill(true); });
}

// For tests and debugging.
window.binannDebug = {
  current: () => (current() ? current().id : null),
  queued: () => queued().map((it) => it.id),
  decoded: () => queued().filter((it) => it.ok === true).map((it) => it.id), // queued and ready to paint
  pending: () => outbox.pending,
  clientId: () => conn.clientId,
  annotator: () => annotator(),
  mode: () => mode(),
  auto: autoDebug,
  grid: gridDebug,
  item: () => (current() ? { id: current().id, path: current().path } : null),
};

// ---------------------------------------------------------------- start
async function start() {
  wireDisplay();
  loadSpeed();
  loadGridSize();
  applySpeed(false);
  wireName();
  wireSeedDrop();
  wireInput();
  setAnnotator(store.get('localStorage', LS_ANNOTATOR), false);
  $('annotator').value = annotator();
  renderKeys();
  renderMeta();
  renderEmptyStage();
  setInterval(renderSession, 1000);
  await claimClientId();
  for (const item of outbox.restore()) markDone(item.id);
  if (outbox.pending) notice(`Sending ${plural(outbox.pending, 'label')} kept from before the reload.`);
  outbox.persist();
  outbox.sendAll();
  maybeRefill(true);
  pollStats();
}

start();
