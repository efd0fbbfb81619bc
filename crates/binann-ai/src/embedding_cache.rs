//! The embedding cache as the trainer and the inferrer see it: every chunk file in
//! `RUNDIR/embeddings`, reloaded when it changes, indexed by image id.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use binann_core::RunDirFile;
use binann_core::embeddings::EmbeddingChunk;
use tch::Tensor;

/// One loaded chunk.
#[derive(Debug)]
pub struct LoadedChunk {
    /// Image ids, in row order.
    pub ids: Vec<u32>,
    /// The embeddings, `ids.len()` × dim, on the CPU.
    pub values: Tensor,
    /// Rows that failed (their values are meaningless).
    pub failed: Vec<u32>,
    modified: Option<SystemTime>,
}

/// Every embedding chunk of the run directory that matches the model in use.
#[derive(Debug)]
pub struct EmbeddingCache {
    dir: PathBuf,
    model_key: String,
    chunks: HashMap<PathBuf, LoadedChunk>,
    /// id → (chunk file, row).
    index: HashMap<u32, (PathBuf, usize)>,
}

impl EmbeddingCache {
    /// An empty store over `dir`; call [`refresh`](Self::refresh) to load.
    pub fn new(dir: &Path, model_key: &str) -> Self {
        Self { dir: dir.to_owned(), model_key: model_key.to_owned(), chunks: HashMap::new(), index: HashMap::new() }
    }

    /// Loads new or changed chunk files. Unreadable ones are reported and skipped (their images
    /// are embedded again); returns how many files were (re)loaded.
    pub fn refresh(&mut self) -> usize {
        let mut loaded = 0;
        for (path, modified) in EmbeddingChunk::files(&self.dir) {
            if self.chunks.get(&path).is_some_and(|c| c.modified == modified) {
                continue;
            }
            match EmbeddingChunk::load(&path).map(|(_, chunk)| chunk) {
                Ok(chunk) if chunk.model == self.model_key && chunk.dim as usize != binann_model::EMBED_DIM => tracing::error!(
                    "ignoring {}: its embeddings have {} values, the backbone makes {}; its images will be embedded again",
                    path.display(),
                    chunk.dim,
                    binann_model::EMBED_DIM
                ),
                Ok(chunk) if chunk.model == self.model_key => {
                    self.insert(path, chunk, modified);
                    loaded += 1;
                }
                Ok(chunk) => tracing::debug!("ignoring {} (made by {}, not {})", path.display(), chunk.model, self.model_key),
                Err(e) => tracing::error!("ignoring an unreadable embedding chunk; its images will be embedded again: {e}"),
            }
        }
        loaded
    }

    fn insert(&mut self, path: PathBuf, chunk: EmbeddingChunk, modified: Option<SystemTime>) {
        let dim = chunk.dim as i64;
        let values = Tensor::from_slice(&chunk.floats()).view([chunk.ids.len() as i64, dim]);
        let failed: Vec<u32> = chunk.failed.iter().map(|(id, _)| *id).collect();
        for (row, id) in chunk.ids.iter().enumerate() {
            if !failed.contains(id) {
                self.index.insert(*id, (path.clone(), row));
            }
        }
        self.chunks.insert(path, LoadedChunk { ids: chunk.ids, values, failed, modified });
    }

    /// Adds a chunk this process just wrote, without reading it back.
    pub fn add_written(&mut self, path: PathBuf, chunk: EmbeddingChunk) {
        let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        self.insert(path, chunk, modified);
    }

    /// True when image `id` has an embedding.
    pub fn contains(&self, id: u32) -> bool {
        self.index.contains_key(&id)
    }

    /// Ids that failed to embed in any chunk.
    pub fn failed(&self) -> impl Iterator<Item = u32> + '_ {
        self.chunks.values().flat_map(|c| c.failed.iter().copied())
    }

    /// The embedding of image `id`.
    pub fn get(&self, id: u32) -> Option<Tensor> {
        let (path, row) = self.index.get(&id)?;
        Some(self.chunks[path].values.get(*row as i64))
    }

    /// Every loaded chunk.
    pub fn chunks(&self) -> impl Iterator<Item = &LoadedChunk> {
        self.chunks.values()
    }

    /// Number of embedded images.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when nothing is embedded yet.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Number of chunk files loaded.
    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }
}
