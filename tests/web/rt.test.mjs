// Unit tests of reaction-time attribution (web/rt.mjs).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ReactionTime, attribute, closesAt, rtMin } from '../../web/rt.mjs';

/** Views shown every `period` ms from 0. */
const stream = (n, period) => Array.from({ length: n }, (_, i) => ({ on: i * period }));

test('a press one reaction time after an image\'s onset is that image\'s, even after the next appeared', () => {
  const views = stream(6, 333); // 3 images/s
  assert.deepEqual(attribute(400, views, 400, 60), { kind: 'one', index: 0 });
  assert.deepEqual(attribute(333 + 400, views, 400, 60), { kind: 'one', index: 1 });
  assert.deepEqual(attribute(2 * 333 + 460, views, 400, 60), { kind: 'one', index: 2 });
  // Too soon after the first image for anyone to have reacted to it.
  assert.deepEqual(attribute(50, views, 400, 60), { kind: 'none' });
});

test('a press between two images at 5/s is ambiguous; at 1/s the same spread is not', () => {
  const fast = stream(8, 200);
  // Halfway between the expected presses of images 1 and 2.
  assert.deepEqual(attribute(200 + 400 + 100, fast, 400, 60), { kind: 'ambiguous', indices: [1, 2] });
  assert.deepEqual(attribute(200 + 400 + 10, fast, 400, 60), { kind: 'one', index: 1 });
  const slow = stream(4, 1000);
  assert.deepEqual(attribute(1000 + 400 + 150, slow, 400, 60), { kind: 'one', index: 1 });
  // Long after its onset, the image on screen still owns the press.
  assert.deepEqual(attribute(3000 + 5000, slow, 400, 60), { kind: 'one', index: 3 });
});

test('an image shown long (a pause) keeps its presses until the next could have been seen', () => {
  const views = [{ on: 0 }, { on: 10000 }];
  const fastest = rtMin(400, 60);
  assert.deepEqual(attribute(10000 + fastest - 1, views, 400, 60), { kind: 'one', index: 0 });
  assert.deepEqual(attribute(10000 + 400, views, 400, 60), { kind: 'one', index: 1 });
});

test('an image\'s window closes after its ambiguity zone; the one on screen never closes', () => {
  const views = stream(3, 200);
  const close = closesAt(views, 0, 400, 60);
  assert.ok(close >= 400 + 2.2 * 60, `${close}`);
  // No press after the close can still be ambiguous with image 0.
  for (let t = close; t < close + 400; t += 5) {
    const a = attribute(t, views, 400, 60);
    assert.ok(!(a.kind === 'ambiguous' && a.indices.includes(0)) && !(a.kind === 'one' && a.index === 0), `${t}: ${JSON.stringify(a)}`);
  }
  assert.equal(closesAt(views, 2, 400, 60), Infinity);
});

test('d follows the median of the samples; an undone press is withdrawn; calibration replaces', () => {
  const rt = new ReactionTime();
  assert.equal(rt.d, 450);
  for (const x of [380, 400, 420, 390, 410, 405, 395]) rt.add(x);
  assert.ok(Math.abs(rt.d - 400) < 6, `${rt.d}`);
  assert.ok(rt.sd >= 35 && rt.sd < 30 * 1.5, `${rt.sd}`);
  rt.add(900, 'stray');
  assert.ok(Math.abs(rt.d - 402) < 6, 'one stray press barely moves d');
  assert.equal(rt.withdraw('stray'), true);
  assert.equal(rt.add(20), false, 'faster than anyone: not a reaction');
  rt.calibrate([300, 310, 320, 330, 340, 350, 360, 370]);
  assert.equal(rt.calibrated, true);
  assert.equal(rt.d, 335);
  const back = new ReactionTime(JSON.parse(JSON.stringify(rt)));
  assert.equal(back.d, 335);
  assert.equal(back.calibrated, true);
});
