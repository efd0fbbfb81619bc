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
use std::sync::Mutex;
use std::time::Duration;

use crate::manifest::is_image_name;

/// Largest seed image accepted, in bytes.
pub const MAX_SEED_BYTES: usize = 32 * 1024 * 1024;
/// Most seed images a run directory holds (they are examples, not a second dataset).
pub const MAX_SEEDS: usize = 1_000;
/// Most bytes the seed images of a run directory take together: the count alone would let
/// [`MAX_SEEDS`] files of [`MAX_SEED_BYTES`] fill 32 GB of the run directory's disk, which also
/// holds the journal. 256 MiB is a few hundred camera photos, or eight of the largest files.
pub const MAX_SEEDS_TOTAL_BYTES: u64 = 256 << 20;
/// Age past which a temp file in the seeds folder is a killed writer's leftover: a live write of
/// at most [`MAX_SEED_BYTES`] takes well under a second.
pub const STALE_TEMP_AGE: Duration = Duration::from_secs(60);

/// Held across [`add`]'s checks and its write, so that two seeds added at once cannot both pass
/// the count and byte checks for the last place. One process writes seeds (the server, which
/// holds the run directory's server lock), so a lock within the process suffices.
static ADDING: Mutex<()> = Mutex::new(());

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
    /// The seed images would take more than [`MAX_SEEDS_TOTAL_BYTES`] together.
    #[error(
        "the seed images take {} MiB, and this one ({} KiB) would take them past the {} MiB they may use together; \
         they are examples to start from, and smaller copies serve as well",
        .used >> 20, .adding.div_ceil(1024), MAX_SEEDS_TOTAL_BYTES >> 20
    )]
    FolderFull {
        /// Bytes the seed images take now.
        used: u64,
        /// Bytes of the one refused.
        adding: u64,
    },
}

/// The seed image holding exactly `bytes`, whatever its extension, if `dir` has one. A cheap check
/// before decoding: the same image given again needs no second look.
pub fn find(dir: &Path, bytes: &[u8]) -> Option<PathBuf> {
    let stem = format!("{:016x}", content_hash(bytes));
    list(dir).into_iter().find(|p| p.file_stem().is_some_and(|s| *s == *stem))
}

/// Saves a seed image's `bytes` in `dir` (created if missing) as `HASH.EXTENSION`, atomically.
/// Returns its path and whether it is new (false: the same bytes were given before).
///
/// The caller checks that `bytes` are an image of the format `extension` names. The count and
/// byte checks and the write happen under one lock: seeds added at once never go past
/// [`MAX_SEEDS`] or [`MAX_SEEDS_TOTAL_BYTES`].
pub fn add(dir: &Path, bytes: &[u8], extension: &str) -> Result<(PathBuf, bool), SeedError> {
    if bytes.len() > MAX_SEED_BYTES {
        return Err(SeedError::TooLarge { bytes: bytes.len() });
    }
    let path = dir.join(format!("{:016x}.{}", content_hash(bytes), extension.to_ascii_lowercase()));
    // A panic elsewhere while holding it leaves nothing half done that the lock guards.
    let _adding = ADDING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if path.exists() {
        return Ok((path, false));
    }
    let seeds = list(dir);
    if seeds.len() >= MAX_SEEDS {
        return Err(SeedError::TooMany);
    }
    let used: u64 = seeds.iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum();
    let adding = bytes.len() as u64;
    if used + adding > MAX_SEEDS_TOTAL_BYTES {
        return Err(SeedError::FolderFull { used, adding });
    }
    std::fs::create_dir_all(dir).map_err(|e| SeedError::Io { path: dir.to_owned(), source: e })?;
    crate::atomic::write_atomic(&path, bytes)?;
    Ok((path, true))
}

/// The seed images in `dir`, sorted by name (none when it does not exist). Temp files of a killed
/// writer are not listed, and those older than [`STALE_TEMP_AGE`] are removed: every process that
/// uses the seeds lists them, the server at its start among them, so a leftover does not stay.
pub fn list(dir: &Path) -> Vec<PathBuf> {
    crate::atomic::remove_stale_temps(dir, STALE_TEMP_AGE);
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
    fn a_seed_is_found_by_its_bytes_before_it_is_decoded() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(find(dir.path(), b"an image"), None);
        let (path, _) = add(dir.path(), b"an image", "webp").unwrap();
        assert_eq!(find(dir.path(), b"an image"), Some(path));
        assert_eq!(find(dir.path(), b"another image"), None);
    }

    #[test]
    fn past_the_folder_budget_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        // A sparse file: counts at its full length, takes no disk.
        let big = dir.path().join(format!("{:016x}.png", 1));
        std::fs::File::create(&big).unwrap().set_len(MAX_SEEDS_TOTAL_BYTES - 10).unwrap();
        let err = add(dir.path(), b"eleven byte", "png").unwrap_err();
        assert!(matches!(err, SeedError::FolderFull { used, adding: 11 } if used == MAX_SEEDS_TOTAL_BYTES - 10), "{err:?}");
        assert!(err.to_string().contains("256 MiB"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "nothing written, no temp file left");
        let (_, new) = add(dir.path(), b"ten bytes!", "png").unwrap();
        assert!(new, "exactly at the budget is allowed");
        assert_eq!(list(dir.path()).len(), 2);
    }

    #[test]
    fn seeds_added_at_once_never_go_past_the_count() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..MAX_SEEDS - 5 {
            std::fs::write(dir.path().join(format!("{i:016x}.png")), b"x").unwrap();
        }
        let start = std::sync::Barrier::new(16);
        let added = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..16u8)
                .map(|i| {
                    let (start, dir) = (&start, dir.path());
                    scope.spawn(move || {
                        start.wait();
                        add(dir, &[i; 64], "png")
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).filter(|r| r.is_ok()).count()
        });
        assert_eq!(added, 5);
        assert_eq!(list(dir.path()).len(), MAX_SEEDS);
    }

    #[test]
    fn a_killed_writers_temp_files_are_removed_when_listed() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join(format!(".{:016x}.png.abc123{}", 7, crate::atomic::TEMP_SUFFIX));
        let fresh = dir.path().join(format!(".{:016x}.png.def456{}", 8, crate::atomic::TEMP_SUFFIX));
        std::fs::write(&old, b"half an image").unwrap();
        std::fs::write(&fresh, b"being written").unwrap();
        let long_ago = std::time::SystemTime::now() - STALE_TEMP_AGE - Duration::from_secs(5);
        std::fs::File::options().write(true).open(&old).unwrap().set_modified(long_ago).unwrap();
        assert!(list(dir.path()).is_empty());
        assert!(!old.exists(), "a leftover older than a minute is removed");
        assert!(fresh.exists(), "a write that may still be under way is left alone");
    }

    #[test]
    fn names_are_stable() {
        // A seed's name must not change between builds, or a restart would add it again.
        assert_eq!(content_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(content_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
