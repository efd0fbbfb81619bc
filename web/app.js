// binann's annotation page: keyboard-first labelling with decoded prefetching, a label queue that
// survives server outages, AUTO mode, statistics and charts. No build step, no dependencies.
//
// Invariants:
// - Every label is an entry of `ops` (persisted in sessionStorage) until the server acknowledged
//   it; ops are sent one at a time, in order, and retried with backoff while the server is
//   unreachable or failing. A label is never dropped unless the server refuses it for good (4xx).
// - `done` holds every image labelled in this tab (queued, in flight or acknowledged): an image in
//   it is never shown again, whatever /api/next answers, until it is undone.
// - Undo of a label still queued cancels it locally; otherwise an undo op follows it in the queue.
// - Each label carries the annotator's name as it was when the key was pressed (X-Annotator).
// - A refusal that a person can fix (401: the access token is missing; 403: the server took the
//   page for another site) keeps every label queued and says what to do.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);

  const PREFETCH = 4; // images decoded ahead of the one shown
  const WANT = 12; // images asked of /api/next, plus those labelled here but not yet saved
  const REFILL_BELOW = 6; // ask for more when fewer are queued
  const STATS_MS = 2000;
  const KEEPALIVE_MS = 45000; // re-ask /api/next when idle, so the server keeps our images reserved
  const DONE_POLL_MS = 5000; // on the all-done screen, look for images released by other tabs
  const REQUEST_TIMEOUT_MS = 15000;
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 4000;
  const STACK_MAX = 200; // undo entries kept in this tab
  const KEEP_DECODED = 3; // newest undo entries whose decoded image is kept
  const ROLL = 50; // window of the rolling accuracy
  const LS_DISPLAY = 'binann.display';
  const LS_SPEED = 'binann.speed';
  const LS_ANNOTATOR = 'binann.annotator'; // the person's name: one per browser, shared by its tabs
  const MAX_NAME = 64; // characters (code points), as the server counts them
  const SS_CLIENT = 'binann.client';
  const SS_OPS = 'binann.ops';

  // ---------------------------------------------------------------- storage (may be disabled)
  const store = {
    get(area, key) {
      try { return window[area].getItem(key); } catch { return null; }
    },
    set(area, key, value) {
      try { window[area].setItem(key, value); } catch { /* storage full or disabled */ }
    },
    del(area, key) {
      try { window[area].removeItem(key); } catch { /* ignore */ }
    },
  };

  // ---------------------------------------------------------------- state
  const state = {
    clientId: null,
    annotator: '', // the name sent with each label; empty: none given
    current: null, // the item shown
    queue: [], // items to show next, in order
    done: new Set(), // ids labelled in this tab (pending or acknowledged)
    ops: [], // {uid, kind: 'label'|'undo', id, label, item, target, status}
    stack: [], // undo entries {uid, item, label, status: 'queued'|'sent'|'acked'}
    exhausted: false, // the last /api/next gave nothing new
    refilling: false,
    refillAgain: false,
    lastNextAt: 0,
    rankingStamp: null,
    stats: null,
    pendingMark: null, // latency measurement in progress
    seq: 0,
  };
  // blocked: {status, message} while the server refuses this page (401 no token, 403 cross_site).
  const conn = { unreachable: false, saveError: null, blocked: null, backoff: BACKOFF_MIN_MS, hadTrouble: false };
  const auto = { on: false, paused: false, speed: 1, timer: null };
  const session = { start: performance.now(), pausedAt: null, pausedMs: 0, labels: 0, times: [] };
  const hist = { entries: [], busy: false };
  window.binannLatencies = [];

  // ---------------------------------------------------------------- API
  class ApiError extends Error {
    constructor(status, code, message, retryable) {
      super(message);
      this.status = status;
      this.code = code;
      this.retryable = retryable;
    }
  }

  // `annotator`: the name to send (a queued label keeps the one it was given with).
  async function api(method, url, body, annotator = state.annotator) {
    const headers = { 'X-Client': state.clientId };
    // A header value cannot carry most of Unicode: the server decodes this.
    if (annotator) headers['X-Annotator'] = encodeURIComponent(annotator);
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const ctrl = new AbortController();
    const timer = setTimeout(() => ctrl.abort(), REQUEST_TIMEOUT_MS);
    let r;
    let data = null;
    try {
      r = await fetch(url, {
        method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: 'no-store', signal: ctrl.signal,
      });
      try { data = await r.json(); } catch { data = null; }
    } catch {
      conn.unreachable = true;
      renderBanner();
      throw new ApiError(0, 'unreachable', 'cannot reach the server', true);
    } finally {
      clearTimeout(timer);
    }
    if (conn.unreachable) {
      conn.unreachable = false;
      renderBanner();
    }
    if (!r.ok || data === null) {
      const code = (data && data.error && data.error.code) || `http_${r.status}`;
      const message = (data && data.error && data.error.message) || `HTTP ${r.status} ${r.statusText || ''}`.trim();
      // Not the label's fault, and fixable by the person: keep everything and retry.
      const blocked = r.status === 401 || (r.status === 403 && code === 'cross_site');
      if (blocked) {
        conn.blocked = { status: r.status, message };
        renderBanner();
      }
      throw new ApiError(r.status, code, message, blocked || r.ok || r.status >= 500 || r.status === 408 || r.status === 429);
    }
    if (conn.blocked) {
      conn.blocked = null;
      renderBanner();
    }
    return data;
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function randomId() {
    const bytes = new Uint8Array(12);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  }

  // Each tab is its own client: the id lives in sessionStorage (kept across reloads of this tab,
  // not shared with other tabs) and goes out as the X-Client header. A duplicated tab inherits
  // the sessionStorage copy, so it asks the other tabs whether the id is taken.
  async function claimClientId() {
    let id = store.get('sessionStorage', SS_CLIENT);
    if (id && !/^[A-Za-z0-9_-]{1,64}$/.test(id)) id = null;
    const chan = 'BroadcastChannel' in window ? new BroadcastChannel('binann-tabs') : null;
    if (id && chan) {
      const taken = await new Promise((resolve) => {
        const onMessage = (ev) => {
          if (ev.data && ev.data.type === 'taken' && ev.data.id === id) finish(true);
        };
        const finish = (value) => {
          clearTimeout(timer);
          chan.removeEventListener('message', onMessage);
          resolve(value);
        };
        const timer = setTimeout(() => finish(false), 150);
        chan.addEventListener('message', onMessage);
        chan.postMessage({ type: 'hello', id });
      });
      if (taken) {
        id = null; // the original tab keeps the id and sends its own pending labels
        store.del('sessionStorage', SS_OPS);
      }
    }
    if (!id) {
      id = randomId();
      store.set('sessionStorage', SS_CLIENT, id);
    }
    if (chan) {
      chan.addEventListener('message', (ev) => {
        if (ev.data && ev.data.type === 'hello' && ev.data.id === id) chan.postMessage({ type: 'taken', id });
      });
    }
    return id;
  }

  // ---------------------------------------------------------------- items and prefetching
  function makeItem(raw) {
    return { id: raw.id, path: raw.path, prob: raw.prob, url: raw.url, img: null, ok: null, ready: null, error: null, retry: false, sticky: false };
  }

  function plain(item) {
    return { id: item.id, path: item.path, prob: item.prob, url: item.url };
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

  function prepare(item) {
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

  function prefetch() {
    for (const item of state.queue.slice(0, PREFETCH)) prepare(item);
  }

  function unsavedLabelCount() {
    let n = 0;
    for (const op of state.ops) if (op.kind === 'label') n++;
    return n;
  }

  // /api/next hands out a fresh list and releases what this client held before. The list starts
  // with images this tab is showing or has labelled but not yet saved; those are filtered out.
  async function refill() {
    if (state.refilling) {
      state.refillAgain = true;
      return;
    }
    state.refilling = true;
    try {
      const count = Math.min(32, WANT + unsavedLabelCount() + (state.current ? 1 : 0));
      state.lastNextAt = Date.now();
      // The image on screen (and any the person went back to) stays reserved for this tab.
      const keep = [state.current, ...state.queue.filter((it) => it.sticky)].filter(Boolean).map((it) => it.id).slice(0, 64);
      const list = await api('GET', `/api/next?count=${count}${keep.length ? `&keep=${keep.join(',')}` : ''}`);
      merge(list);
    } catch (e) {
      if (e.retryable) {
        setTimeout(maybeRefill, conn.backoff);
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
    const skip = new Set(sticky.map((it) => it.id));
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
    if (!state.current) {
      if (state.queue.length) show(state.queue.shift());
      else renderEmptyStage();
    }
    prefetch();
  }

  function maybeRefill(force) {
    if (force || state.queue.length < REFILL_BELOW) refill();
  }

  // ---------------------------------------------------------------- showing an image
  const stage = $('stage');
  const slot = $('photo-slot');
  const stageMsg = $('stage-message');
  const doneScreen = $('done-screen');

  function show(item) {
    cancelCountdown();
    state.current = item;
    renderMeta();
    if (!item) {
      renderEmptyStage();
      return;
    }
    doneScreen.hidden = true;
    const ready = prepare(item);
    if (item.ok !== null) {
      paint(item);
    } else {
      const loading = setTimeout(() => {
        if (state.current === item && item.ok === null) {
          slot.replaceChildren();
          stageMsg.textContent = 'Loading…';
          stageMsg.hidden = false;
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

  function fit(item) {
    const img = item.img;
    const w = img.naturalWidth;
    const h = img.naturalHeight;
    const W = slot.clientWidth;
    const H = slot.clientHeight;
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
    stageMsg.hidden = true;
    if (item.ok) {
      fit(item);
      if (slot.firstChild !== item.img) slot.replaceChildren(item.img);
    } else {
      slot.replaceChildren();
      stageMsg.replaceChildren();
      const h = document.createElement('strong');
      h.textContent = 'This image cannot be shown';
      const p = document.createElement('span');
      p.textContent = item.error || 'unknown error';
      const hint = document.createElement('span');
      hint.className = 'hint';
      hint.textContent = item.retry ? 'It will load again once the server is back.' : 'Press S to skip it.';
      stageMsg.append(h, p, hint);
      stageMsg.hidden = false;
      if (item.retry) setTimeout(() => { if (state.current === item) { prepare(item); show(item); } }, conn.backoff * 2);
    }
    afterPaint();
    startCountdown();
  }

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

  function renderEmptyStage() {
    if (state.current) return;
    slot.replaceChildren();
    cancelCountdown();
    if (state.exhausted) {
      stageMsg.hidden = true;
      doneScreen.hidden = false;
      renderDone();
    } else {
      doneScreen.hidden = true;
      stageMsg.textContent = conn.unreachable ? 'Waiting for the server…' : conn.blocked ? 'The server refuses this page (see above).' : 'Loading…';
      stageMsg.hidden = false;
    }
    state.pendingMark = null;
  }

  function renderDone() {
    const s = state.stats;
    const unsaved = unsavedLabelCount();
    let text = 'Every image has a label.';
    if (s && s.remaining > 0) {
      text = `Nothing left for this tab: the ${s.remaining} remaining image${s.remaining === 1 ? ' is' : 's are'} shown in another tab (or waiting for labels being saved).`;
    } else if (s) {
      text = `All ${s.total} images are done: ${s.positives} positive, ${s.negatives} negative, ${s.skipped} skipped.`;
    }
    if (unsaved) text += ` Saving ${unsaved} label${unsaved === 1 ? '' : 's'}…`;
    $('done-detail').textContent = text;
  }

  function pct(p) {
    return `${(p * 100).toFixed(p > 0.001 && p < 0.999 ? 1 : 0).replace(/\.0$/, '')}%`;
  }

  function renderMeta() {
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

  // ---------------------------------------------------------------- labelling and undo
  function persistOps() {
    const plainOps = state.ops.map((op) => ({ uid: op.uid, kind: op.kind, id: op.id, label: op.label, annotator: op.annotator, item: op.item && plain(op.item), target: op.target, show: op.show, maybeApplied: Boolean(op.maybeApplied) }));
    if (plainOps.length) store.set('sessionStorage', SS_OPS, JSON.stringify(plainOps));
    else store.del('sessionStorage', SS_OPS);
    renderSaveState();
  }

  function restoreOps() {
    let saved = [];
    try { saved = JSON.parse(store.get('sessionStorage', SS_OPS) || '[]'); } catch { saved = []; }
    if (!Array.isArray(saved)) return;
    for (const op of saved) {
      if (op.kind === 'label' && op.item && typeof op.id === 'number') {
        const item = makeItem(op.item);
        state.ops.push({ ...op, item, status: 'queued', maybeApplied: op.maybeApplied !== false });
        state.stack.push({ uid: op.uid, item, label: op.label, status: 'queued' });
        state.done.add(op.id);
      } else if (op.kind === 'undo') {
        state.ops.push({ ...op, status: 'queued' });
      }
    }
    if (state.ops.length) notice(`Sending ${state.ops.length} label${state.ops.length === 1 ? '' : 's'} kept from before the reload.`);
  }

  function label(kind, how = {}) {
    const item = state.current;
    if (!item) return;
    resumeTimer();
    const uid = `${Date.now().toString(36)}-${(state.seq++).toString(36)}`;
    state.ops.push({ uid, kind: 'label', id: item.id, label: kind, annotator: state.annotator, item, status: 'queued' });
    state.stack.push({ uid, item, label: kind, status: 'queued' });
    if (state.stack.length > STACK_MAX) state.stack.shift();
    const old = state.stack[state.stack.length - 1 - KEEP_DECODED];
    if (old && old.item.img) {
      old.item.img = null; // let the browser drop its decoded pixels; re-prepared on undo
      old.item.ok = null;
    }
    state.done.add(item.id);
    session.labels++;
    session.times.push(Date.now());
    persistOps();
    pump();
    if (!how.key) state.pendingMark = null;
    show(state.queue.shift() || null);
    if (!state.current) maybeRefill(true);
    renderSession();
  }

  function undo() {
    const entry = state.stack.pop();
    const pausedAuto = auto.on && !auto.paused;
    if (pausedAuto) setAutoPaused(true, 'AUTO paused after undo: press M to resume.');
    if (!entry) {
      // Nothing labelled in this tab since it was loaded: ask the server for this client's last.
      state.pendingMark = null;
      state.ops.push({ uid: `u${state.seq++}`, kind: 'undo', id: null, show: true, status: 'queued' });
      persistOps();
      pump();
      return;
    }
    // A label the server cannot have applied is cancelled here; one that may have reached it (in
    // flight, or lost on the way back) stays queued and an undo follows it.
    const i = state.ops.findIndex((op) => op.uid === entry.uid && op.status === 'queued' && !op.maybeApplied);
    if (i >= 0) {
      state.ops.splice(i, 1);
    } else if (entry.status !== 'failed') {
      state.ops.push({ uid: `u${state.seq++}`, kind: 'undo', id: entry.item.id, target: entry.uid, status: 'queued' });
    }
    persistOps();
    pump();
    state.done.delete(entry.item.id);
    if (session.labels > 0) session.labels--;
    session.times.pop();
    reshow(entry.item);
    notice(`Undone: ${entry.label} for ${entry.item.path}.${pausedAuto ? ' AUTO paused: press M to resume.' : ''}`);
    renderSession();
  }

  // Shows `item` again, putting the image shown now back at the head of the queue.
  function reshow(item) {
    if (state.current && state.current.id !== item.id) {
      state.current.sticky = true;
      state.queue.unshift(state.current);
    }
    state.queue = state.queue.filter((it) => it.id !== item.id);
    item.sticky = false;
    show(item);
  }

  // Sends the ops one at a time, in order; retries what failed for a passing reason.
  async function pump() {
    if (state.pumping) return;
    state.pumping = true;
    try {
      while (state.ops.length) {
        const op = state.ops[0];
        op.status = 'sent';
        const doubtBefore = Boolean(op.maybeApplied);
        if (!doubtBefore) {
          op.maybeApplied = true; // from now on the server may have it
          persistOps();
        }
        const entry = state.stack.find((e) => e.uid === op.uid);
        if (entry) entry.status = 'sent';
        try {
          if (op.kind === 'label') {
            await api('POST', '/api/annotations', { id: op.id, label: op.label }, op.annotator ?? state.annotator);
            if (entry) entry.status = 'acked';
          } else {
            const r = await api('POST', '/api/undo');
            undoAnswered(op, r);
          }
          remove(op);
          conn.backoff = BACKOFF_MIN_MS;
          if (conn.saveError) {
            conn.saveError = null;
            renderBanner();
          }
        } catch (e) {
          if (e.retryable) {
            op.status = 'queued';
            // A JSON error (503 storage_unavailable...) says this attempt was not applied; no
            // answer, or an unreadable one, leaves it in doubt.
            if (e.status !== 0 && e.status !== 200) op.maybeApplied = doubtBefore;
            if (entry) entry.status = 'queued';
            if (e.status !== 0 && !conn.blocked) {
              conn.saveError = e.message;
              renderBanner();
            }
            conn.hadTrouble = true;
            await sleep(conn.backoff);
            conn.backoff = Math.min(BACKOFF_MAX_MS, conn.backoff * 2);
            continue;
          }
          remove(op);
          if (op.kind === 'label') {
            if (entry) {
              entry.status = 'failed';
              state.stack = state.stack.filter((x) => x !== entry);
            }
            notice(`The server refused the label of ${op.item ? op.item.path : op.id}: ${e.message}`, 'error');
          } else if (e.code === 'nothing_to_undo') {
            notice('Nothing to undo.');
          } else {
            notice(`Undo failed: ${e.message}`, 'error');
          }
        }
      }
    } finally {
      state.pumping = false;
      refreshStatsSoon();
      renderSaveState();
      if (conn.hadTrouble && !state.ops.length) {
        conn.hadTrouble = false;
        notice('Connection restored: every label is saved.');
      }
    }
  }

  function remove(op) {
    const i = state.ops.indexOf(op);
    if (i >= 0) state.ops.splice(i, 1);
    persistOps();
  }

  function undoAnswered(op, r) {
    if (op.show) {
      const item = makeItem(r);
      state.done.delete(item.id);
      reshow(item);
      notice(`Undone: ${r.label || 'label'} for ${r.path}`);
    } else if (op.id !== null && r.id !== op.id) {
      notice(`The server undid the label of ${r.path}, not the one expected; check it.`, 'error');
    }
  }

  // ---------------------------------------------------------------- AUTO mode
  const countdown = $('countdown');
  const bar = $('countdown-bar');

  function cancelCountdown() {
    if (auto.timer) clearTimeout(auto.timer);
    auto.timer = null;
  }

  function startCountdown() {
    cancelCountdown();
    renderCountdown();
    const item = state.current;
    if (!auto.on || auto.paused || !item || item.ok !== true) return;
    const ms = 1000 / auto.speed;
    bar.style.transition = 'none';
    bar.style.transform = 'scaleX(1)';
    void bar.offsetWidth; // restart the transition
    bar.style.transition = `transform ${ms}ms linear`;
    bar.style.transform = 'scaleX(0)';
    auto.timer = setTimeout(() => {
      auto.timer = null;
      if (state.current === item && auto.on && !auto.paused) label('negative', { auto: true });
    }, ms);
  }

  function renderCountdown() {
    countdown.hidden = !auto.on;
    const text = $('countdown-text');
    if (!auto.on) return;
    if (auto.paused) {
      const shown = getComputedStyle(bar).transform;
      bar.style.transition = 'none';
      bar.style.transform = shown === 'none' ? 'scaleX(1)' : shown;
      text.textContent = 'AUTO paused: M to resume';
    } else if (state.current && state.current.ok === false) {
      text.textContent = 'AUTO waits: this image cannot be shown (S skips it)';
    } else {
      text.textContent = `AUTO ${auto.speed.toFixed(1)}/s: negative unless F or Space`;
    }
    countdown.classList.toggle('paused', auto.paused);
  }

  function setAuto(on) {
    auto.on = on;
    auto.paused = false;
    document.body.classList.toggle('auto', on);
    $('auto-toggle').setAttribute('aria-pressed', String(on));
    $('autopause-label').textContent = 'Pause AUTO';
    if (on) resumeTimer();
    startCountdown();
    notice(on ? `AUTO on: ${auto.speed.toFixed(1)} images/s. F or Space marks positive, M pauses.` : 'AUTO off.');
  }

  function setAutoPaused(paused, why) {
    if (!auto.on) return;
    auto.paused = paused;
    $('autopause-label').textContent = paused ? 'Resume AUTO' : 'Pause AUTO';
    if (paused) {
      cancelCountdown();
      renderCountdown();
    } else {
      startCountdown();
    }
    if (why) notice(why);
  }

  // ---------------------------------------------------------------- session timer
  function activeMs() {
    const now = session.pausedAt ?? performance.now();
    return now - session.start - session.pausedMs;
  }

  function toggleTimer() {
    if (session.pausedAt === null) session.pausedAt = performance.now();
    else resumeTimer();
    renderSession();
  }

  function resumeTimer() {
    if (session.pausedAt !== null) {
      session.pausedMs += performance.now() - session.pausedAt;
      session.pausedAt = null;
      renderSession();
    }
  }

  function clock(ms) {
    const s = Math.floor(ms / 1000);
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const ss = String(s % 60).padStart(2, '0');
    return h ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
  }

  function renderSession() {
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
    $('st-all').textContent = state.stats ? `${num(state.stats.last_minute)} labels last minute` : '–';
  }

  // Labels in force per annotator; names are the people's own text, so never HTML.
  function renderAnnotators(list) {
    const dl = $('st-annotators');
    const rows = [];
    for (const a of list || []) {
      const dt = document.createElement('dt');
      dt.textContent = a.name || '(no name)';
      dt.title = dt.textContent;
      dt.classList.toggle('unnamed', !a.name);
      dt.classList.toggle('me', a.name !== '' && a.name === state.annotator);
      const dd = document.createElement('dd');
      dd.textContent = `${num(a.annotated)}${a.skipped ? ` + ${num(a.skipped)} skipped` : ''}`;
      rows.push(dt, dd);
    }
    if (!rows.length) {
      const dt = document.createElement('dt');
      dt.textContent = 'no labels yet';
      rows.push(dt, document.createElement('dd'));
    }
    dl.replaceChildren(...rows);
  }

  // ---------------------------------------------------------------- the annotator's name
  const nameInput = $('annotator');

  function cleanName(text) {
    // Control characters cannot be sent; the server trims and counts code points as here.
    return Array.from(String(text || '').replace(/\p{Cc}/gu, '').trim()).slice(0, MAX_NAME).join('');
  }

  function setAnnotator(name, save) {
    state.annotator = cleanName(name);
    if (save) store.set('localStorage', LS_ANNOTATOR, state.annotator);
    document.body.classList.toggle('unnamed', !state.annotator);
    if (state.stats) renderAnnotators(state.stats.annotators);
  }

  nameInput.addEventListener('input', () => setAnnotator(nameInput.value, true));
  nameInput.addEventListener('change', () => { nameInput.value = state.annotator; });
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
      if (document.activeElement !== nameInput) nameInput.value = state.annotator;
    }
  });

  // ---------------------------------------------------------------- statistics
  function num(n) {
    return Number(n).toLocaleString('en-US');
  }

  function ago(s) {
    if (s < 90) return `${Math.round(s)} s ago`;
    if (s < 5400) return `${Math.round(s / 60)} min ago`;
    return `${(s / 3600).toFixed(1)} h ago`;
  }

  function duration(s) {
    if (s < 90) return `${Math.round(s)} s`;
    if (s < 5400) return `${Math.round(s / 60)} min`;
    return `${(s / 3600).toFixed(1)} h`;
  }

  // How much of the folder the AI has seen (predicted, labelled or skipped) and the time left.
  function coverageText(m, total) {
    const predicted = `${pct(m.predicted_share)} of images (${num(m.predicted)})`;
    if (typeof m.seen !== 'number' || !total || m.seen >= total) return predicted;
    const eta = typeof m.seen_eta_s === 'number' ? `, the rest in ~${duration(m.seen_eta_s)}` : '';
    return `${predicted}; AI has seen ${pct(m.seen / total)}${eta}`;
  }

  let statsBusy = false;
  let statsSoon = null;
  async function refreshStats() {
    if (statsBusy) return;
    statsBusy = true;
    try {
      const s = await api('GET', '/api/stats');
      state.stats = s;
      renderStats(s);
      checkRanking(s);
      await syncHistory();
    } catch { /* the banner says it */ } finally {
      statsBusy = false;
    }
  }

  // Soon after labels are saved, so the counts follow the keys without waiting for the poll.
  function refreshStatsSoon() {
    if (!statsSoon) statsSoon = setTimeout(() => { statsSoon = null; refreshStats(); }, 250);
  }

  async function pollStats() {
    await refreshStats();
    if (state.exhausted && !state.current && Date.now() - state.lastNextAt > DONE_POLL_MS) maybeRefill(true);
    else if (Date.now() - state.lastNextAt > KEEPALIVE_MS) maybeRefill(true);
    setTimeout(pollStats, STATS_MS);
  }

  function renderStats(s) {
    const share = s.total ? (s.annotated + s.skipped) / s.total : 0;
    $('progress-text').textContent = `${num(s.annotated + s.skipped)} / ${num(s.total)} done`;
    $('progress-bar').value = share;
    $('st-annotated').textContent = `${num(s.annotated)} / ${num(s.total)}`;
    $('st-positives').textContent = num(s.positives);
    $('st-negatives').textContent = num(s.negatives);
    $('st-skipped').textContent = num(s.skipped);
    $('st-remaining').textContent = num(s.remaining);
    renderAnnotators(s.annotators);
    const m = s.model;
    $('model-none').hidden = !!m;
    $('model-stats').hidden = !m;
    if (m) {
      $('md-age').textContent = `#${m.checkpoint_generation}, ${ago(m.age_s)}`;
      $('md-trained').textContent = `${num(m.trained_on)} labels (${num(m.positives_trained_on)} positive)`;
      $('md-predicted').textContent = coverageText(m, s.total);
      $('md-selector').textContent = `${m.selector}, ranking ${ago(m.ranking_age_s)}`;
      const loss = typeof m.loss === 'number' ? `, loss ${m.loss.toFixed(3)}` : '';
      $('md-net').textContent = `${m.backbone} ${m.input_size}px, ${m.mode}${loss}`;
    }
    $('md-online').textContent = s.online ? `${pct(s.online.accuracy)} of ${num(s.online.evaluated)} labels` : 'no label judged yet';
    renderSession();
    if (!state.current && state.exhausted) renderDone();
  }

  // A new ranking reorders what comes next: ask for the list again (the shown image stays).
  function checkRanking(s) {
    const m = s.model;
    const stamp = m ? `${m.checkpoint_generation}/${Math.round(Date.now() / 1000 - m.ranking_age_s)}` : s.selector || 'none';
    if (state.rankingStamp !== null && stamp !== state.rankingStamp) {
      const [gen, t] = stamp.split('/');
      const [ogen, ot] = state.rankingStamp.split('/');
      if (gen !== ogen || t === undefined || ot === undefined || Math.abs(Number(t) - Number(ot)) > 2) maybeRefill(true);
    }
    state.rankingStamp = stamp;
  }

  // ---------------------------------------------------------------- charts
  async function syncHistory() {
    if (hist.busy) return;
    hist.busy = true;
    try {
      const n = hist.entries.length;
      const r = await api('GET', `/api/history?since=${Math.max(0, n - 1)}`);
      const same = (a, b) => a && b && a.id === b.id && a.label === b.label && a.time_ms === b.time_ms;
      if (n > 0 && (r.total < n || !same(r.labels[0], hist.entries[n - 1]))) {
        // Something before our end changed (undo, relabel): start over.
        const all = await api('GET', '/api/history?since=0');
        hist.entries = all.labels;
      } else {
        hist.entries = hist.entries.concat(r.labels.slice(n > 0 ? 1 : 0));
      }
      drawCharts();
    } finally {
      hist.busy = false;
    }
  }

  const CW = 320;
  const CH = 150;
  const PAD = { l: 34, r: 8, t: 8, b: 24 };

  function scaleFns(xmax, ymax) {
    const w = CW - PAD.l - PAD.r;
    const h = CH - PAD.t - PAD.b;
    return [(x) => (PAD.l + (x / xmax) * w).toFixed(1), (y) => (PAD.t + h - (y / ymax) * h).toFixed(1)];
  }

  function thin(points, max = 300) {
    if (points.length <= max) return points;
    const step = points.length / max;
    const out = [];
    for (let i = 0; i < max; i++) out.push(points[Math.floor(i * step)]);
    out.push(points[points.length - 1]);
    return out;
  }

  function pathOf(points, sx, sy) {
    return points.map(([x, y], i) => `${i ? 'L' : 'M'}${sx(x)},${sy(y)}`).join(' ');
  }

  function axes(xmax, ymax, sx, sy, ylabels, xlabel) {
    const x0 = sx(0);
    const y0 = sy(0);
    let g = `<line class="axis" x1="${x0}" y1="${y0}" x2="${sx(xmax)}" y2="${y0}"/>`;
    g += `<line class="axis" x1="${x0}" y1="${y0}" x2="${x0}" y2="${sy(ymax)}"/>`;
    for (const [v, text] of ylabels) {
      g += `<line class="grid" x1="${x0}" y1="${sy(v)}" x2="${sx(xmax)}" y2="${sy(v)}"/>`;
      g += `<text class="tick" x="${PAD.l - 4}" y="${sy(v)}" text-anchor="end" dominant-baseline="middle">${text}</text>`;
    }
    g += `<text class="tick" x="${x0}" y="${CH - 6}">0</text>`;
    g += `<text class="tick" x="${sx(xmax)}" y="${CH - 6}" text-anchor="end">${num(xmax)}</text>`;
    g += `<text class="tick" x="${(PAD.l + CW - PAD.r) / 2}" y="${CH - 6}" text-anchor="middle">${xlabel}</text>`;
    return g;
  }

  function svg(label, body) {
    return `<svg viewBox="0 0 ${CW} ${CH}" role="img" aria-label="${label}" preserveAspectRatio="xMidYMid meet">${body}</svg>`;
  }

  function drawCharts() {
    const s = state.stats;
    const entries = hist.entries;
    const n = entries.length;
    // Cumulative positives found, against what a random order would find.
    const box = $('chart-discovery');
    if (!n) {
      box.innerHTML = '<p class="chart-empty">No labels yet.</p>';
      $('chart-discovery-cap').textContent = 'Positives found versus labels given, beside a random order.';
    } else {
      const points = [[0, 0]];
      let pos = 0;
      entries.forEach((e, i) => {
        if (e.label === 'positive') pos++;
        points.push([i + 1, pos]);
      });
      const est = s && s.model && typeof s.model.estimated_positive_rate === 'number' ? s.model.estimated_positive_rate : null;
      const rate = est !== null ? est : pos / n;
      const ymax = Math.max(1, pos, n * rate);
      const [sx, sy] = scaleFns(n, ymax);
      const yl = [[0, '0'], [ymax, num(Math.round(ymax))]];
      let body = axes(n, ymax, sx, sy, yl.slice(1), 'labels given');
      body += `<path class="line random" d="M${sx(0)},${sy(0)} L${sx(n)},${sy(n * rate)}"/>`;
      body += `<path class="line found" d="${pathOf(thin(points), sx, sy)}"/>`;
      box.innerHTML = svg(`Positives found: ${pos} in ${n} labels; a random order would give about ${(n * rate).toFixed(0)}`, body);
      const gain = n * rate > 0 ? ` (${(pos / (n * rate)).toFixed(1)}×)` : '';
      $('chart-discovery-cap').innerHTML = `<span class="key found"></span>${num(pos)} positives found in ${num(n)} labels; <span class="key random"></span>random order ≈ ${num(Math.round(n * rate))}${gain}${est !== null ? ', rate estimated by the model' : ''}.`;
    }
    // Rolling online accuracy over the labels that had a probability when they were given.
    const abox = $('chart-accuracy');
    const window_ = [];
    let right = 0;
    const points = [];
    entries.forEach((e, i) => {
      if (typeof e.prob !== 'number') return;
      const ok = (e.prob >= 0.5) === (e.label === 'positive') ? 1 : 0;
      window_.push(ok);
      right += ok;
      if (window_.length > ROLL) right -= window_.shift();
      points.push([i + 1, right / window_.length]);
    });
    if (!points.length) {
      const why = s && s.model ? 'No label judged by the model yet' : 'Appears once a model exists';
      abox.innerHTML = `<p class="chart-empty">${why}.</p>`;
      $('chart-accuracy-cap').textContent = 'The model\'s accuracy on each new label, judged by the probability it showed before the label.';
    } else {
      const [sx, sy] = scaleFns(n, 1);
      let body = axes(n, 1, sx, sy, [[0.5, '50%'], [1, '100%']], 'labels given');
      body += `<path class="line acc" d="${pathOf(thin(points), sx, sy)}"/>`;
      const last = points[points.length - 1][1];
      abox.innerHTML = svg(`Rolling accuracy ${pct(last)}`, body);
      const overall = s && s.online ? `; ${pct(s.online.accuracy)} over all ${num(s.online.evaluated)}` : '';
      $('chart-accuracy-cap').textContent = `Model accuracy before each label, last ${Math.min(ROLL, window_.length)}: ${pct(last)}${overall}.`;
    }
  }

  // ---------------------------------------------------------------- banner, notices
  function renderBanner() {
    const banner = $('banner');
    const n = state.ops.length;
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
  }

  function renderSaveState() {
    const n = unsavedLabelCount();
    const el = $('save-state');
    el.textContent = n ? `saving ${n}…` : 'all saved';
    el.classList.toggle('pending', n > 0);
    document.body.dataset.pending = String(state.ops.length);
    renderBanner();
    if (!state.current && state.exhausted) renderDone();
  }

  let noticeTimer = null;
  function notice(text, kind = 'info') {
    const el = $('notice');
    el.textContent = text;
    el.className = `notice ${kind}`;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => { el.textContent = ''; }, kind === 'error' ? 15000 : 4000);
  }

  // ---------------------------------------------------------------- display settings
  const contrast = $('contrast');
  const brightness = $('brightness');
  const speed = $('speed');

  function applyDisplay(save) {
    const c = Number(contrast.value);
    const b = Number(brightness.value);
    stage.style.setProperty('--contrast', String(c));
    stage.style.setProperty('--brightness', String(b));
    $('contrast-out').textContent = c.toFixed(2);
    $('brightness-out').textContent = b.toFixed(2);
    if (save) store.set('localStorage', LS_DISPLAY, JSON.stringify({ contrast: c, brightness: b }));
  }

  function loadDisplay() {
    try {
      const d = JSON.parse(store.get('localStorage', LS_DISPLAY) || 'null');
      if (d && Number.isFinite(d.contrast)) contrast.value = String(d.contrast);
      if (d && Number.isFinite(d.brightness)) brightness.value = String(d.brightness);
    } catch { /* defaults */ }
    const sp = Number(store.get('localStorage', LS_SPEED));
    if (Number.isFinite(sp) && sp >= 0.2 && sp <= 5) speed.value = String(sp);
    applyDisplay(false);
    applySpeed(false);
  }

  function applySpeed(save) {
    auto.speed = Math.min(5, Math.max(0.2, Number(speed.value) || 1));
    $('speed-out').textContent = `${auto.speed.toFixed(1)}/s`;
    if (save) store.set('localStorage', LS_SPEED, String(auto.speed));
    renderCountdown();
  }

  contrast.addEventListener('input', () => applyDisplay(true));
  brightness.addEventListener('input', () => applyDisplay(true));
  speed.addEventListener('input', () => applySpeed(true));
  speed.addEventListener('change', () => { if (auto.on && !auto.paused) startCountdown(); });
  $('display-reset').addEventListener('click', () => {
    contrast.value = '1';
    brightness.value = '1';
    applyDisplay(true);
  });

  // ---------------------------------------------------------------- input
  function perform(action, how = {}) {
    switch (action) {
      case 'positive': return label('positive', how);
      case 'negative': return label('negative', how);
      case 'skip': return label('skip', how);
      case 'undo': return undo();
      case 'pause': return toggleTimer();
      case 'autopause': return setAutoPaused(!auto.paused);
      case 'auto': return setAuto(!auto.on);
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

  document.addEventListener('keydown', (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || e.isComposing || typing(e.target)) return;
    const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
    let action = null;
    if (key === 'f') action = 'positive';
    else if (key === 'j') action = 'negative';
    else if (key === 's') action = 'skip';
    else if (key === 'Backspace') action = 'undo';
    else if (key === ' ') action = auto.on ? 'positive' : 'pause';
    else if (key === 'm') action = auto.on ? 'autopause' : null;
    else if (key === 'a') action = 'auto';
    if (!action) return;
    e.preventDefault();
    if (e.repeat) return; // a held key labels one image, not many
    let mark = null;
    if (['positive', 'negative', 'skip', 'undo'].includes(action)) {
      mark = `binann-key-${performance.now().toFixed(3)}`;
      performance.mark(mark);
    }
    state.pendingMark = mark;
    perform(action, { key: true });
  });

  for (const btn of document.querySelectorAll('button[data-action]')) {
    btn.addEventListener('mousedown', (e) => e.preventDefault()); // a click keeps focus where it was
    btn.addEventListener('click', () => {
      state.pendingMark = null;
      perform(btn.dataset.action);
    });
  }
  $('auto-toggle').addEventListener('mousedown', (e) => e.preventDefault());
  $('auto-toggle').addEventListener('click', () => setAuto(!auto.on));

  window.addEventListener('beforeunload', (e) => {
    if (state.ops.length) {
      e.preventDefault();
      e.returnValue = '';
    }
  });
  window.addEventListener('online', () => { conn.backoff = BACKOFF_MIN_MS; maybeRefill(true); });

  // For tests and debugging.
  window.binannDebug = {
    current: () => (state.current ? state.current.id : null),
    queued: () => state.queue.map((it) => it.id),
    pending: () => state.ops.length,
    clientId: () => state.clientId,
    annotator: () => state.annotator,
  };

  // ---------------------------------------------------------------- start
  async function start() {
    loadDisplay();
    setAnnotator(store.get('localStorage', LS_ANNOTATOR), false);
    nameInput.value = state.annotator;
    renderMeta();
    renderEmptyStage();
    setInterval(renderSession, 1000);
    state.clientId = await claimClientId();
    restoreOps();
    persistOps();
    pump();
    refill();
    pollStats();
  }

  start();
})();
