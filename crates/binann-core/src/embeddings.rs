//! The cache of backbone embeddings: one file per chunk of images, each file listing its ids.
//! Chunks are only ever added (in the order the images will be shown, so the first labels find
//! their embeddings ready), so a growing dataset adds files and an interrupted run resumes.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::codec::{self, FileKind};

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

impl codec::RunDirFile for EmbeddingChunk {
    const KIND: FileKind = FileKind::Embeddings;

    /// A chunk whose sizes disagree (values for a different number of rows or of another width
    /// than it says) is refused: reshaping it would abort the reader.
    fn validate(&self) -> Result<(), String> {
        let expected = (self.ids.len() as u64) * u64::from(self.dim) * 4;
        if self.values.len() as u64 != expected {
            return Err(format!(
                "{} ids of {} values need {expected} bytes of values, the chunk holds {}",
                self.ids.len(),
                self.dim,
                self.values.len()
            ));
        }
        Ok(())
    }
}

impl EmbeddingChunk {
    /// The file of chunk `index` of inferrer shard `shard` of `shards` in `dir`.
    pub fn path(dir: &Path, shard: u32, shards: u32, index: u32) -> PathBuf {
        dir.join(format!("chunk-{shard}-of-{shards}-{index:06}.bin"))
    }
    /// Every chunk file in `dir` (the names [`Self::path`] makes), sorted, with its modification
    /// time (None where the file system gives none): what a reader needs to reload only what
    /// changed.
    pub fn files(dir: &Path) -> Vec<(PathBuf, Option<std::time::SystemTime>)> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with("chunk-") && n.ends_with(".bin")))
            .map(|e| (e.path(), e.metadata().and_then(|m| m.modified()).ok()))
            .collect();
        files.sort();
        files
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{FileError, RunDirFile};

    #[test]
    fn a_chunk_whose_sizes_disagree_is_an_error_not_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let good =
            EmbeddingChunk { ids: vec![1, 2, 3], dim: 4, model: "m".into(), values: EmbeddingChunk::pack(&[0.5; 12]), failed: vec![] };
        let path = EmbeddingChunk::path(dir.path(), 0, 1, 0);
        good.save(&path, 1).unwrap();
        assert_eq!(EmbeddingChunk::load(&path).unwrap().1, good);
        // Checksummed and well-formed, but 10 values for 3 rows of 4.
        let short = EmbeddingChunk { values: EmbeddingChunk::pack(&[0.5; 10]), ..good.clone() };
        short.save(&path, 1).unwrap();
        let err = EmbeddingChunk::load(&path).unwrap_err();
        assert!(matches!(&err, FileError::Decode { source: codec::DecodeError::Payload(m), .. } if m.contains("48 bytes")), "{err}");
    }
}
