// The outbox: every label this tab gives waits here until the server has acknowledged it.
//
// Invariants:
// - A label is an op of `ops` (persisted through `storage`) until the server acknowledged it; ops
//   are sent one at a time, in order, and retried with backoff while the server is unreachable or
//   failing. A label is never dropped unless the server refuses it for good (a 4xx that is not
//   "fix the access and retry").
// - `stack` holds this tab's labels, newest last, for undo. An undo of a label still queued (never
//   tried, so the server cannot have it) cancels it here; otherwise an undo op follows it.
// - Labels given together (a confirmed grid) share a `group`; `undo()` takes the whole group back.
// - An op that may have reached the server (sent, answer lost) is marked `maybeApplied`, and a
//   reload keeps that doubt: its undo is then sent rather than cancelled.
// No DOM here: the page passes in how to send, store and sleep, so `node --test` drives it.

/** A failure of one request: `retryable` when the same request may succeed later. */
export class ApiError extends Error {
  constructor(status, code, message, retryable) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryable = retryable;
  }
}

export const BACKOFF_MIN_MS = 500;
export const BACKOFF_MAX_MS = 4000;
export const STACK_MAX = 400; // undo entries kept

export class Outbox {
  /**
   * @param {object} io
   * @param {(op) => Promise<any>} io.send  performs an op: resolves with the server's answer, or
   *   throws an ApiError
   * @param {{get(): string|null, set(text: string): void, del(): void}} io.storage  where the
   *   unacknowledged ops survive a reload (the tab's session storage)
   * @param {(ms: number) => Promise<void>} io.sleep
   * @param {(raw: object) => object} [io.makeItem]  rebuilds an item from its stored form
   * @param {object} [io.on]  callbacks: change(), acked(op, answer) (a label), undone(op, answer), refused(op, error),
   *   trouble(error, {unreachable}), recovered(), drained(hadTrouble)
   */
  constructor({ send, storage, sleep, makeItem = (raw) => ({ ...raw }), on = {} }) {
    this.io = { send, storage, sleep, makeItem };
    this.on = on;
    this.ops = []; // {uid, kind: 'label'|'undo', id, label, annotator, item, group, target, show, status, maybeApplied}
    this.stack = []; // {uid, item, label, group, status: 'queued'|'sent'|'acked'|'failed'}
    this.sending = false; // a sendAll() loop is running
    this.backoff = BACKOFF_MIN_MS;
    this.hadTrouble = false; // some op had to be retried since the outbox last drained
    this.seq = 0;
  }

  /** Ops not yet acknowledged (labels and undos). */
  get pending() {
    return this.ops.length;
  }

  /** Labels not yet acknowledged. */
  get unsavedLabels() {
    let n = 0;
    for (const op of this.ops) if (op.kind === 'label') n++;
    return n;
  }

  uid() {
    return `${Date.now().toString(36)}-${(this.seq++).toString(36)}`;
  }

  /** Queues a label of `item`; returns its undo entry. `group` ties labels undone together. */
  add(item, label, annotator, group = null) {
    const uid = this.uid();
    this.ops.push({ uid, kind: 'label', id: item.id, label, annotator, item, group, status: 'queued', maybeApplied: false });
    const entry = { uid, item, label, group, status: 'queued' };
    this.stack.push(entry);
    while (this.stack.length > STACK_MAX) this.stack.shift();
    this.persist();
    this.sendAll();
    return entry;
  }

  /** The newest undo entry (or entries of its group, oldest first), without removing them. */
  peek() {
    const top = this.stack[this.stack.length - 1];
    if (!top) return [];
    if (top.group === null || top.group === undefined) return [top];
    let i = this.stack.length - 1;
    while (i > 0 && this.stack[i - 1].group === top.group) i--;
    return this.stack.slice(i);
  }

  /**
   * Takes back the newest label (or the newest group of labels). Returns the entries undone,
   * oldest first; an empty list when this tab has none, in which case the server is asked to undo
   * this client's last label (`show`: the page shows what comes back).
   */
  undo() {
    const entries = this.peek();
    if (!entries.length) {
      this.ops.push({ uid: `u${this.seq++}`, kind: 'undo', id: null, show: true, status: 'queued' });
      this.persist();
      this.sendAll();
      return [];
    }
    this.stack.length -= entries.length;
    // Newest first, as the server's undo stack unwinds.
    for (const entry of [...entries].reverse()) {
      const i = this.ops.findIndex((op) => op.uid === entry.uid && op.status === 'queued' && !op.maybeApplied);
      if (i >= 0) {
        this.ops.splice(i, 1); // never tried: the server cannot have it
      } else if (entry.status !== 'failed') {
        this.ops.push({ uid: `u${this.seq++}`, kind: 'undo', id: entry.item.id, target: entry.uid, status: 'queued' });
      }
    }
    this.persist();
    this.sendAll();
    return entries;
  }

  persist() {
    const plainOps = this.ops.map((op) => ({
      uid: op.uid, kind: op.kind, id: op.id, label: op.label, annotator: op.annotator, group: op.group ?? null,
      item: op.item && { id: op.item.id, path: op.item.path, prob: op.item.prob, url: op.item.url },
      target: op.target, show: op.show, maybeApplied: Boolean(op.maybeApplied),
    }));
    if (plainOps.length) this.io.storage.set(JSON.stringify(plainOps));
    else this.io.storage.del();
    this.on.change?.();
  }

  /**
   * Reads back the ops a reload left (they may have reached the server: each is sent again, and
   * the server does not record a retry twice). Returns the items of the labels restored.
   */
  restore() {
    let saved;
    try { saved = JSON.parse(this.io.storage.get() || '[]'); } catch { saved = []; }
    if (!Array.isArray(saved)) return [];
    const items = [];
    for (const op of saved) {
      if (op && op.kind === 'label' && op.item && typeof op.id === 'number') {
        const item = this.io.makeItem(op.item);
        this.ops.push({ ...op, item, group: op.group ?? null, status: 'queued', maybeApplied: op.maybeApplied !== false });
        this.stack.push({ uid: op.uid, item, label: op.label, group: op.group ?? null, status: 'queued' });
        items.push(item);
      } else if (op && op.kind === 'undo') {
        this.ops.push({ ...op, status: 'queued' });
      }
    }
    return items;
  }

  /** Sends the ops one at a time, in order; retries what failed for a passing reason. */
  async sendAll() {
    if (this.sending) return;
    this.sending = true;
    try {
      while (this.ops.length) {
        const op = this.ops[0];
        op.status = 'sent';
        const doubtBefore = Boolean(op.maybeApplied);
        if (!doubtBefore) {
          op.maybeApplied = true; // from now on the server may have it
          this.persist();
        }
        const entry = op.kind === 'label' ? this.stack.find((e) => e.uid === op.uid) : null;
        if (entry) entry.status = 'sent';
        try {
          const answer = await this.io.send(op);
          if (entry) entry.status = 'acked';
          this.remove(op);
          if (op.kind === 'undo') this.on.undone?.(op, answer);
          else this.on.acked?.(op, answer);
          this.backoff = BACKOFF_MIN_MS;
          this.on.recovered?.();
        } catch (e) {
          if (e && e.retryable) {
            op.status = 'queued';
            // A JSON error (503 storage_unavailable...) says this attempt was not applied; no
            // answer, or an unreadable one, leaves it in doubt.
            if (e.status !== 0 && e.status !== 200) op.maybeApplied = doubtBefore;
            if (entry) entry.status = 'queued';
            this.hadTrouble = true;
            this.on.trouble?.(e);
            this.persist();
            await this.io.sleep(this.backoff);
            this.backoff = Math.min(BACKOFF_MAX_MS, this.backoff * 2);
            continue;
          }
          this.remove(op);
          if (entry) {
            entry.status = 'failed';
            this.stack = this.stack.filter((x) => x !== entry);
          }
          this.on.refused?.(op, e);
        }
      }
    } finally {
      this.sending = false;
      const hadTrouble = this.hadTrouble;
      this.hadTrouble = false;
      this.on.drained?.(hadTrouble);
    }
  }

  remove(op) {
    const i = this.ops.indexOf(op);
    if (i >= 0) this.ops.splice(i, 1);
    this.persist();
  }
}
