//! The server's shared state and the journal writer thread.
//!
//! An annotation is applied to the in-memory state and queued to the writer in one critical
//! section, so the journal's order is the order of application. The writer thread appends what is
//! queued in one batch, fsyncs once (group commit), and only then acknowledges each request. If the
//! disk refuses the batch, the writer rebuilds the state from the journal, so memory never holds an
//! annotation the disk does not; if the journal cannot be read back either, nothing more is
//! written until it can (a record numbered after the lost ones would leave a gap in the journal).
//!
//! The writer also keeps the journal's high-water mark ([`JournalMark`]) beside it, at most every
//! [`MARK_INTERVAL`], so that a journal later found cut short is reported instead of absorbed.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::{Duration, Instant};

use binann_core::RunDirFile;
use binann_core::annotations::{AnnotationState, JournalMark, Record};
use binann_core::codec::{FileError, FileKind};
use binann_core::journal::{self, JournalWriter};
use binann_core::manifest::Manifest;
use tokio::sync::oneshot;

use crate::error::ApiError;
use crate::handout::Handouts;

/// Everything behind the server's one lock.
#[derive(Debug)]
pub struct Inner {
    /// The dataset.
    pub manifest: Arc<Manifest>,
    /// Every annotation in force.
    pub annotations: AnnotationState,
    /// Who gets which image next.
    pub handouts: Handouts,
    /// Journal appends waiting for the writer thread.
    writes: mpsc::Sender<PendingWrite>,
    /// Batches the writer failed to save (each time, the state was rebuilt from the journal).
    pub failed_batches: u64,
    /// The journal could not be read back after a failed write: memory may hold records the
    /// disk does not, so nothing is written until a re-read succeeds ([`Inner::ready_to_write`]).
    journal_stale: bool,
    /// The journal file, re-read after a failed write.
    journal_path: PathBuf,
    /// What is wrong with the labels on disk (records lost to damage, a journal cut short): said
    /// in the log at start, in `/api/stats` and on the page, until the server restarts.
    pub journal_problems: Vec<String>,
    /// How much of the folder the AI has seen, ranking by ranking.
    pub coverage: crate::coverage::Coverage,
    /// The selector's sketches of the embedded images, for "more like this" (None until the
    /// selector has written them).
    pub sketches: Option<Arc<binann_core::sketches::Sketches>>,
    /// Seed images in the run directory (see [`binann_core::seeds`]).
    pub seed_images: u64,
    /// Positives (with the client that labelled them) whose look-alikes wait for the image's
    /// sketch: it was embedded after the selector last wrote the sketches. Oldest first, at most
    /// [`MAX_WAITING_FOR_SKETCH`].
    pub waiting_for_sketch: Vec<(String, u32)>,
}

/// The nearest images a positive is compared with to tell a new kind of positive: none of them
/// labelled positive.
pub const KIND_NEIGHBOURHOOD: usize = 32;

/// Positives kept waiting for their sketch; beyond this the oldest are dropped.
pub const MAX_WAITING_FOR_SKETCH: usize = 256;

/// How often, at most, the writer thread updates the journal's high-water mark.
pub const MARK_INTERVAL: Duration = Duration::from_secs(2);

/// Where the writer thread appends framed records: the journal file's [`JournalWriter`]; tests
/// put one that fails on demand in its place.
pub trait JournalSink: Send + 'static {
    /// Appends and makes durable, or fails and leaves the journal as it was.
    fn append_framed(&mut self, framed: &[u8]) -> Result<(), FileError>;
}

impl JournalSink for JournalWriter {
    fn append_framed(&mut self, framed: &[u8]) -> Result<(), FileError> {
        JournalWriter::append_framed(self, framed)
    }
}

/// The annotation journal as the server holds it.
pub struct Journal {
    /// Appends records.
    pub sink: Box<dyn JournalSink>,
    /// The journal file.
    pub path: PathBuf,
    /// Its high-water mark's file, and the mark's floor: the most records the journal is known to
    /// have held (a lost stretch is not forgotten by writing a lower mark over it).
    pub mark: Option<(PathBuf, u64)>,
}

struct PendingWrite {
    framed: Vec<u8>,
    done: oneshot::Sender<Result<(), String>>,
}

/// The state shared by all request handlers.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Mutex<Inner>>,
    /// The dataset folder images are read from.
    pub datadir: Arc<PathBuf>,
    /// Where seed images are kept (`RUNDIR/seeds`).
    pub seeds_dir: Arc<PathBuf>,
    /// Look-alikes put next after a positive of a new kind (`--lookalikes`; 0: none).
    pub lookalikes: usize,
}

impl AppState {
    /// Starts the writer thread over an opened journal.
    pub fn new(
        manifest: Manifest,
        datadir: PathBuf,
        journal: Journal,
        annotations: AnnotationState,
        handouts: Handouts,
        seeds_dir: PathBuf,
    ) -> Self {
        let (tx, rx) = mpsc::channel();
        let next_seq = annotations.next_seq();
        let inner = Arc::new(Mutex::new(Inner {
            manifest: Arc::new(manifest),
            annotations,
            handouts,
            writes: tx,
            failed_batches: 0,
            journal_stale: false,
            journal_path: journal.path.clone(),
            journal_problems: Vec::new(),
            coverage: Default::default(),
            sketches: None,
            seed_images: binann_core::seeds::list(&seeds_dir).len() as u64,
            waiting_for_sketch: Vec::new(),
        }));
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || writer_loop(journal, next_seq, rx, weak))
            .expect("spawning the journal writer thread");
        Self { inner, datadir: Arc::new(datadir), seeds_dir: Arc::new(seeds_dir), lookalikes: 0 }
    }

    /// Locks the state. A handler that panicked while holding the lock left nothing half-done
    /// that matters (the journal is the truth), so a poisoned lock is simply taken over.
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    /// Call before numbering a new record: fails while memory may hold records the journal does
    /// not (a failed write whose re-read failed too), after trying the re-read once more.
    pub fn ready_to_write(&mut self) -> Result<(), ApiError> {
        if !self.journal_stale {
            return Ok(());
        }
        match reload_annotations(&self.journal_path) {
            Ok(annotations) => {
                self.annotations = annotations;
                self.handouts.rescan();
                self.journal_stale = false;
                tracing::info!("the journal reads back again: writing resumes");
                Ok(())
            }
            Err(e) => Err(ApiError::StorageUnavailable(format!("the journal cannot be read back after a failed write: {e}"))),
        }
    }

    /// Applies `record` in memory and queues it for the journal; await the receiver before
    /// acknowledging. Must be called with `record.seq == annotations.next_seq()`.
    pub fn commit(&mut self, record: &Record) -> Result<oneshot::Receiver<Result<(), String>>, ApiError> {
        self.annotations.apply(record).map_err(|e| ApiError::Internal(e.to_string()))?;
        let (done, rx) = oneshot::channel();
        self.writes
            .send(PendingWrite { framed: journal::frame(record), done })
            .map_err(|_| ApiError::StorageUnavailable("the journal writer has stopped".into()))?;
        Ok(rx)
    }
}

impl Inner {
    /// Look-alikes of a positive whose nearest images (`candidates`, nearest first) are known:
    /// when none of the first [`KIND_NEIGHBOURHOOD`] is labelled positive, its first `count`
    /// unlabelled ones nobody else holds go next for `client` ([`Inner::put_nearest_first`]);
    /// returned.
    pub fn put_lookalikes_first(&mut self, client: &str, candidates: &[u32], count: usize) -> Vec<u32> {
        let positive = |c: &u32| self.annotations.get(*c).is_some_and(|e| e.label == binann_core::annotations::Label::Positive);
        if candidates.iter().take(KIND_NEIGHBOURHOOD).any(positive) {
            return Vec::new();
        }
        self.put_nearest_first(client, candidates, count)
    }

    /// The first `count` of `candidates` (an image's nearest, nearest first) that are not
    /// labelled or skipped and that no other client holds: put next for `client` and held for it
    /// ("more like this", look-alikes); returned.
    pub fn put_nearest_first(&mut self, client: &str, candidates: &[u32], count: usize) -> Vec<u32> {
        let picked: Vec<u32> = candidates
            .iter()
            .copied()
            .filter(|c| !self.annotations.is_done(*c) && !self.handouts.held_by_other(*c, client))
            .take(count)
            .collect();
        self.handouts.put_first(client, &picked);
        picked
    }

    /// Keeps positive `id` until the sketches hold it (see [`Inner::waiting_for_sketch`]).
    pub fn wait_for_sketch(&mut self, client: &str, id: u32) {
        if self.waiting_for_sketch.len() >= MAX_WAITING_FOR_SKETCH {
            self.waiting_for_sketch.remove(0);
        }
        self.waiting_for_sketch.push((client.to_owned(), id));
    }

    /// Queues nothing but an fsync behind everything already queued: when the receiver answers
    /// Ok, every record committed before this call is durable (or its own request has failed and
    /// the state was rebuilt from the journal; callers re-check what they rely on).
    pub fn barrier(&mut self) -> Result<oneshot::Receiver<Result<(), String>>, ApiError> {
        let (done, rx) = oneshot::channel();
        self.writes
            .send(PendingWrite { framed: Vec::new(), done })
            .map_err(|_| ApiError::StorageUnavailable("the journal writer has stopped".into()))?;
        Ok(rx)
    }
}

/// Waits for the journal writer to confirm a commit.
pub async fn durable(rx: oneshot::Receiver<Result<(), String>>) -> Result<(), ApiError> {
    match rx.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(ApiError::StorageUnavailable(e)),
        Err(_) => Err(ApiError::StorageUnavailable("the journal writer stopped before saving".into())),
    }
}

fn writer_loop(journal: Journal, mut next_seq: u64, rx: mpsc::Receiver<PendingWrite>, state: std::sync::Weak<Mutex<Inner>>) {
    let Journal { mut sink, path, mut mark } = journal;
    let mut mark_written = Instant::now();
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let bytes: Vec<u8> = batch.iter().flat_map(|w| w.framed.iter().copied()).collect();
        match sink.append_framed(&bytes) {
            Ok(()) => {
                next_seq += batch.iter().filter(|w| !w.framed.is_empty()).count() as u64;
                for w in batch {
                    let _ = w.done.send(Ok(()));
                }
                if let Some((file, floor)) = &mut mark
                    && next_seq > *floor
                    && mark_written.elapsed() >= MARK_INTERVAL
                {
                    // After the acknowledgements: the mark is a check, not part of a label's cost.
                    match (JournalMark { records: next_seq, written_ms: binann_core::now_ms() }).save(file, 1) {
                        Ok(()) => *floor = next_seq,
                        Err(e) => tracing::warn!("writing the journal's high-water mark: {e}"),
                    }
                    mark_written = Instant::now();
                }
            }
            Err(e) => {
                tracing::error!("annotation journal write failed, refusing this batch: {e}");
                let message = e.to_string();
                let Some(state) = state.upgrade() else { return };
                let mut inner = state.lock().unwrap_or_else(|p| p.into_inner());
                // Everything queued was applied in memory but is not on disk: fail it all and
                // rebuild memory from the journal, which the failed append left as it was.
                while let Ok(more) = rx.try_recv() {
                    batch.push(more);
                }
                inner.failed_batches += 1;
                match reload_annotations(&path) {
                    Ok(annotations) => {
                        next_seq = annotations.next_seq();
                        inner.annotations = annotations;
                    }
                    Err(reload) => {
                        tracing::error!("re-reading the journal after a failed write: {reload}; nothing more is written until it reads");
                        inner.journal_stale = true;
                    }
                }
                // The refused labels' images are unlabelled again: hand them out again.
                inner.handouts.rescan();
                for w in batch {
                    let _ = w.done.send(Err(message.clone()));
                }
                drop(inner);
                // Do not spin on a full disk.
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn reload_annotations(path: &std::path::Path) -> Result<AnnotationState, FileError> {
    let contents = journal::read_journal::<Record>(path, FileKind::Annotations)?;
    AnnotationState::replay(&contents.records).map_err(|e| FileError::decode(path, binann_core::codec::DecodeError::Payload(e.to_string())))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use binann_core::annotations::{Event, Label};

    use super::*;

    /// The journal's writer, failing every append while `fail` is set (a full or failing disk),
    /// and waiting for `gate` before each (a slow disk).
    struct Flaky {
        writer: JournalWriter,
        fail: Arc<AtomicBool>,
        gate: Arc<Mutex<()>>,
    }

    impl JournalSink for Flaky {
        fn append_framed(&mut self, framed: &[u8]) -> Result<(), FileError> {
            drop(self.gate.lock().unwrap());
            if self.fail.load(Ordering::SeqCst) {
                return Err(FileError::io(std::path::Path::new("journal"), std::io::Error::other("no space left on device")));
            }
            self.writer.append_framed(framed)
        }
    }

    struct Fixture {
        state: AppState,
        fail: Arc<AtomicBool>,
        gate: Arc<Mutex<()>>,
        path: PathBuf,
        _dir: tempfile::TempDir,
    }

    fn fixture(images: usize) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("annotations.journal");
        let opened = JournalWriter::open::<Record>(&path, FileKind::Annotations).unwrap();
        let fail = Arc::new(AtomicBool::new(false));
        let gate = Arc::new(Mutex::new(()));
        let manifest = Manifest { datadir: String::new(), paths: (0..images).map(|i| format!("{i}.png")).collect(), scanned_ms: 0 };
        let journal = Journal {
            sink: Box::new(Flaky { writer: opened.writer, fail: fail.clone(), gate: gate.clone() }),
            path: path.clone(),
            mark: None,
        };
        let handouts = Handouts::new(images, Duration::from_secs(60));
        let state = AppState::new(manifest, PathBuf::new(), journal, AnnotationState::default(), handouts, dir.path().join("seeds"));
        Fixture { state, fail, gate, path, _dir: dir }
    }

    /// Labels `id` negative as the annotate handler does; the writer's answer.
    fn label(state: &AppState, id: u32) -> Result<(), String> {
        queue_label(state, id)?.blocking_recv().expect("the writer answers")
    }

    /// Labels `id` negative as the annotate handler does, without waiting for the disk.
    fn queue_label(state: &AppState, id: u32) -> Result<oneshot::Receiver<Result<(), String>>, String> {
        let rx = {
            let mut inner = state.lock();
            inner.ready_to_write().map_err(|e| e.to_string())?;
            let record = Record {
                seq: inner.annotations.next_seq(),
                time_ms: 0,
                client: "tab".into(),
                annotator: String::new(),
                event: Event::Label { id, label: Label::Negative, prob: None },
                audit: None,
            };
            let rx = inner.commit(&record).map_err(|e| e.to_string())?;
            inner.handouts.labelled(id);
            rx
        };
        Ok(rx)
    }

    fn next(state: &AppState, client: &str, count: usize) -> Vec<u32> {
        let mut inner = state.lock();
        let Inner { handouts, annotations, .. } = &mut *inner;
        handouts.next(client, count, annotations, &[])
    }

    #[test]
    fn an_image_whose_label_was_refused_is_handed_out_again() {
        let f = fixture(8);
        let first = next(&f.state, "a", 1)[0];
        // While the label waits for a slow disk, another client asks: the hand-out position
        // moves past the image, which is labelled in memory.
        let slow = f.gate.lock().unwrap();
        let answer = queue_label(&f.state, first).unwrap();
        let others = next(&f.state, "b", 8);
        assert_eq!(others.len(), 7);
        f.fail.store(true, Ordering::SeqCst);
        drop(slow);
        assert!(answer.blocking_recv().unwrap().is_err(), "the disk refused the label");
        f.fail.store(false, Ordering::SeqCst);
        assert!(!f.state.lock().annotations.is_done(first));
        let again = next(&f.state, "c", 8);
        assert_eq!(again, vec![first], "the refused image is handed out again");
    }

    #[test]
    fn a_failed_write_that_cannot_be_read_back_writes_nothing_until_it_can() {
        let f = fixture(8);
        label(&f.state, 0).unwrap();
        let journal = std::fs::read(&f.path).unwrap();
        // The disk refuses the next write, and the journal cannot be read back either.
        f.fail.store(true, Ordering::SeqCst);
        std::fs::write(&f.path, b"not a journal").unwrap();
        assert!(label(&f.state, 1).is_err());
        f.fail.store(false, Ordering::SeqCst);
        let refused = label(&f.state, 2).expect_err("written while memory may hold what the disk does not");
        assert!(refused.contains("cannot be read back"), "{refused}");
        // Once the journal reads again, writing resumes, numbered after what is on disk.
        std::fs::write(&f.path, &journal).unwrap();
        label(&f.state, 3).unwrap();
        let contents = journal::read_journal::<Record>(&f.path, FileKind::Annotations).unwrap();
        let seqs: Vec<u64> = contents.records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![0, 1], "no gap in the journal");
        let replayed = AnnotationState::replay(&contents.records).unwrap();
        assert_eq!(replayed.lost_records(), 0);
        assert!(replayed.is_done(0) && replayed.is_done(3) && !replayed.is_done(1) && !replayed.is_done(2));
    }
}
