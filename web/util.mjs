// Small helpers shared by the page's modules: storage that may be disabled, formatting, ids.

export const $ = (id) => document.getElementById(id);

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** localStorage / sessionStorage that never throws (storage may be full or disabled). */
export const store = {
  get(area, key) {
    try { return globalThis[area].getItem(key); } catch { return null; }
  },
  set(area, key, value) {
    try { globalThis[area].setItem(key, value); } catch { /* storage full or disabled */ }
  },
  del(area, key) {
    try { globalThis[area].removeItem(key); } catch { /* ignore */ }
  },
};

export function randomId() {
  const bytes = new Uint8Array(12);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

export function num(n) {
  return Number(n).toLocaleString('en-US');
}

export function pct(p) {
  return `${(p * 100).toFixed(p > 0.001 && p < 0.999 ? 1 : 0).replace(/\.0$/, '')}%`;
}

export function ago(s) {
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  return `${(s / 3600).toFixed(1)} h ago`;
}

export function duration(s) {
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

export function clock(ms) {
  const s = Math.floor(ms / 1000);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

export function plural(n, one, many = `${one}s`) {
  return `${n} ${n === 1 ? one : many}`;
}
