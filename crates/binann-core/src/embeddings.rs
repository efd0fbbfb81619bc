//! The cache of backbone embeddings: one file per chunk of images, each file listing its ids.
//! Chunks are only ever added (in the order the images will be shown, so the first labels find
//! their embeddings ready), so a growing dataset adds files and an interrupted run resumes.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::codec::{self, FileError, FileKind};

/// Most images per chunk file.
pub const CHUNK: usize = 4096;

/// Embeddings of a set of images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingChunk {
    /// The images, in row order.
    pub ids: Vec<u32>,
    /// Values per embedding.
    pub dim: u32,
    /// What produced them (backbone, input size, weights); a chunk from another model is ignored.
    pub model: String,
    /// `ids.len() * dim` little-endian f32 values; rows of failed images are zero.
    #[serde(with = "serde_bytes")]
    pub values: Vec<u8>,
    /// Images that could not be read, with the reason.
    pub failed: Vec<(u32, String)>,
}

impl EmbeddingChunk {
    /// The file of chunk `index` of inferrer shard `shard` of `shards` in `dir`.
    pub fn path(dir: &Path, shard: u32, shards: u32, index: u32) -> PathBuf {
        dir.join(format!("chunk-{shard}-of-{shards}-{index:06}.bin"))
    }
    /// Loads a chunk file.
    pub fn load(path: &Path) -> Result<Self, FileError> {
        codec::read_file(path, FileKind::Embeddings).map(|(_, c)| c)
    }
    /// Atomically writes a chunk file.
    pub fn save(&self, path: &Path) -> Result<(), FileError> {
        codec::write_file(path, FileKind::Embeddings, 1, self)
    }
    /// All values as f32 (row-major, `ids.len()` rows of `dim`).
    pub fn floats(&self) -> Vec<f32> {
        self.values.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect()
    }
    /// Packs f32 rows into the on-disk byte layout.
    pub fn pack(rows: &[f32]) -> Vec<u8> {
        rows.iter().flat_map(|v| v.to_le_bytes()).collect()
    }
}
