// Unit tests of the page's outbox (web/outbox.mjs): order, retries, doubt, undo, reload.
//   node --test tests/web/
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ApiError, Outbox } from '../../web/outbox.mjs';

/** An outbox over a scripted server: `answers` decides each send (a value, or an error to throw). */
function setup({ stored = null } = {}) {
  const sent = [];
  const storage = { text: stored, get() { return this.text; }, set(t) { this.text = t; }, del() { this.text = null; } };
  const server = { fail: [], undos: [], labels: [] };
  const events = [];
  const box = new Outbox({
    storage,
    sleep: async () => {},
    send: async (op) => {
      sent.push(`${op.kind}:${op.id}${op.label ? `:${op.label}` : ''}`);
      await Promise.resolve();
      const f = server.fail.shift();
      if (f) throw f;
      if (op.kind === 'label') {
        server.labels.push([op.id, op.label]);
        return { id: op.id, label: op.label, seq: server.labels.length };
      }
      const last = server.labels.pop();
      if (!last) throw new ApiError(409, 'nothing_to_undo', 'nothing to undo', false);
      return { id: last[0], path: `p${last[0]}`, label: last[1], url: `/api/images/${last[0]}`, prob: null };
    },
    on: {
      undone: (op, r) => events.push(['undone', r.id]),
      refused: (op, e) => events.push(['refused', op.kind, e.code]),
      trouble: (e) => events.push(['trouble', e.status]),
      drained: (had) => events.push(['drained', had]),
    },
  });
  return { box, sent, storage, server, events };
}

const item = (id) => ({ id, path: `p${id}`, prob: null, url: `/api/images/${id}` });
const drained = (box) => new Promise((resolve) => {
  const wait = () => (box.sending || box.pending ? setTimeout(wait, 1) : resolve());
  wait();
});

test('labels are sent one at a time, in order, and leave the storage once acknowledged', async () => {
  const { box, sent, storage, server } = setup();
  box.add(item(1), 'positive', 'ann');
  box.add(item(2), 'negative', 'ann');
  box.add(item(3), 'skip', 'ann');
  assert.equal(box.pending, 3);
  assert.equal(JSON.parse(storage.text).length, 3);
  await drained(box);
  assert.deepEqual(sent, ['label:1:positive', 'label:2:negative', 'label:3:skip']);
  assert.deepEqual(server.labels, [[1, 'positive'], [2, 'negative'], [3, 'skip']]);
  assert.equal(box.pending, 0);
  assert.equal(storage.text, null);
  assert.deepEqual(box.stack.map((e) => e.status), ['acked', 'acked', 'acked']);
});

test('a passing failure is retried with growing backoff until it succeeds; a refusal drops only that label', async () => {
  const { box, sent, server, events } = setup();
  const sleeps = [];
  box.io.sleep = async (ms) => { sleeps.push(ms); };
  server.fail.push(new ApiError(0, 'unreachable', 'x', true), new ApiError(503, 'storage_unavailable', 'full', true), new ApiError(0, 'unreachable', 'x', true));
  box.add(item(1), 'positive', '');
  await drained(box);
  assert.deepEqual(sent, ['label:1:positive', 'label:1:positive', 'label:1:positive', 'label:1:positive']);
  assert.deepEqual(sleeps, [500, 1000, 2000]);
  assert.equal(box.backoff, 500, 'backoff resets after a success');
  assert.deepEqual(events.filter((e) => e[0] === 'drained'), [['drained', true]]);

  server.fail.push(new ApiError(404, 'unknown_image', 'no such image', false));
  box.add(item(99), 'positive', '');
  box.add(item(2), 'negative', '');
  await drained(box);
  assert.deepEqual(server.labels, [[1, 'positive'], [2, 'negative']]);
  assert.deepEqual(box.stack.map((e) => e.item.id), [1, 2], 'the refused label left the undo stack');
  assert.ok(events.some((e) => e[0] === 'refused' && e[2] === 'unknown_image'));
});

test('undo of a label never sent cancels it; undo of one that may have reached the server sends an undo', async () => {
  const { box, sent, server } = setup();
  // The server is unreachable: the first label is tried (in doubt), the second waits behind it.
  let release;
  const gate = new Promise((r) => { release = r; });
  box.io.sleep = () => gate;
  server.fail.push(new ApiError(0, 'unreachable', 'x', true));
  box.add(item(1), 'positive', '');
  box.add(item(2), 'negative', '');
  await new Promise((r) => setTimeout(r, 5));
  assert.equal(box.ops[0].maybeApplied, true, 'a label without an answer is in doubt');
  assert.equal(box.ops[1].maybeApplied, false);
  assert.deepEqual(box.undo().map((e) => e.item.id), [2]);
  assert.deepEqual(box.ops.map((op) => op.kind), ['label'], 'the unsent label is cancelled');
  assert.deepEqual(box.undo().map((e) => e.item.id), [1]);
  assert.deepEqual(box.ops.map((op) => `${op.kind}:${op.id}`), ['label:1', 'undo:1'], 'the doubtful one gets an undo after it');
  release();
  await drained(box);
  assert.deepEqual(sent, ['label:1:positive', 'label:1:positive', 'undo:1']);
  assert.deepEqual(server.labels, [], 'label and undo cancel out on the server');
});

test('a 503 answer means not applied: the label goes back to cancellable', async () => {
  const { box, server } = setup();
  let release;
  const gate = new Promise((r) => { release = r; });
  box.io.sleep = () => gate;
  server.fail.push(new ApiError(503, 'storage_unavailable', 'disk full', true));
  box.add(item(1), 'positive', '');
  await new Promise((r) => setTimeout(r, 5));
  assert.equal(box.ops[0].maybeApplied, false);
  box.undo();
  assert.equal(box.pending, 0, 'cancelled here, nothing sent');
  release();
  await drained(box);
  assert.deepEqual(server.labels, []);
});

test('a group of labels (a confirmed grid) is undone as one step, newest first', async () => {
  const { box, sent, server } = setup();
  box.add(item(1), 'negative', '');
  await drained(box);
  box.add(item(2), 'positive', '', 'g1');
  box.add(item(3), 'negative', '', 'g1');
  box.add(item(4), 'negative', '', 'g1');
  await drained(box);
  assert.deepEqual(box.peek().map((e) => e.item.id), [2, 3, 4]);
  const undone = box.undo();
  assert.deepEqual(undone.map((e) => e.item.id), [2, 3, 4]);
  await drained(box);
  assert.deepEqual(sent.slice(-3), ['undo:4', 'undo:3', 'undo:2']);
  assert.deepEqual(server.labels, [[1, 'negative']]);
  assert.deepEqual(box.stack.map((e) => e.item.id), [1]);
});

test('a reload restores unacknowledged ops in doubt, and sends them again', async () => {
  const first = setup();
  let release;
  first.box.io.sleep = () => new Promise((r) => { release = r; });
  first.server.fail.push(new ApiError(0, 'unreachable', 'x', true));
  first.box.add(item(5), 'positive', 'Zoë', 'g');
  first.box.add(item(6), 'negative', 'Zoë', 'g');
  await new Promise((r) => setTimeout(r, 5));
  // The tab reloads: a new outbox over the same storage.
  const second = setup({ stored: first.storage.text });
  const items = second.box.restore();
  assert.deepEqual(items.map((it) => it.id), [5, 6]);
  // The first was tried before the reload (it may have reached the server), the second never was.
  assert.deepEqual(second.box.ops.map((op) => op.maybeApplied), [true, false]);
  assert.deepEqual(second.box.ops.map((op) => [op.annotator, op.group]), [['Zoë', 'g'], ['Zoë', 'g']]);
  second.box.sendAll();
  await drained(second.box);
  assert.deepEqual(second.server.labels, [[5, 'positive'], [6, 'negative']]);
  // Undo after the reload still takes the group back, through the server.
  second.box.undo();
  await drained(second.box);
  assert.deepEqual(second.server.labels, []);
  release?.();
});

test('undo with nothing in this tab asks the server for this client\'s last label', async () => {
  const { box, events } = setup();
  assert.deepEqual(box.undo(), []);
  await drained(box);
  assert.ok(events.some((e) => e[0] === 'refused' && e[2] === 'nothing_to_undo'));
});

test('corrupt storage is ignored', () => {
  for (const text of ['not json', '{"a":1}', '[{"kind":"label"}]', '[null]']) {
    const { box } = setup({ stored: text });
    assert.deepEqual(box.restore(), []);
    assert.equal(box.pending, 0);
  }
});
