//! The hand-outs: which image each client sees next, and which images each client holds.
//!
//! Images go out in ranking order, skipping those labelled or skipped and those handed to another
//! client. A client's hand-out is released when it asks again, or after it has been quiet for the
//! hand-out timeout, so a closed tab never hides images for long.
//!
//! A share of the images handed out (the audit rate) are audit picks instead: drawn uniformly at
//! random from all the unlabelled images. A draw that lands on an image already handed out makes
//! it an audit pick where it is, and this hand-out follows the ranking. Their labels are marked in the journal, and
//! they estimate how many positives the ranking has not shown yet (see
//! [`binann_core::estimate`]). The page does not say which images they are.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use binann_core::annotations::{AnnotationState, AuditPick};
use binann_core::ranking::{self, Ranking, SplitMix64};

/// A ranking made into the order the hand-outs follow. At a million images making it takes tens
/// of milliseconds, so the server makes it without holding its state's lock and only swaps it in
/// ([`Handouts::serve`]): hand-outs and labels wait for the swap alone.
#[derive(Debug)]
pub struct ServedOrder {
    order: Vec<u32>,
    /// Each image's place in `order`.
    position: Vec<u32>,
    /// Each image's probability (NaN: none).
    prob: Vec<f32>,
    /// Mean probability over the predicted images: the model's estimate of the positive rate.
    mean_prob: Option<f64>,
}

impl ServedOrder {
    /// The order of `n` images that `ranking` gives: its images first, in its order (ids it does
    /// not know and repeats left out), then the rest in the default order.
    pub fn of(n: usize, ranking: &Ranking) -> Self {
        let mut prob = vec![f32::NAN; n];
        let mut seen = vec![false; n];
        let mut order = Vec::with_capacity(n);
        for (i, id) in ranking.ids.iter().enumerate() {
            let id = *id;
            if (id as usize) < n && !seen[id as usize] {
                seen[id as usize] = true;
                order.push(id);
                prob[id as usize] = ranking.probs.get(i).copied().unwrap_or(f32::NAN);
            }
        }
        if order.len() < n {
            order.extend(ranking::default_order(n, ranking::DEFAULT_ORDER_SEED).into_iter().filter(|id| !seen[*id as usize]));
        }
        let mut position = vec![0u32; n];
        for (i, id) in order.iter().enumerate() {
            position[*id as usize] = i as u32;
        }
        let (sum, count) = ranking.probs.iter().filter(|p| !p.is_nan()).fold((0.0, 0usize), |(s, c), p| (s + f64::from(*p), c + 1));
        Self { order, position, prob, mean_prob: (count > 0).then(|| sum / count as f64) }
    }

    /// The images it orders: every image of the folder it was made for.
    pub fn images(&self) -> usize {
        self.order.len()
    }
}

#[derive(Debug)]
struct ClientSlot {
    handed: Vec<u32>,
    last_seen: Instant,
}

/// The ranking currently served, and who holds which image.
#[derive(Debug)]
pub struct Handouts {
    order: Vec<u32>,
    position: Vec<u32>,
    prob: Vec<f32>,
    /// Every entry of `order` before this index is labelled or skipped.
    low_water: usize,
    holder: HashMap<u32, String>,
    clients: HashMap<String, ClientSlot>,
    handout_timeout: Duration,
    /// The ranking file this order came from (None: the default order).
    pub source: Option<Ranking>,
    /// That file's generation.
    pub generation: u64,
    /// Mean probability over the predicted images: the model's estimate of the positive rate.
    pub mean_prob: Option<f64>,
    /// Share of hand-outs that are audit picks.
    audit_rate: f64,
    /// Images a client asked to see next ("more like this"), in order, per client.
    front: HashMap<String, Vec<u32>>,
    /// Audit picks handed out and not labelled yet, with their draw.
    audit_pending: HashMap<u32, AuditPick>,
    rng: SplitMix64,
}

impl Handouts {
    /// A queue over `n` images in the default (seeded shuffle) order, with no audit picks.
    pub fn new(n: usize, handout_timeout: Duration) -> Self {
        Self::with_audits(n, handout_timeout, 0.0, 0)
    }

    /// A queue whose hand-outs are audit picks at `audit_rate` (0 to 1), drawn with `seed`.
    pub fn with_audits(n: usize, handout_timeout: Duration, audit_rate: f64, seed: u64) -> Self {
        let mut q = Self {
            order: Vec::new(),
            position: Vec::new(),
            prob: Vec::new(),
            low_water: 0,
            holder: HashMap::new(),
            clients: HashMap::new(),
            handout_timeout,
            source: None,
            generation: 0,
            mean_prob: None,
            audit_rate,
            front: HashMap::new(),
            audit_pending: HashMap::new(),
            rng: SplitMix64(seed),
        };
        let default = Ranking { ids: Vec::new(), probs: Vec::new(), selector: String::new(), model: None, predicted: 0, created_ms: 0 };
        q.install(ServedOrder::of(n, &default));
        q
    }

    /// Serves `ranking` from now on. Ids it does not list (or does not know) follow in default order.
    pub fn set_ranking(&mut self, n: usize, generation: u64, ranking: Ranking) {
        self.serve(ServedOrder::of(n, &ranking), generation, ranking);
    }

    /// Serves `ranking` in `order`, made from it ([`ServedOrder::of`]) for every image of the folder.
    pub fn serve(&mut self, order: ServedOrder, generation: u64, mut ranking: Ranking) {
        // The ranking is kept for its model and selector; its lists live on in the order.
        ranking.ids = Vec::new();
        ranking.probs = Vec::new();
        self.install(order);
        self.source = Some(ranking);
        self.generation = generation;
    }

    /// Follows `order` from its first image.
    fn install(&mut self, order: ServedOrder) {
        let ServedOrder { order, position, prob, mean_prob } = order;
        self.order = order;
        self.position = position;
        self.prob = prob;
        self.mean_prob = mean_prob;
        self.low_water = 0;
    }

    /// The model's probability for `id`, if there is one.
    pub fn prob(&self, id: u32) -> Option<f32> {
        self.prob.get(id as usize).copied().filter(|p| !p.is_nan())
    }

    /// Hands the next `count` images to `client`, releasing what it held before except `keep`
    /// (the images it is showing), which stay reserved for it and are not returned again.
    pub fn next(&mut self, client: &str, count: usize, done: &AnnotationState, keep: &[u32]) -> Vec<u32> {
        let now = Instant::now();
        self.release(client, keep);
        self.expire(now);
        let mut kept = Vec::with_capacity(keep.len());
        for &id in keep {
            if (id as usize) < self.order.len() && !done.is_done(id) && !self.holder.contains_key(&id) {
                self.holder.insert(id, client.to_owned());
                kept.push(id);
            }
        }
        while self.low_water < self.order.len() && done.is_done(self.order[self.low_water]) {
            self.low_water += 1;
        }
        let mut out = Vec::with_capacity(count);
        // First what this client asked to see next, unless labelled or held by another since.
        if let Some(mut front) = self.front.remove(client) {
            front.retain(|id| !done.is_done(*id) && !self.holder.contains_key(id) && !kept.contains(id));
            let now: Vec<u32> = front.drain(..count.min(front.len())).collect();
            out.extend(now);
            if !front.is_empty() {
                self.front.insert(client.to_owned(), front);
            }
        }
        let mut cursor = self.low_water;
        while out.len() < count {
            if self.audit_rate > 0.0
                && self.rng.next_f64() < self.audit_rate
                && let Some(id) = self.draw_audit(done)
            {
                // A pick already out (with this client or another) is labelled where it is.
                if !self.holder.contains_key(&id) && !out.contains(&id) {
                    out.push(id);
                    continue;
                }
            }
            let Some(id) = self.order[cursor.min(self.order.len())..]
                .iter()
                .position(|id| !done.is_done(*id) && !self.holder.contains_key(id) && !out.contains(id))
                .map(|offset| {
                    cursor += offset + 1;
                    self.order[cursor - 1]
                })
            else {
                break;
            };
            out.push(id);
        }
        for &id in &out {
            self.holder.insert(id, client.to_owned());
        }
        kept.extend_from_slice(&out);
        self.clients.insert(client.to_owned(), ClientSlot { handed: kept, last_seen: now });
        out
    }

    /// An image drawn uniformly from all the unlabelled images, remembered as an audit pick; None
    /// when there is none. Rejection sampling: a few tries at random ids, then (when nearly
    /// everything is labelled) a draw from the full list of candidates, which is just as uniform.
    ///
    /// Images already handed out (in this request, or held by any client) are drawn too,
    /// and are then audit picks where they are. Leaving them out would bias the estimate low: the
    /// images held are the ranking's first, the likeliest positives (5 per page, 16 per grid),
    /// and a positive among them would be missing from the sample and, once labelled, subtracted
    /// as "found since" from an estimate that never counted it.
    fn draw_audit(&mut self, done: &AnnotationState) -> Option<u32> {
        let n = self.order.len() as u64;
        if n == 0 {
            return None;
        }
        let free = |q: &Self, id: u32| !done.is_done(id) && !q.audit_pending.contains_key(&id);
        let mut pick = None;
        for _ in 0..64 {
            let id = (self.rng.next_u64() % n) as u32;
            if free(self, id) {
                pick = Some(id);
                break;
            }
        }
        if pick.is_none() {
            let candidates: Vec<u32> = (0..n as u32).filter(|id| free(self, *id)).collect();
            if candidates.is_empty() {
                return None;
            }
            pick = Some(candidates[(self.rng.next_u64() % candidates.len() as u64) as usize]);
        }
        let id = pick?;
        let c = done.counts();
        self.audit_pending.insert(id, AuditPick { unlabelled: n.saturating_sub(c.annotated() + c.skipped), found_before: c.positives });
        Some(id)
    }

    /// The draw of `id` if it was handed out as an audit pick and not labelled since; it is then
    /// labelled, so it is forgotten here (the journal record keeps it).
    pub fn take_audit(&mut self, id: u32) -> Option<AuditPick> {
        self.audit_pending.remove(&id)
    }

    /// `id`'s audit label was undone: it is an audit pick again, with its original draw, so that
    /// the label it gets next counts as before.
    pub fn restore_audit(&mut self, id: u32, pick: AuditPick) {
        self.audit_pending.insert(id, pick);
    }

    /// Puts `ids` next in `client`'s queue, before the ranking (and before what it asked for
    /// earlier), and holds them for it as if handed out (so no other client gets them meanwhile;
    /// they go back to everyone if `client` falls quiet). Call with ids nobody else holds.
    pub fn put_first(&mut self, client: &str, ids: &[u32]) {
        // Nothing to put: no queue is made, so a client that asks and gets nothing costs nothing.
        if ids.is_empty() {
            return;
        }
        // Clients that only ever ask for look-alikes never call `next`, which releases quiet ones.
        self.expire(Instant::now());
        let front = self.front.entry(client.to_owned()).or_default();
        front.retain(|id| !ids.contains(id));
        front.splice(0..0, ids.iter().copied());
        for &id in ids {
            self.hold(client, id);
        }
    }

    /// True when `id` is held by a client other than `client`.
    pub fn held_by_other(&self, id: u32, client: &str) -> bool {
        self.holder.get(&id).is_some_and(|holder| holder != client)
    }

    /// Marks `id` as held by `client` (the image an undo shows again).
    pub fn hold(&mut self, client: &str, id: u32) {
        if let Some(other) = self.holder.insert(id, client.to_owned())
            && let Some(slot) = self.clients.get_mut(&other)
        {
            slot.handed.retain(|h| *h != id);
        }
        let slot = self.clients.entry(client.to_owned()).or_insert_with(|| ClientSlot { handed: Vec::new(), last_seen: Instant::now() });
        slot.handed.push(id);
        slot.last_seen = Instant::now();
    }

    /// Called when labels were taken back without an undo (a journal write failed and memory was
    /// rebuilt from the journal): any image before `low_water` may be unlabelled again.
    pub fn rescan(&mut self) {
        self.low_water = 0;
    }

    /// Called when `id` becomes unlabelled again (undo): it may need serving before `low_water`.
    pub fn reopened(&mut self, id: u32) {
        if let Some(&pos) = self.position.get(id as usize) {
            self.low_water = self.low_water.min(pos as usize);
        }
    }

    /// Called when `id` got a label: nobody holds it any more.
    pub fn labelled(&mut self, id: u32) {
        if let Some(client) = self.holder.remove(&id)
            && let Some(slot) = self.clients.get_mut(&client)
        {
            slot.handed.retain(|h| *h != id);
        }
    }

    /// Releases what `client` holds, except `keep`. A released audit pick stops being one: it
    /// was given back unlabelled for a reason that has nothing to do with what it shows (a tab
    /// asking again, a quiet client), whereas keeping it would let the ranking hand it out later
    /// when it looks positive, and the audit sample would lean towards positives.
    fn release(&mut self, client: &str, keep: &[u32]) {
        if let Some(slot) = self.clients.remove(client) {
            for id in slot.handed {
                if self.holder.get(&id).is_some_and(|c| c == client) {
                    self.holder.remove(&id);
                    if !keep.contains(&id) {
                        self.audit_pending.remove(&id);
                    }
                }
            }
        }
    }

    fn expire(&mut self, now: Instant) {
        let quiet: Vec<String> =
            self.clients.iter().filter(|(_, s)| now.duration_since(s.last_seen) > self.handout_timeout).map(|(c, _)| c.clone()).collect();
        for c in quiet {
            self.release(&c, &[]);
            self.front.remove(&c);
        }
    }

    /// Number of images in the order (the whole dataset).
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// True for an empty dataset.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use binann_core::annotations::{Event, Label, Record};

    #[test]
    fn two_clients_never_share_and_release_on_ask() {
        let mut q = Handouts::new(10, Duration::from_secs(60));
        let mut done = AnnotationState::default();
        let a = q.next("a", 3, &done, &[]);
        let b = q.next("b", 3, &done, &[]);
        assert!(a.iter().all(|id| !b.contains(id)));
        done.apply(&Record {
            audit: None,
            seq: 0,
            time_ms: 0,
            client: "a".into(),
            annotator: String::new(),
            event: Event::Label { id: a[0], label: Label::Positive, prob: None },
        })
        .unwrap();
        q.labelled(a[0]);
        let a2 = q.next("a", 3, &done, &[]);
        assert_eq!(&a2[..2], &a[1..]);
        assert!(a2.iter().all(|id| !b.contains(id) && *id != a[0]));
        // A quiet client's hand-out expires.
        let mut q = Handouts::new(4, Duration::from_millis(0));
        let fresh = AnnotationState::default();
        let a = q.next("a", 4, &fresh, &[]);
        std::thread::sleep(Duration::from_millis(5));
        let b = q.next("b", 4, &fresh, &[]);
        assert_eq!(a.len(), 4);
        assert!(!b.is_empty());
    }

    #[test]
    fn the_image_on_screen_stays_with_its_client_when_the_ranking_changes() {
        let done = AnnotationState::default();
        let mut q = Handouts::new(6, Duration::from_secs(60));
        let ranking =
            |ids: Vec<u32>| Ranking { probs: vec![0.5; ids.len()], ids, selector: "x".into(), model: None, predicted: 6, created_ms: 0 };
        q.set_ranking(6, 1, ranking(vec![0, 1, 2, 3, 4, 5]));
        assert_eq!(q.next("a", 2, &done, &[]), [0, 1]);
        // A new ranking puts a's shown image (0) last; a asks again, keeping it.
        q.set_ranking(6, 2, ranking(vec![5, 4, 3, 2, 1, 0]));
        assert_eq!(q.next("a", 2, &done, &[0]), [5, 4]);
        let b = q.next("b", 6, &done, &[]);
        assert_eq!(b, [3, 2, 1], "b must not get a's shown image");
        // Without keep, it would have gone to b.
        let b = q.next("b", 6, &done, &[]);
        q.next("a", 2, &done, &[]);
        assert!(!b.contains(&0));
        assert!(q.next("b", 6, &done, &[]).contains(&0));
    }

    #[test]
    fn ranking_order_then_the_rest() {
        let mut q = Handouts::new(5, Duration::from_secs(60));
        let ranking = Ranking { ids: vec![3, 1], probs: vec![0.9, 0.8], selector: "x".into(), model: None, predicted: 2, created_ms: 0 };
        q.set_ranking(5, 1, ranking);
        let got = q.next("a", 5, &AnnotationState::default(), &[]);
        assert_eq!(&got[..2], &[3, 1]);
        assert_eq!(got.len(), 5);
        assert_eq!(q.prob(3), Some(0.9));
        assert_eq!(q.prob(0), None);
    }

    fn negative(seq: u64, id: u32) -> Record {
        Record {
            seq,
            time_ms: 0,
            client: "a".into(),
            annotator: String::new(),
            event: Event::Label { id, label: Label::Negative, prob: None },
            audit: None,
        }
    }

    #[test]
    fn audit_picks_are_uniform_over_all_the_unlabelled_images_held_ones_included() {
        // 100 images: 0..20 labelled, 20..30 held by client b. 20,000 draws must spread evenly
        // over the 80 unlabelled images, the held ones included: they are the ranking's first,
        // the likeliest positives, and leaving them out biased the estimate low.
        let n = 100;
        let mut done = AnnotationState::default();
        for id in 0..20 {
            done.apply(&negative(u64::from(id), id)).unwrap();
        }
        let mut q = Handouts::with_audits(n, Duration::from_secs(600), 1.0, 42);
        for id in 20..30 {
            q.hold("b", id);
        }
        let mut hits = vec![0u32; n];
        let draws = 20_000;
        for _ in 0..draws {
            let id = q.draw_audit(&done).expect("unlabelled images are left");
            hits[id as usize] += 1;
            let pick = q.take_audit(id).expect("the draw is remembered");
            assert_eq!((pick.unlabelled, pick.found_before), (80, 0));
        }
        assert!(hits[..20].iter().all(|h| *h == 0), "a labelled image was drawn");
        // Chi-square with 79 degrees of freedom; 123.7 is its 0.1 % tail.
        let expected = f64::from(draws) / 80.0;
        let chi2: f64 = hits[20..].iter().map(|h| (f64::from(*h) - expected).powi(2) / expected).sum();
        assert!(chi2 < 123.7, "chi-square {chi2:.1}: not uniform");
        // Leaving the held images out (the old draw) fails the same test.
        let mut without_held = hits[20..].to_vec();
        without_held[..10].iter_mut().for_each(|h| *h = 0);
        let scale = f64::from(draws) / without_held.iter().sum::<u32>() as f64;
        assert!(without_held.iter().map(|h| (f64::from(*h) * scale - expected).powi(2) / expected).sum::<f64>() > 123.7);
    }

    #[test]
    fn an_audit_pick_drawn_among_held_images_is_labelled_by_its_holder() {
        let mut done = AnnotationState::default();
        for id in 0..90 {
            done.apply(&negative(u64::from(id), id)).unwrap();
        }
        // 10 unlabelled images, all held by b: every draw lands on one of b's.
        let mut q = Handouts::with_audits(100, Duration::from_secs(600), 1.0, 3);
        for id in 90..100 {
            q.hold("b", id);
        }
        assert!(q.next("a", 1, &done, &[]).is_empty(), "a gets none of b's images");
        let pending: Vec<u32> = (90..100).filter(|id| q.audit_pending.contains_key(id)).collect();
        assert_eq!(pending.len(), 1, "one draw, one pick");
        assert!(q.take_audit(pending[0]).is_some(), "b's label of it is the audit label");
    }

    #[test]
    fn a_released_audit_pick_is_no_longer_one_a_kept_one_still_is() {
        let done = AnnotationState::default();
        let mut q = Handouts::with_audits(100, Duration::from_secs(600), 1.0, 5);
        let handed = q.next("a", 3, &done, &[]);
        // The tab keeps the first (on screen) and lets the others go.
        q.next("a", 1, &done, &handed[..1]);
        assert!(q.take_audit(handed[0]).is_some(), "the kept pick is still an audit pick");
        assert!(q.take_audit(handed[1]).is_none() && q.take_audit(handed[2]).is_none(), "released picks are not");
    }

    #[test]
    fn audit_picks_come_at_the_audit_rate_and_only_once_each() {
        let n = 5000;
        let mut done = AnnotationState::default();
        let mut q = Handouts::with_audits(n, Duration::from_secs(600), 0.05, 7);
        let (mut audits, mut seen) = (0, std::collections::HashSet::new());
        for seq in 0..2000u64 {
            let id = q.next("a", 1, &done, &[])[0];
            assert!(seen.insert(id), "image {id} handed out twice");
            audits += usize::from(q.take_audit(id).is_some());
            done.apply(&negative(seq, id)).unwrap();
            q.labelled(id);
        }
        // 2,000 hand-outs at 5 %: 100 expected; 99.9 % of draws fall within 70..=132.
        assert!((70..=132).contains(&audits), "{audits} audit picks in 2,000 hand-outs");
        // Without audits, the ranking order exactly.
        let mut without_audits = Handouts::new(10, Duration::from_secs(600));
        assert_eq!(without_audits.next("a", 10, &AnnotationState::default(), &[]), ranking::default_order(10, ranking::DEFAULT_ORDER_SEED));
    }

    #[test]
    fn more_like_this_comes_next_for_its_client_only() {
        let mut q = Handouts::new(20, Duration::from_secs(600));
        let mut done = AnnotationState::default();
        let order = ranking::default_order(20, ranking::DEFAULT_ORDER_SEED);
        let shown = q.next("a", 1, &done, &[]);
        // a asks for three images like the one shown; one of them is labelled meanwhile.
        let similar: Vec<u32> = order[10..13].to_vec();
        q.put_first("a", &similar);
        done.apply(&negative(0, similar[1])).unwrap();
        q.labelled(similar[1]);
        assert_eq!(q.next("a", 2, &done, &shown), [similar[0], similar[2]]);
        // b is not affected: it gets the ranking's next images, not a's.
        let b = q.next("b", 3, &done, &[]);
        assert!(b.iter().all(|id| !similar.contains(id) && !shown.contains(id)), "{b:?}");
        assert_eq!(b, order[1..4]);
        // Even those far down the ranking are a's until it takes them.
        let rest = q.next("b", 20, &done, &[]);
        assert!(rest.iter().all(|id| ![similar[0], similar[2]].contains(id)), "{rest:?}");
        // Once consumed, a is back to the ranking.
        let a = q.next("a", 1, &done, &[]);
        assert!(!similar.contains(&a[0]));
    }

    #[test]
    fn asking_for_look_alikes_keeps_no_state_for_clients_that_got_none_or_fell_quiet() {
        let mut q = Handouts::new(10, Duration::from_millis(20));
        for i in 0..1000 {
            q.put_first(&format!("client-{i}"), &[]);
        }
        assert!(q.front.is_empty() && q.clients.is_empty(), "a client given nothing is remembered");
        q.put_first("quiet", &[3, 4]);
        assert_eq!((q.front.len(), q.clients.len()), (1, 1));
        std::thread::sleep(Duration::from_millis(30));
        q.put_first("other", &[5]);
        assert!(!q.front.contains_key("quiet") && !q.clients.contains_key("quiet"), "a quiet client's queue outlives it");
        assert!(!q.held_by_other(3, "other"), "a quiet client's images go back to everyone");
    }
}
