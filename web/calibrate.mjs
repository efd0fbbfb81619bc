// Calibration of the reaction time: a short stream of plain frames at AUTO's pace with a few known
// targets (a bright ring); the person presses F or Space at each. The median delay becomes d.
import { autoOn, autoPaused, calibrateRt, reactionTime, setAutoPaused } from './auto.mjs';
import { notice } from './stage.mjs';
import { $ } from './util.mjs';

export const TARGETS = 8;
const NEEDED = 5; // targets answered for a result
const FRAME_MS = 400; // 2.5 frames a second
const WINDOW_MS = 1500; // a press this long after a target is not a reaction to it

/** The calibration running; null when none. */
const calibration = { run: null };

/** Whether a calibration is running. */
export function calibrating() {
  return calibration.run !== null;
}

/** Starts calibration (C). */
export function startCalibration() {
  if (calibration.run) return;
  if (autoOn() && !autoPaused()) setAutoPaused(true);
  // Frames: 3–6 plain ones before each target, a few after the last.
  const frames = [];
  for (let i = 0; i < TARGETS; i++) {
    const gap = 3 + Math.floor(Math.random() * 4);
    for (let j = 0; j < gap; j++) frames.push(false);
    frames.push(true);
  }
  frames.push(false, false, false, false);
  calibration.run = { frames, index: -1, targets: [], presses: 0, stray: 0, timer: null };
  $('calib').hidden = false;
  $('calib-text').textContent = `Press F or Space as soon as you see the ring (${TARGETS} rings). Escape stops.`;
  document.dispatchEvent(new CustomEvent('binann:mode'));
  step();
}

function step() {
  const run = calibration.run;
  if (!run) return;
  run.index++;
  if (run.index >= run.frames.length) {
    finish();
    return;
  }
  const target = run.frames[run.index];
  const box = $('calib-frame');
  box.classList.toggle('target', target);
  box.style.setProperty('--shade', String(20 + Math.floor(Math.random() * 40)));
  box.style.setProperty('--turn', `${Math.floor(Math.random() * 360)}deg`);
  const shown = performance.now();
  requestAnimationFrame((t) => {
    const on = Math.min(Math.max(t, shown), performance.now());
    if (target) run.targets.push({ on, rt: null });
    document.dispatchEvent(new CustomEvent('binann:onset', { detail: { calibration: true, target, t: on } }));
  });
  run.timer = setTimeout(step, FRAME_MS);
}

/** F or Space during calibration, pressed at `t`. */
export function calibrationPress(t) {
  const run = calibration.run;
  if (!run) return;
  const now = performance.now();
  if (!(t > 0 && t <= now)) t = now;
  run.presses++;
  const target = [...run.targets].reverse().find((x) => x.rt === null && t - x.on >= 100 && t - x.on <= WINDOW_MS);
  if (target) target.rt = t - target.on;
  else run.stray++;
  const answered = run.targets.filter((x) => x.rt !== null).length;
  $('calib-text').textContent = `${answered} of ${TARGETS} rings answered${run.stray ? `, ${run.stray} press${run.stray === 1 ? '' : 'es'} with no ring` : ''}. Escape stops.`;
}

function finish() {
  const run = calibration.run;
  calibration.run = null;
  $('calib').hidden = true;
  document.dispatchEvent(new CustomEvent('binann:mode'));
  const rts = run.targets.map((x) => x.rt).filter((x) => x !== null);
  if (rts.length < NEEDED) {
    notice(`Calibration: only ${rts.length} of ${TARGETS} rings answered (${NEEDED} needed); your reaction time is unchanged.`, 'error');
    return;
  }
  calibrateRt(rts);
  const { d, sd } = reactionTime();
  notice(`Calibrated: your reaction time d is ${Math.round(d)} ms (spread ${Math.round(sd)} ms), from ${rts.length} rings.`);
}

/** Escape during calibration. */
export function cancelCalibration() {
  const run = calibration.run;
  if (!run) return;
  clearTimeout(run.timer);
  calibration.run = null;
  $('calib').hidden = true;
  notice('Calibration stopped; your reaction time is unchanged.');
  document.dispatchEvent(new CustomEvent('binann:mode'));
}
