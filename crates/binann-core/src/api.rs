//! The JSON of the server's HTTP API, as types: the server writes them, and `binann simulate`,
//! the benchmarks and the tests read them, so a field renamed on one side fails to compile on the
//! other instead of reading as null. (The page reads the same JSON; its tests run against the real
//! server.)

use serde::{Deserialize, Serialize};

use crate::annotations::Label;
use crate::estimate::PositivesLeft;

/// One image handed out by `GET /api/next` (and the image `POST /api/undo` gives back).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Image {
    /// Its id.
    pub id: u32,
    /// Its path relative to DATADIR.
    pub path: String,
    /// The model's probability that it is positive, if any.
    pub prob: Option<f32>,
    /// Where its bytes are (`/api/images/{id}`).
    pub url: String,
}

impl Image {
    /// The entry for image `id`.
    pub fn new(id: u32, path: &str, prob: Option<f32>) -> Self {
        Self { id, path: path.to_owned(), prob, url: format!("/api/images/{id}") }
    }
}

/// The answer of `POST /api/undo`: the image, and the label it had.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Undone {
    /// The image, now unlabelled again.
    #[serde(flatten)]
    pub image: Image,
    /// The label removed (null when a later label by someone else stands).
    pub label: Option<Label>,
}

/// The body of `POST /api/annotations`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnnotationRequest {
    /// The image.
    pub id: u32,
    /// What the person said.
    pub label: Label,
}

/// The answer of `POST /api/annotations`, sent once the label is on disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Acknowledged {
    /// The image.
    pub id: u32,
    /// The label saved.
    pub label: Label,
    /// Its place in the journal.
    pub seq: u64,
    /// Images put next for this client because this positive looks like no positive labelled so
    /// far (a new kind of positive: see the server's `--lookalikes`), nearest first; empty
    /// otherwise.
    #[serde(default)]
    pub lookalikes: Vec<u32>,
}

/// The answer of `POST /api/similar`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Similar {
    /// The image asked about.
    pub id: u32,
    /// The images now next for this client, nearest first.
    pub queued: Vec<u32>,
}

/// `GET /api/stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Images in the dataset.
    pub total: u64,
    /// Images with a positive or negative label.
    pub annotated: u64,
    /// Of which positive.
    pub positives: u64,
    /// Of which negative.
    pub negatives: u64,
    /// Images skipped.
    pub skipped: u64,
    /// Images neither labelled nor skipped.
    pub remaining: u64,
    /// Labels given in the last minute, by everyone.
    pub last_minute: u64,
    /// The labels in force per annotator, most first.
    pub annotators: Vec<AnnotatorStats>,
    /// The model's accuracy on each label, judged by the probability it showed before the label.
    pub online: Option<OnlineAccuracy>,
    /// The model behind the ranking, when there is one.
    pub model: Option<ModelStats>,
    /// The strategy of the ranking served (also before a model exists).
    pub selector: Option<String>,
    /// How many positives are left unlabelled, from the audit picks.
    pub positives_left: Option<PositivesLeft>,
    /// Seed images: examples of the positive class from outside the dataset, which the model
    /// learns from beside the labels.
    pub seed_images: u64,
    /// What is wrong with the labels on disk, in words: records lost to damage in the journal,
    /// or a journal that holds fewer records than it once did. Empty when nothing is.
    #[serde(default)]
    pub journal_problems: Vec<String>,
}

/// Body of `POST /api/seeds`: one example image of the positive class, from outside the dataset.
/// JSON (not the raw file) because every request that changes something is JSON (see the
/// server's `access` module).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedBody {
    /// The file's bytes, base64 (standard alphabet, padded).
    pub data: String,
}

/// Answer to `POST /api/seeds`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedAnswer {
    /// False when the same image had been given before (it is kept once).
    pub added: bool,
    /// Seed images in the run directory now.
    pub seed_images: u64,
}

/// One annotator's labels in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnnotatorStats {
    /// The name ("" for labels given without one).
    pub name: String,
    /// Positive and negative labels.
    pub annotated: u64,
    /// Positive labels.
    pub positives: u64,
    /// Negative labels.
    pub negatives: u64,
    /// Skips.
    pub skipped: u64,
}

/// The model's online accuracy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OnlineAccuracy {
    /// Labels given with a probability shown before them.
    pub evaluated: u64,
    /// Of which the probability was on the right side of 0.5.
    pub correct: u64,
    /// `correct / evaluated`.
    pub accuracy: f64,
}

/// The model behind the ranking.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelStats {
    /// The checkpoint's generation.
    pub checkpoint_generation: u64,
    /// Seconds since it was written.
    pub age_s: f64,
    /// Labels it was trained on.
    pub trained_on: u64,
    /// Of which positive.
    pub positives_trained_on: u64,
    /// "head" or "finetune".
    pub mode: String,
    /// The backbone.
    pub backbone: String,
    /// The network's input side in pixels.
    pub input_size: u32,
    /// Its training loss.
    pub loss: f32,
    /// Images with a probability.
    pub predicted: u64,
    /// `predicted / total`.
    pub predicted_share: f64,
    /// Images the AI has seen: predicted, labelled or skipped (null before the first ranking).
    pub seen: Option<u64>,
    /// Seconds until it has seen them all at the rate of the last two minutes (null without one).
    pub seen_eta_s: Option<f64>,
    /// The strategy that ordered the ranking.
    pub selector: String,
    /// Seconds since the ranking was written.
    pub ranking_age_s: f64,
    /// The mean probability over the predicted images.
    pub estimated_positive_rate: Option<f64>,
}

/// One label of `GET /api/history`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The image.
    pub id: u32,
    /// The label's place in the journal.
    pub seq: u64,
    /// Positive or negative.
    pub label: Label,
    /// The probability shown before it.
    pub prob: Option<f32>,
    /// When it was given (ms since the epoch).
    pub time_ms: u64,
}

/// `GET /api/history?since=N`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// Labels in force in all.
    pub total: usize,
    /// The first entry's index.
    pub since: usize,
    /// The entries from `since` on, oldest first.
    pub labels: Vec<HistoryEntry>,
}
