// The key table: every key, in every mode, and what it does. It drives the key handler and the
// page's key help, and the README's "## Keys" table is checked against it (tests/web).
// No DOM at import: node imports this file.

/** The modes, in the README's column order: id, and the column title. */
export const MODES = [
  { id: 'manual', title: 'manual mode' },
  { id: 'auto', title: 'AUTO mode' },
  { id: 'ask', title: 'AUTO asks' },
  { id: 'calibrate', title: 'calibration' },
  { id: 'grid', title: 'grid view' },
];

/**
 * One row per key: `name` as the README and the page write it, `keys` the KeyboardEvent.key
 * values (letters lower-case), and per mode `[action, what it does]` (absent: nothing).
 */
export const KEYS = [
  {
    name: 'F', keys: ['f'], manual: ['positive', 'positive'],
    auto: ['positive', 'positive: the image shown one reaction time d before the press'],
    ask: ['positive', 'kept for the image it was meant for, given once you answer'], calibrate: ['calibpress', 'I see the ring'],
  },
  {
    name: 'Space', keys: [' '], manual: ['pause', 'pause the session timer'], auto: ['positive', 'positive, as F'],
    ask: ['positive', 'as F'], calibrate: ['calibpress', 'I see the ring'], grid: ['confirm', 'confirm the grid'],
  },
  { name: 'J', keys: ['j'], manual: ['negative', 'negative'], auto: ['negative', 'negative at once: the image shown d before the press'] },
  { name: 'S', keys: ['s'], manual: ['skip', 'skip'], auto: ['skip', 'skip the image on screen'] },
  {
    name: 'Backspace', keys: ['Backspace'], manual: ['undo', 'undo the last label, show that image again'],
    auto: ['undo', 'pause AUTO, undo the last label'], grid: ['undo', 'undo the last confirmed grid, in one step'],
  },
  { name: 'L', keys: ['l'], manual: ['similar', 'more like this: the images nearest to this one come next'] },
  { name: 'M', keys: ['m'], auto: ['autopause', 'pause AUTO'] },
  { name: 'A', keys: ['a'], manual: ['auto', 'switch AUTO on'], auto: ['auto', 'switch AUTO off'] },
  { name: 'C', keys: ['c'], manual: ['calibrate', 'calibrate your reaction time d'], auto: ['calibrate', 'pause AUTO, calibrate d'] },
  { name: 'G', keys: ['g'], manual: ['grid', 'grid view'], auto: ['grid', 'AUTO off, grid view'], grid: ['grid', 'one image at a time'] },
  { name: 'Enter', keys: ['Enter'], grid: ['confirm', 'confirm the grid: the marked positive, the rest negative'] },
  { name: '←', keys: ['ArrowLeft'], ask: ['earlier', 'the earlier image'] },
  { name: '→', keys: ['ArrowRight'], ask: ['later', 'the later image'] },
  { name: 'B', keys: ['b'], ask: ['both', 'both images'] },
  { name: 'N', keys: ['n'], ask: ['neither', 'neither (no label from that press)'] },
  { name: 'Escape', keys: ['Escape'], ask: ['neither', 'neither'], calibrate: ['calibcancel', 'stop calibrating'] },
  {
    name: '1 2 3 4 / Q W E R / A S D F / Z X C V', keys: [...'1234qwerasdfzxcv'],
    grid: ['tile', 'mark or unmark the thumbnail at that place (or click it)'],
  },
];

/** The KeyboardEvent.key as the table writes it (letters lower-case). */
export function normalKey(key) {
  return key.length === 1 ? key.toLowerCase() : key;
}

/** The action of `key` (a KeyboardEvent.key) in `mode`, or null. */
export function actionFor(key, mode) {
  const k = normalKey(key);
  for (const row of KEYS) {
    if (row.keys.includes(k) && row[mode]) return row[mode][0];
  }
  return null;
}

/** The rows of the README's table: [key, what it does in each mode...]. */
export function tableRows() {
  return KEYS.map((row) => [row.name, ...MODES.map((m) => (row[m.id] ? row[m.id][1] : ''))]);
}

/** The header of the README's table. */
export function tableHeader() {
  return ['key', ...MODES.map((m) => m.title)];
}

/** The keys that do `action` in `mode`, by name. */
export function keysFor(action, mode) {
  return KEYS.filter((row) => row[mode] && row[mode][0] === action).map((row) => row.name);
}

/** The page's key help for `mode`: a <dt><kbd>key</kbd></dt><dd>what</dd> list, and the buttons' keys. */
export function renderHelp(mode, list, buttons) {
  const title = MODES.find((m) => m.id === mode)?.title || mode;
  const rows = [];
  for (const row of KEYS) {
    if (!row[mode]) continue;
    const dt = document.createElement('dt');
    const kbd = document.createElement('kbd');
    kbd.textContent = row.name;
    if (row.name.length > 1) kbd.className = 'key-wide';
    if (row.name.length > 12) kbd.className = 'key-block';
    dt.append(kbd);
    const dd = document.createElement('dd');
    dd.textContent = row[mode][1];
    rows.push(dt, dd);
  }
  list.replaceChildren(...rows);
  list.dataset.mode = mode;
  list.setAttribute('aria-label', `Keys in ${title}`);
  for (const btn of buttons) {
    const kbd = btn.querySelector('kbd');
    if (kbd) {
      const names = keysFor(btn.dataset.action, mode);
      kbd.textContent = names.map((n) => (n === 'Backspace' ? '⌫' : n)).join(' / ');
      kbd.setAttribute('aria-label', names.join(' or '));
    }
  }
}
