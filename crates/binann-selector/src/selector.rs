//! [`Selector`]: the selector process's state from round to round, and the decisions it takes in
//! each one. The binary only waits for a file to change and calls [`Selector::step`].

use std::path::PathBuf;
use std::time::{Duration, Instant};

use binann_core::RunDirFile;
use binann_core::annotations::AnnotationState;
use binann_core::codec::FileError;
use binann_core::predictions::{self, Merged};
use binann_core::ranking::Ranking;
use binann_core::rundir::RunDir;
use binann_core::sketches::Sketches;
use binann_core::watch::FileStamp;

use crate::kmeans::{Clusters, cluster_count};
use crate::orders::{FARTHEST_ALONE_LABELS, FARTHEST_FIRST_PICKS, Unexplored, diverse_order, farthest_first, interleave};
use crate::sketch_cache::SketchCache;
use crate::{SKETCH_DIM, Strategy, select};

/// Exploring picks listed while the model calls nothing positive (the ranking is rewritten after
/// nearly every label, so only its first places are handed out).
const DRY_PICKS: usize = 32;

/// Share of the places that are exploring picks while the model calls nothing positive. Its best
/// guesses among negatives still find positives (3–20 % of them in the benchmark's traces, against
/// 1 % at random), so exploring takes half the places, not all.
const DRY_EXPLORE: f64 = 0.5;

/// How long a round reads new embedding chunks at most before it ranks (a chunk of 4,096 images
/// takes about half a second): a million embedded images are read over a few minutes of rounds
/// instead of holding back the first ranking as long.
const READ_PER_ROUND: Duration = Duration::from_secs(1);

/// The ranking's `selector` before the first positive, while farthest first orders alone.
pub const FARTHEST_FIRST: &str = "farthest first (no positive yet)";

/// The ranking's `selector` before the first positive, past [`FARTHEST_ALONE_LABELS`] labels.
pub const DIVERSE: &str = "farthest first and one of each kind (no positive yet)";

/// What the ranking's `selector` ends with while the model calls nothing positive.
pub const EXPLORING: &str = ", exploring (nothing called positive)";

/// The selector of one run directory: what it has read, and the orders it keeps up to date.
///
/// Each [`Selector::step`] takes one decision: while no model knows a positive, the embedded images
/// in an order that spreads over the folder (farthest first for the first
/// [`FARTHEST_ALONE_LABELS`] labels, then [`diverse_order`]); once one does, the model's order
/// ([`Strategy`]), with half the places given to the images farthest from every label while the
/// model calls nothing positive.
pub struct Selector {
    rundir: RunDir,
    strategy: Strategy,
    /// The generation of the last ranking written (0: none).
    generation: u64,
    /// The predictions files as they were when last ranked (a file replaced by a rename has a new
    /// stamp even where modification times are coarse).
    ranked_inputs: Vec<(PathBuf, Option<FileStamp>)>,
    sketches: SketchCache,
    /// The visual kinds of the first `fitted_on` sketches, fitted when an order needs them.
    kinds: Option<Clusters>,
    /// The sketches the sketch file holds and the kinds are fitted on.
    fitted_on: usize,
    /// The generation of the last sketch file written.
    sketch_generation: u64,
    /// Something besides the predictions changed the order since the last ranking.
    stale: bool,
    /// Whether the last predictions came from a model trained on at least one positive.
    knows_a_positive: bool,
    /// Whether the labels before the first positive are past [`FARTHEST_ALONE_LABELS`], and the
    /// annotations file as it was when they were last counted.
    past_farthest_alone: bool,
    annotations_seen: Option<FileStamp>,
    unexplored: Unexplored,
}

impl Selector {
    /// The selector of `rundir`, going on from the generations of the ranking and sketch files
    /// already there (an unreadable ranking is replaced by the next one written).
    pub fn new(rundir: RunDir, strategy: Strategy) -> Self {
        let generation = match Ranking::load(&rundir.ranking()) {
            Ok((g, _)) => g,
            Err(e) if e.is_not_found() => 0,
            Err(e) => {
                tracing::warn!("the existing ranking is unreadable and will be replaced: {e}");
                0
            }
        };
        let sketch_generation = Sketches::load(&rundir.sketches()).map_or(0, |(g, _)| g);
        Self {
            rundir,
            strategy,
            generation,
            ranked_inputs: Vec::new(),
            sketches: SketchCache::default(),
            kinds: None,
            fitted_on: 0,
            sketch_generation,
            stale: true,
            knows_a_positive: false,
            past_farthest_alone: false,
            annotations_seen: None,
            unexplored: Unexplored::default(),
        }
    }

    /// The files whose change calls for the next step: the predictions of every shard (new shards
    /// may appear, so ask again each round). New embedding chunks and labels are found by polling.
    pub fn watched(&self) -> Vec<PathBuf> {
        let mut paths = predictions::files(self.rundir.root());
        paths.push(self.rundir.predictions(0, 1));
        paths
    }

    /// Whether the last predictions came from a model that knows a positive. Until then new
    /// embedding chunks refine the order, so the caller looks again sooner.
    pub fn knows_a_positive(&self) -> bool {
        self.knows_a_positive
    }

    /// Whether embedding chunks are left to read: the caller goes on with the next round at once.
    pub fn reading(&self) -> bool {
        self.sketches.pending()
    }

    /// One round: reads what changed (embedding chunks, labels, predictions), writes the sketch
    /// file when the embedded images grew, and writes a new ranking when its inputs changed.
    /// Returns the ranking written, if any.
    pub fn step(&mut self) -> Result<Option<Ranking>, FileError> {
        self.refresh_sketches();
        self.count_labels_before_a_positive();
        let files = predictions::files(self.rundir.root());
        let inputs: Vec<_> = files.iter().map(|f| (f.clone(), FileStamp::of(f))).collect();
        if inputs == self.ranked_inputs && !self.stale {
            return Ok(None);
        }
        let started = Instant::now();
        let merged = if files.is_empty() { Merged::default() } else { predictions::merge(&files) };
        for p in &merged.problems {
            tracing::error!("skipping unreadable predictions: {p}");
        }
        self.knows_a_positive = merged.model.as_ref().is_some_and(|m| m.positives_used > 0);
        let ranking = self.rank(&merged);
        if let Some(ranking) = &ranking {
            self.generation += 1;
            ranking.save(&self.rundir.ranking(), self.generation)?;
            tracing::info!(
                generation = self.generation,
                images = ranking.ids.len(),
                selector = ranking.selector,
                checkpoint = ranking.model.as_ref().map(|m| m.checkpoint_generation),
                "ranking written in {:.0} ms",
                started.elapsed().as_secs_f64() * 1000.0
            );
        }
        self.ranked_inputs = inputs;
        self.stale = false;
        Ok(ranking)
    }

    /// Reads new embedding chunks into the sketches, and writes the sketch file the server's "more
    /// like this" and look-alikes search (and lets the visual kinds be refitted) when the embedded
    /// images grew by a tenth while the pass runs (a chunk of 4,096 more among 1,000,000 changes
    /// the kinds little and would cost a pass over all of them), or by anything once no chunk came
    /// since the last round, so the images embedded last get their sketches too. While chunk files
    /// already there are still being read ([`READ_PER_ROUND`] a round), only when the sketches
    /// doubled: refitting at every tenth of a million images would cost a minute.
    fn refresh_sketches(&mut self) {
        let changed = self.sketches.refresh(&self.rundir.embeddings_dir(), READ_PER_ROUND);
        let grown = if self.sketches.pending() {
            self.sketches.len() >= 2 * self.fitted_on
        } else {
            self.sketches.len() * 10 >= self.fitted_on * 11
        };
        if self.sketches.len() == self.fitted_on || (changed && !grown) {
            return;
        }
        self.fitted_on = self.sketches.len();
        // Refitted when an order needs them ([`Selector::rank`], no positive known yet). Once the
        // model knows a positive they wait: fitting 256 kinds on 20,000 sketches took 0.1-1.2 s at
        // each chunk of the first pass, a core the pass needs and a second the next ranking waited.
        self.kinds = None;
        self.sketch_generation += 1;
        if let Err(e) = self.sketches.to_file().save(&self.rundir.sketches(), self.sketch_generation) {
            tracing::error!("writing the sketches for \"more like this\": {e}");
        }
        self.stale = true;
    }

    /// The visual kinds of the first `fitted_on` sketches.
    fn fit_kinds(sketches: &SketchCache, fitted_on: usize) -> Clusters {
        let started = Instant::now();
        let fitted = Clusters::fit(&sketches.values[..fitted_on * SKETCH_DIM], cluster_count(fitted_on), 1);
        tracing::info!(
            images = fitted_on,
            clusters = fitted.sizes.len(),
            smallest = fitted.sizes.iter().min(),
            "visual kinds found in {:.0} ms",
            started.elapsed().as_secs_f64() * 1000.0
        );
        fitted
    }

    /// Before the first positive, counts the labels (when the annotations file changed) to switch
    /// from farthest first alone to the diverse order.
    fn count_labels_before_a_positive(&mut self) {
        if self.knows_a_positive || self.past_farthest_alone {
            return;
        }
        let stamp = FileStamp::of(&self.rundir.annotations());
        if stamp == self.annotations_seen {
            return;
        }
        self.annotations_seen = stamp;
        if AnnotationState::load(&self.rundir.annotations()).is_ok_and(|state| state.labels().count() >= FARTHEST_ALONE_LABELS) {
            self.past_farthest_alone = true;
            self.stale = true;
        }
    }

    /// The ranking for `merged`, or None while there is nothing to order.
    fn rank(&mut self, merged: &Merged) -> Option<Ranking> {
        if self.knows_a_positive || self.strategy == Strategy::Random {
            let model = merged.model.as_ref()?;
            let order = select(&merged.ids, &merged.logits, self.strategy, self.generation + 1);
            // The model calls nothing positive: its first picks are its best guesses among
            // negatives. Half the places go to the images farthest from everything labelled,
            // where a kind of positive nobody has labelled yet would be.
            let dry = self.strategy == Strategy::MaxProbability && merged.logits.iter().all(|l| *l < 0.0);
            let (order, selector) = if dry {
                let picks = self.unexplored_picks(&merged.ids);
                (interleave(&order, &picks, DRY_EXPLORE, self.generation + 1), format!("{}{EXPLORING}", self.strategy.name()))
            } else {
                (order, self.strategy.name())
            };
            return Some(Ranking {
                ids: order.iter().map(|&i| merged.ids[i]).collect(),
                probs: order.iter().map(|&i| predictions::probability(merged.logits[i])).collect(),
                selector,
                model: Some(model.clone()),
                predicted: merged.ids.len() as u64,
                created_ms: binann_core::now_ms(),
            });
        }
        // No model knows a positive yet: the embedded images farthest first, and past the first
        // labels the images the kinds were fitted on (the first rows; refitted as the pass grows),
        // half the places farthest first and half one of each kind in turn. Images not embedded
        // yet follow in the default order (the server appends them).
        if self.fitted_on == 0 {
            return None;
        }
        let (order, selector) = if self.past_farthest_alone && self.fitted_on <= self.sketches.len() {
            let kinds = self.kinds.get_or_insert_with(|| Self::fit_kinds(&self.sketches, self.fitted_on));
            (diverse_order(kinds, &self.sketches.values[..self.fitted_on * SKETCH_DIM], self.generation + 1), DIVERSE)
        } else {
            (farthest_first(&self.sketches.values, FARTHEST_FIRST_PICKS), FARTHEST_FIRST)
        };
        Some(Ranking {
            ids: order.iter().map(|&i| self.sketches.ids[i]).collect(),
            probs: vec![f32::NAN; order.len()],
            selector: selector.to_owned(),
            model: None,
            predicted: 0,
            created_ms: binann_core::now_ms(),
        })
    }

    /// Indices into `ids` (the predicted images) of the images farthest from every labelled one.
    fn unexplored_picks(&mut self, ids: &[u32]) -> Vec<usize> {
        let labelled: Vec<u32> = match AnnotationState::load(&self.rundir.annotations()) {
            Ok(state) => state.labels().map(|(id, _)| id).collect(),
            Err(e) => {
                tracing::warn!("the annotations are unreadable; exploring from the last ones read: {e}");
                Vec::new()
            }
        };
        self.unexplored.update(&self.sketches, &labelled);
        // By id, in a plain list: a map of a million predicted images would take 40 MB a ranking.
        let mut index_of = vec![u32::MAX; ids.iter().max().map_or(0, |m| *m as usize + 1)];
        for (i, id) in ids.iter().enumerate() {
            index_of[*id as usize] = i as u32;
        }
        let at = |id: u32| index_of.get(id as usize).copied().filter(|i| *i != u32::MAX);
        self.unexplored.farthest(|id| at(id).is_some(), DRY_PICKS).into_iter().filter_map(|id| at(id).map(|i| i as usize)).collect()
    }
}

#[cfg(test)]
mod tests {
    use binann_core::annotations::{Event, Label, Record};
    use binann_core::codec::FileKind;
    use binann_core::embeddings::EmbeddingChunk;
    use binann_core::journal::{self, JournalWriter};
    use binann_core::predictions::{ModelInfo, Predictions};

    use super::*;
    use crate::tests::blobs;

    /// Blob sizes: five common kinds and one rare (ids 1000..1005), listed blob by blob.
    const SIZES: [usize; 6] = [200, 200, 200, 200, 200, 5];

    /// A run directory whose images (ids 0..1005) are embedded as the blobs of [`SIZES`]; returns
    /// it and each image's blob.
    fn embedded_run(dir: &std::path::Path) -> (RunDir, Vec<usize>) {
        let rundir = RunDir::create_or_open(dir).unwrap();
        let (values, truth) = blobs(&SIZES, 2);
        std::fs::create_dir_all(rundir.embeddings_dir()).unwrap();
        let chunk = EmbeddingChunk {
            ids: (0..truth.len() as u32).collect(),
            dim: SKETCH_DIM as u32,
            model: "test".into(),
            values: EmbeddingChunk::pack(&values.iter().map(|v| v.to_f32()).collect::<Vec<_>>()),
            failed: vec![],
        };
        chunk.save(&EmbeddingChunk::path(&rundir.embeddings_dir(), 0, 1, 0), 1).unwrap();
        (rundir, truth)
    }

    /// Labels images `ids` as `label`, as the server writes them.
    fn label(rundir: &RunDir, ids: impl Iterator<Item = u32>, label: Label) {
        let mut writer = JournalWriter::open::<Record>(&rundir.annotations(), FileKind::Annotations).unwrap().writer;
        let first = AnnotationState::load(&rundir.annotations()).map_or(0, |s| s.next_seq());
        for (seq, id) in (first..).zip(ids) {
            let event = Event::Label { id, label, prob: None };
            let record = Record { audit: None, seq, time_ms: 0, client: "t".into(), annotator: String::new(), event };
            writer.append_framed(&journal::frame(&record)).unwrap();
        }
    }

    /// Writes predictions of `logits` for `ids` by a model trained on `positives` positives.
    fn predict(rundir: &RunDir, ids: &[u32], logits: Vec<f32>, positives: u64, generation: u64) {
        let model = ModelInfo {
            checkpoint_generation: generation,
            checkpoint_ms: 0,
            labels_used: 100,
            positives_used: positives,
            mode: "head".into(),
            backbone: "mobilenet_v2".into(),
            input_size: 64,
            loss: 0.1,
        };
        let predictions = Predictions { model, shard: (0, 1), ids: ids.to_vec(), logits, failed: vec![], created_ms: 0 };
        predictions.save(&rundir.predictions(0, 1), generation).unwrap();
    }

    /// The blobs of the first `n` images of `ranking`.
    fn kinds_among(ranking: &Ranking, truth: &[usize], n: usize) -> std::collections::HashSet<usize> {
        ranking.ids[..n].iter().map(|id| truth[*id as usize]).collect()
    }

    #[test]
    fn before_the_first_positive_the_embedded_images_come_farthest_first_then_one_of_each_kind_too() {
        let tmp = tempfile::tempdir().unwrap();
        let (rundir, truth) = embedded_run(tmp.path());
        let mut selector = Selector::new(rundir.clone(), Strategy::MaxProbability);
        let first = selector.step().unwrap().expect("a ranking from the embeddings alone");
        assert_eq!(first.selector, FARTHEST_FIRST);
        assert!(first.model.is_none() && first.probs.iter().all(|p| p.is_nan()));
        assert_eq!(kinds_among(&first, &truth, SIZES.len()).len(), SIZES.len(), "every kind, the rare one included, in one turn");
        assert!(selector.kinds.is_none(), "farthest first needs no visual kinds");
        assert_eq!(Sketches::load(&rundir.sketches()).unwrap().1.ids.len(), truth.len(), "the sketch file, for \"more like this\"");
        assert!(selector.step().unwrap().is_none(), "nothing changed: no new ranking");
        assert_eq!(Ranking::load(&rundir.ranking()).unwrap().0, 1);
        // Predictions of a model that knows no positive change nothing; labels short of
        // FARTHEST_ALONE_LABELS neither.
        label(&rundir, 0..FARTHEST_ALONE_LABELS as u32 - 1, Label::Negative);
        let all: Vec<u32> = (0..truth.len() as u32).collect();
        predict(&rundir, &all, vec![-1.0; all.len()], 0, 1);
        let still = selector.step().unwrap().expect("new predictions: a new ranking");
        assert_eq!((still.selector.as_str(), &still.ids), (FARTHEST_FIRST, &first.ids));
        assert!(!selector.knows_a_positive());
        // One label more: half the places go to one image of each kind in turn, drawn anew for
        // each ranking, and every embedded image has a place.
        label(&rundir, std::iter::once(FARTHEST_ALONE_LABELS as u32), Label::Negative);
        let mixed = selector.step().unwrap().expect("the labels changed the order");
        assert_eq!(mixed.selector, DIVERSE);
        assert_ne!(mixed.ids, first.ids);
        let mut ids = mixed.ids.clone();
        ids.sort_unstable();
        assert_eq!(ids, all, "every embedded image once");
        assert_eq!(kinds_among(&mixed, &truth, 2 * SIZES.len()).len(), SIZES.len());
        assert_eq!(selector.kinds.as_ref().map(|k| k.sizes.iter().sum::<usize>()), Some(truth.len()), "the kinds, fitted for this order");
        // A new Selector over the same run directory goes on from the ranking's generation.
        let mut again = Selector::new(rundir.clone(), Strategy::MaxProbability);
        again.step().unwrap().unwrap();
        assert_eq!(Ranking::load(&rundir.ranking()).unwrap().0, 4);
    }

    #[test]
    fn a_model_that_knows_a_positive_orders_by_logit_and_explores_while_it_calls_nothing_positive() {
        let tmp = tempfile::tempdir().unwrap();
        let (rundir, truth) = embedded_run(tmp.path());
        // Labels in the first four kinds only; the fifth and the rare one are unexplored.
        let labelled: Vec<u32> = (0..800).step_by(8).collect();
        label(&rundir, labelled.iter().copied(), Label::Negative);
        label(&rundir, std::iter::once(1), Label::Positive);
        let unlabelled: Vec<u32> = (0..truth.len() as u32).filter(|id| id % 8 != 0 && *id != 1).collect();
        // Every logit negative, the unexplored kinds' lowest: by the model alone they come last.
        let logits: Vec<f32> = unlabelled.iter().map(|id| -1.0 - *id as f32 / 100.0).collect();
        predict(&rundir, &unlabelled, logits.clone(), 1, 1);
        let mut selector = Selector::new(rundir.clone(), Strategy::MaxProbability);
        let dry = selector.step().unwrap().unwrap();
        assert!(selector.knows_a_positive());
        // The model's order needs no visual kinds: none are fitted (that cost a core during the
        // first pass), and the sketch file is written all the same.
        assert!(selector.kinds.is_none());
        assert_eq!(Sketches::load(&rundir.sketches()).unwrap().1.ids.len(), truth.len());
        assert_eq!(dry.selector, format!("max-probability{EXPLORING}"));
        let unexplored_early = dry.ids[..10].iter().filter(|id| truth[**id as usize] >= 4).count();
        assert!(unexplored_early >= 2, "exploring picks from the unlabelled kinds among the first 10: {:?}", &dry.ids[..10]);
        let mut ids = dry.ids.clone();
        ids.sort_unstable();
        assert_eq!(ids, unlabelled, "each unlabelled image once");
        // One image called positive: the model's order alone, by logit (probabilities may round
        // to 0 where logits still differ).
        let mut logits: Vec<f32> = unlabelled.iter().map(|id| -200.0 - *id as f32).collect();
        logits[5] = 3.0;
        predict(&rundir, &unlabelled, logits, 1, 2);
        let wet = selector.step().unwrap().unwrap();
        assert_eq!(wet.selector, "max-probability");
        assert_eq!(wet.ids[0], unlabelled[5]);
        assert_eq!(&wet.ids[1..], [&unlabelled[..5], &unlabelled[6..]].concat(), "then highest logit first");
        assert_eq!(wet.probs[1], 0.0, "a probability that rounds to 0 keeps its place by logit");
        assert_eq!(wet.model.unwrap().checkpoint_generation, 2);
    }

    #[test]
    fn random_ignores_the_model() {
        let tmp = tempfile::tempdir().unwrap();
        let (rundir, truth) = embedded_run(tmp.path());
        let all: Vec<u32> = (0..truth.len() as u32).collect();
        let mut selector = Selector::new(rundir.clone(), Strategy::Random);
        assert!(selector.step().unwrap().is_none(), "no predictions yet: nothing to shuffle");
        predict(&rundir, &all, all.iter().map(|id| -(*id as f32)).collect(), 0, 1);
        let ranking = selector.step().unwrap().unwrap();
        assert_eq!(ranking.selector, "random");
        assert_ne!(ranking.ids, all, "not the model's order");
        let mut ids = ranking.ids.clone();
        ids.sort_unstable();
        assert_eq!(ids, all);
    }
}
