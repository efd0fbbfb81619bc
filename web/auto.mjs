// AUTO mode: images stream by at the chosen speed, and each becomes negative unless the person
// presses F (or Space) for it.
//
// A person needs a reaction time d (300–500 ms) to see a positive and press: at 3 images/s the
// press lands on the next image. So a press is given to the image shown one reaction time before
// it (rt.mjs decides which), an image passed by is committed negative only once no press can be
// for it any more (its attribution window has closed), and a press that falls between two images
// pauses AUTO and asks which one it was for. d is the person's own: measured by calibration
// (calibrate.mjs), then kept up to date from the presses whose image was clear, and from the
// answers; the sample of a press whose label is undone is withdrawn.
import { give, label, renderSession, resumeTimer } from './labels.mjs';
import { ReactionTime, attribute, clearPressSample, closesAt, maxSpeed, sampleWindow } from './rt.mjs';
import { advance, current, notice, setLatencyMark } from './stage.mjs';
import { $, store } from './util.mjs';

const LS_SPEED = 'binann.speed';
const LS_RT = 'binann.reaction';
export const SPEED_MIN = 0.2;
export const SPEED_MAX = 5;
const GRACE_MS = 60; // a press is handled at most this long after it happened
const KEEP_VIEWS = 4; // decided views kept at the front (a late press still finds them)

/** AUTO's state; changed only here (the rest of the page reads it through the functions below). */
const auto = {
  on: false,
  paused: false,
  speed: 1, // images per second
  timer: null, // the countdown of the image shown
  // Presentations in AUTO, oldest first: {item, on (ms, performance.now), decided: null |
  // 'positive' | 'negative' | 'skip', advanced (left the screen by AUTO), withdrawn (left it
  // otherwise: never labelled by AUTO), held (in a question)}. An undecided view that left the
  // screen is pending: still reserved for this tab, negative once its attribution window closes.
  views: [],
  closer: null, // the timer that commits pending negatives
  onsetItem: null, // the item whose onset was announced last
  asking: null, // {views: [a, b], t} while the page asks which of two images a press was for
  // Positive presses while the page asks: a reaction to an image shown just before the question
  // (AUTO stops while it asks), given once the question is answered.
  deferred: [],
  rt: null, // the person's ReactionTime (rt.mjs), kept in localStorage
  counts: { presses: 0, ambiguous: 0, none: 0, repeats: 0 }, // this page's presses in AUTO
};

/** Whether AUTO is on (paused or not). */
export function autoOn() {
  return auto.on;
}

/** Whether AUTO is paused (while on). */
export function autoPaused() {
  return auto.paused;
}

/** Whether AUTO is asking which of two images a press was for. */
export function autoAsking() {
  return auto.asking !== null;
}

/** The person's reaction time: {d, sd} in ms. */
export function reactionTime() {
  return { d: auto.rt.d, sd: auto.rt.sd };
}

/** The reaction time AUTO plans with: d and the spread's upper bound (rt.mjs, SD_BOUND_Z). */
function planned() {
  return { d: auto.rt.d, sd: auto.rt.sdBound };
}

/** For tests and debugging: this page's presses, d, the question, the images pending. */
export function autoDebug() {
  return {
    ...auto.counts, d: auto.rt.d, sd: auto.rt.sd, sdBound: auto.rt.sdBound, asking: auto.asking ? auto.asking.views.map((v) => v.item.id) : null,
    pending: auto.views.filter((v) => !v.decided && !v.withdrawn && v.advanced).map((v) => v.item.id),
  };
}

// ---------------------------------------------------------------- reaction time
function loadRt() {
  let saved = null;
  try { saved = JSON.parse(store.get('localStorage', LS_RT) || 'null'); } catch { saved = null; }
  auto.rt = new ReactionTime(saved && typeof saved === 'object' ? saved : {});
  renderRt();
}

function saveRt() {
  store.set('localStorage', LS_RT, JSON.stringify(auto.rt));
  renderRt();
}

/** A calibration's reaction times (ms) replace what was measured before; kept in this browser. */
export function calibrateRt(rts) {
  auto.rt.calibrate(rts);
  saveRt();
}

function renderRt() {
  const rt = auto.rt;
  const el = $('rt-text');
  el.textContent = `${Math.round(rt.d)} ms`;
  el.parentElement.title = `Your reaction time d: AUTO gives a keypress to the image shown ${Math.round(rt.d)} ms before it (spread ${Math.round(rt.sd)} ms, allowed for as up to ${Math.round(rt.sdBound)} ms while few presses are known; ${rt.calibrated ? 'calibrated' : 'not calibrated: press C'}, then learnt from ${rt.samples.length} presses). Kept in this browser.`;
  el.parentElement.classList.toggle('uncalibrated', !rt.calibrated);
}

// ---------------------------------------------------------------- the stream of images
function lastView() {
  return auto.views[auto.views.length - 1] || null;
}

/** Items passed by in AUTO and not decided yet: still reserved for this tab. */
export function pendingItems() {
  return auto.views.filter((v) => !v.decided && !v.withdrawn && v.item !== current()).map((v) => v.item);
}

export function cancelCountdown() {
  if (auto.timer) clearTimeout(auto.timer);
  auto.timer = null;
}

/** Tells whoever listens (the benchmark's simulated person) that `item` appeared at `t`. */
function onset(item, t) {
  document.dispatchEvent(new CustomEvent('binann:onset', { detail: { id: item.id, path: item.path, t } }));
}

/** Called whenever an image is painted: records its presentation, and starts its countdown. */
export function startCountdown() {
  cancelCountdown();
  const item = current();
  if (auto.on && item && item.ok === true && auto.onsetItem !== item) {
    auto.onsetItem = item;
    const last = lastView();
    if (!last || last.item !== item) {
      // The image before left the screen some other way than by AUTO (undo, a mode switch).
      if (last && !last.decided && !last.advanced) last.withdrawn = true;
      const view = { item, on: performance.now(), decided: null, advanced: false, withdrawn: false, held: false };
      auto.views.push(view);
      // The frame that shows it: the onset a person reacts to.
      requestAnimationFrame((t) => {
        if (t > view.on) view.on = Math.min(t, performance.now());
        onset(item, view.on);
      });
    }
  }
  renderCountdown();
  if (!auto.on || auto.paused || auto.asking || !item || item.ok !== true) return;
  const ms = 1000 / speedNow();
  const bar = $('countdown-bar');
  bar.style.transition = 'none';
  bar.style.transform = 'scaleX(1)';
  void bar.offsetWidth; // restart the transition
  bar.style.transition = `transform ${ms}ms linear`;
  bar.style.transform = 'scaleX(0)';
  auto.timer = setTimeout(() => {
    auto.timer = null;
    if (current() !== item || !auto.on || auto.paused || auto.asking) return;
    // The image leaves the screen undecided: negative once its window closes.
    const view = lastView();
    if (view && view.item === item) view.advanced = true;
    advance();
    scheduleCloser();
  }, ms);
}

/** Commits as negative every pending image whose window has closed; sleeps until the next. */
function scheduleCloser() {
  if (auto.closer) clearTimeout(auto.closer);
  auto.closer = null;
  const now = performance.now();
  const { d, sd } = planned();
  let soonest = Infinity;
  auto.views.forEach((v, i) => {
    if (v.decided || v.withdrawn || v.held || !v.advanced) return;
    const at = closesAt(auto.views, i, d, sd) + GRACE_MS;
    if (at <= now) decide(v, 'negative');
    else soonest = Math.min(soonest, at);
  });
  // Forget decided views nobody can press for any more.
  while (auto.views.length > KEEP_VIEWS && (auto.views[0].decided || auto.views[0].withdrawn) && closesAt(auto.views, 0, d, sd) + GRACE_MS < now) {
    auto.views.shift();
  }
  if (soonest < Infinity) auto.closer = setTimeout(scheduleCloser, Math.max(0, soonest - now));
}

/** Commits every pending image as negative now (before an undo, or when AUTO ends). */
function settlePending() {
  for (const v of auto.views) {
    if (!v.decided && !v.withdrawn && !v.held && v.advanced) decide(v, 'negative');
  }
}

function decide(view, kind) {
  view.decided = kind;
  return give(view.item, kind);
}

// ---------------------------------------------------------------- keypresses in AUTO
/**
 * F, Space (positive) or J (negative) at `t` (the event's time): given to the image shown one
 * reaction time before; between two images, a positive asks and a negative is dropped.
 */
export function press(kind, t) {
  const now = performance.now();
  if (!(t > 0 && t <= now)) t = now;
  if (auto.asking) {
    if (kind === 'positive') auto.deferred.push(t);
    return;
  }
  auto.counts.presses++;
  const { d, sd } = planned();
  const a = attribute(t, auto.views, d, sd);
  if (a.kind === 'none') {
    auto.counts.none++;
    notice(`${kind === 'positive' ? 'F' : 'J'} came too soon after AUTO started to be a reaction to an image: nothing labelled.`);
    return;
  }
  if (a.kind === 'ambiguous') {
    if (kind === 'negative') {
      notice('J fell between two images: nothing labelled (both become negative unless you press F).');
      return;
    }
    auto.counts.ambiguous++;
    ask(a.indices.map((i) => auto.views[i]), t);
    return;
  }
  const view = auto.views[a.index];
  if (view.withdrawn) {
    notice('That press was for an image put back in the queue: nothing labelled.');
    return;
  }
  if (view.decided === kind) {
    auto.counts.repeats++;
    notice(`${view.item.path} is already ${kind}.`);
    return;
  }
  const entry = decide(view, kind);
  if (kind === 'positive') {
    // A clear press measures the reaction time, with the window it had to fall in.
    const measured = clearPressSample(auto.views, a.index, t, d, sd);
    if (measured && auto.rt.add(measured.rt, entry.uid, measured.window)) saveRt();
  }
  if (view.item === current()) {
    setLatencyMark(null);
    advance();
  } else {
    notice(`${kind === 'positive' ? 'Positive' : 'Negative'}: ${view.item.path} (shown ${Math.round(now - view.on)} ms ago).`);
  }
  scheduleCloser();
  renderSession();
}

/** S in AUTO: skips the image on screen. */
export function skip() {
  const view = lastView();
  if (view && view.item === current()) {
    view.decided = 'skip';
    view.advanced = true;
  }
  label('skip', { key: true });
  scheduleCloser();
}

/** Backspace in AUTO: pause, commit the images passed by, then undo the newest label. */
export function beforeUndo() {
  if (auto.on && !auto.paused) setAutoPaused(true);
  settlePending();
}

/** An undone label: its press no longer measures the reaction time. */
export function undone(entries) {
  let changed = false;
  for (const e of entries) changed = auto.rt.withdraw(e.uid) || changed;
  if (changed) saveRt();
  for (const e of entries) {
    const v = auto.views.find((x) => x.item.id === e.item.id);
    if (v) v.withdrawn = true;
  }
}

// ---------------------------------------------------------------- the question
function ask(views, t) {
  cancelCountdown();
  for (const v of views) v.held = true;
  auto.asking = { views, t };
  const box = $('ask');
  const tiles = views.map((v, i) => {
    const fig = document.createElement('figure');
    fig.className = 'ask-tile';
    fig.dataset.id = String(v.item.id);
    const img = new Image();
    img.className = 'photo';
    img.alt = `Image ${v.item.path}`;
    img.src = v.item.url;
    const cap = document.createElement('figcaption');
    cap.innerHTML = i === 0 ? '<kbd>←</kbd> the earlier' : 'the later <kbd>→</kbd>';
    fig.append(img, cap);
    return fig;
  });
  $('ask-tiles').replaceChildren(...tiles);
  box.hidden = false;
  renderCountdown();
  document.dispatchEvent(new CustomEvent('binann:ask', { detail: { ids: views.map((v) => v.item.id), paths: views.map((v) => v.item.path) } }));
  document.dispatchEvent(new CustomEvent('binann:mode'));
}

/** The answer to the question: 'earlier', 'later', 'both' or 'neither'. */
export function answer(choice) {
  const q = auto.asking;
  if (!q) return;
  const [a, b] = q.views;
  const chosen = choice === 'earlier' ? [a] : choice === 'later' ? [b] : choice === 'both' ? [a, b] : [];
  auto.asking = null;
  $('ask').hidden = true;
  for (const v of q.views) v.held = false;
  let advanceNow = false;
  for (const v of chosen) {
    if (v.decided === 'positive') continue;
    const entry = decide(v, 'positive');
    if (chosen.length === 1) {
      const rt = q.t - v.on;
      const i = auto.views.indexOf(v);
      const { d, sd } = planned();
      if (auto.rt.add(rt, entry.uid, i >= 0 ? sampleWindow(auto.views, i, d, sd) : null)) saveRt();
    }
    if (v.item === current()) advanceNow = true;
  }
  notice(chosen.length ? `Positive: ${chosen.map((v) => v.item.path).join(' and ')}. AUTO goes on.` : 'Neither: both stay negative. AUTO goes on.');
  document.dispatchEvent(new CustomEvent('binann:mode'));
  if (advanceNow) {
    advance();
  } else {
    startCountdown();
  }
  // The presses made while the question was open, in order, as if made now (one may ask again).
  for (const t of auto.deferred.splice(0)) press('positive', t);
  scheduleCloser();
  renderSession();
}

// ---------------------------------------------------------------- on, off, pause, speed
/**
 * The speed AUTO runs at: the one chosen, but no faster than the person's reaction spread lets a
 * press be given to the right image (rt.mjs, maxSpeed).
 */
function speedNow() {
  return Math.min(auto.speed, maxSpeed(planned().sd));
}

/** The speed as the page states it: "5.0/s", or "3.4/s (5.0 chosen; ...)" when capped. */
function speedText() {
  const now = speedNow();
  if (now >= auto.speed - 0.05) return `${auto.speed.toFixed(1)}/s`;
  return `${now.toFixed(1)}/s (${auto.speed.toFixed(1)} chosen: your reaction times vary by up to ±${Math.round(planned().sd)} ms, too much to tell faster images apart)`;
}

export function renderCountdown() {
  const countdown = $('countdown');
  const bar = $('countdown-bar');
  countdown.hidden = !auto.on;
  const text = $('countdown-text');
  if (!auto.on) return;
  const stopped = auto.paused || auto.asking;
  if (stopped) {
    const shown = getComputedStyle(bar).transform;
    bar.style.transition = 'none';
    bar.style.transform = shown === 'none' ? 'scaleX(1)' : shown;
    text.textContent = auto.asking ? 'AUTO asks: which image was the press for?' : 'AUTO paused: M to resume';
  } else if (current() && current().ok === false) {
    text.textContent = 'AUTO waits: this image cannot be shown (S skips it)';
  } else {
    text.textContent = `AUTO ${speedText()}: negative unless F or Space`;
  }
  countdown.classList.toggle('paused', Boolean(stopped));
}

export function setAuto(on) {
  if (auto.asking) return;
  auto.on = on;
  auto.paused = false;
  auto.onsetItem = null;
  if (!on) {
    cancelCountdown();
    // The image on screen stays, unlabelled; those passed by still close as usual.
    const last = lastView();
    if (last && last.item === current() && !last.decided) last.withdrawn = true;
    scheduleCloser();
  }
  document.body.classList.toggle('auto', on);
  $('auto-toggle').setAttribute('aria-pressed', String(on));
  $('autopause-label').textContent = 'Pause AUTO';
  if (on) resumeTimer();
  startCountdown();
  notice(on ? `AUTO on: ${speedText()}. F or Space marks positive, M pauses.` : 'AUTO off.');
  document.dispatchEvent(new CustomEvent('binann:mode'));
}

export function setAutoPaused(paused, why) {
  if (!auto.on || auto.asking) return;
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
  speed.max = String(SPEED_MAX);
  const sp = Number(store.get('localStorage', LS_SPEED));
  if (Number.isFinite(sp) && sp >= SPEED_MIN && sp <= SPEED_MAX) speed.value = String(sp);
  applySpeed(false);
  speed.addEventListener('input', () => applySpeed(true));
  speed.addEventListener('change', () => { if (auto.on && !auto.paused) startCountdown(); });
  loadRt();
}
