//! The cache of backbone embeddings: one file per chunk of [`CHUNK`] consecutive ids, so a
//! growing dataset only ever adds or rewrites one small file, and an interrupted run resumes.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::codec::{self, FileError, FileKind};

/// Images per chunk file.
pub const CHUNK: u32 = 4096;

/// Embeddings of ids `first_id .. first_id + count`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingChunk {
    /// First image id in the chunk.
    pub first_id: u32,
    /// Number of images in the chunk (CHUNK, or fewer for the last one).
    pub count: u32,
    /// Values per embedding.
    pub dim: u32,
    /// What produced them (backbone, input size, weights); a chunk from another model is ignored.
    pub model: String,
    /// `count * dim` little-endian f32 values; rows of failed images are zero.
    #[serde(with = "serde_bytes")]
    pub values: Vec<u8>,
    /// Images that could not be read, with the reason.
    pub failed: Vec<(u32, String)>,
}

impl EmbeddingChunk {
    /// The file of chunk `index` in `dir`.
    pub fn path(dir: &Path, index: u32) -> PathBuf {
        dir.join(format!("chunk-{index:06}.bin"))
    }
    /// Loads a chunk file.
    pub fn load(path: &Path) -> Result<Self, FileError> {
        codec::read_file(path, FileKind::Embeddings).map(|(_, c)| c)
    }
    /// Atomically writes a chunk file.
    pub fn save(&self, path: &Path) -> Result<(), FileError> {
        codec::write_file(path, FileKind::Embeddings, 1, self)
    }
    /// The embedding of image `id` (None when outside the chunk or failed).
    pub fn row(&self, id: u32) -> Option<Vec<f32>> {
        if id < self.first_id || id >= self.first_id + self.count || self.failed.iter().any(|(f, _)| *f == id) {
            return None;
        }
        let dim = self.dim as usize;
        let start = (id - self.first_id) as usize * dim * 4;
        let bytes = self.values.get(start..start + dim * 4)?;
        Some(bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect())
    }
    /// Packs f32 rows into the on-disk byte layout.
    pub fn pack(rows: &[f32]) -> Vec<u8> {
        rows.iter().flat_map(|v| v.to_le_bytes()).collect()
    }
}
