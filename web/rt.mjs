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
// Spreads measured in people pressing a key at a picture are 40-90 ms; an estimate from a hundred
// censored samples wanders, and one below the person's true spread turns asks into wrong guesses.
export const SD_MIN = 55;
export const SD_MAX = 200;
export const RT_MIN = 100; // a sample outside RT_MIN..RT_MAX is not a reaction
export const RT_MAX = 2000;
export const SAMPLES_MAX = 100; // the newest samples the estimate is made of
export const K_AMBIGUOUS = 2.8; // a neighbour within k·sd of its expected press time is plausible
// Images closer together than this many spreads cannot be told apart by the time of a press:
// AUTO never shows them faster (maxSpeed). Simulated people at 5 images/s (10 % positives, mean
// 350-500 ms, sd 40-90 ms; docs/benchmarks.md) then get at least 97.6 % of positives right, the
// widest spread at about 3.2 images/s.
export const SPACING_PER_SD = 3.6;
// A spread estimated from n samples is uncertain by about sd/√(2n) (8 calibration rings: a
// quarter). AUTO plans with the estimate raised by SD_BOUND_Z of that ([`ReactionTime`]'s
// sdBound): attribution, the ambiguity zone and the speed cap. With the estimate alone, a person
// of 500 ± 90 ms whose rings came out at 443 ± 55 lost 6 of 108 positives: their slow presses
// went to the next image unasked, and each added a short sample that kept the estimate low.
export const SD_BOUND_Z = 1;

/** The fastest AUTO speed (images/s) at which presses of a person with spread `sd` can be attributed. */
export function maxSpeed(sd) {
  return 1000 / (SPACING_PER_SD * sd);
}

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

/**
 * The press times, relative to `views[i].on`, that [`attribute`] gives to `views[i]`, alone or as
 * one of the two it asks about: {lo, hi}. A sample of the reaction time from a press for view i
 * exists only when the press fell there, so the samples of a fast stream are censored to a
 * narrow window around d (at 5 images/s about ±100 ms plus the ambiguity zones), and their spread
 * understates the person's. The estimate accounts for it with this window.
 */
export function sampleWindow(views, i, d, sd, k = K_AMBIGUOUS) {
  const on = views[i].on;
  const mine = (t) => {
    const a = attribute(t, views, d, sd, k);
    return (a.kind === 'one' && a.index === i) || (a.kind === 'ambiguous' && a.indices.includes(i));
  };
  let lo = null;
  let hi = null;
  for (let rt = RT_MIN; rt <= RT_MAX; rt += 2) {
    if (mine(on + rt)) {
      if (lo === null) lo = rt;
      hi = rt;
    } else if (lo !== null) {
      break;
    }
  }
  return lo === null ? { lo: RT_MIN, hi: RT_MAX } : { lo, hi };
}

/**
 * What a press at `t` given to `views[i]` alone tells of the reaction time: {rt, window}, the
 * press's delay after the onset and where it had to fall to be measured (its [`sampleWindow`],
 * within 3 spreads of d); null when it is farther from d than that (a press long after the onset
 * says nothing).
 */
export function clearPressSample(views, i, t, d, sd) {
  const rt = t - views[i].on;
  if (Math.abs(rt - d) >= 3 * sd) return null;
  const w = sampleWindow(views, i, d, sd);
  return { rt, window: { lo: Math.max(w.lo, d - 3 * sd), hi: Math.min(w.hi, d + 3 * sd) } };
}

/** The standard normal distribution function (Abramowitz & Stegun 7.1.26: error below 1.5e-7). */
function normalCdf(z) {
  const x = Math.abs(z) / Math.SQRT2;
  const t = 1 / (1 + 0.3275911 * x);
  const erf = 1 - ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.exp(-x * x);
  return z >= 0 ? 0.5 * (1 + erf) : 0.5 * (1 - erf);
}

// People's reaction-time spreads: log-normal around PRIOR_SD (40-90 ms measured).
const PRIOR_SD = 65;
const PRIOR_LOG_SPREAD = 0.3;

/**
 * The reaction time's centre and spread from samples {rt, lo, hi}, each known to lie in [lo, hi]
 * (its [`sampleWindow`]; calibration: RT_MIN..RT_MAX): the most probable normal truncated to
 * each sample's window, given what people's spreads are, searched on a grid around the median
 * (d in 4 ms steps within 100 ms of it, sd in 2 ms steps), coarse to fine: the grid every fifth
 * point first, then every point around the best of those. The full grid cost 19 ms per sample
 * added, on the keypress that adds it; the two steps found the same point on 1,000 random sample
 * sets, in a twelfth of the evaluations.
 * Samples more than 4 robust spreads from the median (a stray press) are left out first.
 */
export function fitTruncatedNormal(samples) {
  const rts = samples.map((s) => s.rt);
  const m = median(rts);
  const mad = median(rts.map((x) => Math.abs(x - m))) * 1.4826;
  const kept = samples.filter((s) => Math.abs(s.rt - m) <= Math.max(4 * mad, 150));
  const logLikelihood = (d, sd) => {
    let ll = 0;
    for (const s of kept) {
      const z = (s.rt - d) / sd;
      const mass = normalCdf((s.hi - d) / sd) - normalCdf((s.lo - d) / sd);
      ll += -Math.log(sd) - (z * z) / 2 - Math.log(Math.max(mass, 1e-12));
    }
    // The prior keeps a hundred censored samples, weak on the tails, from wandering far.
    return ll - Math.log(sd / PRIOR_SD) ** 2 / (2 * PRIOR_LOG_SPREAD ** 2);
  };
  // The best point of the grid d = dLo, dLo + dStep, ... dHi by sd = sdLo, sdLo + sdStep, ... sdHi.
  const search = (dLo, dHi, dStep, sdLo, sdHi, sdStep) => {
    let best = { d: m, sd: Math.min(SD_MAX, Math.max(SD_MIN, mad)), ll: -Infinity };
    for (let d = dLo; d <= dHi; d += dStep) {
      for (let sd = sdLo; sd <= sdHi; sd += sdStep) {
        const ll = logLikelihood(d, sd);
        if (ll > best.ll) best = { d, sd, ll };
      }
    }
    return best;
  };
  const coarse = search(m - 100, m + 100, 20, SD_MIN, SD_MAX, 10);
  const best = search(Math.max(m - 100, coarse.d - 20), Math.min(m + 100, coarse.d + 20), 4, Math.max(SD_MIN, coarse.sd - 10), Math.min(SD_MAX, coarse.sd + 10), 2);
  return { d: best.d, sd: best.sd };
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/**
 * The person's reaction time: d and sd fitted to the newest samples ([`fitTruncatedNormal`]: each
 * sample counts with the window a press had to fall in to give it); sdBound, the spread AUTO plans
 * with (SD_BOUND_Z). Samples come from calibration, from presses whose image was clear, and from
 * answered questions; an undone press's sample is withdrawn.
 */
export class ReactionTime {
  constructor({ samples = [], calibrated = false } = {}) {
    // {rt, key, lo, hi}: key names the label the press gave (to withdraw it on undo); the press
    // had to fall between lo and hi ms after the onset to give a sample (sampleWindow).
    this.samples = [];
    this.calibrated = calibrated;
    for (const s of samples) if (s && Number.isFinite(s.rt)) this.samples.push(sample(s.rt, s.key ?? null, s));
    this.samples = this.samples.slice(-SAMPLES_MAX);
    this.update();
  }

  update() {
    const n = this.samples.length;
    this.updateEstimate(n);
    this.sdBound = Math.min(SD_MAX, this.sd * (1 + SD_BOUND_Z / Math.sqrt(2 * Math.max(1, n))));
  }

  /** d and sd, the estimate from the `n` samples ([`fitTruncatedNormal`], leaning on the defaults while few). */
  updateEstimate(n) {
    if (!n) {
      this.d = DEFAULT_D;
      this.sd = DEFAULT_SD;
      return;
    }
    const fit = n >= 3 ? fitTruncatedNormal(this.samples) : { d: median(this.samples.map((s) => s.rt)), sd: DEFAULT_SD };
    // Few samples: lean on the defaults.
    const w = Math.min(1, n / 5);
    this.d = w * fit.d + (1 - w) * DEFAULT_D;
    this.sd = Math.min(SD_MAX, Math.max(SD_MIN, w * fit.sd + (1 - w) * DEFAULT_SD));
  }

  /**
   * A measured reaction time (ms); `key` identifies it for withdraw(); `window` ({lo, hi}, ms
   * after the onset) is where the press had to fall to be measured (none: anywhere).
   */
  add(rt, key = null, window = null) {
    if (!Number.isFinite(rt) || rt < RT_MIN || rt > RT_MAX) return false;
    this.samples.push(sample(rt, key, window));
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
    this.samples = rts.filter((x) => Number.isFinite(x) && x >= RT_MIN && x <= RT_MAX).slice(-SAMPLES_MAX).map((rt) => sample(rt, null));
    this.calibrated = true;
    this.update();
  }

  toJSON() {
    return { d: Math.round(this.d), sd: Math.round(this.sd), calibrated: this.calibrated, samples: this.samples.map((s) => ({ rt: Math.round(s.rt), key: s.key, lo: s.lo, hi: s.hi })) };
  }
}

/** A sample {rt, key, lo, hi}; a window that does not hold rt (or none) is RT_MIN..RT_MAX. */
function sample(rt, key, window = null) {
  const lo = Number.isFinite(window?.lo) ? Math.max(RT_MIN, window.lo) : RT_MIN;
  const hi = Number.isFinite(window?.hi) ? Math.min(RT_MAX, window.hi) : RT_MAX;
  return lo <= rt && rt <= hi ? { rt, key, lo, hi } : { rt, key, lo: RT_MIN, hi: RT_MAX };
}
