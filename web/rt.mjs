// Reaction time: which image a keypress in AUTO was a reaction to, and the person's own delay d.
// No DOM here (node --test drives it).
//
// A person presses F about d ms after a positive appears (a recognition reaction time, spread sd).
// A press at time t is a reaction to the image whose onset + d is nearest to t: the image on
// screen about one reaction time earlier. Image i owns the presses from the boundary with the one
// before it up to the boundary with the one after, where the boundary between i and i+1 lies
// halfway between their expected press times (on_i + d and on_i+1 + d), but never before
// on_i+1 + rtMin: nobody reacts to an image faster than rtMin. A press near a boundary, where the
// neighbour's expected press time is also within k·sd, is ambiguous: the page must ask.

export const DEFAULT_D = 450; // ms, before anything is known of the person
export const DEFAULT_SD = 70;
export const SD_MIN = 35;
export const SD_MAX = 200;
export const SAMPLES_MAX = 40; // the newest samples the estimate is made of
export const K_AMBIGUOUS = 2.2; // a neighbour within k·sd of its expected press time is plausible

/** Fastest plausible reaction for a person with delay `d` and spread `sd`. */
export function rtMin(d, sd) {
  return Math.max(120, Math.min(d - 50, d - 3.5 * sd));
}

/**
 * The boundary (a time) between presses for `a` and presses for `b`, the image shown after it
 * (`b.on` is when `a` left the screen).
 */
export function boundary(a, b, d, sd) {
  return b.on + Math.max(d - (b.on - a.on) / 2, rtMin(d, sd));
}

/**
 * When no press can be attributed to `views[i]` any more (its window, ambiguity included, has
 * closed); Infinity while it is on screen (the last view, or one without `off`).
 */
export function closesAt(views, i, d, sd, k = K_AMBIGUOUS) {
  const v = views[i];
  const nextView = views[i + 1];
  if (!nextView) return Infinity;
  return Math.max(boundary(v, nextView, d, sd), v.on + d + k * sd);
}

/**
 * Which of `views` (presentations {on, ...}, oldest first, consecutive: each left the screen when
 * the next appeared; the last may still be on screen) a press at `t` was a reaction to:
 * {kind: 'none'} when none could have been (too soon after the first), {kind: 'one', index}, or
 * {kind: 'ambiguous', indices: [earlier, later]}.
 */
export function attribute(t, views, d, sd, k = K_AMBIGUOUS) {
  if (!views.length) return { kind: 'none' };
  const fastest = rtMin(d, sd);
  let owner = -1;
  for (let i = 0; i < views.length; i++) {
    const start = i === 0 ? views[0].on + fastest : boundary(views[i - 1], views[i], d, sd);
    if (t >= start) owner = i;
    else break;
  }
  if (owner < 0) return { kind: 'none' };
  const plausible = (j) => j >= 0 && j < views.length && t - views[j].on >= fastest && Math.abs(t - views[j].on - d) < k * sd;
  // The neighbour across the nearer boundary (an image's expected press time is on + d).
  const e = t - views[owner].on - d;
  const neighbour = e < 0 ? owner - 1 : owner + 1;
  if (plausible(neighbour)) return { kind: 'ambiguous', indices: [Math.min(owner, neighbour), Math.max(owner, neighbour)] };
  return { kind: 'one', index: owner };
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/**
 * The person's reaction time: d (median of the newest samples) and sd (from their median absolute
 * deviation, robust to the odd stray press). Samples come from calibration, from presses whose
 * image was clear, and from answered questions; an undone press's sample is withdrawn.
 */
export class ReactionTime {
  constructor({ samples = [], calibrated = false } = {}) {
    this.samples = []; // {rt, key}: key names the label the press gave (to withdraw it on undo)
    this.calibrated = calibrated;
    for (const s of samples) if (s && Number.isFinite(s.rt)) this.samples.push({ rt: s.rt, key: s.key ?? null });
    this.samples = this.samples.slice(-SAMPLES_MAX);
    this.update();
  }

  update() {
    const n = this.samples.length;
    if (!n) {
      this.d = DEFAULT_D;
      this.sd = DEFAULT_SD;
      return;
    }
    const rts = this.samples.map((s) => s.rt);
    const m = median(rts);
    const mad = median(rts.map((x) => Math.abs(x - m))) * 1.4826;
    // Few samples: lean on the defaults.
    const w = Math.min(1, n / 5);
    this.d = w * m + (1 - w) * DEFAULT_D;
    this.sd = Math.min(SD_MAX, Math.max(SD_MIN, w * (n >= 3 ? mad : DEFAULT_SD) + (1 - w) * DEFAULT_SD));
  }

  /** A measured reaction time (ms); `key` identifies it for withdraw(). */
  add(rt, key = null) {
    if (!Number.isFinite(rt) || rt < 100 || rt > 2000) return false;
    this.samples.push({ rt, key });
    if (this.samples.length > SAMPLES_MAX) this.samples.shift();
    this.update();
    return true;
  }

  /** Withdraws the sample of `key` (its label was undone: the press may have been misread). */
  withdraw(key) {
    const i = this.samples.findIndex((s) => s.key === key);
    if (i < 0) return false;
    this.samples.splice(i, 1);
    this.update();
    return true;
  }

  /** Calibration: known targets replace what was measured before. */
  calibrate(rts) {
    this.samples = rts.filter((x) => Number.isFinite(x) && x >= 100 && x <= 2000).slice(-SAMPLES_MAX).map((rt) => ({ rt, key: null }));
    this.calibrated = true;
    this.update();
  }

  toJSON() {
    return { d: Math.round(this.d), sd: Math.round(this.sd), calibrated: this.calibrated, samples: this.samples.map((s) => ({ rt: Math.round(s.rt), key: s.key })) };
  }
}
