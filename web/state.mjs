// Every piece of the page's shared, mutable state, declared in one place. Each module changes only
// the fields its comment names; everything else reads them.
import { Outbox } from './outbox.mjs';

export const PREFETCH = 4; // images decoded ahead of the one shown
export const WANT = 12; // images asked of /api/next, plus those this tab holds
export const REFILL_BELOW = 6; // ask for more when fewer are queued
export const KEEP_DECODED = 3; // newest undo entries whose decoded image is kept
export const LS_ANNOTATOR = 'binann.annotator'; // the person's name: one per browser, shared by its tabs

/** What is shown and what comes next (stage.mjs), and who is labelling (main.mjs). */
export const state = {
  annotator: '', // the name sent with each label; empty: none given
  current: null, // the item shown
  queue: [], // items to show next, in order
  done: new Set(), // ids labelled in this tab (pending or acknowledged): never shown again unless undone
  exhausted: false, // the last /api/next gave nothing new
  refilling: false, // a /api/next request is under way
  refillAgain: false, // another was asked for meanwhile
  lastNextAt: 0, // Date.now() of the last /api/next
  rankingStamp: null, // identifies the ranking the queue came from (charts.mjs)
  stats: null, // the last /api/stats answer (charts.mjs)
  pendingMark: null, // performance mark of a keypress whose next image is not painted yet
};

/** AUTO mode (auto.mjs). */
export const auto = {
  on: false,
  paused: false,
  speed: 1, // images per second
  timer: null, // the countdown of the image shown
  // 'reaction': a press labels the image shown one reaction time before it (see rt.mjs);
  // 'legacy': the image on screen at the press (the old rule; ?attribution=legacy, for benchmarks).
  attribution: 'reaction',
  // Presentations in AUTO, oldest first: {item, on (ms, performance.now), decided: null |
  // 'positive' | 'negative' | 'skip', advanced (left the screen by AUTO), withdrawn (left it
  // otherwise: never labelled by AUTO), held (in a question)}. An undecided view that left the
  // screen is pending: still reserved for this tab, negative once its attribution window closes.
  views: [],
  closer: null, // the timer that commits pending negatives
  onsetItem: null, // the item whose onset was announced last
  asking: null, // {views: [a, b], t} while the page asks which of two images a press was for
  rt: null, // the person's ReactionTime (rt.mjs), kept in localStorage
  counts: { presses: 0, ambiguous: 0, none: 0, repeats: 0 }, // this page's presses in AUTO
};

/** The grid view (grid.mjs). */
export const grid = {
  on: false,
  rows: 4,
  cols: 4,
  tiles: [], // {item, marked}, row by row
  confirmed: 0, // grids confirmed in this page (names each grid's undo group)
};

/** Calibration of the reaction time (calibrate.mjs); null when not running. */
export const calibration = { run: null };

/** This tab's session: the timer and the label rate (main.mjs). */
export const session = { start: performance.now(), pausedAt: null, pausedMs: 0, labels: 0, times: [] };

/** The labels of this tab until the server has them (outbox.mjs); wired up in main.mjs. */
export const outbox = new Outbox({ send: null, storage: null, sleep: null });
