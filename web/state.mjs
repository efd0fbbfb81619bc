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
};

/** This tab's session: the timer and the label rate (main.mjs). */
export const session = { start: performance.now(), pausedAt: null, pausedMs: 0, labels: 0, times: [] };

/** The labels of this tab until the server has them (outbox.mjs); wired up in main.mjs. */
export const outbox = new Outbox({ send: null, storage: null, sleep: null });
