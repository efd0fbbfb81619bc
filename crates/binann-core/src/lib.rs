//! binann-core: what every binann process shares. It never links libtorch, so the server can run
//! where libtorch is absent.
//!
//! - [`api`]: the JSON of the server's HTTP API, as types.
//! - [`codec`]: the fixed header every run-directory file starts with, and the bincode payloads
//!   behind it (the only module that knows about bincode); [`RunDirFile`], the load, check and
//!   save that every file kind shares.
//! - [`atomic`]: write-to-temp, fsync, rename, fsync-directory.
//! - [`cli`]: the options every long-running process shares.
//! - [`rundir`]: the paths inside a run directory, its marker file, and single-writer locks.
//! - [`manifest`]: every image under DATADIR with a stable integer id.
//! - [`journal`]: the append-only annotation journal (O(1) durable work per annotation).
//! - [`annotations`]: the annotation state rebuilt from the journal (labels, undo stacks, counts).
//! - [`estimate`]: how many positives are left unlabelled, from the audit labels.
//! - [`ranking`]: the order the server hands images out in, and the default order.
//! - [`embeddings`]: the cache of backbone embeddings, one file per chunk of ids.
//! - [`predictions`]: the inferrer's probabilities per image.
//! - [`seeds`]: example images of the positive class given from outside the dataset.
//! - [`sketches`]: each embedded image in a few bytes, for "more like this".
//! - [`watch`]: notify events plus a polling fallback, coalescing bursts.
//! - [`inspect`]: any run-directory file rendered as JSON.
//! - [`image_limits`]: how large an image every binann decoder agrees to decode.

pub mod annotations;
pub mod api;
pub mod atomic;
pub mod cli;
pub mod codec;
pub mod embeddings;
pub mod estimate;
pub mod image_limits;
pub mod inspect;
pub mod journal;
pub mod manifest;
pub mod predictions;
pub mod ranking;
pub mod rundir;
pub mod seeds;
pub mod sketches;
pub mod watch;

pub use codec::{FileError, FileKind, Header, RunDirFile};

/// Milliseconds since the Unix epoch; the timestamp unit in every run-directory file.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
