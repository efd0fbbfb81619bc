//! The paths inside a run directory, the marker that makes a directory one, and the single-writer
//! locks that stop two processes (say, two trainers started by mistake) from writing the same file.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// File name of the marker that says "this directory is a binann run directory".
pub const MARKER: &str = "BINANN-RUNDIR";

/// Age after which a temp file in the run directory is a leftover of a killed writer.
pub const STALE_TEMP_SECS: u64 = 120;

/// A run directory: where all binann processes exchange their files.
#[derive(Debug, Clone)]
pub struct RunDir {
    root: PathBuf,
}

/// Why a run directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    /// I/O on the directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The directory exists, holds files, and has no marker.
    #[error("{0} is not a binann run directory (no {marker} file) and is not empty; refusing to use it", marker = MARKER)]
    NotARunDir(PathBuf),
    /// Another process holds the writer lock.
    #[error("another {role} is already running on {rundir} ({holder}); stop it first, two writers would corrupt the run")]
    Locked {
        /// Which role's lock.
        role: String,
        /// The run directory.
        rundir: PathBuf,
        /// What the lock file says about its holder.
        holder: String,
    },
}

impl RunDir {
    /// Opens an existing run directory, or creates one (with its marker) when the path is missing
    /// or empty. Refuses a non-empty directory without a marker.
    pub fn create_or_open(root: &Path) -> Result<Self, RunDirError> {
        let io = |e| RunDirError::Io { path: root.to_owned(), source: e };
        std::fs::create_dir_all(root).map_err(io)?;
        let marker = root.join(MARKER);
        if !marker.exists() {
            // Processes started together race to create the marker: what they make meanwhile
            // (the marker itself, appearing after this process looked for it; its temp file; locks;
            // the embeddings folder) does not make a folder foreign.
            let foreign = std::fs::read_dir(root).map_err(io)?.flatten().any(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                !(name == MARKER || name.starts_with(&format!(".{MARKER}.")) || name.ends_with(".lock") || name == "embeddings")
            });
            if foreign {
                return Err(RunDirError::NotARunDir(root.to_owned()));
            }
            let text = format!("binann run directory, format {}\n", crate::codec::FORMAT_VERSION);
            crate::atomic::write_atomic(&marker, text.as_bytes())
                .map_err(|e| RunDirError::Io { path: marker.clone(), source: std::io::Error::other(e.to_string()) })?;
        }
        std::fs::create_dir_all(root.join("embeddings")).map_err(io)?;
        // Leftovers of writers killed mid-write; the age guard spares a write in progress.
        let stale = std::time::Duration::from_secs(STALE_TEMP_SECS);
        let removed = crate::atomic::remove_stale_temps(root, stale) + crate::atomic::remove_stale_temps(&root.join("embeddings"), stale);
        if removed > 0 {
            tracing::info!("removed {removed} temp files left by interrupted writes in {}", root.display());
        }
        Ok(Self { root: root.to_owned() })
    }

    /// Opens a run directory without creating anything (for readers such as `inspect`).
    pub fn open_existing(root: &Path) -> Self {
        Self { root: root.to_owned() }
    }

    /// True when `path` is a directory carrying the run-directory marker.
    pub fn is_run_dir(path: &Path) -> bool {
        path.join(MARKER).is_file()
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// The dataset manifest.
    pub fn manifest(&self) -> PathBuf {
        self.root.join("manifest.bin")
    }
    /// The append-only annotation journal.
    pub fn annotations(&self) -> PathBuf {
        self.root.join("annotations.journal")
    }
    /// How many records the journal has held (see [`crate::annotations::JournalMark`]).
    pub fn journal_mark(&self) -> PathBuf {
        self.root.join("annotations.mark")
    }
    /// The ranking the server hands images out from.
    pub fn ranking(&self) -> PathBuf {
        self.root.join("ranking.bin")
    }
    /// The sketches of the embedded images (written by the selector, read by the server).
    pub fn sketches(&self) -> PathBuf {
        self.root.join("sketches.bin")
    }
    /// The predictions of one inferrer shard (`shard` 0 of 1 when not sharded).
    pub fn predictions(&self, shard: u32, shards: u32) -> PathBuf {
        if shards <= 1 { self.root.join("predictions.bin") } else { self.root.join(format!("predictions-{shard}-of-{shards}.bin")) }
    }
    /// The trainer's checkpoint.
    pub fn checkpoint(&self) -> PathBuf {
        self.root.join("checkpoint.safetensors")
    }
    /// The cached backbone embeddings, one file per chunk of ids.
    pub fn embeddings_dir(&self) -> PathBuf {
        self.root.join("embeddings")
    }
    /// Example images of the positive class that are not in the dataset (`--seed-images`, or
    /// dropped on the page), one file each, named by content; see [`crate::seeds`].
    pub fn seeds_dir(&self) -> PathBuf {
        self.root.join("seeds")
    }
    /// TensorBoard logs.
    pub fn tensorboard_dir(&self) -> PathBuf {
        self.root.join("runs")
    }

    /// Takes the exclusive writer lock for `role` (e.g. "server", "trainer"), held until the
    /// returned file is dropped. The OS releases it when the process dies, even on `kill -9`.
    pub fn lock(&self, role: &str) -> Result<File, RunDirError> {
        let path = self.root.join(format!("{role}.lock"));
        let io = |e| RunDirError::Io { path: path.clone(), source: e };
        let mut file = std::fs::OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&path).map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default().trim().to_owned();
                return Err(RunDirError::Locked { role: role.to_owned(), rundir: self.root.clone(), holder });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        file.set_len(0).map_err(io)?;
        writeln!(file, "pid {} on {}", std::process::id(), host.trim()).map_err(io)?;
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_foreign_dir_and_second_writer() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("precious.txt"), "x").unwrap();
        assert!(matches!(RunDir::create_or_open(tmp.path()), Err(RunDirError::NotARunDir(_))));

        let run = tmp.path().join("run");
        let rd = RunDir::create_or_open(&run).unwrap();
        assert!(RunDir::is_run_dir(&run));
        let _held = rd.lock("trainer").unwrap();
        let err = rd.lock("trainer").unwrap_err();
        assert!(err.to_string().contains("another trainer"), "{err}");
        drop(_held);
        rd.lock("trainer").unwrap();
    }

    #[test]
    fn processes_started_together_all_open_a_new_run_directory() {
        let tmp = tempfile::tempdir().unwrap();
        for round in 0..50 {
            let run = tmp.path().join(format!("run{round}"));
            std::fs::create_dir(&run).unwrap();
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..8).map(|_| s.spawn(|| RunDir::create_or_open(&run).map(|_| ()))).collect();
                for h in handles {
                    h.join().unwrap().unwrap();
                }
            });
            assert!(RunDir::is_run_dir(&run));
        }
    }

    #[test]
    fn stale_temp_files_are_cleaned_up_fresh_ones_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("run");
        RunDir::create_or_open(&run).unwrap();
        let old = run.join(format!(".ranking.bin.abc{}", crate::atomic::TEMP_SUFFIX));
        let fresh = run.join(format!(".predictions.bin.def{}", crate::atomic::TEMP_SUFFIX));
        let old_chunk = run.join("embeddings").join(format!(".chunk.x{}", crate::atomic::TEMP_SUFFIX));
        for p in [&old, &fresh, &old_chunk] {
            std::fs::write(p, b"half a file").unwrap();
        }
        let past = std::time::SystemTime::now() - std::time::Duration::from_secs(STALE_TEMP_SECS + 10);
        for p in [&old, &old_chunk] {
            std::fs::File::options().write(true).open(p).unwrap().set_modified(past).unwrap();
        }
        RunDir::create_or_open(&run).unwrap();
        assert!(!old.exists() && !old_chunk.exists());
        assert!(fresh.exists(), "a write in progress must not be removed");
    }
}
