//! The inferrer's output: the model's logit for each unlabelled image, tagged with the checkpoint
//! that produced it; one file per inferrer shard ([`files`]), read together with [`merge`].
//!
//! Logits, not probabilities: a head trained round after round on labels it separates grows its
//! logits past ±100, where an `f32` probability is exactly 0 or 1 for most of the folder and a
//! ranking by it is ties. The logit keeps the model's order; [`probability`] gives the
//! probability the page and the export show.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::codec::RunDirFile;
use crate::codec::{self, FileKind};

/// What a checkpoint is, as far as the other processes and the page need to know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The checkpoint's generation (the trainer increments it on every save).
    pub checkpoint_generation: u64,
    /// When the checkpoint was written (ms since the epoch).
    pub checkpoint_ms: u64,
    /// Human labels (positive + negative) it was trained on.
    pub labels_used: u64,
    /// Of which positive.
    pub positives_used: u64,
    /// "head" (frozen backbone) or "finetune".
    pub mode: String,
    /// Backbone name, e.g. "mobilenet_v2".
    pub backbone: String,
    /// Input size in pixels.
    pub input_size: u32,
    /// Training loss at save time.
    pub loss: f32,
}

/// The probability of a logit (the logistic function).
pub fn probability(logit: f32) -> f32 {
    1.0 / (1.0 + (-logit).exp())
}

/// Logits for (a shard of) the unlabelled images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Predictions {
    /// The model that produced them.
    pub model: ModelInfo,
    /// This file's shard number (0-based) and the number of shards.
    pub shard: (u32, u32),
    /// Image ids.
    pub ids: Vec<u32>,
    /// The model's logit that each image in `ids` is positive ([`probability`] makes it a
    /// probability).
    pub logits: Vec<f32>,
    /// Images of this shard that could not be read (corrupt), with the reason.
    pub failed: Vec<(u32, String)>,
    /// When the predictions were finished (ms since the epoch).
    pub created_ms: u64,
}

impl codec::RunDirFile for Predictions {
    const KIND: FileKind = FileKind::Predictions;
    /// Version 3 and older held probabilities.
    const OLDEST_VERSION: u16 = 4;

    fn validate(&self) -> Result<(), String> {
        if self.ids.len() != self.logits.len() {
            return Err(format!("{} ids but {} logits", self.ids.len(), self.logits.len()));
        }
        Ok(())
    }
}

/// True for the file name of a shard's predictions: `predictions.bin` or `predictions-K-of-N.bin`
/// (see [`crate::rundir::RunDir::predictions`]).
pub fn is_predictions_name(name: &str) -> bool {
    name.starts_with("predictions") && name.ends_with(".bin")
}

/// The prediction files of every shard in `rundir` (`predictions.bin`, `predictions-K-of-N.bin`).
pub fn files(rundir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(rundir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(is_predictions_name))
        .collect();
    files.sort();
    files
}

/// Merged predictions of all shards: ids, logits, and the newest model among them.
#[derive(Debug, Default)]
pub struct Merged {
    /// Image ids.
    pub ids: Vec<u32>,
    /// Their logits.
    pub logits: Vec<f32>,
    /// The newest model that contributed.
    pub model: Option<ModelInfo>,
    /// Files that could not be read, with the reason (kept out; their last good content is lost
    /// to this round only).
    pub problems: Vec<String>,
}

/// Reads and merges every shard's predictions. An id predicted by two shards keeps the newer.
pub fn merge(files: &[PathBuf]) -> Merged {
    let mut merged = Merged::default();
    let mut parts: Vec<Predictions> = Vec::new();
    for f in files {
        match Predictions::load(f) {
            Ok((_, p)) => parts.push(p),
            Err(e) => merged.problems.push(e.to_string()),
        }
    }
    parts.sort_by_key(|p| std::cmp::Reverse(p.model.checkpoint_generation));
    let mut seen = std::collections::HashSet::new();
    for p in parts {
        if merged.model.is_none() {
            merged.model = Some(p.model.clone());
        }
        for (id, logit) in p.ids.iter().zip(&p.logits) {
            if seen.insert(*id) {
                merged.ids.push(*id);
                merged.logits.push(*logit);
            }
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{DecodeError, FileError, HEADER_LEN, Header, encode_header, encode_value};

    fn predictions(ids: Vec<u32>, logits: Vec<f32>) -> Predictions {
        let model = ModelInfo {
            checkpoint_generation: 1,
            checkpoint_ms: 0,
            labels_used: 2,
            positives_used: 1,
            mode: "head".into(),
            backbone: "mobilenet_v2".into(),
            input_size: 64,
            loss: 0.1,
        };
        Predictions { model, shard: (0, 1), ids, logits, failed: vec![], created_ms: 0 }
    }

    /// A version-3 file held probabilities in the place the logits are now: read as logits they
    /// would all mean ½–¾, so it is refused (and left out of a merge) until the inferrer rewrites it.
    #[test]
    fn predictions_from_before_logits_are_refused_not_misread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("predictions.bin");
        let payload = encode_value(&predictions(vec![1, 2], vec![0.9, 0.1]));
        let header = Header {
            version: 3,
            kind: FileKind::Predictions,
            generation: 1,
            payload_len: payload.len() as u64,
            payload_crc: crc32fast::hash(&payload),
        };
        let mut bytes = encode_header(&header).to_vec();
        assert_eq!(bytes.len(), HEADER_LEN);
        bytes.extend(payload);
        std::fs::write(&path, bytes).unwrap();
        match Predictions::load(&path) {
            Err(FileError::Decode { source: DecodeError::OlderVersion { found: 3, oldest: 4 }, .. }) => {}
            other => panic!("expected OlderVersion, got {other:?}"),
        }
        let merged = merge(std::slice::from_ref(&path));
        assert!(merged.ids.is_empty() && merged.problems.len() == 1, "{merged:?}");
        let printed = crate::inspect::inspect(&path, &mut Vec::new()).unwrap_err().to_string();
        assert!(printed.contains("format version 3 is older"), "binann inspect: {printed}");
        // Written by this build, the same values load, as logits.
        predictions(vec![1, 2], vec![0.9, 0.1]).save(&path, 2).unwrap();
        let merged = merge(&[path]);
        assert_eq!((merged.ids, merged.logits), (vec![1, 2], vec![0.9, 0.1]));
    }

    #[test]
    fn ids_and_logits_must_pair_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("predictions.bin");
        predictions(vec![1, 2, 3], vec![0.0]).save(&path, 1).unwrap();
        assert!(Predictions::load(&path).unwrap_err().to_string().contains("3 ids but 1 logits"));
    }

    #[test]
    fn probability_is_the_logistic_function() {
        assert_eq!(probability(0.0), 0.5);
        assert!((probability(2.0) - 0.880_797).abs() < 1e-6);
        assert_eq!(probability(-200.0), 0.0);
        assert_eq!(probability(200.0), 1.0);
    }
}
