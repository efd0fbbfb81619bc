// Seed images: example images of the positive class from outside the folder, dropped anywhere on
// the page. Each goes to the server (POST /api/seeds), which keeps it in the run directory; the
// trainer learns from it beside the labels, so the ranking can lead with images like it before
// the first positive is found in the folder.
import { api } from './api.mjs';
import { $, num } from './util.mjs';

const MAX_SEED_BYTES = 32 * 1024 * 1024; // binann_core::seeds::MAX_SEED_BYTES

const seeds = {
  count: null, // seed images on the server, as the last answer or stats poll said
  note: '', // what happened to the last files dropped
};

function render() {
  const n = seeds.count ?? 0;
  const held = n
    ? `${num(n)} seed image${n === 1 ? '' : 's'}: the model learns from ${n === 1 ? 'it' : 'them'} as positives beside your labels.`
    : 'None. Drop example images of the positive class from outside the folder anywhere on this page.';
  $('seed-text').textContent = seeds.note ? `${held} ${seeds.note}` : held;
}

/** The stats poll's count. */
export function renderSeedCount(count) {
  if (typeof count === 'number') seeds.count = count;
  render();
}

function base64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).replace(/^data:[^,]*,/, ''));
    reader.onerror = () => reject(reader.error || new Error('unreadable file'));
    reader.readAsDataURL(file);
  });
}

/** Sends each file; says how many were added, given before, or refused (and why). */
export async function addSeeds(files) {
  let added = 0;
  let known = 0;
  const refused = [];
  seeds.note = `Sending ${files.length} file${files.length === 1 ? '' : 's'}…`;
  render();
  for (const file of files) {
    if (file.size > MAX_SEED_BYTES) {
      refused.push(`${file.name}: larger than ${MAX_SEED_BYTES / 1024 / 1024} MB`);
      continue;
    }
    try {
      const r = await api('POST', '/api/seeds', { data: await base64(file) });
      if (r.added) added += 1;
      else known += 1;
      seeds.count = r.seed_images;
    } catch (e) {
      refused.push(`${file.name}: ${e.message}`);
    }
  }
  const parts = [];
  if (added) parts.push(`${added} added`);
  if (known) parts.push(`${known} given before`);
  if (refused.length) parts.push(`refused ${refused.join('; ')}`);
  seeds.note = `Last drop: ${parts.join(', ')}.`;
  render();
}

/** Makes the whole page a drop target for image files. */
export function wireSeedDrop() {
  const hasFiles = (e) => e.dataTransfer && Array.from(e.dataTransfer.types || []).includes('Files');
  document.addEventListener('dragover', (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = 'copy';
    document.body.classList.add('dropping');
  });
  document.addEventListener('dragleave', (e) => {
    if (e.target === document.documentElement || e.clientX <= 0 || e.clientY <= 0) document.body.classList.remove('dropping');
  });
  document.addEventListener('drop', (e) => {
    document.body.classList.remove('dropping');
    if (!hasFiles(e)) return;
    // Without this the browser would navigate away to the dropped file.
    e.preventDefault();
    const files = Array.from(e.dataTransfer.files || []);
    if (files.length) addSeeds(files);
  });
  render();
}
