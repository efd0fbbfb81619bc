//! When the inferrer predicts again: [`PredictSchedule`].

use std::time::{Duration, Instant};

/// Decides when the inferrer predicts again.
///
/// Predicting covers every embedded image, so during the first pass of a large folder, predicting
/// after every batch would cost more than the embedding it waits on (at 64,000 embedded images,
/// the pass slowed from ~400 to ~40 images/s). While images remain to embed, predictions are
/// therefore renewed only for a new checkpoint or once the embedded set has grown by
/// [`Self::GROWTH`], and never so often that predicting takes more than a
/// 1 / ([`Self::SPACING`] + 1) share of the time. When nothing is left to embed, any change is
/// predicted at once: the last images of the pass and every new checkpoint.
#[derive(Debug, Default)]
pub(super) struct PredictSchedule {
    /// The last predictions: checkpoint generation, embedded images, when they were finished and
    /// how long they took.
    last: Option<PredictedAt>,
}

#[derive(Debug, Clone, Copy)]
struct PredictedAt {
    generation: u64,
    embedded: usize,
    finished: Instant,
    took: Duration,
}

impl PredictSchedule {
    /// The share by which the embedded set must grow before it is predicted again mid-pass.
    const GROWTH: f64 = 0.05;
    /// The wait after predicting, as a multiple of the time predicting took.
    const SPACING: u32 = 3;

    /// Whether to predict now, for checkpoint `generation` and `embedded` images, given whether
    /// images remain to embed.
    pub(super) fn due(&self, generation: u64, embedded: usize, embedding: bool, now: Instant) -> bool {
        let Some(last) = self.last else { return true };
        if (last.generation, last.embedded) == (generation, embedded) {
            return false;
        }
        if !embedding {
            return true;
        }
        let grown = embedded as f64 >= last.embedded as f64 * (1.0 + Self::GROWTH);
        let new_model = generation != last.generation;
        (grown || new_model) && now.duration_since(last.finished) >= last.took * Self::SPACING
    }

    pub(super) fn record(&mut self, generation: u64, embedded: usize, started: Instant, finished: Instant) {
        self.last = Some(PredictedAt { generation, embedded, finished, took: finished.duration_since(started) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(schedule: &mut PredictSchedule, generation: u64, embedded: usize, took_ms: u64) -> Instant {
        let started = Instant::now();
        let finished = started + Duration::from_millis(took_ms);
        schedule.record(generation, embedded, started, finished);
        finished
    }

    #[test]
    fn the_first_predictions_and_any_change_after_the_pass_are_due_at_once() {
        let mut s = PredictSchedule::default();
        let now = Instant::now();
        assert!(s.due(1, 0, true, now));
        let done = after(&mut s, 1, 10_000, 500);
        assert!(!s.due(1, 10_000, false, done + Duration::from_secs(60)), "nothing changed");
        assert!(s.due(1, 10_001, false, done), "the pass ended: its last image is predicted at once");
        assert!(s.due(2, 10_000, false, done), "a new checkpoint after the pass is predicted at once");
    }

    #[test]
    fn mid_pass_predictions_wait_for_growth_or_a_new_model() {
        let mut s = PredictSchedule::default();
        let done = after(&mut s, 1, 10_000, 10);
        let later = done + Duration::from_secs(5);
        assert!(!s.due(1, 10_032, true, later), "one more batch is not worth predicting everything again");
        assert!(!s.due(1, 10_499, true, later));
        assert!(s.due(1, 10_500, true, later), "5 % more images");
        assert!(s.due(2, 10_032, true, later), "a new model");
    }

    #[test]
    fn mid_pass_predicting_takes_at_most_a_quarter_of_the_time() {
        let mut s = PredictSchedule::default();
        let done = after(&mut s, 1, 64_000, 800);
        assert!(!s.due(2, 70_000, true, done + Duration::from_millis(2_399)));
        assert!(s.due(2, 70_000, true, done + Duration::from_millis(2_400)));
        assert!(s.due(2, 70_000, false, done), "once the pass is over, nothing waits");
    }
}
