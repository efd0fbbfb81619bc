// The HTTP API as the page uses it: one function per request shape, the connection's state
// (unreachable, refused), and this tab's client id.
import { ApiError } from './outbox.mjs';
import { randomId, store } from './util.mjs';

const REQUEST_TIMEOUT_MS = 15000;
const SS_CLIENT = 'binann.client';
export const SS_OPS = 'binann.ops';

/** What the banner shows about the connection. */
export const conn = {
  clientId: null, // this tab's X-Client
  unreachable: false, // the last request got no answer
  blocked: null, // {status, message} while the server refuses this page (401 no token, 403 cross_site)
  saveError: null, // the last reason a label could not be saved, until one is
  onChange: () => {}, // set by the page: re-render the banner
};

function setConn(field, value) {
  if (conn[field] === value) return;
  conn[field] = value;
  conn.onChange();
}

/**
 * One request. `annotator`: the name to send (a queued label keeps the one it was given with).
 * Throws an ApiError: retryable when the request may succeed later unchanged.
 */
export async function api(method, url, body, annotator = '') {
  const headers = { 'X-Client': conn.clientId };
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
    setConn('unreachable', true);
    throw new ApiError(0, 'unreachable', 'cannot reach the server', true);
  } finally {
    clearTimeout(timer);
  }
  setConn('unreachable', false);
  if (!r.ok || data === null) {
    const code = (data && data.error && data.error.code) || `http_${r.status}`;
    const message = (data && data.error && data.error.message) || `HTTP ${r.status} ${r.statusText || ''}`.trim();
    // Not the label's fault, and fixable by the person: keep everything and retry.
    const blocked = r.status === 401 || (r.status === 403 && code === 'cross_site');
    if (blocked) {
      conn.blocked = { status: r.status, message };
      conn.onChange();
    }
    throw new ApiError(r.status, code, message, blocked || r.ok || r.status >= 500 || r.status === 408 || r.status === 429);
  }
  setConn('blocked', null);
  return data;
}

/** `GET /api/next`: `count` images, keeping the ids in `keep` reserved for this tab. */
export function next(count, keep) {
  const ids = keep.slice(0, 64);
  return api('GET', `/api/next?count=${Math.max(1, Math.min(32, count))}${ids.length ? `&keep=${ids.join(',')}` : ''}`);
}

/** `POST /api/similar`: the `count` images nearest to image `id` come next for this tab. */
export function similar(id, count) {
  return api('POST', '/api/similar', { id, count });
}

/** Sends one op of the outbox (see outbox.mjs). */
export function sendOp(op, annotator) {
  if (op.kind === 'label') return api('POST', '/api/annotations', { id: op.id, label: op.label }, op.annotator ?? annotator);
  return api('POST', '/api/undo', undefined, annotator);
}

/** The outbox's storage: this tab's session storage. */
export const opsStorage = {
  get: () => store.get('sessionStorage', SS_OPS),
  set: (text) => store.set('sessionStorage', SS_OPS, text),
  del: () => store.del('sessionStorage', SS_OPS),
};

// Each tab is its own client: the id lives in sessionStorage (kept across reloads of this tab,
// not shared with other tabs) and goes out as the X-Client header. A duplicated tab inherits
// the sessionStorage copy, so it asks the other tabs whether the id is taken.
export async function claimClientId() {
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
  conn.clientId = id;
  return id;
}
