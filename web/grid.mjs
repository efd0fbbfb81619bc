// The grid view: rows × cols thumbnails of the next images in ranking order. Keys at the same place
// on the keyboard (1234 / QWER / ASDF / ZXCV) or the mouse mark a thumbnail positive; Enter or
// Space confirms: the marked ones positive, the rest negative, each through the outbox like any
// label, as one group that Backspace takes back in one step. The thumbnails are reserved for this
// tab like the image on screen (they go out in /api/next's keep, through the stage's hooks).
import { autoOn, setAuto } from './auto.mjs';
import { give, outbox, renderSession } from './labels.mjs';
import { handOver, maybeRefill, notice, prepare, queueLength, renderEmptyStage, requeue, show, take } from './stage.mjs';
import { $, pct, plural, store } from './util.mjs';

const LS_GRID = 'binann.grid';
export const SIZE_MIN = 1;
export const SIZE_MAX = 6;
/** The keys of the thumbnails, row by row: their places on a QWERTY keyboard. */
export const TILE_KEYS = ['1234', 'qwer', 'asdf', 'zxcv'];

/** The grid's state; changed only here (the rest of the page reads it through the functions below). */
const grid = {
  on: false,
  rows: 4,
  cols: 4,
  tiles: [], // {item, marked}, row by row; none while the grid is off
  confirmed: 0, // grids confirmed in this page (names each grid's undo group)
};

/** Whether the grid view is on. */
export function gridOn() {
  return grid.on;
}

/** How many thumbnails the grid shows: rows × cols. */
export function gridCells() {
  return grid.rows * grid.cols;
}

/** For tests and debugging: the thumbnails, those marked, those ready to show. */
export function gridDebug() {
  return { on: grid.on, tiles: grid.tiles.map((t) => t.item.id), marked: grid.tiles.filter((t) => t.marked).map((t) => t.item.id), ready: grid.tiles.filter((t) => t.item.ok).length };
}

/** The thumbnail a key marks (its index in the grid), or null. */
export function tileIndex(key) {
  const k = key.toLowerCase();
  for (let r = 0; r < TILE_KEYS.length; r++) {
    const c = TILE_KEYS[r].indexOf(k);
    if (c >= 0 && r < grid.rows && c < grid.cols) return r * grid.cols + c;
  }
  return null;
}

function keyOf(index) {
  const r = Math.floor(index / grid.cols);
  const c = index % grid.cols;
  return r < TILE_KEYS.length && c < TILE_KEYS[r].length ? TILE_KEYS[r][c].toUpperCase() : '';
}

export function loadGridSize() {
  try {
    const g = JSON.parse(store.get('localStorage', LS_GRID) || 'null');
    if (g && Number.isInteger(g.rows) && Number.isInteger(g.cols)) setSize(g.rows, g.cols, false);
  } catch { /* the default */ }
  $('grid-rows').value = String(grid.rows);
  $('grid-cols').value = String(grid.cols);
  const onChange = () => setSize(Number($('grid-rows').value), Number($('grid-cols').value), true);
  $('grid-rows').addEventListener('change', onChange);
  $('grid-cols').addEventListener('change', onChange);
}

function setSize(rows, cols, save) {
  const clamp = (n) => Math.min(SIZE_MAX, Math.max(SIZE_MIN, Math.round(n) || 4));
  grid.rows = clamp(rows);
  grid.cols = clamp(cols);
  if (save) store.set('localStorage', LS_GRID, JSON.stringify({ rows: grid.rows, cols: grid.cols }));
  if (grid.on) {
    // Thumbnails beyond the new size go back to the head of the queue.
    const n = grid.rows * grid.cols;
    const extra = grid.tiles.splice(n);
    requeue(extra.map((t) => t.item));
    fill();
  }
}

/** Grid view on or off (G). */
export function toggleGrid() {
  if (grid.on) {
    leave();
    return;
  }
  if (autoOn()) setAuto(false);
  grid.on = true;
  document.body.classList.add('grid-view');
  // The image on screen becomes the first thumbnail.
  const first = handOver();
  grid.tiles = first ? [{ item: first, marked: false }] : [];
  fill();
  notice(`Grid view: mark the positives (${TILE_KEYS.map((r) => r.slice(0, grid.cols).toUpperCase()).slice(0, grid.rows).join(' ')} or a click), then Enter or Space.`);
  document.dispatchEvent(new CustomEvent('binann:mode'));
}

function leave() {
  grid.on = false;
  document.body.classList.remove('grid-view');
  const tiles = grid.tiles;
  grid.tiles = [];
  $('grid').replaceChildren();
  const marked = tiles.filter((t) => t.marked).length;
  // Unconfirmed thumbnails go back to the queue, in order; the first is shown.
  requeue(tiles.map((t) => t.item));
  const next = take();
  if (next) next.sticky = false;
  show(next);
  notice(`One image at a time.${marked ? ` ${plural(marked, 'mark')} not confirmed: dropped.` : ''}`);
  document.dispatchEvent(new CustomEvent('binann:mode'));
}

/** Thumbnails on screen: reserved for this tab. */
export function gridItems() {
  return grid.tiles.map((t) => t.item);
}

/**
 * Tops the grid up from the queue, and asks for more when the queue runs short (`ask`: false when
 * called with /api/next's answer, which is all there is for now).
 */
export function fill(ask = true) {
  if (!grid.on) return;
  const n = grid.rows * grid.cols;
  while (grid.tiles.length < n && queueLength()) {
    const item = take();
    item.sticky = false;
    grid.tiles.push({ item, marked: false });
  }
  for (const t of grid.tiles) {
    if (t.item.ok === null || !t.item.img) prepare(t.item).then(() => { if (grid.tiles.includes(t)) render(); });
  }
  render();
  if (ask && (grid.tiles.length < n || queueLength() < n)) maybeRefill(true);
}

/** Skips (and reports) the thumbnails whose image will not decode. */
function skipBroken() {
  const broken = grid.tiles.filter((t) => t.item.ok === false && !t.item.retry);
  if (!broken.length) return;
  grid.tiles = grid.tiles.filter((t) => !broken.includes(t));
  for (const t of broken) give(t.item, 'skip');
  notice(`Skipped ${plural(broken.length, 'image')} that cannot be shown: ${broken.map((t) => `${t.item.path} (${t.item.error})`).join('; ')}.`, 'error');
  renderSession();
  fill();
}

function render() {
  if (!grid.on) return;
  if (grid.tiles.some((t) => t.item.ok === false && !t.item.retry)) {
    skipBroken();
    return;
  }
  const box = $('grid');
  box.style.setProperty('--rows', String(grid.rows));
  box.style.setProperty('--cols', String(grid.cols));
  if (!grid.tiles.length) {
    box.replaceChildren();
    renderEmptyStage();
    return;
  }
  $('done-screen').hidden = true;
  $('stage-message').hidden = true;
  const cells = grid.tiles.map((t, i) => {
    const cell = document.createElement('button');
    cell.type = 'button';
    cell.className = `tile${t.marked ? ' marked' : ''}${t.item.ok ? '' : ' loading'}`;
    cell.dataset.id = String(t.item.id);
    cell.dataset.index = String(i);
    cell.setAttribute('aria-pressed', String(t.marked));
    const p = typeof t.item.prob === 'number' ? t.item.prob : null;
    cell.title = `${t.item.path}${p === null ? '' : ` · P(positive) ${pct(p)}`}`;
    if (t.item.ok && t.item.img) {
      t.item.img.style.width = '';
      t.item.img.style.height = '';
      cell.append(t.item.img);
    }
    const key = keyOf(i);
    if (key) {
      const k = document.createElement('kbd');
      k.className = 'tile-key';
      k.textContent = key;
      cell.append(k);
    }
    if (p !== null) {
      const mark = document.createElement('span');
      mark.className = 'tile-prob';
      mark.style.setProperty('--p', String(p));
      cell.append(mark);
    }
    cell.addEventListener('mousedown', (e) => e.preventDefault());
    cell.addEventListener('click', () => toggle(i));
    return cell;
  });
  box.replaceChildren(...cells);
  document.body.dataset.gridTiles = String(grid.tiles.length);
}

/** Marks or unmarks thumbnail `index`. */
export function toggle(index) {
  const t = grid.tiles[index];
  if (!t || !t.item.ok) return;
  t.marked = !t.marked;
  const cell = $('grid').children[index];
  if (cell) {
    cell.classList.toggle('marked', t.marked);
    cell.setAttribute('aria-pressed', String(t.marked));
  }
}

/** Confirms the grid: the marked thumbnails positive, the rest negative, as one undo group. */
export function confirm() {
  // Only what the person could see: thumbnails still loading stay for the next grid.
  const shown = grid.tiles.filter((t) => t.item.ok);
  if (!shown.length) return;
  const group = `g${Date.now().toString(36)}-${grid.confirmed++}`;
  for (const t of shown) give(t.item, t.marked ? 'positive' : 'negative', group);
  grid.tiles = grid.tiles.filter((t) => !t.item.ok);
  const positives = shown.filter((t) => t.marked).length;
  notice(`${plural(shown.length, 'label')}: ${positives} positive, ${shown.length - positives} negative. Backspace takes the grid back.`);
  fill();
  renderSession();
}

/**
 * Undo in the grid: takes back the newest label, or the whole newest grid, and shows those images
 * again as thumbnails, marked as they were.
 */
export function undoGrid(entries) {
  const back = entries.map((e) => ({ item: e.item, marked: e.label === 'positive' }));
  const n = grid.rows * grid.cols;
  grid.tiles = back.concat(grid.tiles.filter((t) => !back.some((b) => b.item.id === t.item.id)));
  requeue(grid.tiles.splice(n).map((t) => t.item));
  fill();
}

/** The undo entries a Backspace in the grid would take back (for the notice). */
export function describeUndo() {
  const top = outbox.peek();
  return top.length > 1 ? `the last grid (${plural(top.length, 'label')})` : 'the last label';
}
