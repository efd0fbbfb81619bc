//! Waiting for a run-directory file to change: `notify` events wake the wait at once, and a poll
//! of each file's (inode, size, mtime) catches what events miss, e.g. writes made by another
//! machine on a network disk. Polling alone can be forced for such disks.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use notify::Watcher as _;

/// How a [`FileWatcher`] notices changes.
#[derive(Debug, Clone, Copy)]
pub struct WatchOptions {
    /// How often files are checked even without an event.
    pub poll_interval: Duration,
    /// Use polling only (for network disks, where events from other machines never arrive).
    pub force_polling: bool,
    /// Quiet time after a change before reporting it, so a burst of writes wakes the reader once.
    pub debounce: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self { poll_interval: Duration::from_millis(1000), force_polling: false, debounce: Duration::from_millis(20) }
    }
}

/// What tells one version of a file from the next: its inode, size and modification time. Run
/// directory files are replaced by renaming a new file over them, so each version has its own
/// inode even where modification times are coarse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    ino: u64,
    len: u64,
    modified: Option<std::time::SystemTime>,
}

impl FileStamp {
    /// The stamp of the file at `path` now, None when it cannot be read (missing).
    pub fn of(path: &Path) -> Option<Self> {
        std::fs::metadata(path).ok().map(|m| Self::of_metadata(&m))
    }

    /// The stamp of a file from its metadata (of an open file: the one read, even if its path
    /// has been given to another file since).
    pub fn of_metadata(m: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        let ino = std::os::unix::fs::MetadataExt::ino(m);
        #[cfg(not(unix))]
        let ino = 0;
        Self { ino, len: m.len(), modified: m.modified().ok() }
    }

    /// The file's length in bytes.
    pub fn file_len(&self) -> u64 {
        self.len
    }
}

/// Watches a few files (which may not exist yet) for replacement or growth.
pub struct FileWatcher {
    paths: Vec<PathBuf>,
    seen: Vec<Option<FileStamp>>,
    events: mpsc::Receiver<()>,
    _watcher: Option<notify::RecommendedWatcher>,
    options: WatchOptions,
}

impl std::fmt::Debug for FileWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWatcher").field("paths", &self.paths).field("events", &self._watcher.is_some()).finish()
    }
}

impl FileWatcher {
    /// Starts watching `paths`. Their current state counts as seen: only later changes are reported.
    pub fn new(paths: Vec<PathBuf>, options: WatchOptions) -> Self {
        let (tx, events) = mpsc::channel();
        let mut watcher = None;
        if !options.force_polling {
            let dirs: std::collections::BTreeSet<PathBuf> = paths.iter().map(|p| crate::atomic::parent_dir(p).to_owned()).collect();
            let made = notify::recommended_watcher(move |_event: notify::Result<notify::Event>| {
                let _ = tx.send(());
            })
            .and_then(|mut w| {
                for dir in &dirs {
                    w.watch(dir, notify::RecursiveMode::NonRecursive)?;
                }
                Ok(w)
            });
            match made {
                Ok(w) => watcher = Some(w),
                Err(e) => tracing::warn!("file events unavailable ({e}); polling every {:?}", options.poll_interval),
            }
        }
        let seen = paths.iter().map(|p| FileStamp::of(p)).collect();
        Self { paths, seen, events, _watcher: watcher, options }
    }

    /// True when events are in use (false: polling only).
    pub fn uses_events(&self) -> bool {
        self._watcher.is_some()
    }

    /// Counts the files' current state as seen, as [`FileWatcher::new`] does, keeping the
    /// watcher: for a loop that watches before each turn's reads, so that a file replaced while
    /// the turn works wakes the next one. Starting a new watcher each turn cost the inferrer an
    /// inotify instance and a thread per batch of its embedding pass.
    pub fn rearm(&mut self) {
        while self.events.try_recv().is_ok() {}
        self.seen = self.paths.iter().map(|p| FileStamp::of(p)).collect();
    }

    /// Forgets what was seen, so the next [`wait`](Self::wait) reports every existing file.
    pub fn reset(&mut self) {
        self.seen.iter_mut().for_each(|s| *s = None);
    }

    /// Blocks until a watched file changed since the last report, or `timeout` passes. Returns the
    /// indices (into the watched paths) of the files that changed; empty on timeout.
    pub fn wait(&mut self, timeout: Duration) -> Vec<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            let changed = self.changed();
            if !changed.is_empty() {
                // Let a burst of writes settle, then report everything that changed in it.
                std::thread::sleep(self.options.debounce);
                while self.events.try_recv().is_ok() {}
                let mut all = changed;
                for i in self.changed() {
                    if !all.contains(&i) {
                        all.push(i);
                    }
                }
                return all;
            }
            let now = Instant::now();
            if now >= deadline {
                return Vec::new();
            }
            let slice = self.options.poll_interval.min(deadline - now);
            let _ = self.events.recv_timeout(slice);
        }
    }

    fn changed(&mut self) -> Vec<usize> {
        let mut out = Vec::new();
        for (i, path) in self.paths.iter().enumerate() {
            let now = FileStamp::of(path);
            if now != self.seen[i] {
                self.seen[i] = now;
                if now.is_some() {
                    out.push(i);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(force_polling: bool) {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("ranking.bin");
        let options = WatchOptions { poll_interval: Duration::from_millis(50), force_polling, debounce: Duration::from_millis(5) };
        let mut w = FileWatcher::new(vec![path.clone()], options);
        assert_eq!(w.uses_events(), !force_polling);
        assert!(w.wait(Duration::from_millis(100)).is_empty());
        let p = path.clone();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            crate::atomic::write_atomic(&p, b"one").unwrap();
        });
        assert_eq!(w.wait(Duration::from_secs(10)), vec![0]);
        writer.join().unwrap();
        // Same size, new inode: a replacement is still seen.
        crate::atomic::write_atomic(&path, b"two").unwrap();
        assert_eq!(w.wait(Duration::from_secs(10)), vec![0]);
        assert!(w.wait(Duration::from_millis(100)).is_empty());
    }

    #[test]
    fn rearming_counts_earlier_changes_as_seen_and_reports_later_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("checkpoint.bin");
        let options = WatchOptions { poll_interval: Duration::from_millis(50), force_polling: false, debounce: Duration::from_millis(5) };
        let mut w = FileWatcher::new(vec![path.clone()], options);
        crate::atomic::write_atomic(&path, b"one").unwrap();
        w.rearm();
        assert!(w.wait(Duration::from_millis(100)).is_empty(), "a change before rearming is seen");
        crate::atomic::write_atomic(&path, b"two").unwrap();
        assert_eq!(w.wait(Duration::from_secs(10)), vec![0]);
        crate::atomic::write_atomic(&path, b"three").unwrap();
        w.rearm();
        std::fs::remove_file(&path).unwrap();
        w.rearm();
        assert!(w.wait(Duration::from_millis(100)).is_empty(), "a missing file is not a change");
        crate::atomic::write_atomic(&path, b"four").unwrap();
        assert_eq!(w.wait(Duration::from_secs(10)), vec![0]);
    }

    #[test]
    fn notices_replacement_with_events() {
        check(false);
    }

    #[test]
    fn notices_replacement_by_polling() {
        check(true);
    }
}
