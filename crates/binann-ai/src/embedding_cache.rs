//! The embedding cache as the inferrer and the trainer see it: the chunk files in
//! `RUNDIR/embeddings`, indexed by image id, their values read from the files when needed.
//!
//! Neither process holds the embeddings: at 1,920 float32 values an image, a million images take
//! 7.7 GB, and holding them made the inferrer's memory grow with the folder. A prediction pass
//! reads each chunk's values (the operating system's page cache keeps the files, shared by both
//! processes and given back under memory pressure); the trainer reads the labelled images' rows.
//!
//! - [`EmbeddingIndex`]: which chunk file holds each embedded image, and at which row.
//! - [`IndexedChunk`]: one chunk file as indexed, and the reads of its values.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use binann_core::RunDirFile;
use binann_core::embeddings::EmbeddingChunk;
use binann_core::watch::FileStamp;
use tch::{Kind, Tensor};

/// One chunk file as it was when indexed: its images and where its values lie. Cheap to clone
/// (a prediction pass takes a copy of the list).
#[derive(Debug, Clone)]
pub struct IndexedChunk {
    path: PathBuf,
    stamp: Option<FileStamp>,
    /// Where the values start in the file, and values per row.
    values_at: u64,
    dim: usize,
    /// The images, in row order.
    pub ids: Arc<[u32]>,
    /// Images of this chunk that could not be read: their rows are meaningless.
    pub failed: Arc<[u32]>,
}

impl IndexedChunk {
    /// Indexes `chunk`, the content of the file at `path` when it had `stamp`; None when the file
    /// is gone or has been replaced since (its values would be another file's).
    fn new(path: &Path, chunk: &EmbeddingChunk, stamp: Option<FileStamp>) -> Option<Self> {
        let stamp = stamp.filter(|s| FileStamp::of(path) == Some(*s))?;
        // The values are the chunk's last field but one: the file ends with them and then the
        // encoded list of failed images.
        let failed_len = binann_core::codec::encode_value(&chunk.failed).len() as u64;
        let values_at = stamp.file_len().checked_sub(failed_len + chunk.values.len() as u64)?;
        Some(Self {
            path: path.to_owned(),
            stamp: Some(stamp),
            values_at,
            dim: chunk.dim as usize,
            ids: chunk.ids.as_slice().into(),
            failed: chunk.failed.iter().map(|(id, _)| *id).collect(),
        })
    }

    /// The file, opened, if it is still the one indexed (a replaced file may hold other rows).
    fn open(&self) -> anyhow::Result<File> {
        let file = File::open(&self.path).with_context(|| format!("opening {}", self.path.display()))?;
        let now = file.metadata().ok().map(|m| FileStamp::of_metadata(&m));
        anyhow::ensure!(now == self.stamp, "{} changed since it was read", self.path.display());
        Ok(file)
    }

    /// Every row, `ids.len()` × dim.
    pub fn read_all(&self) -> anyhow::Result<Tensor> {
        let mut file = self.open()?;
        let mut bytes = vec![0u8; self.ids.len() * self.dim * 4];
        file.seek(SeekFrom::Start(self.values_at))
            .and_then(|_| file.read_exact(&mut bytes))
            .with_context(|| format!("reading {}", self.path.display()))?;
        Ok(self.tensor(&bytes, self.ids.len()))
    }

    /// The rows at `rows`, in that order, `rows.len()` × dim.
    pub fn read_rows(&self, rows: &[usize]) -> anyhow::Result<Tensor> {
        let mut file = self.open()?;
        let row_len = self.dim * 4;
        let mut bytes = vec![0u8; rows.len() * row_len];
        for (row, out) in rows.iter().zip(bytes.chunks_exact_mut(row_len)) {
            anyhow::ensure!(*row < self.ids.len(), "{} has no row {row}", self.path.display());
            file.seek(SeekFrom::Start(self.values_at + (*row * row_len) as u64))
                .and_then(|_| file.read_exact(out))
                .with_context(|| format!("reading {}", self.path.display()))?;
        }
        Ok(self.tensor(&bytes, rows.len()))
    }

    /// `rows` rows of little-endian float32 values as a tensor.
    fn tensor(&self, bytes: &[u8], rows: usize) -> Tensor {
        if cfg!(target_endian = "little") {
            Tensor::from_data_size(bytes, &[rows as i64, self.dim as i64], Kind::Float)
        } else {
            let floats: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect();
            Tensor::from_slice(&floats).view([rows as i64, self.dim as i64])
        }
    }
}

/// Which chunk file holds each embedded image, and at which row, without the values: they are
/// read from the files when needed ([`IndexedChunk::read_all`], [`Self::read_rows`]).
#[derive(Debug)]
pub struct EmbeddingIndex {
    dir: PathBuf,
    model_key: String,
    files: Vec<IndexedChunk>,
    /// id → (index into `files`, row), [`NOT_INDEXED`] where none. Ids are dense (the
    /// manifest's), so a list: a map of a million images took 27 MB in each process, this 8 MB.
    row_of: Vec<(u32, u32)>,
    /// Images indexed.
    indexed: usize,
}

/// [`EmbeddingIndex::row_of`]'s entry for an image with no embedding.
const NOT_INDEXED: (u32, u32) = (u32::MAX, u32::MAX);

impl EmbeddingIndex {
    /// An empty index over `dir`; call [`refresh`](Self::refresh) to read it.
    pub fn new(dir: &Path, model_key: &str) -> Self {
        Self { dir: dir.to_owned(), model_key: model_key.to_owned(), files: Vec::new(), row_of: Vec::new(), indexed: 0 }
    }

    /// Indexes new or changed chunk files, reading each whole once (which checks its checksum).
    /// Unreadable ones, and those of another model, are reported and skipped (the inferrer embeds
    /// their images again). Returns how many files were indexed.
    pub fn refresh(&mut self) -> usize {
        let mut indexed = 0;
        for (path, _) in EmbeddingChunk::files(&self.dir) {
            let stamp = FileStamp::of(&path);
            if self.files.iter().any(|f| f.path == path && f.stamp == stamp) {
                continue;
            }
            if let Some(chunk) = load_matching(&path, &self.model_key) {
                indexed += usize::from(self.insert(&path, &chunk, stamp));
            }
        }
        indexed
    }

    /// Indexes a chunk this process just wrote, without reading it back.
    pub fn add_written(&mut self, path: &Path, chunk: &EmbeddingChunk) {
        if !self.insert(path, chunk, FileStamp::of(path)) {
            tracing::error!("{} could not be indexed after it was written; its images will be embedded again", path.display());
        }
    }

    /// Indexes `chunk`, the content of the file at `path` when it had `stamp`; false when the
    /// file is gone or was replaced since.
    fn insert(&mut self, path: &Path, chunk: &EmbeddingChunk, stamp: Option<FileStamp>) -> bool {
        let Some(indexed) = IndexedChunk::new(path, chunk, stamp) else { return false };
        let file = match self.files.iter().position(|f| f.path == path) {
            Some(i) => {
                self.files[i] = indexed;
                i
            }
            None => {
                self.files.push(indexed);
                self.files.len() - 1
            }
        };
        let indexed = &self.files[file];
        for (row, id) in indexed.ids.iter().enumerate() {
            if !indexed.failed.contains(id) {
                let id = *id as usize;
                if self.row_of.len() <= id {
                    self.row_of.resize(id + 1, NOT_INDEXED);
                }
                self.indexed += usize::from(self.row_of[id] == NOT_INDEXED);
                self.row_of[id] = (file as u32, row as u32);
            }
        }
        true
    }

    /// True when image `id` has an embedding.
    pub fn contains(&self, id: u32) -> bool {
        self.row(id).is_some()
    }

    /// Where image `id`'s embedding is: (index into the chunk files, row).
    fn row(&self, id: u32) -> Option<(u32, u32)> {
        self.row_of.get(id as usize).copied().filter(|r| *r != NOT_INDEXED)
    }

    /// Number of embedded images.
    pub fn len(&self) -> usize {
        self.indexed
    }

    /// True when nothing is embedded yet.
    pub fn is_empty(&self) -> bool {
        self.indexed == 0
    }

    /// Ids that failed to embed in any chunk.
    pub fn failed(&self) -> impl Iterator<Item = u32> + '_ {
        self.files.iter().flat_map(|c| c.failed.iter().copied())
    }

    /// Every indexed chunk file.
    pub fn chunks(&self) -> &[IndexedChunk] {
        &self.files
    }

    /// Reads the embeddings of those of `ids` that are indexed from their chunk files, handing
    /// each to `row`. A file changed since it was indexed is skipped (the next
    /// [`Self::refresh`] indexes it again).
    pub fn read_rows(&self, ids: &[u32], mut row: impl FnMut(u32, &[f32])) {
        let mut by_file: HashMap<u32, (Vec<u32>, Vec<usize>)> = HashMap::new();
        for id in ids {
            if let Some((file, r)) = self.row(*id) {
                let (ids, rows) = by_file.entry(file).or_default();
                ids.push(*id);
                rows.push(r as usize);
            }
        }
        for (file, (ids, rows)) in by_file {
            match self.files[file as usize].read_rows(&rows).and_then(|t| Ok(Vec::<f32>::try_from(t.flatten(0, -1))?)) {
                Ok(values) => {
                    let dim = values.len() / ids.len();
                    for (id, values) in ids.iter().zip(values.chunks_exact(dim)) {
                        row(*id, values);
                    }
                }
                Err(e) => tracing::warn!("skipping embeddings until the next refresh: {e:#}"),
            }
        }
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
    fn the_index_reads_the_rows_asked_for_from_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let dim = binann_model::EMBED_DIM;
        chunk(&[0, 1, 2, 3], "m", &[2]).save(&EmbeddingChunk::path(dir.path(), 0, 1, 0), 1).unwrap();
        chunk(&[10, 11], "m", &[]).save(&EmbeddingChunk::path(dir.path(), 0, 1, 1), 1).unwrap();
        chunk(&[20], "another model", &[]).save(&EmbeddingChunk::path(dir.path(), 0, 1, 2), 1).unwrap();
        std::fs::write(EmbeddingChunk::path(dir.path(), 0, 1, 3), b"not a chunk").unwrap();
        let mut index = EmbeddingIndex::new(dir.path(), "m");
        assert_eq!(index.refresh(), 2, "the other model's chunk and the foreign file are skipped");
        for (id, held) in [(0, true), (1, true), (2, false), (3, true), (10, true), (11, true), (20, false), (99, false)] {
            assert_eq!(index.contains(id), held, "image {id}");
        }
        assert_eq!((index.len(), index.failed().collect::<Vec<_>>()), (5, vec![2]));
        let mut rows = HashMap::new();
        index.read_rows(&[1, 2, 11, 20, 99], |id, values| {
            rows.insert(id, values.to_vec());
        });
        let mut found: Vec<u32> = rows.keys().copied().collect();
        found.sort_unstable();
        assert_eq!(found, [1, 11], "failed, other models' and unknown images have no row");
        let floats = chunk(&[0, 1, 2, 3], "m", &[2]).floats();
        assert_eq!(rows[&1], floats[dim..2 * dim]);
        assert_eq!(rows[&11], chunk(&[10, 11], "m", &[]).floats()[dim..]);
        // A whole chunk, and some rows of it, as tensors.
        let first = &index.chunks()[0];
        assert_eq!(Vec::<f32>::try_from(first.read_all().unwrap().flatten(0, -1)).unwrap(), floats);
        let picked = first.read_rows(&[3, 0]).unwrap();
        assert_eq!(picked.size(), [2, dim as i64]);
        assert_eq!(Vec::<f32>::try_from(picked.flatten(0, -1)).unwrap(), [&floats[3 * dim..], &floats[..dim]].concat());
        assert!(first.read_rows(&[4]).is_err(), "past its last row");
        // A chunk written later is indexed by the next refresh.
        chunk(&[30], "m", &[]).save(&EmbeddingChunk::path(dir.path(), 0, 1, 4), 1).unwrap();
        assert!(!index.contains(30));
        index.refresh();
        let mut read = Vec::new();
        index.read_rows(&[30], |id, values| read.push((id, values.to_vec())));
        assert_eq!(read, [(30, chunk(&[30], "m", &[]).floats())]);
    }

    #[test]
    fn a_chunk_file_replaced_since_it_was_indexed_is_not_read_as_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = EmbeddingChunk::path(dir.path(), 0, 1, 0);
        chunk(&[0, 1], "m", &[]).save(&path, 1).unwrap();
        let mut index = EmbeddingIndex::new(dir.path(), "m");
        index.refresh();
        let indexed = index.chunks()[0].clone();
        // Other images in the same place: rows read by the old index would be theirs.
        chunk(&[5, 6], "m", &[]).save(&path, 1).unwrap();
        let e = indexed.read_all().unwrap_err().to_string();
        assert!(e.contains("changed since it was read"), "{e}");
        let mut read = Vec::new();
        index.read_rows(&[0, 1], |id, _| read.push(id));
        assert!(read.is_empty(), "{read:?}");
        index.refresh();
        index.read_rows(&[5], |id, values| read.push((id as f32 - values[0]) as u32));
        assert_eq!(read, [0], "the new file's rows once indexed again");
        std::fs::remove_file(&path).unwrap();
        assert!(index.chunks()[0].read_all().is_err(), "a file removed");
    }
}
