//! The server's shared state and the journal writer thread.
//!
//! An annotation is applied to the in-memory state and queued to the writer in one critical
//! section, so the journal's order is the order of application. The writer thread appends what is
//! queued in one batch, fsyncs once (group commit), and only then acknowledges each request. If the
//! disk refuses the batch, the writer rebuilds the state from the journal, so memory never holds an
//! annotation the disk does not.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::Duration;

use binann_core::annotations::{AnnotationState, Record};
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
        writer: JournalWriter,
        annotations: AnnotationState,
        handouts: Handouts,
        journal_path: PathBuf,
        seeds_dir: PathBuf,
    ) -> Self {
        let (tx, rx) = mpsc::channel();
        let inner = Arc::new(Mutex::new(Inner {
            manifest: Arc::new(manifest),
            annotations,
            handouts,
            writes: tx,
            failed_batches: 0,
            coverage: Default::default(),
            sketches: None,
            seed_images: binann_core::seeds::list(&seeds_dir).len() as u64,
            waiting_for_sketch: Vec::new(),
        }));
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || writer_loop(writer, rx, weak, journal_path))
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

fn writer_loop(mut writer: JournalWriter, rx: mpsc::Receiver<PendingWrite>, state: std::sync::Weak<Mutex<Inner>>, path: PathBuf) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let bytes: Vec<u8> = batch.iter().flat_map(|w| w.framed.iter().copied()).collect();
        match writer.append_framed(&bytes) {
            Ok(()) => {
                for w in batch {
                    let _ = w.done.send(Ok(()));
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
                    Ok(annotations) => inner.annotations = annotations,
                    Err(reload) => tracing::error!("re-reading the journal after a failed write: {reload}"),
                }
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
