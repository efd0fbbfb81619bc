//! How many positives are still unlabelled, with a 95 % interval, from audit picks.
//!
//! The person cannot see how many positives the ranking has not shown yet, so they either stop too
//! early or label everything. Document review answers this with a random audit sample beside the
//! active-learning order (Cormack & Grossman; Lewis, Yang & Frieder 2021). binann does the same:
//! a small share of the images handed out are drawn uniformly at random from the unlabelled ones,
//! and their labels are marked as such in the journal ([`crate::annotations::Record::audit`]).
//! The person does not know which, so those labels are an unbiased sample of what is left.
//!
//! An audit pick drawn from `u` unlabelled images is positive with probability (positives left
//! then) / `u`, so `u × [positive]` estimates the positives left *then*, without bias. The
//! positives labelled since are known exactly; subtracting them brings each pick's estimate to
//! *now*, still without bias however fast the ranking has been finding positives in between. The
//! estimate is the mean over the audit picks; its interval is Clopper–Pearson's exact binomial
//! interval for the share of positive picks, scaled and shifted the same way. That interval stays
//! honest when no audit pick is positive (the usual case once most positives are found): it then
//! says "at most about 3 / n of the unlabelled images", not "none". Measured on simulated runs
//! (the tests below) it holds the truth in at least 90 % of checks.
//!
//! A number is only worth reading once the interval can guide a decision: after one audit pick
//! that was negative the estimate is 0 and the recall 100 %, while the interval runs to thousands.
//! So [`PositivesLeft::known`] says whether the estimate is reported as a number at all; until then
//! every reader says "not known yet" with the audit picks so far and the interval's high end.

use serde::{Deserialize, Serialize};

/// Audit labels needed before the estimate is reported as a number. With fewer, a sample with no
/// positive pick is the usual outcome even when many positives are left (at 1 % of the unlabelled
/// images, 20 picks all come back negative 82 % of the time), so the estimate reads "0 left" and
/// the recall "100 %" whatever the truth; 20 negative picks bound the share left at 17 %.
pub const MIN_AUDITS_KNOWN: usize = 20;

/// One audit label: the image was drawn uniformly from `unlabelled` unlabelled images.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AuditLabel {
    /// Images unlabelled when it was drawn.
    pub unlabelled: u64,
    /// Positives labelled before it.
    pub found_before: u64,
    /// Whether the person said positive.
    pub positive: bool,
}

/// The estimate of the positives left.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PositivesLeft {
    /// Audit labels used.
    pub audits: usize,
    /// How many of them were positive.
    pub audit_positives: usize,
    /// Images unlabelled now.
    pub unlabelled: u64,
    /// Estimated positives among them.
    pub estimate: f64,
    /// 95 % interval, low end.
    pub low: f64,
    /// 95 % interval, high end.
    pub high: f64,
    /// Positives labelled so far.
    pub found: u64,
    /// Estimated recall so far: found / (found + positives left), with its interval.
    pub recall: f64,
    /// Recall at the interval's high end of positives left.
    pub recall_low: f64,
    /// Recall at the interval's low end.
    pub recall_high: f64,
    /// True when the interval says at least 95 % of the positives are found (never while not
    /// [`known`](Self::known)).
    pub can_stop: bool,
    /// Whether the estimate is reported as a number: at least [`MIN_AUDITS_KNOWN`] audit labels,
    /// and the interval's high end no more than the positives found so far (else it could still
    /// mean that most positives are left). Until then readers say "not known yet" with `audits`
    /// and `high`, never the estimate or the recall. Absent in JSON written without it: read as
    /// not known.
    #[serde(default)]
    pub known: bool,
}

impl PositivesLeft {
    /// The estimate in one sentence, as `binann export` and `binann inspect` print it: "not known
    /// yet: …" until [`known`](Self::known), then the estimate with its interval and the recall.
    pub fn summary(&self) -> String {
        let checks = if self.audits == 1 { "1 random check".to_string() } else { format!("{} random checks", self.audits) };
        if self.known {
            format!(
                "about {:.0} positives are still unlabelled (95 %: {:.0}-{:.0}, from {} audit labels); recall so far about {:.1} %",
                self.estimate,
                self.low,
                self.high,
                self.audits,
                100.0 * self.recall
            )
        } else {
            format!("positives left not known yet: {checks} so far, at most {:.0} left (95 %)", self.high)
        }
    }
}

/// The estimate from the audit labels, the images unlabelled now and the positives found so far;
/// None before the first audit label.
pub fn positives_left(audits: &[AuditLabel], unlabelled: u64, found: u64) -> Option<PositivesLeft> {
    if audits.is_empty() {
        return None;
    }
    let n = audits.len() as u64;
    let k = audits.iter().filter(|a| a.positive).count() as u64;
    let (lo, hi) = clopper_pearson(k, n, 0.05);
    let mean_unlabelled = audits.iter().map(|a| a.unlabelled as f64).sum::<f64>() / n as f64;
    let found_since = audits.iter().map(|a| found.saturating_sub(a.found_before) as f64).sum::<f64>() / n as f64;
    let then = audits.iter().map(|a| if a.positive { a.unlabelled as f64 } else { 0.0 }).sum::<f64>() / n as f64;
    // Never more than the images unlabelled now, never fewer than none.
    let now = |left_then: f64| (left_then - found_since).clamp(0.0, unlabelled as f64);
    let (estimate, low, high) = (now(then), now(mean_unlabelled * lo), now(mean_unlabelled * hi));
    let recall_at = |left: f64| if found == 0 && left == 0.0 { 0.0 } else { found as f64 / (found as f64 + left) };
    let recall_low = recall_at(high);
    let known = audits.len() >= MIN_AUDITS_KNOWN && high <= found as f64;
    Some(PositivesLeft {
        audits: audits.len(),
        audit_positives: k as usize,
        unlabelled,
        estimate,
        low,
        high,
        found,
        recall: recall_at(estimate),
        recall_low,
        recall_high: recall_at(low),
        can_stop: known && found > 0 && recall_low >= 0.95,
        known,
    })
}

/// Clopper–Pearson interval for a binomial proportion: `k` successes in `n` trials, level 1 − alpha.
pub fn clopper_pearson(k: u64, n: u64, alpha: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let ln_fact: Vec<f64> = std::iter::once(0.0)
        .chain((1..=n).scan(0.0, |acc, i| {
            *acc += (i as f64).ln();
            Some(*acc)
        }))
        .collect();
    // P(X <= k) for X ~ Binomial(n, p).
    let cdf = |k: u64, p: f64| -> f64 {
        if p <= 0.0 {
            return 1.0;
        }
        if p >= 1.0 {
            return if k >= n { 1.0 } else { 0.0 };
        }
        (0..=k)
            .map(|i| {
                (ln_fact[n as usize] - ln_fact[i as usize] - ln_fact[(n - i) as usize] + i as f64 * p.ln() + (n - i) as f64 * (-p).ln_1p())
                    .exp()
            })
            .sum::<f64>()
            .min(1.0)
    };
    // Bisection on a function of p that falls from above `target` to below it.
    let solve = |f: &dyn Fn(f64) -> f64, target: f64| {
        let (mut a, mut b) = (0.0f64, 1.0f64);
        for _ in 0..60 {
            let m = 0.5 * (a + b);
            if f(m) > target {
                a = m;
            } else {
                b = m;
            }
        }
        0.5 * (a + b)
    };
    let low = if k == 0 { 0.0 } else { 1.0 - solve(&|p| 1.0 - cdf(k - 1, 1.0 - p), alpha / 2.0) };
    let high = if k == n { 1.0 } else { solve(&|p| cdf(k, p), alpha / 2.0) };
    (low, high)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ranking::SplitMix64;

    #[test]
    fn clopper_pearson_matches_known_values() {
        // Reference values (R: binom.test(k, n)$conf.int).
        let close = |a: f64, b: f64| (a - b).abs() < 1e-4;
        let (lo, hi) = clopper_pearson(0, 100, 0.05);
        assert!(lo == 0.0 && close(hi, 0.036217), "{hi}");
        let (lo, hi) = clopper_pearson(5, 100, 0.05);
        assert!(close(lo, 0.016431) && close(hi, 0.112834), "{lo} {hi}");
        let (lo, hi) = clopper_pearson(10, 10, 0.05);
        assert!(close(lo, 0.691503) && hi == 1.0, "{lo}");
    }

    /// A simulated labelling run: `n` images with `positives` positives; the ranking finds a
    /// positive with probability `skill` per label (else a negative), and every `every`-th image
    /// handed out is an audit pick drawn uniformly from the unlabelled ones. Returns the share of
    /// checks (every 100 labels) whose interval contained the true number left.
    fn coverage(n: u64, positives: u64, skill: f64, every: u64, labels: u64, seed: u64) -> (usize, usize) {
        let mut rng = SplitMix64(seed);
        let (mut left_pos, mut left_neg) = (positives, n - positives);
        let mut audits = Vec::new();
        let (mut checks, mut covered) = (0, 0);
        for step in 1..=labels.min(n) {
            let unlabelled = left_pos + left_neg;
            let positive = if step % every == 0 {
                let p = (rng.next_u64() % unlabelled) < left_pos;
                audits.push(AuditLabel { unlabelled, found_before: positives - left_pos, positive: p });
                p
            } else {
                left_pos > 0 && (left_neg == 0 || rng.next_f64() < skill * left_pos as f64 / positives as f64)
            };
            if positive {
                left_pos -= 1;
            } else {
                left_neg -= 1;
            }
            if step % 100 == 0
                && let Some(e) = positives_left(&audits, left_pos + left_neg, positives - left_pos)
            {
                checks += 1;
                covered += usize::from(e.low <= left_pos as f64 && left_pos as f64 <= e.high);
            }
        }
        (covered, checks)
    }

    #[test]
    fn the_interval_covers_the_truth_at_several_prevalences() {
        for (n, positives, skill) in [(20_000, 200, 0.6), (20_000, 40, 0.4), (10_000, 1_000, 0.8), (5_000, 25, 0.2)] {
            let (mut covered, mut checks) = (0, 0);
            for seed in 0..40 {
                let (c, k) = coverage(n, positives, skill, 20, 3 * positives.max(300), seed);
                covered += c;
                checks += k;
            }
            let share = covered as f64 / checks as f64;
            println!("{positives} of {n}, skill {skill}: {share:.3} of {checks} checks");
            assert!(share >= 0.9, "{positives} of {n}, skill {skill}: the interval held the truth in {share:.3} of {checks} checks");
        }
    }

    #[test]
    fn estimate_reads_as_expected() {
        assert_eq!(positives_left(&[], 100, 3), None);
        // 2 of 100 picks from 1,000 unlabelled were positive: 20 positives left then; 50 found
        // since the picks (found_before 40, 90 found now) leaves... 20 − 50 < 0: none.
        let draws: Vec<AuditLabel> = (0..100).map(|i| AuditLabel { unlabelled: 1000, found_before: 40, positive: i < 2 }).collect();
        let e = positives_left(&draws, 900, 90).unwrap();
        assert_eq!((e.audits, e.audit_positives), (100, 2));
        assert_eq!(e.estimate, 0.0);
        // With 5 found since: 15 left.
        let e = positives_left(&draws, 900, 45).unwrap();
        assert!((e.estimate - 15.0).abs() < 1e-9, "{e:?}");
        assert!(e.low < 15.0 && e.high > 15.0 && e.low >= 0.0);
        assert!(e.recall_low < e.recall && e.recall < e.recall_high);
        assert!(!e.can_stop);
        // Nothing positive in a large audit and many found: the interval allows stopping.
        let none: Vec<AuditLabel> = (0..200).map(|_| AuditLabel { unlabelled: 100, found_before: 400, positive: false }).collect();
        let e = positives_left(&none, 100, 400).unwrap();
        assert_eq!(e.low, 0.0);
        assert!(e.high < 2.0 && e.can_stop, "{e:?}");
    }

    #[test]
    fn the_estimate_is_known_only_with_enough_checks_and_a_narrow_interval() {
        let negatives = |n: usize, unlabelled: u64, found: u64| -> Vec<AuditLabel> {
            (0..n).map(|_| AuditLabel { unlabelled, found_before: found, positive: false }).collect()
        };
        // One negative check among 5,000 unlabelled images: the estimate is 0 and the recall
        // 100 %, but the interval runs to thousands: not known, and no stopping.
        let e = positives_left(&negatives(1, 5_000, 3), 4_990, 3).unwrap();
        assert_eq!((e.estimate, e.known, e.can_stop), (0.0, false, false), "{e:?}");
        assert!(e.high > 4_000.0, "{e:?}");
        assert_eq!(e.summary(), format!("positives left not known yet: 1 random check so far, at most {:.0} left (95 %)", e.high));
        // A narrow interval from too few checks is still not known.
        let e = positives_left(&negatives(MIN_AUDITS_KNOWN - 1, 10, 400), 10, 400).unwrap();
        assert!(e.high <= e.found as f64 && !e.known && !e.can_stop, "{e:?}");
        assert!(e.summary().starts_with("positives left not known yet: 19 random checks so far, at most "), "{}", e.summary());
        // Enough checks, but the interval's high end above the positives found: not known.
        let e = positives_left(&negatives(30, 1_000, 5), 900, 5).unwrap();
        assert!(e.high > 5.0 && !e.known && !e.can_stop, "{e:?}");
        // Enough checks and a narrow interval: known, the estimate stated, and stopping allowed.
        let e = positives_left(&negatives(MIN_AUDITS_KNOWN, 10, 400), 10, 400).unwrap();
        assert!(e.high <= 400.0 && e.known && e.can_stop, "{e:?}");
        assert!(
            e.summary()
                .starts_with("about 0 positives are still unlabelled (95 %: 0-2, from 20 audit labels); recall so far about 100.0 %"),
            "{}",
            e.summary()
        );
        // JSON written without the field reads as not known.
        let mut v = serde_json::to_value(&e).unwrap();
        v.as_object_mut().unwrap().remove("known");
        assert!(!serde_json::from_value::<PositivesLeft>(v).unwrap().known);
    }
}
