//! [`Error`], what converting a weights file fails on, and what is wrong with a legacy torch
//! file ([`ParseError`]) or one of its pickles ([`PickleError`]).
//!
//! Messages include their cause's text (binann-core's house style), so the converter's one line
//! on stderr says everything.

use std::path::PathBuf;

/// Why a conversion failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading the source or writing the destination failed.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Writing the destination failed; it names the file.
    #[error(transparent)]
    File(#[from] binann_core::FileError),
    /// The source is not a legacy torch state_dict this converter reads.
    #[error("parsing legacy torch file {}: {source}", .path.display())]
    Parse {
        /// The source file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: ParseError,
    },
    /// safetensors refused the tensors read (a shape that does not match its data).
    #[error("serializing {}: {source}", .path.display())]
    Serialize {
        /// The destination file.
        path: PathBuf,
        /// safetensors' error.
        #[source]
        source: safetensors::SafeTensorError,
    },
}

/// What is wrong with a legacy torch file, independent of where it lives.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The newer zip-based format.
    #[error("this is a zip-format torch file (torch >= 1.6); only the legacy format is supported")]
    ZipFormat,
    /// The first pickle is not torch's magic number.
    #[error("not a legacy torch file (bad magic number {0})")]
    BadMagic(String),
    /// Another legacy protocol version than 1001.
    #[error("unsupported legacy protocol version {0}")]
    UnsupportedVersion(String),
    /// Written on a big-endian machine.
    #[error("big-endian torch files are not supported")]
    BigEndian,
    /// One of the five pickles could not be read.
    #[error("reading {section}: {source}")]
    Pickle {
        /// Which of them: "the magic number", "the pickled object", ...
        section: &'static str,
        /// What went wrong.
        #[source]
        source: PickleError,
    },
    /// The pickled object holds no tensor.
    #[error("the file holds no tensors")]
    NoTensors,
    /// The storage key list is not a list of strings.
    #[error("storage key list: {0}")]
    StorageKeys(String),
    /// A storage no tensor uses (its element size is unknown).
    #[error("storage {key} is not used by any tensor")]
    UnusedStorage {
        /// The storage key.
        key: String,
    },
    /// The file ends inside a storage's element count or data.
    #[error("storage {key}: truncated {}", .expected_bytes.map_or("header".to_string(), |n| format!("data ({n} bytes expected)")))]
    StorageTruncated {
        /// The storage key.
        key: String,
        /// The data bytes expected, when the element count was read.
        expected_bytes: Option<u64>,
    },
    /// An element count over the 8 GiB this converter accepts.
    #[error("storage {key}: implausible size")]
    StorageTooLarge {
        /// The storage key.
        key: String,
    },
    /// A tensor whose storage has no data in the file.
    #[error("{tensor}: storage {key} has no data")]
    MissingStorage {
        /// The tensor.
        tensor: String,
        /// Its storage key.
        key: String,
    },
    /// A tensor whose sizes and strides do not fit its storage.
    #[error("tensor {tensor}: {problem}")]
    BadTensor {
        /// The tensor.
        tensor: String,
        /// How it does not fit.
        problem: String,
    },
}

/// What is wrong with one pickle.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PickleError {
    /// The bytes end before the pickle's STOP.
    #[error("truncated pickle")]
    Truncated,
    /// Something `torch.save` does not write (an opcode, a protocol, a storage type...).
    #[error("unsupported {0}")]
    Unsupported(String),
    /// Opcodes that do not make a valid pickle (stack underflow, unset memo, wrong types...).
    #[error("malformed pickle: {0}")]
    Malformed(String),
}
