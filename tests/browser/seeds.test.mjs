// Seed images dropped on the page: files dragged from the desktop onto any part of the page go to
// the server, which keeps the images and refuses anything else; the Model panel says what happened.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { freshServer, launchBrowser, png, waitFor } from './lib.mjs';

let browser;
before(async () => { browser = await launchBrowser(); });
after(async () => { await browser?.close(); });

/** Drops files, given as {name, type, bytes}, on the page's image area as a desktop drag would. */
async function drop(page, files) {
  const encoded = files.map((f) => ({ name: f.name, type: f.type, data: Buffer.from(f.bytes).toString('base64') }));
  await page.evaluate((list) => {
    const dt = new DataTransfer();
    for (const f of list) {
      const bytes = Uint8Array.from(atob(f.data), (c) => c.charCodeAt(0));
      dt.items.add(new File([bytes], f.name, { type: f.type }));
    }
    const target = document.querySelector('main') || document.body;
    target.dispatchEvent(new DragEvent('dragover', { dataTransfer: dt, bubbles: true, cancelable: true }));
    target.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
  }, encoded);
}

test('dropped image files become seed images; other files are refused and named', async (t) => {
  const srv = await freshServer({ tiny: 6, big: false });
  const ctx = await browser.newContext();
  t.after(async () => {
    await ctx.close();
    await srv.stop();
    fs.rmSync(srv.datadir, { recursive: true, force: true });
    fs.rmSync(path.dirname(srv.rundir), { recursive: true, force: true });
  });
  const page = await ctx.newPage();
  await page.goto(srv.url);
  await waitFor(async () => /None\. Drop example images/.test(await page.textContent('#seed-text')), { what: 'the empty seed text' });
  const url = page.url();

  const shoe = png(20, 20, (x, y) => (x * 11 + y * 3) % 256);
  await drop(page, [
    { name: 'shoe.png', type: 'image/png', bytes: shoe },
    { name: 'notes.txt', type: 'text/plain', bytes: Buffer.from('not an image') },
  ]);
  const text = await waitFor(async () => {
    const s = await page.textContent('#seed-text');
    return /Last drop/.test(s) && s;
  }, { what: 'the drop to be reported' });
  assert.match(text, /^1 seed image:/);
  assert.match(text, /1 added/);
  assert.match(text, /refused notes\.txt: not a readable image/);
  assert.equal(page.url(), url, 'the browser did not navigate to the dropped file');
  assert.equal((await srv.stats()).seed_images, 1);
  const kept = fs.readdirSync(path.join(srv.rundir, 'seeds'));
  assert.equal(kept.length, 1);
  assert.deepEqual(fs.readFileSync(path.join(srv.rundir, 'seeds', kept[0])), shoe, 'the bytes are kept as dropped');

  // The same image again is kept once.
  await drop(page, [{ name: 'shoe-copy.png', type: 'image/png', bytes: shoe }]);
  await waitFor(async () => /1 given before/.test(await page.textContent('#seed-text')), { what: 'the repeat to be reported' });
  assert.equal((await srv.stats()).seed_images, 1);
});
