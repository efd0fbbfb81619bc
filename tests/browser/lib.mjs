// Helpers of the browser tests: a pure-JS PNG writer, test datasets, the real binann-server, and
// Chromium through playwright-core (never a downloaded browser).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import zlib from 'node:zlib';

import { chromium } from 'playwright-core';

export const HERE = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(HERE, '..', '..');
export const ARTIFACTS = path.join(HERE, 'artifacts');
export const SERVER_BIN = process.env.BINANN_SERVER_BIN
  || path.join(process.env.CARGO_TARGET_DIR || path.join(ROOT, 'target'), 'debug', 'binann-server');
export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

// ------------------------------------------------------------------ PNG
const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(buf) {
  let c = 0xffffffff;
  for (const b of buf) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type, data) {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const td = Buffer.concat([Buffer.from(type, 'ascii'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(td));
  return Buffer.concat([len, td, crc]);
}

/** A PNG of `width`×`height`; `pixel(x, y)` returns a gray value, or [r, g, b] when `rgb`. */
export function png(width, height, pixel, { rgb = false } = {}) {
  const channels = rgb ? 3 : 1;
  const raw = Buffer.alloc((width * channels + 1) * height);
  let o = 0;
  for (let y = 0; y < height; y++) {
    raw[o++] = 0; // filter: none
    for (let x = 0; x < width; x++) {
      const v = pixel(x, y);
      if (rgb) {
        raw[o++] = v[0];
        raw[o++] = v[1];
        raw[o++] = v[2];
      } else {
        raw[o++] = v;
      }
    }
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = rgb ? 2 : 0; // color type
  ihdr[10] = 0;
  ihdr[11] = 0;
  ihdr[12] = 0;
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', zlib.deflateSync(raw)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

export function tmpdir(prefix) {
  return fs.mkdtempSync(path.join(os.tmpdir(), `binann-${prefix}-`));
}

/**
 * A dataset folder: `tiny` 28×28 grayscale PNGs of different brightness (some in a subfolder),
 * optionally one big RGB image and one corrupt file. Returns the folder.
 */
export function makeDataset({ tiny = 40, big = true, corrupt = false } = {}) {
  const dir = tmpdir('data');
  fs.mkdirSync(path.join(dir, 'sub', 'deeper'), { recursive: true });
  for (let i = 0; i < tiny; i++) {
    const level = Math.round((i * 255) / Math.max(1, tiny - 1));
    const bytes = png(28, 28, (x, y) => {
      const ring = Math.abs(Math.hypot(x - 13.5, y - 13.5) - 8) < 2.5;
      return ring ? 255 - level : level;
    });
    const where = i % 3 === 0 ? 'sub' : i % 3 === 1 ? path.join('sub', 'deeper') : '';
    fs.writeFileSync(path.join(dir, where, `tiny_${String(i).padStart(3, '0')}.png`), bytes);
  }
  if (big) {
    fs.writeFileSync(path.join(dir, 'big.png'), png(1600, 1000, (x, y) => [(x * 255 / 1600) | 0, (y * 255 / 1000) | 0, ((x + y) / 10) & 255], { rgb: true }));
  }
  if (corrupt) {
    fs.writeFileSync(path.join(dir, 'corrupt.png'), Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47]), Buffer.alloc(200, 7)]));
  }
  return dir;
}

// ------------------------------------------------------------------ server
/**
 * Starts the real server; resolves once it prints its address. With `token`, the server requires
 * it and the helpers below send it as a bearer token.
 */
export async function startServer({ datadir, rundir, port = 0, extra = [], token = null }) {
  // Tests that follow the hand-out order run without audit picks (random by design), unless they
  // set the rate themselves.
  const auditOff = extra.includes('--audit-rate') ? [] : ['--audit-rate', '0'];
  const args = ['--datadir', datadir, '--rundir', rundir, '--host', '127.0.0.1', '--port', String(port), ...auditOff, ...extra];
  if (token) args.push('--token', token);
  const proc = spawn(SERVER_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' } });
  let stderr = '';
  proc.stderr.on('data', (d) => { stderr += d; });
  let stopping = false;
  const exited = new Promise((resolve) => proc.once('exit', (code, signal) => {
    if (!stopping) console.error(`# binann-server (pid ${proc.pid}) exited unexpectedly: code ${code}, signal ${signal}\n${stderr.slice(-4000)}`);
    resolve({ code, signal });
  }));
  const url = await new Promise((resolve, reject) => {
    const rl = readline.createInterface({ input: proc.stdout });
    const timer = setTimeout(() => reject(new Error(`server did not start in time\n${stderr}`)), 30000);
    rl.on('line', (line) => {
      const m = /listening on (http:\/\/\S+)/.exec(line);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`server exited (code ${code}, signal ${signal}) before listening\n${stderr}`));
    });
  });
  const server = {
    url,
    port: Number(new URL(url).port),
    proc,
    datadir,
    rundir,
    stderr: () => stderr,
    /**
     * Ends the server: SIGTERM, or SIGKILL to simulate a crash. Close the pages first: on SIGTERM
     * the server waits (up to 30 s) for open keep-alive connections before it exits.
     */
    async stop(signal = 'SIGTERM') {
      stopping = true;
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      const slow = setTimeout(() => {
        console.error(`# binann-server (${url}) still running 10 s after ${signal}: killing it`);
        proc.kill('SIGKILL');
      }, 10000);
      await exited;
      clearTimeout(slow);
    },
    token,
    async api(pathname) {
      const { status, body } = await getJson(url + pathname, token ? { Authorization: `Bearer ${token}` } : {});
      if (status !== 200) throw new Error(`${pathname}: ${status} ${JSON.stringify(body)}`);
      return body;
    },
    stats() {
      return server.api('/api/stats');
    },
  };
  return server;
}

/**
 * GET as JSON on a connection of its own (no keep-alive: on SIGTERM the server waits for idle
 * keep-alive connections to close before it exits).
 */
export function getJson(url, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false, headers: { Connection: 'close', ...headers } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { text += d; });
      res.on('end', () => {
        try {
          resolve({ status: res.statusCode, body: JSON.parse(text) });
        } catch (e) {
          reject(e);
        }
      });
    });
    req.on('error', reject);
    req.setTimeout(10000, () => req.destroy(new Error(`timeout: GET ${url}`)));
  });
}

/** A dataset, a run directory and a server over them. */
export async function freshServer(datasetOptions, extra = []) {
  const datadir = makeDataset(datasetOptions);
  const rundir = path.join(tmpdir('run'), 'run');
  return startServer({ datadir, rundir, extra });
}

// ------------------------------------------------------------------ browser
export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

/** Launches the system Chromium (playwright gives each launch a fresh temporary profile). */
export function launchBrowser() {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM} (set CHROMIUM_PATH)`);
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
}

/** Polls `fn` until it returns a truthy value; returns it. */
export async function waitFor(fn, { timeout = 10000, interval = 50, what = 'condition' } = {}) {
  const end = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    await new Promise((r) => setTimeout(r, interval));
  }
}

export function quantile(values, q) {
  const s = [...values].sort((a, b) => a - b);
  if (!s.length) return NaN;
  const i = Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1));
  return s[i];
}
