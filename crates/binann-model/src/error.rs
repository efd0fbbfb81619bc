//! The one error type of this crate, [`Error`], and the smaller enums it carries: what is wrong
//! with a checkpoint ([`CheckpointError`]), how a checkpoint differs from the model in use
//! ([`Mismatch`]), and why an image could not be decoded ([`ImageError`]).
//!
//! Every message says which file it is about when there is one, and includes its cause's text
//! (the house style of binann-core's errors), so a message stored per image or logged once reads
//! whole without walking the source chain.

use std::path::PathBuf;
use std::sync::Arc;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in binann-model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A libtorch operation failed.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// The pretrained backbone weights are not where they were looked for.
    #[error(
        "backbone weights {} not found: run `bash scripts/fetch-weights.sh` (or `bash scripts/setup.sh`) from the \
         repository root to download and convert them",
        .path.display()
    )]
    WeightsMissing {
        /// Where they were looked for.
        path: PathBuf,
    },
    /// libtorch could not load the weights file (unreadable, or not safetensors).
    #[error("loading backbone weights {}: {source}", .path.display())]
    WeightsUnreadable {
        /// The weights file.
        path: PathBuf,
        /// libtorch's error.
        #[source]
        source: tch::TchError,
    },
    /// The weights file loaded but lacks backbone variables: not a MobileNetV2 state_dict.
    #[error("backbone weights {} lack {missing} variable(s), e.g. {example}: not a MobileNetV2 state_dict?", .path.display())]
    WeightsIncomplete {
        /// The weights file.
        path: PathBuf,
        /// How many `features.*` variables it lacks.
        missing: usize,
        /// One of them.
        example: String,
    },
    /// Reading or writing a file failed.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Writing a run-directory file (a checkpoint) failed; it names the file.
    #[error(transparent)]
    File(#[from] binann_core::FileError),
    /// A checkpoint file that cannot be used as it is.
    #[error("checkpoint {}: {source}", .path.display())]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: CheckpointError,
    },
    /// A checkpoint's meta ([`crate::ModelMeta`]) was trained for other inputs than those in use.
    #[error("the checkpoint was {0}")]
    Incompatible(#[source] Mismatch),
    /// A model asked to be saved with a meta that does not describe it.
    #[error("cannot save {}: meta.{field} is {in_meta}, but the model's is {in_model}", .path.display())]
    MetaMismatch {
        /// The checkpoint that was to be written.
        path: PathBuf,
        /// The [`crate::ModelMeta`] field that differs.
        field: &'static str,
        /// Its value in the meta.
        in_meta: String,
        /// What the model needs there.
        in_model: String,
    },
    /// Writing tensors as safetensors failed.
    #[error("serializing {}: {source}", .path.display())]
    Serialize {
        /// The file being written.
        path: PathBuf,
        /// safetensors' error.
        #[source]
        source: safetensors::SafeTensorError,
    },
    /// A backbone this crate does not implement.
    #[error("backbone {0:?} is not supported; only {BACKBONE:?} is", BACKBONE = crate::BACKBONE_NAME)]
    UnsupportedBackbone(String),
    /// An image that could not be decoded.
    #[error("cannot decode image {}: {source}", .path.display())]
    Image {
        /// The image file.
        path: PathBuf,
        /// Why.
        #[source]
        source: ImageError,
    },
    /// The network failed on a batch; every image of the batch carries the same cause.
    #[error("embedding failed: {0}")]
    Embedding(#[source] Arc<Error>),
    /// A thread panicked where a result was expected (libtorch or a decoder on hostile input).
    #[error("{what} crashed: {message}")]
    Panicked {
        /// What was running.
        what: &'static str,
        /// The panic's message.
        message: String,
    },
    /// A CUDA device was requested where CUDA does not work.
    #[error(
        "device cuda:{ordinal} requested, but CUDA is not available (no GPU, no driver, or libtorch was built for CPU \
         only); use --device cpu or auto"
    )]
    CudaUnavailable {
        /// The device requested.
        ordinal: usize,
    },
    /// A CUDA device beyond those visible was requested.
    #[error("device cuda:{ordinal} requested, but only {visible} CUDA device(s) are visible")]
    NoSuchCudaDevice {
        /// The device requested.
        ordinal: usize,
        /// How many there are.
        visible: usize,
    },
}

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io { path: path.to_owned(), source }
    }

    /// Wraps what is wrong with a checkpoint with its path.
    pub(crate) fn checkpoint(path: &std::path::Path, source: impl Into<CheckpointError>) -> Self {
        Self::Checkpoint { path: path.to_owned(), source: source.into() }
    }
}

/// What is wrong with a checkpoint file, independent of where it lives.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The bytes are not a safetensors file (truncated, corrupt header, inconsistent offsets...).
    #[error("not a valid safetensors file: {0}")]
    NotSafetensors(#[source] safetensors::SafeTensorError),
    /// A safetensors file without binann's metadata.
    #[error("no binann metadata: not a binann checkpoint")]
    NotBinann,
    /// binann's metadata is there but does not parse as a [`crate::ModelMeta`].
    #[error("invalid binann metadata: {0}")]
    BadMeta(#[source] serde_json::Error),
    /// A tensor of another element type than the f32 binann writes.
    #[error("tensor {name} has dtype {dtype}, expected F32")]
    Dtype {
        /// The tensor.
        name: String,
        /// Its element type.
        dtype: String,
    },
    /// libtorch refused a tensor's data.
    #[error("tensor {name}: {source}")]
    Tensor {
        /// The tensor.
        name: String,
        /// libtorch's error.
        #[source]
        source: tch::TchError,
    },
    /// A variable of the model is absent from the checkpoint.
    #[error("lacks variable {name}")]
    MissingVariable {
        /// The variable.
        name: String,
    },
    /// A variable of the model has another shape in the checkpoint.
    #[error("variable {name} has shape {found:?}, expected {expected:?}")]
    Shape {
        /// The variable.
        name: String,
        /// Its shape in the checkpoint.
        found: Vec<i64>,
        /// Its shape in the model.
        expected: Vec<i64>,
    },
    /// A checkpoint of the other mode (a head where a whole network was wanted, or the reverse).
    #[error("a {found:?} model, not a {expected:?} model")]
    WrongMode {
        /// The mode stored in the checkpoint.
        found: String,
        /// The mode wanted.
        expected: &'static str,
    },
    /// Trained for other inputs than those in use.
    #[error("{0}")]
    Incompatible(#[from] Mismatch),
}

/// How a checkpoint's meta differs from the backbone and input size in use.
///
/// Embeddings from another backbone or resolution live in a different space, so a head trained
/// on them would silently produce garbage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    /// Another backbone architecture.
    #[error("trained on backbone {trained:?}, but {in_use:?} is in use")]
    Backbone {
        /// The checkpoint's.
        trained: String,
        /// The one in use.
        in_use: String,
    },
    /// Another input size.
    #[error("trained at input size {trained} px, but {in_use} px is in use")]
    InputSize {
        /// The checkpoint's, in pixels.
        trained: u32,
        /// The one in use.
        in_use: u32,
    },
}

/// Why an image could not be decoded (the file is named by [`Error::Image`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// The file could not be read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The decoder refused it: unknown format, corrupt data, or over the decoder's limits.
    #[error("{0}")]
    Decode(#[from] image::ImageError),
    /// Decoding it would need more memory than binann allows (a decompression bomb, or a huge
    /// picture).
    #[error(
        "{width}x{height} image needs {} MiB, over the {} MiB limit",
        .bytes >> 20,
        crate::preprocess::MAX_DECODE_BYTES >> 20
    )]
    TooLarge {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// Bytes the decoded image would take.
        bytes: u64,
    },
    /// The decoder panicked on it.
    #[error("decoder crashed: {0}")]
    Crashed(String),
}
