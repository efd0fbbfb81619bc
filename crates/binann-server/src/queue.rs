//! The hand-out queue: which image each client sees next.
//!
//! Images go out in ranking order, skipping those labelled or skipped and those handed to another
//! client. A client's hand-out is released when it asks again, or after it has been quiet for the
//! hand-out timeout, so a closed tab never hides images for long.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use binann_core::annotations::AnnotationState;
use binann_core::ranking::{self, Ranking};

#[derive(Debug)]
struct ClientSlot {
    handed: Vec<u32>,
    last_seen: Instant,
}

/// The ranking currently served, and who holds which image.
#[derive(Debug)]
pub struct Queue {
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
}

impl Queue {
    /// A queue over `n` images in the default (seeded shuffle) order.
    pub fn new(n: usize, handout_timeout: Duration) -> Self {
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
        };
        q.set_order(n, Vec::new(), Vec::new());
        q
    }

    /// Serves `ranking` from now on. Ids it does not list (or does not know) follow in default order.
    pub fn set_ranking(&mut self, n: usize, generation: u64, mut ranking: Ranking) {
        let ids = std::mem::take(&mut ranking.ids);
        let probs = std::mem::take(&mut ranking.probs);
        let predicted: Vec<f64> = probs.iter().filter(|p| !p.is_nan()).map(|p| *p as f64).collect();
        self.mean_prob = (!predicted.is_empty()).then(|| predicted.iter().sum::<f64>() / predicted.len() as f64);
        self.set_order(n, ids, probs);
        self.source = Some(ranking);
        self.generation = generation;
    }

    fn set_order(&mut self, n: usize, ids: Vec<u32>, probs: Vec<f32>) {
        let mut prob = vec![f32::NAN; n];
        let mut seen = vec![false; n];
        let mut order = Vec::with_capacity(n);
        for (i, id) in ids.into_iter().enumerate() {
            if (id as usize) < n && !seen[id as usize] {
                seen[id as usize] = true;
                order.push(id);
                prob[id as usize] = probs.get(i).copied().unwrap_or(f32::NAN);
            }
        }
        if order.len() < n {
            order.extend(ranking::default_order(n, ranking::DEFAULT_ORDER_SEED).into_iter().filter(|id| !seen[*id as usize]));
        }
        let mut position = vec![0u32; n];
        for (i, id) in order.iter().enumerate() {
            position[*id as usize] = i as u32;
        }
        self.order = order;
        self.position = position;
        self.prob = prob;
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
        self.release(client);
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
        for &id in &self.order[self.low_water..] {
            if out.len() == count {
                break;
            }
            if !done.is_done(id) && !self.holder.contains_key(&id) {
                out.push(id);
            }
        }
        for &id in &out {
            self.holder.insert(id, client.to_owned());
        }
        kept.extend_from_slice(&out);
        self.clients.insert(client.to_owned(), ClientSlot { handed: kept, last_seen: now });
        out
    }

    /// Marks `id` as held by `client` (the image an undo shows again).
    pub fn hand(&mut self, client: &str, id: u32) {
        if let Some(other) = self.holder.insert(id, client.to_owned())
            && let Some(slot) = self.clients.get_mut(&other)
        {
            slot.handed.retain(|h| *h != id);
        }
        let slot = self.clients.entry(client.to_owned()).or_insert_with(|| ClientSlot { handed: Vec::new(), last_seen: Instant::now() });
        slot.handed.push(id);
        slot.last_seen = Instant::now();
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

    fn release(&mut self, client: &str) {
        if let Some(slot) = self.clients.remove(client) {
            for id in slot.handed {
                if self.holder.get(&id).is_some_and(|c| c == client) {
                    self.holder.remove(&id);
                }
            }
        }
    }

    fn expire(&mut self, now: Instant) {
        let quiet: Vec<String> =
            self.clients.iter().filter(|(_, s)| now.duration_since(s.last_seen) > self.handout_timeout).map(|(c, _)| c.clone()).collect();
        for c in quiet {
            self.release(&c);
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
        let mut q = Queue::new(10, Duration::from_secs(60));
        let mut done = AnnotationState::default();
        let a = q.next("a", 3, &done, &[]);
        let b = q.next("b", 3, &done, &[]);
        assert!(a.iter().all(|id| !b.contains(id)));
        done.apply(&Record {
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
        let mut q = Queue::new(4, Duration::from_millis(0));
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
        let mut q = Queue::new(6, Duration::from_secs(60));
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
        let mut q = Queue::new(5, Duration::from_secs(60));
        let ranking = Ranking { ids: vec![3, 1], probs: vec![0.9, 0.8], selector: "x".into(), model: None, predicted: 2, created_ms: 0 };
        q.set_ranking(5, 1, ranking);
        let got = q.next("a", 5, &AnnotationState::default(), &[]);
        assert_eq!(&got[..2], &[3, 1]);
        assert_eq!(got.len(), 5);
        assert_eq!(q.prob(3), Some(0.9));
        assert_eq!(q.prob(0), None);
    }
}
