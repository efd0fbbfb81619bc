//! The embedding cache as the inferrer and the trainer see it: the chunk files in
//! `RUNDIR/embeddings`, reloaded when they change, indexed by image id.
//!
//! - [`EmbeddingCache`] holds every embedding (the inferrer predicts every image).
//! - [`EmbeddingIndex`] knows only where each one is, and reads the rows asked for (the trainer
//!   needs the labelled images' alone: holding a million images' embeddings, 7.7 GB, in the trainer
//!   too would double the AI's memory).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use binann_core::RunDirFile;
use binann_core::embeddings::EmbeddingChunk;
use binann_core::watch::FileStamp;
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
            if let Some(chunk) = load_matching(&path, &self.model_key) {
                self.insert(path, chunk, modified);
                loaded += 1;
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

/// The chunk file at `path` if it holds embeddings of `model_key` that this build can use; an
/// unusable one is reported (its images are embedded again).
fn load_matching(path: &Path, model_key: &str) -> Option<EmbeddingChunk> {
    match EmbeddingChunk::load(path).map(|(_, chunk)| chunk) {
        Ok(chunk) if chunk.model == model_key && chunk.dim as usize != binann_model::EMBED_DIM => {
            tracing::error!(
                "ignoring {}: its embeddings have {} values, the backbone makes {}; its images will be embedded again",
                path.display(),
                chunk.dim,
                binann_model::EMBED_DIM
            );
            None
        }
        Ok(chunk) if chunk.model == model_key => Some(chunk),
        Ok(chunk) => {
            tracing::debug!("ignoring {} (made by {}, not {})", path.display(), chunk.model, model_key);
            None
        }
        Err(e) => {
            tracing::error!("ignoring an unreadable embedding chunk; its images will be embedded again: {e}");
            None
        }
    }
}

/// Which chunk file holds each embedded image, and at which row, without the values:
/// [`Self::read_rows`] reads the rows asked for straight from the files.
#[derive(Debug)]
pub struct EmbeddingIndex {
    dir: PathBuf,
    model_key: String,
    files: Vec<IndexedFile>,
    /// id → (index into `files`, row).
    row_of: HashMap<u32, (u32, u32)>,
}

/// A chunk file as it was when indexed.
#[derive(Debug)]
struct IndexedFile {
    path: PathBuf,
    stamp: Option<FileStamp>,
    /// Where its values start in the file, and values per row.
    values_at: u64,
    dim: usize,
}

impl EmbeddingIndex {
    /// An empty index over `dir`; call [`refresh`](Self::refresh) to read it.
    pub fn new(dir: &Path, model_key: &str) -> Self {
        Self { dir: dir.to_owned(), model_key: model_key.to_owned(), files: Vec::new(), row_of: HashMap::new() }
    }

    /// Indexes new or changed chunk files, reading each whole once (which checks its checksum).
    pub fn refresh(&mut self) {
        for (path, _) in EmbeddingChunk::files(&self.dir) {
            let stamp = FileStamp::of(&path);
            let known = self.files.iter().position(|f| f.path == path);
            if known.is_some_and(|i| self.files[i].stamp == stamp) {
                continue;
            }
            let Some(chunk) = load_matching(&path, &self.model_key) else { continue };
            let Some(len) = std::fs::metadata(&path).ok().map(|m| m.len()) else { continue };
            // The values are the chunk's last field but one: the file ends with them and then
            // the encoded list of failed images.
            let failed_len = binann_core::codec::encode_value(&chunk.failed).len() as u64;
            let Some(values_at) = len.checked_sub(failed_len + chunk.values.len() as u64) else { continue };
            let indexed = IndexedFile { path: path.clone(), stamp, values_at, dim: chunk.dim as usize };
            let file = match known {
                Some(i) => {
                    self.files[i] = indexed;
                    i
                }
                None => {
                    self.files.push(indexed);
                    self.files.len() - 1
                }
            };
            for (row, id) in chunk.ids.iter().enumerate() {
                if !chunk.failed.iter().any(|(f, _)| f == id) {
                    self.row_of.insert(*id, (file as u32, row as u32));
                }
            }
        }
    }

    /// True when image `id` has an embedding.
    pub fn contains(&self, id: u32) -> bool {
        self.row_of.contains_key(&id)
    }

    /// Reads the embeddings of those of `ids` that are indexed, a row at a time from their chunk
    /// files, handing each to `row`. A file changed since it was indexed is skipped (the next
    /// [`Self::refresh`] indexes it again).
    pub fn read_rows(&self, ids: &[u32], mut row: impl FnMut(u32, &[f32])) {
        use std::io::{Read, Seek, SeekFrom};
        let mut by_file: HashMap<u32, Vec<(u32, u32)>> = HashMap::new();
        for id in ids {
            if let Some((file, r)) = self.row_of.get(id) {
                by_file.entry(*file).or_default().push((*id, *r));
            }
        }
        let mut bytes = Vec::new();
        let mut values = Vec::new();
        for (file, wanted) in by_file {
            let indexed = &self.files[file as usize];
            let Ok(mut f) = std::fs::File::open(&indexed.path) else { continue };
            if FileStamp::of(&indexed.path) != indexed.stamp {
                continue;
            }
            bytes.resize(indexed.dim * 4, 0);
            for (id, r) in wanted {
                let at = indexed.values_at + (r as u64) * (indexed.dim as u64) * 4;
                if f.seek(SeekFrom::Start(at)).and_then(|_| f.read_exact(&mut bytes)).is_err() {
                    break;
                }
                values.clear();
                values.extend(bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))));
                row(id, &values);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use binann_core::RunDirFile;

    use super::*;

    fn chunk(ids: &[u32], model: &str, failed: &[u32]) -> EmbeddingChunk {
        let dim = binann_model::EMBED_DIM;
        let values: Vec<f32> = ids.iter().flat_map(|id| (0..dim).map(move |d| *id as f32 + d as f32 / 10_000.0)).collect();
        EmbeddingChunk {
            ids: ids.to_vec(),
            dim: dim as u32,
            model: model.into(),
            values: EmbeddingChunk::pack(&values),
            failed: failed.iter().map(|id| (*id, "unreadable".to_owned())).collect(),
        }
    }

    #[test]
    fn the_index_reads_the_rows_asked_for_as_the_cache_holds_them() {
        let dir = tempfile::tempdir().unwrap();
        chunk(&[0, 1, 2, 3], "m", &[2]).save(&EmbeddingChunk::path(dir.path(), 0, 1, 0), 1).unwrap();
        chunk(&[10, 11], "m", &[]).save(&EmbeddingChunk::path(dir.path(), 0, 1, 1), 1).unwrap();
        chunk(&[20], "another model", &[]).save(&EmbeddingChunk::path(dir.path(), 0, 1, 2), 1).unwrap();
        let mut cache = EmbeddingCache::new(dir.path(), "m");
        cache.refresh();
        let mut index = EmbeddingIndex::new(dir.path(), "m");
        index.refresh();
        for id in [0, 1, 2, 3, 10, 11, 20, 99] {
            assert_eq!(index.contains(id), cache.contains(id), "image {id}");
        }
        let mut rows = HashMap::new();
        index.read_rows(&[1, 2, 11, 20, 99], |id, values| {
            rows.insert(id, Tensor::from_slice(values));
        });
        let mut found: Vec<u32> = rows.keys().copied().collect();
        found.sort_unstable();
        assert_eq!(found, [1, 11], "failed, other models' and unknown images have no row");
        for (id, row) in &rows {
            assert!(row.equal(&cache.get(*id).unwrap()), "image {id}");
        }
        // A chunk written later is indexed by the next refresh.
        chunk(&[30], "m", &[]).save(&EmbeddingChunk::path(dir.path(), 0, 1, 3), 1).unwrap();
        assert!(!index.contains(30));
        index.refresh();
        let mut read = Vec::new();
        index.read_rows(&[30], |id, values| read.push((id, values.to_vec())));
        assert_eq!(read, [(30, chunk(&[30], "m", &[]).floats())]);
    }
}
