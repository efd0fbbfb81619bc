//! `predictor.json`: the description of an exported predictor folder (`binann-predict export`
//! writes it, `binann-predict apply` reads it).
//!
//! A predictor folder travels: it is copied to other machines and may come from anyone, so
//! [`PredictorDescription::from_json`] checks everything `apply` relies on before any weights are
//! read. In particular the weights' file names must be plain names inside the folder (a
//! description naming `../x` or `/etc/x` would otherwise make `apply` read files outside it), and
//! the normalisation must be the one this build applies, since `apply` has no other.
//!
//! The JSON layout is the one format version 1 has had from the start, so predictors exported
//! before this type existed still load.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The `format` field of every predictor description.
pub const FORMAT: &str = "binann-predictor";
/// The description's format version this build writes and the newest it reads.
pub const VERSION: u32 = 1;
/// The description's file name inside a predictor folder.
pub const FILE_NAME: &str = "predictor.json";
/// Weights of the whole fine-tuned network (finetune mode).
pub const MODEL_FILE: &str = "model.safetensors";
/// Weights of the trained head (head mode).
pub const HEAD_FILE: &str = "head.safetensors";
/// Weights of the frozen backbone (head mode).
pub const BACKBONE_FILE: &str = "backbone.safetensors";

/// Everything `predictor.json` says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictorDescription {
    /// Always [`FORMAT`].
    pub format: String,
    /// The format version ([`VERSION`]).
    pub version: u32,
    /// The backbone and its embedding ([`binann_model::BACKBONE_NAME`], or the name of an
    /// [`binann_model::Embedding`] an older binann made).
    pub backbone: String,
    /// The weights files, relative to the predictor folder.
    pub files: PredictorFiles,
    /// Which model the weights make.
    pub mode: PredictorMode,
    /// Side of the square network input, in pixels.
    pub input_size: u32,
    /// How pixels are normalised before the network sees them.
    pub normalisation: Normalisation,
    /// Probability at or above which `apply` says positive.
    pub threshold: f64,
    /// Labels the model was trained on.
    pub labels_used: u64,
    /// Positive labels among them.
    pub positives: u64,
    /// The checkpoint generation that was exported.
    pub checkpoint_generation: u64,
    /// When that checkpoint was written (ms since the epoch).
    pub trained_ms: u64,
}

/// The weights files of a predictor. Head mode has a backbone and a head; finetune mode one file
/// with the whole network. Absent entries are left out of the JSON, as export always wrote them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PredictorFiles {
    /// Head mode: the frozen backbone's weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backbone_weights: Option<String>,
    /// Head mode: the head's weights (and the checkpoint's metadata).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_weights: Option<String>,
    /// Finetune mode: the whole network's weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_weights: Option<String>,
}

/// The two kinds of model a predictor can hold (the checkpoint modes of the same names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PredictorMode {
    /// A frozen backbone and a small head on its embeddings.
    Head,
    /// The whole network, fine-tuned.
    Finetune,
}

/// Per-channel normalisation of pixels scaled to 0..1: `(x - mean) / std`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalisation {
    /// Per-channel mean (R, G, B).
    pub mean: [f32; 3],
    /// Per-channel standard deviation (R, G, B).
    pub std: [f32; 3],
    /// How colours reach the three channels.
    pub color: String,
}

impl Normalisation {
    /// The ImageNet normalisation, the only one binann applies.
    pub fn imagenet() -> Self {
        Self {
            mean: binann_model::preprocess::IMAGENET_MEAN,
            std: binann_model::preprocess::IMAGENET_STD,
            color: "RGB, grayscale replicated".to_owned(),
        }
    }
}

/// Why a predictor description was refused.
#[derive(Debug, thiserror::Error)]
pub enum PredictorError {
    /// The folder has no readable `predictor.json`.
    #[error("{path} is not a binann predictor folder (reading {FILE_NAME}: {source})")]
    Io {
        /// The predictor folder.
        path: String,
        /// What reading it said.
        source: std::io::Error,
    },
    /// Not JSON, or not the fields of a description.
    #[error("{FILE_NAME} is not a binann predictor description: {0}")]
    Json(#[from] serde_json::Error),
    /// `format` is something else.
    #[error("{FILE_NAME} is not a binann predictor (format {0:?}, expected {FORMAT:?})")]
    Format(String),
    /// Written by a newer binann.
    #[error("{FILE_NAME} has format version {0}; this binann-predict reads up to version {VERSION}")]
    Version(u32),
    /// A backbone this build does not have.
    #[error("backbone {0:?} is not supported (only {backbone:?} and the older {older:?} are)", backbone = binann_model::BACKBONE_NAME, older = binann_model::Embedding::FinalMap.name())]
    Backbone(String),
    /// An input size no trainer writes.
    #[error("input size {0} px is outside 32..=1024")]
    InputSize(u32),
    /// Not a probability.
    #[error("the threshold must be a probability between 0 and 1, got {0}")]
    Threshold(f64),
    /// More positives than labels.
    #[error("{positives} positive labels of {labels} in all")]
    Counts {
        /// `positives`.
        positives: u64,
        /// `labels_used`.
        labels: u64,
    },
    /// Another normalisation than ImageNet's: `apply` would feed the network other pixels.
    #[error("normalisation {0:?} is not the ImageNet one this build applies")]
    Normalisation(Normalisation),
    /// A weights file the mode needs is not named, or one it does not use is.
    #[error("a {mode:?} predictor names the weights files {files:?}")]
    Files {
        /// The predictor's mode.
        mode: PredictorMode,
        /// What it names.
        files: PredictorFiles,
    },
    /// A weights file name that is not a plain name inside the folder.
    #[error("weights file name {0:?} is not a plain file name inside the predictor folder")]
    FileName(String),
}

impl PredictorDescription {
    /// Reads and checks `folder/predictor.json`.
    pub fn load(folder: &Path) -> Result<Self, PredictorError> {
        let bytes =
            std::fs::read(folder.join(FILE_NAME)).map_err(|source| PredictorError::Io { path: folder.display().to_string(), source })?;
        Self::from_json(&bytes)
    }

    /// Parses and checks a description.
    pub fn from_json(bytes: &[u8]) -> Result<Self, PredictorError> {
        let description: Self = serde_json::from_slice(bytes)?;
        description.check()?;
        Ok(description)
    }

    /// The description as `export` writes it (pretty JSON).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a description serialises: its maps have string keys")
    }

    /// Checks what `apply` relies on (see the module docs).
    pub fn check(&self) -> Result<(), PredictorError> {
        if self.format != FORMAT {
            return Err(PredictorError::Format(self.format.clone()));
        }
        if self.version > VERSION || self.version == 0 {
            return Err(PredictorError::Version(self.version));
        }
        if binann_model::Embedding::from_name(&self.backbone).is_none() {
            return Err(PredictorError::Backbone(self.backbone.clone()));
        }
        if !(32..=1024).contains(&self.input_size) {
            return Err(PredictorError::InputSize(self.input_size));
        }
        if !(0.0..=1.0).contains(&self.threshold) {
            return Err(PredictorError::Threshold(self.threshold));
        }
        if self.positives > self.labels_used {
            return Err(PredictorError::Counts { positives: self.positives, labels: self.labels_used });
        }
        let imagenet = Normalisation::imagenet();
        if self.normalisation.mean != imagenet.mean || self.normalisation.std != imagenet.std {
            return Err(PredictorError::Normalisation(self.normalisation.clone()));
        }
        let f = &self.files;
        let complete = match self.mode {
            PredictorMode::Head => f.backbone_weights.is_some() && f.head_weights.is_some() && f.model_weights.is_none(),
            PredictorMode::Finetune => f.model_weights.is_some() && f.backbone_weights.is_none() && f.head_weights.is_none(),
        };
        if !complete {
            return Err(PredictorError::Files { mode: self.mode, files: f.clone() });
        }
        for name in [&f.backbone_weights, &f.head_weights, &f.model_weights].into_iter().flatten() {
            if !is_plain_file_name(name) {
                return Err(PredictorError::FileName(name.clone()));
            }
        }
        Ok(())
    }
}

/// True for a name that joined to a folder stays directly inside it: one normal path component,
/// in the spelling of every platform (no `/`, `\`, drive colon, `..`, NUL).
fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', ':', '\0'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_leave_the_folder_are_refused() {
        for bad in ["", ".", "..", "../model.safetensors", "/etc/passwd", "a\\b", "C:x", "a\0b"] {
            assert!(!is_plain_file_name(bad), "{bad:?}");
        }
        for good in ["model.safetensors", "..weights", "a b,c\"d.safetensors", "日本.safetensors"] {
            assert!(is_plain_file_name(good), "{good:?}");
        }
    }
}
