//! Seed images: examples of the positive class that the person already has, from outside the
//! dataset (`binann-server --seed-images DIR`, or files dropped on the page).
//!
//! With positives at 0.1–1 %, a random order needs hundreds of labels before the first positive,
//! and the model can rank nothing until it has one. A handful of examples given up front lets the
//! trainer learn from them together with the first negative labels, so the ranking leads with
//! images like them from the start.
//!
//! They live in `RUNDIR/seeds/`, one file each, named by a hash of their bytes: the same image
//! given twice (a restart with the same `--seed-images`, a second drop) is kept once, and no name
//! from a client ever reaches the disk. The server writes them (after checking that they are
//! images); the trainer reads them. They are never handed out for labelling and never count in
//! the statistics or the positives-left estimate, which are about the dataset.

use std::path::{Path, PathBuf};

use crate::manifest::is_image_name;

/// Largest seed image accepted, in bytes.
pub const MAX_SEED_BYTES: usize = 32 * 1024 * 1024;
/// Most seed images a run directory holds (they are examples, not a second dataset).
pub const MAX_SEEDS: usize = 1_000;

/// Why a seed image was not added.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Writing the seed image failed (disk full, read-only run directory...).
    #[error("saving a seed image: {0}")]
    Write(#[from] crate::codec::FileError),
    /// The image is larger than [`MAX_SEED_BYTES`].
    #[error("a seed image of {bytes} bytes is too large (at most {max} bytes)", max = MAX_SEED_BYTES)]
    TooLarge {
        /// Its size.
        bytes: usize,
    },
    /// The run directory already holds [`MAX_SEEDS`] seed images.
    #[error("there are already {max} seed images; they are examples to start from, not a dataset", max = MAX_SEEDS)]
    TooMany,
}

/// Saves a seed image's `bytes` in `dir` (created if missing) as `HASH.EXTENSION`, atomically.
/// Returns its path and whether it is new (false: the same bytes were given before).
///
/// The caller checks that `bytes` are an image of the format `extension` names.
pub fn add(dir: &Path, bytes: &[u8], extension: &str) -> Result<(PathBuf, bool), SeedError> {
    if bytes.len() > MAX_SEED_BYTES {
        return Err(SeedError::TooLarge { bytes: bytes.len() });
    }
    let path = dir.join(format!("{:016x}.{}", content_hash(bytes), extension.to_ascii_lowercase()));
    if path.exists() {
        return Ok((path, false));
    }
    if list(dir).len() >= MAX_SEEDS {
        return Err(SeedError::TooMany);
    }
    std::fs::create_dir_all(dir).map_err(|e| SeedError::Io { path: dir.to_owned(), source: e })?;
    crate::atomic::write_atomic(&path, bytes)?;
    Ok((path, true))
}

/// The seed images in `dir`, sorted by name (none when it does not exist). Temp files of a killed
/// writer are not listed.
pub fn list(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| e.file_name().to_str().is_some_and(|n| !n.starts_with('.') && is_image_name(n)))
        .map(|e| e.path())
        .collect();
    paths.sort();
    paths
}

/// FNV-1a, 64 bits: stable across Rust versions and machines (the standard library's hasher is
/// not), so a seed image keeps its name for good.
fn content_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_bytes_are_kept_once_and_different_ones_apart() {
        let dir = tempfile::tempdir().unwrap();
        let seeds = dir.path().join("seeds");
        assert!(list(&seeds).is_empty(), "a missing folder holds no seeds");
        let (a, new) = add(&seeds, b"first image", "PNG").unwrap();
        assert!(new);
        assert_eq!(a.extension().unwrap(), "png");
        let (again, new) = add(&seeds, b"first image", "png").unwrap();
        assert_eq!((again, new), (a.clone(), false));
        let (b, new) = add(&seeds, b"second image", "jpg").unwrap();
        assert!(new);
        assert_ne!(a, b);
        assert_eq!(std::fs::read(&a).unwrap(), b"first image");
        let mut want = vec![a, b];
        want.sort();
        assert_eq!(list(&seeds), want);
    }

    #[test]
    fn leftovers_and_other_files_are_not_seeds() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".x.png.binann-tmp"), b"half").unwrap();
        std::fs::write(dir.path().join(".hidden.png"), b"half").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"text").unwrap();
        std::fs::create_dir(dir.path().join("sub.png")).unwrap();
        assert!(list(dir.path()).is_empty());
    }

    #[test]
    fn too_large_is_refused_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let big = vec![0u8; MAX_SEED_BYTES + 1];
        assert!(matches!(add(dir.path(), &big, "png"), Err(SeedError::TooLarge { bytes }) if bytes == MAX_SEED_BYTES + 1));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn names_are_stable() {
        // A seed's name must not change between builds, or a restart would add it again.
        assert_eq!(content_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(content_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
