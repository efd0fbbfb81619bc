// AUTO mode: each image becomes negative when its countdown ends unless the person said otherwise.
import { label, resumeTimer } from './main.mjs';
import { notice } from './stage.mjs';
import { auto, state } from './state.mjs';
import { $, store } from './util.mjs';

const LS_SPEED = 'binann.speed';
export const SPEED_MIN = 0.2;
export const SPEED_MAX = 5;

export function cancelCountdown() {
  if (auto.timer) clearTimeout(auto.timer);
  auto.timer = null;
}

export function startCountdown() {
  cancelCountdown();
  renderCountdown();
  const item = state.current;
  if (!auto.on || auto.paused || !item || item.ok !== true) return;
  const ms = 1000 / auto.speed;
  const bar = $('countdown-bar');
  bar.style.transition = 'none';
  bar.style.transform = 'scaleX(1)';
  void bar.offsetWidth; // restart the transition
  bar.style.transition = `transform ${ms}ms linear`;
  bar.style.transform = 'scaleX(0)';
  auto.timer = setTimeout(() => {
    auto.timer = null;
    if (state.current === item && auto.on && !auto.paused) label('negative');
  }, ms);
}

export function renderCountdown() {
  const countdown = $('countdown');
  const bar = $('countdown-bar');
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

export function setAuto(on) {
  auto.on = on;
  auto.paused = false;
  document.body.classList.toggle('auto', on);
  $('auto-toggle').setAttribute('aria-pressed', String(on));
  $('autopause-label').textContent = 'Pause AUTO';
  if (on) resumeTimer();
  startCountdown();
  notice(on ? `AUTO on: ${auto.speed.toFixed(1)} images/s. F or Space marks positive, M pauses.` : 'AUTO off.');
  document.dispatchEvent(new CustomEvent('binann:mode'));
}

export function setAutoPaused(paused, why) {
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

export function applySpeed(save) {
  const speed = $('speed');
  auto.speed = Math.min(SPEED_MAX, Math.max(SPEED_MIN, Number(speed.value) || 1));
  $('speed-out').textContent = `${auto.speed.toFixed(1)}/s`;
  if (save) store.set('localStorage', LS_SPEED, String(auto.speed));
  renderCountdown();
}

export function loadSpeed() {
  const speed = $('speed');
  const sp = Number(store.get('localStorage', LS_SPEED));
  if (Number.isFinite(sp) && sp >= SPEED_MIN && sp <= SPEED_MAX) speed.value = String(sp);
  applySpeed(false);
  speed.addEventListener('input', () => applySpeed(true));
  speed.addEventListener('change', () => { if (auto.on && !auto.paused) startCountdown(); });
}
