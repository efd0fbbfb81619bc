//! How far the AI has got through the folder, and how long the rest will take, for the page.
//!
//! The server sees the AI only through the rankings it writes: each one says how many images have
//! a prediction. Images the AI has seen are those predicted plus those already labelled or skipped
//! (the inferrer predicts only unlabelled images, so labelling alone would look like lost
//! coverage). The rate is taken over the last [`WINDOW`] of rankings, so a person who pauses or a
//! burst of rankings does not swing the estimate.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How far back the rate looks.
pub const WINDOW: Duration = Duration::from_secs(120);
/// The shortest span a rate is computed over: two rankings a moment apart say nothing yet.
const MIN_SPAN: Duration = Duration::from_secs(5);

/// Images seen by the AI over time.
#[derive(Debug, Default)]
pub struct Coverage {
    /// (when, images seen) at each ranking, oldest first, within [`WINDOW`] of the newest.
    samples: VecDeque<(Instant, u64)>,
}

impl Coverage {
    /// Notes that at `now` the AI had seen `seen` images.
    pub fn record(&mut self, now: Instant, seen: u64) {
        self.samples.push_back((now, seen));
        while self.samples.len() > 2 && self.samples.front().is_some_and(|(t, _)| now.duration_since(*t) > WINDOW) {
            self.samples.pop_front();
        }
    }

    /// Images seen at the last ranking.
    pub fn seen(&self) -> Option<u64> {
        self.samples.back().map(|(_, seen)| *seen)
    }

    /// Images the AI takes in per second, over the window; None until there is a span to judge
    /// or while it makes no progress.
    pub fn rate_per_s(&self) -> Option<f64> {
        let ((t0, s0), (t1, s1)) = (self.samples.front()?, self.samples.back()?);
        let span = t1.duration_since(*t0);
        (span >= MIN_SPAN && s1 > s0).then(|| (s1 - s0) as f64 / span.as_secs_f64())
    }

    /// Seconds until the AI has seen all `total` images at the current rate: Some(0) when it
    /// has, None when there is no rate to go by.
    pub fn eta_s(&self, total: u64) -> Option<f64> {
        let left = total.saturating_sub(self.seen()?);
        if left == 0 {
            return Some(0.0);
        }
        self.rate_per_s().map(|rate| left as f64 / rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_and_the_time_left_follow_the_rankings() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut c = Coverage::default();
        assert_eq!((c.seen(), c.rate_per_s(), c.eta_s(1000)), (None, None, None));
        c.record(at(0), 100);
        c.record(at(2), 140);
        assert_eq!(c.rate_per_s(), None, "two seconds are too short to judge");
        c.record(at(10), 300);
        assert_eq!(c.rate_per_s(), Some(20.0));
        assert_eq!(c.eta_s(1000), Some(35.0));
        // Old samples leave the window: the rate is that of the last two minutes.
        c.record(at(200), 1300);
        c.record(at(300), 1800);
        assert_eq!(c.rate_per_s(), Some(5.0));
        assert_eq!(c.eta_s(2000), Some(40.0));
        assert_eq!(c.eta_s(1800), Some(0.0), "all seen");
        // No progress: no estimate rather than an infinite one.
        let mut stalled = Coverage::default();
        stalled.record(at(0), 500);
        stalled.record(at(60), 500);
        assert_eq!((stalled.rate_per_s(), stalled.eta_s(1000)), (None, None));
    }
}
