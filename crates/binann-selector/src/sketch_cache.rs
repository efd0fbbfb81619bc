//! [`SketchCache`]: every embedded image's sketch, read chunk file by chunk file and cached per
//! file, for the orders (by a fixed random projection) and for nearest neighbours (by principal
//! directions; written to the run directory for the server's "more like this" and look-alikes).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use binann_core::RunDirFile;
use binann_core::embeddings::EmbeddingChunk;

use half::slice::HalfFloatSliceExt;

use crate::projection::Projection;
use crate::{SKETCH_DIM, Stored, row_of};

/// Sketches of embedded images, in no particular order.
#[derive(Debug, Default)]
pub struct SketchCache {
    /// Image ids.
    pub ids: Vec<u32>,
    /// `ids.len()` rows of SKETCH_DIM values by the fixed random projection: what the orders
    /// that spread over the folder work on (k-means, farthest first, [`Unexplored`]).
    pub values: Vec<Stored>,
    /// The same rows by the principal directions of the first chunk file of their model: what
    /// nearest-neighbour searches work on (the sketch file: "more like this", look-alikes).
    ///
    /// Two projections because each serves one purpose better. Over the benchmark's folders (on
    /// the final map's 1,280 values, before the five depths), of an ankle boot's 8 nearest images
    /// 52 % were ankle boots by the principal directions and 37 % by random signs (57 % in the
    /// full 1,280 values); but farthest first by the principal
    /// directions chases the ends of their main axes, and found the first positive after 54 labels
    /// on average against 22 by random signs in the offline simulation ("dress": 212 against 127).
    pub neighbours: Vec<Stored>,
    /// The model of the chunks the sketches come from (the newest chunk's).
    pub(crate) model: Option<String>,
    /// Chunk files already read.
    pub(crate) cache: HashMap<PathBuf, CachedChunk>,
    /// The images whose sketches are held (by id), for a chunk read later that holds some again.
    pub(crate) held: Vec<bool>,
    /// The principal projection, fitted on the first chunk file of the newest model (its path and
    /// modification time): every run of the selector fits the same one, and all sketches share it.
    pub(crate) principal: Option<(PathBuf, Option<SystemTime>, Projection)>,
    /// New chunk files were left for the next call: its time was up.
    pub(crate) pending: bool,
}

/// A chunk file as read: the sketches are kept in the [`SketchCache`]'s rows alone (a copy per
/// file as well doubled the selector's memory, 256 bytes an image).
#[derive(Debug)]
pub(crate) struct CachedChunk {
    /// The file's modification time when read.
    modified: Option<SystemTime>,
    /// The model that embedded it.
    model: String,
}

/// A chunk file's sketches, read but not yet among the rows.
struct Sketched {
    ids: Vec<u32>,
    /// By the random projection, and by the principal one.
    values: Vec<f32>,
    neighbours: Vec<f32>,
}

impl SketchCache {
    /// Reads the chunk files of `dir` that are new or changed since the last call. New chunks of
    /// the model already held are added to the rows; anything else (a chunk removed or rewritten,
    /// a newer model, new principal directions) rebuilds them from the chunks of the newest
    /// chunk's model: a chunk of an older model, left from a change of input size or of the
    /// embedding, is ignored as the inferrer ignores it. Returns whether anything changed.
    /// Unreadable chunks are skipped with a warning.
    ///
    /// New chunk files are read for about `budget` at most (one at least), the rest left for the
    /// next call ([`Self::pending`]): a selector started on a million embedded images took 2
    /// minutes to read their 250 chunk files, and ranked nothing meanwhile. A rebuild reads every
    /// file.
    ///
    /// The principal directions are fitted on the first chunk file of the newest model: in a run
    /// directory that still holds an older model's chunks, fitted on those they would have another
    /// width, and every new chunk's neighbours would fall back to random signs.
    pub fn refresh(&mut self, dir: &Path, budget: Duration) -> bool {
        let started = Instant::now();
        self.pending = false;
        let files = EmbeddingChunk::files(dir);
        if self.principal.is_none()
            && let Some((first, modified)) = files.first()
        {
            self.fit_principal(first, *modified);
        }
        let before = self.cache.len();
        self.cache.retain(|path, _| files.iter().any(|(p, _)| p == path));
        let mut rebuild = self.cache.len() != before;
        let mut changed = rebuild;
        for (path, modified) in &files {
            let known = self.cache.get(path);
            if known.is_some_and(|c| c.modified == *modified) {
                continue;
            }
            rebuild |= known.is_some();
            if !rebuild && changed && started.elapsed() >= budget {
                self.pending = true;
                break;
            }
            let Some(sketched) = self.read(path, *modified) else { continue };
            changed = true;
            // Added at once (a million images' sketches held until the end of the round took
            // 256 MB, which the heap kept); a rebuild reads the files again.
            let model = &self.cache[path].model;
            if !rebuild && self.model.as_ref().is_none_or(|m| m == model) {
                self.model = Some(model.clone());
                self.add_rows(&sketched);
            }
        }
        let newest = self.newest_model();
        let source = files.iter().find(|(path, _)| self.cache.get(path).map(|c| &c.model) == newest.as_ref());
        if let Some((path, modified)) = source
            && self.principal.as_ref().is_none_or(|(p, m, _)| (p, m) != (path, modified))
            && self.fit_principal(path, *modified)
        {
            // Every chunk is sketched again with them.
            rebuild = true;
        }
        rebuild |= newest != self.model;
        if rebuild {
            self.model.clone_from(&newest);
            self.ids.clear();
            self.values.clear();
            self.neighbours.clear();
            self.held.clear();
            let mut paths: Vec<PathBuf> =
                self.cache.iter().filter(|(_, c)| Some(&c.model) == newest.as_ref()).map(|(p, _)| p.clone()).collect();
            paths.sort();
            for path in paths {
                let modified = self.cache[&path].modified;
                if let Some(sketched) = self.read(&path, modified) {
                    self.add_rows(&sketched);
                }
            }
        }
        changed || rebuild
    }

    /// Whether the last [`Self::refresh`] left new chunk files unread.
    pub fn pending(&self) -> bool {
        self.pending
    }

    /// Adds the rows of images not held yet.
    fn add_rows(&mut self, sketched: &Sketched) {
        for (i, id) in sketched.ids.iter().enumerate() {
            let id = *id as usize;
            if self.held.len() <= id {
                self.held.resize(id + 1, false);
            }
            if !std::mem::replace(&mut self.held[id], true) {
                self.ids.push(id as u32);
                let at = self.values.len();
                self.values.resize(at + SKETCH_DIM, Stored::ZERO);
                self.values[at..].convert_from_f32_slice(&sketched.values[i * SKETCH_DIM..(i + 1) * SKETCH_DIM]);
                self.neighbours.resize(at + SKETCH_DIM, Stored::ZERO);
                self.neighbours[at..].convert_from_f32_slice(&sketched.neighbours[i * SKETCH_DIM..(i + 1) * SKETCH_DIM]);
            }
        }
    }

    /// The model of the newest chunk read.
    fn newest_model(&self) -> Option<String> {
        self.cache.iter().max_by_key(|(path, c)| (c.modified, (*path).clone())).map(|(_, c)| c.model.clone())
    }

    /// Fits the principal directions on the chunk file `path`; false when it is unreadable (the
    /// projection in use stays).
    fn fit_principal(&mut self, path: &Path, modified: Option<SystemTime>) -> bool {
        match EmbeddingChunk::load(path) {
            Ok((_, chunk)) => {
                let principal = Projection::principal(&chunk.floats(), chunk.dim as usize);
                self.principal = Some((path.to_owned(), modified, principal));
                true
            }
            Err(e) => {
                tracing::warn!("an embedding chunk is unreadable (the sketches' principal directions wait for it): {e}");
                false
            }
        }
    }

    /// Sketches the chunk file `path` and records it as read; None (and a warning) when it is
    /// unreadable.
    fn read(&mut self, path: &Path, modified: Option<SystemTime>) -> Option<Sketched> {
        match EmbeddingChunk::load(path).map(|(_, chunk)| chunk) {
            Ok(chunk) => {
                let floats = chunk.floats();
                let dim = chunk.dim as usize;
                let values = Projection::random(dim).apply(&floats);
                // A chunk of another model may have another width: its neighbours by the
                // random projection then.
                let neighbours = match &self.principal {
                    Some((_, _, principal)) if principal.dim == dim => principal.apply(&floats),
                    _ => values.clone(),
                };
                self.cache.insert(path.to_owned(), CachedChunk { modified, model: chunk.model });
                Some(Sketched { ids: chunk.ids, values, neighbours })
            }
            Err(e) => {
                tracing::warn!("skipping an unreadable embedding chunk: {e}");
                None
            }
        }
    }

    /// Row `i` (by the random projection).
    pub fn row(&self, i: usize) -> [f32; SKETCH_DIM] {
        row_of(&self.values, i)
    }

    /// Number of sketches.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The model of the chunks the sketches come from.
    ///
    /// (Not the model of whichever chunk holds the first image: after a change of model the same
    /// image is in an older chunk too.)
    pub fn model(&self) -> Option<&str> {
        if self.ids.is_empty() { None } else { self.model.as_deref() }
    }

    /// The file the server searches for "more like this" and look-alikes: the [`Self::neighbours`].
    pub fn to_file(&self) -> binann_core::sketches::Sketches {
        binann_core::sketches::Sketches::quantise(self.ids.clone(), &self.neighbours, self.model().unwrap_or_default().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sketches_follow_the_chunk_files() {
        let dir = tempfile::tempdir().unwrap();
        let chunk = |ids: Vec<u32>, model: &str| EmbeddingChunk {
            values: EmbeddingChunk::pack(&ids.iter().flat_map(|i| vec![*i as f32 + 1.0; 8]).collect::<Vec<_>>()),
            ids,
            dim: 8,
            model: model.into(),
            failed: Vec::new(),
        };
        let mut sketches = SketchCache::default();
        assert!(!sketches.refresh(dir.path(), Duration::MAX));
        chunk(vec![0, 1, 2], "m").save(&EmbeddingChunk::path(dir.path(), 0, 1, 0), 1).unwrap();
        assert!(sketches.refresh(dir.path(), Duration::MAX));
        assert_eq!(sketches.ids, [0, 1, 2]);
        assert!(!sketches.refresh(dir.path(), Duration::MAX), "nothing changed");
        chunk(vec![3, 4], "m").save(&EmbeddingChunk::path(dir.path(), 0, 1, 1), 1).unwrap();
        std::fs::write(dir.path().join("chunk-0-of-1-000002.bin"), b"not a chunk").unwrap();
        assert!(sketches.refresh(dir.path(), Duration::MAX));
        assert_eq!(sketches.ids, [0, 1, 2, 3, 4]);
        assert_eq!(sketches.values.len(), 5 * SKETCH_DIM);
        // Rows added chunk by chunk are the rows read all at once, after an image is embedded
        // again in a later chunk (held once), a chunk rewritten, and a chunk removed.
        let from_scratch = |sketches: &SketchCache| {
            let mut again = SketchCache::default();
            again.refresh(dir.path(), Duration::MAX);
            assert_eq!((&sketches.ids, &sketches.values, &sketches.neighbours), (&again.ids, &again.values, &again.neighbours));
        };
        from_scratch(&sketches);
        chunk(vec![4, 5, 6], "m").save(&EmbeddingChunk::path(dir.path(), 0, 1, 3), 1).unwrap();
        assert!(sketches.refresh(dir.path(), Duration::MAX));
        assert_eq!(sketches.ids, [0, 1, 2, 3, 4, 5, 6]);
        from_scratch(&sketches);
        chunk(vec![7, 3], "m").save(&EmbeddingChunk::path(dir.path(), 0, 1, 1), 1).unwrap();
        assert!(sketches.refresh(dir.path(), Duration::MAX));
        assert_eq!(sketches.ids, [0, 1, 2, 7, 3, 4, 5, 6]);
        from_scratch(&sketches);
        std::fs::remove_file(EmbeddingChunk::path(dir.path(), 0, 1, 0)).unwrap();
        assert!(sketches.refresh(dir.path(), Duration::MAX));
        assert_eq!(sketches.ids, [7, 3, 4, 5, 6]);
        from_scratch(&sketches);
    }

    #[test]
    fn a_round_out_of_time_leaves_the_rest_of_the_chunks_for_the_next() {
        let dir = tempfile::tempdir().unwrap();
        for index in 0..3u32 {
            let ids: Vec<u32> = (10 * index..10 * index + 10).collect();
            let values: Vec<f32> = ids.iter().flat_map(|i| (0..8).map(move |j| ((i * 31 + j * 7) % 13) as f32 + 1.0)).collect();
            let chunk = EmbeddingChunk { ids, dim: 8, model: "m".into(), values: EmbeddingChunk::pack(&values), failed: Vec::new() };
            chunk.save(&EmbeddingChunk::path(dir.path(), 0, 1, index), 1).unwrap();
        }
        let mut sketches = SketchCache::default();
        // No time at all: one file a call, the rest pending.
        assert!(sketches.refresh(dir.path(), Duration::ZERO));
        assert_eq!((sketches.len(), sketches.pending()), (10, true));
        assert!(sketches.refresh(dir.path(), Duration::ZERO));
        assert_eq!((sketches.len(), sketches.pending()), (20, true));
        assert!(sketches.refresh(dir.path(), Duration::ZERO));
        assert_eq!((sketches.len(), sketches.pending()), (30, false));
        assert!(!sketches.refresh(dir.path(), Duration::ZERO), "nothing left");
        let mut at_once = SketchCache::default();
        assert!(at_once.refresh(dir.path(), Duration::MAX));
        assert!(!at_once.pending());
        assert_eq!((&sketches.ids, &sketches.values, &sketches.neighbours), (&at_once.ids, &at_once.values, &at_once.neighbours));
    }

    #[test]
    fn the_principal_directions_come_from_the_newest_model_when_an_older_one_left_chunks() {
        let dir = tempfile::tempdir().unwrap();
        // An older model's chunk first (by name), 8 values per image, as a run directory keeps
        // after the embedding changed; then the new model's, 16 values, enough rows to fit.
        let older: Vec<f32> = (0..100 * 8).map(|i| ((i * 7919) % 101) as f32 / 101.0).collect();
        let newer: Vec<f32> = (0..100 * 16).map(|i| ((i * 104_729) % 97) as f32 / 97.0 - 0.5).collect();
        let save = |index: u32, ids: std::ops::Range<u32>, dim: u32, values: &[f32], model: &str| {
            let chunk =
                EmbeddingChunk { ids: ids.collect(), dim, model: model.into(), values: EmbeddingChunk::pack(values), failed: Vec::new() };
            chunk.save(&EmbeddingChunk::path(dir.path(), 0, 1, index), 1).unwrap();
        };
        save(0, 0..100, 8, &older, "old");
        save(1, 0..100, 16, &newer, "new");
        let mut sketches = SketchCache::default();
        assert!(sketches.refresh(dir.path(), Duration::MAX));
        assert_eq!(sketches.model(), Some("new"));
        assert_eq!(sketches.ids, (0..100).collect::<Vec<u32>>());
        let stored = |rows: Vec<f32>| rows.into_iter().map(Stored::from_f32).collect::<Vec<_>>();
        let fitted = Projection::principal(&newer, 16);
        assert_eq!(sketches.neighbours, stored(fitted.apply(&newer)), "neighbours by the new model's principal directions");
        assert_ne!(sketches.neighbours, stored(Projection::random(16).apply(&newer)));
        assert_eq!(sketches.values, stored(Projection::random(16).apply(&newer)));
        assert!(!sketches.refresh(dir.path(), Duration::MAX), "nothing changed");
    }
}
